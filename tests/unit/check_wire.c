/*
 * Unit tests for wire: records over a real SOCK_SEQPACKET socket pair,
 * descriptors passed with them, and every way a record can be wrong.
 */
#include "autoconf.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "scratch.h"
#include "wire.h"

static int sv[2];
static struct wire_rec rec;

static void
setup(void)
{
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	memset(&rec, 0, sizeof(rec));
}

static void
teardown(void)
{
	close(sv[0]);
	if (sv[1] != -1)
		close(sv[1]);
}

static int
count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while (readdir(d) != NULL)
		n++;
	closedir(d);
	return n;
}

/* Send raw bytes as one record, bypassing wire_send(). */
static void
send_raw(const void *buf, size_t len)
{
	ck_assert_int_eq(send(sv[0], buf, len, 0), (ssize_t)len);
}

START_TEST(test_text_fields_round_trip)
{
	ck_assert_int_eq(wire_sendv(sv[0], 7, -1, "alpha", "", "a b\r\n",
	                     NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.type, 7);
	ck_assert_uint_eq(rec.n, 3);
	ck_assert_str_eq(wire_text(&rec, 0), "alpha");
	ck_assert_str_eq(wire_text(&rec, 1), "");
	ck_assert_str_eq(wire_text(&rec, 2), "a b\r\n");
	ck_assert_ptr_null(wire_text(&rec, 3));
	ck_assert_int_eq(rec.fd, -1);
}
END_TEST

START_TEST(test_no_fields)
{
	ck_assert_int_eq(wire_sendv(sv[0], 3, -1, NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.type, 3);
	ck_assert_uint_eq(rec.n, 0);
}
END_TEST

/* Records never run together: two sends are two receives. */
START_TEST(test_records_stay_apart)
{
	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, "one", NULL), 0);
	ck_assert_int_eq(wire_sendv(sv[0], 2, -1, "two", "2", NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_str_eq(wire_text(&rec, 0), "one");
	ck_assert_uint_eq(rec.n, 1);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.type, 2);
	ck_assert_str_eq(wire_text(&rec, 1), "2");
}
END_TEST

/* A descriptor arrives as a new descriptor for the same open file. */
START_TEST(test_descriptor_passes)
{
	char dir[64], path[96], buf[8];
	struct stat a, b;
	int fd;

	scratch_make(dir, sizeof(dir), "/tmp/check_wire.XXXXXX");
	snprintf(path, sizeof(path), "%s/f", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "content", 7), 7);
	ck_assert_int_eq(wire_sendv(sv[0], 5, fd, "with fd", NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_int_ge(rec.fd, 0);
	ck_assert_int_ne(rec.fd, fd);
	ck_assert_int_eq(fstat(fd, &a), 0);
	ck_assert_int_eq(fstat(rec.fd, &b), 0);
	ck_assert_uint_eq(a.st_ino, b.st_ino);
	/* Close-on-exec, so that no program the receiver starts gets it. */
	ck_assert_int_eq(fcntl(rec.fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
	ck_assert_int_eq(pread(rec.fd, buf, 7, 0), 7);
	ck_assert_int_eq(memcmp(buf, "content", 7), 0);
	close(rec.fd);
	close(fd);
	scratch_remove(dir);
}
END_TEST

START_TEST(test_closed_peer_is_end)
{
	close(sv[0]);
	sv[0] = socket(AF_UNIX, SOCK_SEQPACKET, 0); /* for teardown */
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 0);
}
END_TEST

START_TEST(test_timeout)
{
	errno = 0;
	ck_assert_int_eq(wire_recv(sv[1], &rec, 20), -1);
	ck_assert_int_eq(errno, ETIMEDOUT);
}
END_TEST

START_TEST(test_send_to_gone_peer_is_epipe)
{
	close(sv[1]);
	sv[1] = -1;
	/* MSG_NOSIGNAL: an error, not a SIGPIPE that ends the test. */
	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, "x", NULL), -1);
	ck_assert_int_eq(errno, EPIPE);
}
END_TEST

START_TEST(test_too_large_is_refused_before_sending)
{
	char *big = malloc(WIRE_MAX + 2);

	memset(big, 'a', WIRE_MAX + 1);
	big[WIRE_MAX + 1] = '\0';
	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, big, NULL), -1);
	ck_assert_int_eq(errno, EMSGSIZE);
	big[WIRE_MAX] = '\0'; /* exactly WIRE_MAX: fits */
	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, big, NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.len[0], WIRE_MAX);
	free(big);
}
END_TEST

START_TEST(test_too_many_fields)
{
	const char *f = "f";

	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, f, f, f, f, f, f, f, f, f,
	                     f, f, f, f, f, f, f, f, NULL),
	    -1);
	ck_assert_int_eq(errno, EMSGSIZE);
}
END_TEST

/* Bad records, each sent raw: never a partial result. */
struct bad {
	const char *what;
	uint32_t words[6];
	size_t nwords;
	const char *tail;
};

static const struct bad bads[] = {
    {"shorter than a header", {WIRE_MAGIC, 1}, 2, ""},
    {"another version", {WIRE_MAGIC + 1, 1, 0}, 3, ""},
    {"another magic", {0x58585858u, 1, 0}, 3, ""},
    {"too many fields", {WIRE_MAGIC, 1, WIRE_FIELDS_MAX + 1}, 3, ""},
    {"lengths cut off", {WIRE_MAGIC, 1, 2, 3}, 4, ""},
    {"field longer than the rest", {WIRE_MAGIC, 1, 1, 10}, 4, "abc"},
    {"bytes after the fields", {WIRE_MAGIC, 1, 1, 1}, 4, "abc"},
    {"huge length", {WIRE_MAGIC, 1, 2, 0xffffffffu, 2}, 5, "ab"},
};

START_TEST(test_bad_record)
{
	const struct bad *b = &bads[_i];
	char buf[256];
	size_t len = b->nwords * sizeof(uint32_t);

	memcpy(buf, b->words, len);
	memcpy(buf + len, b->tail, strlen(b->tail));
	len += strlen(b->tail);
	send_raw(buf, len);
	errno = 0;
	ck_assert_msg(wire_recv(sv[1], &rec, 1000) == -1, "%s", b->what);
	ck_assert_int_eq(errno, EBADMSG);
	ck_assert_uint_eq(rec.n, 0);
	ck_assert_int_eq(rec.fd, -1);
	/* The socket still works: the next good record arrives. */
	ck_assert_int_eq(wire_sendv(sv[0], 9, -1, "ok", NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_str_eq(wire_text(&rec, 0), "ok");
}
END_TEST

/* A bad record that came with a descriptor: the descriptor is closed. */
START_TEST(test_bad_record_closes_its_descriptor)
{
	uint32_t words[3] = {0, 1, 0};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {words, sizeof(words)};
	struct msghdr mh;
	struct cmsghdr *cm;
	int fd = open("/dev/null", O_RDONLY), before;

	memset(&mh, 0, sizeof(mh));
	memset(cbuf, 0, sizeof(cbuf));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cbuf;
	mh.msg_controllen = sizeof(cbuf);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	ck_assert_int_eq(sendmsg(sv[0], &mh, 0), (ssize_t)sizeof(words));
	close(fd);
	before = count_fds();
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), -1);
	ck_assert_int_eq(errno, EBADMSG);
	ck_assert_int_eq(count_fds(), before);
}
END_TEST

START_TEST(test_text_with_nul_is_not_text)
{
	struct iovec f[2] = {{(void *)"a\0b", 3}, {(void *)"12", 2}};

	ck_assert_int_eq(wire_send(sv[0], 1, f, 2, -1), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.len[0], 3);
	ck_assert_ptr_null(wire_text(&rec, 0));
	ck_assert_str_eq(wire_text(&rec, 1), "12");
}
END_TEST

struct number {
	const char *text;
	uint64_t max;
	int rc;
	uint64_t want;
};

static const struct number numbers[] = {
    {"0", 0, 0, 0},
    {"5", 0, -1, 0},
    {"5", 4, -1, 0},
    {"5", 5, 0, 5},
    {"", 10, -1, 0},
    {"-1", 10, -1, 0},
    {"+1", 10, -1, 0},
    {" 1", 10, -1, 0},
    {"1 ", 10, -1, 0},
    {"0x10", 100, -1, 0},
    {"007", 10, 0, 7},
    {"18446744073709551615", UINT64_MAX, 0, UINT64_MAX},
    {"18446744073709551616", UINT64_MAX, -1, 0},
    {"99999999999999999999", UINT64_MAX, -1, 0},
    {"000000000000000000001", UINT64_MAX, -1, 0}, /* 21 digits */
    {"65536", 65535, -1, 0},
};

START_TEST(test_number)
{
	const struct number *t = &numbers[_i];
	uint64_t v = 12345;

	ck_assert_int_eq(wire_sendv(sv[0], 1, -1, t->text, NULL), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_msg(wire_number(&rec, 0, t->max, &v) == t->rc,
	    "\"%s\" max %ju", t->text, (uintmax_t)t->max);
	if (t->rc == 0)
		ck_assert_uint_eq(v, t->want);
	ck_assert_int_eq(wire_number(&rec, 1, UINT64_MAX, &v), -1);
}
END_TEST

/* Held records leave in order, each its own record, one with its
 * descriptor; nothing leaves before the flush. */
START_TEST(test_held_records_leave_together_in_order)
{
	struct wire_held *h = wire_held_new(sv[0]);
	struct stat a, b;
	char name[8];
	int fd = open("/dev/null", O_RDONLY);
	int i;

	ck_assert_ptr_nonnull(h);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(wire_holdv(h, 1, -1, "first", NULL), 0);
	ck_assert_int_eq(wire_holdv(h, 2, fd, "with fd", "2", NULL), 0);
	for (i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "r%d", i);
		ck_assert_int_eq(wire_holdv(h, 3, -1, name, NULL), 0);
	}
	ck_assert_int_eq(wire_recv(sv[1], &rec, 20), -1);
	ck_assert_int_eq(errno, ETIMEDOUT);
	ck_assert_int_eq(wire_flush(h), 0);
	close(fd);

	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.type, 1);
	ck_assert_str_eq(wire_text(&rec, 0), "first");
	ck_assert_int_eq(rec.fd, -1);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
	ck_assert_uint_eq(rec.type, 2);
	ck_assert_uint_eq(rec.n, 2);
	ck_assert_str_eq(wire_text(&rec, 1), "2");
	ck_assert_int_ge(rec.fd, 0);
	ck_assert_int_eq(stat("/dev/null", &a), 0);
	ck_assert_int_eq(fstat(rec.fd, &b), 0);
	ck_assert_uint_eq(a.st_rdev, b.st_rdev);
	close(rec.fd);
	for (i = 0; i < 5; i++) {
		snprintf(name, sizeof(name), "r%d", i);
		ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
		ck_assert_str_eq(wire_text(&rec, 0), name);
		ck_assert_int_eq(rec.fd, -1);
	}
	/* A flush with nothing held sends nothing. */
	ck_assert_int_eq(wire_flush(h), 0);
	ck_assert_int_eq(wire_recv(sv[1], &rec, 20), -1);
	wire_held_free(h);
}
END_TEST

/* More than WIRE_HELD_MAX: the oldest leave when the hold is full. */
START_TEST(test_held_overflow_flushes_first)
{
	struct wire_held *h = wire_held_new(sv[0]);
	char name[16];
	int i;

	for (i = 0; i < WIRE_HELD_MAX + 3; i++) {
		snprintf(name, sizeof(name), "%d", i);
		ck_assert_int_eq(wire_holdv(h, 4, -1, name, NULL), 0);
	}
	for (i = 0; i < WIRE_HELD_MAX; i++) {
		snprintf(name, sizeof(name), "%d", i);
		ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
		ck_assert_str_eq(wire_text(&rec, 0), name);
	}
	ck_assert_int_eq(wire_recv(sv[1], &rec, 20), -1);
	ck_assert_int_eq(wire_flush(h), 0);
	for (; i < WIRE_HELD_MAX + 3; i++) {
		snprintf(name, sizeof(name), "%d", i);
		ck_assert_int_eq(wire_recv(sv[1], &rec, 1000), 1);
		ck_assert_str_eq(wire_text(&rec, 0), name);
	}
	wire_held_free(h);
}
END_TEST

/* A record too large is refused when held; a gone peer fails the flush,
 * and what was held is dropped, not sent later. */
START_TEST(test_held_errors)
{
	struct wire_held *h = wire_held_new(sv[0]);
	static char big[WIRE_MAX + 2];

	memset(big, 'x', sizeof(big) - 1);
	ck_assert_int_eq(wire_holdv(h, 1, -1, big, NULL), -1);
	ck_assert_int_eq(errno, EMSGSIZE);
	ck_assert_int_eq(wire_holdv(h, 1, -1, "kept", NULL), 0);
	close(sv[1]);
	sv[1] = -1;
	ck_assert_int_eq(wire_flush(h), -1);
	ck_assert_int_eq(errno, EPIPE);
	ck_assert_int_eq(wire_flush(h), 0);
	wire_held_free(h);
}
END_TEST

/* Several records already waiting are each received whole and in order,
 * with no time to wait for them. */
START_TEST(test_waiting_records_received_one_by_one)
{
	int i;

	for (i = 0; i < 3; i++)
		ck_assert_int_eq(wire_sendv(sv[0], (uint32_t)(10 + i), -1,
		                     "x", NULL), 0);
	for (i = 0; i < 3; i++) {
		ck_assert_int_eq(wire_recv(sv[1], &rec, 0), 1);
		ck_assert_uint_eq(rec.type, (uint32_t)(10 + i));
	}
	ck_assert_int_eq(wire_recv(sv[1], &rec, 0), -1);
	ck_assert_int_eq(errno, ETIMEDOUT);
}
END_TEST

static Suite *
wire_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("wire");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_text_fields_round_trip);
	tcase_add_test(tc, test_no_fields);
	tcase_add_test(tc, test_records_stay_apart);
	tcase_add_test(tc, test_descriptor_passes);
	tcase_add_test(tc, test_closed_peer_is_end);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_send_to_gone_peer_is_epipe);
	tcase_add_test(tc, test_too_large_is_refused_before_sending);
	tcase_add_test(tc, test_too_many_fields);
	tcase_add_loop_test(tc, test_bad_record, 0, sizeof(bads) / sizeof(bads[0]));
	tcase_add_test(tc, test_bad_record_closes_its_descriptor);
	tcase_add_test(tc, test_text_with_nul_is_not_text);
	tcase_add_loop_test(
	    tc, test_number, 0, sizeof(numbers) / sizeof(numbers[0]));
	tcase_add_test(tc, test_held_records_leave_together_in_order);
	tcase_add_test(tc, test_held_overflow_flushes_first);
	tcase_add_test(tc, test_held_errors);
	tcase_add_test(tc, test_waiting_records_received_one_by_one);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(wire_suite());
}
