/*
 * log: see log.h.  Keeps one file descriptor; a line is built in a stack
 * buffer and written at once, so concurrent threads need no lock for output.
 * The lock only guards swapping the descriptor on reopen.
 */
#include "autoconf.h"

#include "log.h"

#include "xmalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 4096

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static const char *log_progname = "arnie";
static char *log_path;
static int log_fd = STDERR_FILENO;
static int log_verbose;
static int log_journal;
static bool log_created; /* log_init() made the file (log_give_to()) */
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
	int fd, old;

	if (log_path == NULL)
		return 0;
	if ((fd = open_log_file(log_path, &created)) == -1)
		return -1;
	pthread_mutex_lock(&log_lock);
	old = log_fd;
	log_fd = fd;
	pthread_mutex_unlock(&log_lock);
	close(old);
	return 0;
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

static size_t
format_stamp(char *buf, size_t len)
{
	struct timeval tv;
	struct tm tm;
	size_t n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	n += snprintf(buf + n, len - n, ".%03ldZ ", (long)tv.tv_usec / 1000);
	return n;
}

void
log_set_sink(log_sink_fn *sink)
{
	log_sink = sink;
}

void
log_vmsg(int priority, const char *prefix, const char *fmt, va_list ap)
{
	char line[LOG_LINE_MAX];
	size_t n = 0;
	int r;

	if (log_sink != NULL) {
		/* The priority travels with the text: the receiver writes
		 * its own prefix for it. */
		(void)vsnprintf(line, sizeof(line), fmt, ap);
		log_sink(priority, line);
		return;
	}

	if (log_journal)
		n = snprintf(line, sizeof(line), "<%d>", priority);
	else
		n = format_stamp(line, sizeof(line));
	n += snprintf(line + n, sizeof(line) - n, "%s[%ld]: %s", log_progname,
	    (long)getpid(), prefix);
	/* snprintf returns what it would have written: a long program name
	 * must not send the next write past the buffer. */
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
	if (r < 0)
		r = 0;
	n += (size_t)r;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	pthread_mutex_lock(&log_lock);
	(void)!write(log_fd, line, n);
	pthread_mutex_unlock(&log_lock);
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
