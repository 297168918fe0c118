/*
 * alert: when to call the operator (ALERT_COMMAND), decided from the
 * queue-wide state; the program itself is run by hooks.h.
 *
 * Pure: no I/O, no clock; the sender feeds it and runs what it returns.
 *
 *   paused             the queue has been paused (the upstream refused us
 *                      or could not be reached) for ALERT_AFTER_SECONDS;
 *                      at once when the kind needs a human (auth: the
 *                      credentials were refused; tls: a certificate or
 *                      STARTTLS failure), which waiting does not mend
 *   recovered          the upstream answers again, after a "paused"
 *   queue_age          the oldest queued message is older than
 *                      ALERT_QUEUE_AGE_SECONDS (0: never)
 *   queue_age_cleared  it no longer is, after a "queue_age"
 *
 * Each alert is followed by its clearing one; nothing is said twice.
 */
#ifndef ARNIE_ALERT_H
#define ARNIE_ALERT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define ALERT_TEXT_MAX 512

enum alert_event {
	ALERT_NONE,
	ALERT_PAUSED,
	ALERT_RECOVERED,
	ALERT_QUEUE_AGE,
	ALERT_QUEUE_AGE_CLEARED,
};

struct alert_state {
	long after;     /* ALERT_AFTER_SECONDS */
	long queue_age; /* ALERT_QUEUE_AGE_SECONDS, 0: off */
	bool paused;
	time_t since;              /* of the pause */
	char kind[16];             /* reply_trouble_kind() */
	char text[ALERT_TEXT_MAX]; /* the upstream's last word */
	bool pause_told, age_told;
};

void alert_init(struct alert_state *a, long after, long queue_age);
/* "paused", "recovered", "queue_age", "queue_age_cleared". */
const char *alert_name(enum alert_event ev);
/* A queue-wide failure (the first of a pause, or one more). */
void alert_pause(
    struct alert_state *a, time_t since, const char *kind, const char *text);
/* The upstream answered: ALERT_RECOVERED if a pause was told. */
enum alert_event alert_resume(struct alert_state *a);
/* What is due at now, with the oldest queued message's arrival (0: the
 * queue is empty; -1: not looked at, the queue's age is left alone); call
 * until it returns ALERT_NONE. */
enum alert_event alert_check(struct alert_state *a, time_t now, time_t oldest);
/* When alert_check() has something to say next about the pause, or 0. */
time_t alert_pause_due(const struct alert_state *a);

#endif
