/*
 * session: one SMTP session to the upstream smarthost, through libesmtp.
 *
 * Used by the relay program (arnie-relay) only, so that the daemons never
 * link libesmtp: session_run() opens one connection, does STARTTLS (when
 * use_tls; tls.h), AUTH when a user is configured (only over TLS), sends
 * every message it is given, pipelining where the server offers it, and
 * closes the connection.  Only the recipients it is given are sent.  Each
 * message's results go to the caller's session_result_fn the moment they
 * are final, and the end of the next message waits until the caller has
 * recorded them (session_settle_fn).  What each reply means is reply.h's
 * decision.
 *
 * libesmtp 1.1 rewrites the header section of what it sends (message.h);
 * the front-ends complete every message at acceptance so that it has
 * nothing to change, and session_run() logs the rare message it would
 * change anyway.  Messages are read from the descriptor and offset given,
 * never from a path: the relay cannot open the spool.
 *
 * The password stays in pages a core dump leaves out (secret.h); nothing
 * here logs it or anything the client writes during AUTH.  One session at
 * a time per process.
 */
#ifndef ARNIE_SESSION_H
#define ARNIE_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum relay_status {
	RELAY_OK,       /* 2xx: done */
	RELAY_TEMPFAIL, /* 4xx, or no answer: try again later */
	RELAY_PERMFAIL, /* 5xx: refused for good */
};

#define RELAY_REPLY_MAX 512

struct relay_result {
	enum relay_status status;
	int code;                    /* SMTP code, 0 when there was no reply */
	char reply[RELAY_REPLY_MAX]; /* one line, e.g. "550 5.1.1 <x@y>: no" */
};

/* What the relay is told at start (the CONFIG record, relay.c). */
struct session_settings {
	const char *host;     /* OUTBOUND_EMAIL_HOST */
	int port;             /* OUTBOUND_EMAIL_HOST_PORT */
	bool use_tls;         /* STARTTLS required */
	bool tls_verify;      /* certificate and host name checked */
	const char *ca_file;  /* extra CA bundle, or NULL */
	const char *username; /* AUTH, or NULL for none */
	const char *password; /* secret; with username */
	const char *helo;     /* EHLO name, or NULL for libesmtp's */
	long timeout;         /* seconds, each step of the dialogue */
};

struct session_rcpt {
	const char *addr;           /* borrowed */
	size_t index;               /* in the message's envelope */
	struct relay_result result; /* filled by session_run() */
};

struct session_msg {
	size_t index;       /* in the batch */
	const char *id;     /* spool ID, for log lines; borrowed */
	const char *sender; /* reverse path, "" for <>; borrowed */
	int fd;             /* the spool file, readable; borrowed */
	off_t offset;       /* where the message starts in it */
	uint64_t size;      /* its octets */
	struct session_rcpt *rcpts; /* the recipients to send to */
	size_t nrcpts;
	/* Filled by session_run(): */
	bool attempted;  /* the upstream saw its MAIL FROM */
	bool queue_wide; /* its failure is the upstream's state */
	struct relay_result data; /* reply to the end of DATA, or why the
	                           * message failed as a whole */
};

struct session;

/* From settings (copied; the password into secret pages).  NULL with a
 * one-line message in err on a configuration error (a CA file that does
 * not load, a host name unusable for certificate checks). */
struct session *session_new(const struct session_settings *settings,
    char *err, size_t errlen);
void session_free(struct session *s);

/*
 * Called with each message whose results are final (attempted,
 * queue_wide, data and every rcpt's result set).  It may only hand them
 * on to be recorded and return: the session goes on meanwhile.  0: go on;
 * -1: stop the session at once (the caller cannot record them).
 */
typedef int session_result_fn(void *arg, struct session_msg *m);

/*
 * Called before the end of a message's data (the "." that makes the
 * upstream take it) is sent, and returns once every result handed to the
 * session_result_fn is recorded.  So the recording of one message overlaps
 * the sending of the next, and a crash at any instant leaves at most one
 * message delivered but not recorded.  0: go on; -1: stop, the message is
 * not completed and the connection is dropped.
 */
typedef int session_settle_fn(void *arg);

/*
 * Send msgs[0..n) over one connection.  Returns RELAY_OK when the session
 * ran, or RELAY_TEMPFAIL for queue-wide trouble (connection refused or
 * timed out, TLS or certificate failure, AUTH refused, 421, 454, a
 * malformed reply), with reason set.  fn is called for every message,
 * those the session never reached included (attempted false, their
 * results saying why), unless a callback asked to stop.  settle may be
 * NULL when fn records before it returns.
 */
enum relay_status session_run(struct session *s, struct session_msg *msgs,
    size_t n, session_result_fn *fn, session_settle_fn *settle, void *arg,
    char *reason, size_t reasonlen);

#endif
