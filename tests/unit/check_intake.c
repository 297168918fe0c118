/*
 * Unit tests for intake (a message streamed into the spool) and commitq
 * (group commit), against a real spool in a mkdtemp() directory.
 *
 * The central property: whatever the message's shape, however it is cut
 * into pieces and whether it stays in memory or goes to a draft as it
 * arrives, the spooled message is exactly the Received: field followed by
 * message_fixup()'s completion of the whole message, the result of the
 * plain path (one buffer, message_iov()).
 */
#include "autoconf.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "commitq.h"
#include "intake.h"
#include "message.h"
#include "scratch.h"
#include "spool.h"
#include "xmalloc.h"

#define RECEIVED "Received: by test (Arnie) id X; today\r\n"
#define WHEN 1732521600

static char basedir[64];
static char tmpdir[128];
static char spooldir[192];
static struct spool *spool;

static void
make_base(void)
{
	scratch_make(basedir, sizeof(basedir), "/tmp/check_intake.XXXXXX");
}

static void
remove_base(void)
{
	scratch_remove(basedir);
}

static void
setup(void)
{
	char template[128];

	snprintf(template, sizeof(template), "%s/t.XXXXXX", basedir);
	scratch_make(tmpdir, sizeof(tmpdir), template);
	snprintf(spooldir, sizeof(spooldir), "%s/arniefiles", tmpdir);
	spool = spool_open(spooldir, false);
	ck_assert_ptr_nonnull(spool);
}

static void
teardown(void)
{
	spool_close(spool);
	scratch_remove(tmpdir);
}

static int
count(const char *folder)
{
	char *p = xasprintf("%s/%s", spooldir, folder);
	struct dirent *de;
	DIR *d = opendir(p);
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	free(p);
	return n;
}

static struct envelope *
new_env(void)
{
	struct envelope *env = envelope_new();

	env->sender = xstrdup("app@example.org");
	envelope_add_rcpt(env, "to@example.net");
	spool_new_id(spool, env->id);
	return env;
}

/* The message as spooled. */
static char *
spooled(const char *id, size_t *lenp)
{
	struct envelope *env = NULL;
	char *buf = NULL;
	size_t len = 0, n;
	FILE *fp;

	ck_assert_int_eq(spool_load(spool, id, &env), 0);
	ck_assert_ptr_nonnull(fp = spool_open_message(spool, env));
	buf = xmalloc(env->size + 1);
	while ((n = fread(buf + len, 1, env->size + 1 - len, fp)) > 0)
		len += n;
	fclose(fp);
	ck_assert_uint_eq(len, env->size);
	envelope_free(env);
	*lenp = len;
	return buf;
}

/* What the plain path spools for msg: the Received: field and the
 * completion of the whole message. */
static char *
expected(
    const char *msg, size_t len, const char *id, unsigned opts, size_t *outlen)
{
	struct message_fix fix;
	struct iovec iov[64];
	char *out;
	size_t used;
	int i, n;

	message_fixup(
	    &fix, msg, len, opts, id, "app@example.org", "test", WHEN);
	n = message_iov(&fix, msg, len, iov, 64);
	ck_assert_int_gt(n, -1);
	out = xmalloc(strlen(RECEIVED) + fix.size + 1);
	used = strlen(RECEIVED);
	memcpy(out, RECEIVED, used);
	for (i = 0; i < n; i++) {
		memcpy(out + used, iov[i].iov_base, iov[i].iov_len);
		used += iov[i].iov_len;
	}
	message_fix_clear(&fix);
	*outlen = used;
	return out;
}

/* Commit through a queue, waiting: 0 or an errno. */
static int
commit(struct intake *in)
{
	struct commitq *q = commitq_new(spool, NULL);
	int err = commitq_commit(q, in);

	commitq_free(q);
	return err;
}

static struct intake *
feed(const char *msg, size_t len, size_t chunk, const struct intake_opts *o)
{
	struct intake *in = intake_new(spool, new_env(), RECEIVED, o, WHEN);
	size_t off, n;

	/* As the front-ends do: flush when asked to. */
	for (off = 0; off < len; off += n) {
		n = len - off < chunk ? len - off : chunk;
		if (intake_add(in, msg + off, n) && intake_wants_flush(in))
			intake_flush(in);
	}
	return in;
}

/* ------------------------------------------------ the central property */

static char *big_body(size_t size);

struct shape {
	const char *what;
	const char *msg; /* NULL: a big generated message */
	unsigned opts;
};

static const struct shape shapes[] = {
    {"usual", "Subject: hi\r\nTo: a@b\r\n\r\nbody\r\nmore\r\n", 0},
    {"missing fields added", "Subject: only\r\n\r\nbody\r\n", 0},
    {"bcc dropped",
        "To: a@b\r\nBcc: hidden@x,\r\n\tother@y\r\nSubject: s\r\n\r\nb\r\n", 0},
    {"bcc kept", "To: a@b\r\nBcc: hidden@x\r\n\r\nb\r\n", MESSAGE_KEEP_BCC},
    {"repeats dropped",
        "Date: 1\r\nDate: 2\r\nReturn-Path: <x>\r\nFrom: a\r\n\r\nb\r\n", 0},
    {"body first", "no header here\r\nsecond line\r\n", 0},
    {"no empty line", "Subject: x\r\nTo: y\r\n", 0},
    {"last line without CRLF", "Subject: x\r\n\r\nbody without end", 0},
    {"last line ends in CR", "Subject: x\r\n\r\nbody\r", 0},
    {"empty", "", 0},
    {"bare LF inside lines", "Subject: a\nb\r\n\r\nx\ny\r\n", 0},
    {"big", NULL, 0},
};

/* chunk sizes, and buffer sizes: 16 forces a draft for all but the
 * smallest, 0 (INTAKE_BUFFER) keeps the small ones in memory. */
static const size_t chunks[] = {1, 7, 4096, (size_t)-1};
static const size_t buffers[] = {16, 0};

START_TEST(test_streamed_equals_whole)
{
	size_t nc = sizeof(chunks) / sizeof(chunks[0]);
	size_t nb = sizeof(buffers) / sizeof(buffers[0]);
	const struct shape *sh = &shapes[_i / (nc * nb)];
	size_t chunk = chunks[(_i / nb) % nc], buffer = buffers[_i % nb];
	struct intake_opts o = {.fix_opts = sh->opts,
	    .hostname = "test",
	    .max_size = 0,
	    .buffer = buffer};
	struct intake *in;
	char *msg, *want, *got, id[SPOOL_IDLEN + 1];
	size_t len, wlen, glen;

	msg = sh->msg != NULL ? xstrdup(sh->msg) : big_body(300 * 1024);
	len = strlen(msg);
	if (sh->msg == NULL && chunk == 1)
		chunk = 3; /* the big one octet by octet is slow, not wrong */
	in = feed(msg, len, chunk, &o);
	ck_assert_int_eq(intake_end(in), INTAKE_OK);
	ck_assert_int_eq(commit(in), 0);
	snprintf(id, sizeof(id), "%s", intake_envelope(in)->id);
	got = spooled(id, &glen);
	want = expected(msg, len, id, sh->opts, &wlen);
	ck_assert_msg(glen == wlen && memcmp(got, want, glen) == 0,
	    "%s, chunks of %zu, buffer %zu: spooled %zu octets, want %zu",
	    sh->what, chunk, buffer, glen, wlen);
	ck_assert_uint_eq(intake_envelope(in)->size, wlen);
	ck_assert_uint_eq(intake_received(in), len);
	ck_assert_int_eq(count("inbox"), 0);
	intake_free(in);
	free(got);
	free(want);
	free(msg);
}
END_TEST

/* A message with a header section and a long body of short lines. */
static char *
big_body(size_t size)
{
	static const char head[] =
	    "Subject: big\r\nBcc: x@y\r\nTo: a@b\r\n\r\n";
	char *m = xmalloc(size + 1);
	size_t i, at = sizeof(head) - 1;

	memcpy(m, head, at);
	for (i = 0; at < size - 2; i++, at++)
		m[at] = i % 77 == 76   ? '\n'
		        : i % 77 == 75 ? '\r'
		                       : 'a' + i % 26;
	m[at++] = '\r';
	m[at++] = '\n';
	m[at] = '\0';
	return m;
}

/* ------------------------------------------------------------ refusals */

START_TEST(test_too_big_leaves_nothing)
{
	struct intake_opts o = {.fix_opts = 0,
	    .hostname = "test",
	    .max_size = 100000,
	    .buffer = 1024};
	char *msg = big_body(200000);
	struct intake *in = intake_new(spool, new_env(), RECEIVED, &o, WHEN);
	size_t off;
	bool ok = true;

	/* Refused as soon as it is too big, and the draft that held the
	 * first 100 KB is gone at once. */
	for (off = 0; off < 200000 && ok; off += 1000) {
		ok = intake_add(in, msg + off, 1000);
		if (ok && intake_wants_flush(in))
			intake_flush(in);
	}
	ck_assert(!ok);
	ck_assert_uint_le(off, 101000);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(intake_end(in), INTAKE_TOOBIG);
	intake_free(in);
	ck_assert_int_eq(count("inbox") + count("outbox"), 0);
	free(msg);
}
END_TEST

START_TEST(test_long_line_leaves_nothing)
{
	struct intake_opts o = {.fix_opts = 0,
	    .hostname = "test",
	    .max_size = 0,
	    .buffer = _i == 0 ? 0 : 64};
	char line[1200], *msg;
	struct intake *in;

	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	msg = xasprintf("Subject: s\r\n\r\nshort\r\n%s\r\nend\r\n", line);
	in = feed(msg, strlen(msg), 100, &o);
	ck_assert_int_eq(intake_end(in), INTAKE_LONGLINE);
	intake_free(in);
	ck_assert_int_eq(count("inbox") + count("outbox"), 0);
	free(msg);
}
END_TEST

/* A header section that never ends cannot be completed in bounded
 * memory: refused past INTAKE_HEADER_MAX. */
START_TEST(test_endless_header)
{
	struct intake_opts o = {
	    .fix_opts = 0, .hostname = "test", .max_size = 0, .buffer = 1024};
	struct intake *in = intake_new(spool, new_env(), RECEIVED, &o, WHEN);
	static const char field[] =
	    "X-Filler: 0123456789012345678901234567\r\n";
	size_t sent = 0;
	bool ok = true;

	while (ok && sent < 2 * INTAKE_HEADER_MAX) {
		ok = intake_add(in, field, sizeof(field) - 1);
		sent += sizeof(field) - 1;
	}
	ck_assert(!ok);
	ck_assert_uint_le(sent, INTAKE_HEADER_MAX + sizeof(field));
	ck_assert_int_eq(intake_end(in), INTAKE_HEADER_TOOBIG);
	intake_free(in);
	ck_assert_int_eq(count("inbox") + count("outbox"), 0);
}
END_TEST

/* The spool refuses the draft: the message is refused with the errno. */
START_TEST(test_write_error)
{
	struct intake_opts o = {
	    .fix_opts = 0, .hostname = "test", .max_size = 0, .buffer = 64};
	char *inbox = xasprintf("%s/inbox", spooldir);
	char *msg = big_body(10000);
	struct intake *in;

	ck_assert_int_eq(rmdir(inbox), 0);
	in = feed(msg, strlen(msg), 500, &o);
	ck_assert_int_eq(intake_end(in), INTAKE_IOERR);
	ck_assert_int_eq(intake_errno(in), ENOENT);
	intake_free(in);
	ck_assert_int_eq(count("outbox"), 0);
	free(msg);
	free(inbox);
}
END_TEST

/* Adding only holds: the disk is touched by intake_flush() alone, which
 * the front-end runs where it may wait. */
START_TEST(test_add_touches_no_disk)
{
	struct intake_opts o = {
	    .fix_opts = 0, .hostname = "test", .max_size = 0, .buffer = 64};
	char *msg = big_body(10000);
	struct intake *in = intake_new(spool, new_env(), RECEIVED, &o, WHEN);

	ck_assert(intake_add(in, msg, 5000));
	ck_assert(intake_wants_flush(in));
	ck_assert_int_eq(count("inbox"), 0);
	intake_flush(in);
	ck_assert_int_eq(count("inbox"), 1);
	ck_assert(!intake_wants_flush(in));
	ck_assert(intake_add(in, msg + 5000, 5000));
	ck_assert_int_eq(intake_end(in), INTAKE_OK);
	ck_assert_int_eq(commit(in), 0);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(count("outbox"), 1);
	intake_free(in);
	free(msg);
}
END_TEST

/* Abandoned midway (the client went away): the draft goes. */
START_TEST(test_abandoned)
{
	struct intake_opts o = {
	    .fix_opts = 0, .hostname = "test", .max_size = 0, .buffer = 64};
	char *msg = big_body(10000);
	struct intake *in = feed(msg, 5000, 500, &o);

	ck_assert_int_eq(count("inbox"), 1);
	intake_free(in);
	ck_assert_int_eq(count("inbox") + count("outbox"), 0);
	free(msg);
}
END_TEST

/* ------------------------------------------------------------ commitq */

#define CQ_THREADS 5
#define CQ_PER_THREAD 20

struct cq_job {
	struct intake *in;
	char body[64];
	int error;
	bool called;
};

static pthread_mutex_t cq_lock = PTHREAD_MUTEX_INITIALIZER;
static int cq_done;
static struct cq_job cq_jobs[CQ_THREADS * CQ_PER_THREAD];
static struct commitq *cq;

static void
cq_done_fn(void *arg, int error)
{
	struct cq_job *j = arg;

	pthread_mutex_lock(&cq_lock);
	j->error = error;
	j->called = true;
	cq_done++;
	pthread_mutex_unlock(&cq_lock);
}

/* Half the threads submit, the other half wait for their commits. */
static void *
cq_thread(void *arg)
{
	struct cq_job *mine = arg;
	bool wait = (mine - cq_jobs) / CQ_PER_THREAD % 2 == 1;
	int i;

	for (i = 0; i < CQ_PER_THREAD; i++)
		if (wait)
			cq_done_fn(&mine[i], commitq_commit(cq, mine[i].in));
		else
			commitq_submit(cq, mine[i].in, cq_done_fn, &mine[i]);
	return NULL;
}

START_TEST(test_commitq)
{
	struct intake_opts o = {.fix_opts = MESSAGE_KEEP_BCC,
	    .hostname = "test",
	    .max_size = 0,
	    .buffer = 0};
	struct envelope *bad = envelope_new();
	struct cq_job badjob = {0};
	pthread_t th[CQ_THREADS];
	char *got, *want;
	size_t glen, wlen;
	int i;

	for (i = 0; i < CQ_THREADS * CQ_PER_THREAD; i++) {
		snprintf(cq_jobs[i].body, sizeof(cq_jobs[i].body),
		    "Subject: %d\r\n\r\nmessage %d\r\n", i, i);
		cq_jobs[i].in =
		    feed(cq_jobs[i].body, strlen(cq_jobs[i].body), 4096, &o);
		ck_assert_int_eq(intake_end(cq_jobs[i].in), INTAKE_OK);
		cq_jobs[i].error = -1;
	}
	cq = commitq_new(spool, NULL);
	for (i = 0; i < CQ_THREADS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, cq_thread,
		                     &cq_jobs[i * CQ_PER_THREAD]),
		    0);
	/* A job that fails (no recipients) fails alone. */
	badjob.in = intake_new(spool, bad, RECEIVED, &o, WHEN);
	ck_assert(intake_add(badjob.in, "x\r\n", 3));
	ck_assert_int_eq(intake_end(badjob.in), INTAKE_OK);
	commitq_submit(cq, badjob.in, cq_done_fn, &badjob);
	for (i = 0; i < CQ_THREADS; i++)
		pthread_join(th[i], NULL);
	commitq_free(cq); /* drains every submitted job */

	ck_assert_int_eq(cq_done, CQ_THREADS * CQ_PER_THREAD + 1);
	ck_assert(badjob.called);
	ck_assert_int_eq(badjob.error, EINVAL);
	ck_assert_int_eq(count("outbox"), CQ_THREADS * CQ_PER_THREAD);
	ck_assert_int_eq(count("inbox"), 0);
	for (i = 0; i < CQ_THREADS * CQ_PER_THREAD; i++) {
		const char *id = intake_envelope(cq_jobs[i].in)->id;

		ck_assert(cq_jobs[i].called);
		ck_assert_int_eq(cq_jobs[i].error, 0);
		got = spooled(id, &glen);
		want = expected(cq_jobs[i].body, strlen(cq_jobs[i].body), id,
		    MESSAGE_KEEP_BCC, &wlen);
		ck_assert_uint_eq(glen, wlen);
		ck_assert(memcmp(got, want, glen) == 0);
		free(got);
		free(want);
		intake_free(cq_jobs[i].in);
	}
	intake_free(badjob.in);
}
END_TEST

static Suite *
intake_suite(void)
{
	Suite *s = suite_create("intake");
	TCase *tc = tcase_create("intake");
	size_t n = sizeof(shapes) / sizeof(shapes[0]) *
	           (sizeof(chunks) / sizeof(chunks[0])) *
	           (sizeof(buffers) / sizeof(buffers[0]));

	tcase_add_unchecked_fixture(tc, make_base, remove_base);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_streamed_equals_whole, 0, (int)n);
	tcase_add_test(tc, test_too_big_leaves_nothing);
	tcase_add_loop_test(tc, test_long_line_leaves_nothing, 0, 2);
	tcase_add_test(tc, test_endless_header);
	tcase_add_test(tc, test_write_error);
	tcase_add_test(tc, test_add_touches_no_disk);
	tcase_add_test(tc, test_abandoned);
	tcase_add_test(tc, test_commitq);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(intake_suite());
}
