/*
 * dedup: idempotent submission (DEDUP_WINDOW_SECONDS).  A web request
 * retried after a timeout hands over the same message again, with the
 * same Message-ID; within the window the second copy is answered 250
 * ("duplicate of ID, not queued again") and not queued, so the customer
 * is not mailed twice.
 *
 * A message is the same when its envelope sender, its recipients (as a
 * set) and its Message-ID are: a second transaction for other recipients
 * of the same message (after a 452 for too many) is not a duplicate.  The
 * index is the spool's dedup/ folder: one small file per message accepted
 * with a Message-ID of its own, named by a 64-bit FNV-1a hash of that key
 * (16 hex digits), holding the spool ID and the key, so that two keys with
 * the same hash are told apart (never a false duplicate); its mtime is the
 * time of acceptance.  A lookup is one open and read, a record one small file
 * renamed into place: O(1) whatever the size of the index.  It survives
 * restarts; the sender removes entries older than the window hourly.
 *
 * A record is written after the message is durable and before the client
 * hears 250, and is not fsynced: a power loss may forget it, and a retry
 * is then queued twice (at least once, never lost).  Two copies that end
 * at the same moment, before either is recorded, are both queued too.
 * Mail without a Message-ID (Arnie's added one is new every time) is
 * never deduplicated.
 */
#ifndef ARNIE_DEDUP_H
#define ARNIE_DEDUP_H

#include <stdbool.h>
#include <time.h>

#include "envelope.h"

struct spool;

/* Was the same message as env (sender, recipients, message_id) accepted
 * less than window seconds before now?  1 with its spool ID in id, 0 if
 * not, -1 with errno when the index cannot be read (the caller then queues
 * the message). */
int dedup_find(struct spool *spool, const struct envelope *env, long window,
    time_t now, char id[SPOOL_IDLEN + 1]);
/* Record a message just made durable (env->message_id set).  0, or -1
 * with errno. */
int dedup_record(struct spool *spool, const struct envelope *env);
/* Remove the entries of messages accepted before `before`, at most max;
 * returns how many went, or -1 with errno. */
int dedup_prune(struct spool *spool, time_t before, int max);

#endif
