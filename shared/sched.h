/*
 * sched: the sender's in-memory index of the queue, and its timing rules.
 *
 * Pure: no I/O, no clock, no locks.  Every function that needs the time takes
 * it as a parameter, so the unit tests drive it with an injected clock.  The
 * caller (the sender thread) owns the structures and serialises access.
 *
 *   heap     a min-heap of (due time, ID), ordered by due time, then by ID;
 *            IDs sort by arrival, so messages due at the same second leave
 *            in FIFO order.  An ID is present at most once: a hash map from
 *            ID to heap slot makes add, update and remove O(log n).
 *   backoff  base * 2^(failures - 1), capped, overflow-safe.
 *   rate     a token bucket for MAX_SEND_RATE (messages per second).
 *   pause    the queue-wide pause: after queue-wide trouble nothing is sent
 *            until the pause ends, then one message probes the upstream;
 *            success resumes full batches, failure doubles the pause.
 *
 * Wall-clock times are time_t seconds (the envelope's next-attempt time is
 * one); the rate limiter takes a monotonic time in seconds as a double.
 */
#ifndef ARNIE_SCHED_H
#define ARNIE_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Longest ID the heap stores (spool IDs have 19 octets); IDs are
 * compared as strings. */
#define SCHED_IDMAX 23

struct sched;

/* An empty heap; owned, release with sched_free() (NULL accepted). */
struct sched *sched_new(void);
void sched_free(struct sched *s);

/*
 * Queue id (at most SCHED_IDMAX octets, copied) for due.  An ID already
 * present gets the new due time instead.  Returns 1 if it was added, 0 if
 * it was updated.  An over-long ID is a bug (panic).
 */
int sched_add(struct sched *s, const char *id, time_t due);
/* Like sched_add(), but an ID already present keeps its due time.  Returns 1
 * if added, 0 if it was present. */
int sched_add_new(struct sched *s, const char *id, time_t due);
/*
 * Like sched_add_new(), with a tag: a few bits of the caller's that stay
 * with the entry until it is popped (sched_pop_due_tagged()).  Tags are
 * for knowledge that holds until then: an entry added again keeps only
 * the bits every adder gave, and sched_add() and sched_add_new() give 0.
 */
int sched_add_tagged(
    struct sched *s, const char *id, time_t due, unsigned char tag);
/* Returns 1 if id was present and is removed, 0 if it was absent. */
int sched_remove(struct sched *s, const char *id);
bool sched_contains(const struct sched *s, const char *id);
/* 1 and *due set if id is present, else 0. */
int sched_due(const struct sched *s, const char *id, time_t *due);
size_t sched_size(const struct sched *s);
/* Earliest entry: 1 and *due (and id, when not NULL; SCHED_IDMAX + 1
 * octets) set, or 0 when empty. */
int sched_peek(const struct sched *s, time_t *due, char *id);
/* If the earliest entry is due at or before now, remove it, copy its ID into
 * id_out (SCHED_IDMAX + 1 octets) and return 1; else 0. */
int sched_pop_due(struct sched *s, time_t now, char *id_out);
/* sched_pop_due(), with the entry's tag in *tag. */
int sched_pop_due_tagged(
    struct sched *s, time_t now, char *id_out, unsigned char *tag);
/* The smallest ID queued (the oldest message), borrowed until the next
 * change; NULL when empty.  O(n): meant for the hourly report. */
const char *sched_oldest_id(const struct sched *s);

/*
 * Delay before retry number `failures` (1 = first retry): base * 2^(failures
 * - 1), never above max; failures 0 counts as 1.  Overflow-safe for any
 * count.  A base above max gives max; a non-positive base gives 0.
 */
long sched_backoff(unsigned failures, long base, long max);

/*
 * Token bucket.  rate is messages per second, 0 = unlimited.  The bucket
 * holds at most max(1, rate) tokens and starts full: at 14/s a burst of up
 * to 14 messages may share one connection, then 14 more a second later; at
 * 1/s or 0.5/s messages go one at a time, 1 s or 2 s apart.  A whole batch
 * goes out over one connection at the upstream's speed, so the bucket
 * decides how many messages a batch may hold, not when each byte leaves.
 */
struct sched_rate {
	double rate;   /* tokens per second, 0 = unlimited */
	double burst;  /* bucket size */
	double tokens; /* available now (after the last refill) */
	double last;   /* monotonic time of the last refill */
};

void sched_rate_init(struct sched_rate *r, double rate, double now);
/* Seconds to wait until one token is available; 0 if one is now. */
double sched_rate_wait(struct sched_rate *r, double now);
/* Whole tokens available now (capped at want; want when unlimited). */
size_t sched_rate_avail(struct sched_rate *r, double now, size_t want);
/* Spend n tokens (n no more than sched_rate_avail() returned). */
void sched_rate_consume(struct sched_rate *r, double now, size_t n);
/* The one-message form: how long to wait before sending, and the token is
 * taken (reserved) now, so the caller sends after waiting that long. */
double sched_rate_take(struct sched_rate *r, double now);

/*
 * Queue-wide pause.  failures counts consecutive queue-wide failures; 0
 * means the queue runs.  The pause after failure n lasts sched_backoff(n,
 * base, max) seconds.
 */
enum sched_mode {
	SCHED_RUN,    /* full batches */
	SCHED_PAUSED, /* send nothing until `until` */
	SCHED_PROBE,  /* the pause is over: send one message */
};

struct sched_pause {
	unsigned failures; /* consecutive queue-wide failures */
	time_t until;      /* end of the current pause */
	time_t since;      /* start of the trouble (first failure) */
	long base, max;    /* RETRY_DELAY_SECONDS, RETRY_MAX_DELAY_... */
};

void sched_pause_init(struct sched_pause *p, long base, long max);
enum sched_mode sched_pause_mode(const struct sched_pause *p, time_t now);
/* How many messages may go out now: 0, 1 (probe) or max_batch. */
size_t sched_pause_batch(
    const struct sched_pause *p, time_t now, size_t max_batch);
/* A queue-wide failure at now: pause, returning the pause in seconds. */
long sched_pause_fail(struct sched_pause *p, time_t now);
/* The upstream answered: resume.  Returns true if the queue had been paused
 * (so the caller logs the recovery once). */
bool sched_pause_ok(struct sched_pause *p);

#endif
