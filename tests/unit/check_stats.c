/*
 * Unit tests for stats: counting per minute over the last hour, and the
 * sender.status text read back as it was written.
 */
#include "autoconf.h"

#include "scratch.h"
#include "stats.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define T0 ((time_t)1764662400) /* a minute's start */

START_TEST(test_last_hour)
{
	struct stats st;

	memset(&st, 0, sizeof(st));
	stats_count(&st, STATS_SENT, T0);
	stats_count(&st, STATS_SENT, T0 + 59);
	stats_count(&st, STATS_DEFERRED, T0 + 61);
	stats_count(&st, STATS_FAILED, T0 + 3599);
	ck_assert_uint_eq(stats_last_hour(&st, STATS_SENT, T0 + 3599), 2);
	ck_assert_uint_eq(stats_last_hour(&st, STATS_DEFERRED, T0 + 3599), 1);
	ck_assert_uint_eq(stats_last_hour(&st, STATS_FAILED, T0 + 3599), 1);
	/* An hour after the first minute began, it no longer counts. */
	ck_assert_uint_eq(stats_last_hour(&st, STATS_SENT, T0 + 3600), 0);
	ck_assert_uint_eq(stats_last_hour(&st, STATS_DEFERRED, T0 + 3600), 1);
	/* Its slot is reused by the same minute an hour later. */
	stats_count(&st, STATS_SENT, T0 + 3600);
	ck_assert_uint_eq(stats_last_hour(&st, STATS_SENT, T0 + 3600), 1);
	ck_assert_uint_eq(st.total[STATS_SENT], 3);
	ck_assert_int_eq(st.last_delivery, T0 + 3600);
	/* Nothing for a day: nothing in the last hour, totals kept. */
	ck_assert_uint_eq(stats_last_hour(&st, STATS_SENT, T0 + 86400), 0);
}
END_TEST

START_TEST(test_roundtrip)
{
	struct stats st, back;
	char *text;

	memset(&st, 0, sizeof(st));
	stats_count(&st, STATS_SENT, T0);
	stats_count(&st, STATS_FAILED, T0 + 120);
	st.paused = true;
	st.paused_since = T0 + 100;
	st.next_probe = T0 + 160;
	snprintf(
	    st.reason, sizeof(st.reason), "454 4.7.0 Throttling\r\nfailure");
	text = stats_format(&st, 4711, T0 + 130);
	ck_assert_int_eq(stats_parse(text, &back), 0);
	ck_assert_int_eq(back.pid, 4711);
	ck_assert_int_eq(back.written, T0 + 130);
	ck_assert(back.paused);
	ck_assert_int_eq(back.paused_since, T0 + 100);
	ck_assert_int_eq(back.next_probe, T0 + 160);
	/* On one line: control characters became blanks. */
	ck_assert_str_eq(back.reason, "454 4.7.0 Throttling  failure");
	ck_assert_int_eq(back.last_delivery, T0);
	ck_assert_uint_eq(back.total[STATS_FAILED], 1);
	ck_assert_uint_eq(stats_last_hour(&back, STATS_SENT, T0 + 130), 1);
	ck_assert_uint_eq(stats_last_hour(&back, STATS_FAILED, T0 + 130), 1);
	free(text);
}
END_TEST

START_TEST(test_parse_refuses)
{
	static const char *const bad[] = {
	    "",
	    "arnie-status 2\npid: 1\n",
	    "arnie-status 1\nwhat: 1\n",
	    "arnie-status 1\nminute: x\n",
	};
	struct stats st;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		ck_assert_int_eq(stats_parse(bad[i], &st), -1);
		ck_assert_int_eq(errno, EBADMSG);
	}
}
END_TEST

static Suite *
stats_suite(void)
{
	Suite *s = suite_create("stats");
	TCase *tc = tcase_create("stats");

	tcase_add_test(tc, test_last_hour);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_parse_refuses);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(stats_suite());
}
