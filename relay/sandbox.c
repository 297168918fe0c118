/*
 * sandbox: see sandbox.h.  Landlock through its system calls (no library):
 * a ruleset that handles every file-changing access and grants none, and,
 * from ABI 4 on, TCP bind and connect with grants for two ports.  The
 * constants and the ruleset attribute past Linux 6.1's headers (Debian 12)
 * are spelled out here; they are part of the kernel's stable ABI.
 */
#include "autoconf.h"

#include "sandbox.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/landlock.h>

#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#define NET_BIND_TCP (1ULL << 0)    /* ABI 4 */
#define NET_CONNECT_TCP (1ULL << 1) /* ABI 4 */
#define RULE_NET_PORT 2             /* LANDLOCK_RULE_NET_PORT */

/* struct landlock_ruleset_attr as of ABI 4. */
struct ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
};

/* struct landlock_net_port_attr. */
struct net_port_attr {
	uint64_t allowed_access;
	uint64_t port;
};

/* Everything that changes a file or a folder. */
static const uint64_t fs_writes = LANDLOCK_ACCESS_FS_WRITE_FILE |
    LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
    LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
    LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
    LANDLOCK_ACCESS_FS_MAKE_SYM;

static int
allow_port(int ruleset, int port)
{
	struct net_port_attr rule = {NET_CONNECT_TCP, (uint64_t)port};

	return (int)syscall(SYS_landlock_add_rule, ruleset, RULE_NET_PORT,
	    &rule, 0);
}

int
sandbox_enter(int upstream_port, char *why, size_t whylen)
{
	struct ruleset_attr attr;
	size_t attr_size = sizeof(attr.handled_access_fs);
	long abi;
	int ruleset, full = 1, saved;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1) {
		snprintf(why, whylen, "no Landlock in this kernel (%s)",
		    strerror(errno));
		return 0;
	}
	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = fs_writes;
	if (abi >= 2)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		attr.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 4) {
		attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP;
		attr_size = sizeof(attr);
	} else {
		snprintf(why, whylen,
		    "Landlock ABI %ld: files only, no network rules", abi);
		full = 0;
	}
	ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, attr_size,
	    0);
	if (ruleset == -1)
		return -1;
	if ((abi >= 4 && (allow_port(ruleset, upstream_port) == -1 ||
	                     allow_port(ruleset, 53) == -1)) ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    syscall(SYS_landlock_restrict_self, ruleset, 0) == -1) {
		saved = errno;
		close(ruleset);
		errno = saved;
		return -1;
	}
	close(ruleset);
	return full;
}
