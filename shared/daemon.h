/*
 * daemon: what arnie and arnie-milter do alike before they serve.
 *
 * Both daemons take the same command line, read the same configuration and
 * leave the same signals to one thread.  daemon_start() parses
 *
 *   PROG [-c FILE] [-v] [--check-config | --queue] [--version] [-h]
 *
 * finds and loads the configuration and opens the log.  It exits itself, with
 * a sysexits code, where there is nothing to serve: after --help, --version,
 * --check-config or --queue (0; mailq.h), on a usage error (64), a
 * configuration error (78, the message names the key), a log file it cannot
 * open (73) or a spool --queue cannot read (66, 74).
 */
#ifndef ARNIE_DAEMON_H
#define ARNIE_DAEMON_H

struct config;

/* Returns the loaded configuration (owned by the caller). */
struct config *daemon_start(const char *progname, int argc, char *argv[]);

/*
 * A daemon started as root becomes ARNIE_USER once it has bound its socket
 * and before it opens its spool or starts a thread.  It exits with a
 * sysexits code when that cannot be done safely: 78 when the user does not
 * exist (the message names ARNIE_USER), 77 when the spool, one of its
 * folders or a file queued in outbox/ belongs to someone else (the message
 * says how to hand it over; spool_check_owner()), 71 when the switch itself
 * fails.  After the switch it warns when the log file could not be reopened
 * after rotation.  The files in owned (NULL-terminated, may be
 * NULL: the milter's unix socket) and a log file the daemon created are
 * handed to the user first.  ARNIE_USER=root keeps root, with one warning.
 * Started as any other user, it changes nothing.
 */
void daemon_drop_privileges(
    const struct config *cfg, const char *const *owned);

/* Open (creating what is missing) the spool, as the user the daemon now
 * is; exits 73 with a message saying what to do when it cannot. */
struct spool *daemon_open_spool(const struct config *cfg);

/*
 * Block (how = SIG_BLOCK) or unblock SIGTERM, SIGINT and SIGHUP in the
 * calling thread.  Threads started while they are blocked keep them
 * blocked, so the kernel hands them to the thread that handles them.
 */
void daemon_mask_signals(int how);

#endif
