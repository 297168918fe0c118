/*
 * Unit tests for alert: when ALERT_COMMAND is called, and that each alert
 * is followed by its clearing one, once.
 */
#include "autoconf.h"

#include "alert.h"
#include "scratch.h"

#include <check.h>

#define T0 ((time_t)1764662400)

START_TEST(test_pause_after_a_while)
{
	struct alert_state a;

	alert_init(&a, 300, 0);
	alert_pause(&a, T0, "unreachable", "cannot connect");
	ck_assert_int_eq(alert_pause_due(&a), T0 + 300);
	ck_assert_int_eq(alert_check(&a, T0 + 299, 0), ALERT_NONE);
	alert_pause(&a, T0 + 100, "unreachable", "still not");
	ck_assert_int_eq(alert_check(&a, T0 + 300, 0), ALERT_PAUSED);
	ck_assert_str_eq(a.text, "still not");
	ck_assert_int_eq(alert_check(&a, T0 + 900, 0), ALERT_NONE);
	ck_assert_int_eq(alert_pause_due(&a), 0);
	ck_assert_int_eq(alert_resume(&a), ALERT_RECOVERED);
	ck_assert_int_eq(alert_resume(&a), ALERT_NONE);
	/* A short pause says nothing, neither start nor end. */
	alert_pause(&a, T0 + 1000, "throttled", "454 Throttling");
	ck_assert_int_eq(alert_check(&a, T0 + 1010, 0), ALERT_NONE);
	ck_assert_int_eq(alert_resume(&a), ALERT_NONE);
}
END_TEST

START_TEST(test_auth_and_tls_at_once)
{
	struct alert_state a;

	alert_init(&a, 300, 0);
	alert_pause(&a, T0, "auth", "AUTH refused: 535 5.7.8");
	ck_assert_int_eq(alert_check(&a, T0, 0), ALERT_PAUSED);
	ck_assert_int_eq(alert_resume(&a), ALERT_RECOVERED);
	alert_pause(&a, T0 + 50, "tls", "TLS with x failed");
	ck_assert_int_eq(alert_check(&a, T0 + 50, 0), ALERT_PAUSED);
}
END_TEST

START_TEST(test_queue_age)
{
	struct alert_state a;

	alert_init(&a, 300, 3600);
	ck_assert_int_eq(alert_check(&a, T0 + 3600, T0), ALERT_NONE);
	ck_assert_int_eq(alert_check(&a, T0 + 3601, T0), ALERT_QUEUE_AGE);
	ck_assert_int_eq(alert_check(&a, T0 + 4000, T0), ALERT_NONE);
	/* Not looked at: nothing said either way. */
	ck_assert_int_eq(alert_check(&a, T0 + 4100, -1), ALERT_NONE);
	ck_assert_int_eq(
	    alert_check(&a, T0 + 4200, 0), ALERT_QUEUE_AGE_CLEARED);
	ck_assert_int_eq(alert_check(&a, T0 + 4300, 0), ALERT_NONE);
	alert_init(&a, 300, 0);
	ck_assert_int_eq(alert_check(&a, T0 + 99999, T0), ALERT_NONE);
}
END_TEST

static Suite *
alert_suite(void)
{
	Suite *s = suite_create("alert");
	TCase *tc = tcase_create("alert");

	tcase_add_test(tc, test_pause_after_a_while);
	tcase_add_test(tc, test_auth_and_tls_at_once);
	tcase_add_test(tc, test_queue_age);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(alert_suite());
}
