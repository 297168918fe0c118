/*
 * Unit tests for report (the failure report mailed to ADMIN_ADDRESS).
 *
 * Everything goes through report.h with a real spool in a mkdtemp()
 * directory: a report is found in outbox/ with spool_scan(), its envelope
 * read with spool_load() and its text with spool_open_message(), and it is
 * "sent" with spool_finish() as the sender would.  Time is injected: every
 * report function takes `now`, counted from T0.  The configuration is filled
 * by hand, except in the test that loads it from a .env with config_load().
 */
#include "autoconf.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "report.h"
#include "scratch.h"
#include "spool.h"
#include "xmalloc.h"

/* Tue, 14 Nov 2023 22:13:20 +0000 */
#define T0 ((time_t)1700000000)
#define IVAL 3600L
#define ADMIN "admin@example.org"
#define SECRET "S3cr3t-Pa55w0rd-r3p0rt"
/* report.c lists this many failures in full, then only a count. */
#define MAX_LISTED 500

/* ------------------------------------------------------------ helpers */

/*
 * basedir is made once per test case by an unchecked fixture, which runs in
 * the runner process, so it is removed even when a test fails.  The log of
 * every test goes to a file in it, read by the secret test.
 */
static char basedir[64];
static char logpath[128];
static char tmpdir[128];
static char spooldir[192];
static struct spool *spool;
static struct config cfg;

static void
make_base(void)
{
	scratch_make(basedir, sizeof(basedir), "/tmp/check_report.XXXXXX");
	snprintf(logpath, sizeof(logpath), "%s/log", basedir);
	if (log_init("check_report", logpath, 0) == -1) {
		perror(logpath);
		abort();
	}
}

static void
remove_base(void)
{
	scratch_remove(basedir);
}

/* A fresh spool and a configuration with reports on and a password set. */
static void
setup(void)
{
	char template[128];

	snprintf(template, sizeof(template), "%s/t.XXXXXX", basedir);
	scratch_make(tmpdir, sizeof(tmpdir), template);
	snprintf(spooldir, sizeof(spooldir), "%s/arniefiles", tmpdir);
	spool = spool_open(spooldir, false);
	ck_assert_ptr_nonnull(spool);
	memset(&cfg, 0, sizeof(cfg));
	cfg.outbound_host = "smtp.example.net";
	cfg.username = "relayuser";
	cfg.password = SECRET;
	cfg.helo_name = "mx.test";
	cfg.admin_address = ADMIN;
	cfg.report_interval = IVAL;
	cfg.files_directory = tmpdir;
	cfg.spool_directory = spooldir;
}

static void
teardown(void)
{
	spool_close(spool);
	spool = NULL;
	scratch_remove(tmpdir);
}

/*
 * A message that went to failed/: rcpts is a list of "addr", "addr=reply"
 * (failed with that reply) or "addr+reply" (sent with that reply).
 */
static struct envelope *
failed_env(const char *origin, const char *last_reply, const char *const *rcpts,
    size_t n)
{
	struct envelope *env = envelope_new();
	size_t i;

	spool_new_id(NULL, env->id);
	env->sender = xstrdup("app@example.com");
	for (i = 0; i < n; i++) {
		const char *sep = strpbrk(rcpts[i], "=+");
		char *addr = sep != NULL ? xasprintf("%.*s",
		                               (int)(sep - rcpts[i]), rcpts[i])
		                         : xstrdup(rcpts[i]);
		struct spool_rcpt *rc;

		envelope_add_rcpt(env, addr);
		free(addr);
		rc = &env->rcpts[env->nrcpts - 1];
		rc->state =
		    sep != NULL && *sep == '+' ? RCPT_SENT : RCPT_FAILED;
		if (sep != NULL)
			envelope_set_reply(&rc->reply, sep + 1);
	}
	if (last_reply != NULL)
		env->last_reply = xstrdup(last_reply);
	if (origin != NULL)
		env->origin = xstrdup(origin);
	return env;
}

/* Record one plain failure; its ID is copied to id if not NULL. */
static void
fail_one(struct report *r, char id[SPOOL_IDLEN + 1])
{
	static const char *const rcpts[] = {"user@example.com=550 5.1.1 no"};
	struct envelope *env =
	    failed_env("client=127.0.0.1", "550 5.1.1 no", rcpts, 1);

	report_failed(r, env);
	if (id != NULL)
		memcpy(id, env->id, SPOOL_IDLEN + 1);
	envelope_free(env);
}

struct idlist {
	char ids[8][SPOOL_IDLEN + 1];
	int n;
};

static void
collect(const char *id, unsigned known, void *arg)
{
	struct idlist *l = arg;

	(void)known;
	if (l->n < 8)
		snprintf(l->ids[l->n], sizeof(l->ids[0]), "%s", id);
	l->n++;
}

static int
outbox_count(void)
{
	struct idlist l = {.n = 0};

	ck_assert_int_eq(spool_scan(spool, collect, &l), 0);
	return l.n;
}

/* Every line ends in CRLF: no bare CR or LF anywhere. */
static bool
crlf_only(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] == '\r' && (i + 1 == len || s[i + 1] != '\n'))
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	return len >= 2 && s[len - 2] == '\r' && s[len - 1] == '\n';
}

/*
 * The one message in outbox/ must be a report: returns its text (owned)
 * and, if envp is not NULL, its envelope.  Checks what every report must
 * be, whatever it says: one recipient, the admin; a real envelope sender;
 * origin "report"; CRLF lines; no password anywhere.
 */
static char *
take_report(struct envelope **envp)
{
	struct idlist l = {.n = 0};
	struct envelope *env = NULL;
	char *text;
	size_t len;
	FILE *fp;

	ck_assert_int_eq(spool_scan(spool, collect, &l), 0);
	ck_assert_int_eq(l.n, 1);
	ck_assert_int_eq(spool_load(spool, l.ids[0], &env), 0);
	ck_assert_str_eq(env->id, l.ids[0]);
	ck_assert_ptr_nonnull(env->sender);
	ck_assert_str_ne(env->sender, "");
	ck_assert_uint_eq(env->nrcpts, 1);
	ck_assert_str_eq(env->rcpts[0].addr, ADMIN);
	ck_assert_int_eq(env->rcpts[0].state, RCPT_PENDING);
	ck_assert_ptr_nonnull(env->origin);
	ck_assert_str_eq(env->origin, REPORT_ORIGIN);
	fp = spool_open_message(spool, env);
	ck_assert_ptr_nonnull(fp);
	len = (size_t)env->size;
	text = xmalloc(len + 1);
	ck_assert_uint_eq(fread(text, 1, len + 1, fp), len);
	fclose(fp);
	text[len] = '\0';
	ck_assert_uint_eq(strlen(text), len);
	ck_assert_msg(crlf_only(text, len), "bare CR or LF in:\n%.2000s", text);
	ck_assert_msg(
	    strstr(text, SECRET) == NULL, "password in:\n%.2000s", text);
	if (envp != NULL)
		*envp = env;
	else
		envelope_free(env);
	return text;
}

/* The report leaves the queue, as the sender does after delivering it. */
static void
deliver(struct envelope *env)
{
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_SENT), 0);
	envelope_free(env);
	ck_assert_int_eq(outbox_count(), 0);
}

static void
assert_has(const char *text, const char *what)
{
	ck_assert_msg(
	    strstr(text, what) != NULL, "\"%s\" not in:\n%.2000s", what, text);
}

static void
assert_lacks(const char *text, const char *what)
{
	ck_assert_msg(strstr(text, what) == NULL, "\"%s\" found in:\n%.2000s",
	    what, text);
}

/* The value of header name in text (up to CRLF), or NULL. */
static char *
header(const char *text, const char *name)
{
	const char *p = text, *end = strstr(text, "\r\n\r\n"), *eol;
	size_t n = strlen(name);

	ck_assert_ptr_nonnull(end);
	while (p < end) {
		eol = strstr(p, "\r\n");
		if (strncmp(p, name, n) == 0 && p[n] == ':' && p[n + 1] == ' ')
			return xasprintf(
			    "%.*s", (int)(eol - p - n - 2), p + n + 2);
		p = eol + 2;
	}
	return NULL;
}

/* Run report_send at now and expect it to queue nothing. */
static void
expect_quiet(struct report *r, time_t now)
{
	ck_assert_int_eq(report_send(r, spool, now, 0, -1), 0);
	ck_assert_int_eq(outbox_count(), 0);
}

/* ------------------------------------------------------- nothing sent */

/*
 * Cases where report_send() must queue nothing.  admin: ADMIN_ADDRESS;
 * nfail plain failures and nown failures of reports; trouble_age: seconds of
 * ongoing trouble at the call, or -1; at: when report_send() is called
 * (from T0); next: the expected report_next() afterwards ((time_t)-1 or an
 * offset from T0).
 */
static const struct quiet_case {
	const char *name;
	const char *admin;
	int nfail, nown;
	long trouble_age;
	long at;
	long next;
} quiet_cases[] = {
    {"no ADMIN_ADDRESS", NULL, 3, 0, 2 * IVAL, 100 * IVAL, -1},
    {"empty ADMIN_ADDRESS", "", 3, 0, 2 * IVAL, 100 * IVAL, -1},
    {"nothing failed", ADMIN, 0, 0, -1, IVAL, 2 * IVAL},
    {"nothing failed, late call", ADMIN, 0, 0, -1, IVAL + 50, 2 * IVAL + 50},
    {"interval not over", ADMIN, 3, 0, -1, IVAL - 1, IVAL},
    {"just started", ADMIN, 3, 0, 2 * IVAL, 0, IVAL},
    {"only reports failed", ADMIN, 0, 2, -1, IVAL, 2 * IVAL},
    {"short trouble", ADMIN, 0, 0, IVAL - 1, IVAL, 2 * IVAL},
};

START_TEST(test_quiet)
{
	const struct quiet_case *c = &quiet_cases[_i];
	static const char *const rcpts[] = {"x@example.com=550 no"};
	struct report *r;
	struct envelope *env;
	time_t now = T0 + c->at;
	int i;

	cfg.admin_address = (char *)c->admin;
	r = report_new(&cfg, T0);
	for (i = 0; i < c->nfail; i++)
		fail_one(r, NULL);
	for (i = 0; i < c->nown; i++) {
		env = failed_env(REPORT_ORIGIN, "550 no", rcpts, 1);
		report_failed(r, env);
		envelope_free(env);
	}
	if (c->trouble_age >= 0)
		report_trouble(r, "connection refused", now - c->trouble_age);
	ck_assert_msg(report_send(r, spool, now, 4, T0) == 0, "%s", c->name);
	ck_assert_msg(outbox_count() == 0, "%s: something queued", c->name);
	ck_assert_msg(
	    report_next(r) == (c->next == -1 ? (time_t)-1 : T0 + c->next),
	    "%s: next %lld", c->name, (long long)report_next(r));
	report_free(r);
}
END_TEST

/* ------------------------------------------------------ one report */

/* REPORT_FROM as configured, and the envelope sender it must give. */
static const struct sender_case {
	const char *report_from;
	const char *sender;
} sender_cases[] = {
    {NULL, ADMIN},
    {"", ADMIN},
    {"reports@example.org", "reports@example.org"},
};

START_TEST(test_report_content)
{
	const struct sender_case *c = &sender_cases[_i];
	static const char *const rcpts1[] = {"a@example.com=550 5.1.1 <a>: "
	                                     "Recipient address rejected"};
	static const char *const rcpts2[] = {
	    "b@example.com+250 2.0.0 Ok: queued as 1234",
	    "c@example.net=554 5.7.1 Relay access denied"};
	struct envelope *f1, *f2, *env;
	struct report *r;
	time_t now = T0 + IVAL;
	char *text, *h, *want;

	cfg.report_from = (char *)c->report_from;
	r = report_new(&cfg, T0);
	ck_assert_int_eq(report_next(r), T0 + IVAL);
	f1 = failed_env("client=127.0.0.1",
	    "550 5.1.1 <a>: Recipient address rejected", rcpts1, 1);
	f2 = failed_env(NULL, "gave up after 50 attempts", rcpts2, 2);
	report_failed(r, f1);
	report_failed(r, f2);

	/* 7 queued, the oldest for 1h 2m 5s. */
	ck_assert_int_eq(report_send(r, spool, now, 7, now - 3725), 1);
	ck_assert_int_eq(report_next(r), now + IVAL);
	text = take_report(&env);
	ck_assert_str_eq(env->sender, c->sender);

	h = header(text, "From");
	want = xasprintf("<%s>", c->sender);
	ck_assert_pstr_eq(h, want);
	free(want);
	free(h);
	h = header(text, "To");
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(h, "<" ADMIN ">");
	free(h);
	h = header(text, "Subject");
	ck_assert_ptr_nonnull(h);
	assert_has(h, "2 failed messages");
	free(h);
	h = header(text, "Date");
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(h, "Tue, 14 Nov 2023 23:13:20 +0000");
	free(h);
	h = header(text, "Message-ID");
	ck_assert_ptr_nonnull(h);
	ck_assert_msg(
	    h[0] == '<' && h[strlen(h) - 1] == '>' && strchr(h, '@') != NULL,
	    "Message-ID %s", h);
	free(h);

	assert_has(text, "2 messages failed");
	assert_has(text, f1->id);
	assert_has(text, f2->id);
	assert_has(text,
	    "<a@example.com> failed: 550 5.1.1 <a>: Recipient address "
	    "rejected");
	assert_has(text, "<b@example.com> sent: 250 2.0.0 Ok: queued as 1234");
	assert_has(text, "<c@example.net> failed: 554 5.7.1 Relay access "
	                 "denied");
	assert_has(text, "last reply: gave up after 50 attempts");
	assert_has(text, "Queue: 7 messages waiting");
	assert_has(text, "oldest arrived 1h 2m ago");
	/* f1 is listed before f2, as they failed. */
	ck_assert_msg(strstr(text, f1->id) < strstr(text, f2->id),
	    "failures out of order");
	free(text);
	envelope_free(f1);
	envelope_free(f2);
	deliver(env);
	report_free(r);
}
END_TEST

/* Queue depth and age of the oldest message, as the report words them. */
static const struct queue_case {
	size_t depth;
	long age; /* -1: no oldest */
	const char *line;
} queue_cases[] = {
    {0, -1, "Queue: 0 messages waiting."},
    {1, 9, "Queue: 1 message waiting; the oldest arrived 9s ago."},
    {3, 250, "Queue: 3 messages waiting; the oldest arrived 4m 10s ago."},
    {12, 2 * 86400 + 3 * 3600 + 59,
        "Queue: 12 messages waiting; the oldest arrived 2d 3h ago."},
};

START_TEST(test_queue_line)
{
	const struct queue_case *c = &queue_cases[_i];
	struct report *r = report_new(&cfg, T0);
	time_t now = T0 + IVAL;
	char *text;

	fail_one(r, NULL);
	ck_assert_int_eq(report_send(r, spool, now, c->depth,
	                     c->age < 0 ? (time_t)-1 : now - c->age),
	    1);
	text = take_report(NULL);
	assert_has(text, c->line);
	assert_has(text, "Subject: Arnie: 1 failed message on mx.test\r\n");
	free(text);
	report_free(r);
}
END_TEST

/* Failures are reported once; later ones go into the next report. */
START_TEST(test_reported_once)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char old1[SPOOL_IDLEN + 1], old2[SPOOL_IDLEN + 1];
	char new1[SPOOL_IDLEN + 1];
	char *text;

	fail_one(r, old1);
	fail_one(r, old2);
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, old1);
	assert_has(text, old2);
	free(text);
	deliver(env);

	/* Nothing new: nothing at the next due time. */
	expect_quiet(r, T0 + 2 * IVAL);
	ck_assert_int_eq(report_next(r), T0 + 3 * IVAL);

	fail_one(r, new1);
	expect_quiet(r, T0 + 3 * IVAL - 1);
	ck_assert_int_eq(report_send(r, spool, T0 + 3 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, new1);
	assert_lacks(text, old1);
	assert_lacks(text, old2);
	assert_has(text, "Subject: Arnie: 1 failed message on mx.test");
	assert_has(text, "1 message failed and was moved to");
	free(text);
	deliver(env);
	expect_quiet(r, T0 + 4 * IVAL);
	report_free(r);
}
END_TEST

/* A report that fails itself is not reported: no loop. */
START_TEST(test_no_loop)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char real[SPOOL_IDLEN + 1], own[SPOOL_IDLEN + 1];
	char *text;

	fail_one(r, NULL);
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL, 0, -1), 1);
	text = take_report(&env);
	free(text);
	memcpy(own, env->id, sizeof(own));

	/* The admin's server refuses the report: the sender moves it to
	 * failed/ and tells report about it, with the envelope it loaded. */
	env->rcpts[0].state = RCPT_FAILED;
	envelope_set_reply(&env->rcpts[0].reply, "550 5.1.1 no such user");
	envelope_set_reply(&env->last_reply, "550 5.1.1 no such user");
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_FAILED), 0);
	report_failed(r, env);
	envelope_free(env);
	expect_quiet(r, T0 + 2 * IVAL);

	/* With a real failure beside it, only the real one counts. */
	env = NULL;
	ck_assert_int_eq(spool_load(spool, own, &env), -1);
	fail_one(r, real);
	ck_assert_int_eq(report_send(r, spool, T0 + 3 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, real);
	assert_lacks(text, own);
	assert_has(text, "Subject: Arnie: 1 failed message on");
	free(text);
	deliver(env);
	report_free(r);
}
END_TEST

/* --------------------------------------------------------- the cap */

static const struct cap_case {
	int n;
} cap_cases[] = {
    {MAX_LISTED - 1},
    {MAX_LISTED},
    {MAX_LISTED + 1},
    {MAX_LISTED + 37},
};

START_TEST(test_cap)
{
	int n = cap_cases[_i].n, i, listed = n < MAX_LISTED ? n : MAX_LISTED;
	struct report *r = report_new(&cfg, T0);
	char(*ids)[SPOOL_IDLEN + 1] = xcalloc((size_t)n, sizeof(*ids));
	struct envelope *env;
	char buf[128], *text;

	for (i = 0; i < n; i++)
		fail_one(r, ids[i]);
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL, 0, -1), 1);
	text = take_report(&env);
	snprintf(buf, sizeof(buf), "Subject: Arnie: %d failed messages", n);
	assert_has(text, buf);
	snprintf(buf, sizeof(buf), "\r\n%d messages failed and were moved", n);
	assert_has(text, buf);
	for (i = 0; i < n; i++)
		ck_assert_msg((strstr(text, ids[i]) != NULL) == (i < listed),
		    "failure %d of %d %s", i + 1, n,
		    i < listed ? "not listed" : "listed past the cap");
	if (n > listed) {
		snprintf(buf, sizeof(buf), "... and %d more, not listed.",
		    n - listed);
		assert_has(text, buf);
	} else
		assert_lacks(text, "not listed");
	free(text);
	deliver(env);

	/* Everything was counted, so nothing is left for the next one. */
	expect_quiet(r, T0 + 2 * IVAL);
	free(ids);
	report_free(r);
}
END_TEST

/* ----------------------------------------------------- queue trouble */

/* Ongoing trouble is reported once it lasts an interval, and only once. */
START_TEST(test_trouble_ongoing)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char *text;

	report_trouble(r, "connection refused", T0 + 10);
	/* At the first due time it has lasted less than an interval. */
	expect_quiet(r, T0 + IVAL);
	report_trouble(r,
	    "454 Throttling failure: Maximum sending rate exceeded",
	    T0 + IVAL + 5);
	ck_assert_int_eq(report_send(r, spool, T0 + 2 * IVAL, 2, T0), 1);
	text = take_report(&env);
	assert_has(text, "Subject: Arnie: upstream is unreachable on mx.test");
	assert_has(text, "No message failed.");
	/* Since the start of the stretch, with the latest reason. */
	assert_has(text, "Upstream: unreachable since Tue, 14 Nov 2023 "
	                 "22:13:30 +0000 (1h 59m): 454 Throttling failure");
	assert_lacks(text, "connection refused");
	assert_has(text, "Queue: 2 messages waiting; the oldest arrived 2h 0m");
	free(text);
	deliver(env);

	/* Still down: told already. */
	report_trouble(r, "connection refused", T0 + 2 * IVAL + 30);
	expect_quiet(r, T0 + 3 * IVAL);
	expect_quiet(r, T0 + 4 * IVAL);
	report_free(r);
}
END_TEST

/*
 * How the end of trouble is noted.  The end of trouble a report told of
 * is news (the admin must not be left believing the upstream is down);
 * the end of trouble no report told of is said in the next report with
 * failures.
 */
START_TEST(test_trouble_recovered)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char id[SPOOL_IDLEN + 1];
	char *text;

	/* Reported while ongoing, then over: a report says so, once. */
	report_trouble(r, "connection timed out", T0 - IVAL);
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, "Upstream: unreachable since");
	free(text);
	deliver(env);
	report_recovered(r, T0 + IVAL + 600);
	ck_assert_int_eq(report_send(r, spool, T0 + 2 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, "Subject: Arnie: upstream was unreachable on mx.test");
	assert_has(text, "No message failed.");
	assert_has(text, "Upstream: was unreachable from");
	free(text);
	deliver(env);
	expect_quiet(r, T0 + 2 * IVAL + IVAL / 2);

	/* A short stretch, over before the report: the failures' report
	 * says when it was. */
	report_trouble(
	    r, "421 4.3.2 Service not available", T0 + 2 * IVAL + 60);
	report_recovered(r, T0 + 2 * IVAL + 120);
	fail_one(r, id);
	ck_assert_int_eq(report_send(r, spool, T0 + 3 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, id);
	assert_has(text, "Upstream: was unreachable from Wed, 15 Nov 2023 "
	                 "00:14:20 +0000 to Wed, 15 Nov 2023 00:15:20 +0000: "
	                 "421 4.3.2 Service not available");
	free(text);
	deliver(env);

	/* Said once: the next report does not repeat it. */
	fail_one(r, id);
	ck_assert_int_eq(report_send(r, spool, T0 + 4 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_lacks(text, "Upstream:");
	free(text);
	deliver(env);

	/* A short stretch over before a quiet due time is forgotten. */
	report_trouble(r, "connection refused", T0 + 4 * IVAL + 60);
	report_recovered(r, T0 + 4 * IVAL + 120);
	expect_quiet(r, T0 + 5 * IVAL);
	fail_one(r, id);
	ck_assert_int_eq(report_send(r, spool, T0 + 6 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_lacks(text, "Upstream:");
	free(text);
	deliver(env);
	report_free(r);
}
END_TEST

/*
 * Trouble that lasted longer than an interval is reported even when it is
 * over by the time the report is due: a near two-interval outage that began
 * just after one due time and ended just before the next but one must not
 * go unmentioned.
 */
START_TEST(test_trouble_long_but_over)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char *text;

	report_trouble(r, "connection refused", T0 + 100);
	expect_quiet(r, T0 + IVAL);
	report_recovered(r, T0 + 2 * IVAL - 100);
	ck_assert_int_eq(report_send(r, spool, T0 + 2 * IVAL, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, "Subject: Arnie: upstream was unreachable on mx.test");
	assert_has(text, "No message failed.");
	assert_has(text, "Upstream: was unreachable from Tue, 14 Nov 2023 "
	                 "22:15:00 +0000 to Wed, 15 Nov 2023 00:11:40 +0000: "
	                 "connection refused");
	free(text);
	deliver(env);
	expect_quiet(r, T0 + 3 * IVAL);
	report_free(r);
}
END_TEST

/* ---------------------------------------------------- commit failure */

/* A report that cannot be committed keeps its records for a retry. */
START_TEST(test_commit_fails)
{
	struct report *r = report_new(&cfg, T0);
	struct envelope *env;
	char id[SPOOL_IDLEN + 1], *p = xasprintf("%s/outbox", spooldir);
	char *text;

	fail_one(r, id);
	/* The open descriptor now names a deleted folder: the rename fails
	 * even for root. */
	ck_assert_int_eq(rmdir(p), 0);
	errno = 0;
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL, 0, -1), -1);
	ck_assert_int_ne(errno, 0);
	ck_assert_int_eq(report_next(r), T0 + IVAL + 60);
	spool_close(spool);
	spool = spool_open(spooldir, false);
	ck_assert_ptr_nonnull(spool);
	expect_quiet(r, T0 + IVAL + 59);
	ck_assert_int_eq(report_send(r, spool, T0 + IVAL + 60, 0, -1), 1);
	text = take_report(&env);
	assert_has(text, id);
	free(text);
	deliver(env);
	free(p);
	report_free(r);
}
END_TEST

/* ------------------------------------------------------------ secret */

/* Every key config_load() reads, cleared so the test sees only its file. */
static const char *const env_keys[] = {"OUTBOUND_EMAIL_HOST",
    "OUTBOUND_EMAIL_HOST_PORT", "OUTBOUND_EMAIL_USE_TLS",
    "OUTBOUND_EMAIL_TLS_VERIFY", "OUTBOUND_EMAIL_CA_FILE",
    "OUTBOUND_EMAIL_USERNAME", "OUTBOUND_EMAIL_PASSWORD",
    "OUTBOUND_EMAIL_PASSWORD_FILE", "OUTBOUND_EMAIL_TIMEOUT_SECONDS",
    "ARNIE_HOSTNAME", "ADMIN_ADDRESS", "REPORT_FROM", "REPORT_INTERVAL_SECONDS",
    "FILES_DIRECTORY", "SAVE_SENT_MAIL", "ARNIE_LISTEN_ADDRESS",
    "ARNIE_LISTEN_PORT", "MAX_MESSAGE_SIZE", "MAX_RECIPIENTS",
    "MAX_CONNECTIONS", "ARNIE_SMTP_TIMEOUT_SECONDS", "RETRY_DELAY_SECONDS",
    "RETRY_MAX_DELAY_SECONDS", "MAX_SEND_ATTEMPTS",
    "MAX_QUEUE_LIFETIME_SECONDS", "MAX_SEND_RATE", "ARNIE_MAX_BATCH",
    "ARNIE_MILTER_SOCKET", "ARNIE_MILTER_MODE", "ARNIE_LOG_FILE"};

/*
 * A configuration loaded from a .env with the password set: neither the
 * report nor the log line about it holds the password, whatever else the
 * report shows (failures, trouble, queue).
 */
START_TEST(test_secret)
{
	char path[256], err[256], *text, *log;
	struct config *loaded;
	struct envelope *env;
	struct report *r;
	size_t i, n;
	FILE *fp;

	for (i = 0; i < sizeof(env_keys) / sizeof(env_keys[0]); i++)
		unsetenv(env_keys[i]);
	snprintf(path, sizeof(path), "%s/arnie.env", tmpdir);
	fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	fprintf(fp,
	    "OUTBOUND_EMAIL_HOST=email-smtp.eu-west-1.amazonaws.com\n"
	    "OUTBOUND_EMAIL_USERNAME=AKIAEXAMPLE\n"
	    "OUTBOUND_EMAIL_PASSWORD='%s'\n"
	    "ADMIN_ADDRESS=" ADMIN "\n"
	    "REPORT_INTERVAL_SECONDS=60\n"
	    "ARNIE_HOSTNAME=arnie.example.org\n"
	    "FILES_DIRECTORY=%s\n",
	    SECRET, tmpdir);
	ck_assert_int_eq(fclose(fp), 0);
	loaded = config_load(path, NULL, err, sizeof(err));
	ck_assert_msg(loaded != NULL, "config_load: %s", err);
	ck_assert_str_eq(loaded->password, SECRET);
	ck_assert_str_eq(loaded->spool_directory, spooldir);

	r = report_new(loaded, T0);
	ck_assert_int_eq(report_next(r), T0 + 60);
	fail_one(r, NULL);
	report_trouble(r, "535 5.7.8 Authentication credentials invalid", T0);
	ck_assert_int_eq(report_send(r, spool, T0 + 60, 3, T0), 1);
	text = take_report(&env); /* fails if SECRET is in the text */
	ck_assert_str_eq(env->sender, ADMIN);
	assert_has(text, "Subject: Arnie: 1 failed message on "
	                 "arnie.example.org");
	free(text);
	deliver(env);

	fp = fopen(logpath, "r");
	ck_assert_ptr_nonnull(fp);
	log = xmalloc(1 << 16);
	n = fread(log, 1, (1 << 16) - 1, fp);
	fclose(fp);
	log[n] = '\0';
	assert_has(log, "failure report to <" ADMIN "> queued");
	assert_lacks(log, SECRET);
	free(log);
	report_free(r);
	config_free(loaded);
}
END_TEST

/* ------------------------------------------------------------- suite */

#define NCASES(a) ((int)(sizeof(a) / sizeof((a)[0])))

static Suite *
report_suite(void)
{
	Suite *s = suite_create("report");
	TCase *tc;

	tc = tcase_create("report");
	tcase_add_unchecked_fixture(tc, make_base, remove_base);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_quiet, 0, NCASES(quiet_cases));
	tcase_add_loop_test(tc, test_report_content, 0, NCASES(sender_cases));
	tcase_add_loop_test(tc, test_queue_line, 0, NCASES(queue_cases));
	tcase_add_test(tc, test_reported_once);
	tcase_add_test(tc, test_no_loop);
	tcase_add_loop_test(tc, test_cap, 0, NCASES(cap_cases));
	tcase_add_test(tc, test_trouble_ongoing);
	tcase_add_test(tc, test_trouble_recovered);
	tcase_add_test(tc, test_trouble_long_but_over);
	tcase_add_test(tc, test_commit_fails);
	tcase_add_test(tc, test_secret);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	/* Reports carry local time; the expected dates are in UTC. */
	setenv("TZ", "UTC0", 1);
	tzset();
	return unit_run(report_suite());
}
