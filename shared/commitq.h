/*
 * commitq: group commit for front-ends that must not wait on the disk.
 *
 * A writer thread takes the messages submitted since its last round, writes
 * each with spool_write() and then fsyncs outbox/ once for all of them, so N
 * messages finishing together cost N file fsyncs and one directory fsync.
 * Then it calls each job's done callback, on the writer thread, with 0 or an
 * errno; the callback must hand the result back to its own thread (the
 * standalone listener uses event_active()).  After a callback with 0, the
 * message is durable and the sender has been woken.
 *
 * Jobs are served in submission order.  commitq_free() finishes every job
 * already submitted before it returns.
 */
#ifndef ARNIE_COMMITQ_H
#define ARNIE_COMMITQ_H

#include <sys/uio.h>

struct commitq;
struct envelope;
struct sender;
struct spool;

typedef void commitq_done_fn(void *arg, int error);

/* sender may be NULL (then nobody is woken). */
struct commitq *commitq_new(struct spool *spool, struct sender *sender);

/*
 * Queue env (its id assigned on success) and the message in iov for commit.
 * env and the buffers behind iov are borrowed until done is called.
 */
void commitq_submit(struct commitq *q, struct envelope *env,
    const struct iovec *iov, int iovcnt, commitq_done_fn *done, void *arg);

void commitq_free(struct commitq *q);

#endif
