/*
 * fuzz_smtp_parse: libFuzzer harness for standalone/smtp_parse.c, the SMTP
 * command parser and the streaming DATA decoder, which see every octet a
 * client sends.
 *
 * Input layout: 8 octets choose the chunk sizes (1..64, used in turn), 2
 * octets the decoder's max_size (0..65535), the rest is the client's
 * stream.  What must hold:
 * Command parser, on every line of the stream (split at LF, CR removed):
 *   - 0 means a known verb and a NUL-terminated argument without control
 *     characters; -1 means a reply "[45]NN X.Y.Z text";
 *   - an over-long line gets exactly SMTP_REPLY_TOO_LONG.
 * DATA decoder, the stream fed in chunks of the chosen sizes:
 *   - the end of data is reported if and only if CRLF "." CRLF occurs
 *     (the DATA command's CRLF counts as the first CRLF), and exactly up
 *     to that final LF is consumed; before it, everything is consumed;
 *   - the outcome and the message do not depend on the chunk sizes;
 *   - the stored size never exceeds max_size, SMTP_DATA_TOOBIG is given
 *     exactly when the decoded message is larger, and the decoder then
 *     holds nothing;
 *   - the message has CRLF line ends only (no bare CR or LF);
 *   - once done, further input is not consumed.
 */
#include "autoconf.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_smtp_parse: %s:%d: %s\n",    \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

#define NCHUNK 8

static void
check_command(const char *line, size_t len)
{
	struct smtp_cmd cmd;
	const char *r;
	size_t i, alen;
	int rc;

	rc = smtp_parse_command(line, len, &cmd);
	if (rc == 0) {
		CHECK(cmd.verb != SMTP_UNKNOWN);
		alen = strnlen(cmd.arg, sizeof(cmd.arg));
		CHECK(alen < sizeof(cmd.arg));
		CHECK(alen <= len);
		for (i = 0; i < alen; i++)
			CHECK((unsigned char)cmd.arg[i] >= ' ' &&
			    cmd.arg[i] != 0x7f);
		return;
	}
	CHECK(rc == -1);
	r = cmd.reply;
	CHECK(r != NULL);
	CHECK((r[0] == '4' || r[0] == '5') && isdigit((unsigned char)r[1]) &&
	    isdigit((unsigned char)r[2]) && r[3] == ' ');
	CHECK(r[4] == r[0] && r[5] == '.');
	if (len > SMTP_LINE_MAX - 2)
		CHECK(strcmp(r, SMTP_REPLY_TOO_LONG) == 0);
}

static void
check_commands(const char *s, size_t n)
{
	const char *p = s, *end = s + n, *nl;
	size_t len;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		len = (size_t)((nl != NULL ? nl : end) - p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		check_command(p, len);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
}

/* Where the end of data must be found: the offset just past the LF of the
 * first CRLF "." CRLF, or 0 if there is none. */
static size_t
expected_end(const char *s, size_t n)
{
	size_t i;

	/* The DATA command's CRLF is the first CRLF. */
	if (n >= 3 && memcmp(s, ".\r\n", 3) == 0)
		return 3;
	for (i = 0; i + 5 <= n; i++)
		if (memcmp(s + i, "\r\n.\r\n", 5) == 0)
			return i + 5;
	return 0;
}

static void
check_crlf_only(const char *m, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (m[i] == '\r')
			CHECK(i + 1 < n && m[i + 1] == '\n');
		if (m[i] == '\n')
			CHECK(i > 0 && m[i - 1] == '\r');
	}
}

static void
check_data(const uint8_t *chunks, size_t max_size, const char *s, size_t n)
{
	struct smtp_data one, ref, d;
	enum smtp_data_status st1, st, st_ref;
	size_t used1, used = 0, used_ref, step, got, k = 0, end, len1, len;
	char *msg1, *msg;

	end = expected_end(s, n);

	/* Unlimited decoder: the message's true size. */
	smtp_data_init(&ref, SIZE_MAX);
	used_ref = smtp_data_feed(&ref, s, n, &st_ref);
	CHECK(st_ref != SMTP_DATA_TOOBIG);

	/* In one piece. */
	smtp_data_init(&one, max_size);
	used1 = smtp_data_feed(&one, s, n, &st1);
	/* The limit changes what is kept, never where the data ends. */
	CHECK(used1 == used_ref &&
	    (st1 == SMTP_DATA_MORE) == (st_ref == SMTP_DATA_MORE));
	if (end == 0) {
		CHECK(st1 == SMTP_DATA_MORE && used1 == n);
	} else {
		CHECK(st1 != SMTP_DATA_MORE && used1 == end);
		CHECK(smtp_data_feed(&one, s, n, &st) == 0 && st == st1);
	}
	CHECK(one.size <= max_size);
	CHECK(one.overflow == (ref.len > max_size));
	if (st1 != SMTP_DATA_MORE)
		CHECK((st1 == SMTP_DATA_TOOBIG) == (ref.len > max_size));
	if (one.overflow)
		CHECK(one.buf == NULL && one.len == 0);
	else
		CHECK(one.len == one.size && one.len == ref.len &&
		    (one.len == 0 || memcmp(one.buf, ref.buf, one.len) == 0));
	check_crlf_only(ref.buf, ref.len);

	/* In chunks. */
	smtp_data_init(&d, max_size);
	st = SMTP_DATA_MORE;
	while (used < n) {
		step = (size_t)(chunks[k++ % NCHUNK] % 64) + 1;
		if (step > n - used)
			step = n - used;
		got = smtp_data_feed(&d, s + used, step, &st);
		CHECK(got <= step);
		used += got;
		if (st != SMTP_DATA_MORE)
			break;
		CHECK(got == step);
	}
	CHECK(st == st1 && used == used1);
	CHECK(d.size <= max_size && d.overflow == one.overflow);

	msg1 = smtp_data_take(&one, &len1);
	msg = smtp_data_take(&d, &len);
	CHECK(len == len1);
	if (one.overflow)
		CHECK(msg1 == NULL && msg == NULL && len == 0);
	else
		CHECK(msg1 != NULL && msg != NULL &&
		    (len == 0 || memcmp(msg, msg1, len) == 0));
	free(msg1);
	free(msg);
	smtp_data_release(&one);
	smtp_data_release(&d);
	smtp_data_release(&ref);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *chunks = data;
	size_t max_size;

	if (size < NCHUNK + 2)
		return 0;
	max_size = (size_t)data[NCHUNK] << 8 | data[NCHUNK + 1];
	data += NCHUNK + 2;
	size -= NCHUNK + 2;
	check_commands((const char *)data, size);
	check_data(chunks, max_size, (const char *)data, size);
	return 0;
}
