/*
 * timefmt: times as mail and people read them.
 *
 * Generic layer.  Both functions write a NUL-terminated string into buf and
 * never depend on the locale: RFC 5322 needs English day and month names
 * whatever LANG says.
 */
#ifndef ARNIE_TIMEFMT_H
#define ARNIE_TIMEFMT_H

#include <stddef.h>
#include <time.h>

/* Room for any date timefmt_date() writes. */
#define TIMEFMT_DATE_MAX 40

/* RFC 5322 date-time in local time with a numeric zone:
 * "Tue, 5 Mar 2024 09:08:07 +0530".  len >= TIMEFMT_DATE_MAX. */
void timefmt_date(time_t when, char *buf, size_t len);

/* A duration for people: "2d 3h", "3h 12m", "4m 10s", "9s". */
void timefmt_age(long secs, char *buf, size_t len);

/* A duration as written in a configuration or a header field: a positive
 * whole number and a unit, s, m, h or d ("90s", "15m", "2h", "1d"; no
 * blank between), at most 10 years.  0 and *secs set, or -1. */
int timefmt_parse_duration(const char *text, long *secs);

/*
 * An RFC 5322 date-time ("Tue, 5 Mar 2024 09:08:07 +0530"; the day of the
 * week, the seconds and comments optional; the obsolete zones UT, GMT and
 * Z, and EST...PDT, accepted; surrounding blanks ignored) as Unix time.
 * 0 and *t set, or -1.
 */
int timefmt_parse_date(const char *text, time_t *t);

#endif
