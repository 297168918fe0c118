/*
 * secret: where a password lives while the daemon runs.
 *
 * Generic layer.  A secret is copied into pages of its own that a core dump
 * leaves out (madvise MADV_DONTDUMP) and that are locked in memory when the
 * limits allow it (never written to swap); secret_free() wipes them before
 * giving them back.  So a crash, a kill -SEGV or gcore of a running daemon
 * writes none of the long-lived copies of the upstream password into a
 * core file, whether the kernel, systemd-coredump or gdb writes it.
 * Short-lived copies elsewhere must be wiped by whoever made them
 * (xfree_secret(), explicit_bzero(): the .env parser's); secret_wipe_env()
 * does it for the process environment.  The relay's session process, which
 * hands the password to libesmtp, writes no core file at all.
 *
 * Out of memory is a panic, as in xmalloc.  A failed madvise or mlock is
 * not an error: the copy still works, only less protected.
 */
#ifndef ARNIE_SECRET_H
#define ARNIE_SECRET_H

#include <stddef.h>

/* A NUL-terminated copy of s[0..n) (n octets, or up to a NUL before),
 * owned; release it with secret_free(). */
char *secret_strndup(const char *s, size_t n);
char *secret_strdup(const char *s);
/* Wipe and release a secret_*dup() copy; NULL is accepted. */
void secret_free(char *secret);

/*
 * Overwrite the value of the variable name in this process's environment
 * (the block /proc/PID/environ shows too), then unset it, so that a
 * password passed in the environment is not left in memory.  Does nothing
 * when the variable is not set.
 */
void secret_wipe_env(const char *name);

#endif
