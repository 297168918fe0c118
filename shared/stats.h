/*
 * stats: what the sender counts and tells the world about its upstream,
 * for arnie-queue stats (and monitoring).
 *
 * Pure: no I/O, no clock.  The sender counts each message's outcome as it
 * is recorded: sent (every recipient accepted), deferred (an attempt left
 * recipients pending), failed (moved to failed/ after a refusal), expired
 * (moved to failed/ out of attempts or of time).  It keeps totals since
 * it started and counts per minute over the last hour, and writes them
 * with the upstream's state as the spool's sender.status file
 * (stats_format(), spool_put_status()), which arnie-queue reads back
 * (stats_parse()): text, one "key: value" per line, after "arnie-status
 * 1".
 */
#ifndef ARNIE_STATS_H
#define ARNIE_STATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

enum stats_event {
	STATS_SENT,
	STATS_DEFERRED,
	STATS_FAILED,
	STATS_EXPIRED,
	STATS_NEVENTS,
};

#define STATS_MINUTES 60
#define STATS_REASON_MAX 512

struct stats {
	uint64_t total[STATS_NEVENTS]; /* since the sender started */
	struct {
		time_t minute; /* start of the minute, 0: unused */
		unsigned n[STATS_NEVENTS];
	} ring[STATS_MINUTES];
	time_t last_delivery; /* a recipient accepted, 0: none yet */
	/* The upstream, as the sender's queue-wide pause sees it. */
	bool paused;
	time_t paused_since; /* the first failure of this trouble */
	time_t next_probe;
	char reason[STATS_REASON_MAX]; /* the upstream's last word */
	/* Who wrote it (stats_parse() only). */
	pid_t pid;
	time_t written;
};

/* "sent", "deferred", "failed", "expired". */
const char *stats_event_name(enum stats_event ev);
/* One event at now. */
void stats_count(struct stats *st, enum stats_event ev, time_t now);
/* Events in the hour up to now. */
unsigned stats_last_hour(
    const struct stats *st, enum stats_event ev, time_t now);

/* The status file's text (owned), written by pid at now. */
char *stats_format(const struct stats *st, pid_t pid, time_t now);
/* Read it back: 0, or -1 with errno EBADMSG when it is not one. */
int stats_parse(const char *text, struct stats *st);

#endif
