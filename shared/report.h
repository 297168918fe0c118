/*
 * report: the failure report mailed to ADMIN_ADDRESS.
 *
 * The sender records each message that leaves the queue for failed/
 * (report_failed) and each stretch of queue-wide trouble (report_trouble,
 * report_recovered).  Every REPORT_INTERVAL_SECONDS, if ADMIN_ADDRESS is set
 * and something failed since the last report, or the upstream has been
 * unreachable for longer than the interval, report_send() builds a plain
 * text RFC 5322 message and commits it to the spool, from which it is
 * relayed like any other message.  Its envelope sender is REPORT_FROM (Amazon
 * SES refuses MAIL FROM:<>) and its origin is "report"; a report that itself
 * fails is not reported again, so reports never loop.
 *
 * Not thread-safe: the sender thread owns it.  It never logs except in
 * report_send(), which says once that a report was queued.
 */
#ifndef ARNIE_REPORT_H
#define ARNIE_REPORT_H

#include <stddef.h>
#include <time.h>

struct config;
struct envelope;
struct spool;

/* The origin recorded in a report's envelope. */
#define REPORT_ORIGIN "report"

struct report;

/* cfg is borrowed and must outlive the report.  The first report is due
 * REPORT_INTERVAL_SECONDS after now. */
struct report *report_new(const struct config *cfg, time_t now);
void report_free(struct report *report);

/* Record a message that went to failed/ (env is copied from; a report's own
 * failure is ignored). */
void report_failed(struct report *report, const struct envelope *env);
/* Queue-wide trouble since `since`, with the latest reason. */
void report_trouble(struct report *report, const char *reason, time_t since);
/* The upstream answers again. */
void report_recovered(struct report *report, time_t now);

/* When report_send() should next be called; (time_t)-1 when never (no
 * ADMIN_ADDRESS). */
time_t report_next(const struct report *report);

/*
 * If a report is due at now and there is something to say, commit it to the
 * spool.  queue_depth and oldest (arrival time of the oldest queued message,
 * or -1 if none) describe the queue.  Returns 1 if a report was queued, 0 if
 * there was nothing to send (the next one is then due an interval later),
 * or -1 with errno if the commit failed: the records are kept and the
 * report is tried again a minute later.
 */
int report_send(struct report *report, struct spool *spool, time_t now,
    size_t queue_depth, time_t oldest);

#endif
