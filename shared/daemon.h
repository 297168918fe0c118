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
 * Block (how = SIG_BLOCK) or unblock SIGTERM, SIGINT and SIGHUP in the
 * calling thread.  Threads started while they are blocked keep them
 * blocked, so the kernel hands them to the thread that handles them.
 */
void daemon_mask_signals(int how);

#endif
