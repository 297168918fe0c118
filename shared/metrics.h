/*
 * metrics: what a daemon counts, as Prometheus text for /metrics, and the
 * verdict of /healthz (monitor.h serves both).
 *
 * One registry per process, behind one mutex: the front-end's commit
 * queue counts what it accepts, the sender what it relays.  Each daemon is
 * one front-end ("smtp" for arnie, "milter" for arnie-milter), which
 * labels what it counts.  The queue's depth and age are read from the
 * spool at each scrape.  The sender's figures exist only in the process
 * that relays the spool; another one (arnie and arnie-milter may share a
 * spool) takes the upstream's state from sender.status (stats.h) and says
 * arnie_sender 0.
 */
#ifndef ARNIE_METRICS_H
#define ARNIE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "stats.h"

struct spool;

/* "smtp" or "milter" (static). */
void metrics_init(const char *frontend);
/* A commit: accepted (ok, its octets) or refused, and how long it took
 * from submission to durable. */
void metrics_commit(bool ok, uint64_t bytes, double seconds);
/* This process relays the spool. */
void metrics_sender(void);
/* A message's outcome, with its octets (sent). */
void metrics_outcome(enum stats_event ev, uint64_t bytes, time_t now);
/* A relay session: kind NULL when it ran, else reply_trouble_kind(). */
void metrics_session(const char *kind);
/* n messages handed to the primary upstream or the fallback. */
void metrics_relayed(bool fallback, size_t n);
/* The queue-wide pause: paused since when (0: running). */
void metrics_upstream(time_t paused_since);

/* The metrics as Prometheus text exposition (owned). */
char *metrics_format(struct spool *spool, time_t now);
/*
 * /healthz: true when healthy; else false with the reason in reason: the
 * upstream paused longer than max_pause seconds, or the oldest queued
 * message older than max_age (0: that check is off).
 */
bool metrics_healthy(struct spool *spool, long max_pause, long max_age,
    time_t now, char *reason, size_t len);

#endif
