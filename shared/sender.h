/*
 * sender: the one thread that relays a spool's queue, sequentially.
 *
 * On start it tries to take the spool's sender lock; while another process
 * holds it, this one only accepts mail (and retries the lock now and then).
 * Holding it, it removes inbox/ leftovers, scans outbox/ once into a min-heap
 * of (next attempt, ID), watches outbox/ with inotify so that other processes
 * and tools can enqueue, and sleeps until the earliest due time, a wake-up or
 * an inotify event: it never polls on a fixed tick.
 *
 * Due messages go out oldest first, up to ARNIE_MAX_BATCH per connection,
 * paced by MAX_SEND_RATE.  Per recipient: 2xx done, 4xx retried with
 * exponential backoff, 5xx failed.  Queue-wide trouble (see relay.h) spends
 * no message's attempts: the queue pauses with backoff and then probes with
 * one message.  Every attempt is logged as one line per recipient.  Failed
 * messages are reported to ADMIN_ADDRESS every REPORT_INTERVAL_SECONDS.
 */
#ifndef ARNIE_SENDER_H
#define ARNIE_SENDER_H

#include <stddef.h>
#include <time.h>

struct config;
struct spool;

struct sender;

/* cfg and spool are borrowed and must outlive the sender.  NULL with a
 * message in err on a configuration error. */
struct sender *sender_new(
    const struct config *cfg, struct spool *spool, char *err, size_t errlen);
/* Start the thread.  0, or -1 with errno. */
int sender_start(struct sender *sender);
/* A message was committed: look at outbox/ now.  Thread-safe and
 * async-signal-safe. */
void sender_wake(struct sender *sender);
/* A message this process is about to queue (called before the rename into
 * outbox/), due at once, with its deadline (envelope.h's expires, 0: none):
 * the sender need not read it to learn either.  Thread-safe. */
void sender_note_commit(struct sender *sender, const char *id, time_t expires);
/* A noted message that was not queued after all (an error, a duplicate):
 * the sender forgets it.  Thread-safe. */
void sender_withdraw_commit(struct sender *sender, const char *id);
/* Stop: finish or abandon the current transfer safely, join the thread.
 * Returns within a few seconds. */
void sender_stop(struct sender *sender);
void sender_free(struct sender *sender);

#endif
