/*
 * smtpd: SMTP sessions on libevent bufferevents, see smtpd.h.
 *
 * A session is a small state machine: commands (S_CMD), message data
 * (S_DATA), a big message's held part being written (S_FLUSH), a commit in
 * flight (S_COMMIT) and a final reply being flushed (S_CLOSING).  Input is
 * processed in order, a complete line at a time, and processing stops
 * whenever the session cannot go on yet (a flush or a commit) or the
 * client does not read its replies; then reading from the socket is turned
 * off too, so nothing is buffered without bound.  The session owns its
 * message (intake.h); the grammar lives in smtp_parse.c.
 *
 * This file never writes to the disk: the commit queue's writer thread
 * does, for flushes and commits, and wakes the session through a
 * per-session event made active from that thread.  (Only a refused
 * streamed message's file is removed from here: rare, and one unlink.)  A
 * session whose client leaves during a flush or a commit lives on until
 * its callback has arrived, since the writer borrows its message.
 */
#include "autoconf.h"

#include "smtpd.h"

#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "clock.h"
#include "config.h"
#include "commitq.h"
#include "intake.h"
#include "log.h"
#include "message.h"
#include "smtp_parse.h"
#include "spool.h"
#include "xmalloc.h"

/* Protocol errors tolerated from one client before it is dropped. */
#define SMTPD_MAX_ERRORS 20
/* Stop reading while this much of our output waits for the client. */
#define SMTPD_OUTPUT_MAX (64 * 1024)
#define SMTPD_BACKLOG 128

/* RFC 6531 3.4: a non-ASCII address without SMTPUTF8, which Arnie neither
 * offers nor could relay (libesmtp 1.1 cannot send it). */
#define SMTPD_NO_EAI "553 5.6.7 Non-ASCII addresses are not supported"

#define HELP_TEXT                                                              \
	"214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP "              \
	"QUIT VRFY HELP"

enum session_state {
	S_CMD,     /* reading commands */
	S_DATA,    /* reading the message after 354 */
	S_FLUSH,   /* part of the message is being written */
	S_COMMIT,  /* the message is being committed */
	S_CLOSING, /* a last reply is being flushed */
};

struct session {
	TAILQ_ENTRY(session) entry;
	struct smtpd *sd;
	struct bufferevent *bev; /* NULL once the client is gone */
	struct event *commit_ev;
	struct event *deadline_ev; /* see deadline_arm() */
	double deadline;           /* monotonic seconds; 0: none armed */
	size_t data_octets;        /* received in this DATA, for the log */
	enum session_state state;
	char client[INET6_ADDRSTRLEN + 16]; /* "1.2.3.4:port" */
	char ip[INET6_ADDRSTRLEN];
	bool ipv6, loopback;
	char *helo;
	bool esmtp;
	int errors;
	bool discarding;  /* dropping the rest of an over-long line */
	bool out_blocked; /* reading paused until output drains */

	/* The transaction. */
	bool in_mail;
	char *sender;
	char **rcpts;
	size_t nrcpts;
	struct smtp_data data;

	/* The message from DATA to its commit; owned here, borrowed by the
	 * commit queue while it commits. */
	struct intake *in;
	int commit_error; /* written by the writer thread */
};

struct smtpd {
	struct event_base *base;
	const struct config *cfg;
	struct spool *spool;
	struct commitq *q;
	struct evconnlistener *listener;
	struct event *grace_ev;
	struct event *resume_ev; /* re-enables accept after an error */
	char address[INET6_ADDRSTRLEN + 16];
	const char *hostname;
	TAILQ_HEAD(session_list, session) sessions;
	int nsessions;
	bool stopping;
};

static void session_process(struct session *s);
static void transaction_reset(struct session *s);
static void session_destroy(struct session *s);
static void deadline_clear(struct session *s);
static void deadline_arm(struct session *s);

/* ---------------------------------------------------------------- replies */

static void reply(struct session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
reply(struct session *s, const char *fmt, ...)
{
	struct evbuffer *out;
	va_list ap;

	if (s->bev == NULL)
		return;
	out = bufferevent_get_output(s->bev);
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

/* Send a last reply and close once it has been written. */
static void
close_after(struct session *s, const char *text)
{
	reply(s, "%s", text);
	s->state = S_CLOSING;
	/* A client that does not read its last reply is dropped when this
	 * fresh clock runs out. */
	deadline_clear(s);
	deadline_arm(s);
	if (s->bev != NULL)
		bufferevent_disable(s->bev, EV_READ);
}

/* A protocol error: counted, and too many of them end the session. */
static void
reply_error(struct session *s, const char *text)
{
	reply(s, "%s", text);
	if (++s->errors >= SMTPD_MAX_ERRORS) {
		log_info("too many errors from %s, disconnecting", s->client);
		close_after(s, "421 4.7.0 Too many errors, closing");
	}
}

/* --------------------------------------------------------------- deadlines */

/*
 * The idle timeout (a bufferevent read timeout) restarts with every byte,
 * so a client that trickles one byte a second would hold its connection
 * slot for ever.  As Postfix's smtpd_per_request_deadline and
 * smtpd_min_data_rate do, a complete command line must arrive within
 * ARNIE_SMTP_TIMEOUT_SECONDS of when the session starts waiting for it, and
 * DATA within that time plus one second per ARNIE_SMTP_MIN_DATA_RATE octets
 * received; past it the client gets 421 4.4.2 and its slot is freed.
 */
static void
deadline_schedule(struct session *s, double now)
{
	double left = s->deadline - now;
	struct timeval tv;

	if (left < 0)
		left = 0;
	tv.tv_sec = (time_t)left;
	tv.tv_usec = (suseconds_t)((left - (double)tv.tv_sec) * 1e6) + 1;
	evtimer_add(s->deadline_ev, &tv);
}

/* Start the clock for a command line or a DATA phase, unless it runs. */
static void
deadline_arm(struct session *s)
{
	double now;

	if (s->deadline != 0)
		return;
	now = clock_mono();
	s->deadline = now + (double)s->sd->cfg->smtp_timeout;
	deadline_schedule(s, now);
}

static void
deadline_clear(struct session *s)
{
	s->deadline = 0;
	evtimer_del(s->deadline_ev);
}

/* octets of DATA arrived: they buy their time at the minimum rate. */
static void
deadline_extend(struct session *s, size_t octets)
{
	long rate = s->sd->cfg->smtp_min_data_rate;

	s->data_octets += octets;
	if (s->deadline != 0 && rate > 0)
		s->deadline += (double)octets / (double)rate;
}

static void
deadline_expired(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	double now = clock_mono();

	if (s->deadline == 0 || s->bev == NULL)
		return;
	if (now < s->deadline) {
		/* Extended since the timer was set. */
		deadline_schedule(s, now);
		return;
	}
	if (s->state == S_FLUSH)
		return; /* the writer has the message: see flush_finished() */
	s->deadline = 0;
	if (s->state == S_DATA) {
		log_info("DATA from %s too slow: %zu octets in %lds or more, "
		         "closing, nothing stored",
		    s->client, s->data_octets, s->sd->cfg->smtp_timeout);
		transaction_reset(s);
		close_after(s, "421 4.4.2 Message transfer too slow, closing");
	} else if (s->state == S_CMD) {
		log_info("command from %s not complete within %lds, closing",
		    s->client, s->sd->cfg->smtp_timeout);
		close_after(
		    s, "421 4.4.2 Command not completed in time, closing");
	} else if (s->state == S_CLOSING) {
		log_info("%s does not read its last reply, dropped", s->client);
		session_destroy(s);
	}
}

/* ---------------------------------------------------------------- sessions */

static void
transaction_reset(struct session *s)
{
	size_t i;

	for (i = 0; i < s->nrcpts; i++)
		free(s->rcpts[i]);
	free(s->rcpts);
	s->rcpts = NULL;
	s->nrcpts = 0;
	free(s->sender);
	s->sender = NULL;
	s->in_mail = false;
	smtp_data_release(&s->data);
	intake_free(s->in);
	s->in = NULL;
}

static void
session_destroy(struct session *s)
{
	struct smtpd *sd = s->sd;

	log_debug("disconnect from %s", s->client);
	TAILQ_REMOVE(&sd->sessions, s, entry);
	sd->nsessions--;
	if (s->bev != NULL)
		bufferevent_free(s->bev);
	event_free(s->commit_ev);
	event_free(s->deadline_ev);
	transaction_reset(s);
	free(s->helo);
	free(s);
	if (sd->stopping && sd->nsessions == 0)
		event_base_loopexit(sd->base, NULL);
}

/* The client is gone (or must be): drop the socket now, the session as
 * soon as no commit borrows its buffers. */
static void
session_close(struct session *s)
{
	if (s->state == S_COMMIT || s->state == S_FLUSH) {
		if (s->bev != NULL) {
			bufferevent_free(s->bev);
			s->bev = NULL;
		}
		return;
	}
	session_destroy(s);
}

/* RFC 5321 4.4 trace line; "for" only names a single recipient, so that a
 * Bcc list is not disclosed to the others. */
static char *
received_header(struct session *s, const char *id)
{
	struct message_trace t;
	char *h;

	memset(&t, 0, sizeof(t));
	t.helo = s->helo;
	/* No DNS lookups here: loopback clients are "localhost". */
	t.client_name = s->loopback ? "localhost" : "unknown";
	t.client_addr = s->ip;
	t.by = s->sd->hostname;
	t.by_comment = "Arnie";
	/* RFC 3848 WITH protocol types. */
	t.with = s->esmtp ? "ESMTP" : "SMTP";
	t.id = id;
	t.rcpt = s->nrcpts == 1 ? s->rcpts[0] : NULL;
	t.when = time(NULL);
	h = message_received(&t);
	return h;
}

/* Runs on the commit queue's writer thread: only hand the result over. */
static void
writer_done(void *arg, int error)
{
	struct session *s = arg;

	s->commit_error = error;
	event_active(s->commit_ev, EV_READ, 1);
}

/* Back on the loop after a flush: take the rest of the message. */
static void
flush_finished(struct session *s)
{
	s->state = S_DATA;
	if (s->bev == NULL) {
		session_destroy(s);
		return;
	}
	/* A deadline that passed meanwhile fires now (deadline_expired()
	 * leaves a flushing session alone). */
	if (s->deadline != 0)
		deadline_schedule(s, clock_mono());
	if (!s->out_blocked)
		bufferevent_enable(s->bev, EV_READ);
	session_process(s);
}

/* Back on the loop: answer DATA, then carry on with pipelined input. */
static void
commit_finished(struct session *s)
{
	struct envelope *env = intake_envelope(s->in);

	if (s->commit_error == 0 && intake_duplicate_of(s->in) != NULL) {
		log_info("%s: duplicate of %s (message-id=%s, from=<%s>, %s), "
		         "not queued again",
		    env->id, intake_duplicate_of(s->in), env->message_id,
		    env->sender, env->origin);
		reply(s, "250 2.0.0 duplicate of %s, not queued again",
		    intake_duplicate_of(s->in));
	} else if (s->commit_error == 0) {
		intake_log_fixes(s->in);
		log_info("%s: from=<%s>, size=%zu, nrcpt=%zu, %s", env->id,
		    env->sender, (size_t)env->size, env->nrcpts, env->origin);
		reply(s, "250 2.0.0 Ok: queued as %s", env->id);
	} else {
		struct spool_reply r;

		errno = s->commit_error;
		log_warn(
		    "%s: cannot queue message from %s", env->id, s->client);
		spool_commit_reply(s->commit_error, &r);
		reply(s, "%s %s %s", r.code, r.enhanced, r.text);
	}
	transaction_reset(s);
	s->state = S_CMD;

	if (s->bev == NULL) {
		session_destroy(s);
		return;
	}
	if (s->sd->stopping) {
		close_after(s, "421 4.3.2 Service shutting down, closing");
		return;
	}
	if (!s->out_blocked)
		bufferevent_enable(s->bev, EV_READ);
	session_process(s);
}

static void
writer_finished(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	if (s->state == S_FLUSH)
		flush_finished(s);
	else
		commit_finished(s);
}

/* The message of the transaction, from DATA on: its envelope (the ID is
 * taken now because the Received: line names it) and its intake. */
static struct intake *
intake_start(struct session *s)
{
	struct smtpd *sd = s->sd;
	struct intake_opts opts;
	struct envelope *env;
	struct intake *in;
	char *received;
	size_t i;

	env = envelope_new();
	spool_new_id(sd->spool, env->id);
	free(env->sender);
	env->sender = xstrdup(s->sender);
	for (i = 0; i < s->nrcpts; i++)
		envelope_add_rcpt(env, s->rcpts[i]);
	free(env->origin);
	env->origin = xasprintf("client=%s, helo=%s", s->client, s->helo);
	memset(&opts, 0, sizeof(opts));
	/* Missing Date/Message-ID/From added and what libesmtp would drop
	 * left out, so that the spool holds the bytes the relay will send;
	 * and the Bcc: fields, which no recipient may read. */
	opts.fix_opts = sd->cfg->remove_bcc ? 0 : MESSAGE_KEEP_BCC;
	opts.hostname = sd->hostname;
	opts.default_expire = sd->cfg->default_expire;
	opts.dedup_window = sd->cfg->dedup_window;
	opts.max_size = sd->cfg->max_message_size;
	received = received_header(s, env->id);
	in = intake_new(sd->spool, env, received, &opts, time(NULL));
	free(received);
	return in;
}

static void
commit_start(struct session *s)
{
	s->commit_error = 0;
	s->state = S_COMMIT;
	/* Nothing more is read until the client has its answer. */
	bufferevent_disable(s->bev, EV_READ);
	commitq_submit(s->sd->q, s->in, writer_done, s);
}

/* ---------------------------------------------------------------- commands */

static void
do_ehlo(struct session *s, const struct smtp_cmd *cmd)
{
	const struct smtpd *sd = s->sd;

	/* EHLO/HELO also abort a transaction (RFC 5321 4.1.4). */
	transaction_reset(s);
	free(s->helo);
	s->helo = xstrdup(cmd->arg);
	s->esmtp = cmd->verb == SMTP_EHLO;
	if (!s->esmtp) {
		reply(s, "250 %s", sd->hostname);
		return;
	}
	reply(s, "250-%s", sd->hostname);
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %zu", sd->cfg->max_message_size);
	reply(s, "250-8BITMIME");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250 HELP");
}

static void
do_mail(struct session *s, const struct smtp_cmd *cmd)
{
	if (s->helo == NULL)
		reply_error(s, "503 5.5.1 Error: send HELO/EHLO first");
	else if (s->in_mail)
		reply_error(s, "503 5.5.1 Error: nested MAIL command");
	else if (cmd->eightbit)
		reply_error(s, SMTPD_NO_EAI);
	else if (cmd->has_size && cmd->size > s->sd->cfg->max_message_size)
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
	else {
		s->sender = xstrdup(cmd->arg);
		s->in_mail = true;
		reply(s, "250 2.1.0 Sender ok");
	}
}

static void
do_rcpt(struct session *s, const struct smtp_cmd *cmd)
{
	if (!s->in_mail)
		reply_error(s, "503 5.5.1 Error: need MAIL command");
	else if (cmd->eightbit)
		reply_error(s, SMTPD_NO_EAI);
	else if (s->nrcpts >= (size_t)s->sd->cfg->max_recipients) {
		/* 452, not 5xx: the client sends the rest in another
		 * transaction (RFC 5321 4.5.3.1.10); not an error. */
		reply(s, "452 4.5.3 Too many recipients");
	} else {
		s->rcpts =
		    xreallocarray(s->rcpts, s->nrcpts + 1, sizeof(*s->rcpts));
		s->rcpts[s->nrcpts++] = xstrdup(cmd->arg);
		reply(s, "250 2.1.5 Recipient ok");
	}
}

static void
do_data(struct session *s)
{
	if (!s->in_mail)
		reply_error(s, "503 5.5.1 Error: need MAIL command");
	else if (s->nrcpts == 0)
		reply_error(s, "503 5.5.1 Error: need RCPT command");
	else {
		/* The intake keeps the size limit: the decoder only
		 * decodes. */
		smtp_data_init(&s->data, SIZE_MAX);
		s->in = intake_start(s);
		s->state = S_DATA;
		s->data_octets = 0;
		/* The DATA phase gets a clock of its own. */
		deadline_clear(s);
		deadline_arm(s);
		reply(s, "354 End data with <CR><LF>.<CR><LF>");
	}
}

static void
handle_command(struct session *s, const char *line, size_t len)
{
	struct smtp_cmd cmd;

	if (smtp_parse_command(line, len, &cmd) == -1) {
		reply_error(s, cmd.reply);
		return;
	}
	switch (cmd.verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
		do_ehlo(s, &cmd);
		break;
	case SMTP_MAIL:
		do_mail(s, &cmd);
		break;
	case SMTP_RCPT:
		do_rcpt(s, &cmd);
		break;
	case SMTP_DATA:
		do_data(s);
		break;
	case SMTP_RSET:
		transaction_reset(s);
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_NOOP:
		reply(s, "250 2.0.0 Ok");
		break;
	case SMTP_QUIT:
		close_after(s, "221 2.0.0 Bye");
		break;
	case SMTP_VRFY:
		reply(s, "252 2.0.0 Cannot VRFY user, but will accept message "
		         "and attempt delivery");
		break;
	case SMTP_HELP:
		reply(s, HELP_TEXT);
		break;
	case SMTP_UNKNOWN:
		arnie_panic("smtpd: parser accepted an unknown verb");
	}
}

/* The message holds more than it may: the writer thread writes it while
 * nothing more is read. */
static void
flush_start(struct session *s)
{
	s->state = S_FLUSH;
	bufferevent_disable(s->bev, EV_READ);
	commitq_flush(s->sd->q, s->in, writer_done, s);
}

/* The message is complete: commit it or refuse it. */
static void
data_end(struct session *s)
{
	enum intake_status st = intake_end(s->in);
	struct spool_reply r;

	switch (st) {
	case INTAKE_OK:
		commit_start(s);
		return;
	case INTAKE_TOOBIG:
		log_info("message from %s refused: larger than %zu octets",
		    s->client, s->sd->cfg->max_message_size);
		reply(s, "552 5.3.4 Message size exceeds fixed limit");
		break;
	case INTAKE_HEADER_TOOBIG:
		log_info("message from %s refused: header section larger than "
		         "%d octets",
		    s->client, INTAKE_HEADER_MAX);
		reply(s, "552 5.3.4 Message header section exceeds fixed "
		         "limit");
		break;
	case INTAKE_LONGLINE:
		log_info("message from %s refused: a line of %zu octets, more "
		         "than %d",
		    s->client, intake_longest_line(s->in), MESSAGE_LINE_MAX);
		reply(s, "554 5.6.0 " MESSAGE_LINE_REFUSAL);
		break;
	case INTAKE_BADFIELD:
		log_info("message from %s refused: %s", s->client,
		    intake_refusal(s->in));
		reply(s, "554 5.6.0 %s", intake_refusal(s->in));
		break;
	case INTAKE_IOERR:
		errno = intake_errno(s->in);
		log_warn("%s: cannot queue message from %s",
		    intake_envelope(s->in)->id, s->client);
		spool_commit_reply(intake_errno(s->in), &r);
		reply(s, "%s %s %s", r.code, r.enhanced, r.text);
		break;
	}
	transaction_reset(s);
	s->state = S_CMD;
}

static void
data_input(struct session *s, struct evbuffer *in)
{
	struct evbuffer_iovec v;
	enum smtp_data_status st;
	const char *out;
	size_t used, len;

	if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return;
	used = smtp_data_feed(&s->data, v.iov_base, v.iov_len, &st);
	evbuffer_drain(in, used);
	deadline_extend(s, used);
	/* Into the intake as it comes; a refused message is still read to
	 * its end, and dropped. */
	out = smtp_data_peek(&s->data, &len);
	if (len > 0)
		(void)intake_add(s->in, out, len);
	smtp_data_drop(&s->data);
	if (st != SMTP_DATA_MORE) {
		deadline_clear(s);
		data_end(s);
	} else if (intake_wants_flush(s->in))
		flush_start(s);
}

/* One step of command input; false when a complete line is not there. */
static bool
command_input(struct session *s, struct evbuffer *in)
{
	struct evbuffer_ptr eol;
	size_t eol_len, avail = evbuffer_get_length(in);
	char line[SMTP_LINE_MAX];

	eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (eol.pos < 0) {
		/* Bound what a line can make us hold; answer at its end. */
		if (avail > SMTP_LINE_MAX) {
			evbuffer_drain(in, avail);
			s->discarding = true;
		}
		return false;
	}
	/* A whole line is here: the next one gets a fresh clock. */
	deadline_clear(s);
	if (s->discarding || (size_t)eol.pos > SMTP_LINE_MAX - 2) {
		evbuffer_drain(in, (size_t)eol.pos + eol_len);
		s->discarding = false;
		reply_error(s, SMTP_REPLY_TOO_LONG);
		return true;
	}
	evbuffer_remove(in, line, (size_t)eol.pos);
	evbuffer_drain(in, eol_len);
	handle_command(s, line, (size_t)eol.pos);
	return true;
}

/* Work through the input in order for as long as answers can be given. */
static void
session_process(struct session *s)
{
	struct evbuffer *in, *out;

	if (s->bev == NULL)
		return;
	in = bufferevent_get_input(s->bev);
	out = bufferevent_get_output(s->bev);
	while (s->state == S_CMD || s->state == S_DATA) {
		if (evbuffer_get_length(out) > SMTPD_OUTPUT_MAX) {
			/* A client that sends without reading: it has the
			 * deadline's time to take its replies. */
			s->out_blocked = true;
			bufferevent_disable(s->bev, EV_READ);
			deadline_arm(s);
			return;
		}
		if (s->state == S_CMD && evbuffer_get_length(in) == 0) {
			deadline_arm(s);
			return;
		}
		if (evbuffer_get_length(in) == 0)
			return;
		if (s->state == S_DATA)
			data_input(s, in);
		else if (!command_input(s, in)) {
			deadline_arm(s);
			return;
		}
	}
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
	session_process(arg);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
	struct session *s = arg;

	/* Called when the output has been written out. */
	if (s->state == S_CLOSING) {
		session_destroy(s);
		return;
	}
	if (s->out_blocked) {
		s->out_blocked = false;
		if (s->state == S_CMD || s->state == S_DATA) {
			bufferevent_enable(s->bev, EV_READ);
			session_process(s);
		}
	}
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct session *s = arg;

	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
	    s->state != S_CLOSING) {
		log_info("idle timeout from %s", s->client);
		close_after(s, "421 4.4.2 Idle timeout, closing");
		return;
	}
	if (s->state == S_DATA)
		log_info("lost connection from %s during DATA, nothing "
		         "stored",
		    s->client);
	session_close(s);
}

/* ---------------------------------------------------------------- listener */

static bool
is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;

		return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;

		return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
	}
	return false;
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	static const char busy[] = "421 4.7.0 Too many connections\r\n";
	struct smtpd *sd = arg;
	struct session *s;
	struct timeval tv;
	const void *addr;
	int port;
	char ip[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET6) {
		addr = &((struct sockaddr_in6 *)(void *)sa)->sin6_addr;
		port = ntohs(((struct sockaddr_in6 *)(void *)sa)->sin6_port);
	} else {
		addr = &((struct sockaddr_in *)(void *)sa)->sin_addr;
		port = ntohs(((struct sockaddr_in *)(void *)sa)->sin_port);
	}
	if (inet_ntop(sa->sa_family, addr, ip, sizeof(ip)) == NULL)
		snprintf(ip, sizeof(ip), "unknown");

	if (sd->stopping || sd->nsessions >= sd->cfg->max_connections) {
		/* A fresh socket's send buffer is empty: this cannot block. */
		(void)!send(
		    fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
		log_warnx("refused connection from %s:%d: too many "
		          "connections (%d)",
		    ip, port, sd->nsessions);
		return;
	}

	s = xcalloc(1, sizeof(*s));
	s->sd = sd;
	memcpy(s->ip, ip, sizeof(ip));
	s->ipv6 = sa->sa_family == AF_INET6;
	s->loopback = is_loopback(sa);
	snprintf(s->client, sizeof(s->client), s->ipv6 ? "[%s]:%d" : "%s:%d",
	    ip, port);
	s->bev = bufferevent_socket_new(sd->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->commit_ev = event_new(sd->base, -1, 0, writer_finished, s);
	s->deadline_ev = evtimer_new(sd->base, deadline_expired, s);
	if (s->bev == NULL || s->commit_ev == NULL || s->deadline_ev == NULL)
		arnie_panic("smtpd: cannot allocate a session");
	TAILQ_INSERT_TAIL(&sd->sessions, s, entry);
	sd->nsessions++;

	bufferevent_setcb(s->bev, read_cb, write_cb, event_cb, s);
	tv.tv_sec = sd->cfg->smtp_timeout;
	tv.tv_usec = 0;
	bufferevent_set_timeouts(s->bev, &tv, &tv);
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
	log_debug("connect from %s", s->client);
	reply(s, "220 %s ESMTP Arnie", sd->hostname);
	deadline_arm(s);
}

static void
accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *sd = arg;

	if (sd->listener != NULL)
		evconnlistener_enable(sd->listener);
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct smtpd *sd = arg;
	struct timeval tv = {1, 0};

	/* EMFILE and the like would spin the loop: pause for a second. */
	log_warn("accept on %s", sd->address);
	evconnlistener_disable(l);
	evtimer_add(sd->resume_ev, &tv);
}

/* Parse "127.0.0.1", "::1" or "[::1]" with the port into ss. */
static int
make_address(
    const char *text, int port, struct sockaddr_storage *ss, socklen_t *lenp)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char host[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(text);

	memset(ss, 0, sizeof(*ss));
	if (n >= 2 && text[0] == '[' && text[n - 1] == ']') {
		text++;
		n -= 2;
	}
	if (n >= sizeof(host) || port <= 0 || port > 65535) {
		errno = EINVAL;
		return -1;
	}
	memcpy(host, text, n);
	host[n] = '\0';
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		*lenp = sizeof(*sin);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*lenp = sizeof(*sin6);
		return 0;
	}
	errno = EINVAL;
	return -1;
}

/* Bind and listen; disabled until smtpd_start(): the spool is not open
 * yet.  Close-on-exec, so that the relay program never holds the port. */
static struct evconnlistener *
listen_on(struct event_base *base, struct smtpd *sd,
    const struct sockaddr_storage *ss, socklen_t sslen)
{
	return evconnlistener_new_bind(base, accept_cb, sd,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC |
	        LEV_OPT_DISABLED,
	    SMTPD_BACKLOG, (const struct sockaddr *)ss, (int)sslen);
}

struct smtpd *
smtpd_new(struct event_base *base, const struct config *cfg)
{
	struct smtpd *sd;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int r;

	if (make_address(cfg->listen_address, cfg->listen_port, &ss, &sslen) ==
	    -1)
		return NULL;
	sd = xcalloc(1, sizeof(*sd));
	sd->base = base;
	sd->cfg = cfg;
	sd->hostname = cfg->helo_name != NULL ? cfg->helo_name : "localhost";
	TAILQ_INIT(&sd->sessions);
	/* IPv6 in brackets, so that the port reads unambiguously. */
	r = snprintf(sd->address, sizeof(sd->address),
	    ss.ss_family == AF_INET6 && cfg->listen_address[0] != '['
	        ? "[%s]:%d"
	        : "%s:%d",
	    cfg->listen_address, cfg->listen_port);
	if (r < 0 || (size_t)r >= sizeof(sd->address))
		arnie_panic("smtpd: address too long");

	sd->listener = listen_on(base, sd, &ss, sslen);
	if (sd->listener == NULL) {
		int saved = errno;

		free(sd);
		errno = saved;
		return NULL;
	}
	evconnlistener_set_error_cb(sd->listener, accept_error_cb);
	if ((sd->resume_ev = evtimer_new(base, accept_resume, sd)) == NULL)
		arnie_panic("smtpd: cannot allocate a timer");
	return sd;
}

void
smtpd_start(struct smtpd *sd, struct spool *spool, struct commitq *q)
{
	sd->spool = spool;
	sd->q = q;
	if (evconnlistener_enable(sd->listener) == -1)
		arnie_panic("smtpd: cannot enable the listener");
}

const char *
smtpd_address(const struct smtpd *sd)
{
	return sd->address;
}

static void
grace_expired(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd *sd = arg;

	log_warnx("shutdown: %d session(s) still open after the grace "
	          "period",
	    sd->nsessions);
	event_base_loopexit(sd->base, NULL);
}

void
smtpd_shutdown(struct smtpd *sd, int grace_seconds)
{
	struct session *s, *next;
	struct timeval tv = {grace_seconds, 0};

	if (sd->stopping)
		return;
	sd->stopping = true;
	if (sd->listener != NULL) {
		evconnlistener_free(sd->listener);
		sd->listener = NULL;
	}
	for (s = TAILQ_FIRST(&sd->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		/* A committing session answers its DATA first. */
		if (s->state == S_CMD || s->state == S_DATA)
			close_after(s, "421 4.3.2 Service shutting down, "
			               "closing");
	}
	if (sd->nsessions == 0) {
		event_base_loopexit(sd->base, NULL);
		return;
	}
	sd->grace_ev = evtimer_new(sd->base, grace_expired, sd);
	if (sd->grace_ev == NULL)
		arnie_panic("smtpd: cannot allocate a timer");
	evtimer_add(sd->grace_ev, &tv);
}

void
smtpd_free(struct smtpd *sd)
{
	struct session *s;

	if (sd == NULL)
		return;
	sd->stopping = false; /* no loopexit from session_destroy now */
	while ((s = TAILQ_FIRST(&sd->sessions)) != NULL)
		session_destroy(s);
	if (sd->listener != NULL)
		evconnlistener_free(sd->listener);
	if (sd->grace_ev != NULL)
		event_free(sd->grace_ev);
	if (sd->resume_ev != NULL)
		event_free(sd->resume_ev);
	free(sd);
}
