/*
 * timefmt: see timefmt.h.
 */
#include "autoconf.h"

#include "timefmt.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xmalloc.h"

static const char days[7][4] = {
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void
timefmt_date(time_t when, char *buf, size_t len)
{
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

int
timefmt_parse_duration(const char *text, long *secs)
{
	static const struct {
		char unit;
		long secs;
	} units[] = {{'s', 1}, {'m', 60}, {'h', 3600}, {'d', 86400}};
	long n = 0;
	size_t i;

	if (!isdigit((unsigned char)*text))
		return -1;
	for (; isdigit((unsigned char)*text); text++) {
		n = n * 10 + (*text - '0');
		if (n > 10L * 366 * 86400)
			return -1;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (text[0] == units[i].unit && text[1] == '\0') {
			if (n == 0 || n > 10L * 366 * 86400 / units[i].secs)
				return -1;
			*secs = n * units[i].secs;
			return 0;
		}
	return -1;
}

/* The text without its (comments), blanks collapsed; owned. */
static char *
strip_comments(const char *text)
{
	char *out = xmalloc(strlen(text) + 1), *o = out;
	int depth = 0;

	for (; *text != '\0'; text++) {
		if (*text == '(')
			depth++;
		else if (*text == ')' && depth > 0)
			depth--;
		else if (depth == 0)
			*o++ = isspace((unsigned char)*text) ? ' ' : *text;
	}
	*o = '\0';
	return out;
}

/* A zone: +hhmm / -hhmm, or one of RFC 5322's obsolete names. */
static int
parse_zone(const char *z, long *off)
{
	static const struct {
		const char *name;
		int hours;
	} names[] = {{"UT", 0}, {"GMT", 0}, {"Z", 0}, {"EST", -5}, {"EDT", -4},
	    {"CST", -6}, {"CDT", -5}, {"MST", -7}, {"MDT", -6}, {"PST", -8},
	    {"PDT", -7}};
	size_t i;

	if ((z[0] == '+' || z[0] == '-') && strlen(z) == 5 &&
	    strspn(z + 1, "0123456789") == 4 && z[3] <= '5') {
		*off = ((z[1] - '0') * 10 + (z[2] - '0')) * 3600L +
		       ((z[3] - '0') * 10 + (z[4] - '0')) * 60L;
		if (z[0] == '-')
			*off = -*off;
		return 0;
	}
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(z, names[i].name) == 0) {
			*off = names[i].hours * 3600L;
			return 0;
		}
	return -1;
}

int
timefmt_parse_date(const char *text, time_t *t)
{
	char *s = strip_comments(text), *p = s, mon[4], zone[8], extra;
	int day, year, hh, mm, ss = 0, n = 0, i, rc = -1;
	struct tm tm;
	long off;

	while (*p == ' ')
		p++;
	/* The day of the week, if any, is not checked against the date. */
	for (i = 0; i < 7; i++)
		if (strncasecmp(p, days[i], 3) == 0 && p[3] == ',') {
			p += 4;
			break;
		}
	if (sscanf(p, " %2d %3s %4d %2d:%2d:%2d %7s %c", &day, mon, &year, &hh,
	        &mm, &ss, zone, &extra) == 7)
		n = 7;
	else if (sscanf(p, " %2d %3s %4d %2d:%2d %7s %c", &day, mon, &year, &hh,
	             &mm, zone, &extra) == 6)
		n = 6;
	if (n == 0 || parse_zone(zone, &off) == -1)
		goto out;
	for (i = 0; i < 12; i++)
		if (strcasecmp(mon, months[i]) == 0)
			break;
	if (i == 12 || day < 1 || day > 31 || year < 1970 || hh > 23 ||
	    mm > 59 || ss > 60 || hh < 0 || mm < 0 || ss < 0)
		goto out;
	memset(&tm, 0, sizeof(tm));
	tm.tm_mday = day;
	tm.tm_mon = i;
	tm.tm_year = year - 1900;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	*t = timegm(&tm) - off;
	rc = 0;
out:
	free(s);
	return rc;
}
