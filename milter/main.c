/*
 * arnie-milter: Arnie's spool and sender behind an MTA's milter interface.
 *
 *   arnie-milter [-c FILE] [-v] [--check-config] [--version]
 *
 * Reads the same configuration as arnie (plus ARNIE_MILTER_SOCKET and
 * ARNIE_MILTER_MODE), opens the spool, starts the sender thread, listens on
 * the milter socket and hands the main thread to smfi_main(), which serves
 * one thread per MTA connection and stops on SIGTERM, SIGINT or SIGHUP.
 * Then the sender is stopped and the process exits 0.
 *
 * Exit codes: 0 after a clean stop, 64 usage, 78 configuration, 73 spool
 * cannot be opened, 69 socket cannot be opened, 71 thread cannot start,
 * 70 smfi_main() failed.
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
#include <unistd.h>

#include <libmilter/mfapi.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "config.h"
#include "log.h"
#include "milter.h"
#include "sender.h"
#include "spool.h"

#define PROGNAME "arnie-milter"

static void
usage(FILE *out)
{
	fprintf(out, "usage: " PROGNAME
	    " [-c FILE] [-v] [--check-config] [--version]\n");
}

static void
warn_key(const char *message)
{
	log_warnx("%s", message);
}

/*
 * libmilter takes SIGHUP, SIGTERM and SIGINT with sigwait() in a thread of
 * its own, blocking them in the thread that calls smfi_main().  Threads
 * started earlier (the sender) must block them too, or the kernel could
 * deliver SIGTERM to one of them and kill the process without a clean stop.
 * SIGPIPE is ignored: a peer that goes away is an error return, not death.
 */
static void
block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((errno = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0)
		fatal(EX_OSERR, "pthread_sigmask");
	signal(SIGPIPE, SIG_IGN);
}

int
main(int argc, char *argv[])
{
	enum { OPT_CHECK = 256, OPT_VERSION };
	static const struct option longopts[] = {
		{ "check-config", no_argument, NULL, OPT_CHECK },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cli_path = NULL;
	char *path = NULL;
	char err[512];
	struct config *cfg;
	struct spool *spool;
	struct sender *sender;
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
	if ((cfg = config_load(path, warn_key, err, sizeof(err))) == NULL)
		fatalx(EX_CONFIG, "%s", err);
	free(path);
	if (check) {
		config_print(cfg, stdout);
		config_free(cfg);
		return 0;
	}
	if (cfg->log_file != NULL &&
	    log_init(PROGNAME, cfg->log_file, verbose) == -1)
		fatal(EX_CANTCREAT, "ARNIE_LOG_FILE=%s", cfg->log_file);

	block_signals();
	if ((spool = spool_open(cfg->spool_directory,
		 cfg->save_sent_mail)) == NULL)
		fatal(EX_CANTCREAT, "spool %s", cfg->spool_directory);
	if ((sender = sender_new(cfg, spool, err, sizeof(err))) == NULL)
		fatalx(EX_CONFIG, "%s", err);
	milter_init(cfg, spool, sender);
	if (milter_listen(cfg->milter_socket) == -1)
		exit(EX_UNAVAILABLE);
	if (sender_start(sender) == -1)
		fatal(EX_OSERR, "cannot start the sender");
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
