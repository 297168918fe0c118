/*
 * scratch: temporary directories for the unit tests.
 *
 * scratch_make() creates a fresh directory (mkdtemp) from a template such
 * as "/tmp/check_spool.XXXXXX" or "BASE/t.XXXXXX" and aborts the test
 * program if it cannot; scratch_remove() deletes a directory tree and
 * empties dir so that a second call does nothing.
 *
 * unit_run() runs a Check suite and gives main() its exit status.
 */
#ifndef ARNIE_SCRATCH_H
#define ARNIE_SCRATCH_H

#include <stddef.h>

void scratch_make(char *dir, size_t len, const char *template);
void scratch_remove(char *dir);

struct Suite;
int unit_run(struct Suite *suite);

#endif
