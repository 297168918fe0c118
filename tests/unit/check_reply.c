/*
 * check_reply: the table of what each upstream reply means (shared/reply.c),
 * one row per case the relay handles.
 */
#include "autoconf.h"
#include "scratch.h"

#include "reply.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	int code;
	const char *text;
	enum reply_stage stage;
	enum reply_class want;
} cases[] = {
    /* Success, at every stage. */
    {250, "2.1.0 OK", REPLY_AT_MAIL, REPLY_OK},
    {250, "2.1.5 OK", REPLY_AT_RCPT, REPLY_OK},
    {251, "2.1.5 will forward", REPLY_AT_RCPT, REPLY_OK},
    {354, "go ahead", REPLY_AT_DATA, REPLY_OK},
    {250, "2.0.0 Ok: queued as 4XkT2b", REPLY_AT_END, REPLY_OK},
    {220, "mx ESMTP", REPLY_AT_SESSION, REPLY_OK},
    /* The recipient's or the message's own trouble. */
    {451, "4.3.0 try later", REPLY_AT_RCPT, REPLY_TEMP},
    {450, "4.2.0 mailbox busy", REPLY_AT_RCPT, REPLY_TEMP},
    {452, "4.5.3 Too many recipients", REPLY_AT_RCPT, REPLY_TEMP},
    {451, "4.3.0 try later", REPLY_AT_END, REPLY_TEMP},
    {450, "4.7.1 greylisted", REPLY_AT_MAIL, REPLY_TEMP},
    {550, "5.1.1 no such user", REPLY_AT_RCPT, REPLY_PERM},
    {553, "5.1.3 bad address", REPLY_AT_RCPT, REPLY_PERM},
    {554, "5.7.1 rejected", REPLY_AT_END, REPLY_PERM},
    {552, "5.3.4 too big", REPLY_AT_END, REPLY_PERM},
    {554, "5.5.1 no valid recipients", REPLY_AT_DATA, REPLY_PERM},
    {550, "5.7.1 sender not verified", REPLY_AT_MAIL, REPLY_PERM},
    /* The upstream's state, or ours with it: queue-wide. */
    {421, "4.3.2 closing", REPLY_AT_RCPT, REPLY_TEMP_QUEUE},
    {421, "4.3.2 closing", REPLY_AT_END, REPLY_TEMP_QUEUE},
    {454, "Throttling failure: Maximum sending rate exceeded.", REPLY_AT_END,
        REPLY_TEMP_QUEUE},
    {454, "Throttling failure: Daily message quota exceeded.", REPLY_AT_MAIL,
        REPLY_TEMP_QUEUE},
    {454, "4.7.0 TLS not available", REPLY_AT_SESSION, REPLY_TEMP_QUEUE},
    {530, "5.7.0 Authentication required", REPLY_AT_MAIL, REPLY_TEMP_QUEUE},
    {534, "5.7.9 mechanism too weak", REPLY_AT_SESSION, REPLY_TEMP_QUEUE},
    {535, "5.7.8 credentials invalid", REPLY_AT_SESSION, REPLY_TEMP_QUEUE},
    {535, "5.7.8 credentials invalid", REPLY_AT_RCPT, REPLY_TEMP_QUEUE},
    {538, "5.7.11 encryption required", REPLY_AT_MAIL, REPLY_TEMP_QUEUE},
    {554, "no SMTP service here", REPLY_AT_SESSION, REPLY_TEMP_QUEUE},
    {550, "5.7.1 go away", REPLY_AT_SESSION, REPLY_TEMP_QUEUE},
    /* Not replies at all. */
    {2500, "ok", REPLY_AT_RCPT, REPLY_MALFORMED},
    {25, "ok", REPLY_AT_RCPT, REPLY_MALFORMED},
    {199, "hm", REPLY_AT_MAIL, REPLY_MALFORMED},
    {600, "hm", REPLY_AT_END, REPLY_MALFORMED},
    {354, "go ahead", REPLY_AT_RCPT, REPLY_MALFORMED},
    {334, "VXNlcm5hbWU6", REPLY_AT_END, REPLY_MALFORMED},
    {0, NULL, REPLY_AT_END, REPLY_NONE},
    {0, NULL, REPLY_AT_RCPT, REPLY_NONE},
};

START_TEST(test_classify)
{
	enum reply_class got =
	    reply_classify(cases[_i].code, cases[_i].text, cases[_i].stage);

	ck_assert_msg(got == cases[_i].want, "%d %s at stage %d: %s, not %s",
	    cases[_i].code, cases[_i].text ? cases[_i].text : "(none)",
	    (int)cases[_i].stage, reply_class_name(got),
	    reply_class_name(cases[_i].want));
}
END_TEST

START_TEST(test_queue_wide)
{
	ck_assert(!reply_is_queue_wide(REPLY_OK));
	ck_assert(!reply_is_queue_wide(REPLY_TEMP));
	ck_assert(!reply_is_queue_wide(REPLY_PERM));
	ck_assert(!reply_is_queue_wide(REPLY_NONE));
	ck_assert(reply_is_queue_wide(REPLY_TEMP_QUEUE));
	ck_assert(reply_is_queue_wide(REPLY_MALFORMED));
}
END_TEST

static const struct {
	const char *line;
	int ok;
} lines[] = {
    {"250 ok", 1},
    {"250-PIPELINING", 1},
    {"250", 1},
    {"354 go", 1},
    {"550 5.1.1 no", 1},
    {"2500 ok", 0},
    {"25 ok", 0},
    {"250ok", 0},
    {"199 x", 0},
    {"600 x", 0},
    {"abc", 0},
    {"", 0},
    {"2a0 x", 0},
    {"25", 0},
};

START_TEST(test_line_ok)
{
	ck_assert_msg(reply_line_ok(lines[_i].line, strlen(lines[_i].line)) ==
	                  (bool)lines[_i].ok,
	    "\"%s\"", lines[_i].line);
}
END_TEST

static const struct {
	const char *reply;
	const char *id; /* "": none */
} queued[] = {
    {"250 2.0.0 Ok: queued as 4XkT2b3MzQz1", "4XkT2b3MzQz1"},
    {"250 Ok: queued as ABC123", "ABC123"},
    {"250 Ok 0100018c1d2e3f4a-5b6c7d8e-0000-000000",
        "0100018c1d2e3f4a-5b6c7d8e-0000-000000"},
    {"250 2.0.0 OK 1733130000 d2e3f4a5b6c7", ""},
    {"250 2.0.0 Ok 0100018c1d2e3f4a", "0100018c1d2e3f4a"},
    {"250 Ok", ""},
    {"250 Ok short", ""},
    {"250 2.0.0 Message accepted for delivery", ""},
    {"451 4.3.0 queued as NOT", ""},
    {"250-first line\r\n250 2.0.0 queued as X1; done", "X1"},
    {"", ""},
};

START_TEST(test_queued_as)
{
	char out[64];
	bool got = reply_queued_as(queued[_i].reply, out, sizeof(out));

	ck_assert_msg(
	    got == (queued[_i].id[0] != '\0'), "%s", queued[_i].reply);
	ck_assert_str_eq(out, queued[_i].id);
}
END_TEST

static const struct {
	const char *reason;
	const char *kind;
} kinds[] = {
    {"TLS with smtp.example:587 failed: certificate verify failed", "tls"},
    {"upstream does not offer STARTTLS", "tls"},
    {"AUTH refused: 535 5.7.8 Authentication credentials invalid", "auth"},
    {"upstream refused the session: 530 5.7.0 Authentication required", "auth"},
    {"cannot connect to 127.0.0.1:25: Connection refused", "unreachable"},
    {"connection to h:587 broke off: closed by the upstream or no reply "
     "within 60 s",
        "unreachable"},
    {"454 4.7.0 Throttling failure: Maximum sending rate exceeded.",
        "throttled"},
    {"451 4.7.1 Sending rate exceeded", "throttled"},
    {"451 4.3.0 Cannot generate a reply, try again", "refused"},
    {"AUTH refused: 454 4.7.0 Temporary authentication failure", "auth"},
    {"421 4.3.2 Service not available", "refused"},
    {"upstream refused the session: 554 5.7.1 Go away", "refused"},
    {"relay protocol error: garbled record", "other"},
    {"upstream lacks a required SMTP extension", "other"},
};

START_TEST(test_trouble_kind)
{
	ck_assert_str_eq(reply_trouble_kind(kinds[_i].reason), kinds[_i].kind);
}
END_TEST

static Suite *
reply_suite(void)
{
	Suite *s = suite_create("reply");
	TCase *tc = tcase_create("reply");

	tcase_add_loop_test(
	    tc, test_classify, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_test(tc, test_queue_wide);
	tcase_add_loop_test(
	    tc, test_line_ok, 0, sizeof(lines) / sizeof(lines[0]));
	tcase_add_loop_test(
	    tc, test_queued_as, 0, sizeof(queued) / sizeof(queued[0]));
	tcase_add_loop_test(
	    tc, test_trouble_kind, 0, sizeof(kinds) / sizeof(kinds[0]));
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(reply_suite());
}
