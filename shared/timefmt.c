/*
 * timefmt: see timefmt.h.
 */
#include "autoconf.h"

#include "timefmt.h"

#include <stdio.h>

#include "xmalloc.h"

void
timefmt_date(time_t when, char *buf, size_t len)
{
	static const char days[7][4] = {
	    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	char sign = '+';
	long off;
	int n;

	if (localtime_r(&when, &tm) == NULL) {
		when = 0;
		gmtime_r(&when, &tm);
	}
	off = tm.tm_gmtoff / 60;
	if (off < 0) {
		sign = '-';
		off = -off;
	}
	n = snprintf(buf, len, "%s, %d %s %d %02d:%02d:%02d %c%02ld%02ld",
	    days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec, sign, off / 60,
	    off % 60);
	if (n < 0 || (size_t)n >= len)
		arnie_panic("timefmt_date: buffer of %zu bytes too small", len);
}

void
timefmt_age(long secs, char *buf, size_t len)
{
	if (secs < 0)
		secs = 0;
	if (secs >= 86400)
		snprintf(
		    buf, len, "%ldd %ldh", secs / 86400, secs % 86400 / 3600);
	else if (secs >= 3600)
		snprintf(buf, len, "%ldh %ldm", secs / 3600, secs % 3600 / 60);
	else if (secs >= 60)
		snprintf(buf, len, "%ldm %lds", secs / 60, secs % 60);
	else
		snprintf(buf, len, "%lds", secs);
}
