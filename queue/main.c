/*
 * arnie-queue: look at and act on Arnie's queue, as mailq, postqueue and
 * postsuper do for Postfix.
 *
 *   arnie-queue [-c FILE] [-v] [-w SECONDS] COMMAND [ARG...]
 *
 * It reads the daemons' configuration (the same -c FILE and environment)
 * and, started as root, becomes ARNIE_USER first, so that nothing it
 * writes into the spool belongs to root.  The read-only commands (list,
 * show, stats, status) read the spool directly.  The others change queued
 * messages, which only the holder of the sender lock may do: when a daemon
 * relays the spool, the request goes to it (queuectl.h) and is carried out
 * between two relay sessions; when none does, arnie-queue takes the lock
 * and carries it out itself.  purge-sent removes from sent/ only, which
 * the sender never reads, and needs no lock.
 *
 * Exit codes (sysexits): 0 done; 1 an ID or Message-ID not found, or not
 * in a state the command acts on (the others were acted on); 64 bad
 * usage; 73 the spool cannot be opened; 74 the disk refused an action;
 * 75 the daemon did not answer in time (nothing was done, unless it took
 * the request and then fell silent: see its log); 78 a bad
 * configuration.
 */
#include "autoconf.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "daemon.h"
#include "inspect.h"
#include "log.h"
#include "mailq.h"
#include "queuectl.h"
#include "secret.h"
#include "spool.h"
#include "xmalloc.h"

#define PROGNAME "arnie-queue"
/* How long a request waits for a running daemon, by default. */
#define DEFAULT_WAIT_SECONDS 60

static void
usage(FILE *out)
{
	fprintf(out,
	    "usage: " PROGNAME " [-c FILE] [-v] [-w SECONDS] COMMAND [ARG...]\n"
	    "  list [--json]                 the queue: outbox/ and hold/\n"
	    "  show ID                       one message, then its text\n"
	    "  stats [--json]                folders, last hour, upstream\n"
	    "  status MESSAGE-ID [--json]    a message found by its "
	    "Message-ID\n"
	    "  flush                         every queued message due now\n"
	    "  retry ID...                   these messages due now\n"
	    "  hold ID... | --all            keep messages from being sent\n"
	    "  release ID... | --all         send held messages again\n"
	    "  delete ID...                  remove messages for good\n"
	    "  requeue ID... | --all-failed  failed/ back to the queue\n"
	    "  purge-sent --older-than DAYS  empty sent/ of older mail\n");
}

static void __attribute__((noreturn)) usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, PROGNAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage(stderr);
	exit(EX_USAGE);
}

/* What arnie-queue logs itself (an action carried out without a daemon)
 * goes to the daemons' log; on a terminal only warnings are shown, since
 * standard output already says what was done. */
static void
quiet_sink(int priority, const char *text)
{
	if (priority <= LOG_WARNING)
		fprintf(stderr, PROGNAME ": %s\n", text);
}

static void
warn_key(const char *message)
{
	log_warnx("%s", message);
}

static struct config *
load_config(const char *cli_path, int verbose)
{
	struct config *cfg;
	char err[512], *path;

	log_init(PROGNAME, NULL, verbose);
	log_set_sink(quiet_sink);
	path = config_find_file(cli_path);
	cfg = config_load(path, warn_key, err, sizeof(err));
	free(path);
	if (cfg == NULL)
		fatalx(EX_CONFIG, "%s", err);
	secret_wipe_env("OUTBOUND_EMAIL_PASSWORD");
	secret_wipe_env("FALLBACK_EMAIL_PASSWORD");
	if (cfg->log_file != NULL &&
	    log_init(PROGNAME, cfg->log_file, verbose) == 0)
		log_set_sink(NULL);
	return cfg;
}

/* ------------------------------------------------------------ actions */

/* Print an answer (queuectl.h) and return the exit code it means. */
static int
print_answer(const char *answer)
{
	const char *p = answer, *nl;
	int rc = 0;
	size_t n;

	for (; *p != '\0'; p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		n = (size_t)(nl - p);
		if (n > 3 && strncmp(p, "ok ", 3) == 0)
			printf("%.*s\n", (int)n - 3, p + 3);
		else if (n > 8 && strncmp(p, "missing ", 8) == 0) {
			fprintf(stderr, PROGNAME ": %.*s\n", (int)n - 8, p + 8);
			if (rc == 0)
				rc = 1;
		} else if (n > 8 && strncmp(p, "refused ", 8) == 0) {
			fprintf(stderr, PROGNAME ": %.*s\n", (int)n - 8, p + 8);
			if (rc == 0)
				rc = 1;
		} else if (n > 0) {
			fprintf(stderr, PROGNAME ": %.*s\n", (int)n,
			    strncmp(p, "error ", 6) == 0 ? p + 6 : p);
			rc = EX_IOERR;
		}
		if (*nl == '\0')
			break;
	}
	return rc;
}

/* Hand the request to the daemon that relays the spool and wait. */
static int
ask_daemon(struct spool *spool, const char *request, int wait_s)
{
	struct queuectl_request *req;
	char *answer = NULL;
	int rc;

	if ((req = queuectl_submit(spool, request)) == NULL)
		fatal(EX_CANTCREAT, "cannot write a request into %s/control",
		    spool_path(spool));
	if (queuectl_await(req, wait_s * 1000, &answer) == -1) {
		if (errno != ETIMEDOUT)
			fatal(EX_IOERR, "cannot read the answer");
		if (queuectl_withdraw(req) == 0) {
			queuectl_request_free(req);
			fatalx(EX_TEMPFAIL,
			    "the daemon that relays %s did not take the "
			    "request within %d s (it may be in a long relay "
			    "session); nothing was done, try again or give "
			    "-w a longer wait",
			    spool_path(spool), wait_s);
		}
		/* Taken: the answer is on its way. */
		if (queuectl_await(req, wait_s * 1000, &answer) == -1) {
			queuectl_request_free(req);
			fatalx(EX_TEMPFAIL,
			    "the daemon took the request but did not answer "
			    "within %d s; see its log",
			    wait_s);
		}
	}
	queuectl_request_free(req);
	rc = print_answer(answer);
	free(answer);
	return rc;
}

static int
act(struct spool *spool, const char *request, int wait_s)
{
	char *answer;
	int rc;

	if (spool_lock_sender(spool) == -1) {
		if (errno == EWOULDBLOCK)
			return ask_daemon(spool, request, wait_s);
		fatal(EX_CANTCREAT, "cannot take the sender lock of %s",
		    spool_path(spool));
	}
	/* No daemon relays this spool: carry it out here.  A hold or
	 * release cut short by a crash is mended first, as at start-up. */
	if (spool_cleanup_inbox(spool) == -1)
		log_warn("cannot clean %s", spool_path(spool));
	answer = queuectl_apply(spool, request, NULL, time(NULL));
	rc = print_answer(answer);
	free(answer);
	return rc;
}

/* "VERB ID" lines for each ID argument, or "VERB *" for the all-flag. */
static char *
build_request(const char *verb, int argc, char **argv, const char *all_flag)
{
	char *req, *next;
	int i;

	/* Every check before anything is allocated: usage_error() exits. */
	if (argc == 0)
		usage_error("%s needs at least one ID%s%s", verb,
		    all_flag != NULL ? " or " : "",
		    all_flag != NULL ? all_flag : "");
	if (all_flag != NULL && strcmp(argv[0], all_flag) == 0) {
		if (argc > 1)
			usage_error(
			    "%s takes IDs or %s, not both", verb, all_flag);
		return xasprintf("%s *\n", verb);
	}
	for (i = 0; i < argc; i++)
		if (!spool_is_id(argv[i]))
			usage_error("%s: not a queue ID (19 upper-case hex "
			            "digits)",
			    argv[i]);
	req = xstrdup("");
	for (i = 0; i < argc; i++) {
		next = xasprintf("%s%s %s\n", req, verb, argv[i]);
		free(req);
		req = next;
	}
	return req;
}

static int
purge_sent(struct spool *spool, int argc, char **argv)
{
	char *end;
	long days;
	int n;

	if (argc != 2 || strcmp(argv[0], "--older-than") != 0)
		usage_error("purge-sent needs --older-than DAYS");
	errno = 0;
	days = strtol(argv[1], &end, 10);
	if (errno != 0 || *end != '\0' || end == argv[1] || days < 0 ||
	    days > 36500)
		usage_error("--older-than %s: not a number of days", argv[1]);
	n = spool_prune_sent(spool, time(NULL) - (time_t)days * 86400, INT_MAX);
	if (n == -1)
		fatal(EX_IOERR, "cannot read %s/sent", spool_path(spool));
	log_info("removed %d message%s sent more than %ld day%s ago from "
	         "sent/ (arnie-queue purge-sent)",
	    n, n == 1 ? "" : "s", days, days == 1 ? "" : "s");
	printf("removed %d message%s from sent/\n", n, n == 1 ? "" : "s");
	return 0;
}

/* ----------------------------------------------------------- commands */

/* "--json" as the only option of a read-only command. */
static bool
json_flag(const char *cmd, int argc, char **argv, int nargs)
{
	if (argc == nargs)
		return false;
	if (argc == nargs + 1 && strcmp(argv[nargs], "--json") == 0)
		return true;
	usage_error(
	    "%s: unexpected argument %s", cmd, argv[argc > nargs ? nargs : 0]);
}

static int
run(struct spool *spool, const char *cmd, int argc, char **argv, int wait_s)
{
	time_t now = time(NULL);
	char *req;
	int rc, n;

	if (strcmp(cmd, "list") == 0) {
		n = json_flag(cmd, argc, argv, 0)
		        ? mailq_print_json(spool, stdout, now)
		        : mailq_print(spool, stdout, now);
		if (n == -1)
			fatal(EX_IOERR, "cannot read %s",
			    spool_outbox_path(spool));
		return 0;
	}
	if (strcmp(cmd, "show") == 0) {
		if (argc != 1 || !spool_is_id(argv[0]))
			usage_error("show needs one queue ID");
		return inspect_show(spool, argv[0], stdout, now);
	}
	if (strcmp(cmd, "stats") == 0)
		return inspect_stats(
		    spool, json_flag(cmd, argc, argv, 0), stdout, now);
	if (strcmp(cmd, "status") == 0) {
		if (argc < 1 || argv[0][0] == '\0' ||
		    strcmp(argv[0], "--json") == 0)
			usage_error("status needs a Message-ID");
		return inspect_status(
		    spool, argv[0], json_flag(cmd, argc, argv, 1), stdout);
	}
	if (strcmp(cmd, "purge-sent") == 0)
		return purge_sent(spool, argc, argv);
	if (strcmp(cmd, "flush") == 0) {
		if (argc != 0)
			usage_error("flush takes no argument");
		return act(spool, "flush\n", wait_s);
	}
	if (strcmp(cmd, "retry") == 0)
		req = build_request("retry", argc, argv, NULL);
	else if (strcmp(cmd, "hold") == 0)
		req = build_request("hold", argc, argv, "--all");
	else if (strcmp(cmd, "release") == 0)
		req = build_request("release", argc, argv, "--all");
	else if (strcmp(cmd, "delete") == 0)
		req = build_request("delete", argc, argv, NULL);
	else if (strcmp(cmd, "requeue") == 0)
		req = build_request("requeue", argc, argv, "--all-failed");
	else
		usage_error("%s: no such command", cmd);
	if (strlen(req) > QUEUECTL_MAX_REQUEST)
		usage_error("too many IDs at once (at most %d octets of "
		            "request)",
		    QUEUECTL_MAX_REQUEST);
	rc = act(spool, req, wait_s);
	free(req);
	return rc;
}

/* The spool, or NULL when it was never made (an empty queue): a command
 * must not make it, as root it would belong to the wrong user. */
static struct spool *
open_spool(const struct config *cfg)
{
	struct spool *spool;
	char outbox[PATH_MAX];

	snprintf(outbox, sizeof(outbox), "%s/outbox", cfg->spool_directory);
	if (access(outbox, F_OK) == -1 && errno == ENOENT)
		return NULL;
	if ((spool = spool_open(cfg->spool_directory, cfg->save_sent_mail)) ==
	    NULL)
		fatal(EX_CANTCREAT,
		    "cannot open the spool %s (run as root "
		    "or as ARNIE_USER)",
		    cfg->spool_directory);
	return spool;
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"wait", required_argument, NULL, 'w'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *cli_path = NULL;
	struct config *cfg;
	struct spool *spool;
	int ch, verbose = 0, wait_s = DEFAULT_WAIT_SECONDS, rc;
	long lwait;
	char *end;

	/* "+": options stop at the command, whose own come after it. */
	while (
	    (ch = getopt_long(argc, argv, "+c:vw:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			cli_path = optarg;
			break;
		case 'v':
			verbose++;
			break;
		case 'w':
			errno = 0;
			lwait = strtol(optarg, &end, 10);
			if (*end != '\0' || end == optarg || errno != 0 ||
			    lwait < 1 || lwait > 86400)
				usage_error("-w %s: not a number of seconds "
				            "(1 to 86400)",
				    optarg);
			wait_s = (int)lwait;
			break;
		case 'V':
			printf(PROGNAME " %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind == argc)
		usage_error("no command given");
	signal(SIGPIPE, SIG_IGN);
	cfg = load_config(cli_path, verbose);
	/* ARNIE_USER=root: the daemons warn about it, once is enough. */
	if (strcmp(cfg->user, "root") != 0)
		daemon_drop_privileges(cfg, NULL);
	if ((spool = open_spool(cfg)) == NULL) {
		/* Nothing was ever queued: say so as each command would. */
		if (strcmp(argv[optind], "list") == 0 ||
		    strcmp(argv[optind], "stats") == 0)
			printf("The queue is empty (no spool at %s yet).\n",
			    cfg->spool_directory);
		else
			fprintf(stderr, PROGNAME ": no spool at %s yet\n",
			    cfg->spool_directory);
		config_free(cfg);
		return strcmp(argv[optind], "list") == 0 ||
		               strcmp(argv[optind], "stats") == 0
		           ? 0
		           : 1;
	}
	rc = run(
	    spool, argv[optind], argc - optind - 1, argv + optind + 1, wait_s);
	spool_close(spool);
	config_free(cfg);
	if (fflush(stdout) != 0)
		return EX_IOERR;
	return rc;
}
