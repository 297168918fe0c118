/*
 * check_message: unit tests for shared/message.c, the header completion
 * done at accept time.  Each case gives a message, the envelope sender and
 * the exact bytes message_iov() must describe; the shapes, counts and
 * dropped ranges of message_scan() are checked on the way.  Time and time
 * zone are fixed, so every byte is known.
 */
#include "autoconf.h"

#include "message.h"
#include "timefmt.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "scratch.h"
#include "xmalloc.h"

#define ID "018C7A9F2D4E80001F2A"
#define HOST "mx.example"
#define WHEN ((time_t)1700000000) /* Tue, 14 Nov 2023 22:13:20 UTC */

#define MID "Message-ID: <" ID "@" HOST ">\r\n"
#define DATE "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"
#define FROM "From: s@example.com\r\n"
#define ALL MID DATE FROM

/* Date, From and Message-ID present, as a sender writes them. */
#define HDATE "Date: Mon, 13 Nov 2023 10:00:00 +0100\r\n"
#define HFROM "From: App <app@example.com>\r\n"
#define HMID "Message-ID: <abc@app.example>\r\n"

struct tcase {
	const char *name;
	const char *in;
	const char *sender;
	const char *out;
	enum message_end end;
	bool has_header;
	unsigned ndate, nfrom, nmid;
	size_t ndrop;
	unsigned opts; /* enum message_option; 0: Bcc fields go */
};

/* Every field libesmtp allows once, twice. */
#define REPEATS                                                                \
	"To: a@b\r\nTo: c@d\r\n\te@f\r\ncc: g@h\r\nCC: i@j\r\n"                \
	"Date: 1\r\nDate: 2\r\nFrom: x\r\nFROM: y\r\nMessage-ID: <1>\r\n"      \
	"message-id: <2>\r\nSender: a\r\nSender: b\r\nBcc: a\r\nBcc: b\r\n"    \
	"Reply-To: a\r\nReply-To: b\r\n"                                       \
	"Disposition-Notification-To: a\r\n"                                   \
	"Disposition-Notification-To: b\r\n\r\nb\r\n"

static const struct tcase cases[] = {
    {"complete", "Subject: s\r\n" HDATE HFROM HMID "\r\nbody\r\n",
        "s@example.com", "Subject: s\r\n" HDATE HFROM HMID "\r\nbody\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 0},
    {"all missing", "Subject: s\r\n\r\nbody\r\n", "s@example.com",
        "Subject: s\r\n" ALL "\r\nbody\r\n", MESSAGE_END_BLANK, true, 0, 0, 0,
        0},
    {"names without case", "DATE: x\r\nfrom: y\r\nmessage-id: <z>\r\n\r\nb\r\n",
        "s@example.com", "DATE: x\r\nfrom: y\r\nmessage-id: <z>\r\n\r\nb\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 0},
    {"Message-Id spelling", "Message-Id: <a@b>\r\n\r\nb\r\n", "s@example.com",
        "Message-Id: <a@b>\r\n" DATE FROM "\r\nb\r\n", MESSAGE_END_BLANK, true,
        0, 0, 1, 0},
    {"folded Return-Path removed",
        "Return-Path: <bounce@example.com>\r\n\t(comment)\r\n more\r\n"
        "Subject: s\r\n" HDATE HFROM HMID "\r\nbody\r\n",
        "s@example.com", "Subject: s\r\n" HDATE HFROM HMID "\r\nbody\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 1},
    {"return-path in the middle, any case",
        "Subject: s\r\nreturn-PATH: <a@b>\r\n  <c@d>\r\nX-A: 1\r\n\r\nb\r\n",
        "s@example.com", "Subject: s\r\nX-A: 1\r\n" ALL "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 0, 0, 0, 1},
    {"prohibited fields",
        "Original-Recipient: rfc822;a@b\r\nOriginal-Subject: hi\r\n"
        "Original-Message-ID: <x@y>\r\nResent-Reply-To: r@b\r\n"
        "Resent-From: a@b\r\nResent-From: c@d\r\n" HDATE HFROM HMID "\r\nb\r\n",
        "s@example.com",
        "Resent-From: a@b\r\nResent-From: c@d\r\n" HDATE HFROM HMID "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 4},
    {"repeats of fields allowed once", REPEATS, "s@example.com",
        "To: a@b\r\ncc: g@h\r\nDate: 1\r\nFrom: x\r\nMessage-ID: <1>\r\n"
        "Sender: a\r\nReply-To: a\r\n"
        "Disposition-Notification-To: a\r\n\r\nb\r\n",
        MESSAGE_END_BLANK, true, 2, 2, 2, 10},
    {"repeats of fields allowed once, Bcc kept", REPEATS, "s@example.com",
        "To: a@b\r\ncc: g@h\r\nDate: 1\r\nFrom: x\r\nMessage-ID: <1>\r\n"
        "Sender: a\r\nBcc: a\r\nReply-To: a\r\n"
        "Disposition-Notification-To: a\r\n\r\nb\r\n",
        MESSAGE_END_BLANK, true, 2, 2, 2, 9, MESSAGE_KEEP_BCC},
    {"blind copies removed: Bcc folded, any case, Resent-Bcc",
        "To: a@b\r\nBcc: hidden@x,\r\n\tother@y\r\nSubject: s\r\n"
        "bcc:\r\nResent-Bcc: r@x\r\nRESENT-BCC: q@x\r\n" HDATE HFROM HMID
        "\r\nBcc: body text stays\r\n",
        "s@example.com",
        "To: a@b\r\nSubject: s\r\n" HDATE HFROM HMID
        "\r\nBcc: body text stays\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 4},
    {"blind copies kept: repeated Resent-Bcc passes, as libesmtp sends it",
        "To: a@b\r\nBcc: hidden@x\r\nResent-Bcc: r@x\r\nResent-Bcc: "
        "q@x\r\n" HDATE HFROM HMID "\r\nb\r\n",
        "s@example.com",
        "To: a@b\r\nBcc: hidden@x\r\nResent-Bcc: r@x\r\nResent-Bcc: "
        "q@x\r\n" HDATE HFROM HMID "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 0, MESSAGE_KEEP_BCC},
    {"Bcc-like names are other fields",
        "Bcc-Note: keep\r\nX-Bcc: keep\r\nResent-Bccx: keep\r\n" HDATE HFROM
            HMID "\r\nb\r\n",
        "s@example.com",
        "Bcc-Note: keep\r\nX-Bcc: keep\r\nResent-Bccx: keep\r\n" HDATE HFROM
            HMID "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 0},
    {"repeats libesmtp keeps",
        "Received: a\r\nReceived: b\r\nSubject: 1\r\nSubject: 2\r\n"
        "MIME-Version: 1.0\r\nMIME-Version: 1.0\r\nContent-Type: a\r\n"
        "Content-Type: b\r\nIn-Reply-To: <a>\r\nIn-Reply-To: <b>\r\n" HDATE
            HFROM HMID "\r\nb\r\n",
        "s@example.com",
        "Received: a\r\nReceived: b\r\nSubject: 1\r\nSubject: 2\r\n"
        "MIME-Version: 1.0\r\nMIME-Version: 1.0\r\nContent-Type: a\r\n"
        "Content-Type: b\r\nIn-Reply-To: <a>\r\nIn-Reply-To: <b>\r\n" HDATE
            HFROM HMID "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 1, 1, 1, 0},
    {"obsolete space before colon is another field",
        "Date : x\r\nOriginal-Recipient : y\r\nReturn-Path : z\r\n\r\nb\r\n",
        "s@example.com", "Date : x\r\nReturn-Path : z\r\n" ALL "\r\nb\r\n",
        MESSAGE_END_BLANK, true, 0, 0, 0, 1},
    {"no header: starts with the empty line", "\r\nbody\r\n", "s@example.com",
        ALL "\r\nbody\r\n", MESSAGE_END_BLANK, false, 0, 0, 0, 0},
    {"no header: starts with body text", "Hello world\r\nTo: x\r\n\r\nmore\r\n",
        "s@example.com", ALL "\r\nHello world\r\nTo: x\r\n\r\nmore\r\n",
        MESSAGE_END_BODY, false, 0, 0, 0, 0},
    {"body text right after the header", "Subject: s\r\nthis is text\r\n",
        "s@example.com", "Subject: s\r\n" ALL "\r\nthis is text\r\n",
        MESSAGE_END_BODY, true, 0, 0, 0, 0},
    {"continuation line first", " x: y\r\n\r\nb\r\n", "s@example.com",
        ALL "\r\n x: y\r\n\r\nb\r\n", MESSAGE_END_BODY, false, 0, 0, 0, 0},
    {"8-bit field name is body",
        "S\xc3\xbc"
        "bject: x\r\n\r\nb\r\n",
        "s@example.com",
        ALL "\r\nS\xc3\xbc"
            "bject: x\r\n\r\nb\r\n",
        MESSAGE_END_BODY, false, 0, 0, 0, 0},
    {"header only, no empty line", "Subject: s\r\nDate: d\r\n", "s@example.com",
        "Subject: s\r\nDate: d\r\n" MID FROM "\r\n", MESSAGE_END_EOF, true, 1,
        0, 0, 0},
    {"header only, last CRLF missing", "Subject: s", "s@example.com",
        "Subject: s\r\n" ALL "\r\n", MESSAGE_END_EOF, true, 0, 0, 0, 0},
    {"header only, last LF missing", "Subject: s\r", "s@example.com",
        "Subject: s\r\n" ALL "\r\n", MESSAGE_END_EOF, true, 0, 0, 0, 0},
    {"header only, dropped last field without CRLF",
        "Subject: s\r\nReturn-Path: <a@b>", "s@example.com",
        "Subject: s\r\n" ALL "\r\n", MESSAGE_END_EOF, true, 0, 0, 0, 1},
    {"empty message", "", "s@example.com", ALL "\r\n", MESSAGE_END_EOF, false,
        0, 0, 0, 0},
    {"body without its last CRLF", "Subject: s\r\n\r\nbody", "s@example.com",
        "Subject: s\r\n" ALL "\r\nbody\r\n", MESSAGE_END_BLANK, true, 0, 0, 0,
        0},
    {"bare LF stays inside the line", "Subject: a\nDate: x\r\n\r\nb\nc\r\n",
        "s@example.com", "Subject: a\nDate: x\r\n" ALL "\r\nb\nc\r\n",
        MESSAGE_END_BLANK, true, 0, 0, 0, 0},
    {"a line of spaces is not the empty line",
        "Subject: s\r\n \r\nX: y\r\n\r\nb\r\n", "s@example.com",
        "Subject: s\r\n \r\nX: y\r\n" ALL "\r\nb\r\n", MESSAGE_END_BLANK, true,
        0, 0, 0, 0},
    {"null sender", "Subject: s\r\n\r\nb\r\n", "",
        "Subject: s\r\n" MID DATE "From: MAILER-DAEMON@" HOST "\r\n\r\nb\r\n",
        MESSAGE_END_BLANK, true, 0, 0, 0, 0},
    {"unsafe sender", "Subject: s\r\n\r\nb\r\n", "a@b\r\nBcc: x@y",
        "Subject: s\r\n" MID DATE "From: MAILER-DAEMON@" HOST "\r\n\r\nb\r\n",
        MESSAGE_END_BLANK, true, 0, 0, 0, 0},
    {"dot lines pass as they are", ".X: s\r\n\r\n.\r\n..x\r\n", "s@example.com",
        ".X: s\r\n" ALL "\r\n.\r\n..x\r\n", MESSAGE_END_BLANK, true, 0, 0, 0,
        0},
};

static char *
concat(const struct iovec *iov, int n, size_t *lenp)
{
	size_t len = 0, off = 0;
	char *buf;
	int i;

	for (i = 0; i < n; i++)
		len += iov[i].iov_len;
	buf = xmalloc(len + 1);
	for (i = 0; i < n; i++) {
		ck_assert_uint_gt(iov[i].iov_len, 0);
		memcpy(buf + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	buf[len] = '\0';
	*lenp = len;
	return buf;
}

/* Run message_fixup() + message_iov() and return the bytes described. */
static char *
fixed(const char *in, size_t inlen, unsigned opts, const char *sender,
    struct message_fix *fix, size_t *lenp)
{
	struct iovec *iov;
	char *out;
	int max, n;

	message_fixup(fix, in, inlen, opts, ID, sender, HOST, WHEN);
	max = message_iovcnt(fix);
	iov = xreallocarray(NULL, (size_t)max, sizeof(*iov));
	n = message_iov(fix, in, inlen, iov, max);
	ck_assert_int_ge(n, 0);
	ck_assert_int_le(n, max);
	out = concat(iov, n, lenp);
	free(iov);
	ck_assert_uint_eq(*lenp, fix->size);
	return out;
}

START_TEST(test_table)
{
	const struct tcase *c = &cases[_i];
	struct message_fix fix;
	char *out;
	size_t len;

	out = fixed(c->in, strlen(c->in), c->opts, c->sender, &fix, &len);
	ck_assert_msg(len == strlen(c->out) && memcmp(out, c->out, len) == 0,
	    "%s: got\n[%s]\nwant\n[%s]", c->name, out, c->out);
	ck_assert_msg(
	    fix.scan.end == c->end, "%s: end %d", c->name, (int)fix.scan.end);
	ck_assert_msg(
	    fix.scan.has_header == c->has_header, "%s: has_header", c->name);
	ck_assert_msg(fix.scan.count[MESSAGE_DATE] == c->ndate, "%s: ndate %u",
	    c->name, fix.scan.count[MESSAGE_DATE]);
	ck_assert_msg(fix.scan.count[MESSAGE_FROM] == c->nfrom, "%s: nfrom %u",
	    c->name, fix.scan.count[MESSAGE_FROM]);
	ck_assert_msg(fix.scan.count[MESSAGE_ID] == c->nmid, "%s: nmid %u",
	    c->name, fix.scan.count[MESSAGE_ID]);
	ck_assert_msg(fix.scan.ndrop == c->ndrop, "%s: ndrop %zu", c->name,
	    fix.scan.ndrop);
	free(out);
	message_fix_clear(&fix);
}
END_TEST

/* Every combination of Date, From and Message-ID present or missing:
 * what is missing is added after the last field, in Postfix's order. */
START_TEST(test_combinations)
{
	unsigned mask = (unsigned)_i;
	char in[512], want[512];
	struct message_fix fix;
	char *out;
	size_t len;

	snprintf(in, sizeof(in), "Subject: s\r\n%s%s%s\r\nbody\r\n",
	    mask & 1 ? HDATE : "", mask & 2 ? HFROM : "", mask & 4 ? HMID : "");
	snprintf(want, sizeof(want), "Subject: s\r\n%s%s%s%s%s%s\r\nbody\r\n",
	    mask & 1 ? HDATE : "", mask & 2 ? HFROM : "", mask & 4 ? HMID : "",
	    mask & 4 ? "" : MID, mask & 1 ? "" : DATE, mask & 2 ? "" : FROM);
	out = fixed(in, strlen(in), 0, "s@example.com", &fix, &len);
	ck_assert_str_eq(out, want);
	ck_assert_uint_eq(fix.scan.count[MESSAGE_DATE], (mask & 1) != 0);
	ck_assert_uint_eq(fix.scan.count[MESSAGE_FROM], (mask & 2) != 0);
	ck_assert_uint_eq(fix.scan.count[MESSAGE_ID], (mask & 4) != 0);
	ck_assert(fix.add[MESSAGE_DATE] == !(mask & 1));
	ck_assert(fix.add[MESSAGE_FROM] == !(mask & 2));
	ck_assert(fix.add[MESSAGE_ID] == !(mask & 4));
	ck_assert(mask == 7 ? fix.added == NULL : fix.added != NULL);
	free(out);
	message_fix_clear(&fix);
}
END_TEST

/* The dropped ranges cover the field's continuation lines exactly. */
START_TEST(test_scan_ranges)
{
	static const char msg[] = "Subject: s\r\n"
	                          "Return-Path: <a@b>\r\n"
	                          "\t(c)\r\n"
	                          "To: x\r\n"
	                          "to: y\r\n"
	                          " z\r\n"
	                          "\r\n"
	                          "Return-Path: <body@x>\r\n";
	struct message_scan scan;

	message_scan(msg, sizeof(msg) - 1, 0, &scan);
	ck_assert_int_eq(scan.end, MESSAGE_END_BLANK);
	ck_assert_uint_eq(scan.header_len, 12 + 20 + 6 + 7 + 7 + 4);
	ck_assert_uint_eq(scan.body_off, scan.header_len + 2);
	ck_assert_uint_eq(scan.ndrop, 2);
	ck_assert_uint_eq(scan.nrepeated, 1);
	ck_assert_uint_eq(scan.drop[0].off, 12);
	ck_assert_uint_eq(scan.drop[0].len, 26);
	ck_assert(!scan.drop[0].repeated);
	ck_assert_str_eq(scan.drop[0].name, "Return-Path");
	ck_assert_uint_eq(scan.drop[1].off, 45);
	ck_assert_uint_eq(scan.drop[1].len, 11);
	ck_assert(scan.drop[1].repeated);
	ck_assert_str_eq(scan.drop[1].name, "To");
	ck_assert_ptr_null(scan.eol_fix);
	message_scan_clear(&scan);
	message_scan_clear(NULL);

	message_scan(NULL, 0, 0, &scan);
	ck_assert_int_eq(scan.end, MESSAGE_END_EOF);
	ck_assert(!scan.has_header);
	ck_assert_uint_eq(scan.ndrop, 0);
	message_scan_clear(&scan);
}
END_TEST

START_TEST(test_iov_overflow)
{
	static const char msg[] = "Return-Path: <a>\r\nSubject: s\r\n\r\nb\r\n";
	struct message_fix fix;
	struct iovec iov[16];
	int max;

	message_fixup(&fix, msg, sizeof(msg) - 1, 0, ID, "", NULL, WHEN);
	max = message_iovcnt(&fix);
	ck_assert_int_le(max, 16);
	errno = 0;
	ck_assert_int_eq(
	    message_iov(&fix, msg, sizeof(msg) - 1, iov, max - 1), -1);
	ck_assert_int_eq(errno, EOVERFLOW);
	ck_assert_int_gt(message_iov(&fix, msg, sizeof(msg) - 1, iov, max), 0);
	/* No host name: "localhost", as in the SMTP greeting. */
	ck_assert_ptr_nonnull(strstr(fix.added, "@localhost>\r\n"));
	ck_assert_ptr_nonnull(
	    strstr(fix.added, "From: MAILER-DAEMON@localhost"));
	message_fix_clear(&fix);
	message_fix_clear(&fix);
}
END_TEST

/* Date in the local zone with its numeric offset, English names whatever
 * the locale. */
START_TEST(test_date_zones)
{
	static const struct {
		const char *tz;
		time_t when;
		const char *want;
	} zones[] = {
	    {"UTC0", WHEN, "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
	    {"EST5", WHEN, "Date: Tue, 14 Nov 2023 17:13:20 -0500\r\n"},
	    {"IST-5:30", WHEN, "Date: Wed, 15 Nov 2023 03:43:20 +0530\r\n"},
	    {"NST3:30", 1709600000, "Date: Mon, 4 Mar 2024 21:23:20 -0330\r\n"},
	};
	size_t i;

	for (i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		struct message_fix fix;

		setenv("TZ", zones[i].tz, 1);
		tzset();
		message_fixup(&fix, "", 0, 0, ID, "a@b", HOST, zones[i].when);
		ck_assert_ptr_nonnull(fix.added);
		ck_assert_msg(strstr(fix.added, zones[i].want) != NULL,
		    "%s: %s", zones[i].tz, fix.added);
		message_fix_clear(&fix);
	}
	setenv("TZ", "UTC0", 1);
	tzset();
}
END_TEST

/* One log line naming what changed; none for a complete message. */
START_TEST(test_log_line)
{
	static const char changed[] = "Return-Path: <a>\r\nTo: x\r\nTo: y\r\n"
	                              "To: z\r\nOriginal-Subject: s\r\n"
	                              "Bcc: b\r\nDate: d\r\n";
	static const char complete[] = HDATE HFROM HMID "\r\nb\r\n";
	char path[] = "/tmp/check_message.XXXXXX";
	char buf[2048];
	struct message_fix fix;
	FILE *fp;
	size_t n;
	int fd;

	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(log_init("check_message", path, 0), 0);
	message_fixup(
	    &fix, complete, sizeof(complete) - 1, 0, "ID1", "a@b", HOST, WHEN);
	message_fix_log(&fix, "ID1");
	message_fix_clear(&fix);
	message_fixup(
	    &fix, changed, sizeof(changed) - 1, 0, "ID2", "a@b", HOST, WHEN);
	message_fix_log(&fix, "ID2");
	message_fix_clear(&fix);
	ck_assert_int_eq(log_init("check_message", NULL, 0), 0);

	fp = fopen(path, "r");
	ck_assert_ptr_nonnull(fp);
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	unlink(path);
	ck_assert_ptr_null(strstr(buf, "ID1"));
	ck_assert_msg(
	    strstr(buf, "ID2: header fixed: added Message-ID, From; "
	                "dropped Return-Path, repeated To, "
	                "Original-*, Bcc; empty line appended") != NULL,
	    "log: %s", buf);
}
END_TEST

/* The Received: trace field both front-ends prepend: each shape, and text
 * from outside that would break the field. */
static const struct {
	const char *name;
	struct message_trace t;
	const char *want;
} traces[] = {
    {"standalone, one recipient",
        {"web1", "localhost", "127.0.0.1", HOST, "Arnie", "ESMTP", ID, NULL,
            "u@example.org", WHEN},
        "Received: from web1 (localhost [127.0.0.1])\r\n"
        "\tby " HOST " (Arnie) with ESMTP id " ID "\r\n"
        "\tfor <u@example.org>; Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"several recipients",
        {"web1", "unknown", "192.0.2.1", HOST, "Arnie", "SMTP", ID, NULL, NULL,
            WHEN},
        "Received: from web1 (unknown [192.0.2.1])\r\n"
        "\tby " HOST " (Arnie) with SMTP id " ID
        "; Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"milter, IPv6",
        {"mx.client.example", "mx.client.example", "2001:db8::1", HOST,
            "Arnie milter", "ESMTP", ID, "MTA queue id 4XkT2b", "u@example.org",
            WHEN},
        "Received: from mx.client.example (mx.client.example "
        "[IPv6:2001:db8::1])\r\n"
        "\tby " HOST " (Arnie milter) with ESMTP id " ID "\r\n"
        "\t(MTA queue id 4XkT2b) for <u@example.org>; "
        "Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"address already tagged, name in brackets, literal HELO",
        {"[192.0.2.9]", "[2001:db8::9]", "IPv6:2001:db8::9", HOST,
            "Arnie milter", "ESMTP", ID, "MTA queue id Q", NULL, WHEN},
        "Received: from [192.0.2.9] ([IPv6:2001:db8::9])\r\n"
        "\tby " HOST " (Arnie milter) with ESMTP id " ID "\r\n"
        "\t(MTA queue id Q); Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"local submission",
        {NULL, "localhost", "127.0.0.1", HOST, "Arnie milter, local submission",
            NULL, ID, "MTA queue id Q", "u@example.org", WHEN},
        "Received: by " HOST " (Arnie milter, local submission) id " ID
        "\r\n\t(MTA queue id Q) for <u@example.org>; "
        "Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"no host name", {NULL, NULL, NULL, NULL, NULL, NULL, ID, NULL, NULL, WHEN},
        "Received: by localhost id " ID
        "; Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
    {"hostile text",
        {"a\r\nX-Evil: 1", "n(a)m;e", "1.2.3.4]", HOST, "Arnie", "ESMTP", ID,
            "q\r\nid (x)", "\"a b\"\n@example.org", WHEN},
        "Received: from a??X-Evil:?1 (n?a?m?e [1.2.3.4?])\r\n"
        "\tby " HOST " (Arnie) with ESMTP id " ID "\r\n"
        "\t(q??id ?x?) for <\"a b\"?@example.org>; "
        "Tue, 14 Nov 2023 22:13:20 +0000\r\n"},
};

START_TEST(test_received)
{
	char *h = message_received(&traces[_i].t);

	ck_assert_msg(strcmp(h, traces[_i].want) == 0, "%s:\n%s\nwant:\n%s",
	    traces[_i].name, h, traces[_i].want);
	free(h);
}
END_TEST

/* The longest line, CRLF not counted, fed whole and in every split. */
static const struct {
	const char *in;
	size_t longest;
} line_cases[] = {
    {"", 0},
    {"abc", 3},
    {"abc\r\n", 3},
    {"abc\n", 3},
    {"abc\r", 3},
    {"a\r\nbcdef\r\ngh\r\n", 5},
    {"abcd\rxy\r\n", 7},
    {"\r\n\r\n\r\n", 0},
    {"x\r\r\n", 2},
};

START_TEST(test_lines)
{
	const char *in = line_cases[_i].in;
	size_t len = strlen(in), cut;
	struct message_lines l;

	for (cut = 0; cut <= len; cut++) {
		memset(&l, 0, sizeof(l));
		message_lines_feed(&l, in, cut);
		message_lines_feed(&l, in + cut, len - cut);
		ck_assert_msg(l.longest == line_cases[_i].longest,
		    "\"%s\" cut at %zu: %zu", in, cut, l.longest);
	}
}
END_TEST

/* The limit itself: 998 octets pass, 999 do not, however the CRLF falls. */
START_TEST(test_lines_limit)
{
	static char line[MESSAGE_LINE_MAX + 3];
	struct message_lines l;
	size_t n;

	for (n = MESSAGE_LINE_MAX; n <= MESSAGE_LINE_MAX + 1; n++) {
		memset(line, 'x', n);
		memcpy(line + n, "\r\n", 2);
		memset(&l, 0, sizeof(l));
		message_lines_feed(&l, line, n + 1); /* up to the CR */
		message_lines_feed(&l, line + n + 1, 1);
		message_lines_feed(&l, "next\r\n", 6);
		ck_assert_uint_eq(l.longest, n);
		ck_assert(
		    (l.longest > MESSAGE_LINE_MAX) == (n > MESSAGE_LINE_MAX));
	}
}
END_TEST

static const struct {
	const char *msg;
	const char *name;
	const char *value; /* NULL: none */
} field_cases[] = {
    {"Message-ID: <a@b>\r\n\r\nbody\r\n", "Message-ID", "<a@b>"},
    {"Subject: x\r\nmessage-id:<a@b>  \r\n\r\n", "Message-ID", "<a@b>"},
    {"Message-ID :\r\n <folded@b>\r\n\r\n", "Message-ID", "<folded@b>"},
    {"Subject: a\r\n b\r\n\tc\r\nTo: d\r\n\r\n", "Subject", "a b\tc"},
    {"Subject: x\r\n\r\nMessage-ID: <in-body@b>\r\n", "Message-ID", NULL},
    {"Subject: x\nMessage-ID: <lf@b>\n\n", "Message-ID", "<lf@b>"},
    {"Message-IDs: <no@b>\r\n\r\n", "Message-ID", NULL},
    {"not a header\r\nMessage-ID: <no@b>\r\n", "Message-ID", NULL},
    {"Message-ID: <first@b>\r\nMessage-ID: <second@b>\r\n\r\n", "Message-ID",
        "<first@b>"},
    {"Message-ID: <eof@b>", "Message-ID", "<eof@b>"},
    {"", "Message-ID", NULL},
};

START_TEST(test_field_value)
{
	const char *msg = field_cases[_i].msg;
	char *v = message_field_value(msg, strlen(msg), field_cases[_i].name);

	if (field_cases[_i].value == NULL)
		ck_assert_ptr_null(v);
	else {
		ck_assert_ptr_nonnull(v);
		ck_assert_str_eq(v, field_cases[_i].value);
	}
	free(v);
}
END_TEST

static const struct {
	const char *text;
	long secs; /* -1: refused */
} durations[] = {
    {"90s", 90},
    {"15m", 900},
    {"2h", 7200},
    {"1d", 86400},
    {"3650d", 3650L * 86400},
    {"0s", -1},
    {"-5m", -1},
    {"5", -1},
    {"5 m", -1},
    {"5mm", -1},
    {"1w", -1},
    {"99999999999d", -1},
    {"", -1},
};

START_TEST(test_parse_duration)
{
	long secs = -7;
	int rc = timefmt_parse_duration(durations[_i].text, &secs);

	if (durations[_i].secs == -1)
		ck_assert_msg(rc == -1, "'%s' accepted", durations[_i].text);
	else {
		ck_assert_int_eq(rc, 0);
		ck_assert_int_eq(secs, durations[_i].secs);
	}
}
END_TEST

static const struct {
	const char *text;
	long long t; /* -1: refused */
} dates[] = {
    {"Tue, 1 Dec 2026 10:00:00 +0000", 1796119200LL},
    {"1 Dec 2026 10:00:00 +0000", 1796119200LL},
    {"  Tue, 01 Dec 2026 11:30:00 +0130 (CET-ish)", 1796119200LL},
    {"Tue, 1 Dec 2026 05:00 EST", 1796119200LL},
    {"Tue, 1 Dec 2026 10:00:00 GMT", 1796119200LL},
    {"tue, 1 dec 2026 02:00:00 -0800", 1796119200LL},
    {"Tue, 1 Dec 2026 10:00:00", -1},
    {"Tue, 1 Foo 2026 10:00:00 +0000", -1},
    {"Tue, 1 Dec 2026 25:00:00 +0000", -1},
    {"Tue, 1 Dec 2026 10:00:00 +0000 trailing", -1},
    {"Tue, 1 Dec 2026 10:00:00 +9999", -1},
    {"2026-12-01T10:00:00Z", -1},
    {"", -1},
};

START_TEST(test_parse_date)
{
	time_t t = 0;
	int rc = timefmt_parse_date(dates[_i].text, &t);

	if (dates[_i].t == -1)
		ck_assert_msg(rc == -1, "'%s' accepted", dates[_i].text);
	else {
		ck_assert_msg(rc == 0, "'%s' refused", dates[_i].text);
		ck_assert_int_eq((long long)t, dates[_i].t);
	}
}
END_TEST

static Suite *
message_suite(void)
{
	Suite *s = suite_create("message");
	TCase *tc = tcase_create("core");

	tcase_add_loop_test(
	    tc, test_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_loop_test(tc, test_combinations, 0, 8);
	tcase_add_test(tc, test_scan_ranges);
	tcase_add_test(tc, test_iov_overflow);
	tcase_add_test(tc, test_date_zones);
	tcase_add_test(tc, test_log_line);
	tcase_add_loop_test(
	    tc, test_lines, 0, sizeof(line_cases) / sizeof(line_cases[0]));
	tcase_add_test(tc, test_lines_limit);
	tcase_add_loop_test(tc, test_parse_duration, 0,
	    (int)(sizeof(durations) / sizeof(durations[0])));
	tcase_add_loop_test(
	    tc, test_parse_date, 0, (int)(sizeof(dates) / sizeof(dates[0])));
	tcase_add_loop_test(tc, test_field_value, 0,
	    (int)(sizeof(field_cases) / sizeof(field_cases[0])));
	tcase_add_loop_test(
	    tc, test_received, 0, (int)(sizeof(traces) / sizeof(traces[0])));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	/* Every expected Date above is in UTC. */
	setenv("TZ", "UTC0", 1);
	tzset();
	return unit_run(message_suite());
}
