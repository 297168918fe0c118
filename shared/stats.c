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
			fprintf(out, "minute: %lld %u %u %u\n",
			    (long long)st->ring[i].minute,
			    st->ring[i].n[STATS_SENT],
			    st->ring[i].n[STATS_DEFERRED],
			    st->ring[i].n[STATS_FAILED]);
	if (fclose(out) != 0)
		arnie_panic("stats_format: out of memory");
	return text;
}

/* One "key: value" line into st; false if it is not one we know. */
static bool
parse_line(const char *line, struct stats *st, size_t *minutes)
{
	long long a = 0, b = 0;
	unsigned n[STATS_NEVENTS];
	char word[16];
	size_t i;

	if (sscanf(line, "pid: %lld", &a) == 1)
		st->pid = (pid_t)a;
	else if (sscanf(line, "written: %lld", &a) == 1)
		st->written = (time_t)a;
	else if (sscanf(line, "upstream: %15s", word) == 1)
		st->paused = strcmp(word, "paused") == 0;
	else if (sscanf(line, "paused-since: %lld", &a) == 1)
		st->paused_since = (time_t)a;
	else if (sscanf(line, "next-probe: %lld", &a) == 1)
		st->next_probe = (time_t)a;
	else if (strncmp(line, "reason: ", 8) == 0)
		snprintf(st->reason, sizeof(st->reason), "%s", line + 8);
	else if (sscanf(line, "last-delivery: %lld", &a) == 1)
		st->last_delivery = (time_t)a;
	else if (sscanf(line, "minute: %lld %u %u %u", &a, &n[0], &n[1],
	             &n[2]) == 4) {
		if (*minutes == STATS_MINUTES)
			return false;
		st->ring[*minutes].minute = (time_t)a;
		memcpy(st->ring[*minutes].n, n, sizeof(n));
		(*minutes)++;
	} else {
		for (i = 0; i < STATS_NEVENTS; i++) {
			size_t klen = strlen(event_names[i]);

			if (strncmp(line, "total-", 6) == 0 &&
			    strncmp(line + 6, event_names[i], klen) == 0 &&
			    sscanf(line + 6 + klen, ": %lld", &b) == 1) {
				st->total[i] = (uint64_t)b;
				return true;
			}
		}
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
