/*
 * daemon: see daemon.h.  Knows the command line and the start-up order of
 * configuration and log; knows nothing of SMTP or milters.
 */
#include "autoconf.h"

#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "mailq.h"
#include "secret.h"
#include "spool.h"

static void
usage(FILE *out, const char *progname)
{
	fprintf(out,
	    "usage: %s [-c FILE] [-v] [--check-config | --queue] "
	    "[--version] [-h]\n",
	    progname);
}

/* Descriptors 0-2 must be open: a client socket, the upstream's socket or
 * a spool file that got one of them would receive what is written to
 * standard error (the log).  /dev/null fills the gaps. */
static void
fill_stdio(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) != -1 && fd <= 2)
		continue;
	if (fd > 2)
		close(fd);
}

static void
warn_key(const char *message)
{
	log_warnx("%s", message);
}

/* --queue: list the spool's queue and exit, as mailq(1) does. */
static void __attribute__((noreturn)) list_queue(struct config *cfg)
{
	struct spool *spool;
	int n;

	if ((spool = spool_open(cfg->spool_directory, cfg->save_sent_mail)) ==
	    NULL)
		fatal(EX_NOINPUT, "cannot open the spool %s",
		    cfg->spool_directory);
	n = mailq_print(spool, stdout, time(NULL));
	if (n == -1)
		fatal(EX_IOERR, "cannot read %s", spool_outbox_path(spool));
	spool_close(spool);
	config_free(cfg);
	exit(fflush(stdout) == 0 ? 0 : EX_IOERR);
}

struct config *
daemon_start(const char *progname, int argc, char *argv[])
{
	enum { OPT_CHECK = 256, OPT_QUEUE, OPT_VERSION };
	static const struct option longopts[] = {
	    {"check-config", no_argument, NULL, OPT_CHECK},
	    {"queue", no_argument, NULL, OPT_QUEUE},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *cli_path = NULL;
	struct config *cfg;
	bool check = false, queue = false;
	int verbose = 0, ch;
	char err[512];
	char *path;

	fill_stdio();
	while ((ch = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			cli_path = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'h':
			usage(stdout, progname);
			exit(0);
		case OPT_CHECK:
			check = true;
			break;
		case OPT_QUEUE:
			queue = true;
			break;
		case OPT_VERSION:
			printf("%s %s\n", progname, PACKAGE_VERSION);
			exit(0);
		default:
			usage(stderr, progname);
			exit(EX_USAGE);
		}
	}
	if (optind != argc) {
		usage(stderr, progname);
		exit(EX_USAGE);
	}

	log_init(progname, NULL, verbose);
	path = config_find_file(cli_path);
	cfg = config_load(path, warn_key, err, sizeof(err));
	free(path);
	if (cfg == NULL)
		fatalx(EX_CONFIG, "%s", err);
	/* The configuration holds its own copy, in pages no core dump
	 * shows; the one the environment passed goes. */
	secret_wipe_env("OUTBOUND_EMAIL_PASSWORD");
	if (check) {
		config_print(cfg, stdout);
		config_free(cfg);
		exit(0);
	}
	if (queue)
		list_queue(cfg);
	if (cfg->log_file != NULL &&
	    log_init(progname, cfg->log_file, verbose) == -1)
		fatal(EX_CANTCREAT, "cannot open ARNIE_LOG_FILE %s",
		    cfg->log_file);
	/* A peer that goes away is an error return, not death. */
	signal(SIGPIPE, SIG_IGN);
	return cfg;
}

void
daemon_mask_signals(int how)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if ((errno = pthread_sigmask(how, &set, NULL)) != 0)
		fatal(EX_OSERR, "pthread_sigmask");
}
