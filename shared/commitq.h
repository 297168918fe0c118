/*
 * commitq: group commit for front-ends that must not wait on the disk.
 *
 * Both front-ends commit through it.  A writer thread takes the messages
 * submitted since its last round, commits each (intake_commit(): the file
 * written or finished, fsynced, renamed into outbox/) and then fsyncs
 * outbox/ once for all of them, so N messages finishing together cost N
 * file fsyncs and one directory fsync.  Then it calls each job's done
 * callback, on the writer thread, with 0 or an errno; the callback must
 * hand the result back to its own thread (the standalone listener uses
 * event_active(); commitq_commit() waits for it, for the milter's
 * threads).  After a callback with 0, the message is durable and the
 * sender has been woken.
 *
 * Jobs are served in submission order.  commitq_free() finishes every job
 * already submitted before it returns.
 */
#ifndef ARNIE_COMMITQ_H
#define ARNIE_COMMITQ_H

struct commitq;
struct intake;
struct sender;
struct spool;

typedef void commitq_done_fn(void *arg, int error);

/* sender may be NULL (then nobody is woken). */
struct commitq *commitq_new(struct spool *spool, struct sender *sender);

/* Queue in (intake_end() said INTAKE_OK) for commit; it is borrowed until
 * done is called. */
void commitq_submit(struct commitq *q, struct intake *in, commitq_done_fn *done,
    void *arg);

/* Run intake_flush(in) on the writer thread, in order with the jobs
 * before it, then call done with 0: for an event loop that must not wait
 * on the disk while a big message streams in (the intake keeps any write
 * error for intake_end()).  in is borrowed until done is called. */
void commitq_flush(struct commitq *q, struct intake *in, commitq_done_fn *done,
    void *arg);

/* commitq_submit() and wait for the result: 0 or an errno.  For a thread
 * that may block (a libmilter callback's); several may wait at once and
 * share a round. */
int commitq_commit(struct commitq *q, struct intake *in);

void commitq_free(struct commitq *q);

#endif
