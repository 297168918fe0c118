/*
 * Unit tests for spool (envelope format, IDs, commit, update, finish,
 * quarantine, inbox cleanup, the sender lock, drafts and state files).
 * Every test works in its own mkdtemp() directory under /tmp and removes it.
 */
#include "autoconf.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scratch.h"
#include "spares.h"
#include "spool.h"
#include "xmalloc.h"

/* ------------------------------------------------------------ helpers */

/*
 * basedir is made once per test case by an unchecked fixture, which runs
 * in the runner process, so it is removed even when a test fails (Check
 * skips the checked teardown of a failed test).  Each test gets its own
 * tmpdir inside it.
 */
static char basedir[64];
static char tmpdir[128];
static char spooldir[192];

static void
make_base(void)
{
	scratch_make(basedir, sizeof(basedir), "/tmp/check_spool.XXXXXX");
}

static void
remove_base(void)
{
	scratch_remove(basedir);
}

static void
setup_dir(void)
{
	char template[128];

	snprintf(template, sizeof(template), "%s/t.XXXXXX", basedir);
	scratch_make(tmpdir, sizeof(tmpdir), template);
	/* Nested, so spool_open() has to create the parents. */
	snprintf(spooldir, sizeof(spooldir), "%s/files/arniefiles", tmpdir);
}

static void
teardown_dir(void)
{
	scratch_remove(tmpdir);
}

static char *
sub(const char *folder, const char *name)
{
	return xasprintf("%s/%s/%s", spooldir, folder, name);
}

static bool
exists(const char *folder, const char *name)
{
	char *p = sub(folder, name);
	bool r = access(p, F_OK) == 0;

	free(p);
	return r;
}

/* Entries in a spool folder, "." and ".." excluded. */
static int
count(const char *folder)
{
	char *p = xasprintf("%s/%s", spooldir, folder);
	struct dirent *de;
	DIR *d = opendir(p);
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	free(p);
	return n;
}

static char *
slurp(const char *path, size_t *lenp)
{
	FILE *fp = fopen(path, "rb");
	char *buf;
	long n;

	ck_assert_ptr_nonnull(fp);
	fseek(fp, 0, SEEK_END);
	n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	buf = xmalloc((size_t)n + 1);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, fp), (size_t)n);
	buf[n] = '\0';
	fclose(fp);
	*lenp = (size_t)n;
	return buf;
}

static void
put_file(const char *folder, const char *name, const char *data, size_t len)
{
	char *p = sub(folder, name);
	FILE *fp = fopen(p, "wb");

	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(data, 1, len, fp), len);
	ck_assert_int_eq(fclose(fp), 0);
	free(p);
}

/* All that is left to read of fp, which is closed. */
static char *
read_rest(FILE *fp, size_t *lenp)
{
	char *buf = NULL;
	size_t cap = 0, len = 0, n;

	ck_assert_ptr_nonnull(fp);
	do {
		if (len == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = xreallocarray(buf, cap + 1, 1);
		}
		n = fread(buf + len, 1, cap - len, fp);
		len += n;
	} while (n > 0);
	fclose(fp);
	buf = xreallocarray(buf, len + 1, 1);
	buf[len] = '\0';
	*lenp = len;
	return buf;
}

/* The message as read back through spool_open_message(). */
static char *
read_message(struct spool *spool, const struct envelope *env, size_t *lenp)
{
	return read_rest(spool_open_message(spool, env), lenp);
}

static const char msg_head[] = "Subject: test\r\nFrom: a@example.org\r\n\r\n";
static const char msg_body[] = "Hello.\r\n..dot-stuffed line kept as is\r\n"
                               "\r\nbye\r\n";

static struct envelope *
sample_env(const char *sender, int nrcpts)
{
	struct envelope *env = envelope_new();
	char addr[64];
	int i;

	env->sender = xstrdup(sender);
	for (i = 0; i < nrcpts; i++) {
		snprintf(addr, sizeof(addr), "rcpt%d@example.net", i);
		envelope_add_rcpt(env, addr);
	}
	return env;
}

static void
commit_sample(struct spool *spool, struct envelope *env)
{
	struct iovec iov[2] = {
	    {(void *)msg_head, sizeof(msg_head) - 1},
	    {(void *)msg_body, sizeof(msg_body) - 1},
	};

	ck_assert_int_eq(spool_commit(spool, env, iov, 2), 0);
}

static void
assert_str_or_null(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		ck_assert_ptr_eq(a, b);
	else
		ck_assert_str_eq(a, b);
}

static void
assert_env_eq(const struct envelope *a, const struct envelope *b)
{
	size_t i;

	ck_assert_str_eq(a->id, b->id);
	ck_assert_str_eq(
	    a->sender ? a->sender : "", b->sender ? b->sender : "");
	ck_assert_uint_eq(a->nrcpts, b->nrcpts);
	for (i = 0; i < a->nrcpts; i++) {
		ck_assert_str_eq(a->rcpts[i].addr, b->rcpts[i].addr);
		ck_assert_int_eq(a->rcpts[i].state, b->rcpts[i].state);
		assert_str_or_null(a->rcpts[i].reply, b->rcpts[i].reply);
	}
	ck_assert_int_eq(a->created, b->created);
	ck_assert_uint_eq(a->attempts, b->attempts);
	ck_assert_int_eq(a->next_attempt, b->next_attempt);
	assert_str_or_null(a->last_reply, b->last_reply);
	assert_str_or_null(a->origin, b->origin);
	ck_assert_uint_eq(a->size, b->size);
}

/* --------------------------------------------------- format and parse */

static const struct {
	const char *sender;
	const char *rcpt;
	enum rcpt_state state;
	const char *reply;
	const char *last_reply;
	const char *origin;
} roundtrip_cases[] = {
    {"a@example.org", "b@example.net", RCPT_PENDING, NULL, NULL, NULL},
    {"", "postmaster", RCPT_SENT, "250 2.0.0 Ok: queued as X", NULL,
        "client=localhost[127.0.0.1], helo=web"},
    {"\"john smith\"@example.org", "\"a>b<c d\"@example.net", RCPT_FAILED,
        "550-5.1.1 first line\r\n550 5.1.1 second line",
        "550-5.1.1 first line\r\n550 5.1.1 second line", NULL},
    {"100%@example.org", "%41%@x", RCPT_PENDING, "451 100% busy %0A",
        "  leading and trailing blanks  ", "tab\there"},
    {"j\xc3\xbcrgen@b\xc3\xbc"
     "cher.example",
        "\xe7\x94\xa8@x.jp", RCPT_SENT, "250 ok\n", "\r\n", "\x01\x7f ctl"},
};

START_TEST(test_format_roundtrip)
{
	struct envelope *env = envelope_new(), *back = NULL;
	char *hdr, *file, *again;
	size_t hlen, alen;

	snprintf(env->id, sizeof(env->id), "%s", "0193A4B5C6D7E00001F");
	env->id[SPOOL_IDLEN] = '\0';
	env->sender = xstrdup(roundtrip_cases[_i].sender);
	envelope_add_rcpt(env, roundtrip_cases[_i].rcpt);
	env->rcpts[0].state = roundtrip_cases[_i].state;
	envelope_set_reply(&env->rcpts[0].reply, roundtrip_cases[_i].reply);
	envelope_add_rcpt(env, "second@example.net");
	envelope_set_reply(&env->last_reply, roundtrip_cases[_i].last_reply);
	envelope_set_reply(&env->origin, roundtrip_cases[_i].origin);
	env->created = 1732520000;
	env->attempts = 7;
	env->next_attempt = 1732523600;
	env->size = sizeof(msg_body) - 1;

	hdr = envelope_format(env, &hlen);
	/* Every header line is one line: no raw CR inside. */
	ck_assert_ptr_null(memchr(hdr, '\r', hlen));
	ck_assert(strncmp(hdr, "arnie-spool 2\n", 14) == 0);
	/* The size is padded to a fixed width (filled in after a stream). */
	{
		char want[64];

		snprintf(want, sizeof(want), "\nsize: %-*zu\n\n",
		    ENVELOPE_SIZE_WIDTH, sizeof(msg_body) - 1);
		ck_assert_ptr_nonnull(strstr(hdr, want));
	}
	file = xasprintf("%s%s", hdr, msg_body);
	ck_assert_int_eq(envelope_parse(file, strlen(file), &back), 0);
	ck_assert_int_eq(back->body_offset, (off_t)hlen);
	assert_env_eq(env, back);
	/* Stable: formatting the parsed envelope gives the same bytes. */
	again = envelope_format(back, &alen);
	ck_assert_uint_eq(alen, hlen);
	ck_assert(memcmp(again, hdr, hlen) == 0);
	free(again);
	free(file);
	free(hdr);
	envelope_free(back);
	envelope_free(env);
}
END_TEST

START_TEST(test_format_many_rcpts)
{
	struct envelope *env = sample_env("s@example.org", 1000), *back = NULL;
	char *hdr;
	size_t hlen, i;

	snprintf(env->id, sizeof(env->id), "%s", "0193A4B5C6D7E000020");
	env->created = 1;
	for (i = 0; i < env->nrcpts; i += 3) {
		env->rcpts[i].state = RCPT_SENT;
		envelope_set_reply(&env->rcpts[i].reply, "250 ok");
	}
	env->size = 0;
	hdr = envelope_format(env, &hlen);
	ck_assert_int_eq(envelope_parse(hdr, hlen, &back), 0);
	assert_env_eq(env, back);
	ck_assert_uint_eq(envelope_pending(back), 666);
	free(hdr);
	envelope_free(back);
	envelope_free(env);
}
END_TEST

#define GOOD_HEAD "arnie-spool 1\nid: 0193A4B5C6D7E000020\ncreated: 1\n"
#define GOOD_RCPT "from: <a@b>\nrcpt: pending <c@d>\n"

static const struct {
	const char *what;
	const char *text;
	bool ok;
} parse_cases[] = {
    {"minimal", GOOD_HEAD GOOD_RCPT "size: 3\n\nabc", true},
    {"unknown key ignored",
        GOOD_HEAD GOOD_RCPT "x-future: whatever\nsize: 3\n\nabc", true},
    {"CRLF header",
        "arnie-spool 1\r\nid: 0193A4B5C6D7E000020\r\n"
        "created: 1\r\nfrom: <a@b>\r\nrcpt: pending <c@d>\r\n"
        "size: 3\r\n\r\nabc",
        true},
    {"empty body", GOOD_HEAD GOOD_RCPT "size: 0\n\n", true},
    {"version 2, padded size",
        "arnie-spool 2\nid: 0193A4B5C6D7E000020\n"
        "created: 1\n" GOOD_RCPT "size: 3                   \n\nabc",
        true},
    {"bad version",
        "arnie-spool 3\nid: 0193A4B5C6D7E000020\n"
        "created: 1\n" GOOD_RCPT "size: 3\n\nabc",
        false},
    {"no magic",
        "id: 0193A4B5C6D7E000020\ncreated: 1\n" GOOD_RCPT "size: 3\n\nabc",
        false},
    {"truncated body", GOOD_HEAD GOOD_RCPT "size: 10\n\nabc", false},
    {"bytes appended", GOOD_HEAD GOOD_RCPT "size: 2\n\nabc", false},
    {"no blank line", GOOD_HEAD GOOD_RCPT "size: 0\n", false},
    {"truncated header", "arnie-spool 1\nid: 0193A4B5", false},
    {"garbage", "hello world\n\nabc", false},
    {"empty", "", false},
    {"missing id", "arnie-spool 1\ncreated: 1\n" GOOD_RCPT "size: 3\n\nabc",
        false},
    {"bad id",
        "arnie-spool 1\nid: 0193a4b5c6d7e0000020\ncreated: 1\n" GOOD_RCPT
        "size: 3\n\nabc",
        false},
    {"missing created",
        "arnie-spool 1\nid: 0193A4B5C6D7E000020\n" GOOD_RCPT "size: 3\n\nabc",
        false},
    {"missing from", GOOD_HEAD "rcpt: pending <c@d>\nsize: 3\n\nabc", false},
    {"no rcpt", GOOD_HEAD "from: <a@b>\nsize: 3\n\nabc", false},
    {"missing size", GOOD_HEAD GOOD_RCPT "\nabc", false},
    {"two froms", GOOD_HEAD GOOD_RCPT "from: <x@y>\nsize: 3\n\nabc", false},
    {"from without <>",
        GOOD_HEAD "from: a@b\nrcpt: pending <c@d>\n"
                  "size: 3\n\nabc",
        false},
    {"bad state",
        GOOD_HEAD "from: <a@b>\nrcpt: maybe <c@d>\n"
                  "size: 3\n\nabc",
        false},
    {"negative size", GOOD_HEAD GOOD_RCPT "size: -3\n\nabc", false},
    {"size overflow",
        GOOD_HEAD GOOD_RCPT "size: 99999999999999999999999\n\nabc", false},
    {"line without colon", GOOD_HEAD GOOD_RCPT "junk\nsize: 3\n\nabc", false},
    {"encoded NUL",
        GOOD_HEAD "from: <a%00b>\nrcpt: pending <c@d>\n"
                  "size: 3\n\nabc",
        false},
};

START_TEST(test_parse_table)
{
	struct envelope *env = NULL;
	const char *text = parse_cases[_i].text;
	int rc;

	errno = 0;
	rc = envelope_parse(text, strlen(text), &env);
	if (parse_cases[_i].ok) {
		ck_assert_msg(rc == 0, "%s: rejected", parse_cases[_i].what);
		ck_assert_str_eq(env->rcpts[0].addr, "c@d");
		envelope_free(env);
	} else {
		ck_assert_msg(rc == -1 && errno == EBADMSG,
		    "%s: accepted or wrong errno", parse_cases[_i].what);
	}
}
END_TEST

START_TEST(test_parse_nul_in_header)
{
	static const char text[] =
	    GOOD_HEAD "origin: a\0b\n" GOOD_RCPT "size: 3\n\nabc";
	struct envelope *env = NULL;

	errno = 0;
	ck_assert_int_eq(envelope_parse(text, sizeof(text) - 1, &env), -1);
	ck_assert_int_eq(errno, EBADMSG);
}
END_TEST

/* ---------------------------------------------------------------- IDs */

#define ID_THREADS 4
#define ID_PER_THREAD 5000

static char ids[ID_THREADS * ID_PER_THREAD][SPOOL_IDLEN + 1];

static void *
id_thread(void *arg)
{
	char(*mine)[SPOOL_IDLEN + 1] = arg;
	int i;

	for (i = 0; i < ID_PER_THREAD; i++)
		spool_new_id(NULL, mine[i]);
	return NULL;
}

static int
cmp_id(const void *a, const void *b)
{
	return strcmp(a, b);
}

START_TEST(test_ids)
{
	pthread_t th[ID_THREADS];
	char prev[SPOOL_IDLEN + 1], id[SPOOL_IDLEN + 1];
	time_t now = time(NULL), t;
	int i, j;

	/* One thread: strictly increasing (as strings, so ls sorts them by
	 * arrival), well formed, with our PID and the current time. */
	spool_new_id(NULL, prev);
	for (i = 0; i < 10000; i++) {
		spool_new_id(NULL, id);
		ck_assert_uint_eq(strlen(id), SPOOL_IDLEN);
		ck_assert_msg(strcmp(prev, id) < 0, "%s !< %s", prev, id);
		memcpy(prev, id, sizeof(id));
	}
	for (j = 0; j < SPOOL_IDLEN; j++)
		ck_assert(strchr("0123456789ABCDEF", id[j]) != NULL);
	ck_assert_uint_eq(
	    strtoul(id + 13, NULL, 16), (unsigned long)getpid() & 0xFFFFFF);
	t = spool_id_time(id);
	ck_assert(t >= now - 1 && t <= time(NULL) + 1);
	ck_assert_int_eq(spool_id_time("0193A4B5C6D7E00001"), -1);
	ck_assert_int_eq(spool_id_time("0193A4B5C6D7E0000Z1"), -1);
	ck_assert_int_eq(spool_id_time("0193a4b5c6d7e000001"), -1);
	ck_assert_int_eq(spool_id_time(".0193A4B5C6D7E00001"), -1);

	/* Several threads: increasing within each, unique across all. */
	for (i = 0; i < ID_THREADS; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, id_thread,
		                     ids[i * ID_PER_THREAD]),
		    0);
	for (i = 0; i < ID_THREADS; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < ID_THREADS; i++)
		for (j = 1; j < ID_PER_THREAD; j++)
			ck_assert(strcmp(ids[i * ID_PER_THREAD + j - 1],
			              ids[i * ID_PER_THREAD + j]) < 0);
	qsort(ids, ID_THREADS * ID_PER_THREAD, sizeof(ids[0]), cmp_id);
	for (i = 1; i < ID_THREADS * ID_PER_THREAD; i++)
		ck_assert_msg(
		    strcmp(ids[i - 1], ids[i]) != 0, "duplicate %s", ids[i]);
}
END_TEST

/* ------------------------------------------------------- spool files */

START_TEST(test_open_creates_folders)
{
	static const char *const folders[] = {
	    "inbox",
	    "outbox",
	    "sent",
	    "failed",
	    "corrupt",
	    "hold",
	    "control",
	};
	struct spool *spool = spool_open(spooldir, false);
	struct stat st;
	char *p;
	size_t i;

	ck_assert_ptr_nonnull(spool);
	ck_assert_str_eq(spool_path(spool), spooldir);
	p = xasprintf("%s/outbox", spooldir);
	ck_assert_str_eq(spool_outbox_path(spool), p);
	free(p);
	for (i = 0; i < sizeof(folders) / sizeof(folders[0]); i++) {
		p = xasprintf("%s/%s", spooldir, folders[i]);
		ck_assert_int_eq(stat(p, &st), 0);
		ck_assert(S_ISDIR(st.st_mode));
		ck_assert_int_eq(st.st_mode & 0777, 0700);
		free(p);
	}
	spool_close(spool);
	/* Opening again an existing spool works. */
	spool = spool_open(spooldir, true);
	ck_assert_ptr_nonnull(spool);
	spool_close(spool);
	/* A path through a regular file cannot be a spool. */
	p = xasprintf("%s/plainfile", tmpdir);
	ck_assert_int_eq(close(open(p, O_CREAT | O_WRONLY, 0600)), 0);
	free(p);
	p = xasprintf("%s/plainfile/arniefiles", tmpdir);
	errno = 0;
	ck_assert_ptr_null(spool_open(p, false));
	ck_assert_int_eq(errno, ENOTDIR);
	free(p);
}
END_TEST

START_TEST(test_commit_load)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 3), *back = NULL;
	char *path, *file, *msg;
	size_t flen, mlen;
	time_t before = time(NULL);
	struct stat st;

	envelope_set_reply(&env->origin, "client=localhost[127.0.0.1]");
	commit_sample(spool, env);
	ck_assert_uint_eq(strlen(env->id), SPOOL_IDLEN);
	ck_assert(env->created >= before && env->created <= time(NULL));
	ck_assert_int_eq(env->next_attempt, env->created);
	ck_assert_uint_eq(
	    env->size, sizeof(msg_head) - 1 + sizeof(msg_body) - 1);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert(exists("outbox", env->id));

	path = sub("outbox", env->id);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* The file is header + the message byte for byte. */
	file = slurp(path, &flen);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	env->body_offset = back->body_offset;
	assert_env_eq(env, back);
	ck_assert_uint_eq(flen - (size_t)back->body_offset, env->size);
	ck_assert(memcmp(file + back->body_offset, msg_head,
	              sizeof(msg_head) - 1) == 0);
	msg = read_message(spool, back, &mlen);
	ck_assert_uint_eq(mlen, env->size);
	ck_assert(memcmp(msg, msg_head, sizeof(msg_head) - 1) == 0);
	ck_assert(memcmp(msg + sizeof(msg_head) - 1, msg_body,
	              sizeof(msg_body) - 1) == 0);

	envelope_free(back);
	errno = 0;
	ck_assert_int_eq(spool_load(spool, "0193A4B5C6D7E000020", &back), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(msg);
	free(file);
	free(path);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* Identity and content of a file, to show it was not rewritten. */
struct file_id {
	ino_t ino;
	struct timespec mtime;
	off_t size;
};

static struct file_id
file_id(const char *folder, const char *name)
{
	char *p = sub(folder, name);
	struct stat st;
	struct file_id f;

	ck_assert_int_eq(stat(p, &st), 0);
	f.ino = st.st_ino;
	f.mtime = st.st_mtim;
	f.size = st.st_size;
	free(p);
	return f;
}

static void
assert_same_file(struct file_id a, struct file_id b)
{
	ck_assert_uint_eq(a.ino, b.ino);
	ck_assert_int_eq(a.mtime.tv_sec, b.mtime.tv_sec);
	ck_assert_int_eq(a.mtime.tv_nsec, b.mtime.tv_nsec);
	ck_assert_int_eq(a.size, b.size);
}

static char *
state_of(const char *id)
{
	return xasprintf("%s.state", id);
}

START_TEST(test_update)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 2), *back = NULL;
	struct envelope *again = NULL;
	struct file_id before;
	char *msg, *long_reply, *state;
	size_t mlen;
	int round;

	commit_sample(spool, env);
	before = file_id("outbox", env->id);
	state = state_of(env->id);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	/* Twice, with a state that grows: the message file is never
	 * touched, the state file beside it holds the envelope. */
	for (round = 1; round <= 2; round++) {
		back->attempts = (unsigned)round;
		back->next_attempt += 60 * round;
		back->rcpts[0].state = RCPT_SENT;
		envelope_set_reply(&back->rcpts[0].reply, "250 2.0.0 Ok");
		long_reply = xasprintf("451-4.7.1 try later (round %d)\r\n"
		                       "451 4.7.1 %0*d",
		    round, 200 * round, 0);
		envelope_set_reply(&back->rcpts[1].reply, long_reply);
		envelope_set_reply(&back->last_reply, long_reply);
		free(long_reply);
		ck_assert_int_eq(spool_update(spool, back), 0);
		ck_assert_int_eq(count("inbox"), 0);
		assert_same_file(before, file_id("outbox", env->id));
		ck_assert(exists("outbox", state));
		ck_assert_int_eq(spool_load(spool, env->id, &again), 0);
		ck_assert_int_eq(again->body_offset, back->body_offset);
		assert_env_eq(back, again);
		ck_assert_uint_eq(envelope_pending(again), 1);
		envelope_free(again);
		again = NULL;
		msg = read_message(spool, env, &mlen);
		ck_assert_uint_eq(mlen, env->size);
		ck_assert(memcmp(msg + sizeof(msg_head) - 1, msg_body,
		              sizeof(msg_body) - 1) == 0);
		free(msg);
	}
	ck_assert_int_eq(count("outbox"), 2);
	free(state);
	envelope_free(back);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* spool_load_open(): the envelope spool_load() gives (its state file's
 * once it has one) and the message from the same open, at its body. */
START_TEST(test_load_open)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 2), *back = NULL;
	struct envelope *loaded = NULL;
	char *via_open, *via_load;
	size_t olen, llen;
	FILE *body = (FILE *)1;
	enum spool_folder where;
	int round;

	commit_sample(spool, env);
	for (round = 0; round < 2; round++) {
		ck_assert_int_eq(spool_load_open(spool, env->id, 0, &back,
		                     &body), 0);
		ck_assert_int_eq(spool_load(spool, env->id, &loaded), 0);
		assert_env_eq(loaded, back);
		ck_assert_int_eq(loaded->body_offset, back->body_offset);
		via_open = read_rest(body, &olen);
		via_load = read_message(spool, loaded, &llen);
		ck_assert_uint_eq(olen, env->size);
		ck_assert_uint_eq(olen, llen);
		ck_assert(memcmp(via_open, via_load, olen) == 0);
		free(via_open);
		free(via_load);
		envelope_free(loaded);
		/* The second round reads a state file beside the message. */
		back->attempts = 3;
		back->rcpts[0].state = RCPT_SENT;
		ck_assert_int_eq(spool_update(spool, back), 0);
		envelope_free(back);
		back = NULL;
	}
	ck_assert_int_eq(spool_load_open(spool, env->id, 0, &back, &body), 0);
	ck_assert_uint_eq(back->attempts, 3);
	ck_assert_uint_eq(envelope_pending(back), 1);
	fclose(body);
	envelope_free(back);
	back = NULL;
	/* Gone: ENOENT, and nothing is left open. */
	ck_assert_int_eq(spool_delete(spool, env->id, &where), 0);
	ck_assert_int_eq(spool_load_open(spool, env->id, 0, &back, &body), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_ptr_null(back);
	ck_assert_ptr_null(body);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* Loads leave the files' atime alone (O_NOATIME): with relatime, reading a
 * file whose atime is older than its mtime would set it and dirty its
 * inode. */
START_TEST(test_load_leaves_atime)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	struct timespec times[2];
	struct stat before, after;
	FILE *body = NULL;
	size_t len;
	int dirfd, fd;
	char c;

	commit_sample(spool, env);
	dirfd = spool_dir_fd(spool, SPOOL_IN_OUTBOX);
	ck_assert_int_eq(fstatat(dirfd, env->id, &before, 0), 0);
	times[0].tv_sec = before.st_mtime - 3600; /* a relatime update due */
	times[0].tv_nsec = 0;
	times[1].tv_sec = 0;
	times[1].tv_nsec = UTIME_OMIT;
	/* A plain read sets it here, or the test cannot tell anything. */
	ck_assert_int_eq(utimensat(dirfd, env->id, times, 0), 0);
	ck_assert_int_gt(fd = openat(dirfd, env->id, O_RDONLY), -1);
	ck_assert_int_eq(read(fd, &c, 1), 1);
	close(fd);
	ck_assert_int_eq(fstatat(dirfd, env->id, &after, 0), 0);
	if (after.st_atime == times[0].tv_sec) {
		fprintf(stderr, "test_load_leaves_atime: this file "
		                "system does not update atimes (noatime): "
		                "not checked\n");
		goto out;
	}
	ck_assert_int_eq(utimensat(dirfd, env->id, times, 0), 0);
	ck_assert_int_eq(spool_load_open(spool, env->id, 0, &back, &body), 0);
	free(read_rest(body, &len));
	envelope_free(back);
	back = NULL;
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	ck_assert_int_eq(fstatat(dirfd, env->id, &after, 0), 0);
	ck_assert_int_eq(after.st_atime, times[0].tv_sec);
out:
	envelope_free(back);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A deferral of a big message writes its envelope, not its message. */
START_TEST(test_update_big_message_writes_little)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	size_t big = 10 * 1024 * 1024;
	char *body = xmalloc(big), *p = NULL, *state = NULL;
	struct iovec iov = {body, big};
	struct file_id before;
	struct stat st;

	memset(body, 'x', big);
	ck_assert_int_eq(spool_commit(spool, env, &iov, 1), 0);
	before = file_id("outbox", env->id);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	back->attempts = 1;
	envelope_set_reply(&back->last_reply, "451 4.3.0 later");
	ck_assert_int_eq(spool_update(spool, back), 0);
	assert_same_file(before, file_id("outbox", env->id));
	state = state_of(env->id);
	p = sub("outbox", state);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_lt(st.st_size, 4096);
	free(p);
	free(state);
	free(body);
	envelope_free(back);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A file written by Arnie 0.1.0 is read, and updated by a state file. */
START_TEST(test_version_1_file)
{
	static const char v1[] =
	    "arnie-spool 1\nid: 0193A4B5C6D7E000020\ncreated: 1\n"
	    "from: <a@b>\nrcpt: pending <c@d>\nrcpt: pending <e@f>\n"
	    "attempts: 2\nnext-attempt: 5\nsize: 5\n\nhello";
	const char *id = "0193A4B5C6D7E000020";
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = NULL;
	struct file_id before;
	char *msg;
	size_t mlen;

	put_file("outbox", id, v1, sizeof(v1) - 1);
	before = file_id("outbox", id);
	ck_assert_int_eq(spool_load(spool, id, &env), 0);
	ck_assert_uint_eq(env->attempts, 2);
	env->rcpts[0].state = RCPT_SENT;
	env->attempts = 3;
	ck_assert_int_eq(spool_update(spool, env), 0);
	assert_same_file(before, file_id("outbox", id));
	envelope_free(env);
	ck_assert_int_eq(spool_load(spool, id, &env), 0);
	ck_assert_uint_eq(env->attempts, 3);
	ck_assert_int_eq(env->rcpts[0].state, RCPT_SENT);
	ck_assert_uint_eq(envelope_pending(env), 1);
	msg = read_message(spool, env, &mlen);
	ck_assert_uint_eq(mlen, 5);
	ck_assert(memcmp(msg, "hello", 5) == 0);
	free(msg);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A state file that does not fit its message is corrupt: set aside with
 * the message, both kept for a human. */
START_TEST(test_bad_state_file)
{
	static const char *const states[] = {
	    "arnie-spool 2\nthis is not\n\n",
	    /* another size than the message's */
	    NULL,
	    /* something after the blank line */
	    NULL,
	};
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env, *back = NULL;
	char *state, *hdr, *text;
	size_t hlen;
	int i;

	for (i = 0; i < 3; i++) {
		env = sample_env("a@example.org", 1);
		commit_sample(spool, env);
		state = state_of(env->id);
		env->size += i == 1 ? 1 : 0;
		hdr = envelope_format(env, &hlen);
		text = states[i] != NULL ? xstrdup(states[i])
		       : i == 1          ? xstrdup(hdr)
		                         : xasprintf("%sextra", hdr);
		put_file("outbox", state, text, strlen(text));
		errno = 0;
		ck_assert_int_eq(spool_load(spool, env->id, &back), -1);
		ck_assert_int_eq(errno, EBADMSG);
		ck_assert_int_eq(spool_quarantine(spool, env->id), 0);
		ck_assert(exists("corrupt", env->id));
		ck_assert(exists("corrupt", state));
		ck_assert(!exists("outbox", env->id));
		ck_assert(!exists("outbox", state));
		free(text);
		free(hdr);
		free(state);
		envelope_free(env);
	}
	spool_close(spool);
}
END_TEST

static const struct {
	bool save_sent;
	enum spool_fate fate;
	const char *folder; /* where it ends, NULL: nowhere */
} finish_cases[] = {
    {true, SPOOL_SENT, "sent"},
    {false, SPOOL_SENT, NULL},
    {false, SPOOL_FAILED, "failed"},
    {true, SPOOL_FAILED, "failed"},
};

START_TEST(test_finish)
{
	struct spool *spool = spool_open(spooldir, finish_cases[_i].save_sent);
	struct envelope *env = sample_env("a@example.org", 1), *fin = NULL;
	const char *folder = finish_cases[_i].folder;
	char *path, *file, *state;
	size_t flen;

	commit_sample(spool, env);
	/* With a state file in outbox/ too, as after a deferral. */
	env->attempts = 1;
	ck_assert_int_eq(spool_update(spool, env), 0);
	env->rcpts[0].state =
	    finish_cases[_i].fate == SPOOL_SENT ? RCPT_SENT : RCPT_FAILED;
	envelope_set_reply(&env->rcpts[0].reply,
	    finish_cases[_i].fate == SPOOL_SENT
	        ? "250 ok"
	        : "550 5.1.1 <rcpt0@example.net>: no such user");
	envelope_set_reply(&env->last_reply, env->rcpts[0].reply);
	env->attempts = 1;
	ck_assert_int_eq(spool_finish(spool, env, finish_cases[_i].fate), 0);
	ck_assert_int_eq(count("outbox"), 0);
	ck_assert_int_eq(count("inbox"), 0);
	/* The message as it was accepted, and its final state beside it. */
	ck_assert_int_eq(count("sent") + count("failed"), folder ? 2 : 0);
	if (folder != NULL) {
		path = sub(folder, env->id);
		file = slurp(path, &flen);
		ck_assert_int_eq(envelope_parse(file, flen, &fin), 0);
		ck_assert_uint_eq(envelope_pending(fin), 1);
		ck_assert(memcmp(file + fin->body_offset, msg_head,
		              sizeof(msg_head) - 1) == 0);
		envelope_free(fin);
		free(file);
		free(path);
		state = state_of(env->id);
		path = sub(folder, state);
		file = slurp(path, &flen);
		ck_assert_int_eq(envelope_parse_state(file, flen, &fin), 0);
		assert_env_eq(env, fin);
		envelope_free(fin);
		free(file);
		free(path);
		free(state);
	}
	/* Finishing what is gone is an error, not a crash. */
	errno = 0;
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_FAILED), -1);
	ck_assert_int_eq(errno, ENOENT);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A crash between the final copy and the unlink of outbox/ID. */
START_TEST(test_finish_leftover)
{
	struct spool *spool = spool_open(spooldir, true);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	struct timespec old[2] = {{1000000, 0}, {1000000, 0}};
	char *path, *file;
	size_t flen;

	commit_sample(spool, env);
	path = sub("outbox", env->id);
	file = slurp(path, &flen);
	/* An older copy in failed/ (an operator's retry by cp): kept. */
	put_file("failed", env->id, file, flen);
	free(path);
	path = sub("failed", env->id);
	ck_assert_int_eq(utimensat(AT_FDCWD, path, old, 0), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	envelope_free(back);
	back = NULL;
	/* A copy in sent/ at least as new: the move was interrupted. */
	put_file("sent", env->id, file, flen);
	errno = 0;
	ck_assert_int_eq(spool_load(spool, env->id, &back), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert(!exists("outbox", env->id));
	ck_assert(exists("sent", env->id));
	free(path);
	free(file);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A crash after the final state reached failed/ and before the message
 * followed: loading it completes the move. */
START_TEST(test_finish_interrupted)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	char *state = NULL, *hdr;
	size_t hlen;

	commit_sample(spool, env);
	ck_assert_int_eq(spool_update(spool, env), 0);
	env->rcpts[0].state = RCPT_FAILED;
	envelope_set_reply(&env->last_reply, "550 no");
	hdr = envelope_format(env, &hlen);
	state = state_of(env->id);
	put_file("failed", state, hdr, hlen);
	errno = 0;
	ck_assert_int_eq(spool_load(spool, env->id, &back), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(count("outbox"), 0);
	ck_assert(exists("failed", env->id));
	ck_assert(exists("failed", state));
	free(state);
	free(hdr);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A state left without its message (a crash between the two unlinks of
 * a delivered message) is removed at start-up; others are kept. */
START_TEST(test_orphan_state_removed)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1);
	char orphan[SPOOL_IDLEN + 1], *name, *kept;

	commit_sample(spool, env);
	ck_assert_int_eq(spool_update(spool, env), 0);
	spool_new_id(spool, orphan);
	name = state_of(orphan);
	put_file("outbox", name, "x", 1);
	ck_assert_int_eq(spool_cleanup_inbox(spool), 1);
	ck_assert(!exists("outbox", name));
	kept = state_of(env->id);
	ck_assert(exists("outbox", kept));
	ck_assert(exists("outbox", env->id));
	free(kept);
	free(name);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* outbox/ID as a copy of failed/ID, made by hand. */
static void
commit_copy(struct spool *spool, const char *id)
{
	char *path = sub("failed", id), *file;
	size_t len;

	(void)spool;
	file = slurp(path, &len);
	put_file("outbox", id, file, len);
	free(file);
	free(path);
}

/* Hold and release keep the message and its state as they were. */
START_TEST(test_hold_release)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 2), *back = NULL;
	char *state = NULL;

	commit_sample(spool, env);
	env->attempts = 3;
	env->rcpts[0].state = RCPT_SENT;
	ck_assert_int_eq(spool_update(spool, env), 0);
	state = state_of(env->id);
	ck_assert_int_eq(spool_hold(spool, env->id), 0);
	ck_assert_int_eq(count("outbox"), 0);
	ck_assert(exists("hold", env->id));
	ck_assert(exists("hold", state));
	ck_assert_int_eq(
	    spool_load_from(spool, SPOOL_IN_HOLD, env->id, &back), 0);
	assert_env_eq(env, back);
	envelope_free(back);
	/* Not there: ENOENT, nothing moved. */
	errno = 0;
	ck_assert_int_eq(spool_hold(spool, env->id), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(spool_release(spool, env->id), 0);
	ck_assert_int_eq(count("hold"), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	assert_env_eq(env, back);
	envelope_free(back);
	errno = 0;
	ck_assert_int_eq(spool_release(spool, env->id), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(state);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A hold or release cut short between its two renames: the state is put
 * back beside the message at start-up, not removed as an orphan. */
START_TEST(test_hold_interrupted)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	char *from, *to, *state;

	commit_sample(spool, env);
	env->attempts = 2;
	ck_assert_int_eq(spool_update(spool, env), 0);
	state = state_of(env->id);
	from = sub("outbox", state);
	to = sub("hold", state);
	ck_assert_int_eq(rename(from, to), 0);
	ck_assert_int_eq(spool_cleanup_inbox(spool), 0);
	ck_assert(exists("outbox", state));
	ck_assert_int_eq(count("hold"), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	ck_assert_uint_eq(back->attempts, 2);
	envelope_free(back);
	/* A stale copy in hold/ never replaces the state in outbox/, and a
	 * state in hold/ with no message anywhere goes. */
	put_file("hold", state, "stale", 5);
	ck_assert_int_eq(spool_cleanup_inbox(spool), 0);
	ck_assert_int_eq(count("hold"), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	ck_assert_uint_eq(back->attempts, 2);
	envelope_free(back);
	free(state);
	state = xasprintf("%s.state", "0193A4B5C6D7E000099");
	put_file("hold", state, "orphan", 6);
	ck_assert_int_eq(spool_cleanup_inbox(spool), 0);
	ck_assert_int_eq(count("hold"), 0);
	free(from);
	free(to);
	free(state);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

START_TEST(test_delete)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *a = sample_env("a@example.org", 1);
	struct envelope *b = sample_env("b@example.org", 1);
	struct envelope *c = sample_env("c@example.org", 1);
	enum spool_folder where;

	commit_sample(spool, a);
	commit_sample(spool, b);
	commit_sample(spool, c);
	ck_assert_int_eq(spool_update(spool, a), 0);
	ck_assert_int_eq(spool_hold(spool, b->id), 0);
	c->rcpts[0].state = RCPT_FAILED;
	ck_assert_int_eq(spool_finish(spool, c, SPOOL_FAILED), 0);
	ck_assert_int_eq(spool_delete(spool, a->id, &where), 0);
	ck_assert_int_eq(where, SPOOL_IN_OUTBOX);
	ck_assert_int_eq(spool_delete(spool, b->id, &where), 0);
	ck_assert_int_eq(where, SPOOL_IN_HOLD);
	ck_assert_int_eq(spool_delete(spool, c->id, &where), 0);
	ck_assert_int_eq(where, SPOOL_IN_FAILED);
	ck_assert_int_eq(count("outbox") + count("hold") + count("failed"), 0);
	errno = 0;
	ck_assert_int_eq(spool_delete(spool, a->id, &where), -1);
	ck_assert_int_eq(errno, ENOENT);
	envelope_free(a);
	envelope_free(b);
	envelope_free(c);
	spool_close(spool);
}
END_TEST

/* failed/ -> outbox/: failed recipients pending again, the sent one
 * not; attempts and replies cleared. */
START_TEST(test_requeue)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 2), *back = NULL;
	char *state, *from, *to;

	commit_sample(spool, env);
	env->rcpts[0].state = RCPT_SENT;
	envelope_set_reply(&env->rcpts[0].reply, "250 ok");
	env->rcpts[1].state = RCPT_FAILED;
	envelope_set_reply(&env->rcpts[1].reply, "550 no");
	envelope_set_reply(&env->last_reply, "550 no");
	env->attempts = 4;
	env->expires = 1000;
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_FAILED), 0);
	ck_assert_int_eq(spool_requeue(spool, env->id, 12345), 0);
	ck_assert_int_eq(count("failed"), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	ck_assert_int_eq(back->rcpts[0].state, RCPT_SENT);
	ck_assert_int_eq(back->rcpts[1].state, RCPT_PENDING);
	ck_assert_ptr_null(back->rcpts[1].reply);
	ck_assert_ptr_null(back->last_reply);
	ck_assert_uint_eq(back->attempts, 0);
	ck_assert_int_eq(back->next_attempt, 12345);
	/* A new lifetime. */
	ck_assert_int_eq(back->created, 12345);
	ck_assert_int_eq(back->expires, 0);
	envelope_free(back);
	errno = 0;
	ck_assert_int_eq(spool_requeue(spool, env->id, 12345), -1);
	ck_assert_int_eq(errno, ENOENT);
	/* Cut short after the message moved: it goes back to failed/. */
	env->rcpts[1].state = RCPT_FAILED;
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_FAILED), 0);
	state = state_of(env->id);
	from = sub("failed", env->id);
	to = sub("outbox", env->id);
	ck_assert_int_eq(rename(from, to), 0);
	free(from);
	free(to);
	errno = 0;
	ck_assert_int_eq(spool_load(spool, env->id, &back), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert(exists("failed", env->id));
	ck_assert(exists("failed", state));
	/* A copy queued by hand: refused, failed/ untouched. */
	commit_copy(spool, env->id);
	errno = 0;
	ck_assert_int_eq(spool_requeue(spool, env->id, 12345), -1);
	ck_assert_int_eq(errno, EEXIST);
	ck_assert(exists("failed", env->id) && exists("failed", state));
	free(state);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A message written in pieces: its size is filled in at the commit. */
START_TEST(test_draft)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *back = NULL;
	struct spool_draft *d;
	struct iovec head = {(void *)msg_head, sizeof(msg_head) - 1};
	struct iovec body = {(void *)msg_body, sizeof(msg_body) - 1};
	char *msg;
	size_t mlen;

	ck_assert_ptr_nonnull(d = spool_draft_new(spool, env));
	ck_assert(exists("inbox", env->id));
	ck_assert_int_eq(spool_draft_write(d, &head, 1), 0);
	ck_assert_int_eq(spool_draft_write(d, &body, 1), 0);
	ck_assert_int_eq(spool_draft_commit(spool, d), 0);
	ck_assert_int_eq(spool_sync(spool), 0);
	ck_assert_uint_eq(env->size, head.iov_len + body.iov_len);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	assert_env_eq(env, back);
	msg = read_message(spool, back, &mlen);
	ck_assert_uint_eq(mlen, env->size);
	ck_assert(memcmp(msg + head.iov_len, msg_body, body.iov_len) == 0);
	free(msg);
	envelope_free(back);
	envelope_free(env);
	/* Abandoned: nothing is left anywhere. */
	env = sample_env("a@example.org", 1);
	ck_assert_ptr_nonnull(d = spool_draft_new(spool, env));
	ck_assert_int_eq(spool_draft_write(d, &body, 1), 0);
	spool_draft_abort(spool, d);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(count("outbox"), 1);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

static struct stat
stat_of(const char *folder, const char *name)
{
	char *p = sub(folder, name);
	struct stat st;

	ck_assert_int_eq(stat(p, &st), 0);
	free(p);
	return st;
}

static ino_t
inode_of(const char *folder, const char *name)
{
	return stat_of(folder, name).st_ino;
}

/* The name of the one file in folder. */
static char *
only_file(const char *folder)
{
	char *p = xasprintf("%s/%s", spooldir, folder), *name = NULL;
	struct dirent *de;
	DIR *d = opendir(p);

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.') {
			ck_assert_ptr_null(name);
			name = xstrdup(de->d_name);
		}
	closedir(d);
	free(p);
	ck_assert_ptr_nonnull(name);
	return name;
}

/* A delivered message's file is emptied and kept; once its removal from
 * outbox/ is durable (spool_sync()), a new message takes it instead of
 * allocating an inode; before, it must not (a power loss could bring the
 * old name back on the new content). */
START_TEST(test_spare_reused)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *early, *next;
	struct stat st;
	char *spare, *p;
	ino_t ino;

	commit_sample(spool, env);
	ino = inode_of("outbox", env->id);
	env->rcpts[0].state = RCPT_SENT;
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_SENT), 0);
	ck_assert_int_eq(count("outbox"), 0);
	spare = only_file("spare");
	ck_assert_uint_eq(inode_of("spare", spare), ino);
	p = sub("spare", spare);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_size, 0); /* no message left in it */
	free(p);
	/* Not before the sync.  (commit_sample syncs outbox/ itself, after
	 * taking its file.) */
	early = sample_env("b@example.org", 1);
	commit_sample(spool, early);
	ck_assert_uint_ne(inode_of("outbox", early->id), ino);
	ck_assert_int_eq(count("spare"), 1);
	next = sample_env("c@example.org", 1);
	commit_sample(spool, next);
	ck_assert_int_eq(count("spare"), 0);
	ck_assert_uint_eq(inode_of("outbox", next->id), ino);
	free(spare);
	envelope_free(early);
	envelope_free(next);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A spare someone else took (another process sharing the spool, or an
 * operator emptying spare/) is skipped: a file is made instead. */
START_TEST(test_spare_gone)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1), *next;
	char *spare, *p;

	commit_sample(spool, env);
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_SENT), 0);
	spare = only_file("spare");
	p = sub("spare", spare);
	ck_assert_int_eq(unlink(p), 0);
	next = sample_env("b@example.org", 1);
	commit_sample(spool, next);
	ck_assert(exists("outbox", next->id));
	free(p);
	free(spare);
	envelope_free(next);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* A recycled file not emptied yet when the daemon stopped (ID.dirty, a
 * name no pool takes) is emptied and becomes a spare at the next open. */
START_TEST(test_dirty_spare_emptied_at_open)
{
	struct spool *spool = spool_open(spooldir, false);
	char id[SPOOL_IDLEN + 1], *dirty, *clean;
	struct stat st;
	FILE *f;

	spool_close(spool);
	spool_new_id(NULL, id);
	dirty = xasprintf("%s/spare/%s.dirty", spooldir, id);
	clean = xasprintf("%s/spare/%s", spooldir, id);
	ck_assert_ptr_nonnull(f = fopen(dirty, "w"));
	fputs("Subject: delivered yesterday\r\n\r\nsecret\r\n", f);
	ck_assert_int_eq(fclose(f), 0);
	spool = spool_open(spooldir, false);
	ck_assert_int_eq(stat(dirty, &st), -1);
	ck_assert_int_eq(stat(clean, &st), 0);
	ck_assert_int_eq(st.st_size, 0);
	spool_close(spool);
	free(dirty);
	free(clean);
}
END_TEST

/* A daemon keeps spares ready; a spool opened later finds them. */
START_TEST(test_spares_kept)
{
	struct spool *spool = spool_open(spooldir, false);
	int waited;

	ck_assert_int_eq(count("spare"), 0);
	ck_assert_int_eq(spool_keep_spares(spool), 0);
	for (waited = 0; count("spare") < SPARES_HIGH && waited < 60000;
	     waited += 10)
		usleep(10000);
	ck_assert_int_eq(count("spare"), SPARES_HIGH);
	spool_close(spool);
	spool = spool_open(spooldir, false);
	ck_assert_int_eq(count("spare"), SPARES_HIGH);
	spool_close(spool);
}
END_TEST

/* Descriptors of this process open on path. */
static int
fds_open_on(const char *path)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	char link[300], target[512];
	ssize_t n;
	int count = 0;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)) != NULL) {
		snprintf(link, sizeof(link), "/proc/self/fd/%s", de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, path) == 0)
			count++;
	}
	closedir(d);
	return count;
}

/* spool_close_message(): closed at once without the spare thread, by it
 * when it runs, and by spool_close() whatever it had left. */
START_TEST(test_close_message_later)
{
	struct spool *spool = spool_open(spooldir, false);
	char *path = xasprintf("%s/../closing", spooldir), *real;
	FILE *fp;
	int i, waited;

	ck_assert_ptr_nonnull(fp = fopen(path, "w"));
	fclose(fp);
	ck_assert_ptr_nonnull(real = realpath(path, NULL));
	ck_assert_ptr_nonnull(fp = fopen(real, "r"));
	spool_close_message(spool, fp);
	ck_assert_int_eq(fds_open_on(real), 0);

	ck_assert_int_eq(spool_keep_spares(spool), 0);
	for (i = 0; i < 5; i++) {
		ck_assert_ptr_nonnull(fp = fopen(real, "r"));
		spool_close_message(spool, fp);
	}
	for (waited = 0; fds_open_on(real) > 0 && waited < 10000;
	     waited += 10)
		usleep(10000);
	ck_assert_int_eq(fds_open_on(real), 0);

	for (i = 0; i < 5; i++) {
		ck_assert_ptr_nonnull(fp = fopen(real, "r"));
		spool_close_message(spool, fp);
	}
	spool_close(spool);
	ck_assert_int_eq(fds_open_on(real), 0);
	free(real);
	free(path);
}
END_TEST

/* With the refill thread running, a delivered message's file leaves
 * outbox/ at once and the thread empties it: made spares are plain empty
 * files of mode 0600, linked in whole (O_TMPFILE), and the recycled one
 * joins them empty. */
START_TEST(test_recycled_emptied_in_background)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1);
	char *p;
	struct stat st;
	ino_t ino;
	int waited;

	commit_sample(spool, env);
	ino = inode_of("outbox", env->id);
	ck_assert_int_eq(spool_keep_spares(spool), 0);
	for (waited = 0; count("spare") < SPARES_HIGH && waited < 60000;
	     waited += 10)
		usleep(10000);
	ck_assert_int_eq(count("spare"), SPARES_HIGH);
	ck_assert_int_eq(spool_finish(spool, env, SPOOL_SENT), 0);
	ck_assert(!exists("outbox", env->id));
	/* Every spare, the recycled one included, ends empty and named as a
	 * spare.  (Counted once the thread is done: a listing made while it
	 * renames ID.dirty to ID may see the file twice.) */
	for (waited = 0; waited < 10000; waited += 10) {
		DIR *d;
		struct dirent *de;
		int full = 0;

		p = xasprintf("%s/spare", spooldir);
		ck_assert_ptr_nonnull(d = opendir(p));
		free(p);
		while ((de = readdir(d)) != NULL) {
			if (de->d_name[0] == '.')
				continue;
			p = sub("spare", de->d_name);
			if (lstat(p, &st) == -1) { /* renamed meanwhile */
				ck_assert_int_eq(errno, ENOENT);
				full++;
				free(p);
				continue;
			}
			ck_assert(S_ISREG(st.st_mode));
			ck_assert_int_eq(st.st_mode & 07777, 0600);
			ck_assert_int_eq(st.st_nlink, 1);
			if (st.st_ino == ino &&
			    (st.st_size != 0 || strchr(de->d_name, '.')))
				full++;
			free(p);
		}
		closedir(d);
		if (full == 0)
			break;
		usleep(10000);
	}
	ck_assert_int_lt(waited, 10000);
	ck_assert_int_eq(count("spare"), SPARES_HIGH + 1);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

static void
count_fn(const char *id, unsigned known, void *arg)
{
	(void)id;
	(void)known;
	(*(int *)arg)++;
}

/* What spool_scan() said of each of up to 3 IDs. */
struct known_of {
	const char *ids[3];
	unsigned known[3];
	time_t not_before[3];
	int seen[3];
};

static void
known_at_fn(const char *id, unsigned known, time_t not_before, void *arg)
{
	struct known_of *k = arg;
	int i;

	for (i = 0; i < 3; i++)
		if (strcmp(id, k->ids[i]) == 0) {
			k->known[i] = known;
			k->not_before[i] = not_before;
			k->seen[i]++;
		}
}

/* Three messages committed, their IDs in k. */
static void
queue_three(struct spool *spool, struct envelope *env[3], struct known_of *k)
{
	int i;

	memset(k, 0, sizeof(*k));
	for (i = 0; i < 3; i++) {
		env[i] = sample_env("a@example.org", 1);
		commit_sample(spool, env[i]);
		k->ids[i] = env[i]->id;
	}
}

static void
known_fn(const char *id, unsigned known, void *arg)
{
	known_at_fn(id, known, 0, arg);
}

/* A queued message's state is dated when the message is next worth a
 * look, and the start-up scan gives the dates still to come without
 * reading the files; a final state keeps the time it was written. */
START_TEST(test_a_deferral_dates_its_state)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env[3];
	struct known_of k;
	char name[SPOOL_IDLEN + 16], *path;
	time_t now = time(NULL);
	int i;

	queue_three(spool, env, &k);
	/* 0: deferred for an hour; 1: the same, but its deadline comes
	 * first; 2: due again already (a partial success): dated in the
	 * past, never later than its envelope says. */
	env[0]->next_attempt = now + 3600;
	env[1]->next_attempt = now + 3600;
	env[1]->expires = now + 600;
	env[2]->next_attempt = now - 10;
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(spool_update(spool, env[i]), 0);
	snprintf(name, sizeof(name), "%s.state", env[0]->id);
	ck_assert_int_eq(stat_of("outbox", name).st_mtime, now + 3600);
	snprintf(name, sizeof(name), "%s.state", env[2]->id);
	ck_assert_int_eq(stat_of("outbox", name).st_mtime, now - 10);
	ck_assert_int_eq(spool_scan_known(spool, known_at_fn, &k), 0);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(k.seen[i], 1);
		ck_assert_uint_eq(k.known[i], SPOOL_KNOWN_UNFINISHED);
	}
	ck_assert_int_eq(k.not_before[0], now + 3600);
	ck_assert_int_eq(k.not_before[1], now + 600);
	ck_assert_int_eq(k.not_before[2], 0);
	/* A move to sent/ cut short by a crash: loaded at once, whatever
	 * the date, which completes the move. */
	snprintf(name, sizeof(name), "%s.state", env[0]->id);
	put_file("sent", name, "x", 1);
	memset(k.seen, 0, sizeof(k.seen));
	ck_assert_int_eq(spool_scan_known(spool, known_at_fn, &k), 0);
	ck_assert_int_eq(k.seen[0], 1);
	ck_assert_int_eq(k.not_before[0], 0);
	ck_assert_int_eq(k.not_before[1], now + 600);
	path = sub("sent", name);
	ck_assert_int_eq(unlink(path), 0);
	free(path);
	/* A final state is not dated: it keeps the time it was written. */
	ck_assert_int_eq(spool_finish(spool, env[0], SPOOL_FAILED), 0);
	snprintf(name, sizeof(name), "%s.state", env[0]->id);
	ck_assert_int_ge(stat_of("failed", name).st_mtime, now);
	ck_assert_int_le(stat_of("failed", name).st_mtime, time(NULL));
	/* Touched by hand (or written before dates): read now. */
	snprintf(name, sizeof(name), "%s.state", env[1]->id);
	path = sub("outbox", name);
	ck_assert_int_eq(utimensat(AT_FDCWD, path, NULL, 0), 0);
	free(path);
	memset(k.seen, 0, sizeof(k.seen));
	ck_assert_int_eq(spool_scan_known(spool, known_at_fn, &k), 0);
	ck_assert_int_eq(k.seen[1], 1);
	ck_assert_int_eq(k.not_before[1], 0);
	for (i = 0; i < 3; i++)
		envelope_free(env[i]);
	spool_close(spool);
}
END_TEST

/* A file of folder/ as if last changed `age` seconds ago. */
static void
put_aged(const char *folder, const char *name, time_t age)
{
	struct timespec ts[2];
	char *p = sub(folder, name);

	put_file(folder, name, "x", 1);
	ts[0].tv_sec = ts[1].tv_sec = time(NULL) - age;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
	free(p);
}

/* sent/ loses what was sent before the limit, by the time of its state
 * (else of its message), and nothing else. */
START_TEST(test_prune_sent)
{
	struct spool *spool = spool_open(spooldir, true);
	static const char *const names[] = {"0193A4B5C6D7E000021",
	    "0193A4B5C6D7E000022", "0193A4B5C6D7E000023", "0193A4B5C6D7E000024",
	    "0193A4B5C6D7E000025", "0193A4B5C6D7E000026"};
	char state[6][SPOOL_IDLEN + 8];
	int i;

	ck_assert_ptr_nonnull(spool);
	for (i = 0; i < 6; i++)
		snprintf(state[i], sizeof(state[i]), "%s.state", names[i]);
	/* 0: sent 3 days ago.  1: a 0.1.0 message without a state, 3 days
	 * old.  2: sent an hour ago, accepted 3 days ago.  3: a state left
	 * alone, old.  4: accepted and sent an hour ago.  5: an old state
	 * whose message is still queued: a move a crash cut short. */
	put_aged("sent", names[0], 3 * 86400);
	put_aged("sent", state[0], 3 * 86400);
	put_aged("sent", names[1], 3 * 86400);
	put_aged("sent", names[2], 3 * 86400);
	put_aged("sent", state[2], 3600);
	put_aged("sent", state[3], 3 * 86400);
	put_aged("sent", names[4], 3600);
	put_aged("sent", state[4], 3600);
	put_aged("sent", state[5], 3 * 86400);
	put_aged("outbox", names[5], 3 * 86400);
	put_aged("sent", "README", 3 * 86400);
	/* At most max at a time. */
	ck_assert_int_eq(spool_prune_sent(spool, time(NULL) - 86400, 1), 1);
	ck_assert_int_eq(spool_prune_sent(spool, time(NULL) - 86400, 10), 2);
	ck_assert(!exists("sent", names[0]) && !exists("sent", state[0]));
	ck_assert(!exists("sent", names[1]));
	ck_assert(exists("sent", names[2]) && exists("sent", state[2]));
	ck_assert(!exists("sent", state[3]));
	ck_assert(exists("sent", names[4]) && exists("sent", state[4]));
	ck_assert(exists("sent", state[5]) && exists("outbox", names[5]));
	ck_assert(exists("sent", "README"));
	ck_assert_int_eq(spool_prune_sent(spool, time(NULL) - 86400, 10), 0);
	spool_close(spool);
}
END_TEST

/* The scan says which lookups a first load may skip, and a load that
 * trusts it finds what a full one would. */
START_TEST(test_scan_knows_states_and_finished_copies)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env[3], *back = NULL;
	struct known_of k;
	char name[SPOOL_IDLEN + 16];
	int i;

	queue_three(spool, env, &k);
	/* 1 was deferred: it has a state.  2's move to sent/ was cut short
	 * by a crash: its final state is there, the message still queued. */
	env[1]->attempts = 3;
	ck_assert_int_eq(spool_update(spool, env[1]), 0);
	snprintf(name, sizeof(name), "%s.state", env[2]->id);
	put_file("sent", name, "x", 1);
	ck_assert_int_eq(spool_scan(spool, known_fn, &k), 0);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(k.seen[i], 1);
		ck_assert_uint_eq(k.known[i], 0);
		k.seen[i] = 0;
	}
	ck_assert_int_eq(spool_scan_known(spool, known_at_fn, &k), 0);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(k.seen[i], 1);
	ck_assert_uint_eq(
	    k.known[0], SPOOL_KNOWN_NO_STATE | SPOOL_KNOWN_UNFINISHED);
	ck_assert_uint_eq(k.known[1], SPOOL_KNOWN_UNFINISHED);
	ck_assert_uint_eq(k.known[2], SPOOL_KNOWN_NO_STATE);

	ck_assert_int_eq(
	    spool_load_known(spool, env[0]->id, k.known[0], &back), 0);
	ck_assert_str_eq(back->id, env[0]->id);
	envelope_free(back);
	ck_assert_int_eq(
	    spool_load_known(spool, env[1]->id, k.known[1], &back), 0);
	ck_assert_int_eq(back->attempts, 3);
	envelope_free(back);
	errno = 0;
	ck_assert_int_eq(
	    spool_load_known(spool, env[2]->id, k.known[2], &back), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert(exists("sent", env[2]->id));
	ck_assert(!exists("outbox", env[2]->id));
	for (i = 0; i < 3; i++)
		envelope_free(env[i]);
	spool_close(spool);
}
END_TEST

START_TEST(test_quarantine_and_scan)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env[3], *back = NULL;
	char bad[SPOOL_IDLEN + 1];
	static const char garbage[] = "arnie-spool 1\nthis is not\n\n";
	int i, seen = 0;

	for (i = 0; i < 3; i++) {
		env[i] = sample_env("a@example.org", 1);
		commit_sample(spool, env[i]);
	}
	spool_new_id(spool, bad);
	put_file("outbox", bad, garbage, sizeof(garbage) - 1);
	put_file("outbox", ".hidden", "x", 1);
	put_file("outbox", "README", "x", 1);
	put_file("outbox", "0193A4B5C6D7E000020.tmp", "x", 1);
	ck_assert_int_eq(spool_scan(spool, count_fn, &seen), 0);
	ck_assert_int_eq(seen, 4);

	errno = 0;
	ck_assert_int_eq(spool_load(spool, bad, &back), -1);
	ck_assert_int_eq(errno, EBADMSG);
	ck_assert_int_eq(spool_quarantine(spool, bad), 0);
	ck_assert(!exists("outbox", bad));
	ck_assert(exists("corrupt", bad));
	seen = 0;
	ck_assert_int_eq(spool_scan(spool, count_fn, &seen), 0);
	ck_assert_int_eq(seen, 3);
	/* A file whose name differs from its id line is not trusted. */
	{
		char *p = sub("outbox", env[0]->id), *data;
		size_t len;

		data = slurp(p, &len);
		spool_new_id(spool, bad);
		put_file("outbox", bad, data, len);
		errno = 0;
		ck_assert_int_eq(spool_load(spool, bad, &back), -1);
		ck_assert_int_eq(errno, EBADMSG);
		free(data);
		free(p);
	}
	for (i = 0; i < 3; i++)
		envelope_free(env[i]);
	spool_close(spool);
}
END_TEST

/* An ID with a given time (seconds ago) and PID. */
static void
make_id(char id[SPOOL_IDLEN + 1], long ago, pid_t pid)
{
	struct timespec ts;
	unsigned long long us;

	clock_gettime(CLOCK_REALTIME, &ts);
	us = ((unsigned long long)ts.tv_sec - (unsigned long long)ago) *
	         1000000ULL +
	     (unsigned long long)ts.tv_nsec / 1000;
	snprintf(
	    id, SPOOL_IDLEN + 1, "%013llX%06X", us, (unsigned)pid & 0xFFFFFFu);
}

START_TEST(test_cleanup_inbox)
{
	struct spool *spool = spool_open(spooldir, false);
	char dead_id[SPOOL_IDLEN + 1], live_id[SPOOL_IDLEN + 1];
	char old_live[SPOOL_IDLEN + 1], own_old[SPOOL_IDLEN + 1];
	char own_new[SPOOL_IDLEN + 1];
	pid_t dead, live;
	int status;

	/* A PID that was alive and is now gone (reaped). */
	if ((dead = fork()) == 0)
		_exit(0);
	ck_assert_int_gt(dead, 0);
	ck_assert_int_eq(waitpid(dead, &status, 0), dead);
	/* A live foreign writer: a child that sleeps until we kill it. */
	if ((live = fork()) == 0) {
		pause();
		_exit(0);
	}
	ck_assert_int_gt(live, 0);

	make_id(own_old, 3600, getpid()); /* before our first ID: stale */
	spool_new_id(spool, own_new);     /* ours, in progress */
	make_id(dead_id, 5, dead);
	make_id(live_id, 5, live);
	make_id(old_live, 3 * 24 * 3600, live); /* PID reused long after */
	put_file("inbox", own_old, "x", 1);
	put_file("inbox", own_new, "x", 1);
	put_file("inbox", dead_id, "x", 1);
	put_file("inbox", live_id, "x", 1);
	put_file("inbox", old_live, "x", 1);
	put_file("inbox", "junk.tmp", "x", 1);
	put_file("inbox", ".dotfile", "x", 1);

	ck_assert_int_eq(spool_cleanup_inbox(spool), 5);
	ck_assert(exists("inbox", own_new));
	ck_assert(exists("inbox", live_id));
	ck_assert_int_eq(count("inbox"), 2);
	/* Once the writer is gone its file is junk too. */
	kill(live, SIGKILL);
	ck_assert_int_eq(waitpid(live, &status, 0), live);
	ck_assert_int_eq(spool_cleanup_inbox(spool), 1);
	ck_assert(exists("inbox", own_new));
	ck_assert_int_eq(count("inbox"), 1);
	spool_close(spool);
}
END_TEST

START_TEST(test_write_fails_no_outbox)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1);
	struct iovec iov = {(void *)msg_body, sizeof(msg_body) - 1};
	char *p = xasprintf("%s/outbox", spooldir);

	/* The open descriptor now names a deleted folder: the rename fails
	 * even for root, which chmod would not stop. */
	ck_assert_int_eq(rmdir(p), 0);
	errno = 0;
	ck_assert_int_eq(spool_commit(spool, env, &iov, 1), -1);
	ck_assert_int_eq(errno, ENOENT);
	ck_assert_int_eq(count("inbox"), 0);
	free(p);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

START_TEST(test_write_fails_file_too_big)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1);
	static char big[64 * 1024];
	struct iovec iov = {big, sizeof(big)};
	struct rlimit old, lim;
	void (*oldsig)(int);
	int rc, err, lifted;

	/* A write that fails half-way, as on a full disk: the file size
	 * limit makes write() fail with EFBIG, root or not. */
	memset(big, 'x', sizeof(big));
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 4096;
	oldsig = signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
	/* No ck_assert until the limit is lifted: Check writes its own
	 * files too. */
	errno = 0;
	rc = spool_commit(spool, env, &iov, 1);
	err = errno;
	lifted = setrlimit(RLIMIT_FSIZE, &old);
	signal(SIGXFSZ, oldsig);
	ck_assert_int_eq(lifted, 0);
	ck_assert_int_eq(rc, -1);
	ck_assert_int_eq(err, EFBIG);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(count("outbox"), 0);
	/* And the same envelope commits once the disk is fine again. */
	ck_assert_int_eq(spool_commit(spool, env, &iov, 1), 0);
	ck_assert_int_eq(count("outbox"), 1);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

/* What a front-end tells the client when a commit fails. */
static const struct {
	int err;
	const char *code, *enhanced;
} commit_replies[] = {
    {ENOSPC, "452", "4.3.1"},
    {EDQUOT, "452", "4.3.1"},
    {EIO, "451", "4.3.0"},
    {ENOENT, "451", "4.3.0"},
    {EACCES, "451", "4.3.0"},
    {EFBIG, "451", "4.3.0"},
};

START_TEST(test_commit_reply)
{
	struct spool_reply r;

	spool_commit_reply(commit_replies[_i].err, &r);
	ck_assert_str_eq(r.code, commit_replies[_i].code);
	ck_assert_str_eq(r.enhanced, commit_replies[_i].enhanced);
	ck_assert_str_eq(r.text, commit_replies[_i].code[2] == '2'
	                             ? "Insufficient system storage"
	                             : "Queue file write error");
}
END_TEST

/* A second message under a queued message's ID must not replace it: the
 * first one was acknowledged. */
START_TEST(test_write_never_replaces)
{
	struct spool *spool = spool_open(spooldir, false);
	struct envelope *env = sample_env("a@example.org", 1);
	struct envelope *dup = sample_env("b@example.org", 1), *back = NULL;
	struct iovec iov = {(void *)msg_body, sizeof(msg_body) - 1};

	commit_sample(spool, env);
	memcpy(dup->id, env->id, sizeof(dup->id));
	errno = 0;
	ck_assert_int_eq(spool_commit(spool, dup, &iov, 1), -1);
	ck_assert_int_eq(errno, EEXIST);
	ck_assert_int_eq(count("inbox"), 0);
	ck_assert_int_eq(count("outbox"), 1);
	ck_assert_int_eq(spool_load(spool, env->id, &back), 0);
	ck_assert_str_eq(back->sender, "a@example.org");
	ck_assert_uint_eq(back->size, env->size);
	envelope_free(back);
	envelope_free(dup);
	envelope_free(env);
	spool_close(spool);
}
END_TEST

START_TEST(test_lock_sender)
{
	struct spool *a = spool_open(spooldir, false);
	struct spool *b = spool_open(spooldir, false);

	ck_assert_int_eq(spool_lock_sender(a), 0);
	ck_assert_int_eq(spool_lock_sender(a), 0); /* already ours */
	errno = 0;
	ck_assert_int_eq(spool_lock_sender(b), -1);
	ck_assert_int_eq(errno, EWOULDBLOCK);
	spool_close(a);
	ck_assert_int_eq(spool_lock_sender(b), 0);
	spool_close(b);
}
END_TEST

/* ------------------------------------------------------------- suite */

static Suite *
spool_suite(void)
{
	Suite *s = suite_create("spool");
	TCase *tc;

	tc = tcase_create("envelope");
	tcase_add_loop_test(tc, test_format_roundtrip, 0,
	    sizeof(roundtrip_cases) / sizeof(roundtrip_cases[0]));
	tcase_add_test(tc, test_format_many_rcpts);
	tcase_add_loop_test(tc, test_parse_table, 0,
	    sizeof(parse_cases) / sizeof(parse_cases[0]));
	tcase_add_test(tc, test_parse_nul_in_header);
	tcase_add_test(tc, test_ids);
	tcase_add_loop_test(tc, test_commit_reply, 0,
	    sizeof(commit_replies) / sizeof(commit_replies[0]));
	suite_add_tcase(s, tc);

	tc = tcase_create("files");
	tcase_add_unchecked_fixture(tc, make_base, remove_base);
	tcase_add_checked_fixture(tc, setup_dir, teardown_dir);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_open_creates_folders);
	tcase_add_test(tc, test_commit_load);
	tcase_add_test(tc, test_update);
	tcase_add_test(tc, test_load_open);
	tcase_add_test(tc, test_load_leaves_atime);
	tcase_add_test(tc, test_update_big_message_writes_little);
	tcase_add_test(tc, test_version_1_file);
	tcase_add_test(tc, test_bad_state_file);
	tcase_add_test(tc, test_finish_interrupted);
	tcase_add_test(tc, test_orphan_state_removed);
	tcase_add_test(tc, test_hold_release);
	tcase_add_test(tc, test_hold_interrupted);
	tcase_add_test(tc, test_delete);
	tcase_add_test(tc, test_requeue);
	tcase_add_test(tc, test_spare_reused);
	tcase_add_test(tc, test_spare_gone);
	tcase_add_test(tc, test_dirty_spare_emptied_at_open);
	tcase_add_test(tc, test_spares_kept);
	tcase_add_test(tc, test_recycled_emptied_in_background);
	tcase_add_test(tc, test_close_message_later);
	tcase_add_test(tc, test_draft);
	tcase_add_loop_test(
	    tc, test_finish, 0, sizeof(finish_cases) / sizeof(finish_cases[0]));
	tcase_add_test(tc, test_finish_leftover);
	tcase_add_test(tc, test_quarantine_and_scan);
	tcase_add_test(tc, test_scan_knows_states_and_finished_copies);
	tcase_add_test(tc, test_a_deferral_dates_its_state);
	tcase_add_test(tc, test_prune_sent);
	tcase_add_test(tc, test_cleanup_inbox);
	tcase_add_test(tc, test_write_fails_no_outbox);
	tcase_add_test(tc, test_write_fails_file_too_big);
	tcase_add_test(tc, test_write_never_replaces);
	tcase_add_test(tc, test_lock_sender);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(spool_suite());
}
