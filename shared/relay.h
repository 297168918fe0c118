/*
 * relay: one SMTP session to the upstream smarthost, through libesmtp.
 *
 * relay_send() opens one connection, does STARTTLS (required when
 * OUTBOUND_EMAIL_USE_TLS) with Arnie's own SSL_CTX (system CA store plus
 * OUTBOUND_EMAIL_CA_FILE, host name checked, SNI sent), AUTH when a user is
 * configured (only over TLS), then sends every message of the batch on that
 * connection, pipelining where the server offers it, and closes it.  Only
 * recipients still RCPT_PENDING are sent.  Bytes go out exactly as spooled
 * (dot-stuffed once) when the header section holds Date, From and
 * Message-Id once each and no Return-Path or Original-Recipient: libesmtp
 * 1.1 adds the first three when missing and drops the others, and cannot be
 * told not to (relay_send() logs when it will).  TLS is 1.2 only (libesmtp
 * 1.1 can stall on TLS 1.3 session tickets, see relay.c).
 *
 * Each session runs in a child process (fork, no exec) that reports each
 * message's results over a pipe as soon as they are final, and waits until
 * the caller has recorded them (relay_result_fn) before it goes on: a crash
 * of the daemon during a batch sends again at most the message in flight.
 * A crash inside libesmtp (1.1 can jump through a bad pointer when the
 * upstream drops a pipelined session) costs that session only, never the
 * daemon.  The child
 * is bounded by a deadline (see relay_send()) and killed when it passes,
 * and it dies with the thread that started it (no orphan goes on sending
 * after the daemon is gone).
 *
 * It never touches the spool and never logs a password or AUTH payload.
 * relay_send() calls on one relay must not run concurrently (the sender
 * thread is its one caller).  relay_abort() may be called from any thread.
 * What each upstream reply means is decided by reply.h, nowhere else.
 */
#ifndef ARNIE_RELAY_H
#define ARNIE_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct config;
struct envelope;

enum relay_status {
	RELAY_OK,		/* 2xx: done */
	RELAY_TEMPFAIL,		/* 4xx, or no answer: try again later */
	RELAY_PERMFAIL,		/* 5xx: refused for good */
};

#define RELAY_REPLY_MAX 512

struct relay_result {
	enum relay_status status;
	int code;		/* SMTP code, 0 when there was no reply */
	char reply[RELAY_REPLY_MAX]; /* one line, e.g. "550 5.1.1 <x@y>: no" */
};

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

/* Build the TLS context and AUTH settings.  NULL with a message in err on a
 * configuration error (e.g. port 465). */
struct relay *relay_new(const struct config *cfg, char *err, size_t errlen);
void relay_free(struct relay *relay);
/* "host:port", for log lines. */
const char *relay_name(const struct relay *relay);

/*
 * Called on relay_send()'s thread with each message of the batch whose
 * results have arrived (attempted, queue_wide, rcpt and data set), while
 * the session waits: record them durably enough that a restarted daemon
 * does not send what the upstream took, and return 0; -1 when they could
 * not be recorded, which ends the session there (the messages not reached
 * stay as they were).  m stays the caller's; relay_send() touches its
 * results no more.  The time spent here counts against the session's
 * deadline: disk work for one message, nothing slower.
 */
typedef int relay_result_fn(void *arg, struct relay_msg *m);

/*
 * Send msgs[0..n) over one connection, calling fn (if not NULL) for each
 * message as its results arrive.  Returns RELAY_OK when the session
 * ran, each message then carrying its results (a message with attempted
 * false was not tried and stays as it was), or RELAY_TEMPFAIL for
 * queue-wide trouble (connection refused or timed out, TLS or certificate
 * failure, AUTH refused, 421 or 454 at any point), with reason set; results
 * of messages finished before the trouble are still valid.
 *
 * Also RELAY_TEMPFAIL when the session process could not start, died (e.g.
 * "relay process died (signal 11) after 2 of 5 messages"), or was killed:
 * at the deadline of OUTBOUND_EMAIL_TIMEOUT x (6 + 3 x n) s plus 1 s per
 * 16 KiB of messages (libesmtp has no connect timeout), or by
 * relay_abort().  Messages whose results it had reported keep them; the
 * others are marked not attempted (the failure is ours or the upstream's
 * state, not theirs), their results carrying the reason; fn is not called
 * for them.  The bodies' file positions are undefined afterwards.
 */
enum relay_status relay_send(struct relay *relay, struct relay_msg *msgs,
    size_t n, relay_result_fn *fn, void *arg, char *reason,
    size_t reasonlen);

/* Kill the session process of a relay_send() in progress (SIGKILL), which
 * then returns RELAY_TEMPFAIL soon, as above.  Does nothing when no session
 * runs.  Thread-safe; for a quick shutdown. */
void relay_abort(struct relay *relay);

/* Release the results relay_send() allocated in msg. */
void relay_msg_clear(struct relay_msg *msg);



#endif
