/*
 * syslog_to_file.so: an LD_PRELOAD library that turns syslog(3) into
 * lines appended to a file, for tests/milter/sendmail_e2e.py.
 *
 * Sendmail logs only through syslog, and the test machine need not run a
 * syslog daemon.  The path comes from SYSLOG_TO_FILE, read in a
 * constructor because Sendmail empties its environment early in main().
 * The file is opened for each line: Sendmail closes every descriptor above
 * 2 at start-up and may switch to another user afterwards (so the test
 * makes the file writable by all).  It never fails its caller: a line that
 * cannot be written is lost.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

static char log_path[4096];

__attribute__((constructor)) static void
read_path(void)
{
	const char *p = getenv("SYSLOG_TO_FILE");

	/* A path that does not fit turns the log off rather than cut it. */
	if (p != NULL && snprintf(log_path, sizeof(log_path), "%s", p) >=
	                     (int)sizeof(log_path))
		log_path[0] = '\0';
}

void
vsyslog(int pri, const char *fmt, va_list ap)
{
	char line[8192];
	int fd, n, len;

	if (log_path[0] == '\0')
		return;
	n = snprintf(line, sizeof(line), "sendmail[%ld]: ", (long)getpid());
	len = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (len < 0)
		return;
	len = n + len;
	if (len > (int)sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	if ((fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	         0666)) == -1)
		return;
	/* One write with O_APPEND: lines of concurrent processes stay whole. */
	(void)write(fd, line, len);
	close(fd);
}

void
syslog(int pri, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsyslog(pri, fmt, ap);
	va_end(ap);
}

/* What calls compiled with _FORTIFY_SOURCE (Debian's) go to. */
void
__syslog_chk(int pri, int flag, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsyslog(pri, fmt, ap);
	va_end(ap);
}

void
__vsyslog_chk(int pri, int flag, const char *fmt, va_list ap)
{
	vsyslog(pri, fmt, ap);
}

void
openlog(const char *ident, int option, int facility)
{
}

void
closelog(void)
{
}
