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
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
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
#include "log.h"
#include "sender.h"
#include "smtpd.h"
#include "spool.h"

#define PROGNAME "arnie"
/* How long running commits may take to finish at shutdown. */
#define SHUTDOWN_GRACE_SECONDS 5

struct daemon {
	struct event_base *base;
	struct smtpd *smtpd;
};

static void
usage(FILE *out)
{
	fprintf(out, "usage: " PROGNAME
	             " [-c FILE] [-v] [--check-config] [--version] [-h]\n");
}

static void
warn_key(const char *message)
{
	log_warnx("%s", message);
}

static void
on_stop(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;

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

/* Threads started while these are blocked keep them blocked, so that the
 * kernel hands SIGTERM, SIGINT and SIGHUP to the event loop's thread. */
static void
mask_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((errno = pthread_sigmask(how, &set, NULL)) != 0)
		fatal(EX_OSERR, "pthread_sigmask");
}

int
main(int argc, char *argv[])
{
	enum { OPT_CHECK = 256, OPT_VERSION };
	static const struct option longopts[] = {
	    {"check-config", no_argument, NULL, OPT_CHECK},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *cli_path = NULL;
	char *path;
	char err[512];
	struct config *cfg;
	struct spool *spool;
	struct sender *sender;
	struct commitq *q;
	struct daemon d = {NULL, NULL};
	struct event *ev_term, *ev_int, *ev_hup;
	bool check = false;
	int verbose = 0, ch, rc;

	while ((ch = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			cli_path = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout);
			return 0;
		case OPT_CHECK:
			check = true;
			break;
		case OPT_VERSION:
			printf(PROGNAME " " PACKAGE_VERSION "\n");
			return 0;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EX_USAGE;
	}

	log_init(PROGNAME, NULL, verbose);
	path = config_find_file(cli_path);
	cfg = config_load(path, warn_key, err, sizeof(err));
	free(path);
	if (cfg == NULL)
		fatalx(EX_CONFIG, "%s", err);
	if (check) {
		config_print(cfg, stdout);
		config_free(cfg);
		return 0;
	}
	if (cfg->log_file != NULL &&
	    log_init(PROGNAME, cfg->log_file, verbose) == -1)
		fatal(EX_CANTCREAT, "cannot open ARNIE_LOG_FILE %s",
		    cfg->log_file);

	/* A client that goes away is an error return, not death. */
	signal(SIGPIPE, SIG_IGN);
	/* Before the base exists, so that other threads may wake it. */
	if (evthread_use_pthreads() == -1)
		fatalx(EX_SOFTWARE, "libevent has no pthreads support");
	if ((d.base = event_base_new()) == NULL)
		fatalx(EX_OSERR, "cannot create the event loop");

	if ((spool = spool_open(cfg->spool_directory, cfg->save_sent_mail)) ==
	    NULL)
		fatal(EX_CANTCREAT, "cannot open the spool %s",
		    cfg->spool_directory);
	if ((sender = sender_new(cfg, spool, err, sizeof(err))) == NULL)
		fatalx(EX_CONFIG, "%s", err);

	/* Bind before the sender starts: a daemon that cannot listen should
	 * not begin relaying either. */
	mask_signals(SIG_BLOCK);
	q = commitq_new(spool, sender);
	if ((d.smtpd = smtpd_new(d.base, cfg, spool, q)) == NULL)
		fatal(EX_OSERR, "cannot listen on %s port %d",
		    cfg->listen_address, cfg->listen_port);
	if (sender_start(sender) == -1)
		fatal(EX_OSERR, "cannot start the sender thread");
	mask_signals(SIG_UNBLOCK);

	ev_term = evsignal_new(d.base, SIGTERM, on_stop, &d);
	ev_int = evsignal_new(d.base, SIGINT, on_stop, &d);
	ev_hup = evsignal_new(d.base, SIGHUP, on_hup, &d);
	if (ev_term == NULL || ev_int == NULL || ev_hup == NULL ||
	    evsignal_add(ev_term, NULL) == -1 ||
	    evsignal_add(ev_int, NULL) == -1 ||
	    evsignal_add(ev_hup, NULL) == -1)
		fatalx(EX_OSERR, "cannot set up signal handling");

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
