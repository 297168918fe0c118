/*
 * milter: see milter.h.  The libmilter callbacks, one struct conn per MTA
 * connection (SMFICTX private data) holding at most one struct msg, the
 * transaction in progress.
 *
 * The message is rebuilt from the milter events as the MTA would write it:
 * each header field as name ":" value CRLF, where the value keeps its
 * leading space (SMFIP_HDR_LEADSPC) and its folding, with any bare LF inside
 * a folded value (Postfix and Sendmail separate continuation lines with a
 * plain LF) turned into CRLF; then the empty line; then the body chunks
 * exactly as given (the MTA passes body lines with CRLF).  At
 * end-of-message, message_fixup() completes the header section as the
 * standalone listener does (missing Message-ID, Date and From added, fields
 * libesmtp would not relay left out), so that the spooled bytes are the
 * relayed bytes.  Then a Received: field for the hop through the MTA and
 * Arnie is prepended (message_received(), the standalone listener's shape):
 * the MTA's own Received: field never reaches the message Arnie relays,
 * since Postfix keeps it out of what milters see, so without this the hop
 * would leave no trace (RFC 5321 4.4).  It names the SMTP client as the MTA
 * saw it (the HELO name, the host name and address from the connect event)
 * and the MTA's queue ID ({i}).  A local submission has no client: the
 * "from" clause is left out, as Postfix does for such mail.  Postfix
 * presents mail from its sendmail(1) as a connection from 127.0.0.1 port
 * 0; Sendmail gives no address only to an SMTP session on standard input
 * (sendmail -Am -bs), since its sendmail(1) hands mail to the daemon over
 * SMTP (submit.cf), from 127.0.0.1 like any client.
 *
 * This module never writes a file itself: the one spool writer is
 * spool_commit().  It never returns SMFIS_DISCARD or SMFIS_ACCEPT for a
 * message before that commit has returned 0, because after DISCARD the MTA
 * forgets the message.
 */
#include "autoconf.h"

#include "milter.h"

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <libmilter/mfapi.h>

#include "commitq.h"
#include "config.h"
#include "intake.h"
#include "log.h"
#include "message.h"
#include "spool.h"
#include "xmalloc.h"

/* The transaction in progress: from MAIL to end-of-message or abort. */
struct msg {
	struct envelope *env; /* until the message starts, then in's */
	struct intake *in;    /* the message, from its first octet */
	bool smtputf8;        /* the client declared SMTPUTF8 at MAIL */
	bool eightbit_header; /* a header field holds an octet >= 0x80 */
};

/* One MTA connection; lives from connect (or first use) to close. */
struct conn {
	char *client_addr; /* for the log and the envelope's origin */
	char *client_name; /* the host name from the connect event */
	char *helo;        /* the client's HELO/EHLO name, if it sent one */
	bool local;        /* no network client: a local submission */
	bool leadspc;      /* header values come with their leading space */
	struct msg *msg;   /* NULL between transactions */
};

static const struct config *milter_cfg;
static struct spool *milter_spool;
static struct commitq *milter_q;

/*
 * libmilter's smfi_main() returns at SIGTERM without waiting for the
 * threads that run callbacks (Debian's libmilter serves connections from a
 * pool of workers; the pool stops taking work at once, but a callback under
 * way, a commit on a slow disk, runs on).  So main() must not free the
 * configuration, the spool or the sender while a callback uses them: the
 * callbacks that do are counted, and milter_drain() waits for them and
 * turns away later ones.
 */
static pthread_mutex_t busy_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t busy_done = PTHREAD_COND_INITIALIZER;
static int busy;
static bool busy_closed; /* milter_drain() called */

/* False once milter_drain() has been called: touch nothing shared. */
static bool
busy_enter(void)
{
	bool ok;

	pthread_mutex_lock(&busy_lock);
	ok = !busy_closed;
	if (ok)
		busy++;
	pthread_mutex_unlock(&busy_lock);
	return ok;
}

static void
busy_leave(void)
{
	pthread_mutex_lock(&busy_lock);
	if (--busy == 0)
		pthread_cond_broadcast(&busy_done);
	pthread_mutex_unlock(&busy_lock);
}

static void
msg_free(struct msg *m)
{
	if (m == NULL)
		return;
	envelope_free(m->env);
	intake_free(m->in);
	free(m);
}

/* The transaction's envelope, wherever it is now. */
static struct envelope *
msg_env(const struct msg *m)
{
	return m->in != NULL ? intake_envelope(m->in) : m->env;
}

static void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	msg_free(c->msg);
	free(c->client_addr);
	free(c->client_name);
	free(c->helo);
	free(c);
}

static struct conn *
conn_get(SMFICTX *ctx)
{
	struct conn *c;

	if ((c = smfi_getpriv(ctx)) != NULL)
		return c;
	c = xcalloc(1, sizeof(*c));
	c->leadspc = true;
	if (smfi_setpriv(ctx, c) != MI_SUCCESS)
		arnie_panic("smfi_setpriv failed");
	return c;
}

/* NULL-safe text for the log. */
static const char *
nz(const char *s)
{
	return s != NULL && *s != '\0' ? s : "unknown";
}

/* The MTA's queue ID: Postfix knows it at end-of-message (and at MAIL only
 * with smtpd_delay_open_until_valid_rcpt = no). */
static const char *
mta_queue_id(SMFICTX *ctx)
{
	return nz(smfi_getsymval(ctx, "i"));
}

static bool
has_8bit(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] >= 0x80)
			return true;
	return false;
}

/* An address from MAIL or RCPT: drop one pair of angle brackets.  Refuse
 * control characters, which would break the one-line envelope fields. */
static char *
strip_address(const char *arg)
{
	const char *p;
	size_t len;

	if (arg == NULL)
		return NULL;
	for (p = arg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return NULL;
	len = strlen(arg);
	if (len >= 2 && arg[0] == '<' && arg[len - 1] == '>')
		return xstrndup(arg + 1, len - 2);
	return xstrdup(arg);
}

/*
 * A message Arnie will not take (why: for the log): in divert mode the MTA
 * refuses it with this reply, since nobody else would deliver it; in copy
 * mode the MTA delivers it as it always did and Arnie only keeps no copy,
 * so one of Arnie's limits never stops the MTA's own delivery.
 */
static sfsistat
refuse(SMFICTX *ctx, struct conn *c, const char *why, const char *code,
    const char *xcode, const char *text)
{
	bool copy = milter_cfg->milter_mode == MILTER_COPY;

	if (c->msg != NULL)
		log_info("milter queue_id=%s client=%s from=<%s>: %s, %s",
		    mta_queue_id(ctx), nz(c->client_addr),
		    msg_env(c->msg)->sender, why,
		    copy ? "not copied (the MTA delivers it)" : "refused");
	else
		log_info("milter queue_id=%s client=%s: %s, %s",
		    mta_queue_id(ctx), nz(c->client_addr), why,
		    copy ? "not copied (the MTA delivers it)" : "refused");
	msg_free(c->msg);
	c->msg = NULL;
	if (copy)
		return SMFIS_ACCEPT;
	smfi_setreply(ctx, (char *)code, (char *)xcode, (char *)text);
	return SMFIS_REJECT;
}

/* The 552 reply for an oversize message, as soon as it is one. */
static sfsistat
refuse_size(SMFICTX *ctx, struct conn *c)
{
	char why[64];

	snprintf(why, sizeof(why), "message larger than MAX_MESSAGE_SIZE=%zu",
	    milter_cfg->max_message_size);
	return refuse(ctx, c, why, "552", "5.3.4",
	    "Arnie: message size exceeds fixed maximum message size");
}

/*
 * A non-ASCII address needs SMTPUTF8 (RFC 6531) all the way to the
 * recipient, and the relay (libesmtp 1.1) cannot send it: refuse the
 * address now, while the client can still be told, rather than relay it
 * in breach of the RFC after a 250.
 */
static sfsistat
refuse_eai(SMFICTX *ctx, struct conn *c)
{
	return refuse(ctx, c, "non-ASCII sender", "553", "5.6.7",
	    "Arnie: non-ASCII addresses are not supported");
}

/* The same for one recipient: refused alone (the others go on), or in
 * copy mode left out of Arnie's copy. */
static sfsistat
refuse_eai_rcpt(SMFICTX *ctx, struct conn *c, const char *rcpt)
{
	bool copy = milter_cfg->milter_mode == MILTER_COPY;

	log_info("milter queue_id=%s client=%s from=<%s>: non-ASCII recipient "
	         "<%s>, %s",
	    mta_queue_id(ctx), nz(c->client_addr), msg_env(c->msg)->sender,
	    rcpt, copy ? "not copied (the MTA delivers it)" : "refused");
	if (copy)
		return SMFIS_CONTINUE;
	smfi_setreply(ctx, "553", "5.6.7",
	    "Arnie: non-ASCII addresses are not supported");
	return SMFIS_REJECT;
}

static sfsistat
tempfail(SMFICTX *ctx, const char *text)
{
	smfi_setreply(ctx, "451", "4.3.0", (char *)text);
	return SMFIS_TEMPFAIL;
}

static sfsistat
cb_negotiate(SMFICTX *ctx, unsigned long f0, unsigned long f1, unsigned long f2,
    unsigned long f3, unsigned long *pf0, unsigned long *pf1,
    unsigned long *pf2, unsigned long *pf3)
{
	struct conn *c = conn_get(ctx);

	/* Arnie never changes the message, so it asks for no action except
	 * choosing its macros. */
	*pf0 = 0;
	/*
	 * Steps Arnie has no use for are skipped, except DATA: when it is
	 * skipped, Postfix still sends the DATA macros, in a packet of their
	 * own that gets no reply, and the first header field then waits for
	 * their TCP acknowledgement (Nagle against delayed ACK): 40 ms per
	 * message on loopback.  Answering DATA (libmilter does it for us)
	 * avoids that.  HELO is wanted: the Received: field names it.
	 */
	*pf1 = f1 & SMFIP_NOUNKNOWN;
	/* Without the leading space the header bytes cannot be rebuilt
	 * exactly; an MTA that cannot send it gets "name: value". */
	c->leadspc = (f1 & SMFIP_HDR_LEADSPC) != 0;
	if (c->leadspc)
		*pf1 |= SMFIP_HDR_LEADSPC;
	if ((f0 & SMFIF_SETSYMLIST) != 0) {
		*pf0 |= SMFIF_SETSYMLIST;
		/* Postfix sends no {client_addr} by default; {i} is known at
		 * MAIL only with smtpd_delay_open_until_valid_rcpt = no, and
		 * always at DATA (the Received: field is made at the first
		 * header) and at end-of-message. */
		if (smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr}") !=
		        MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_ENVFROM, "i") != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_DATA, "i") != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_EOM, "i") != MI_SUCCESS)
			log_warnx("milter: cannot ask for macros; the log "
			          "may lack the MTA's queue ID");
	}
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

/*
 * True when the connect event describes no network client.  Postfix's
 * cleanup(8) emulates the connection of mail submitted with sendmail(1)
 * (non_smtpd_milters) as "localhost", 127.0.0.1, port 0; Sendmail gives
 * no address at all to an SMTP session on its standard input (sendmail
 * -bs with sendmail.cf).  No TCP client ever has port 0.
 */
static bool
local_submission(const _SOCK_ADDR *hostaddr)
{
	if (hostaddr == NULL)
		return true;
	if (hostaddr->sa_family == AF_INET)
		return ((const struct sockaddr_in *)(const void *)hostaddr)
		           ->sin_port == 0;
	if (hostaddr->sa_family == AF_INET6)
		return ((const struct sockaddr_in6 *)(const void *)hostaddr)
		           ->sin6_port == 0;
	return true;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
	struct conn *c = conn_get(ctx);
	const char *addr;
	char text[INET6_ADDRSTRLEN];

	free(c->client_addr);
	c->client_addr = NULL;
	free(c->client_name);
	c->client_name = hostname != NULL ? xstrdup(hostname) : NULL;
	c->local = local_submission(hostaddr);
	if ((addr = smfi_getsymval(ctx, "{client_addr}")) != NULL) {
		c->client_addr = xstrdup(addr);
		return SMFIS_CONTINUE;
	}
	/* Fall back to the address the MTA passed with the connect event. */
	if (hostaddr != NULL && hostaddr->sa_family == AF_INET &&
	    inet_ntop(AF_INET, &((struct sockaddr_in *)hostaddr)->sin_addr,
	        text, sizeof(text)) != NULL)
		c->client_addr = xstrdup(text);
	else if (hostaddr != NULL && hostaddr->sa_family == AF_INET6 &&
	         inet_ntop(AF_INET6,
	             &((struct sockaddr_in6 *)hostaddr)->sin6_addr, text,
	             sizeof(text)) != NULL)
		c->client_addr = xstrdup(text);
	else if (hostname != NULL)
		c->client_addr = xstrdup(hostname);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_helo(SMFICTX *ctx, char *name)
{
	struct conn *c = conn_get(ctx);

	free(c->helo);
	c->helo = name != NULL && *name != '\0' ? xstrdup(name) : NULL;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_envfrom(SMFICTX *ctx, char **argv)
{
	struct conn *c = conn_get(ctx);
	char *from;
	size_t i;

	/* A new MAIL ends whatever came before on this connection. */
	msg_free(c->msg);
	c->msg = NULL;
	if ((from = strip_address(argv != NULL ? argv[0] : NULL)) == NULL) {
		smfi_setreply(
		    ctx, "553", "5.1.7", "Arnie: malformed sender address");
		return SMFIS_REJECT;
	}
	if (has_8bit(from, strlen(from))) {
		free(from);
		return refuse_eai(ctx, c);
	}
	c->msg = xcalloc(1, sizeof(*c->msg));
	c->msg->env = envelope_new();
	c->msg->env->sender = from;
	for (i = 1; argv[i] != NULL; i++)
		if (strcasecmp(argv[i], "SMTPUTF8") == 0)
			c->msg->smtputf8 = true;
	return SMFIS_CONTINUE;
}

static sfsistat
do_envrcpt(SMFICTX *ctx, char **argv)
{
	struct conn *c = conn_get(ctx);
	sfsistat rv;
	char *rcpt;

	if (c->msg == NULL)
		return tempfail(ctx, "Arnie: RCPT without MAIL");
	if (milter_cfg->max_recipients > 0 &&
	    c->msg->env->nrcpts >= (size_t)milter_cfg->max_recipients) {
		/* Refuses this recipient only; the client sends it again. */
		smfi_setreply(
		    ctx, "452", "4.5.3", "Arnie: too many recipients");
		return SMFIS_TEMPFAIL;
	}
	if ((rcpt = strip_address(argv != NULL ? argv[0] : NULL)) == NULL) {
		smfi_setreply(
		    ctx, "553", "5.1.3", "Arnie: malformed recipient address");
		return SMFIS_REJECT;
	}
	if (has_8bit(rcpt, strlen(rcpt))) {
		rv = refuse_eai_rcpt(ctx, c, rcpt);
		free(rcpt);
		return rv;
	}
	envelope_add_rcpt(c->msg->env, rcpt);
	free(rcpt);
	return SMFIS_CONTINUE;
}

/* The Received: field for env (see the top comment), written at when;
 * owned by the caller. */
static char *
received_field(
    SMFICTX *ctx, const struct conn *c, const struct envelope *env, time_t when)
{
	struct message_trace t;
	const char *qid = smfi_getsymval(ctx, "i");
	char *comment = NULL, *h;

	memset(&t, 0, sizeof(t));
	if (!c->local) {
		/* A client without HELO: its name, as Postfix writes. */
		t.helo = c->helo != NULL ? c->helo : nz(c->client_name);
		t.client_name = c->client_name;
		t.client_addr = c->client_addr;
		t.by_comment = "Arnie milter";
		/* The milter protocol does not say whether the client said
		 * HELO or EHLO; Postfix and Sendmail speak ESMTP. */
		t.with = "ESMTP";
	} else
		t.by_comment = "Arnie milter, local submission";
	t.by = milter_cfg->helo_name;
	t.id = env->id;
	if (qid != NULL && *qid != '\0')
		t.comment = comment = xasprintf("MTA queue id %s", qid);
	t.rcpt = env->nrcpts == 1 ? env->rcpts[0].addr : NULL;
	t.when = when;
	h = message_received(&t);
	free(comment);
	return h;
}

/* The message starts (its first header field, or the end of a header
 * section without any): it gets its ID, its Received: field and its
 * intake, which holds its envelope from now on. */
static void
msg_start(SMFICTX *ctx, struct conn *c, struct msg *m)
{
	struct intake_opts opts;
	struct envelope *env = m->env;
	time_t when = time(NULL);
	char *received;

	if (m->in != NULL)
		return;
	env->origin = xasprintf(
	    "client=%s, queue_id=%s", nz(c->client_addr), mta_queue_id(ctx));
	/* The ID now: a missing Message-ID is made from it. */
	spool_new_id(milter_spool, env->id);
	memset(&opts, 0, sizeof(opts));
	/* Missing Date/Message-ID/From added and what libesmtp would drop
	 * left out, so that the spool holds the bytes the relay will send;
	 * and the Bcc: fields, which no recipient may read. */
	opts.fix_opts = milter_cfg->remove_bcc ? 0 : MESSAGE_KEEP_BCC;
	opts.hostname = milter_cfg->helo_name;
	opts.default_expire = milter_cfg->default_expire;
	opts.dedup_window = milter_cfg->dedup_window;
	opts.max_size = milter_cfg->max_message_size;
	received = received_field(ctx, c, env, when);
	m->in = intake_new(milter_spool, env, received, &opts, when);
	m->env = NULL;
	free(received);
}

/*
 * The message as Arnie will not take it (intake.h decided why): refused,
 * or in copy mode not copied (refuse()); a disk that refused a write is
 * the MTA's to retry (TEMPFAIL, 452 4.3.1 for a full one).
 */
static sfsistat
refuse_intake(SMFICTX *ctx, struct conn *c, enum intake_status st)
{
	struct spool_reply r;
	char why[64], *text;
	sfsistat rv;

	switch (st) {
	case INTAKE_TOOBIG:
		return refuse_size(ctx, c);
	case INTAKE_HEADER_TOOBIG:
		snprintf(why, sizeof(why), "header section over %d octets",
		    INTAKE_HEADER_MAX);
		return refuse(ctx, c, why, "552", "5.3.4",
		    "Arnie: message header section exceeds fixed limit");
	case INTAKE_LONGLINE:
		snprintf(why, sizeof(why), "a line of %zu octets",
		    intake_longest_line(c->msg->in));
		return refuse(ctx, c, why, "554", "5.6.0",
		    "Arnie: " MESSAGE_LINE_REFUSAL);
	case INTAKE_BADFIELD:
		text = xasprintf("Arnie: %s", intake_refusal(c->msg->in));
		rv = refuse(
		    ctx, c, intake_refusal(c->msg->in), "554", "5.6.0", text);
		free(text);
		return rv;
	case INTAKE_IOERR:
	case INTAKE_OK:
		break;
	}
	errno = intake_errno(c->msg->in);
	log_warn("%s: milter queue_id=%s client=%s from=<%s>: cannot queue "
	         "message",
	    msg_env(c->msg)->id, mta_queue_id(ctx), nz(c->client_addr),
	    msg_env(c->msg)->sender);
	spool_commit_reply(intake_errno(c->msg->in), &r);
	text = xasprintf("Arnie: %s", r.text);
	smfi_setreply(ctx, (char *)r.code, (char *)r.enhanced, text);
	free(text);
	rv = SMFIS_TEMPFAIL;
	msg_free(c->msg);
	c->msg = NULL;
	return rv;
}

/* The next octets of the message; false when it is refused from now on
 * (the caller answers with refuse_intake()). */
static bool
msg_add(SMFICTX *ctx, struct conn *c, const void *data, size_t n)
{
	msg_start(ctx, c, c->msg);
	if (!intake_add(c->msg->in, data, n))
		return false;
	/* This thread may wait on the disk (a write error is told at
	 * end-of-message). */
	if (intake_wants_flush(c->msg->in))
		intake_flush(c->msg->in);
	return true;
}

/* The answer once msg_add() said false: a message too big is refused at
 * once; a disk that refused a write is told at end-of-message, as the
 * listener tells it after the data (the rest is dropped meanwhile). */
static sfsistat
msg_refused(SMFICTX *ctx, struct conn *c)
{
	enum intake_status st = intake_end(c->msg->in);

	if (st == INTAKE_IOERR)
		return SMFIS_CONTINUE;
	return refuse_intake(ctx, c, st);
}

static sfsistat
do_header(SMFICTX *ctx, char *name, char *value)
{
	struct conn *c = conn_get(ctx);
	struct msg *m = c->msg;
	const char *p, *lf;
	bool ok;

	if (m == NULL)
		return tempfail(ctx, "Arnie: header without MAIL");
	if (name == NULL)
		name = "";
	if (value == NULL)
		value = "";
	if (has_8bit(name, strlen(name)) || has_8bit(value, strlen(value)))
		m->eightbit_header = true;
	ok = msg_add(ctx, c, name, strlen(name)) && msg_add(ctx, c, ":", 1);
	if (ok && !c->leadspc && *value != '\0')
		ok = msg_add(ctx, c, " ", 1);
	/* Copy the value, making each inner line break CRLF. */
	for (p = value; ok && (lf = strchr(p, '\n')) != NULL; p = lf + 1) {
		if (lf > p && lf[-1] == '\r')
			ok = msg_add(ctx, c, p, lf - p + 1);
		else
			ok = msg_add(ctx, c, p, lf - p) &&
			     msg_add(ctx, c, "\r\n", 2);
	}
	if (ok)
		ok =
		    msg_add(ctx, c, p, strlen(p)) && msg_add(ctx, c, "\r\n", 2);
	return ok ? SMFIS_CONTINUE : msg_refused(ctx, c);
}

static sfsistat
do_eoh(SMFICTX *ctx)
{
	struct conn *c = conn_get(ctx);

	if (c->msg == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	return msg_add(ctx, c, "\r\n", 2) ? SMFIS_CONTINUE
	                                  : msg_refused(ctx, c);
}

static sfsistat
do_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct conn *c = conn_get(ctx);

	if (c->msg == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	return msg_add(ctx, c, chunk, len) ? SMFIS_CONTINUE
	                                   : msg_refused(ctx, c);
}

static sfsistat
do_eom(SMFICTX *ctx)
{
	struct conn *c = conn_get(ctx);
	struct msg *m = c->msg;
	const char *qid = mta_queue_id(ctx);
	struct envelope *env;
	bool divert = milter_cfg->milter_mode == MILTER_DIVERT;
	enum intake_status st;
	sfsistat rv;
	int err;

	if (m == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	if (msg_env(m)->nrcpts == 0) {
		rv = tempfail(ctx, "Arnie: message without recipients");
		goto out;
	}
	msg_start(ctx, c, m);
	if ((st = intake_end(m->in)) != INTAKE_OK)
		return refuse_intake(ctx, c, st);
	/* Declared and used: UTF-8 in the header section may only travel
	 * with SMTPUTF8 (RFC 6532), which the relay cannot send.  Without
	 * the declaration such bytes are the client's own 8-bit header,
	 * passed on as they came. */
	if (m->smtputf8 && m->eightbit_header)
		return refuse(ctx, c, "SMTPUTF8 with a non-ASCII header", "554",
		    "5.6.7", "Arnie: SMTPUTF8 is not supported");
	/* Durable (file and outbox/ fsynced) once this returns 0; only then
	 * may the MTA be told to forget the message. */
	if ((err = commitq_commit(milter_q, m->in)) != 0) {
		struct spool_reply r;
		char *text;

		errno = err;
		log_warn("%s: milter queue_id=%s client=%s from=<%s>: "
		         "cannot queue message",
		    msg_env(m)->id, qid, nz(c->client_addr),
		    msg_env(m)->sender);
		spool_commit_reply(err, &r);
		text = xasprintf("Arnie: %s", r.text);
		smfi_setreply(ctx, (char *)r.code, (char *)r.enhanced, text);
		free(text);
		rv = SMFIS_TEMPFAIL;
		goto out;
	}
	env = msg_env(m);
	if (intake_duplicate_of(m->in) != NULL) {
		/* Accepted already: the MTA forgets it as it would have. */
		log_info("%s: milter queue_id=%s client=%s: duplicate of %s "
		         "(message-id=%s, from=<%s>), not queued again",
		    env->id, qid, nz(c->client_addr),
		    intake_duplicate_of(m->in), env->message_id, env->sender);
		rv = divert ? SMFIS_DISCARD : SMFIS_ACCEPT;
		goto out;
	}
	intake_log_fixes(m->in);
	/* The size queued and relayed: the completed message's. */
	log_info("%s: milter queue_id=%s client=%s from=<%s> nrcpt=%zu "
	         "size=%zu (%s)",
	    env->id, qid, nz(c->client_addr), env->sender, env->nrcpts,
	    (size_t)env->size, divert ? "divert" : "copy");
	rv = divert ? SMFIS_DISCARD : SMFIS_ACCEPT;
out:
	msg_free(c->msg);
	c->msg = NULL;
	return rv;
}

/* The reply for a callback that comes after milter_drain(). */
static sfsistat
shutting_down(SMFICTX *ctx)
{
	smfi_setreply(ctx, "421", "4.3.2", "Arnie: service shutting down");
	return SMFIS_TEMPFAIL;
}

/* The callbacks that use the configuration, the spool or the sender run
 * counted (see busy_enter()). */
#define BUSY_CALLBACK(name, params, args)                                      \
	static sfsistat cb_##name params                                       \
	{                                                                      \
		sfsistat rv;                                                   \
                                                                               \
		if (!busy_enter())                                             \
			return shutting_down(ctx);                             \
		rv = do_##name args;                                           \
		busy_leave();                                                  \
		return rv;                                                     \
	}
BUSY_CALLBACK(envrcpt, (SMFICTX * ctx, char **argv), (ctx, argv))
BUSY_CALLBACK(
    header, (SMFICTX * ctx, char *name, char *value), (ctx, name, value))
BUSY_CALLBACK(eoh, (SMFICTX * ctx), (ctx))
BUSY_CALLBACK(
    body, (SMFICTX * ctx, unsigned char *chunk, size_t len), (ctx, chunk, len))
BUSY_CALLBACK(eom, (SMFICTX * ctx), (ctx))

static sfsistat
cb_abort(SMFICTX *ctx)
{
	struct conn *c = smfi_getpriv(ctx);

	if (c != NULL) {
		msg_free(c->msg);
		c->msg = NULL;
	}
	return SMFIS_CONTINUE;
}

static sfsistat
cb_close(SMFICTX *ctx)
{
	conn_free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

static struct smfiDesc milter_desc = {
    .xxfi_name = "arnie-milter",
    .xxfi_version = SMFI_VERSION,
    .xxfi_flags = 0,
    .xxfi_connect = cb_connect,
    .xxfi_helo = cb_helo,
    .xxfi_envfrom = cb_envfrom,
    .xxfi_envrcpt = cb_envrcpt,
    .xxfi_header = cb_header,
    .xxfi_eoh = cb_eoh,
    .xxfi_body = cb_body,
    .xxfi_eom = cb_eom,
    .xxfi_abort = cb_abort,
    .xxfi_close = cb_close,
    .xxfi_unknown = NULL,
    .xxfi_data = NULL,
    .xxfi_negotiate = cb_negotiate,
};

int
milter_drain(int seconds)
{
	struct timespec deadline;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += seconds;
	pthread_mutex_lock(&busy_lock);
	busy_closed = true;
	while (busy > 0 && rc == 0)
		rc = pthread_cond_timedwait(&busy_done, &busy_lock, &deadline);
	rc = busy == 0 ? 0 : -1;
	pthread_mutex_unlock(&busy_lock);
	return rc;
}

void
milter_init(const struct config *cfg, struct spool *spool, struct commitq *q)
{
	milter_cfg = cfg;
	milter_spool = spool;
	milter_q = q;
}

const char *
milter_socket_path(const char *conn)
{
	if (strncmp(conn, "unix:", 5) == 0)
		return conn + 5;
	if (strncmp(conn, "local:", 6) == 0)
		return conn + 6;
	if (strchr(conn, ':') == NULL)
		return conn; /* libmilter's default type is unix */
	return NULL;
}

int
milter_listen(const char *conn)
{
	const char *path = milter_socket_path(conn);

	if (smfi_setconn((char *)conn) != MI_SUCCESS) {
		log_warnx("ARNIE_MILTER_SOCKET=%s: not a milter socket", conn);
		return -1;
	}
	if (smfi_register(milter_desc) != MI_SUCCESS) {
		log_warnx("smfi_register failed");
		return -1;
	}
	/* Remove a stale unix socket left by a crash, then bind and listen
	 * now, so a busy port is reported before anything else starts. */
	if (smfi_opensocket(path != NULL) != MI_SUCCESS) {
		log_warnx(
		    "cannot listen on %s (in use, or no permission)", conn);
		return -1;
	}
	/* libmilter creates the socket under the umask; the MTA runs as
	 * another user (postfix), which must be able to connect. */
	if (path != NULL && chmod(path, 0660) == -1) {
		log_warn("chmod %s", path);
		return -1;
	}
	return 0;
}
