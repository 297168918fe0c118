/*
 * arnie-milter: Arnie's spool and sender behind an MTA's milter interface.
 *
 *   arnie-milter [-c FILE] [-v] [--check-config] [--version]
 *
 * Reads the same configuration as arnie (plus ARNIE_MILTER_SOCKET and
 * ARNIE_MILTER_MODE), opens the spool, starts the sender thread, listens on
 * the milter socket and hands the main thread to smfi_main(), which serves
 * one thread per MTA connection and stops on SIGTERM, SIGINT or SIGHUP.
 * Then a callback under way (a commit) gets a few seconds to finish, the
 * sender is stopped and the process exits 0.
 *
 * Exit codes: 0 after a clean stop, 64 usage, 78 configuration, 73 spool
 * cannot be opened, 69 socket cannot be opened, 71 thread cannot start,
 * 70 smfi_main() failed.
 */
#include "autoconf.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>

#include <libmilter/mfapi.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "commitq.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"
#include "milter.h"
#include "monitor.h"
#include "sender.h"
#include "spool.h"

#define PROGNAME "arnie-milter"
/* How long a callback under way at a stop may take to finish. */
#define DRAIN_SECONDS 10

/*
 * libmilter takes SIGHUP, SIGTERM and SIGINT with sigwait() in a thread of
 * its own, blocking them in the thread that calls smfi_main().  Threads
 * started earlier (the sender) must block them too, or the kernel could
 * deliver SIGTERM to one of them and kill the process without a clean stop.
 * daemon_mask_signals() does that before any thread starts.
 */
int
main(int argc, char *argv[])
{
	char err[512];
	struct config *cfg;
	struct spool *spool;
	struct sender *sender;
	struct commitq *q;
	struct monitor *mon;
	const char *owned[2] = {NULL, NULL};
	int rc;

	cfg = daemon_start(PROGNAME, argc, argv);
	metrics_init("milter");
	daemon_mask_signals(SIG_BLOCK);
	/* Listen first (as root, if started so), give a unix socket to
	 * ARNIE_USER, become that user, and only then touch the spool. */
	if (milter_listen(cfg->milter_socket) == -1)
		exit(EX_UNAVAILABLE);
	mon = monitor_new(cfg);
	owned[0] = milter_socket_path(cfg->milter_socket);
	daemon_drop_privileges(cfg, owned);
	spool = daemon_open_spool(cfg);
	if ((sender = sender_new(cfg, spool, err, sizeof(err))) == NULL)
		fatalx(EX_CONFIG, "%s", err);
	q = commitq_new(spool, sender);
	milter_init(cfg, spool, q);
	if (sender_start(sender) == -1)
		fatal(EX_OSERR, "cannot start the sender");
	monitor_start(mon, spool);
	log_info("arnie-milter %s listening on %s, %s mode, spool %s",
	    PACKAGE_VERSION, cfg->milter_socket,
	    cfg->milter_mode == MILTER_DIVERT ? "divert" : "copy",
	    cfg->spool_directory);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "READY=1");
#endif

	rc = smfi_main();

#ifdef HAVE_SYSTEMD
	sd_notify(0, "STOPPING=1");
#endif
	log_info("arnie-milter stopping");
	/* smfi_main() does not wait for the connection threads. */
	if (milter_drain(DRAIN_SECONDS) == -1) {
		/* A thread still uses the spool: free nothing under it. */
		log_warnx(
		    "a commit still runs after %d s; exiting", DRAIN_SECONDS);
		return EX_SOFTWARE;
	}
	monitor_free(mon);
	commitq_free(q);
	sender_stop(sender);
	sender_free(sender);
	spool_close(spool);
	config_free(cfg);
	if (rc != MI_SUCCESS) {
		log_warnx("smfi_main failed");
		return EX_SOFTWARE;
	}
	return 0;
}
