/*
 * sched: see sched.h.  Pure data structures and arithmetic: this file never
 * reads a clock, touches a file or logs (a misuse panics, as a bug).
 *
 * The heap is an array of entries; the index is an open-addressing hash table
 * (linear probing, power-of-two size, at most half full) whose slots hold
 * heap positions + 1 (0 = empty).  Each entry remembers its table slot, so a
 * heap move updates the table in O(1); removal from the table uses backward
 * shifting, so there are no tombstones to clean up.
 */
#include "autoconf.h"

#include "sched.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

/* 40 octets: a queue of 100,000 messages costs about 6 MB in each heap
 * the sender keeps, table included. */
struct entry {
	time_t due;
	uint32_t slot; /* where the table points at this entry */
	char id[SCHED_IDMAX + 1];
	unsigned char tag; /* the caller's, sched_add_tagged() */
};

struct sched {
	struct entry *heap;
	size_t n, cap;
	uint32_t *table; /* heap index + 1, or 0 */
	size_t tsize;    /* power of two */
};

/* Heap indexes + 1 and table slots fit the table's 32 bits. */
#define SCHED_MAX_ENTRIES ((size_t)UINT32_MAX / 2)

#define TABLE_MIN 64

static uint64_t
hash_id(const char *id)
{
	uint64_t h = 1469598103934665603ULL; /* FNV-1a */

	for (; *id != '\0'; id++) {
		h ^= (unsigned char)*id;
		h *= 1099511628211ULL;
	}
	return h;
}

/* The table slot holding id, or the empty slot where it would go. */
static size_t
table_find(const struct sched *s, const char *id, bool *found)
{
	size_t mask = s->tsize - 1, i = hash_id(id) & mask;

	for (;;) {
		if (s->table[i] == 0) {
			*found = false;
			return i;
		}
		if (strcmp(s->heap[s->table[i] - 1].id, id) == 0) {
			*found = true;
			return i;
		}
		i = (i + 1) & mask;
	}
}

static void
table_rebuild(struct sched *s, size_t tsize)
{
	size_t i;
	bool found;

	free(s->table);
	s->tsize = tsize;
	s->table = xcalloc(tsize, sizeof(*s->table));
	for (i = 0; i < s->n; i++) {
		size_t slot = table_find(s, s->heap[i].id, &found);

		s->table[slot] = (uint32_t)(i + 1);
		s->heap[i].slot = (uint32_t)slot;
	}
}

/* Empty slot `hole`, then shift later members of its cluster back so every
 * lookup still finds its entry without crossing an empty slot. */
static void
table_delete(struct sched *s, size_t hole)
{
	size_t mask = s->tsize - 1, i = hole, home;

	s->table[hole] = 0;
	for (;;) {
		i = (i + 1) & mask;
		if (s->table[i] == 0)
			return;
		home = hash_id(s->heap[s->table[i] - 1].id) & mask;
		/* Move it only if its home is not cyclically in (hole, i]. */
		if ((i > hole && (home <= hole || home > i)) ||
		    (i < hole && (home <= hole && home > i))) {
			s->table[hole] = s->table[i];
			s->heap[s->table[hole] - 1].slot = (uint32_t)hole;
			s->table[i] = 0;
			hole = i;
		}
	}
}

static bool
entry_less(const struct entry *a, const struct entry *b)
{
	if (a->due != b->due)
		return a->due < b->due;
	return strcmp(a->id, b->id) < 0;
}

/* Put e at heap index i and point the table at it. */
static void
heap_set(struct sched *s, size_t i, const struct entry *e)
{
	s->heap[i] = *e;
	s->table[e->slot] = (uint32_t)(i + 1);
}

static void
sift_up(struct sched *s, size_t i)
{
	struct entry e = s->heap[i];

	while (i > 0) {
		size_t parent = (i - 1) / 2;

		if (!entry_less(&e, &s->heap[parent]))
			break;
		heap_set(s, i, &s->heap[parent]);
		i = parent;
	}
	heap_set(s, i, &e);
}

static void
sift_down(struct sched *s, size_t i)
{
	struct entry e = s->heap[i];

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= s->n)
			break;
		if (c + 1 < s->n && entry_less(&s->heap[c + 1], &s->heap[c]))
			c++;
		if (!entry_less(&s->heap[c], &e))
			break;
		heap_set(s, i, &s->heap[c]);
		i = c;
	}
	heap_set(s, i, &e);
}

/* Remove heap index i (its table slot already emptied by the caller). */
static void
heap_remove_at(struct sched *s, size_t i)
{
	s->n--;
	if (i == s->n)
		return;
	heap_set(s, i, &s->heap[s->n]);
	if (i > 0 && entry_less(&s->heap[i], &s->heap[(i - 1) / 2]))
		sift_up(s, i);
	else
		sift_down(s, i);
}

struct sched *
sched_new(void)
{
	struct sched *s = xcalloc(1, sizeof(*s));

	s->tsize = TABLE_MIN;
	s->table = xcalloc(s->tsize, sizeof(*s->table));
	return s;
}

void
sched_free(struct sched *s)
{
	if (s == NULL)
		return;
	free(s->heap);
	free(s->table);
	free(s);
}

static int
add(struct sched *s, const char *id, time_t due, bool update,
    unsigned char tag)
{
	struct entry e;
	size_t slot, len = strlen(id);
	bool found;

	if (len > SCHED_IDMAX)
		arnie_panic("sched_add: ID of %zu octets", len);
	if (s->n >= SCHED_MAX_ENTRIES)
		arnie_panic("sched_add: more than %zu entries", SCHED_MAX_ENTRIES);
	slot = table_find(s, id, &found);
	if (found) {
		size_t i = s->table[slot] - 1;
		time_t old = s->heap[i].due;

		/* A tag is what the caller knew when it added the entry: only
		 * what every adder knew stays known. */
		s->heap[i].tag &= tag;
		if (!update || old == due)
			return 0;
		s->heap[i].due = due;
		if (due < old)
			sift_up(s, i);
		else
			sift_down(s, i);
		return 0;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->heap = xreallocarray(s->heap, s->cap, sizeof(*s->heap));
	}
	memset(&e, 0, sizeof(e));
	memcpy(e.id, id, len + 1);
	e.due = due;
	e.slot = (uint32_t)slot;
	e.tag = tag;
	s->heap[s->n++] = e;
	s->table[slot] = (uint32_t)s->n;
	sift_up(s, s->n - 1);
	/* Keep the table at most half full so probes stay short. */
	if (s->n * 2 > s->tsize)
		table_rebuild(s, s->tsize * 2);
	return 1;
}

int
sched_add(struct sched *s, const char *id, time_t due)
{
	return add(s, id, due, true, 0);
}

int
sched_add_new(struct sched *s, const char *id, time_t due)
{
	return add(s, id, due, false, 0);
}

int
sched_add_tagged(
    struct sched *s, const char *id, time_t due, unsigned char tag)
{
	return add(s, id, due, false, tag);
}

int
sched_remove(struct sched *s, const char *id)
{
	size_t slot, i;
	bool found;

	if (strlen(id) > SCHED_IDMAX)
		return 0;
	slot = table_find(s, id, &found);
	if (!found)
		return 0;
	i = s->table[slot] - 1;
	table_delete(s, slot);
	heap_remove_at(s, i);
	return 1;
}

bool
sched_contains(const struct sched *s, const char *id)
{
	bool found;

	if (strlen(id) > SCHED_IDMAX)
		return false;
	table_find(s, id, &found);
	return found;
}

int
sched_due(const struct sched *s, const char *id, time_t *due)
{
	size_t i;
	bool found;

	if (strlen(id) > SCHED_IDMAX)
		return 0;
	i = table_find(s, id, &found);
	if (found)
		*due = s->heap[s->table[i] - 1].due;
	return found ? 1 : 0;
}

size_t
sched_size(const struct sched *s)
{
	return s->n;
}

int
sched_peek(const struct sched *s, time_t *due, char *id)
{
	if (s->n == 0)
		return 0;
	if (due != NULL)
		*due = s->heap[0].due;
	if (id != NULL)
		memcpy(id, s->heap[0].id, strlen(s->heap[0].id) + 1);
	return 1;
}

int
sched_pop_due(struct sched *s, time_t now, char *id_out)
{
	return sched_pop_due_tagged(s, now, id_out, NULL);
}

int
sched_pop_due_tagged(
    struct sched *s, time_t now, char *id_out, unsigned char *tag)
{
	if (s->n == 0 || s->heap[0].due > now)
		return 0;
	memcpy(id_out, s->heap[0].id, strlen(s->heap[0].id) + 1);
	if (tag != NULL)
		*tag = s->heap[0].tag;
	table_delete(s, s->heap[0].slot);
	heap_remove_at(s, 0);
	return 1;
}

const char *
sched_oldest_id(const struct sched *s)
{
	const char *best = NULL;
	size_t i;

	for (i = 0; i < s->n; i++)
		if (best == NULL || strcmp(s->heap[i].id, best) < 0)
			best = s->heap[i].id;
	return best;
}

long
sched_backoff(unsigned failures, long base, long max)
{
	unsigned shift;

	if (base <= 0)
		return 0;
	if (base >= max)
		return max;
	shift = failures > 0 ? failures - 1 : 0;
	/* base << shift stays within max exactly when base <= max >> shift;
	 * checking that way round cannot overflow. */
	if (shift >= sizeof(long) * 8 - 1 || base > (max >> shift))
		return max;
	return base << shift;
}

void
sched_rate_init(struct sched_rate *r, double rate, double now)
{
	r->rate = rate > 0 ? rate : 0;
	r->burst = rate > 1 ? rate : 1;
	r->tokens = r->burst;
	r->last = now;
}

static void
refill(struct sched_rate *r, double now)
{
	/* A monotonic clock never goes back, but a caller's test clock may;
	 * never refund time. */
	if (now > r->last) {
		r->tokens += (now - r->last) * r->rate;
		if (r->tokens > r->burst)
			r->tokens = r->burst;
		r->last = now;
	}
}

double
sched_rate_wait(struct sched_rate *r, double now)
{
	if (r->rate == 0)
		return 0;
	refill(r, now);
	if (r->tokens >= 1)
		return 0;
	return (1 - r->tokens) / r->rate;
}

size_t
sched_rate_avail(struct sched_rate *r, double now, size_t want)
{
	size_t whole;

	if (r->rate == 0)
		return want;
	refill(r, now);
	if (r->tokens < 1)
		return 0;
	whole = (size_t)r->tokens; /* positive: truncation is floor */
	return whole < want ? whole : want;
}

void
sched_rate_consume(struct sched_rate *r, double now, size_t n)
{
	if (r->rate == 0)
		return;
	refill(r, now);
	r->tokens -= (double)n;
}

double
sched_rate_take(struct sched_rate *r, double now)
{
	double wait = sched_rate_wait(r, now);

	/* The token may go negative: it is a reservation that the time the
	 * caller waits pays back. */
	if (r->rate != 0)
		r->tokens -= 1;
	return wait;
}

void
sched_pause_init(struct sched_pause *p, long base, long max)
{
	memset(p, 0, sizeof(*p));
	p->base = base;
	p->max = max;
}

enum sched_mode
sched_pause_mode(const struct sched_pause *p, time_t now)
{
	if (p->failures == 0)
		return SCHED_RUN;
	if (now < p->until)
		return SCHED_PAUSED;
	return SCHED_PROBE;
}

size_t
sched_pause_batch(const struct sched_pause *p, time_t now, size_t max_batch)
{
	switch (sched_pause_mode(p, now)) {
	case SCHED_RUN:
		return max_batch;
	case SCHED_PROBE:
		return max_batch > 0 ? 1 : 0;
	case SCHED_PAUSED:
		break;
	}
	return 0;
}

long
sched_pause_fail(struct sched_pause *p, time_t now)
{
	long secs;

	if (p->failures == 0)
		p->since = now;
	if (p->failures < UINT_MAX)
		p->failures++;
	secs = sched_backoff(p->failures, p->base, p->max);
	p->until = now + secs;
	return secs;
}

bool
sched_pause_ok(struct sched_pause *p)
{
	bool was = p->failures > 0;

	p->failures = 0;
	p->until = 0;
	p->since = 0;
	return was;
}
