/*
 * check_sched: unit tests for the scheduler (shared/sched.c): heap order and
 * ties, de-duplication, removal, a long random run against a reference
 * model, the backoff table, the token bucket and the pause/probe state
 * machine.  Every time is injected; nothing sleeps.
 */
#include "autoconf.h"
#include "scratch.h"

#include "sched.h"

#include <check.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* IDs shaped like the spool's: 19 upper-case hex digits, sorting by n. */
static void
make_id(char *buf, size_t len, unsigned n)
{
	snprintf(buf, len, "%019X", n);
}

static void
add_n(struct sched *s, unsigned n, time_t due)
{
	char id[SCHED_IDMAX + 1];

	make_id(id, sizeof(id), n);
	sched_add(s, id, due);
}

static unsigned
pop_n(struct sched *s, time_t now)
{
	char id[SCHED_IDMAX + 1];

	ck_assert_int_eq(sched_pop_due(s, now, id), 1);
	return (unsigned)strtoul(id, NULL, 16);
}

START_TEST(test_order_and_ties)
{
	struct sched *s = sched_new();
	char id[SCHED_IDMAX + 1];
	time_t due;

	ck_assert_int_eq(sched_peek(s, &due, id), 0);
	ck_assert_int_eq(sched_pop_due(s, 1000, id), 0);
	ck_assert_ptr_null(sched_oldest_id(s));
	/* Same due time: FIFO by ID, whatever the insertion order. */
	add_n(s, 5, 100);
	add_n(s, 3, 100);
	add_n(s, 9, 50);
	add_n(s, 4, 100);
	add_n(s, 1, 200);
	add_n(s, 7, 100);
	ck_assert_uint_eq(sched_size(s), 6);
	ck_assert_int_eq(sched_peek(s, &due, id), 1);
	ck_assert_int_eq(due, 50);
	ck_assert_str_eq(id, "0000000000000000009");
	ck_assert_str_eq(sched_oldest_id(s), "0000000000000000001");
	/* Nothing is due before its time. */
	ck_assert_int_eq(sched_pop_due(s, 49, id), 0);
	ck_assert_uint_eq(pop_n(s, 100), 9);
	ck_assert_uint_eq(pop_n(s, 100), 3);
	ck_assert_uint_eq(pop_n(s, 100), 4);
	ck_assert_uint_eq(pop_n(s, 100), 5);
	ck_assert_uint_eq(pop_n(s, 100), 7);
	ck_assert_int_eq(sched_pop_due(s, 199, id), 0);
	ck_assert_uint_eq(pop_n(s, 200), 1);
	ck_assert_uint_eq(sched_size(s), 0);
	sched_free(s);
	sched_free(NULL);
}
END_TEST

START_TEST(test_dedupe_update)
{
	struct sched *s = sched_new();
	char id[SCHED_IDMAX + 1];
	time_t due;

	ck_assert_int_eq(sched_add(s, "A", 100), 1);
	ck_assert_int_eq(sched_add(s, "B", 200), 1);
	/* Adding again updates: later ... */
	ck_assert_int_eq(sched_add(s, "A", 300), 0);
	ck_assert_uint_eq(sched_size(s), 2);
	sched_peek(s, &due, id);
	ck_assert_str_eq(id, "B");
	ck_assert_int_eq(due, 200);
	/* ... and earlier. */
	ck_assert_int_eq(sched_add(s, "A", 10), 0);
	sched_peek(s, &due, id);
	ck_assert_str_eq(id, "A");
	ck_assert_int_eq(due, 10);
	/* sched_add_new keeps the time of an ID already present. */
	ck_assert_int_eq(sched_add_new(s, "A", 1000), 0);
	sched_peek(s, &due, id);
	ck_assert_int_eq(due, 10);
	ck_assert_int_eq(sched_add_new(s, "C", 5), 1);
	ck_assert(sched_contains(s, "C"));
	ck_assert(!sched_contains(s, "D"));
	/* sched_due() tells any entry's time, not only the earliest's. */
	ck_assert_int_eq(sched_due(s, "B", &due), 1);
	ck_assert_int_eq(due, 200);
	due = -1;
	ck_assert_int_eq(sched_due(s, "D", &due), 0);
	ck_assert_int_eq(due, -1);
	ck_assert_uint_eq(sched_size(s), 3);
	sched_free(s);
}
END_TEST

START_TEST(test_remove)
{
	struct sched *s = sched_new();
	unsigned i;

	for (i = 0; i < 10; i++)
		add_n(s, i, 100 - i);
	ck_assert_int_eq(sched_remove(s, "0000000000000000009"), 1); /* top */
	ck_assert_int_eq(sched_remove(s, "0000000000000000009"), 0);
	ck_assert_int_eq(sched_remove(s, "0000000000000000000"), 1); /* last */
	ck_assert_int_eq(sched_remove(s, "0000000000000000004"), 1);
	ck_assert_int_eq(sched_remove(s, "nope"), 0);
	ck_assert_uint_eq(sched_size(s), 7);
	ck_assert_uint_eq(pop_n(s, 100), 8);
	ck_assert_uint_eq(pop_n(s, 100), 7);
	ck_assert_uint_eq(pop_n(s, 100), 6);
	ck_assert_uint_eq(pop_n(s, 100), 5);
	ck_assert_uint_eq(pop_n(s, 100), 3);
	ck_assert_uint_eq(pop_n(s, 100), 2);
	ck_assert_uint_eq(pop_n(s, 100), 1);
	ck_assert_uint_eq(sched_size(s), 0);
	/* The table works again after everything left. */
	add_n(s, 1, 1);
	ck_assert(sched_contains(s, "0000000000000000001"));
	sched_free(s);
}
END_TEST

/* Reference model: an unsorted array searched linearly. */
struct ref {
	unsigned id;
	time_t due;
};

static int
ref_find(struct ref *r, size_t n, unsigned id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (r[i].id == id)
			return (int)i;
	return -1;
}

/* The entry the heap must yield first: smallest due, then smallest ID. */
static int
ref_min(struct ref *r, size_t n)
{
	size_t i, best = 0;

	if (n == 0)
		return -1;
	for (i = 1; i < n; i++)
		if (r[i].due < r[best].due ||
		    (r[i].due == r[best].due && r[i].id < r[best].id))
			best = i;
	return (int)best;
}

static uint32_t rng_state;

static uint32_t
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

START_TEST(test_random_vs_reference)
{
	enum { POOL = 700, OPS = 60000 };
	static struct ref ref[POOL];
	struct sched *s = sched_new();
	char id[SCHED_IDMAX + 1], got[SCHED_IDMAX + 1];
	size_t n = 0;
	time_t now = 0, due;
	int k, m;
	unsigned op, u;

	rng_state = 2463534242u + (uint32_t)_i;
	for (op = 0; op < OPS; op++) {
		u = rng() % POOL;
		make_id(id, sizeof(id), u);
		k = ref_find(ref, n, u);
		switch (rng() % 8) {
		case 0:
		case 1:
		case 2: /* add or update */
			due = now + (time_t)(rng() % 50);
			ck_assert_int_eq(sched_add(s, id, due), k < 0);
			if (k < 0) {
				ref[n].id = u;
				ref[n++].due = due;
			} else
				ref[k].due = due;
			break;
		case 3: /* add if absent */
			due = now + (time_t)(rng() % 50);
			ck_assert_int_eq(sched_add_new(s, id, due), k < 0);
			if (k < 0) {
				ref[n].id = u;
				ref[n++].due = due;
			}
			break;
		case 4: /* remove */
			ck_assert_int_eq(sched_remove(s, id), k >= 0);
			if (k >= 0)
				ref[k] = ref[--n];
			break;
		case 5:
		case 6: /* pop what is due */
			m = ref_min(ref, n);
			if (m >= 0 && ref[m].due <= now) {
				ck_assert_int_eq(sched_pop_due(s, now, got), 1);
				make_id(id, sizeof(id), ref[m].id);
				ck_assert_str_eq(got, id);
				ref[m] = ref[--n];
			} else
				ck_assert_int_eq(sched_pop_due(s, now, got), 0);
			break;
		default: /* time passes */
			now += (time_t)(rng() % 5);
			break;
		}
		ck_assert_uint_eq(sched_size(s), n);
		ck_assert(
		    sched_contains(s, id) ==
		    (ref_find(ref, n, (unsigned)strtoul(id, NULL, 16)) >= 0));
		m = ref_min(ref, n);
		if (m < 0) {
			ck_assert_int_eq(sched_peek(s, &due, got), 0);
		} else {
			ck_assert_int_eq(sched_peek(s, &due, got), 1);
			ck_assert_int_eq(due, ref[m].due);
			make_id(id, sizeof(id), ref[m].id);
			ck_assert_str_eq(got, id);
		}
		if (op % 997 == 0 && n > 0) {
			unsigned lo = ref[0].id;
			size_t i;

			for (i = 1; i < n; i++)
				if (ref[i].id < lo)
					lo = ref[i].id;
			make_id(id, sizeof(id), lo);
			ck_assert_str_eq(sched_oldest_id(s), id);
		}
	}
	/* Drain: everything comes out in (due, ID) order. */
	now += 100;
	while (n > 0) {
		m = ref_min(ref, n);
		ck_assert_int_eq(sched_pop_due(s, now, got), 1);
		make_id(id, sizeof(id), ref[m].id);
		ck_assert_str_eq(got, id);
		ref[m] = ref[--n];
	}
	ck_assert_uint_eq(sched_size(s), 0);
	sched_free(s);
}
END_TEST

START_TEST(test_many)
{
	enum { N = 100000 };
	struct sched *s = sched_new();
	char id[SCHED_IDMAX + 1];
	unsigned i;

	/* Inserted newest first, all due at once: must come out oldest
	 * first. */
	for (i = N; i > 0; i--)
		add_n(s, i, 7);
	ck_assert_uint_eq(sched_size(s), N);
	for (i = 1; i <= N; i++)
		ck_assert_uint_eq(pop_n(s, 7), i);
	ck_assert_int_eq(sched_pop_due(s, 7, id), 0);
	sched_free(s);
}
END_TEST

/* A tag stays with its entry until the pop; adding again keeps only the
 * bits both adders gave, and an update forgets it. */
START_TEST(test_tags)
{
	struct sched *s = sched_new();
	char id[SCHED_IDMAX + 1];
	unsigned char tag = 0xff;

	ck_assert_int_eq(sched_add_tagged(s, "A", 5, 3), 1);
	ck_assert_int_eq(sched_add_tagged(s, "B", 6, 3), 1);
	ck_assert_int_eq(sched_add_tagged(s, "B", 1, 1), 0);
	ck_assert_int_eq(sched_add_tagged(s, "C", 7, 3), 1);
	ck_assert_int_eq(sched_add(s, "C", 8), 0);
	ck_assert_int_eq(sched_pop_due_tagged(s, 10, id, &tag), 1);
	ck_assert_str_eq(id, "A");
	ck_assert_uint_eq(tag, 3);
	ck_assert_int_eq(sched_pop_due_tagged(s, 10, id, &tag), 1);
	ck_assert_str_eq(id, "B"); /* kept its due time */
	ck_assert_uint_eq(tag, 1);
	ck_assert_int_eq(sched_pop_due_tagged(s, 10, id, &tag), 1);
	ck_assert_str_eq(id, "C");
	ck_assert_uint_eq(tag, 0);
	ck_assert_int_eq(sched_add_new(s, "D", 1), 1);
	ck_assert_int_eq(sched_pop_due_tagged(s, 10, id, &tag), 1);
	ck_assert_uint_eq(tag, 0);
	sched_free(s);
}
END_TEST

START_TEST(test_backoff)
{
	static const struct {
		unsigned failures;
		long base, max, want;
	} t[] = {
	    {0, 60, 3600, 60},
	    {1, 60, 3600, 60},
	    {2, 60, 3600, 120},
	    {3, 60, 3600, 240},
	    {4, 60, 3600, 480},
	    {5, 60, 3600, 960},
	    {6, 60, 3600, 1920},
	    {7, 60, 3600, 3600},
	    {8, 60, 3600, 3600},
	    {50, 60, 3600, 3600},
	    {63, 60, 3600, 3600},
	    {64, 60, 3600, 3600},
	    {65, 60, 3600, 3600},
	    {1000, 60, 3600, 3600},
	    {UINT_MAX, 60, 3600, 3600},
	    {62, 1, LONG_MAX, 1L << 61},
	    {63, 1, LONG_MAX, 1L << 62},
	    {64, 1, LONG_MAX, LONG_MAX},
	    {40, 1L << 40, LONG_MAX, LONG_MAX},
	    {3, 5000, 3600, 3600}, /* base above max */
	    {3, 0, 3600, 0},
	    {1, 3600, 3600, 3600},
	};
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		ck_assert_msg(sched_backoff(t[i].failures, t[i].base,
		                  t[i].max) == t[i].want,
		    "row %zu: got %ld, want %ld", i,
		    sched_backoff(t[i].failures, t[i].base, t[i].max),
		    t[i].want);
}
END_TEST

static int
near(double a, double b)
{
	return a - b < 1e-9 && b - a < 1e-9;
}

START_TEST(test_rate_unlimited)
{
	struct sched_rate r;
	int i;

	sched_rate_init(&r, 0, 10);
	for (i = 0; i < 1000; i++) {
		ck_assert(near(sched_rate_wait(&r, 10), 0));
		ck_assert(near(sched_rate_take(&r, 10), 0));
	}
	ck_assert_uint_eq(sched_rate_avail(&r, 10, 100), 100);
	sched_rate_consume(&r, 10, 100);
	ck_assert_uint_eq(sched_rate_avail(&r, 10, 100), 100);
}
END_TEST

START_TEST(test_rate_one)
{
	struct sched_rate r;

	sched_rate_init(&r, 1, 100);
	/* Starts with one token: the first message goes at once. */
	ck_assert_uint_eq(sched_rate_avail(&r, 100, 10), 1);
	ck_assert(near(sched_rate_take(&r, 100), 0));
	ck_assert(near(sched_rate_wait(&r, 100), 1));
	ck_assert(near(sched_rate_wait(&r, 100.25), 0.75));
	ck_assert_uint_eq(sched_rate_avail(&r, 100.25, 10), 0);
	ck_assert(near(sched_rate_wait(&r, 101), 0));
	/* Taking without waiting reserves: the next one waits longer. */
	ck_assert(near(sched_rate_take(&r, 101), 0));
	ck_assert(near(sched_rate_take(&r, 101), 1));
	ck_assert(near(sched_rate_wait(&r, 101), 2));
	/* A long idle time fills the bucket to one token only. */
	ck_assert_uint_eq(sched_rate_avail(&r, 1000, 10), 1);
	/* 60 messages over one minute at most, however they are asked. */
	{
		double t = 2000, w;
		int sent = 0;

		sched_rate_init(&r, 1, t);
		while (t < 2060) {
			w = sched_rate_wait(&r, t);
			if (w > 0) {
				t += w;
				continue;
			}
			sched_rate_consume(&r, t, 1);
			sent++;
			t += 0.1;
		}
		ck_assert_int_le(sent, 61);
		ck_assert_int_ge(sent, 59);
	}
}
END_TEST

START_TEST(test_rate_fourteen)
{
	struct sched_rate r;
	double t = 0;
	size_t n, total = 0;

	sched_rate_init(&r, 14, t);
	/* A full batch of 14 at once, then none until tokens come back. */
	ck_assert_uint_eq(sched_rate_avail(&r, t, 100), 14);
	ck_assert_uint_eq(sched_rate_avail(&r, t, 5), 5);
	sched_rate_consume(&r, t, 14);
	ck_assert_uint_eq(sched_rate_avail(&r, t, 100), 0);
	ck_assert(near(sched_rate_wait(&r, t), 1.0 / 14));
	ck_assert_uint_eq(sched_rate_avail(&r, 0.5, 100), 7);
	/* Over 10 s: at most burst + 10 * 14 messages. */
	sched_rate_init(&r, 14, 100);
	for (t = 100; t < 110; t += 0.05) {
		n = sched_rate_avail(&r, t, 100);
		sched_rate_consume(&r, t, n);
		total += n;
	}
	ck_assert_uint_le(total, 14 + 140);
	ck_assert_uint_ge(total, 140);
}
END_TEST

START_TEST(test_rate_half)
{
	struct sched_rate r;

	sched_rate_init(&r, 0.5, 0);
	ck_assert(near(sched_rate_take(&r, 0), 0));
	ck_assert(near(sched_rate_wait(&r, 0), 2));
	ck_assert(near(sched_rate_wait(&r, 1.5), 0.5));
	ck_assert_uint_eq(sched_rate_avail(&r, 1.9, 3), 0);
	ck_assert_uint_eq(sched_rate_avail(&r, 2, 3), 1);
	ck_assert(near(sched_rate_take(&r, 2), 0));
	ck_assert(near(sched_rate_take(&r, 2), 2));
	ck_assert(near(sched_rate_take(&r, 2), 4));
	/* A clock that goes back refunds nothing. */
	ck_assert(near(sched_rate_wait(&r, 1), 6));
}
END_TEST

START_TEST(test_pause)
{
	struct sched_pause p;
	time_t t = 1000;

	sched_pause_init(&p, 60, 3600);
	ck_assert_int_eq(sched_pause_mode(&p, t), SCHED_RUN);
	ck_assert_uint_eq(sched_pause_batch(&p, t, 100), 100);
	ck_assert(!sched_pause_ok(&p)); /* success while running: no news */

	/* First trouble: pause 60 s, nothing goes out meanwhile. */
	ck_assert_int_eq(sched_pause_fail(&p, t), 60);
	ck_assert_int_eq(p.since, 1000);
	ck_assert_int_eq(sched_pause_mode(&p, t), SCHED_PAUSED);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 59, 100), 0);
	/* The pause is over: one message probes. */
	ck_assert_int_eq(sched_pause_mode(&p, t + 60), SCHED_PROBE);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 60, 100), 1);
	/* The probe fails: the pause doubles, each time, up to the cap. */
	t += 60;
	ck_assert_int_eq(sched_pause_fail(&p, t), 120);
	ck_assert_int_eq(p.since, 1000);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 119, 100), 0);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 120, 100), 1);
	t += 120;
	ck_assert_int_eq(sched_pause_fail(&p, t), 240);
	t += 240;
	ck_assert_int_eq(sched_pause_fail(&p, t), 480);
	ck_assert_int_eq(sched_pause_fail(&p, t), 960);
	ck_assert_int_eq(sched_pause_fail(&p, t), 1920);
	ck_assert_int_eq(sched_pause_fail(&p, t), 3600);
	ck_assert_int_eq(sched_pause_fail(&p, t), 3600);
	ck_assert_int_eq(sched_pause_mode(&p, t + 3599), SCHED_PAUSED);
	ck_assert_int_eq(sched_pause_mode(&p, t + 3600), SCHED_PROBE);
	/* The probe succeeds: full batches again, recovery reported once. */
	ck_assert(sched_pause_ok(&p));
	ck_assert(!sched_pause_ok(&p));
	ck_assert_int_eq(sched_pause_mode(&p, t + 3600), SCHED_RUN);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 3600, 100), 100);
	/* New trouble starts again from the first step. */
	ck_assert_int_eq(sched_pause_fail(&p, t + 5000), 60);
	ck_assert_int_eq(p.since, t + 5000);
	/* A probe's batch is one message even for a batch size of 1, and
	 * none for 0. */
	ck_assert_uint_eq(sched_pause_batch(&p, t + 6000, 1), 1);
	ck_assert_uint_eq(sched_pause_batch(&p, t + 6000, 0), 0);
}
END_TEST

START_TEST(test_pause_many_failures)
{
	struct sched_pause p;
	unsigned i;

	sched_pause_init(&p, 60, 3600);
	for (i = 0; i < 10000; i++)
		ck_assert_int_le(sched_pause_fail(&p, 0), 3600);
	ck_assert_int_eq(sched_pause_fail(&p, 0), 3600);
	ck_assert_int_eq(p.until, 3600);
}
END_TEST

static Suite *
sched_suite(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("heap");

	tcase_add_test(tc, test_order_and_ties);
	tcase_add_test(tc, test_dedupe_update);
	tcase_add_test(tc, test_remove);
	tcase_add_test(tc, test_tags);
	tcase_add_loop_test(tc, test_random_vs_reference, 0, 4);
	tcase_add_test(tc, test_many);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);

	tc = tcase_create("timing");
	tcase_add_test(tc, test_backoff);
	tcase_add_test(tc, test_rate_unlimited);
	tcase_add_test(tc, test_rate_one);
	tcase_add_test(tc, test_rate_fourteen);
	tcase_add_test(tc, test_rate_half);
	tcase_add_test(tc, test_pause);
	tcase_add_test(tc, test_pause_many_failures);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(sched_suite());
}
