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
 * relayed bytes.  No Received: field is added: the MTA writes its own
 * (Postfix keeps it out of what milters see, so none is spooled).
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
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libmilter/mfapi.h>

#include "config.h"
#include "log.h"
#include "message.h"
#include "sender.h"
#include "spool.h"
#include "xmalloc.h"

/* The transaction in progress: from MAIL to end-of-message or abort. */
struct msg {
	struct envelope *env;
	char *buf; /* the rebuilt message */
	size_t len;
	size_t cap;
	bool too_big; /* refused with 552; ignore the rest */
};

/* One MTA connection; lives from connect (or first use) to close. */
struct conn {
	char *client_addr; /* for the log and the envelope's origin */
	bool leadspc;      /* header values come with their leading space */
	struct msg *msg;   /* NULL between transactions */
};

static const struct config *milter_cfg;
static struct spool *milter_spool;
static struct sender *milter_sender;

static void
msg_free(struct msg *m)
{
	if (m == NULL)
		return;
	envelope_free(m->env);
	free(m->buf);
	free(m);
}

static void
conn_free(struct conn *c)
{
	if (c == NULL)
		return;
	msg_free(c->msg);
	free(c->client_addr);
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
 * Append n bytes to the message.  Returns false once the message is larger
 * than MAX_MESSAGE_SIZE (0: no limit); the buffer is then released, since
 * the message will be refused anyway.
 */
static bool
msg_append(struct msg *m, const void *data, size_t n)
{
	size_t max = milter_cfg->max_message_size;
	size_t cap;

	if (m->too_big)
		return false;
	if (max > 0 && (n > max || m->len > max - n)) {
		m->too_big = true;
		free(m->buf);
		m->buf = NULL;
		m->len = m->cap = 0;
		return false;
	}
	if (n > m->cap - m->len) {
		cap = m->cap > 0 ? m->cap : 8192;
		while (cap - m->len < n) {
			if (cap > SIZE_MAX / 2)
				arnie_panic("message buffer overflow");
			cap *= 2;
		}
		m->buf = xreallocarray(m->buf, 1, cap);
		m->cap = cap;
	}
	memcpy(m->buf + m->len, data, n);
	m->len += n;
	return true;
}

/* The 552 reply for an oversize message; REJECT makes the MTA refuse it. */
static sfsistat
refuse_size(SMFICTX *ctx, struct conn *c)
{
	log_warnx("milter queue_id=%s client=%s: message larger than "
	          "MAX_MESSAGE_SIZE=%zu, refused",
	    mta_queue_id(ctx), nz(c->client_addr),
	    milter_cfg->max_message_size);
	smfi_setreply(ctx, "552", "5.3.4",
	    "Arnie: message size exceeds fixed maximum message size");
	msg_free(c->msg);
	c->msg = NULL;
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
	 * avoids that.
	 */
	*pf1 = f1 & (SMFIP_NOHELO | SMFIP_NOUNKNOWN);
	/* Without the leading space the header bytes cannot be rebuilt
	 * exactly; an MTA that cannot send it gets "name: value". */
	c->leadspc = (f1 & SMFIP_HDR_LEADSPC) != 0;
	if (c->leadspc)
		*pf1 |= SMFIP_HDR_LEADSPC;
	if ((f0 & SMFIF_SETSYMLIST) != 0) {
		*pf0 |= SMFIF_SETSYMLIST;
		/* Postfix sends no {client_addr} by default; {i} is known at
		 * MAIL only with smtpd_delay_open_until_valid_rcpt = no, and
		 * always at end-of-message. */
		if (smfi_setsymlist(ctx, SMFIM_CONNECT, "{client_addr}") !=
		        MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_ENVFROM, "i") != MI_SUCCESS ||
		    smfi_setsymlist(ctx, SMFIM_EOM, "i") != MI_SUCCESS)
			log_warnx("milter: cannot ask for macros; the log "
			          "may lack the MTA's queue ID");
	}
	*pf2 = 0;
	*pf3 = 0;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_connect(SMFICTX *ctx, char *hostname, _SOCK_ADDR *hostaddr)
{
	struct conn *c = conn_get(ctx);
	const char *addr;
	char text[INET6_ADDRSTRLEN];

	free(c->client_addr);
	c->client_addr = NULL;
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
cb_envfrom(SMFICTX *ctx, char **argv)
{
	struct conn *c = conn_get(ctx);
	char *from;

	/* A new MAIL ends whatever came before on this connection. */
	msg_free(c->msg);
	c->msg = NULL;
	if ((from = strip_address(argv != NULL ? argv[0] : NULL)) == NULL) {
		smfi_setreply(
		    ctx, "553", "5.1.7", "Arnie: malformed sender address");
		return SMFIS_REJECT;
	}
	c->msg = xcalloc(1, sizeof(*c->msg));
	c->msg->env = envelope_new();
	c->msg->env->sender = from;
	return SMFIS_CONTINUE;
}

static sfsistat
cb_envrcpt(SMFICTX *ctx, char **argv)
{
	struct conn *c = conn_get(ctx);
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
	envelope_add_rcpt(c->msg->env, rcpt);
	free(rcpt);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_header(SMFICTX *ctx, char *name, char *value)
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
	ok = msg_append(m, name, strlen(name)) && msg_append(m, ":", 1);
	if (ok && !c->leadspc && *value != '\0')
		ok = msg_append(m, " ", 1);
	/* Copy the value, making each inner line break CRLF. */
	for (p = value; ok && (lf = strchr(p, '\n')) != NULL; p = lf + 1) {
		if (lf > p && lf[-1] == '\r')
			ok = msg_append(m, p, lf - p + 1);
		else
			ok = msg_append(m, p, lf - p) &&
			     msg_append(m, "\r\n", 2);
	}
	if (ok)
		ok = msg_append(m, p, strlen(p)) && msg_append(m, "\r\n", 2);
	if (!ok)
		return refuse_size(ctx, c);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_eoh(SMFICTX *ctx)
{
	struct conn *c = conn_get(ctx);

	if (c->msg == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	if (!msg_append(c->msg, "\r\n", 2))
		return refuse_size(ctx, c);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	struct conn *c = conn_get(ctx);

	if (c->msg == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	if (!msg_append(c->msg, chunk, len))
		return refuse_size(ctx, c);
	return SMFIS_CONTINUE;
}

static sfsistat
cb_eom(SMFICTX *ctx)
{
	struct conn *c = conn_get(ctx);
	struct msg *m = c->msg;
	struct message_fix fix;
	struct iovec *iov = NULL;
	const char *qid = mta_queue_id(ctx);
	const char *buf;
	bool divert = milter_cfg->milter_mode == MILTER_DIVERT;
	sfsistat rv;
	int n;

	/* Zeroed first: message_fix_clear() at out: accepts it as is. */
	memset(&fix, 0, sizeof(fix));
	if (m == NULL)
		return tempfail(ctx, "Arnie: message without MAIL");
	if (m->too_big)
		return refuse_size(ctx, c);
	if (m->env->nrcpts == 0) {
		rv = tempfail(ctx, "Arnie: message without recipients");
		goto out;
	}
	m->env->origin =
	    xasprintf("client=%s, queue_id=%s", nz(c->client_addr), qid);
	/* The ID is taken now because a missing Message-ID is made from it. */
	spool_new_id(milter_spool, m->env->id);
	buf = m->buf != NULL ? m->buf : "";
	/* Add missing Date/Message-ID/From and leave out what libesmtp would
	 * drop, so that the spool holds the bytes the relay will send. */
	message_fixup(&fix, buf, m->len, m->env->id, m->env->sender,
	    milter_cfg->helo_name, time(NULL));
	n = message_iovcnt(&fix);
	iov = xreallocarray(NULL, (size_t)n, sizeof(*iov));
	if ((n = message_iov(&fix, buf, m->len, iov, n)) < 0)
		arnie_panic("message_iov: iovec array too small");
	/* Durable (file and outbox/ fsynced) once this returns 0; only then
	 * may the MTA be told to forget the message. */
	if (spool_commit(milter_spool, m->env, iov, n) == -1) {
		log_warn("%s: milter queue_id=%s client=%s from=<%s>: "
		         "cannot queue message",
		    m->env->id, qid, nz(c->client_addr), m->env->sender);
		rv = tempfail(ctx, "Arnie: queue file write error");
		goto out;
	}
	message_fix_log(&fix, m->env->id);
	/* The size queued and relayed: the completed message's. */
	log_info("%s: milter queue_id=%s client=%s from=<%s> nrcpt=%zu "
	         "size=%zu (%s)",
	    m->env->id, qid, nz(c->client_addr), m->env->sender, m->env->nrcpts,
	    (size_t)m->env->size, divert ? "divert" : "copy");
	if (milter_sender != NULL)
		sender_wake(milter_sender);
	rv = divert ? SMFIS_DISCARD : SMFIS_ACCEPT;
out:
	free(iov);
	message_fix_clear(&fix);
	msg_free(c->msg);
	c->msg = NULL;
	return rv;
}

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
    .xxfi_helo = NULL,
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

void
milter_init(
    const struct config *cfg, struct spool *spool, struct sender *sender)
{
	milter_cfg = cfg;
	milter_spool = spool;
	milter_sender = sender;
}

/* The path of a "unix:" or "local:" socket, or NULL for inet sockets. */
static const char *
unix_path(const char *conn)
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
	const char *path = unix_path(conn);

	if (milter_cfg == NULL)
		arnie_panic("milter_listen before milter_init");
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
