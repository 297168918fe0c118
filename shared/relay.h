/*
 * relay: the daemon's side of relaying: arnie-relay, and one session at a
 * time through it.
 *
 * relay_new() checks the upstream settings and starts the relay program
 * (ARNIE_RELAY_PROGRAM, normally $(pkglibexecdir)/arnie-relay), which
 * speaks SMTP through libesmtp (session.h) in a process of its own: a
 * crash inside libesmtp (1.1 can jump through a bad pointer when the
 * upstream drops a pipelined session) costs one session, never the daemon,
 * and the daemon links no SMTP client library at all.  The relay keeps
 * running between sessions; one that dies, breaks the protocol
 * (relay_proto.h) or passes a session's deadline is killed and replaced at
 * the next session, and each is replaced after RELAY_MAX_SESSIONS
 * sessions anyway, as Postfix reuses its smtp processes (max_use); one
 * idle for ARNIE_RELAY_IDLE_SECONDS is stopped (Postfix's max_idle), and
 * the next session starts another.
 *
 * relay_send() hands the relay one batch: each message's spool file goes as
 * a descriptor, so the relay is never told where the spool is.  Each
 * message's results come back as soon as they are final and go to the
 * caller's relay_result_fn; the relay sends the next message meanwhile
 * but ends it (its final ".") only once that has returned, so a crash of
 * the daemon during a batch sends again at most the message in flight.
 * Only recipients still RCPT_PENDING are sent.  TLS is 1.3 or 1.2 (tls.h
 * says what 1.3 needs with libesmtp).
 *
 * It never touches the spool and never logs a password or AUTH payload;
 * the password reaches the relay over its socket, never through argv or
 * the environment.  relay_send() calls on one relay must not run
 * concurrently (the sender thread is its one caller); relay_abort() may be
 * called from any thread.  What each upstream reply means is decided by
 * reply.h, nowhere else.
 */
#ifndef ARNIE_RELAY_H
#define ARNIE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "session.h"

struct config;
struct envelope;

/* A relay process serves at most this many sessions. */
#define RELAY_MAX_SESSIONS 100
/* How much nicer than the front-end relaying runs: the sender thread and
 * the relay program (accepting mail, which the application waits for,
 * comes first). */
#define RELAY_NICE 10

/* One message of a batch.  The caller sets env and body; relay_send() fills
 * the rest. */
struct relay_msg {
	struct envelope *env;	/* borrowed */
	FILE *body;		/* borrowed; the message starts at
				 * env->body_offset */
	bool attempted;		/* the upstream saw its MAIL FROM */
	bool queue_wide;	/* its failure is the upstream's state (421,
				 * 454 throttling): spend no attempt on it */
	struct relay_result *rcpt; /* env->nrcpts results, owned; set only
				    * for recipients that were pending */
	struct relay_result data; /* reply to the end of DATA, or the
				   * reason the message failed as a whole */
};

struct relay;

/* Check the upstream settings and start the relay program with them.
 * NULL with a message in err on a configuration error (port 465, a CA file
 * that does not load, a relay program that cannot run). */
struct relay *relay_new(const struct config *cfg, char *err, size_t errlen);
/* Stop the relay program and free relay; NULL is accepted. */
void relay_free(struct relay *relay);
/* "host:port", for log lines. */
const char *relay_name(const struct relay *relay);

/*
 * Called on relay_send()'s thread with each message of the batch whose
 * results have arrived (attempted, queue_wide, rcpt and data set), while
 * the relay goes on with the next message but holds back its end: record
 * them durably enough that a restarted daemon
 * does not send what the upstream took, and return 0; -1 when they could
 * not be recorded, which ends the session there (the messages not reached
 * stay as they were).  m stays the caller's; relay_send() touches its
 * results no more.  The time spent here counts against the session's
 * deadline: disk work for one message, nothing slower.
 */
typedef int relay_result_fn(void *arg, struct relay_msg *m);

/*
 * Called on relay_send()'s thread once the batch is in the relay's hands,
 * before any result: while the relay connects and greets the upstream, the
 * caller may do work that need not come before the session (the sender
 * makes the last session's changes durable).  Its time counts against the
 * session's deadline; the relay may end the session's first message
 * meanwhile, and waits for it (through the first ACK) before it ends the
 * second.
 */
typedef void relay_started_fn(void *arg);

/*
 * Send msgs[0..n) over one connection, calling started (if not NULL) once
 * the relay has the batch, and fn (if not NULL) for each message as its
 * results arrive, both with arg.  Returns RELAY_OK when the session ran,
 * each message then carrying its results (a message with attempted false
 * was not tried and stays as it was), or RELAY_TEMPFAIL for queue-wide
 * trouble (connection refused or timed out, TLS or certificate failure,
 * AUTH refused, 421 or 454 at any point, a malformed reply), with reason
 * set; results of messages finished before the trouble are still valid.
 *
 * Also RELAY_TEMPFAIL when the relay could not start, died (e.g. "relay
 * process died (signal 11) after 2 of 5 messages"), broke the protocol, or
 * was killed: at the deadline of OUTBOUND_EMAIL_TIMEOUT x (6 + 3 x n) s
 * plus 1 s per 16 KiB of messages (libesmtp has no connect timeout), or by
 * relay_abort().  Messages whose results it had reported keep them; the
 * others are marked not attempted (the failure is ours or the upstream's
 * state, not theirs), their results carrying the reason; fn is not called
 * for them.
 */
enum relay_status relay_send(struct relay *relay, struct relay_msg *msgs,
    size_t n, relay_started_fn *started, relay_result_fn *fn, void *arg,
    char *reason, size_t reasonlen);

/*
 * Stop the relay program when no session has used it for
 * ARNIE_RELAY_IDLE_SECONDS, so that an idle daemon holds no second
 * process.  Returns the seconds left before that (for the caller's next
 * wake-up), or -1 when no relay runs or it never idles out.  On
 * relay_send()'s thread.
 */
double relay_idle(struct relay *relay);

/* Kill the relay process (SIGKILL): a relay_send() in progress then
 * returns RELAY_TEMPFAIL soon, as above; an idle relay is replaced at the
 * next session.  Thread-safe; for a quick shutdown. */
void relay_abort(struct relay *relay);

/* Release the results relay_send() allocated in msg. */
void relay_msg_clear(struct relay_msg *msg);

#endif
