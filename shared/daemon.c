/*
 * daemon: see daemon.h.  Knows the command line and the start-up order of
 * configuration and log; knows nothing of SMTP or milters.
 */
#include "autoconf.h"

#include "daemon.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
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
	char outbox[PATH_MAX];
	struct spool *spool;
	int n;

	/* A listing must not make the spool: made by root here, it would
	 * belong to the wrong user for the daemon (ARNIE_USER). */
	snprintf(outbox, sizeof(outbox), "%s/outbox", cfg->spool_directory);
	if (access(outbox, F_OK) == -1 && errno == ENOENT) {
		printf("The queue is empty.\n");
		config_free(cfg);
		exit(fflush(stdout) == 0 ? 0 : EX_IOERR);
	}
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

/* volatile: a static only ever written would be optimized away. */
static struct config *volatile daemon_config;

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
	/* It lives as long as the process; held here too, so that a leak
	 * checker does not count it lost when a fatal error exits. */
	daemon_config = cfg;
	/* The configuration holds its own copy, in pages no core dump
	 * shows; the one the environment passed goes. */
	secret_wipe_env("OUTBOUND_EMAIL_PASSWORD");
	secret_wipe_env("FALLBACK_EMAIL_PASSWORD");
	if (check) {
		config_print(cfg, stdout);
		config_free(cfg);
		exit(0);
	}
	if (queue)
		list_queue(cfg);
	log_set_json(cfg->log_json);
	if (cfg->log_file != NULL &&
	    log_init(progname, cfg->log_file, verbose) == -1)
		fatal(EX_CANTCREAT, "cannot open ARNIE_LOG_FILE %s%s",
		    cfg->log_file,
		    strcmp(cfg->log_file, LOG_TO_SYSLOG) == 0
		        ? " (no syslog socket at " _PATH_LOG ")"
		        : "");
	/* A peer that goes away is an error return, not death. */
	signal(SIGPIPE, SIG_IGN);
	return cfg;
}

void
daemon_drop_privileges(const struct config *cfg, const char *const *owned)
{
	struct passwd *pw;
	const char *bad;
	size_t i;

	if (geteuid() != 0)
		return;
	if (strcmp(cfg->user, "root") == 0) {
		log_warnx("running as root because ARNIE_USER=root; a user of "
		          "its own (the default, arnie) is safer");
		return;
	}
	errno = 0;
	if ((pw = getpwnam(cfg->user)) == NULL && errno != 0 &&
	    errno != ENOENT && errno != ESRCH)
		fatal(EX_OSERR, "cannot look up ARNIE_USER=%s", cfg->user);
	if (pw == NULL)
		fatalx(EX_CONFIG,
		    "ARNIE_USER=%s: no such user; create it (useradd "
		    "--system --home-dir /var/spool/arnie --shell "
		    "/usr/sbin/nologin %s) or name another",
		    cfg->user, cfg->user);
	if (pw->pw_uid == 0)
		fatalx(EX_CONFIG,
		    "ARNIE_USER=%s has uid 0; say ARNIE_USER=root to run as "
		    "root",
		    cfg->user);
	/* The spool must be the user's: a file it cannot read would sit in
	 * the queue for ever, a folder it cannot write would refuse every
	 * message.  A spool not made yet is made by the user. */
	if (spool_check_owner(cfg->spool_directory, pw->pw_uid, &bad) == -1)
		fatalx(EX_NOPERM,
		    "the spool %s (%s) does not belong to ARNIE_USER %s (uid "
		    "%u): chown -R %s: %s",
		    cfg->spool_directory, bad, pw->pw_name,
		    (unsigned)pw->pw_uid, pw->pw_name, cfg->spool_directory);
	for (i = 0; owned != NULL && owned[i] != NULL; i++)
		if (chown(owned[i], pw->pw_uid, pw->pw_gid) == -1)
			fatal(EX_OSERR, "cannot give %s to ARNIE_USER %s",
			    owned[i], pw->pw_name);
	if (log_give_to(pw->pw_uid, pw->pw_gid) == -1)
		log_warn("cannot give the log file to ARNIE_USER %s; it may "
		         "not be reopened after rotation",
		    pw->pw_name);
	/* Groups first: after setuid() nothing may be changed any more. */
	if (initgroups(pw->pw_name, pw->pw_gid) == -1 ||
	    setgid(pw->pw_gid) == -1 || setuid(pw->pw_uid) == -1)
		fatal(EX_OSERR, "cannot become ARNIE_USER %s", pw->pw_name);
	if (setuid(0) != -1 || geteuid() == 0)
		fatalx(EX_OSERR, "could become root again after switching to "
		                 "ARNIE_USER %s",
		    pw->pw_name);
	log_info("running as %s (uid %u, gid %u)", pw->pw_name,
	    (unsigned)pw->pw_uid, (unsigned)pw->pw_gid);
	if (!log_reopenable())
		log_warnx("ARNIE_LOG_FILE %s or its folder is not writable by "
		          "%s: SIGHUP will not reopen it after rotation",
		    cfg->log_file, pw->pw_name);
}

struct spool *
daemon_open_spool(const struct config *cfg)
{
	struct spool *spool;
	struct passwd *pw;
	int saved;

	if ((spool = spool_open(cfg->spool_directory, cfg->save_sent_mail)) !=
	    NULL)
		return spool;
	saved = errno;
	pw = saved == EACCES ? getpwuid(geteuid()) : NULL;
	errno = saved;
	if (pw != NULL)
		fatal(EX_CANTCREAT,
		    "cannot open the spool %s as %s (make it: install -d -o "
		    "%s -m 0700 %s)",
		    cfg->spool_directory, pw->pw_name, pw->pw_name,
		    cfg->files_directory);
	fatal(EX_CANTCREAT, "cannot open the spool %s", cfg->spool_directory);
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
