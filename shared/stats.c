/*
 * stats: see stats.h.
 */
#include "autoconf.h"

#include "stats.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmalloc.h"

#define STATS_MAGIC "arnie-status 1"

static const char *const event_names[STATS_NEVENTS] = {
    "sent",
    "deferred",
    "failed",
    "expired",
};

const char *
stats_event_name(enum stats_event ev)
{
	return event_names[ev];
}

void
stats_count(struct stats *st, enum stats_event ev, time_t now)
{
	time_t minute = now - now % 60;
	size_t slot = (size_t)(minute / 60) % STATS_MINUTES;

	if (st->ring[slot].minute != minute) {
		memset(&st->ring[slot], 0, sizeof(st->ring[slot]));
		st->ring[slot].minute = minute;
	}
	st->ring[slot].n[ev]++;
	st->total[ev]++;
	if (ev == STATS_SENT)
		st->last_delivery = now;
}

unsigned
stats_last_hour(const struct stats *st, enum stats_event ev, time_t now)
{
	unsigned n = 0;
	size_t i;

	/* Minutes that started within the last hour, the current one
	 * included. */
	for (i = 0; i < STATS_MINUTES; i++)
		if (st->ring[i].minute != 0 && st->ring[i].minute <= now &&
		    st->ring[i].minute > now - 3600)
			n += st->ring[i].n[ev];
	return n;
}

/* The reason on one line: control characters become blanks. */
static void
put_reason(FILE *out, const char *reason)
{
	for (; *reason != '\0'; reason++)
		fputc((unsigned char)*reason < 0x20 ? ' ' : *reason, out);
	fputc('\n', out);
}

char *
stats_format(const struct stats *st, pid_t pid, time_t now)
{
	char *text = NULL;
	size_t len = 0, i;
	FILE *out = open_memstream(&text, &len);

	if (out == NULL)
		arnie_panic("stats_format: out of memory");
	fprintf(out, STATS_MAGIC "\npid: %ld\nwritten: %lld\n", (long)pid,
	    (long long)now);
	fprintf(out, "upstream: %s\n", st->paused ? "paused" : "running");
	if (st->paused)
		fprintf(out, "paused-since: %lld\nnext-probe: %lld\n",
		    (long long)st->paused_since, (long long)st->next_probe);
	if (st->reason[0] != '\0') {
		fputs("reason: ", out);
		put_reason(out, st->reason);
	}
	fprintf(out, "last-delivery: %lld\n", (long long)st->last_delivery);
	for (i = 0; i < STATS_NEVENTS; i++)
		fprintf(out, "total-%s: %" PRIu64 "\n", event_names[i],
		    st->total[i]);
	for (i = 0; i < STATS_MINUTES; i++)
		if (st->ring[i].minute != 0)
			fprintf(out, "minute: %lld %u %u %u %u\n",
			    (long long)st->ring[i].minute,
			    st->ring[i].n[STATS_SENT],
			    st->ring[i].n[STATS_DEFERRED],
			    st->ring[i].n[STATS_FAILED],
			    st->ring[i].n[STATS_EXPIRED]);
	if (fclose(out) != 0)
		arnie_panic("stats_format: out of memory");
	return text;
}

/* A decimal number of at most max, digits only; moves *p past it. */
static bool
number(const char **p, uint64_t max, uint64_t *out)
{
	const char *s = *p;
	uint64_t n = 0;

	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (n > (max - (uint64_t)(*s - '0')) / 10)
			return false;
		n = n * 10 + (uint64_t)(*s - '0');
	}
	*p = s;
	*out = n;
	return true;
}

/* value as one number and nothing else. */
static bool
only_number(const char *value, uint64_t max, uint64_t *out)
{
	return number(&value, max, out) && *value == '\0';
}

static bool
set_time(const char *value, time_t *t)
{
	uint64_t n;

	if (!only_number(value, INT64_MAX, &n))
		return false;
	*t = (time_t)n;
	return true;
}

/* "START SENT DEFERRED FAILED EXPIRED" into the next free minute. */
static bool
parse_minute(const char *value, struct stats *st, size_t *minutes)
{
	uint64_t start, n[STATS_NEVENTS];
	size_t i;

	if (*minutes == STATS_MINUTES || !number(&value, INT64_MAX, &start))
		return false;
	for (i = 0; i < STATS_NEVENTS; i++)
		if (*value++ != ' ' || !number(&value, UINT32_MAX, &n[i]))
			return false;
	if (*value != '\0')
		return false;
	st->ring[*minutes].minute = (time_t)start;
	for (i = 0; i < STATS_NEVENTS; i++)
		st->ring[*minutes].n[i] = (unsigned)n[i];
	(*minutes)++;
	return true;
}

/* One "key: value" line into st; false if it is not one we know. */
static bool
parse_line(char *line, struct stats *st, size_t *minutes)
{
	char *value = strstr(line, ": ");
	uint64_t n;
	size_t i;

	if (value == NULL)
		return false;
	*value = '\0';
	value += 2;
	if (strcmp(line, "pid") == 0 && only_number(value, INT32_MAX, &n))
		st->pid = (pid_t)n;
	else if (strcmp(line, "written") == 0)
		return set_time(value, &st->written);
	else if (strcmp(line, "upstream") == 0 &&
	         (strcmp(value, "paused") == 0 ||
	             strcmp(value, "running") == 0))
		st->paused = strcmp(value, "paused") == 0;
	else if (strcmp(line, "paused-since") == 0)
		return set_time(value, &st->paused_since);
	else if (strcmp(line, "next-probe") == 0)
		return set_time(value, &st->next_probe);
	else if (strcmp(line, "reason") == 0)
		snprintf(st->reason, sizeof(st->reason), "%s", value);
	else if (strcmp(line, "last-delivery") == 0)
		return set_time(value, &st->last_delivery);
	else if (strcmp(line, "minute") == 0)
		return parse_minute(value, st, minutes);
	else {
		for (i = 0; i < STATS_NEVENTS; i++)
			if (strncmp(line, "total-", 6) == 0 &&
			    strcmp(line + 6, event_names[i]) == 0)
				return only_number(
				    value, UINT64_MAX, &st->total[i]);
		return false;
	}
	return true;
}

int
stats_parse(const char *text, struct stats *st)
{
	char *copy, *line, *save = NULL;
	size_t minutes = 0;
	int rc = 0;

	memset(st, 0, sizeof(*st));
	if (strncmp(text, STATS_MAGIC "\n", sizeof(STATS_MAGIC)) != 0) {
		errno = EBADMSG;
		return -1;
	}
	copy = xstrdup(text + sizeof(STATS_MAGIC));
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		if (!parse_line(line, st, &minutes)) {
			errno = EBADMSG;
			rc = -1;
			break;
		}
	free(copy);
	return rc;
}
