/*
 * log: one line per event, to standard error, a log file or syslog.
 *
 * Generic layer.  Each line is formatted in full and written with a single
 * write(2), so lines from several threads never interleave.  Under systemd
 * (JOURNAL_STREAM set) lines carry a "<N>" priority prefix and no time stamp,
 * since the journal adds its own; elsewhere they start with an ISO-8601 UTC
 * time stamp and the program name.  With log_set_json() each line is one
 * JSON object instead (logjson.h), with the same content.
 *
 * log_warn() and fatal() append ": strerror(errno)"; the -x variants do not.
 * fatal*() are for a broken environment at start-up only: they exit with the
 * given sysexits code.  A bug calls arnie_panic() (xmalloc.h) instead.
 * Never pass a password or an AUTH payload to these functions.
 */
#ifndef ARNIE_LOG_H
#define ARNIE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>
#include <syslog.h>

/* The path that means syslog(3), facility mail. */
#define LOG_TO_SYSLOG "syslog"

/*
 * Set the program name and the destination: path NULL means standard
 * error, LOG_TO_SYSLOG syslog.  Returns 0, or -1 with errno if the file
 * cannot be opened or there is no syslog socket (standard error is then
 * kept).  verbose enables log_debug().
 */
int log_init(const char *progname, const char *path, int verbose);

/* Lines as JSON objects (true) or text (false, the default). */
void log_set_json(bool json);

/* Reopen the log file after rotation (SIGHUP).  0, or -1 with errno. */
int log_reopen(void);

/* Before a daemon started as root becomes another user: hand it the log
 * file if log_init() created it.  A file that existed keeps its owner.  The
 * open descriptor goes on working either way; log_reopenable() says
 * whether a reopen after rotation will.  0, or -1 with errno. */
int log_give_to(uid_t uid, gid_t gid);

/* Can this process reopen the log file, or make it anew in its folder (as
 * after rotation)?  True when logging to standard error. */
bool log_reopenable(void);

void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
void fatalx(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

/*
 * Hand every line to sink instead of writing it (NULL: write again): the
 * relay program sends its lines to the daemon, which logs them.  The text
 * has no time stamp, program name or "debug: " prefix (the priority says
 * it); debug lines come only with verbose.
 */
typedef void log_sink_fn(int priority, const char *text);
void log_set_sink(log_sink_fn *sink);

/* The primitive behind the others: priority, prefix ("" for none). */
void log_vmsg(int priority, const char *prefix, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
