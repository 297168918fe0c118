/*
 * check_smtp_parse: the SMTP command parser and the DATA decoder.
 *
 * Table-driven.  Each command line is checked for the verb, the argument
 * and the reply; each DATA input is fed in every chunking that matters (in
 * one piece, byte by byte, every split into two pieces, and for short inputs
 * every split into three) and must give the same message, status and
 * consumed count each time, which is what makes the decoder safe against
 * whatever segmentation TCP produces.
 */
#include "autoconf.h"
#include "scratch.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

/* ---------------------------------------------------------------- commands */

struct cmd_case {
	const char *line;
	int ret; /* 0 or -1 */
	enum smtp_verb verb;
	const char *arg;   /* expected arg when ret == 0, or NULL */
	const char *reply; /* expected reply prefix when ret == -1 */
};

static const struct cmd_case cmd_cases[] = {
    /* EHLO / HELO */
    {"EHLO client.example", 0, SMTP_EHLO, "client.example", NULL},
    {"ehlo client.example  ", 0, SMTP_EHLO, "client.example", NULL},
    {"HELO [127.0.0.1]", 0, SMTP_HELO, "[127.0.0.1]", NULL},
    {"EHLO", -1, SMTP_EHLO, NULL, "501 5.5.4"},
    {"EHLO   ", -1, SMTP_EHLO, NULL, "501 5.5.4"},
    {"HELO a b", -1, SMTP_HELO, NULL, "501 5.5.4"},
    /* MAIL */
    {"MAIL FROM:<a@b.example>", 0, SMTP_MAIL, "a@b.example", NULL},
    {"mail from:<a@b.example>", 0, SMTP_MAIL, "a@b.example", NULL},
    {"MAIL FROM: <a@b.example>", 0, SMTP_MAIL, "a@b.example", NULL},
    {"MAIL FROM:<>", 0, SMTP_MAIL, "", NULL},
    {"MAIL FROM:<> SIZE=10", 0, SMTP_MAIL, "", NULL},
    {"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME", 0, SMTP_MAIL, "a@b", NULL},
    {"MAIL FROM:<a@b> body=7bit", 0, SMTP_MAIL, "a@b", NULL},
    {"MAIL FROM:<a@b> SIZE=1 ", 0, SMTP_MAIL, "a@b", NULL},
    {"MAIL FROM:<@r1.example,@r2.example:a@b.example>", 0, SMTP_MAIL,
        "a@b.example", NULL},
    {"MAIL FROM:<\"john doe\"@b.example>", 0, SMTP_MAIL,
        "\"john doe\"@b.example", NULL},
    {"MAIL FROM:<\"a\\\"b>c\"@b.example>", 0, SMTP_MAIL,
        "\"a\\\"b>c\"@b.example", NULL},
    {"MAIL FROM:<a..b@docomo.example>", 0, SMTP_MAIL, "a..b@docomo.example",
        NULL},
    {"MAIL FROM:<a+tag@[192.0.2.1]>", 0, SMTP_MAIL, "a+tag@[192.0.2.1]", NULL},
    {"MAIL FROM:<a@[IPv6:::1]>", 0, SMTP_MAIL, "a@[IPv6:::1]", NULL},
    {"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc.example>", 0, SMTP_MAIL,
        "j\xc3\xb6rg@b\xc3\xbc.example", NULL},
    /* Not offered: the relay could not pass it on. */
    {"MAIL FROM:<j\xc3\xb6rg@b\xc3\xbc.example> SMTPUTF8", -1, SMTP_MAIL,
        NULL, "555 5.5.4 SMTPUTF8 is not supported"},
    {"MAIL FROM:<a@b> smtputf8", -1, SMTP_MAIL, NULL, "555 5.5.4"},
    {"MAIL FROM:a@b", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<<a@b>", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b>>", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b>x", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL TO:<a@b>", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a b@c>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<ab>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<postmaster>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<@b.example>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@b..c>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@.b>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@b(c)>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a,x@b>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@b@c>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<\"ab@c>", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<\"a\"b@c>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<@r1:>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<@r1,a@b>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<@r1,:a@b>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a@[1.2.3.4>", -1, SMTP_MAIL, NULL, "501 5.1.7"},
    {"MAIL FROM:<a\x01@b>", -1, SMTP_UNKNOWN, NULL, "500 5.5.2"},
    {"MAIL FROM:<a@b>\tSIZE=1", -1, SMTP_UNKNOWN, NULL, "500 5.5.2"},
    /* MAIL parameters */
    {"MAIL FROM:<a@b> SIZE=", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> SIZE", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> SIZE=12x", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> SIZE=-1", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> SIZE=1 SIZE=2", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> BODY=BINARYMIME", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> BODY", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> SMTPUTF8=yes", -1, SMTP_MAIL, NULL, "555 5.5.4"},
    {"MAIL FROM:<a@b> =x", -1, SMTP_MAIL, NULL, "501 5.5.4"},
    {"MAIL FROM:<a@b> RET=HDRS", -1, SMTP_MAIL, NULL, "555 5.5.4"},
    {"MAIL FROM:<a@b> AUTH=<>", -1, SMTP_MAIL, NULL, "555 5.5.4"},
    {"MAIL FROM:<a@b> ENVID=x", -1, SMTP_MAIL, NULL, "555 5.5.4"},
    /* RCPT */
    {"RCPT TO:<x@y.example>", 0, SMTP_RCPT, "x@y.example", NULL},
    {"rcpt to: <x@y.example>", 0, SMTP_RCPT, "x@y.example", NULL},
    {"RCPT TO:<postmaster>", 0, SMTP_RCPT, "postmaster", NULL},
    {"RCPT TO:<PostMaster>", 0, SMTP_RCPT, "PostMaster", NULL},
    {"RCPT TO:<Postmaster@y.example>", 0, SMTP_RCPT, "Postmaster@y.example",
        NULL},
    {"RCPT TO:<@a.example:x@y.example>", 0, SMTP_RCPT, "x@y.example", NULL},
    {"RCPT TO:<>", -1, SMTP_RCPT, NULL, "501 5.1.3"},
    {"RCPT TO:<x>", -1, SMTP_RCPT, NULL, "501 5.1.3"},
    {"RCPT TO:<x@>", -1, SMTP_RCPT, NULL, "501 5.1.3"},
    {"RCPT TO:<x @y>", -1, SMTP_RCPT, NULL, "501 5.1.3"},
    {"RCPT TO:x@y", -1, SMTP_RCPT, NULL, "501 5.5.4"},
    {"RCPT TO:<x@y", -1, SMTP_RCPT, NULL, "501 5.5.4"},
    {"RCPT TO:x@y>", -1, SMTP_RCPT, NULL, "501 5.5.4"},
    {"RCPT FROM:<x@y>", -1, SMTP_RCPT, NULL, "501 5.5.4"},
    {"RCPT", -1, SMTP_RCPT, NULL, "501 5.5.4"},
    {"RCPT TO:<x@y> NOTIFY=NEVER", -1, SMTP_RCPT, NULL, "555 5.5.4"},
    {"RCPT TO:<x@y> ", 0, SMTP_RCPT, "x@y", NULL},
    /* the rest */
    {"DATA", 0, SMTP_DATA, "", NULL},
    {"data", 0, SMTP_DATA, "", NULL},
    {"DATA x", -1, SMTP_DATA, NULL, "501 5.5.4"},
    {"RSET", 0, SMTP_RSET, "", NULL},
    {"RSET x", -1, SMTP_RSET, NULL, "501 5.5.4"},
    {"NOOP", 0, SMTP_NOOP, "", NULL},
    {"NOOP anything at all", 0, SMTP_NOOP, "anything at all", NULL},
    {"QUIT", 0, SMTP_QUIT, "", NULL},
    {"QUIT now", -1, SMTP_QUIT, NULL, "501 5.5.4"},
    {"VRFY root", 0, SMTP_VRFY, "root", NULL},
    {"VRFY", -1, SMTP_VRFY, NULL, "501 5.5.4"},
    {"HELP", 0, SMTP_HELP, "", NULL},
    {"HELP MAIL", 0, SMTP_HELP, "MAIL", NULL},
    {"STARTTLS", -1, SMTP_UNKNOWN, NULL, "500 5.5.1"},
    {"AUTH PLAIN AAAA", -1, SMTP_UNKNOWN, NULL, "500 5.5.1"},
    {"EHLOX a", -1, SMTP_UNKNOWN, NULL, "500 5.5.1"},
    {"DAT", -1, SMTP_UNKNOWN, NULL, "500 5.5.1"},
    {"GET / HTTP/1.0", -1, SMTP_UNKNOWN, NULL, "500 5.5.1"},
    {"", -1, SMTP_UNKNOWN, NULL, "500 5.5.2"},
    {"NOOP\r", -1, SMTP_UNKNOWN, NULL, "500 5.5.2"},
};

START_TEST(test_commands)
{
	const struct cmd_case *c = &cmd_cases[_i];
	struct smtp_cmd cmd;
	int r;

	r = smtp_parse_command(c->line, strlen(c->line), &cmd);
	ck_assert_msg(r == c->ret, "\"%s\": returned %d, reply %s", c->line, r,
	    cmd.reply ? cmd.reply : "(none)");
	ck_assert_msg(cmd.verb == c->verb, "\"%s\": verb %d, want %d", c->line,
	    cmd.verb, c->verb);
	if (c->ret == 0) {
		ck_assert_ptr_null(cmd.reply);
		if (c->arg != NULL)
			ck_assert_str_eq(cmd.arg, c->arg);
	} else {
		ck_assert_ptr_nonnull(cmd.reply);
		ck_assert_msg(
		    strncmp(cmd.reply, c->reply, strlen(c->reply)) == 0,
		    "\"%s\": reply \"%s\", want \"%s\"", c->line, cmd.reply,
		    c->reply);
	}
}
END_TEST

START_TEST(test_mail_params)
{
	struct smtp_cmd cmd;
	const char *l;

	l = "MAIL FROM:<a@b> SIZE=26214400 BODY=8BITMIME";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), &cmd), 0);
	ck_assert(cmd.has_size);
	ck_assert_uint_eq(cmd.size, 26214400);
	ck_assert_int_eq(cmd.body, SMTP_BODY_8BITMIME);
	ck_assert(!cmd.eightbit);

	l = "MAIL FROM:<a@b>";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), &cmd), 0);
	ck_assert(!cmd.has_size);
	ck_assert_int_eq(cmd.body, SMTP_BODY_NONE);

	/* Absurd sizes saturate so the caller refuses them as too big. */
	l = "MAIL FROM:<a@b> SIZE=999999999999999999999999999";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), &cmd), 0);
	ck_assert_uint_eq(cmd.size, UINT64_MAX);

	l = "MAIL FROM:<j\xc3\xb6rg@b.example>";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), &cmd), 0);
	ck_assert(cmd.eightbit);
	l = "RCPT TO:<x@b\xc3\xbc.example>";
	ck_assert_int_eq(smtp_parse_command(l, strlen(l), &cmd), 0);
	ck_assert(cmd.eightbit);
}
END_TEST

START_TEST(test_line_length)
{
	struct smtp_cmd cmd;
	char line[2 * SMTP_LINE_MAX];
	size_t n;

	/* 510 octets + CRLF = 512: the longest line RFC 5321 allows. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	n = SMTP_LINE_MAX - 2;
	ck_assert_int_eq(smtp_parse_command(line, n, &cmd), 0);
	ck_assert_uint_eq(strlen(cmd.arg), n - 5);
	ck_assert_int_eq(smtp_parse_command(line, n + 1, &cmd), -1);
	ck_assert_str_eq(cmd.reply, "500 5.5.2 Line too long");
	ck_assert_int_eq(smtp_parse_command(line, sizeof(line), &cmd), -1);
	ck_assert_str_eq(cmd.reply, SMTP_REPLY_TOO_LONG);

	/* A NUL inside a line is refused, not truncated at. */
	ck_assert_int_eq(smtp_parse_command("NOOP\0x", 6, &cmd), -1);
	ck_assert_str_eq(cmd.reply, "500 5.5.2 Error: bad syntax");
	ck_assert_int_eq(smtp_parse_command("QUIT\0", 5, &cmd), -1);
}
END_TEST

/* ---------------------------------------------------------------- DATA */

struct data_case {
	const char *name;
	const char *in;
	size_t inlen; /* 0: strlen(in) */
	size_t max;   /* 0: 1 MB */
	enum smtp_data_status status;
	const char *out; /* the stored message, when DONE */
	size_t consumed; /* 0: the whole input */
};

#define MSG "Subject: t\r\n\r\nbody\r\n"

static const struct data_case data_cases[] = {
    {"normal", MSG ".\r\n", 0, 0, SMTP_DATA_DONE, MSG, 0},
    {"empty", ".\r\n", 0, 0, SMTP_DATA_DONE, "", 0},
    {"no final newline yet", MSG, 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"dot not yet confirmed", MSG ".\r", 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"dot-stuffed", "a\r\n..b\r\n..\r\n...\r\n.\r\n", 0, 0, SMTP_DATA_DONE,
        "a\r\n.b\r\n.\r\n..\r\n", 0},
    {"stuffed first line", "..x\r\n.\r\n", 0, 0, SMTP_DATA_DONE, ".x\r\n", 0},
    {"unstuffed dot line", "a\r\n.x\r\n.\r\n", 0, 0, SMTP_DATA_DONE,
        "a\r\nx\r\n", 0},
    {"dot inside a line", "a.b\r\n x.\r\n.\r\n", 0, 0, SMTP_DATA_DONE,
        "a.b\r\n x.\r\n", 0},
    {"pipelined after dot", MSG ".\r\nQUIT\r\n", 0, 0, SMTP_DATA_DONE, MSG,
        sizeof(MSG ".\r\n") - 1},
    {"pipelined mail after dot", ".\r\nMAIL FROM:<>\r\n.\r\n", 0, 0,
        SMTP_DATA_DONE, "", 3},
    /* Smuggling: none of these ends the message. */
    {"LF.LF", "a\n.\nMAIL FROM:<x@y>\r\n.\r\n", 0, 0, SMTP_DATA_DONE,
        "a\r\n.\r\nMAIL FROM:<x@y>\r\n", 0},
    {"CRLF.LF", "a\r\n.\nb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n",
        0},
    {"LF.CRLF", "a\n.\r\nb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n",
        0},
    {"CR.LF", "a\r.\nb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n", 0},
    {"CR.CR", "a\r.\rb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n", 0},
    {"CR.CRLF", "a\r.\r\nb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n",
        0},
    {"CRLF.CR", "a\r\n.\rb\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n.\r\nb\r\n",
        0},
    {"LF.LF never ends", "a\n.\n", 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"LF.CRLF never ends", "a\n.\r\n", 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"CR.LF never ends", "a\r.\n", 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"CRLF.LF never ends", "a\r\n.\n", 0, 0, SMTP_DATA_MORE, NULL, 0},
    {"first line .LF", ".\nx\r\n.\r\n", 0, 0, SMTP_DATA_DONE, ".\r\nx\r\n", 0},
    /* Bare newlines become CRLF; a line after one is still unstuffed. */
    {"bare LF", "a\nb\n\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\nb\r\n\r\n", 0},
    {"bare CR", "a\rb\r\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\nb\r\n\r\n", 0},
    {"stuffed after bare LF", "a\n..b\r\n.\r\n", 0, 0, SMTP_DATA_DONE,
        "a\r\n.b\r\n", 0},
    {"CRCRLF.CRLF", "a\r\r\n.\r\n", 0, 0, SMTP_DATA_DONE, "a\r\n\r\n", 0},
    /* 8-bit and NUL octets pass through. */
    {"binary", "\xff\x00\x80z\r\n.\r\n", 9, 0, SMTP_DATA_DONE,
        "\xff\x00\x80z\r\n", 0},
    /* Size: the limit is on the stored message. */
    {"exactly max", "0123456\r\n.\r\n", 0, 9, SMTP_DATA_DONE, "0123456\r\n", 0},
    {"one over max", "01234567\r\n.\r\n", 0, 9, SMTP_DATA_TOOBIG, NULL, 0},
    {"over max, pipelined", "01234567\r\n.\r\nQUIT\r\n", 0, 9, SMTP_DATA_TOOBIG,
        NULL, 13},
    {"over max, not ended", "0123456789\r\n", 0, 5, SMTP_DATA_MORE, NULL, 0},
    {"over max, smuggled end", "0123456789\n.\nQUIT\r\n.\r\nRSET\r\n", 0, 5,
        SMTP_DATA_TOOBIG, NULL, 22},
};

/* Feed in split at the given cut points; check the outcome. */
static void
feed_split(const struct data_case *c, size_t inlen, const size_t *cuts,
    int ncuts, const char *how)
{
	struct smtp_data d;
	enum smtp_data_status st = SMTP_DATA_MORE;
	size_t pos = 0, total = 0, want, n, outlen;
	char *out;
	int k;

	smtp_data_init(&d, c->max ? c->max : 1024 * 1024);
	for (k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : inlen;

		if (end < pos)
			continue;
		n = smtp_data_feed(&d, c->in + pos, end - pos, &st);
		total += n;
		if (st != SMTP_DATA_MORE) {
			/* Past the end nothing more is taken. */
			ck_assert_uint_eq(smtp_data_feed(&d, c->in + pos + n,
			                      inlen - pos - n, &st),
			    0);
			break;
		}
		ck_assert_msg(n == end - pos,
		    "%s %s: consumed %zu of %zu "
		    "while not done",
		    c->name, how, n, end - pos);
		pos = end;
	}
	ck_assert_msg(st == c->status, "%s %s: status %d, want %d", c->name,
	    how, st, c->status);
	want = c->consumed ? c->consumed : inlen;
	ck_assert_msg(total == want, "%s %s: consumed %zu, want %zu", c->name,
	    how, total, want);
	if (st == SMTP_DATA_DONE) {
		out = smtp_data_take(&d, &outlen);
		ck_assert_ptr_nonnull(out);
		if (c->inlen == 0) {
			ck_assert_uint_eq(outlen, strlen(c->out));
			ck_assert_msg(memcmp(out, c->out, outlen) == 0,
			    "%s %s: wrong message", c->name, how);
		} else {
			/* The binary case holds a NUL: expected = input
			 * minus the final ".\r\n". */
			ck_assert_uint_eq(outlen, c->inlen - 3);
			ck_assert(memcmp(out, c->in, outlen) == 0);
		}
		ck_assert_uint_eq(d.size, outlen);
		free(out);
	} else if (st == SMTP_DATA_TOOBIG) {
		ck_assert(d.overflow);
		out = smtp_data_take(&d, &outlen);
		ck_assert_ptr_null(out);
		ck_assert_uint_eq(outlen, 0);
	}
	smtp_data_release(&d);
}

START_TEST(test_data_chunkings)
{
	const struct data_case *c = &data_cases[_i];
	size_t inlen = c->inlen ? c->inlen : strlen(c->in);
	size_t cuts[3], i, j;
	size_t *all;
	char how[64];

	feed_split(c, inlen, NULL, 0, "whole");

	all = malloc(inlen * sizeof(*all));
	ck_assert_ptr_nonnull(all);
	for (i = 0; i < inlen; i++)
		all[i] = i + 1;
	feed_split(c, inlen, all, (int)inlen, "byte by byte");
	free(all);

	for (i = 0; i <= inlen; i++) {
		cuts[0] = i;
		snprintf(how, sizeof(how), "split at %zu", i);
		feed_split(c, inlen, cuts, 1, how);
	}
	if (inlen > 40)
		return;
	for (i = 0; i <= inlen; i++)
		for (j = i; j <= inlen; j++) {
			cuts[0] = i;
			cuts[1] = j;
			snprintf(how, sizeof(how), "split at %zu,%zu", i, j);
			feed_split(c, inlen, cuts, 2, how);
		}
}
END_TEST

/* A long message in random-sized chunks, with every line dot-stuffed the
 * way a client must, comes back exactly. */
START_TEST(test_data_roundtrip)
{
	struct smtp_data d;
	enum smtp_data_status st;
	char *wire, *orig, *out;
	size_t wlen = 0, olen = 0, pos = 0, n, outlen;
	unsigned seed = 12345;
	int line, k;

	orig = malloc(200000);
	wire = malloc(400000);
	ck_assert(orig != NULL && wire != NULL);
	for (line = 0; line < 3000; line++) {
		int len = (int)(rand_r(&seed) % 60);

		if (line % 7 == 0)
			orig[olen++] = '.';
		for (k = 0; k < len; k++)
			orig[olen++] = (char)('!' + rand_r(&seed) % 90);
		orig[olen++] = '\r';
		orig[olen++] = '\n';
	}
	/* Stuff: a '.' at a line start is doubled. */
	for (k = 0; (size_t)k < olen; k++) {
		if (orig[k] == '.' && (k == 0 || orig[k - 1] == '\n'))
			wire[wlen++] = '.';
		wire[wlen++] = orig[k];
	}
	memcpy(wire + wlen, ".\r\nQUIT\r\n", 9);
	wlen += 9;

	smtp_data_init(&d, 1024 * 1024);
	st = SMTP_DATA_MORE;
	while (st == SMTP_DATA_MORE && pos < wlen) {
		size_t chunk = 1 + rand_r(&seed) % 3000;

		if (chunk > wlen - pos)
			chunk = wlen - pos;
		n = smtp_data_feed(&d, wire + pos, chunk, &st);
		pos += n;
	}
	ck_assert_int_eq(st, SMTP_DATA_DONE);
	ck_assert_uint_eq(wlen - pos, 6);
	ck_assert(memcmp(wire + pos, "QUIT\r\n", 6) == 0);
	out = smtp_data_take(&d, &outlen);
	ck_assert_uint_eq(outlen, olen);
	ck_assert(memcmp(out, orig, olen) == 0);
	free(out);
	smtp_data_release(&d);
	free(orig);
	free(wire);
}
END_TEST

START_TEST(test_data_release)
{
	struct smtp_data d;
	enum smtp_data_status st;

	/* A client gone mid-DATA: release frees what was gathered. */
	smtp_data_init(&d, 100);
	ck_assert_uint_eq(smtp_data_feed(&d, "abc\r\n", 5, &st), 5);
	ck_assert_int_eq(st, SMTP_DATA_MORE);
	ck_assert_uint_eq(d.size, 5);
	smtp_data_release(&d);
	smtp_data_release(&d);
	ck_assert_ptr_null(d.buf);
}
END_TEST

static Suite *
smtp_parse_suite(void)
{
	Suite *s = suite_create("smtp_parse");
	TCase *tc;

	tc = tcase_create("commands");
	tcase_add_loop_test(tc, test_commands, 0,
	    (int)(sizeof(cmd_cases) / sizeof(cmd_cases[0])));
	tcase_add_test(tc, test_mail_params);
	tcase_add_test(tc, test_line_length);
	suite_add_tcase(s, tc);

	tc = tcase_create("data");
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_data_chunkings, 0,
	    (int)(sizeof(data_cases) / sizeof(data_cases[0])));
	tcase_add_test(tc, test_data_roundtrip);
	tcase_add_test(tc, test_data_release);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(smtp_parse_suite());
}
