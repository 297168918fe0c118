/*
 * scratch: see scratch.h.
 */
#include "autoconf.h"

#include "scratch.h"

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

void
scratch_make(char *dir, size_t len, const char *template)
{
	int n = snprintf(dir, len, "%s", template);

	if (n < 0 || (size_t)n >= len || mkdtemp(dir) == NULL) {
		perror(template);
		abort();
	}
}

void
scratch_remove(char *dir)
{
	if (dir[0] != '\0')
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	dir[0] = '\0';
}

int
unit_run(Suite *suite)
{
	SRunner *sr = srunner_create(suite);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
