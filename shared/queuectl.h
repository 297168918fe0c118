/*
 * queuectl: an operator's actions on the queue (arnie-queue), and how they
 * reach the one process allowed to carry them out.
 *
 * Only the holder of the spool's sender lock changes queued messages
 * (spool.h), so that nothing moves under the sender while it relays.  An
 * action is therefore a request: arnie-queue writes it as control/REQ (REQ
 * a fresh spool ID), the daemon's sender, which watches control/ with
 * inotify, takes it between two relay sessions, carries it out and answers
 * in control/REQ.reply, which arnie-queue awaits.  When no daemon holds the
 * lock, arnie-queue takes it and carries the request out itself, with the
 * same code (queuectl_apply()).
 *
 * A request is lines of "VERB [ARG]" (at most QUEUECTL_MAX_REQUEST
 * octets):
 *
 *   flush           every queued message due now, the queue-wide pause
 *                   lifted
 *   retry ID        ID due now
 *   hold ID | *     outbox/ -> hold/ (* every queued message)
 *   release ID | *  hold/ -> outbox/, due now (* every held message)
 *   delete ID       gone from outbox/, hold/ or failed/
 *   requeue ID | *  failed/ -> outbox/ with fresh attempts (* all of them)
 *
 * The answer has one line per message acted on, or per ID that could not
 * be: "ok TEXT", "missing TEXT" (not where the verb takes it from),
 * "refused TEXT" (not in a state the verb acts on, or not a request) or
 * "error TEXT" (the disk refused), TEXT saying what happened in words
 * ("0193A4B5C6D7E000021: held").  A "*" request is answered with one "ok
 * N messages held" line and a line for each message that did not go
 * well, so that its answer stays small whatever the queue's size.  Each
 * action is logged by the process that carries it out.
 */
#ifndef ARNIE_QUEUECTL_H
#define ARNIE_QUEUECTL_H

#include <time.h>

struct spool;

#define QUEUECTL_MAX_REQUEST 65536

/* What the lock holder must know of a change: the sender keeps its
 * schedule in step.  Any callback may be NULL. */
struct queuectl_hooks {
	void *arg;
	/* id is in outbox/ and due now. */
	void (*queued)(void *arg, const char *id);
	/* id left outbox/. */
	void (*removed)(void *arg, const char *id);
	/* flush: lift the queue-wide pause. */
	void (*flushed)(void *arg);
};

/* Carry out a request (its text, NUL-terminated) as the lock holder;
 * returns the answer (owned).  A line that is not a request is answered
 * "error". */
char *queuectl_apply(struct spool *spool, const char *request,
    const struct queuectl_hooks *hooks, time_t now);

/* The lock holder: carry out and answer every request waiting in
 * control/, oldest first, and remove what tools left there long ago.
 * Returns the number of requests answered, or -1 with errno. */
int queuectl_serve(
    struct spool *spool, const struct queuectl_hooks *hooks, time_t now);

/* A tool's side.  queuectl_submit() watches control/ and then writes the
 * request: NULL with errno on failure. */
struct queuectl_request;
struct queuectl_request *queuectl_submit(
    struct spool *spool, const char *request);
/* Wait up to timeout_ms for the answer: 0 with *reply (owned), or -1 with
 * errno (ETIMEDOUT). */
int queuectl_await(struct queuectl_request *req, int timeout_ms, char **reply);
/* Take back a request not answered in time: 0 if it was withdrawn before
 * the lock holder took it (nothing was done), -1 with errno ENOENT if it
 * was taken (the answer is coming). */
int queuectl_withdraw(struct queuectl_request *req);
/* Release the request (and its answer file, if any). */
void queuectl_request_free(struct queuectl_request *req);

#endif
