/*
 * Unit tests for logjson: the log lines the daemons write, as the JSON
 * objects ARNIE_LOG_FORMAT=json makes of them, byte for byte, and what a
 * line too long for the buffer keeps.
 */
#include "autoconf.h"

#include <check.h>
#include <string.h>
#include <syslog.h>

#include "logjson.h"
#include "scratch.h"

#define HEAD "{\"time\":\"2026-12-02T06:30:00.123Z\",\"level\":\"info\"," \
             "\"program\":\"arnie\",\"pid\":42"

static const struct {
	const char *text;
	const char *want;
} lines[] = {
    /* A delivery: every field, the reply out of its parentheses. */
    {"0193A4B5C6D7E000020: to=<a@example.org>, relay=127.0.0.1:587, "
     "delay=0.21, attempts=1, status=sent (250 2.0.0 Ok: queued as X1)",
        HEAD ",\"id\":\"0193A4B5C6D7E000020\",\"text\":\"to=<a@example.org>,"
             " relay=127.0.0.1:587, delay=0.21, attempts=1, status=sent "
             "(250 2.0.0 Ok: queued as X1)\",\"event\":\"delivery\","
             "\"to\":\"a@example.org\",\"relay\":\"127.0.0.1:587\","
             "\"delay\":0.21,\"attempts\":1,\"status\":\"sent\","
             "\"reply\":\"250 2.0.0 Ok: queued as X1\"}\n"},
    /* Accepted by the listener. */
    {"0193A4B5C6D7E000020: from=<>, size=1234, nrcpt=2, "
     "client=127.0.0.1",
        HEAD ",\"id\":\"0193A4B5C6D7E000020\",\"text\":\"from=<>, "
             "size=1234, nrcpt=2, client=127.0.0.1\",\"event\":\"queued\","
             "\"from\":\"\",\"size\":1234,\"nrcpt\":2,"
             "\"client\":\"127.0.0.1\"}\n"},
    /* Words before the fields are the event; a leading zero keeps a
     * value a string, a quoted one loses its quotes. */
    {"0193A4B5C6D7E000020: milter queue_id=0A1 client=\"a b\" nrcpt=2 "
     "(divert)",
        HEAD ",\"id\":\"0193A4B5C6D7E000020\",\"text\":\"milter "
             "queue_id=0A1 client=\\\"a b\\\" nrcpt=2 (divert)\","
             "\"event\":\"milter\",\"queue_id\":\"0A1\","
             "\"client\":\"a b\",\"nrcpt\":2}\n"},
    {"0193A4B5C6D7E000020: removed",
        HEAD ",\"id\":\"0193A4B5C6D7E000020\",\"text\":\"removed\","
             "\"event\":\"removed\"}\n"},
    /* No ID; a repeated key keeps its first value. */
    {"relay 127.0.0.1:25: x=1, x=2",
        HEAD ",\"text\":\"relay 127.0.0.1:25: x=1, x=2\","
             "\"event\":\"relay 127.0.0.1:25:\",\"x\":1}\n"},
    /* Escapes, control characters, and bytes that are not UTF-8; valid
     * UTF-8 passes as is. */
    {"say \"hi\" \\ \x01\t\xff\xc3\xa9",
        HEAD ",\"text\":\"say \\\"hi\\\" \\\\ \\u0001\\u0009\\ufffd\xc3\xa9\","
             "\"event\":\"say \\\"hi\\\" \\\\ \\u0001\\u0009\\ufffd\xc3\xa9\"}\n"},
    {"", HEAD ",\"text\":\"\",\"event\":\"message\"}\n"},
    /* A text cannot set the object's own keys. */
    {"0193A4B5C6D7E000020: to=<a@b> level=emerg id=X text=y reply=z",
        HEAD ",\"id\":\"0193A4B5C6D7E000020\",\"text\":\"to=<a@b> "
             "level=emerg id=X text=y reply=z\",\"event\":\"message\","
             "\"to\":\"a@b\"}\n"},
};

START_TEST(test_line)
{
	char out[4096];
	size_t n;

	n = logjson_format(out, sizeof(out), "2026-12-02T06:30:00.123Z",
	    LOG_INFO, "arnie", 42, lines[_i].text);
	ck_assert_str_eq(out, lines[_i].want);
	ck_assert_uint_eq(n, strlen(lines[_i].want));
}
END_TEST

static void
assert_ends_with(const char *s, const char *end)
{
	size_t n = strlen(s), k = strlen(end);

	ck_assert_msg(n >= k && strcmp(s + n - k, end) == 0,
	    "'%s' does not end with '%s'", s, end);
}

/* Too long for the buffer: the fields go first, then the end of the
 * text, and the object stays whole. */
START_TEST(test_long_line_keeps_text_then_cuts_it)
{
	char text[512], out[1024], escapes[61];
	size_t n;

	snprintf(text, sizeof(text),
	    "0193A4B5C6D7E000020: to=<%0100d@example.org>, status=sent "
	    "(250 ok)",
	    0);
	n = logjson_format(out, sizeof(out), "2026-12-02T06:30:00.123Z",
	    LOG_INFO, "arnie", 42, text);
	ck_assert_uint_eq(n, 426);
	assert_ends_with(out, "\"reply\":\"250 ok\"}\n");
	/* Room for the text and the event, not for the address. */
	n = logjson_format(out, 300, "2026-12-02T06:30:00.123Z", LOG_INFO,
	    "arnie", 42, text);
	ck_assert_uint_eq(n, 273);
	assert_ends_with(out, "(250 ok)\",\"event\":\"delivery\"}\n");
	/* Room for the start of the text only. */
	snprintf(text, sizeof(text), "to=<%0200d@example.org>", 0);
	n = logjson_format(out, LOGJSON_MIN_OUT, "2026-12-02T06:30:00.123Z",
	    LOG_INFO, "arnie", 42, text);
	ck_assert_uint_eq(n, LOGJSON_MIN_OUT - 1);
	ck_assert_ptr_nonnull(strstr(out, ",\"text\":\"to=<0000"));
	assert_ends_with(out, "0000\"}\n");
	/* An escape is never cut in half. */
	memset(escapes, 1, 60);
	escapes[60] = '\0';
	n = logjson_format(out, LOGJSON_MIN_OUT, "2026-12-02T06:30:00.123Z",
	    LOG_INFO, "arnie", 42, escapes);
	ck_assert_uint_eq(n, 250);
	assert_ends_with(out, "\\u0001\"}\n");
	/* Below the minimum: nothing. */
	ck_assert_uint_eq(logjson_format(out, LOGJSON_MIN_OUT - 1, "t",
	                      LOG_INFO, "arnie", 42, "x"),
	    0);
	ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(test_levels)
{
	char out[512];

	logjson_format(out, sizeof(out), "t", LOG_WARNING, "arnie-milter", 7,
	    "x");
	ck_assert_ptr_nonnull(strstr(out, "\"level\":\"warning\""));
	ck_assert_ptr_nonnull(strstr(out, "\"program\":\"arnie-milter\""));
	logjson_format(out, sizeof(out), "t", LOG_DEBUG, "arnie", 7, "x");
	ck_assert_ptr_nonnull(strstr(out, "\"level\":\"debug\""));
	/* A program name is written plain. */
	logjson_format(out, sizeof(out), "t", LOG_INFO, "a \"b\\\x01", 7, "x");
	ck_assert_ptr_nonnull(strstr(out, "\"program\":\"a??b??\""));
}
END_TEST

static Suite *
logjson_suite(void)
{
	Suite *s = suite_create("logjson");
	TCase *tc = tcase_create("logjson");

	tcase_add_loop_test(tc, test_line, 0, sizeof(lines) / sizeof(lines[0]));
	tcase_add_test(tc, test_long_line_keeps_text_then_cuts_it);
	tcase_add_test(tc, test_levels);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(logjson_suite());
}
