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

#endif
