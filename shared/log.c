/*
 * log: see log.h.  Keeps one file descriptor; a line is built in a stack
 * buffer and written at once, so concurrent threads need no lock for output.
 * The lock only guards swapping the descriptor on reopen.  With syslog the
 * descriptor is syslog(3)'s, opened once by openlog(LOG_NDELAY).
 */
#include "autoconf.h"

#include "log.h"

#include "logjson.h"
#include "xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *log_progname = "arnie";
static char *log_path;
/* Set before the daemon's threads start; log_reopen() changes the file
 * behind it, never the number, so that writers need no lock. */
static int log_fd = STDERR_FILENO;
static int log_verbose;
static int log_journal;
static bool log_created; /* log_init() made the file (log_give_to()) */
static bool log_json;    /* ARNIE_LOG_FORMAT=json */
static bool log_syslog;  /* ARNIE_LOG_FILE=syslog */
static log_sink_fn *log_sink;

/* Open path for appending; *created says whether this call made it. */
static int
open_log_file(const char *path, bool *created)
{
	int fd, flags = O_WRONLY | O_APPEND | O_CLOEXEC;

	*created = false;
	if ((fd = open(path, flags | O_CREAT | O_EXCL, 0640)) != -1) {
		*created = true;
		return fd;
	}
	if (errno != EEXIST)
		return -1;
	return open(path, flags | O_CREAT, 0640);
}

/*
 * Connect to the syslog socket now, as the daemon may not reach it after
 * it drops its privileges; a missing socket is an error here (ENOENT or
 * ENOTSOCK), since syslog(3) would drop every line without a word.
 */
static int
open_syslog(void)
{
	struct stat st;

	if (stat(_PATH_LOG, &st) == -1)
		return -1;
	if (!S_ISSOCK(st.st_mode)) {
		errno = ENOTSOCK;
		return -1;
	}
	openlog(log_progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
	log_syslog = true;
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = STDERR_FILENO;
	pthread_mutex_unlock(&log_lock);
	free(log_path);
	log_path = NULL;
	return 0;
}

void
log_set_json(bool json)
{
	log_json = json;
}

int
log_init(const char *progname, const char *path, int verbose)
{
	bool created;
	int fd;

	log_progname = progname;
	log_verbose = verbose;
	log_journal = getenv("JOURNAL_STREAM") != NULL && path == NULL;
	if (path == NULL)
		return 0;
	if (strcmp(path, LOG_TO_SYSLOG) == 0)
		return open_syslog();
	if ((fd = open_log_file(path, &created)) == -1)
		return -1;
	log_created = created;
	free(log_path);
	log_path = strdup(path);
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

int
log_reopen(void)
{
	bool created;
	int fd, rc, saved;

	if (log_path == NULL)
		return 0;
	if ((fd = open_log_file(log_path, &created)) == -1)
		return -1;
	/* dup2() swaps the file atomically: a line being written goes to
	 * the old file or the new one, whole. */
	rc = dup2(fd, log_fd) == -1 ? -1 : 0;
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int
log_give_to(uid_t uid, gid_t gid)
{
	int rc = 0;

	pthread_mutex_lock(&log_lock);
	if (log_path != NULL && log_created && fchown(log_fd, uid, gid) == -1)
		rc = -1;
	pthread_mutex_unlock(&log_lock);
	return rc;
}

bool
log_reopenable(void)
{
	char *dir, *slash;
	bool ok;

	if (log_path == NULL)
		return true;
	dir = xstrdup(log_path);
	if ((slash = strrchr(dir, '/')) == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	ok = access(log_path, W_OK) == 0 && access(dir, W_OK | X_OK) == 0;
	free(dir);
	return ok;
}

/* "2026-12-02T06:30:00.123Z" */
static size_t
format_stamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(buf + n, len - n, ".%03ldZ", (long)tv.tv_usec / 1000);
	return n;
}

void
log_set_sink(log_sink_fn *sink)
{
	log_sink = sink;
}

/* One write(2) per line.  Appends to a file (O_APPEND) and writes of up
 * to PIPE_BUF octets to a pipe do not interleave, so those take no lock:
 * one would let the nicer sender thread, preempted while holding it, hold
 * up the front-end.  Only a longer line (JSON) to a pipe could. */
static void
write_line(const char *line, size_t n)
{
	if (n <= PIPE_BUF) {
		(void)!write(log_fd, line, n);
		return;
	}
	pthread_mutex_lock(&log_lock);
	(void)!write(log_fd, line, n);
	pthread_mutex_unlock(&log_lock);
}

/* The line as JSON (logjson.h): to syslog, or written with a journal
 * priority prefix when under systemd. */
static void
log_json_line(int priority, const char *text)
{
	char line[2 * LOG_LINE_MAX], stamp[40];
	size_t n = 0;

	format_stamp(stamp, sizeof(stamp));
	if (log_journal && !log_syslog)
		n = (size_t)snprintf(line, sizeof(line), "<%d>", priority);
	n += logjson_format(line + n, sizeof(line) - n, stamp, priority,
	    log_progname, (long)getpid(), text);
	if (log_syslog) {
		if (n > 0 && line[n - 1] == '\n')
			line[n - 1] = '\0';
		syslog(priority, "%s", line);
	} else
		write_line(line, n);
}

void
log_vmsg(int priority, const char *prefix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX], text[LOG_LINE_MAX];
	size_t n = 0;
	int r;

	/* The text alone first: the sink, syslog and JSON take it so. */
	(void)vsnprintf(text, sizeof(text), fmt, ap);
	if (log_sink != NULL) {
		/* The priority travels with the text: the receiver writes
		 * its own prefix for it. */
		log_sink(priority, text);
		return;
	}
	if (log_json) {
		log_json_line(priority, text);
		return;
	}
	if (log_syslog) {
		syslog(priority, "%s%s", prefix, text);
		return;
	}
	if (log_journal)
		n = (size_t)snprintf(line, sizeof(line), "<%d>", priority);
	else {
		n = format_stamp(line, sizeof(line));
		line[n++] = ' ';
	}
	r = snprintf(line + n, sizeof(line) - n, "%s[%ld]: %s%s",
	    log_progname, (long)getpid(), prefix, text);
	/* snprintf returns what it would have written: a long line is cut,
	 * and keeps its newline. */
	n += r < 0 ? 0 : (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	write_line(line, n);
}

static void
log_str(int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(priority, "", fmt, ap);
	va_end(ap);
}

/* Format the caller's message, then append strerror of the saved errno. */
static void
log_with_errno(int priority, int saved_errno, const char *fmt, va_list ap)
{
	char msg[LOG_LINE_MAX];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	log_str(priority, "%s: %s", msg, strerror(saved_errno));
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_INFO, "", fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	if (!log_verbose)
		return;
	va_start(ap, fmt);
	log_vmsg(LOG_DEBUG, "debug: ", fmt, ap);
	va_end(ap);
}

void
log_warn(const char *fmt, ...)
{
	int saved_errno = errno;
	va_list ap;

	va_start(ap, fmt);
	log_with_errno(LOG_WARNING, saved_errno, fmt, ap);
	va_end(ap);
	errno = saved_errno;
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_WARNING, "", fmt, ap);
	va_end(ap);
}

void
fatal(int code, const char *fmt, ...)
{
	int saved_errno = errno;
	va_list ap;

	va_start(ap, fmt);
	log_with_errno(LOG_ERR, saved_errno, fmt, ap);
	va_end(ap);
	exit(code);
}

void
fatalx(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_ERR, "", fmt, ap);
	va_end(ap);
	exit(code);
}
