/*
 * fuzz_message: libFuzzer harness for shared/message.c: message_fixup(),
 * message_iov() and message_received(), which see the client's message and
 * envelope sender.
 *
 * Input layout: one octet gives the length (0..63, its low six bits) of the
 * envelope sender that follows (cut at a NUL) and, in its bit 6, whether
 * Bcc fields are kept; the rest is the message.  What must hold:
 *   - message_iov() gives at most message_iovcnt() entries, none empty,
 *     whose lengths add up to fix.size;
 *   - the completed message has a header section that ends with CRLF CRLF
 *     (scanned again: MESSAGE_END_BLANK), exactly one Date, From and
 *     Message-ID, nothing left to drop, CRLF at its end, and the original
 *     body after the empty line unchanged (plus the line end fix);
 *   - completing it again changes nothing;
 *   - message_received() on strings from the input gives one header field:
 *     "Received: ", folded lines (CRLF then TAB), no bare CR or LF, a
 *     final CRLF.
 */
#include "autoconf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond)) {                                             \
			fprintf(stderr, "fuzz_message: %s:%d: %s\n",       \
			    __FILE__, __LINE__, #cond);                    \
			abort();                                           \
		}                                                          \
	} while (0)

#define ID "0193A4B5C6D7E00A1B2"
#define HOST "mx.example.org"
#define WHEN ((time_t)1700000000)

/* Concatenate iov[0..n) into an owned buffer of *lenp octets. */
static char *
flatten(const struct iovec *iov, int n, size_t *lenp)
{
	size_t len = 0;
	char *buf;
	int i;

	for (i = 0; i < n; i++)
		len += iov[i].iov_len;
	buf = malloc(len + 1);
	CHECK(buf != NULL);
	len = 0;
	for (i = 0; i < n; i++) {
		memcpy(buf + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	*lenp = len;
	return buf;
}

static void
check_completed(const struct message_fix *fix, unsigned opts, const char *msg,
    size_t len, const char *out, size_t olen)
{
	struct message_scan s;
	struct message_fix again;
	const char *eol = fix->scan.eol_fix;
	size_t body_off, blen, elen = eol != NULL ? strlen(eol) : 0;
	int i;

	CHECK(olen >= 2 && memcmp(out + olen - 2, "\r\n", 2) == 0);
	message_scan(out, olen, opts, &s);
	CHECK(s.end == MESSAGE_END_BLANK);
	CHECK(s.has_header);
	CHECK(s.header_len >= 2 &&
	    memcmp(out + s.header_len - 2, "\r\n\r\n", 4) == 0);
	CHECK(s.ndrop == 0 && s.nrepeated == 0);
	CHECK(s.eol_fix == NULL);
	for (i = 0; i < MESSAGE_NFIELDS; i++)
		CHECK(s.count[i] == 1);

	/* The body is the original's, with only the line end fix. */
	switch (fix->scan.end) {
	case MESSAGE_END_BLANK:
		body_off = fix->scan.body_off;
		break;
	case MESSAGE_END_BODY:
		body_off = fix->scan.header_len;
		break;
	default:
		body_off = len;
		elen = 0; /* the fix went into the header section */
		break;
	}
	blen = len - body_off;
	CHECK(olen - s.body_off == blen + elen);
	CHECK(blen == 0 || memcmp(out + s.body_off, msg + body_off, blen) == 0);
	CHECK(elen == 0 || memcmp(out + s.body_off + blen, eol, elen) == 0);
	message_scan_clear(&s);

	/* A completed message needs nothing more. */
	message_fixup(&again, out, olen, opts, ID, "x@example.org", HOST, WHEN);
	CHECK(again.added == NULL && again.addedlen == 0);
	CHECK(again.scan.ndrop == 0 && again.size == olen);
	message_fix_clear(&again);
}

static void
check_received(const char *s, size_t n)
{
	struct message_trace t;
	struct message_scan sc;
	char *h, *half;
	size_t hlen, i;

	/* Different parts of the string in each slot. */
	half = strdup(s + n / 2);
	CHECK(half != NULL);
	memset(&t, 0, sizeof(t));
	t.helo = s;
	t.client_name = half;
	t.client_addr = n % 2 ? s : half;
	t.by = HOST;
	t.by_comment = "Arnie";
	t.with = "ESMTP";
	t.id = n % 3 ? ID : s;
	t.comment = n % 5 ? half : NULL;
	t.rcpt = n % 7 ? s : NULL;
	t.when = WHEN;
	h = message_received(&t);
	CHECK(h != NULL);
	hlen = strlen(h);
	CHECK(hlen > 12 && strncmp(h, "Received: ", 10) == 0);
	CHECK(memcmp(h + hlen - 2, "\r\n", 2) == 0);
	for (i = 0; i < hlen; i++) {
		if (h[i] == '\r') {
			CHECK(h[i + 1] == '\n');
			CHECK(i + 2 == hlen || h[i + 2] == '\t');
		}
		if (h[i] == '\n')
			CHECK(i > 0 && h[i - 1] == '\r');
	}
	message_scan(h, hlen, 0, &sc);
	CHECK(sc.end == MESSAGE_END_EOF && sc.has_header);
	CHECK(sc.ndrop == 0 && sc.eol_fix == NULL);
	message_scan_clear(&sc);
	free(h);
	free(half);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct message_fix fix;
	struct iovec *iov;
	char sender[64], *out;
	const char *msg;
	size_t slen, len, olen, total;
	unsigned opts;
	int cnt, n, i;

	if (size < 1)
		return 0;
	slen = data[0] % 64;
	opts = data[0] & 0x40 ? MESSAGE_KEEP_BCC : 0;
	if (slen > size - 1)
		slen = size - 1;
	memcpy(sender, data + 1, slen);
	sender[slen] = '\0';
	msg = (const char *)data + 1 + slen;
	len = size - 1 - slen;

	message_fixup(
	    &fix, len > 0 ? msg : NULL, len, opts, ID, sender, HOST, WHEN);
	cnt = message_iovcnt(&fix);
	CHECK(cnt > 0);
	iov = calloc((size_t)cnt, sizeof(*iov));
	CHECK(iov != NULL);
	CHECK(message_iov(&fix, msg, len, iov, cnt - 1) == -1);
	n = message_iov(&fix, msg, len, iov, cnt);
	CHECK(n > 0 && n <= cnt);
	total = 0;
	for (i = 0; i < n; i++) {
		CHECK(iov[i].iov_len > 0);
		total += iov[i].iov_len;
	}
	CHECK(total == fix.size);
	out = flatten(iov, n, &olen);
	check_completed(&fix, opts, msg, len, out, olen);
	free(out);
	free(iov);
	message_fix_clear(&fix);

	check_received(sender, slen == 0 ? 0 : strlen(sender));
	return 0;
}
