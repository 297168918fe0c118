/*
 * spares: empty files kept in the spool's spare/ folder, to be reused for
 * new messages instead of creating files.
 *
 * Why: creating a file allocates an inode, and on ext4 without a journal
 * (this project's test machine, and a common choice for spool disks) the
 * allocator skips every inode freed in the last minutes, reading each one's
 * inode table block: with a steady flow of messages created and deleted,
 * that is most of the daemon's CPU at intake (perf, docs/performance.md).
 * Renaming a spare into place allocates nothing.  A delivered message's
 * file becomes a spare again (emptied), so a spool that takes and
 * delivers at the same rate allocates no inode at all; a background thread
 * at low priority keeps SPARES_LOW ready for bursts when deliveries do not
 * keep up (the upstream is down).
 *
 * A spare holds nothing: a recycled file waits as ID.dirty, a name no
 * pool takes, until it is emptied (by the background thread when there is
 * one, else at once; ID.dirty left by a stop or a crash at the next open),
 * and only then becomes the spare ID.  spare/ may be emptied by hand at
 * any time.  Several
 * processes may share the folder: names are fresh message IDs, and a spare
 * another process took first is skipped.  Thread-safe.  Never logs.
 */
#ifndef ARNIE_SPARES_H
#define ARNIE_SPARES_H

#include <stdio.h>

/* Refill below SPARES_LOW up to SPARES_HIGH; recycle up to SPARES_MAX. */
#define SPARES_LOW 1024
#define SPARES_HIGH 4096
#define SPARES_MAX 8192

struct spares;

/* The pool of the folder sparefd (borrowed, open for the pool's life),
 * from what it holds now. */
struct spares *spares_open(int sparefd);
/* Stop the refill thread, if any, and free the pool. */
void spares_close(struct spares *sp);

/*
 * Move a spare to dirfd/name (which must not exist) and open it for
 * writing, empty.  The descriptor, or -1 when there is no spare (the
 * caller creates the file).  Wakes the refill thread when the pool runs
 * low.
 */
int spares_take(struct spares *sp, int dirfd, const char *name);

/*
 * Remove dirfd/name from its folder, as unlinkat() would: kept as a spare,
 * emptied, while the pool holds fewer than SPARES_MAX, else unlinked.  0,
 * or -1 with errno (ENOENT: not there).  For a file whose removal need not
 * survive a power loss (an unfinished message in inbox/): the spare can be
 * taken at once.
 */
int spares_recycle(struct spares *sp, int dirfd, const char *name);

/*
 * The same for a file whose removal must be durable before its inode holds
 * another message (outbox/): on a file system without a journal, a power
 * loss could otherwise bring the old name back on the new content.  The
 * spare is taken only after spares_settle() for a sync begun after it.
 */
int spares_recycle_synced(struct spares *sp, int dirfd, const char *name);

/*
 * spares_recycle_synced(), with the emptying left to the refill thread if
 * it runs: the caller does not wait for it (the sender, with the relay
 * waiting for the sender).  Until then the file's blocks are still in use:
 * a caller that frees space because the disk is full uses spares_recycle().
 */
int spares_recycle_later(struct spares *sp, int dirfd, const char *name);

/*
 * Close fp on the refill thread if it runs (else now): a message file the
 * caller read, whose name may be gone.  The last close of a removed file
 * frees its inode and blocks, about 80 us each here: with the pool full
 * (SPARES_MAX), delivered files are unlinked, and closing a batch's
 * hundred on the sender's path took 7-9 ms between two relay sessions.
 * The thread closes files before it makes or empties spares; at most 256
 * wait (each holds a descriptor), beyond that fp is closed at once.
 */
void spares_close_later(struct spares *sp, FILE *fp);

/*
 * Around an fsync of the folders recycled files left:
 *   e = spares_sync_begin(sp); fsync(...); spares_settle(sp, e);
 * spares_settle() makes the spares recycled before spares_sync_begin()
 * available; those recycled during the fsync wait for the next one.
 */
unsigned long spares_sync_begin(struct spares *sp);
void spares_settle(struct spares *sp, unsigned long epoch);

/* Start the refill thread (for a daemon that takes messages).  0, or -1
 * with errno. */
int spares_keep(struct spares *sp);

/* Spares in the pool now, for tests. */
unsigned spares_count(struct spares *sp);

#endif
