/*
 * session: see session.h.  One libesmtp session per session_run(): one
 * connection, every message on it, then QUIT.
 *
 * What this module does: hands libesmtp the TLS context (tls.h), the AUTH
 * credentials (only over TLS), and each message's bytes through a read
 * callback on the descriptor it was given; watches the replies; and turns
 * libesmtp's per-message and per-recipient statuses into relay_results,
 * asking reply.h what each reply means, as soon as each message ends.
 *
 * What it never does: open a file, log or keep a password or anything the
 * client wrote during AUTH, or retry by itself.
 *
 * libesmtp 1.1 facts this module relies on (read from its source, checked
 * by the tests):
 * - It reports several things only indirectly.  A failed AUTH (535) is not
 *   an error for it: it tries the next mechanism and then goes on to MAIL
 *   unauthenticated.  A failed TLS handshake or a missing STARTTLS still
 *   makes smtp_start_session() return success.  So the module watches the
 *   replies through the protocol monitor (reads only, never what is
 *   written) and takes the event callback's reports, and decides from the
 *   per-message statuses, never from the return value alone.
 * - It reads a reply code with strtol(): "2500 ok" is code 2500, a failed
 *   recipient, and with no recipient left it still sends DATA's body as an
 *   empty message.  So the monitor checks every reply line and shuts the
 *   connection at the first malformed one (protocol_error()).
 * - Its own certificate name check compares the CNAME-resolved name with
 *   DNS names only.  OpenSSL already checked the configured name (or IP
 *   address) during the handshake when verification is on, so the
 *   SMTP_EV_WRONG_PEER_CERTIFICATE event is overruled.
 * - smtp_set_timeout() takes milliseconds (its minimum is 1000).
 * - Requesting BODY=8BITMIME makes 8BITMIME a required extension: a server
 *   without it would make the whole session quit.  So no BODY= is sent.
 * - It never sets TCP_NODELAY and writes a message in several write(2)s:
 *   Nagle's algorithm then holds each message's last piece until the
 *   server's delayed ACK (40 ms).  It does not show its socket, so the
 *   module finds it (set_upstream_nodelay()).
 */
#include "autoconf.h"

#include "session.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* <openssl/ssl.h> first: libesmtp.h declares smtp_starttls_set_ctx() only
 * when it sees OpenSSL's types; auth-client.h before it for
 * smtp_auth_set_context(). */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <auth-client.h>
#include <libesmtp.h>

#include "log.h"
#include "reply.h"
#include "secret.h"
#include "tls.h"
#include "xmalloc.h"

#define BODY_CHUNK 16384
#define LINE_MAX_MON 1024
/* Header lines looked at by header_check(), at most. */
#define HEADER_SCAN_MAX (256 * 1024)

struct session {
	char *host;
	char *name; /* "host:port" */
	bool use_tls;
	bool tls_verify;
	char *username;
	char *password; /* secret */
	char *helo;
	long timeout;
	struct tls *tls; /* NULL without TLS */
};

enum auth_state {
	AUTH_NOT_TRIED,
	AUTH_RUNNING,
	AUTH_DONE,
	AUTH_REFUSED,
};

struct run;

/* Where a message's bytes come from. */
struct body {
	struct run *run;
	int fd;
	off_t offset;
	uint64_t size;
	uint64_t done;
	int error; /* errno of a failed read, sticky */
};

/* What one session learnt besides libesmtp's statuses, and what it needs
 * to turn them into results. */
struct run {
	struct session *s;
	struct session_msg *msgs;
	size_t n;
	smtp_message_t *smsg;     /* NULL: nothing to send */
	smtp_recipient_t **srcpt; /* per message, per rcpts[] entry */
	bool *reported;           /* given to fn */
	session_result_fn *fn;
	session_settle_fn *settle;
	void *arg;
	bool stopped; /* a callback asked to stop */
	int started;  /* smtp_start_session()'s result */
	size_t attempted;
	char sreason[RELAY_REPLY_MAX];
	char qw_reply[RELAY_REPLY_MAX];
	bool connected;
	bool tls_ok;
	bool starttls_missing;
	bool ext_missing;
	bool in_starttls;
	char tls_error[RELAY_REPLY_MAX];
	enum auth_state auth;
	char auth_reply[RELAY_REPLY_MAX];
	int last_code;
	char last_reply[RELAY_REPLY_MAX];
	char first_421[RELAY_REPLY_MAX];
	char protocol_error[RELAY_REPLY_MAX]; /* a malformed reply, if any */
	int sock; /* the upstream's socket, -1 until connected */
	int sock_hint; /* where it most likely is (lowest_free_fd()) */
	char line[LINE_MAX_MON];
	size_t linelen;
	bool line_overflow;
};

static pthread_once_t auth_once = PTHREAD_ONCE_INIT;

static void
auth_init_once(void)
{
	auth_client_init();
}

/* ------------------------------------------------------------ results */

/* A reply's class as a relay_result's outcome. */
static enum relay_status
status_of(enum reply_class c)
{
	switch (c) {
	case REPLY_OK:
		return RELAY_OK;
	case REPLY_PERM:
		return RELAY_PERMFAIL;
	default:
		return RELAY_TEMPFAIL;
	}
}

static bool
queue_wide(int code, const char *text, enum reply_stage stage)
{
	return reply_is_queue_wide(reply_classify(code, text, stage));
}

/* Copy text into dst as one printable line: runs of CR, LF and other
 * control characters become one space, trailing blanks go. */
static void
one_line(char *dst, size_t dstlen, const char *text)
{
	size_t n = 0;
	bool space = false;
	const unsigned char *p;

	if (dstlen == 0)
		return;
	for (p = (const unsigned char *)text; p != NULL && *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f) {
			space = n > 0;
			continue;
		}
		if (space) {
			if (n + 1 >= dstlen)
				break;
			dst[n++] = ' ';
			space = false;
		}
		if (n + 1 >= dstlen)
			break;
		dst[n++] = (char)*p;
	}
	while (n > 0 && dst[n - 1] == ' ')
		n--;
	dst[n] = '\0';
}

/* "code [x.y.z] text" from a libesmtp status, which keeps the code and the
 * enhanced status apart from the text. */
static void
format_status(const smtp_status_t *st, char *dst, size_t dstlen)
{
	char text[RELAY_REPLY_MAX];
	int n;

	one_line(text, sizeof(text), st->text);
	if (st->enh_class != 0)
		n = snprintf(dst, dstlen, "%d %d.%d.%d %s", st->code,
		    st->enh_class, st->enh_subject, st->enh_detail, text);
	else
		n = snprintf(dst, dstlen, "%d %s", st->code, text);
	if (n < 0)
		dst[0] = '\0';
	/* A truncated reply is still the useful start of the reply. */
	one_line(dst, dstlen, dst);
}

static void
set_result(struct relay_result *res, enum relay_status status, int code,
    const char *reply)
{
	res->status = status;
	res->code = code;
	one_line(res->reply, sizeof(res->reply), reply);
}

static void
set_result_status(struct relay_result *res, const smtp_status_t *st,
    enum reply_stage stage)
{
	res->status = status_of(reply_classify(st->code, st->text, stage));
	res->code = st->code;
	format_status(st, res->reply, sizeof(res->reply));
}

/* ------------------------------------------------------------ callbacks */

/*
 * The message's bytes are all out and libesmtp is about to send the "."
 * that hands it over: the results of the message before must be recorded
 * first (session_settle_fn).  False when the caller asks to stop; the
 * message is then broken off, not completed.
 */
static bool
settled(struct run *r)
{
	if (r->settle == NULL || r->stopped)
		return !r->stopped;
	if (r->settle(r->arg) == -1) {
		r->stopped = true;
		if (r->sock != -1)
			(void)shutdown(r->sock, SHUT_RDWR);
	}
	return !r->stopped;
}

/* libesmtp frees *ctx with free(); xmalloc() memory qualifies. */
static const char *
body_cb(void **ctx, int *len, void *arg)
{
	struct body *b = arg;
	size_t want;
	ssize_t got;
	int saved = errno;

	if (*ctx == NULL)
		*ctx = xmalloc(BODY_CHUNK);
	if (len == NULL) {
		/* Rewind, once per transfer of this message. */
		b->done = 0;
		b->error = 0;
		errno = saved;
		return NULL;
	}
	if (b->error != 0)
		goto fail;
	want = BODY_CHUNK;
	if (b->size - b->done < want)
		want = (size_t)(b->size - b->done);
	if (want == 0 && !settled(b->run)) {
		b->error = ECANCELED;
		goto fail;
	}
	got = 0;
	while (want > 0 && (got = pread(b->fd, *ctx, want,
	                        b->offset + (off_t)b->done)) == -1 &&
	       errno == EINTR)
		continue;
	if (got < 0 || (size_t)got < want) {
		/* A read error or a file shorter than its envelope says: never
		 * let a truncated message end with a good "." line. */
		b->error = got < 0 && errno != 0 ? errno : EIO;
		goto fail;
	}
	b->done += (uint64_t)got;
	*len = (int)got;
	errno = saved;
	return *ctx;
fail:
	/* libesmtp checks errno after its reader runs dry and then drops the
	 * connection instead of ending DATA. */
	*len = 0;
	errno = b->error;
	return NULL;
}

static int
interact_cb(auth_client_request_t req, char **result, int fields, void *arg)
{
	static char empty[] = "";
	struct session *s = arg;
	int i;

	for (i = 0; i < fields; i++) {
		if (req[i].flags & AUTH_USER)
			result[i] = s->username;
		else if (req[i].flags & AUTH_PASS)
			result[i] = s->password;
		else if (req[i].flags & AUTH_REALM)
			result[i] = empty;
		else
			return 0;
	}
	return 1;
}

/*
 * A malformed reply line (reply_line_ok()) ends the session at once,
 * before anything more is written: libesmtp reads "2500 ok" as code 2500,
 * which is no success, and still sends the message (an empty one when no
 * recipient was accepted), so the upstream would store something and Arnie
 * send the message again.  Nothing is taken twice this way: the queue
 * pauses (a protocol error is the upstream's state) and the next probe
 * tells whether the upstream has recovered.
 */
static void
protocol_error(struct run *r, const char *line)
{
	char text[200];

	if (r->protocol_error[0] != '\0')
		return;
	one_line(text, sizeof(text), line);
	snprintf(r->protocol_error, sizeof(r->protocol_error),
	    "upstream protocol error: malformed reply \"%s\"", text);
	if (r->sock != -1)
		(void)shutdown(r->sock, SHUT_RDWR);
}

/* One complete reply line from the server (without CRLF). */
static void
monitor_line(struct run *r, const char *line, size_t len)
{
	int code;
	char text[RELAY_REPLY_MAX];

	if (!reply_line_ok(line, len)) {
		char copy[LINE_MAX_MON];

		memcpy(copy, line, len);
		copy[len] = '\0';
		protocol_error(r, copy);
		return;
	}
	if (len > 3 && line[3] != ' ')
		return; /* not the last line of the reply */
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	one_line(text, sizeof(text), line);
	r->last_code = code;
	snprintf(r->last_reply, sizeof(r->last_reply), "%s", text);
	if (code == 421 && r->first_421[0] == '\0')
		snprintf(r->first_421, sizeof(r->first_421), "%s", text);
	if (r->in_starttls) {
		r->in_starttls = false;
		if (code / 100 != 2)
			snprintf(r->tls_error, sizeof(r->tls_error),
			    "STARTTLS refused: %.400s", text);
	}
	if (r->auth == AUTH_RUNNING && code != 334) {
		if (code / 100 == 2) {
			r->auth = AUTH_DONE;
		} else {
			r->auth = AUTH_REFUSED;
			if (r->auth_reply[0] == '\0')
				snprintf(r->auth_reply, sizeof(r->auth_reply),
				    "%s", text);
		}
	}
}

/*
 * libesmtp's protocol monitor: reads arrive as raw (decrypted) chunks,
 * writes as whole flushed buffers.  Of what is written only the first
 * bytes are looked at, to know that an AUTH or STARTTLS command starts; it
 * is never copied or logged since it carries the credentials.
 */
static void
monitor_cb(const char *buf, int buflen, int writing, void *arg)
{
	struct run *r = arg;
	int i;

	if (writing == SMTP_CB_WRITING) {
		if (buflen >= 5 && strncasecmp(buf, "AUTH ", 5) == 0 &&
		    r->auth != AUTH_RUNNING)
			r->auth = AUTH_RUNNING;
		else if (buflen >= 8 && strncasecmp(buf, "STARTTLS", 8) == 0)
			r->in_starttls = true;
		return;
	}
	if (writing != SMTP_CB_READING)
		return;
	for (i = 0; i < buflen; i++) {
		char c = buf[i];

		if (c == '\n') {
			size_t n = r->linelen;

			if (n > 0 && r->line[n - 1] == '\r')
				n--;
			if (!r->line_overflow)
				monitor_line(r, r->line, n);
			r->linelen = 0;
			r->line_overflow = false;
			continue;
		}
		if (r->linelen + 1 >= sizeof(r->line)) {
			/* Keep the start: the code is what matters. */
			r->line_overflow = r->linelen < 4;
			continue;
		}
		r->line[r->linelen++] = c;
	}
}

/*
 * The upstream's socket: the one TCP socket of this process (the relay
 * program's control socket is a unix one).  TCP_NODELAY goes on it (see
 * the top comment), and protocol_error() may shut it.  /proc/self/fd tells
 * which descriptors are open; without /proc every one below the limit is
 * tried (at most SOCKET_SCAN_MAX).
 */
#define SOCKET_SCAN_MAX 65536

static bool
is_tcp(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss), tlen = sizeof(int);
	struct stat sb;
	int type;

	return fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode) &&
	       getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 &&
	       type == SOCK_STREAM &&
	       getsockname(fd, (struct sockaddr *)&ss, &len) == 0 &&
	       (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
}

/* The lowest descriptor free now: the one the upstream's socket most
 * likely gets (the hint of set_upstream_nodelay()). */
static int
lowest_free_fd(void)
{
	int fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);

	if (fd != -1)
		close(fd);
	return fd;
}

/* hint: a descriptor tried first (lowest_free_fd() before the session),
 * which saves a look at each descriptor of a batch's message files. */
static int
set_upstream_nodelay(int hint)
{
	struct dirent *de;
	int one = 1, found = -1, fd;
	long max;
	DIR *dir;

	if (hint > STDERR_FILENO && is_tcp(hint))
		found = hint;
	else if ((dir = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(dir)) != NULL) {
			fd = atoi(de->d_name);
			if (fd > STDERR_FILENO && fd != dirfd(dir) && is_tcp(fd))
				found = fd;
		}
		closedir(dir);
	} else {
		max = sysconf(_SC_OPEN_MAX);
		if (max < 0 || max > SOCKET_SCAN_MAX)
			max = SOCKET_SCAN_MAX;
		for (fd = STDERR_FILENO + 1; fd < max && found == -1; fd++)
			if (is_tcp(fd))
				found = fd;
	}
	if (found != -1)
		(void)setsockopt(found, IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));
	return found;
}

static void message_ended(struct run *r, smtp_message_t msg);

/* The certificate and cipher events: all end the session, but for the
 * ones verification being off forgives. */
static void
tls_event(struct run *r, int event_no, va_list ap)
{
	struct session *s = r->s;
	long vfy;
	int *ok, bits;

	switch (event_no) {
	case SMTP_EV_INVALID_PEER_CERTIFICATE:
		vfy = va_arg(ap, long);
		ok = va_arg(ap, int *);
		/* Reached only when verification is off, or OpenSSL would
		 * have failed the handshake. */
		if (!s->tls_verify)
			*ok = 1;
		else if (r->tls_error[0] == '\0')
			snprintf(r->tls_error, sizeof(r->tls_error),
			    "certificate verify failed: %s",
			    X509_verify_cert_error_string(vfy));
		break;
	case SMTP_EV_NO_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		if (!s->tls_verify)
			*ok = 1;
		else
			snprintf(r->tls_error, sizeof(r->tls_error),
			    "the server sent no certificate");
		break;
	case SMTP_EV_WRONG_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		/* libesmtp's own matcher knows DNS names only and uses the
		 * CNAME-resolved name; OpenSSL has already checked the
		 * configured name when verification is on. */
		*ok = 1;
		break;
	case SMTP_EV_WEAK_CIPHER:
		bits = va_arg(ap, int);
		ok = va_arg(ap, int *);
		*ok = 0;
		snprintf(r->tls_error, sizeof(r->tls_error),
		    "weak cipher (%d bits)", bits);
		break;
	case SMTP_EV_NO_CLIENT_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		/* fall through */
	case SMTP_EV_UNUSABLE_CLIENT_CERTIFICATE:
		snprintf(r->tls_error, sizeof(r->tls_error),
		    "unusable client certificate in libesmtp's user folder");
		break;
	case SMTP_EV_UNUSABLE_CA_LIST:
		snprintf(
		    r->tls_error, sizeof(r->tls_error), "unusable CA list");
		break;
	}
}

static void
event_cb(smtp_session_t session, int event_no, void *arg, ...)
{
	struct run *r = arg;
	struct session *s = r->s;
	const smtp_status_t *mst;
	smtp_message_t msg;
	va_list ap;
	int *ok, bits;
	const char *cipher;
	SSL *ssl;

	(void)session;
	va_start(ap, arg);
	switch (event_no) {
	case SMTP_EV_MAILSTATUS:
		/* A refused MAIL ends the message: libesmtp goes on to the
		 * next one without a MESSAGESENT event. */
		(void)va_arg(ap, const char *);
		msg = va_arg(ap, smtp_message_t);
		mst = smtp_reverse_path_status(msg);
		if (mst != NULL && mst->code / 100 != 2)
			message_ended(r, msg);
		break;
	case SMTP_EV_MESSAGESENT:
		/* The reply to DATA or to the end of DATA: final. */
		message_ended(r, va_arg(ap, smtp_message_t));
		break;
	case SMTP_EV_CONNECT:
		r->connected = true;
		r->sock = set_upstream_nodelay(r->sock_hint);
		log_debug("relay %s: connected", s->name);
		break;
	case SMTP_EV_DISCONNECT:
		log_debug("relay %s: disconnected", s->name);
		break;
	case SMTP_EV_STARTTLS_OK:
		ssl = va_arg(ap, SSL *);
		cipher = va_arg(ap, const char *);
		bits = va_arg(ap, int);
		r->tls_ok = true;
		log_debug("relay %s: TLS established (%s, %s, %d bits)",
		    s->name, ssl != NULL ? SSL_get_version(ssl) : "?",
		    cipher != NULL ? cipher : "?", bits);
		/* Its session tickets out of libesmtp's way (tls.h). */
		if (ssl != NULL && SSL_version(ssl) == TLS1_3_VERSION &&
		    tls_settle(ssl, s->timeout * 1000) == -1)
			snprintf(r->tls_error, sizeof(r->tls_error),
			    "no reply to NOOP after STARTTLS: %s",
			    strerror(errno));
		break;
	case SMTP_EV_EXTNA_STARTTLS:
		r->starttls_missing = true;
		break;
	case SMTP_EV_EXTNA_DSN:
	case SMTP_EV_EXTNA_CHUNKING:
		ok = va_arg(ap, int *);
		/* quit_now: nothing Arnie asks for needs these. */
		if (ok != NULL)
			*ok = 0;
		break;
	case SMTP_EV_EXTNA_8BITMIME:
	case SMTP_EV_EXTNA_BINARYMIME:
	case SMTP_EV_EXTNA_ETRN:
		r->ext_missing = true;
		break;
	default:
		tls_event(r, event_no, ap);
		break;
	}
	va_end(ap);
}

/* ------------------------------------------------------------ reasons */

/*
 * Log when libesmtp will change the header section of a message (see
 * message.h): it adds Date/From/Message-Id when missing, and drops
 * Return-Path, Original-Recipient and repeats of the headers it manages.
 * The front-ends complete every message so that this stays silent.
 */
static void
header_check(const struct session_msg *m)
{
	static const char *const managed[] = {"Date", "From", "Message-Id",
	    "Sender", "To", "Cc", "Bcc", "Reply-To",
	    "Disposition-Notification-To"};
	enum { NMANAGED = sizeof(managed) / sizeof(managed[0]) };
	unsigned seen[NMANAGED] = {0};
	size_t i, len, wlen = 0, max;
	char *buf, *line, *end, *nl, *colon, what[256] = "";
	bool dropped = false;
	ssize_t got;

	max = m->size < HEADER_SCAN_MAX ? (size_t)m->size : HEADER_SCAN_MAX;
	buf = xmalloc(max + 1);
	while ((got = pread(m->fd, buf, max, m->offset)) == -1 && errno == EINTR)
		continue;
	len = got > 0 ? (size_t)got : 0;
	buf[len] = '\0';
	for (line = buf, end = buf + len; line < end; line = nl + 1) {
		if ((nl = memchr(line, '\n', (size_t)(end - line))) == NULL)
			break;
		if (nl == line || (nl == line + 1 && line[0] == '\r'))
			break; /* the empty line */
		if (line[0] == ' ' || line[0] == '\t' ||
		    (colon = memchr(line, ':', (size_t)(nl - line))) == NULL)
			continue;
		if ((colon - line == 11 &&
		        strncasecmp(line, "Return-Path", 11) == 0) ||
		    (colon - line == 18 &&
		        strncasecmp(line, "Original-Recipient", 18) == 0))
			dropped = true;
		for (i = 0; i < NMANAGED; i++)
			if (strlen(managed[i]) == (size_t)(colon - line) &&
			    strncasecmp(line, managed[i], strlen(managed[i])) ==
			        0)
				seen[i]++;
	}
	free(buf);
	for (i = 0; i < 3; i++)
		if (seen[i] == 0) {
			int n = snprintf(what + wlen, sizeof(what) - wlen,
			    "%s%s", wlen > 0 ? ", " : "", managed[i]);

			if (n > 0 && (size_t)n < sizeof(what) - wlen)
				wlen += (size_t)n;
		}
	for (i = 0; i < NMANAGED; i++)
		if (seen[i] > 1)
			dropped = true;
	if (wlen > 0)
		log_info("%s: relay adds missing header(s): %s", m->id, what);
	if (dropped)
		log_info("%s: relay drops Return-Path/Original-Recipient or "
		         "repeated address headers",
		    m->id);
}

/* snprintf() for reasons, which may be cut: their start says enough. */
static void __attribute__((format(printf, 3, 4)))
reasonf(char *dst, size_t dstlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(dst, dstlen, fmt, ap);
	va_end(ap);
}

/* The reason for a session that did not get as far as the messages, or
 * broke off, in order of what explains it best. */
static void
session_reason(const struct run *r, char *reason, size_t reasonlen)
{
	const struct session *s = r->s;
	char ebuf[256];
	const char *e = NULL;
	unsigned long ossl;
	int err = smtp_errno();

	if (r->protocol_error[0] != '\0')
		reasonf(reason, reasonlen, "%s", r->protocol_error);
	else if (r->tls_error[0] != '\0')
		reasonf(reason, reasonlen, "TLS with %s failed: %s", s->name,
		    r->tls_error);
	else if (r->starttls_missing)
		reasonf(reason, reasonlen, "upstream does not offer STARTTLS");
	else if (r->auth == AUTH_REFUSED)
		reasonf(reason, reasonlen, "AUTH refused: %s", r->auth_reply);
	else if (r->first_421[0] != '\0')
		reasonf(reason, reasonlen, "%s", r->first_421);
	else if (r->connected && r->last_code >= 400)
		reasonf(reason, reasonlen, "upstream refused the session: %s",
		    r->last_reply);
	else if (r->ext_missing)
		reasonf(reason, reasonlen,
		    "upstream lacks a required SMTP extension");
	else if (s->use_tls && r->connected && !r->tls_ok &&
	         (ossl = ERR_peek_last_error()) != 0)
		reasonf(reason, reasonlen, "TLS with %s failed: %s", s->name,
		    ERR_reason_error_string(ossl) != NULL
		        ? ERR_reason_error_string(ossl)
		        : "handshake failed");
	else if (err == SMTP_ERR_DROPPED_CONNECTION && r->connected)
		/* libesmtp reports its timeouts as a dropped connection. */
		reasonf(reason, reasonlen,
		    "connection to %s %s: closed by the upstream or no reply "
		    "within %ld s",
		    s->name, r->started ? "broke off" : "failed", s->timeout);
	else {
		if (err != 0)
			e = smtp_strerror(err, ebuf, sizeof(ebuf));
		if (!r->connected)
			reasonf(reason, reasonlen, "cannot connect to %s: %s",
			    s->name, e != NULL ? e : "unknown error");
		else
			reasonf(reason, reasonlen, "connection to %s %s: %s",
			    s->name, r->started ? "broke off" : "failed",
			    e != NULL ? e : "no reply");
	}
}

/* The session's reason, worked out once. */
static const char *
sreason(struct run *r)
{
	if (r->sreason[0] == '\0')
		session_reason(r, r->sreason, sizeof(r->sreason));
	return r->sreason;
}

/* The first reply of m that is about the upstream rather than the
 * message (see reply.h). */
static void
first_queue_wide(const struct session_msg *m, char *dst, size_t dstlen)
{
	size_t j;

	if (queue_wide(m->data.code, NULL, REPLY_AT_END)) {
		snprintf(dst, dstlen, "%s", m->data.reply);
		return;
	}
	for (j = 0; j < m->nrcpts; j++)
		if (queue_wide(m->rcpts[j].result.code, NULL, REPLY_AT_RCPT)) {
			snprintf(dst, dstlen, "%s", m->rcpts[j].result.reply);
			return;
		}
}

/* The first digit of a reply code libesmtp read, however long. */
static int
leading_digit(int code)
{
	while (code >= 10)
		code /= 10;
	return code;
}

/*
 * Recipient j of m got a malformed RCPT reply.  protocol_error() shuts the
 * connection at once, so this normally ends the session before the body
 * goes; should it not (the socket could not be found), this decides.  If
 * the message was taken anyway (a 2xx to the end of DATA), another
 * recipient was accepted and the malformed reply began with a 2, the whole
 * body went out and the upstream took it for this recipient too, as far as
 * anyone can tell: never send it again, and say so.  With no recipient
 * accepted, libesmtp sent an empty message instead of the body: the
 * recipient must get the real one, so it is deferred.
 */
static void
malformed_rcpt(struct run *r, struct session_msg *m, size_t j,
    const smtp_status_t *rs, const struct relay_result *dres,
    bool body_went)
{
	struct relay_result *res = &m->rcpts[j].result;
	char why[RELAY_REPLY_MAX];

	format_status(rs, why, sizeof(why));
	protocol_error(r, why);
	/* "5500 no such user" was a refusal, however malformed. */
	if (dres->status == RELAY_OK && body_went &&
	    leading_digit(rs->code) == 2) {
		*res = *dres;
		log_info("%s: to=<%s>: malformed RCPT reply \"%s\", but the "
		         "upstream took the message (%s): recorded as sent, "
		         "not sent again",
		    m->id, m->rcpts[j].addr, why, dres->reply);
		return;
	}
	set_result(res, RELAY_TEMPFAIL, 0, r->protocol_error);
}

/* ------------------------------------------------------------ messages */

/* Every recipient of m gets m's own result. */
static void
all_rcpts(struct session_msg *m)
{
	size_t j;

	for (j = 0; j < m->nrcpts; j++)
		m->rcpts[j].result = m->data;
}

/* The recipients' results of a message whose MAIL FROM was accepted. */
static bool
rcpt_results(struct run *r, size_t i, const struct relay_result *dres)
{
	struct session_msg *m = &r->msgs[i];
	smtp_recipient_t *rc = r->srcpt[i];
	const smtp_status_t *rs;
	size_t j, accepted = 0;
	bool qw = false;

	for (j = 0; j < m->nrcpts; j++)
		if ((rs = smtp_recipient_status(rc[j])) != NULL &&
		    reply_classify(rs->code, rs->text, REPLY_AT_RCPT) ==
		        REPLY_OK)
			accepted++;
	for (j = 0; j < m->nrcpts; j++) {
		struct relay_result *res = &m->rcpts[j].result;

		rs = smtp_recipient_status(rc[j]);
		if (rs != NULL && reply_classify(rs->code, rs->text,
		                      REPLY_AT_RCPT) == REPLY_MALFORMED) {
			malformed_rcpt(r, m, j, rs, dres, accepted > 0);
			qw = true;
		} else if (rs == NULL || rs->code == 0) {
			/* Connection gone before its RCPT reply. */
			set_result(res, RELAY_TEMPFAIL, 0, sreason(r));
		} else if (rs->code / 100 != 2) {
			set_result_status(res, rs, REPLY_AT_RCPT);
			if (queue_wide(rs->code, rs->text, REPLY_AT_RCPT))
				qw = true;
		} else {
			/* Accepted at RCPT: the end of DATA decides, and its
			 * reply (the upstream's queue ID) is what the log
			 * keeps. */
			*res = *dres;
		}
	}
	return qw;
}

/* Queue-wide trouble in m: no refusal of it counts as the message's. */
static void
make_queue_wide(struct run *r, struct session_msg *m)
{
	size_t j;

	m->queue_wide = true;
	for (j = 0; j < m->nrcpts; j++)
		if (m->rcpts[j].result.status == RELAY_PERMFAIL)
			m->rcpts[j].result.status = RELAY_TEMPFAIL;
	if (m->data.status == RELAY_PERMFAIL)
		m->data.status = RELAY_TEMPFAIL;
	if (r->qw_reply[0] == '\0')
		first_queue_wide(m, r->qw_reply, sizeof(r->qw_reply));
}

/*
 * Turn libesmtp's statuses for message i into its results and hand them to
 * the caller: from the event that ends the message, or after the session
 * for those that never got that far.  A message whose MAIL FROM got no
 * reply was not tried; its results say why but it stays as it was.
 */
static void
finish_message(struct run *r, size_t i)
{
	struct session_msg *m = &r->msgs[i];
	const smtp_status_t *mail, *data;
	struct relay_result dres;
	bool qw = false;
	size_t j;

	r->reported[i] = true;
	if (r->stopped)
		return;
	memset(&dres, 0, sizeof(dres));
	mail = smtp_reverse_path_status(r->smsg[i]);
	if (mail == NULL || mail->code == 0) {
		set_result(&m->data, RELAY_TEMPFAIL, 0, sreason(r));
		all_rcpts(m);
		goto report;
	}
	m->attempted = true;
	r->attempted++;
	if (mail->code / 100 != 2) {
		set_result_status(&m->data, mail, REPLY_AT_MAIL);
		qw = queue_wide(mail->code, mail->text, REPLY_AT_MAIL);
		all_rcpts(m);
	} else {
		data = smtp_message_transfer_status(r->smsg[i]);
		if (data != NULL && data->code != 0) {
			set_result_status(&dres, data, REPLY_AT_END);
			qw = queue_wide(data->code, data->text, REPLY_AT_END);
		} else
			set_result(&dres, RELAY_TEMPFAIL, 0, sreason(r));
		m->data = dres;
		qw = rcpt_results(r, i, &dres) || qw;
	}
	/* Whatever failed after a protocol error was the upstream's doing. */
	if (r->protocol_error[0] != '\0') {
		qw = true;
		if (r->qw_reply[0] == '\0')
			snprintf(r->qw_reply, sizeof(r->qw_reply), "%s",
			    r->protocol_error);
	}
	/* After a refused AUTH libesmtp carries on unauthenticated; whatever
	 * the upstream then refused is our standing with it, not the
	 * message's fault. */
	if (r->auth == AUTH_REFUSED)
		for (j = 0; j < m->nrcpts; j++)
			if (m->rcpts[j].result.status == RELAY_PERMFAIL)
				qw = true;
	if (qw)
		make_queue_wide(r, m);
report:
	if (r->fn(r->arg, m) == -1) {
		/* Nothing more may go out: end the connection now. */
		r->stopped = true;
		if (r->sock != -1)
			(void)shutdown(r->sock, SHUT_RDWR);
	}
}

static void
message_ended(struct run *r, smtp_message_t msg)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		if (r->smsg[i] == msg && !r->reported[i]) {
			finish_message(r, i);
			return;
		}
}

/* ------------------------------------------------------------ public */

struct session *
session_new(const struct session_settings *set, char *err, size_t errlen)
{
	struct session *s = xcalloc(1, sizeof(*s));

	pthread_once(&auth_once, auth_init_once);
	s->host = xstrdup(set->host);
	s->name = xasprintf("%s:%d", set->host, set->port);
	s->use_tls = set->use_tls;
	s->tls_verify = set->tls_verify;
	if (set->username != NULL && *set->username != '\0') {
		s->username = xstrdup(set->username);
		s->password = secret_strdup(
		    set->password != NULL ? set->password : "");
	}
	if (set->helo != NULL && *set->helo != '\0')
		s->helo = xstrdup(set->helo);
	s->timeout = set->timeout > 0 ? set->timeout : 60;
	if (s->use_tls && (s->tls = tls_new(set->host, set->tls_verify,
	                       set->ca_file, err, errlen)) == NULL) {
		session_free(s);
		return NULL;
	}
	return s;
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	tls_free(s->tls);
	free(s->host);
	free(s->name);
	free(s->username);
	secret_free(s->password);
	free(s->helo);
	free(s);
}

/* A libesmtp session set up for s: server, timeouts, callbacks, TLS and
 * AUTH (*actx, to destroy after the session). */
static smtp_session_t
new_smtp_session(struct session *s, struct run *r, auth_context_t *actx)
{
	static const int timeouts[] = {Timeout_GREETING, Timeout_ENVELOPE,
	    Timeout_DATA, Timeout_TRANSFER, Timeout_DATA2};
	smtp_session_t ss;
	long ms;
	size_t i;

	if ((ss = smtp_create_session()) == NULL)
		arnie_panic("relay: smtp_create_session failed");
	if (smtp_set_server(ss, s->name) == 0)
		arnie_panic("relay: smtp_set_server(%s) failed", s->name);
	if (s->helo != NULL)
		smtp_set_hostname(ss, s->helo);
	ms = s->timeout > LONG_MAX / 1000 ? LONG_MAX : s->timeout * 1000;
	for (i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
		smtp_set_timeout(
		    ss, timeouts[i] | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
	smtp_set_eventcb(ss, event_cb, r);
	smtp_set_monitorcb(ss, monitor_cb, r, 0);
	if (s->use_tls) {
		smtp_starttls_enable(ss, Starttls_REQUIRED);
		smtp_starttls_set_ctx(ss, tls_ctx(s->tls));
	} else
		smtp_starttls_enable(ss, Starttls_DISABLED);
	*actx = NULL;
	if (s->username != NULL) {
		if ((*actx = auth_create_context()) == NULL)
			arnie_panic("relay: auth_create_context failed");
		/* PLAIN and LOGIN are fine: TLS is mandatory with AUTH. */
		auth_set_mechanism_flags(*actx, AUTH_PLUGIN_PLAIN, 0);
		auth_set_interact_cb(*actx, interact_cb, s);
		smtp_auth_set_context(ss, *actx);
	}
	return ss;
}

/* Add msgs' messages with a recipient to the session; returns how many. */
static size_t
add_messages(struct run *r, smtp_session_t ss, struct body *bodies)
{
	size_t i, j, queued = 0;

	for (i = 0; i < r->n; i++) {
		struct session_msg *m = &r->msgs[i];

		r->srcpt[i] =
		    xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(**r->srcpt));
		if (m->nrcpts == 0)
			continue;
		header_check(m);
		bodies[i].run = r;
		bodies[i].fd = m->fd;
		bodies[i].offset = m->offset;
		bodies[i].size = m->size;
		if ((r->smsg[i] = smtp_add_message(ss)) == NULL)
			arnie_panic("relay: smtp_add_message failed");
		smtp_set_reverse_path(r->smsg[i], m->sender);
		smtp_set_messagecb(r->smsg[i], body_cb, &bodies[i]);
		if (m->size > 0 && m->size <= ULONG_MAX)
			smtp_size_set_estimate(
			    r->smsg[i], (unsigned long)m->size);
		for (j = 0; j < m->nrcpts; j++)
			if ((r->srcpt[i][j] = smtp_add_recipient(
			         r->smsg[i], m->rcpts[j].addr)) == NULL)
				arnie_panic("relay: smtp_add_recipient failed");
		queued++;
	}
	return queued;
}

/* The session's status and reason, once every message has ended. */
static enum relay_status
session_status(struct run *r, size_t queued, char *reason, size_t reasonlen)
{
	if (r->auth == AUTH_REFUSED || r->tls_error[0] != '\0' ||
	    r->starttls_missing || r->protocol_error[0] != '\0') {
		session_reason(r, reason, reasonlen);
		return RELAY_TEMPFAIL;
	}
	if (r->qw_reply[0] != '\0') {
		reasonf(reason, reasonlen, "%s", r->qw_reply);
		return RELAY_TEMPFAIL;
	}
	if (r->stopped) {
		reasonf(reason, reasonlen,
		    "session stopped: results cannot be recorded (after %zu "
		    "of %zu messages)",
		    r->attempted, queued);
		return RELAY_TEMPFAIL;
	}
	if (r->attempted < queued) {
		/* Refused, timed out, or broke off before the end. */
		if (r->attempted == 0)
			reasonf(reason, reasonlen, "%s", sreason(r));
		else
			reasonf(reason, reasonlen,
			    "%s (after %zu of %zu messages)", sreason(r),
			    r->attempted, queued);
		return RELAY_TEMPFAIL;
	}
	return RELAY_OK;
}

enum relay_status
session_run(struct session *s, struct session_msg *msgs, size_t n,
    session_result_fn *fn, session_settle_fn *settle, void *arg,
    char *reason, size_t reasonlen)
{
	struct run r;
	smtp_session_t ss;
	auth_context_t actx;
	struct body *bodies;
	enum relay_status ret;
	size_t i, queued;

	if (reasonlen > 0)
		reason[0] = '\0';
	memset(&r, 0, sizeof(r));
	r.sock = -1;
	r.sock_hint = lowest_free_fd();
	r.s = s;
	r.msgs = msgs;
	r.n = n;
	r.fn = fn;
	r.settle = settle;
	r.arg = arg;
	r.smsg = xcalloc(n ? n : 1, sizeof(*r.smsg));
	r.srcpt = xcalloc(n ? n : 1, sizeof(*r.srcpt));
	r.reported = xcalloc(n ? n : 1, sizeof(*r.reported));
	bodies = xcalloc(n ? n : 1, sizeof(*bodies));
	for (i = 0; i < n; i++) {
		msgs[i].attempted = msgs[i].queue_wide = false;
		memset(&msgs[i].data, 0, sizeof(msgs[i].data));
	}

	ss = new_smtp_session(s, &r, &actx);
	queued = add_messages(&r, ss, bodies);
	ERR_clear_error();
	if (s->tls != NULL)
		tls_watch(s->tls, r.tls_error, sizeof(r.tls_error));
	log_debug("relay %s: session with %zu message(s)", s->name, queued);
	/* Messages that end while it runs are reported from the event
	 * callback, with the session still counted as started. */
	r.started = 1;
	r.started = queued > 0 ? smtp_start_session(ss) : 0;
	if (s->tls != NULL)
		tls_watch(s->tls, NULL, 0);
	for (i = 0; i < n; i++)
		if (r.smsg[i] != NULL && !r.reported[i])
			finish_message(&r, i);
	ret = queued > 0 ? session_status(&r, queued, reason, reasonlen)
	                 : RELAY_OK;

	smtp_destroy_session(ss);
	if (actx != NULL)
		auth_destroy_context(actx);
	for (i = 0; i < n; i++)
		free(r.srcpt[i]);
	free(r.srcpt);
	free(r.smsg);
	free(r.reported);
	free(bodies);
	return ret;
}
