/*
 * check_secret: unit tests for shared/secret.c.  The properties a core
 * dump depends on are read back from the kernel: the secret's pages carry
 * the "dd" (do not dump) flag in /proc/self/smaps, and are gone after
 * secret_free(); a wiped environment value is overwritten in place.
 */
#include "autoconf.h"
#include "scratch.h"

#include "secret.h"

#include <check.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The VmFlags line of the mapping holding addr, or "" when unmapped. */
static void
vmflags_of(const void *addr, char *flags, size_t len)
{
	uintptr_t a = (uintptr_t)addr, lo, hi;
	char line[512];
	bool inside = false;
	FILE *fp = fopen("/proc/self/smaps", "r");

	flags[0] = '\0';
	ck_assert_ptr_nonnull(fp);
	while (fgets(line, sizeof(line), fp) != NULL) {
		/* "lo-hi perms ..." starts a mapping; "Key: value" lines
		 * never parse as two hex numbers around a '-'. */
		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR, &lo, &hi) == 2) {
			inside = lo <= a && a < hi;
			continue;
		}
		if (inside && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, len, "%s", line + 8);
			break;
		}
	}
	fclose(fp);
}

START_TEST(test_pages_not_dumped)
{
	char flags[256];
	char *s = secret_strdup("S3cr3t-Pa55w0rd");

	ck_assert_str_eq(s, "S3cr3t-Pa55w0rd");
	vmflags_of(s, flags, sizeof(flags));
	ck_assert_msg(strstr(flags, " dd") != NULL, "VmFlags:%s", flags);
	secret_free(s);
	vmflags_of(s, flags, sizeof(flags));
	ck_assert_str_eq(flags, "");
	secret_free(NULL);
}
END_TEST

START_TEST(test_strndup)
{
	char *s = secret_strndup("abcdef", 3);

	ck_assert_str_eq(s, "abc");
	secret_free(s);
	s = secret_strndup("ab\0cd", 5);
	ck_assert_str_eq(s, "ab");
	secret_free(s);
	s = secret_strdup("");
	ck_assert_str_eq(s, "");
	secret_free(s);
}
END_TEST

START_TEST(test_wipe_env)
{
	char *value;
	size_t i, n;

	ck_assert_int_eq(setenv("ARNIE_TEST_SECRET", "hunter2-hunter2", 1), 0);
	value = getenv("ARNIE_TEST_SECRET");
	ck_assert_ptr_nonnull(value);
	n = strlen(value);
	secret_wipe_env("ARNIE_TEST_SECRET");
	ck_assert_ptr_null(getenv("ARNIE_TEST_SECRET"));
	/* The old string, which glibc does not free, holds no trace. */
	for (i = 0; i < n; i++)
		ck_assert_int_eq(value[i], 0);
	secret_wipe_env("ARNIE_TEST_NOT_SET");
}
END_TEST

static Suite *
secret_suite(void)
{
	Suite *s = suite_create("secret");
	TCase *tc = tcase_create("secret");

	tcase_add_test(tc, test_pages_not_dumped);
	tcase_add_test(tc, test_strndup);
	tcase_add_test(tc, test_wipe_env);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	return unit_run(secret_suite());
}
