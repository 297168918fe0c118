/*
 * arnie: the standalone SMTP buffer daemon.
 *
 *   arnie [-c FILE] [-v] [--check-config] [--version] [-h]
 *
 * Reads the configuration, opens the spool, starts the sender thread and the
 * commit queue's writer thread, listens for SMTP on ARNIE_LISTEN_ADDRESS:
 * ARNIE_LISTEN_PORT and runs the libevent loop on the main thread until
 * SIGTERM or SIGINT.  Then it stops accepting, lets running commits finish
 * (a few seconds at most), says 421 to the remaining clients, stops the
 * sender and exits 0.  SIGHUP reopens the log file.
 *
 * Exit codes (sysexits.h): 0 after a clean stop, 64 usage, 78 configuration,
 * 73 spool or log file cannot be opened, 71 the listener cannot be bound or
 * a thread cannot start, 70 the event loop failed.
 */
#include "autoconf.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include <event2/event.h>
#include <event2/thread.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "config.h"
#include "commitq.h"
#include "daemon.h"
#include "log.h"
#include "metrics.h"
#include "monitor.h"
#include "sender.h"
#include "smtpd.h"
#include "spool.h"

#define PROGNAME "arnie"
/* How long running commits may take to finish at shutdown. */
#define SHUTDOWN_GRACE_SECONDS 5

struct loop {
	struct event_base *base;
	struct smtpd *smtpd;
};

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
	struct loop *d = arg;

	log_info("received signal %d, shutting down", (int)sig);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "STOPPING=1");
#endif
	smtpd_shutdown(d->smtpd, SHUTDOWN_GRACE_SECONDS);
}

static void
on_hup(evutil_socket_t sig, short what, void *arg)
{
	if (log_reopen() == -1)
		log_warn("cannot reopen the log file");
	else
		log_info("log file reopened");
}

int
main(int argc, char *argv[])
{
	char err[512];
	struct config *cfg;
	struct spool *spool;
	struct sender *sender;
	struct commitq *q;
	struct monitor *mon;
	struct loop d = {NULL, NULL};
	struct event *ev_term, *ev_int, *ev_hup;
	int rc;

	cfg = daemon_start(PROGNAME, argc, argv);
	metrics_init("smtp");

	/* Before the base exists, so that other threads may wake it. */
	if (evthread_use_pthreads() == -1)
		fatalx(EX_SOFTWARE, "libevent has no pthreads support");
	if ((d.base = event_base_new()) == NULL)
		fatalx(EX_OSERR, "cannot create the event loop");

	/* From the moment the port is bound a supervisor may stop us: the
	 * signals wait, blocked, for the loop's handlers, and the threads
	 * started meanwhile keep them blocked for good. */
	daemon_mask_signals(SIG_BLOCK);
	ev_term = evsignal_new(d.base, SIGTERM, on_stop, &d);
	ev_int = evsignal_new(d.base, SIGINT, on_stop, &d);
	ev_hup = evsignal_new(d.base, SIGHUP, on_hup, &d);
	if (ev_term == NULL || ev_int == NULL || ev_hup == NULL ||
	    evsignal_add(ev_term, NULL) == -1 ||
	    evsignal_add(ev_int, NULL) == -1 ||
	    evsignal_add(ev_hup, NULL) == -1)
		fatalx(EX_OSERR, "cannot set up signal handling");

	/* Bind first (a port below 1024 needs root), then become ARNIE_USER,
	 * and only then touch the spool; a daemon that cannot listen should
	 * not begin relaying either. */
	if ((d.smtpd = smtpd_new(d.base, cfg)) == NULL)
		fatal(EX_OSERR, "cannot listen on %s port %d",
		    cfg->listen_address, cfg->listen_port);
	mon = monitor_new(cfg);
	daemon_drop_privileges(cfg, NULL);
	spool = daemon_open_spool(cfg);
	if ((sender = sender_new(cfg, spool, err, sizeof(err))) == NULL)
		fatalx(EX_CONFIG, "%s", err);
	q = commitq_new(spool, sender);
	smtpd_start(d.smtpd, spool, q);
	if (sender_start(sender) == -1)
		fatal(EX_OSERR, "cannot start the sender thread");
	monitor_start(mon, spool);
	daemon_mask_signals(SIG_UNBLOCK);

	log_info("arnie %s started: listening on %s, spool %s, relay %s:%d",
	    PACKAGE_VERSION, smtpd_address(d.smtpd), cfg->spool_directory,
	    cfg->outbound_host, cfg->outbound_port);
#ifdef HAVE_SYSTEMD
	sd_notify(0, "READY=1");
#endif

	rc = event_base_dispatch(d.base);
	if (rc == -1)
		log_warnx("the event loop failed");

	/*
	 * Order matters: commitq_free() finishes every submitted commit and
	 * its callbacks still point at sessions, so the sessions go after
	 * it; the commit queue wakes the sender, so the sender stops last.
	 */
	monitor_free(mon);
	commitq_free(q);
	smtpd_free(d.smtpd);
	sender_stop(sender);
	sender_free(sender);
	spool_close(spool);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	event_base_free(d.base);
	log_info("arnie stopped");
	config_free(cfg);
	return rc == -1 ? EX_SOFTWARE : 0;
}
