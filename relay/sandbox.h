/*
 * sandbox: what arnie-relay may still do once it has its settings, as the
 * kernel enforces it (Landlock, Linux 5.13 and later; network rules 6.7).
 *
 * After sandbox_enter() the process can create, write, truncate, rename or
 * remove no file anywhere (reading stays allowed: the CA store, the
 * resolver's files), and, where the kernel has Landlock's network rules,
 * bind no TCP port and connect only to the upstream's port and to 53 (DNS
 * over TCP).  Descriptors it already holds are unaffected: its socket to
 * the daemon, and each message's spool file, which the daemon opened for
 * reading.  Needs no_new_privs set first.
 */
#ifndef ARNIE_SANDBOX_H
#define ARNIE_SANDBOX_H

#include <stddef.h>

/*
 * Enter the sandbox for an upstream on upstream_port.  1 when every rule
 * above holds; 0 when the kernel offers less (no Landlock: nothing; no
 * network rules: files only), with what is missing in why; -1 with errno
 * when Landlock failed.
 */
int sandbox_enter(int upstream_port, char *why, size_t whylen);

#endif
