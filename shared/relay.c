/*
 * relay: see relay.h.  One libesmtp session per relay_send(): one
 * connection, every message of the batch on it, then QUIT.
 *
 * The session runs in a child process (see relay_send() at the bottom):
 * the parent prepares the messages, logs, forks, reads the child's report
 * from a pipe under a deadline, hands each message's results to the
 * caller's relay_result_fn and acknowledges them on a second pipe, and
 * reaps the child; the child runs libesmtp, sends each message's results as
 * soon as they are final, waits for the acknowledgement before it goes on,
 * then sends the session's status and exits.  A libesmtp crash or hang thus
 * costs one session, and a crash of the daemon at most the message in
 * flight.
 *
 * What this module does: hands libesmtp Arnie's own SSL_CTX (TLS 1.2
 * only, system CA store plus OUTBOUND_EMAIL_CA_FILE, the configured host
 * name checked by OpenSSL and sent as SNI), the AUTH credentials (only over
 * TLS), and the spooled bytes through a read callback; afterwards it turns
 * libesmtp's per-message and per-recipient statuses into relay_results.
 *
 * What it never does: touch the spool, log or keep a password or anything
 * the client wrote during AUTH, or retry by itself.
 *
 * libesmtp 1.1 facts this module relies on (read from its source, checked by
 * the exercise tests):
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
 * - Its I/O loop can deadlock on TLS 1.3 session tickets (see
 *   make_ssl_ctx()), so TLS is capped at 1.2.
 * - Requesting BODY=8BITMIME makes 8BITMIME a required extension: a server
 *   without it would make the whole session quit.  So no BODY= is sent.
 * - Message headers: libesmtp adds Date:, From: and Message-Id: when the
 *   message lacks them and drops Return-Path:, Original-Recipient: and
 *   repeated Date/From/Sender/To/Cc/Bcc/Reply-To/Message-Id/
 *   Disposition-Notification-To headers.  The API cannot turn that off, so
 *   such a message is logged at relay time (see header_check()); a message
 *   that has each of Date, From and Message-Id once and neither of the
 *   dropped headers goes out byte for byte.
 */
#include "autoconf.h"

#include "relay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* <openssl/ssl.h> first: libesmtp.h declares smtp_starttls_set_ctx() only
 * when it sees OpenSSL's types; auth-client.h before it for
 * smtp_auth_set_context(). */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <auth-client.h>
#include <libesmtp.h>

#include "config.h"
#include "log.h"
#include "reply.h"
#include "secret.h"
#include "spool.h"
#include "xmalloc.h"

#define BODY_CHUNK 16384
#define LINE_MAX_MON 1024

struct relay {
	char *host;
	int port;
	char *name; /* "host:port" */
	bool use_tls;
	bool tls_verify;
	bool host_is_ip;
	char *username;
	char *password; /* secret */
	char *helo_name;
	long send_timeout;
	SSL_CTX *ssl_ctx;           /* NULL without TLS */
	struct session_state *cur;  /* the session in progress (child only) */
	pthread_mutex_t child_lock; /* guards child, for relay_abort() */
	pid_t child;                /* the session process, 0 when none */
	bool aborted;               /* relay_abort() killed it */
};

enum auth_state {
	AUTH_NOT_TRIED,
	AUTH_RUNNING,
	AUTH_DONE,
	AUTH_REFUSED,
};

/* Where a message's bytes come from. */
struct body {
	FILE *fp;
	off_t offset;
	uint64_t size; /* 0: up to end of file */
	uint64_t done;
	int error; /* errno of a failed read, sticky */
};

/* What one session learnt besides libesmtp's statuses, and what it needs
 * to turn them into results.  Lives in the session process only. */
struct session_state {
	struct relay *relay;
	struct relay_msg *msgs;
	size_t n;
	smtp_message_t *smsg;     /* NULL: nothing pending, not sent */
	smtp_recipient_t **srcpt; /* NULL: recipient not pending */
	bool *reported;           /* its results went to the parent */
	int fd;                   /* the report pipe */
	int ackfd;                /* the parent's acknowledgements */
	int started;              /* smtp_start_session()'s result */
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

/* A libesmtp status as a relay_result's outcome, through reply.h. */
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

/* ------------------------------------------------------------------ TLS */

static struct relay *
relay_of_ssl(const SSL *ssl)
{
	return SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

/* libesmtp 1.1 sends no SNI and offers no hook per connection; the
 * context's info callback runs on every handshake start, before the
 * ClientHello is written, which is the moment SNI must be set. */
static void
info_cb(const SSL *cssl, int where, int ret)
{
	SSL *ssl = (SSL *)cssl;
	struct relay *relay;

	(void)ret;
	if (!(where & SSL_CB_HANDSHAKE_START))
		return;
	relay = relay_of_ssl(ssl);
	if (relay == NULL || relay->host_is_ip)
		return;
	if (SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) == NULL)
		SSL_set_tlsext_host_name(ssl, relay->host);
}

/* Keep the first reason a certificate was refused, for the log: after a
 * failed handshake OpenSSL itself only says "certificate verify failed". */
static int
verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct relay *relay;
	struct session_state *st;
	X509 *cert;
	char subject[256] = "";
	int err, depth;

	if (ok)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(
	    xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL || (relay = relay_of_ssl(ssl)) == NULL ||
	    (st = relay->cur) == NULL || !relay->tls_verify ||
	    st->tls_error[0] != '\0')
		return ok;
	err = X509_STORE_CTX_get_error(xs);
	depth = X509_STORE_CTX_get_error_depth(xs);
	if ((cert = X509_STORE_CTX_get_current_cert(xs)) != NULL)
		X509_NAME_oneline(
		    X509_get_subject_name(cert), subject, sizeof(subject));
	snprintf(st->tls_error, sizeof(st->tls_error),
	    "certificate verify failed: %s (depth %d, subject %s)",
	    X509_verify_cert_error_string(err), depth,
	    subject[0] != '\0' ? subject : "?");
	return ok;
}

static SSL_CTX *
make_ssl_ctx(struct relay *relay, const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	X509_VERIFY_PARAM *param;
	char ebuf[256];

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context: %s",
		    ERR_error_string(ERR_get_error(), ebuf));
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	/* TLS 1.3 servers send session tickets after the handshake.  When
	 * they are already in the socket as libesmtp 1.1 polls after queueing
	 * its EHLO, it reads before it writes, waits for a reply to a command
	 * it has not sent, and the session dies at the timeout.  TLS 1.2 has
	 * no post-handshake messages. */
	SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		log_warnx("relay: cannot load the system CA store");
	if (ca_file != NULL && *ca_file != '\0' &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		snprintf(err, errlen, "OUTBOUND_EMAIL_CA_FILE %s: %s", ca_file,
		    ERR_error_string(ERR_get_error(), ebuf));
		goto fail;
	}
	param = SSL_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_hostflags(
	    param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (relay->host_is_ip
	        ? X509_VERIFY_PARAM_set1_ip_asc(param, relay->host) != 1
	        : X509_VERIFY_PARAM_set1_host(param, relay->host, 0) != 1) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST %s: not usable for "
		    "certificate checks",
		    relay->host);
		goto fail;
	}
	SSL_CTX_set_verify(ctx,
	    relay->tls_verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, verify_cb);
	SSL_CTX_set_info_callback(ctx, info_cb);
	SSL_CTX_set_app_data(ctx, relay);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ------------------------------------------------------------ callbacks */

/* libesmtp frees *ctx with free(); xmalloc() memory qualifies. */
static const char *
body_cb(void **ctx, int *len, void *arg)
{
	struct body *b = arg;
	size_t want, got;
	int saved = errno;

	if (*ctx == NULL)
		*ctx = xmalloc(BODY_CHUNK);
	if (len == NULL) {
		/* Rewind, once per transfer of this message. */
		b->done = 0;
		b->error = 0;
		clearerr(b->fp);
		if (fseeko(b->fp, b->offset, SEEK_SET) == -1)
			b->error = errno != 0 ? errno : EIO;
		errno = saved;
		return NULL;
	}
	if (b->error != 0)
		goto fail;
	want = BODY_CHUNK;
	if (b->size > 0 && b->size - b->done < want)
		want = (size_t)(b->size - b->done);
	got = want > 0 ? fread(*ctx, 1, want, b->fp) : 0;
	if (got < want && (ferror(b->fp) || b->size > 0)) {
		/* A read error or a file shorter than its envelope says: never
		 * let a truncated message end with a good "." line. */
		b->error = ferror(b->fp) && errno != 0 ? errno : EIO;
		goto fail;
	}
	b->done += got;
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
	struct relay *relay = arg;
	int i;

	for (i = 0; i < fields; i++) {
		if (req[i].flags & AUTH_USER)
			result[i] = relay->username;
		else if (req[i].flags & AUTH_PASS)
			result[i] = relay->password;
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
protocol_error(struct session_state *st, const char *line)
{
	char text[200];

	if (st->protocol_error[0] != '\0')
		return;
	one_line(text, sizeof(text), line);
	snprintf(st->protocol_error, sizeof(st->protocol_error),
	    "upstream protocol error: malformed reply \"%s\"", text);
	if (st->sock != -1)
		(void)shutdown(st->sock, SHUT_RDWR);
}

/* One complete reply line from the server (without CRLF). */
static void
monitor_line(struct session_state *st, const char *line, size_t len)
{
	int code;
	char text[RELAY_REPLY_MAX];

	if (!reply_line_ok(line, len)) {
		char copy[LINE_MAX_MON];

		memcpy(copy, line, len);
		copy[len] = '\0';
		protocol_error(st, copy);
		return;
	}
	if (len > 3 && line[3] != ' ')
		return; /* not the last line of the reply */
	code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	one_line(text, sizeof(text), line);
	st->last_code = code;
	snprintf(st->last_reply, sizeof(st->last_reply), "%s", text);
	if (code == 421 && st->first_421[0] == '\0')
		snprintf(st->first_421, sizeof(st->first_421), "%s", text);
	if (st->in_starttls) {
		st->in_starttls = false;
		if (code / 100 != 2)
			snprintf(st->tls_error, sizeof(st->tls_error),
			    "STARTTLS refused: %.400s", text);
	}
	if (st->auth == AUTH_RUNNING && code != 334) {
		if (code / 100 == 2) {
			st->auth = AUTH_DONE;
		} else {
			st->auth = AUTH_REFUSED;
			if (st->auth_reply[0] == '\0')
				snprintf(st->auth_reply, sizeof(st->auth_reply),
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
	struct session_state *st = arg;
	int i;

	if (writing == SMTP_CB_WRITING) {
		if (buflen >= 5 && strncasecmp(buf, "AUTH ", 5) == 0 &&
		    st->auth != AUTH_RUNNING)
			st->auth = AUTH_RUNNING;
		else if (buflen >= 8 && strncasecmp(buf, "STARTTLS", 8) == 0)
			st->in_starttls = true;
		return;
	}
	if (writing != SMTP_CB_READING)
		return;
	for (i = 0; i < buflen; i++) {
		char c = buf[i];

		if (c == '\n') {
			size_t n = st->linelen;

			if (n > 0 && st->line[n - 1] == '\r')
				n--;
			if (!st->line_overflow)
				monitor_line(st, st->line, n);
			st->linelen = 0;
			st->line_overflow = false;
			continue;
		}
		if (st->linelen + 1 >= sizeof(st->line)) {
			/* Keep the start: the code is what matters. */
			st->line_overflow = st->linelen < 4;
			continue;
		}
		st->line[st->linelen++] = c;
	}
}

static void message_ended(struct session_state *st, smtp_message_t msg);

/*
 * libesmtp writes a message in several write(2)s and never sets TCP_NODELAY,
 * so Nagle's algorithm holds the last piece until the server's delayed ACK,
 * 40 ms per message: 22 instead of 3,000 messages a second over loopback.
 * libesmtp does not show its socket, but this process closed every socket
 * it inherited (child_setup()), so the only one open now is the upstream's.
 */
/* Every descriptor above standard error that is a socket, except skip,
 * goes to fn: those /proc/self/fd lists, or without /proc every one below
 * the limit (at most SOCKET_SCAN_MAX). */
#define SOCKET_SCAN_MAX 65536

static void
each_socket(int skip, void (*fn)(int fd, void *arg), void *arg)
{
	struct dirent *de;
	struct stat sb;
	long max;
	DIR *dir;
	int fd;

	if ((dir = opendir("/proc/self/fd")) != NULL) {
		while ((de = readdir(dir)) != NULL) {
			fd = atoi(de->d_name);
			if (fd > STDERR_FILENO && fd != skip &&
			    fd != dirfd(dir) && fstat(fd, &sb) == 0 &&
			    S_ISSOCK(sb.st_mode))
				fn(fd, arg);
		}
		closedir(dir);
		return;
	}
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > SOCKET_SCAN_MAX)
		max = SOCKET_SCAN_MAX;
	for (fd = STDERR_FILENO + 1; fd < max; fd++)
		if (fd != skip && fstat(fd, &sb) == 0 && S_ISSOCK(sb.st_mode))
			fn(fd, arg);
}

static void
nodelay(int fd, void *arg)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	*(int *)arg = fd;
}

static int
set_upstream_nodelay(void)
{
	int found = -1;

	each_socket(-1, nodelay, &found);
	return found;
}

static void
event_cb(smtp_session_t session, int event_no, void *arg, ...)
{
	struct session_state *st = arg;
	struct relay *relay = st->relay;
	const smtp_status_t *mst;
	smtp_message_t msg;
	va_list ap;
	int *ok;
	long vfy;
	int bits;
	const char *s;
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
			message_ended(st, msg);
		break;
	case SMTP_EV_MESSAGESENT:
		/* The reply to DATA or to the end of DATA: final. */
		message_ended(st, va_arg(ap, smtp_message_t));
		break;
	case SMTP_EV_CONNECT:
		st->connected = true;
		/* Kept for protocol_error(). */
		st->sock = set_upstream_nodelay();
		log_debug("relay %s: connected", relay->name);
		break;
	case SMTP_EV_DISCONNECT:
		log_debug("relay %s: disconnected", relay->name);
		break;
	case SMTP_EV_STARTTLS_OK:
		ssl = va_arg(ap, SSL *);
		s = va_arg(ap, const char *);
		bits = va_arg(ap, int);
		st->tls_ok = true;
		log_debug("relay %s: TLS established (%s, %s, %d bits)",
		    relay->name, ssl != NULL ? SSL_get_version(ssl) : "?",
		    s != NULL ? s : "?", bits);
		break;
	case SMTP_EV_EXTNA_STARTTLS:
		st->starttls_missing = true;
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
		st->ext_missing = true;
		break;
	case SMTP_EV_INVALID_PEER_CERTIFICATE:
		vfy = va_arg(ap, long);
		ok = va_arg(ap, int *);
		/* Reached only when verification is off, or OpenSSL would
		 * have failed the handshake. */
		if (!relay->tls_verify)
			*ok = 1;
		else if (st->tls_error[0] == '\0')
			snprintf(st->tls_error, sizeof(st->tls_error),
			    "certificate verify failed: %s",
			    X509_verify_cert_error_string(vfy));
		break;
	case SMTP_EV_NO_PEER_CERTIFICATE:
		ok = va_arg(ap, int *);
		if (!relay->tls_verify)
			*ok = 1;
		else
			snprintf(st->tls_error, sizeof(st->tls_error),
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
		snprintf(st->tls_error, sizeof(st->tls_error),
		    "weak cipher (%d bits)", bits);
		break;
	case SMTP_EV_NO_CLIENT_CERTIFICATE:
		ok = va_arg(ap, int *);
		*ok = 0;
		snprintf(st->tls_error, sizeof(st->tls_error),
		    "unusable client certificate in libesmtp's user folder");
		break;
	case SMTP_EV_UNUSABLE_CLIENT_CERTIFICATE:
		snprintf(st->tls_error, sizeof(st->tls_error),
		    "unusable client certificate in libesmtp's user folder");
		break;
	case SMTP_EV_UNUSABLE_CA_LIST:
		snprintf(
		    st->tls_error, sizeof(st->tls_error), "unusable CA list");
		break;
	default:
		break;
	}
	va_end(ap);
}

/* --------------------------------------------------------------- public */

struct relay *
relay_new(const struct config *cfg, char *err, size_t errlen)
{
	struct relay *relay;
	struct in6_addr a6;
	struct in_addr a4;

	if (cfg->outbound_host == NULL || *cfg->outbound_host == '\0') {
		snprintf(err, errlen, "OUTBOUND_EMAIL_HOST is not set");
		return NULL;
	}
	if (cfg->outbound_port == 465) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST_PORT=465 needs "
		    "implicit TLS, which Arnie does not support: use port 587 "
		    "(STARTTLS)");
		return NULL;
	}
	if (cfg->outbound_port < 1 || cfg->outbound_port > 65535) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST_PORT=%d is not a "
		    "port",
		    cfg->outbound_port);
		return NULL;
	}
	if (strchr(cfg->outbound_host, ':') != NULL) {
		/* libesmtp splits "host:port" at the first colon. */
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST %s: IPv6 addresses "
		    "are not supported, use a host name",
		    cfg->outbound_host);
		return NULL;
	}
	if (cfg->username != NULL && *cfg->username != '\0' && !cfg->use_tls) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_USERNAME is set but "
		    "OUTBOUND_EMAIL_USE_TLS is false: credentials are only "
		    "sent over TLS");
		return NULL;
	}

	pthread_once(&auth_once, auth_init_once);

	relay = xcalloc(1, sizeof(*relay));
	relay->host = xstrdup(cfg->outbound_host);
	relay->port = cfg->outbound_port;
	relay->name = xasprintf("%s:%d", relay->host, relay->port);
	relay->use_tls = cfg->use_tls;
	relay->tls_verify = cfg->tls_verify;
	relay->host_is_ip = inet_pton(AF_INET, relay->host, &a4) == 1 ||
	                    inet_pton(AF_INET6, relay->host, &a6) == 1;
	if (cfg->username != NULL && *cfg->username != '\0') {
		relay->username = xstrdup(cfg->username);
		relay->password =
		    secret_strdup(cfg->password != NULL ? cfg->password : "");
	}
	if (cfg->helo_name != NULL && *cfg->helo_name != '\0')
		relay->helo_name = xstrdup(cfg->helo_name);
	relay->send_timeout = cfg->send_timeout > 0 ? cfg->send_timeout : 60;
	pthread_mutex_init(&relay->child_lock, NULL);
	if (relay->use_tls && (relay->ssl_ctx = make_ssl_ctx(
	                           relay, cfg->ca_file, err, errlen)) == NULL) {
		relay_free(relay);
		return NULL;
	}
	return relay;
}

void
relay_free(struct relay *relay)
{
	if (relay == NULL)
		return;
	SSL_CTX_free(relay->ssl_ctx);
	pthread_mutex_destroy(&relay->child_lock);
	free(relay->host);
	free(relay->name);
	free(relay->username);
	secret_free(relay->password);
	free(relay->helo_name);
	free(relay);
}

const char *
relay_name(const struct relay *relay)
{
	return relay->name;
}

void
relay_msg_clear(struct relay_msg *msg)
{
	free(msg->rcpt);
	msg->rcpt = NULL;
}

/*
 * Warn when libesmtp will change the header section of a message (see the
 * top comment): it adds Date/From/Message-Id when missing, and drops
 * Return-Path, Original-Recipient and repeats of the headers it manages.
 */
static void
header_check(const struct relay_msg *m)
{
	static const char *const managed[] = {"Date", "From", "Message-Id",
	    "Sender", "To", "Cc", "Bcc", "Reply-To",
	    "Disposition-Notification-To"};
	enum { NMANAGED = sizeof(managed) / sizeof(managed[0]) };
	unsigned seen[NMANAGED] = {0};
	char line[128], what[256] = "";
	size_t i, wlen = 0;
	bool dropped = false;
	int c;

	if (fseeko(m->body, m->env->body_offset, SEEK_SET) == -1)
		return;
	/* Header names only: read each line's start, skip the rest. */
	while (fgets(line, sizeof(line), m->body) != NULL) {
		size_t len = strlen(line);
		char *colon;

		if (strcmp(line, "\r\n") == 0 || strcmp(line, "\n") == 0)
			break;
		if (line[0] != ' ' && line[0] != '\t' &&
		    (colon = strchr(line, ':')) != NULL) {
			size_t nlen = (size_t)(colon - line);

			if ((nlen == 11 &&
			        strncasecmp(line, "Return-Path", 11) == 0) ||
			    (nlen == 18 && strncasecmp(line,
			                       "Original-Recipient", 18) == 0))
				dropped = true;
			for (i = 0; i < NMANAGED; i++)
				if (strlen(managed[i]) == nlen &&
				    strncasecmp(line, managed[i], nlen) == 0)
					seen[i]++;
		}
		if (len > 0 && line[len - 1] != '\n')
			while ((c = getc(m->body)) != EOF && c != '\n')
				continue;
	}
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
		log_info(
		    "%s: relay adds missing header(s): %s", m->env->id, what);
	if (dropped)
		log_info("%s: relay drops Return-Path/Original-Recipient or "
		         "repeated address headers",
		    m->env->id);
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
session_reason(const struct relay *relay, const struct session_state *st,
    int started, char *reason, size_t reasonlen)
{
	char ebuf[256];
	const char *e = NULL;
	unsigned long ossl;
	int err = smtp_errno();

	if (st->protocol_error[0] != '\0') {
		reasonf(reason, reasonlen, "%s", st->protocol_error);
		return;
	}
	if (st->tls_error[0] != '\0') {
		reasonf(reason, reasonlen, "TLS with %s failed: %s",
		    relay->name, st->tls_error);
		return;
	}
	if (st->starttls_missing) {
		reasonf(reason, reasonlen, "upstream does not offer STARTTLS");
		return;
	}
	if (st->auth == AUTH_REFUSED) {
		reasonf(reason, reasonlen, "AUTH refused: %s", st->auth_reply);
		return;
	}
	if (st->first_421[0] != '\0') {
		reasonf(reason, reasonlen, "%s", st->first_421);
		return;
	}
	if (st->connected && st->last_code >= 400) {
		reasonf(reason, reasonlen, "upstream refused the session: %s",
		    st->last_reply);
		return;
	}
	if (st->ext_missing) {
		reasonf(reason, reasonlen,
		    "upstream lacks a required SMTP "
		    "extension");
		return;
	}
	if (relay->use_tls && st->connected && !st->tls_ok &&
	    (ossl = ERR_peek_last_error()) != 0) {
		reasonf(reason, reasonlen, "TLS with %s failed: %s",
		    relay->name,
		    ERR_reason_error_string(ossl) != NULL
		        ? ERR_reason_error_string(ossl)
		        : "handshake failed");
		return;
	}
	if (err == SMTP_ERR_DROPPED_CONNECTION && st->connected) {
		/* libesmtp reports its timeouts as a dropped connection. */
		reasonf(reason, reasonlen,
		    "connection to %s %s: closed by "
		    "the upstream or no reply within %ld s",
		    relay->name, started ? "broke off" : "failed",
		    relay->send_timeout);
		return;
	}
	if (err != 0)
		e = smtp_strerror(err, ebuf, sizeof(ebuf));
	if (!st->connected)
		reasonf(reason, reasonlen, "cannot connect to %s: %s",
		    relay->name, e != NULL ? e : "unknown error");
	else
		reasonf(reason, reasonlen, "connection to %s %s: %s",
		    relay->name, started ? "broke off" : "failed",
		    e != NULL ? e : "no reply");
}

/* The first reply of msg that is about the upstream rather than the
 * message (see reply.h). */
static void
first_queue_wide(
    const struct relay_msg *m, smtp_recipient_t *rc, char *dst, size_t dstlen)
{
	size_t j;

	if (queue_wide(m->data.code, NULL, REPLY_AT_END)) {
		snprintf(dst, dstlen, "%s", m->data.reply);
		return;
	}
	for (j = 0; j < m->env->nrcpts; j++)
		if (rc[j] != NULL &&
		    queue_wide(m->rcpt[j].code, NULL, REPLY_AT_RCPT)) {
			snprintf(dst, dstlen, "%s", m->rcpt[j].reply);
			return;
		}
}

/* --------------------------------------------------- the report pipe */

/*
 * The session process reports to the parent over a pipe, as it learns
 * things: one WIRE_MSG record per message once its results are final, then
 * one WIRE_END record with the session's status and reason.  Both ends are
 * the same program image (fork without exec), so records are the structs as
 * they lie in memory; the parent still checks indexes and counts and
 * terminates every string it receives.
 */
enum wire_kind {
	WIRE_MSG = 1, /* res = data, then nrcpts relay_results follow */
	WIRE_END,     /* res.status = the session's, res.reply = reason */
};

struct wire_head {
	uint32_t kind;
	uint32_t index;  /* WIRE_MSG: which message */
	uint32_t nrcpts; /* WIRE_MSG: env->nrcpts */
	uint8_t attempted;
	uint8_t queue_wide;
	struct relay_result res;
};

/* Loop on short writes.  A failure means the parent is gone or stopped
 * reading; the records are lost either way, so it only stops writing. */
static void
write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	ssize_t w;

	while (len > 0) {
		if ((w = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return;
		}
		p += w;
		len -= (size_t)w;
	}
}

static void
report_message(int fd, size_t i, const struct relay_msg *m)
{
	struct wire_head h;

	memset(&h, 0, sizeof(h));
	h.kind = WIRE_MSG;
	h.index = (uint32_t)i;
	h.nrcpts = (uint32_t)m->env->nrcpts;
	h.attempted = m->attempted;
	h.queue_wide = m->queue_wide;
	h.res = m->data;
	write_all(fd, &h, sizeof(h));
	write_all(fd, m->rcpt, m->env->nrcpts * sizeof(*m->rcpt));
}

/*
 * Wait until the parent has recorded the results just reported (see
 * relay.h): only then may the session go on, so that a crash of the daemon
 * re-sends at most the message in flight.  The parent writes one octet per
 * WIRE_MSG record.  If it is gone, so is the point of going on.
 */
static void
wait_ack(int fd)
{
	char c;
	ssize_t r;

	while ((r = read(fd, &c, 1)) == -1 && errno == EINTR)
		continue;
	if (r != 1)
		_exit(0);
}

static void
report_end(int fd, enum relay_status status, const char *reason)
{
	struct wire_head h;

	memset(&h, 0, sizeof(h));
	h.kind = WIRE_END;
	h.res.status = status;
	one_line(h.res.reply, sizeof(h.res.reply), reason);
	write_all(fd, &h, sizeof(h));
}

/* ------------------------------------------- in the session process */

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
 * anyone can tell: never send it again, and say so.  With no
 * recipient accepted, libesmtp sent an empty message instead of the body:
 * the recipient must get the real one, so it is deferred.  Either way the
 * session ends (protocol_error() shut it already).
 */
static void
malformed_rcpt(struct session_state *st, struct relay_msg *m, size_t j,
    const smtp_status_t *rs, const struct relay_result *dres,
    bool body_went)
{
	struct relay_result *r = &m->rcpt[j];
	char why[RELAY_REPLY_MAX];

	format_status(rs, why, sizeof(why));
	protocol_error(st, why);
	/* "5500 no such user" was a refusal, however malformed. */
	if (dres->status == RELAY_OK && body_went &&
	    leading_digit(rs->code) == 2) {
		*r = *dres;
		log_info("%s: to=<%s>: malformed RCPT reply \"%s\", but the "
		         "upstream took the message (%s): recorded as sent, "
		         "not sent again",
		    m->env->id, m->env->rcpts[j].addr, why, dres->reply);
		return;
	}
	set_result(r, RELAY_TEMPFAIL, 0, st->protocol_error);
}

/*
 * Turn libesmtp's statuses for message i into its results and send them to
 * the parent: from the event that ends the message, or after the session
 * for those that never got that far.  A message whose MAIL FROM got no
 * reply was not tried; its results say why but it stays as it was.
 */
static void
finish_message(struct session_state *st, size_t i)
{
	struct relay *relay = st->relay;
	struct relay_msg *m = &st->msgs[i];
	struct envelope *env = m->env;
	smtp_recipient_t *rc = st->srcpt[i];
	const smtp_status_t *mail, *data, *rs;
	struct relay_result dres;
	bool qw = false;
	size_t j, accepted = 0;

	/* Whole structs go to the parent: no stray stack bytes in them. */
	memset(&dres, 0, sizeof(dres));
	st->reported[i] = true;
	mail = smtp_reverse_path_status(st->smsg[i]);
	if (mail == NULL || mail->code == 0) {
		if (st->sreason[0] == '\0')
			session_reason(relay, st, st->started, st->sreason,
			    sizeof(st->sreason));
		set_result(&m->data, RELAY_TEMPFAIL, 0, st->sreason);
		for (j = 0; j < env->nrcpts; j++)
			if (rc[j] != NULL)
				m->rcpt[j] = m->data;
		goto report;
	}
	m->attempted = true;
	st->attempted++;
	if (mail->code / 100 != 2) {
		set_result_status(&m->data, mail, REPLY_AT_MAIL);
		qw = queue_wide(mail->code, mail->text, REPLY_AT_MAIL);
		for (j = 0; j < env->nrcpts; j++)
			if (rc[j] != NULL)
				m->rcpt[j] = m->data;
		goto message_done;
	}

	data = smtp_message_transfer_status(st->smsg[i]);
	if (data != NULL && data->code != 0) {
		set_result_status(&dres, data, REPLY_AT_END);
		qw = queue_wide(data->code, data->text, REPLY_AT_END);
	} else {
		if (st->sreason[0] == '\0')
			session_reason(relay, st, st->started, st->sreason,
			    sizeof(st->sreason));
		set_result(&dres, RELAY_TEMPFAIL, 0, st->sreason);
	}
	m->data = dres;
	for (j = 0; j < env->nrcpts; j++) {
		rs = rc[j] != NULL ? smtp_recipient_status(rc[j]) : NULL;
		if (rs != NULL && reply_classify(rs->code, rs->text,
		                      REPLY_AT_RCPT) == REPLY_OK)
			accepted++;
	}
	for (j = 0; j < env->nrcpts; j++) {
		struct relay_result *r = &m->rcpt[j];

		if (rc[j] == NULL)
			continue;
		rs = smtp_recipient_status(rc[j]);
		if (rs != NULL && reply_classify(rs->code, rs->text,
		                      REPLY_AT_RCPT) == REPLY_MALFORMED) {
			malformed_rcpt(st, m, j, rs, &dres, accepted > 0);
			qw = true;
		} else if (rs == NULL || rs->code == 0) {
			/* Connection gone before its RCPT reply. */
			if (st->sreason[0] == '\0')
				session_reason(relay, st, st->started,
				    st->sreason, sizeof(st->sreason));
			set_result(r, RELAY_TEMPFAIL, 0, st->sreason);
		} else if (rs->code / 100 != 2) {
			set_result_status(r, rs, REPLY_AT_RCPT);
			if (queue_wide(rs->code, rs->text, REPLY_AT_RCPT))
				qw = true;
		} else {
			/* Accepted at RCPT: the end of DATA decides, and its
			 * reply (the upstream's queue ID) is what the log
			 * keeps. */
			*r = dres;
		}
	}
message_done:
	/* Whatever failed after a protocol error was the upstream's doing. */
	if (st->protocol_error[0] != '\0') {
		qw = true;
		if (st->qw_reply[0] == '\0')
			snprintf(st->qw_reply, sizeof(st->qw_reply), "%s",
			    st->protocol_error);
	}
	/* After a refused AUTH libesmtp carries on unauthenticated; whatever
	 * the upstream then refused is our standing with it, not the
	 * message's fault. */
	if (st->auth == AUTH_REFUSED)
		for (j = 0; j < env->nrcpts; j++)
			if (rc[j] != NULL &&
			    m->rcpt[j].status == RELAY_PERMFAIL) {
				m->rcpt[j].status = RELAY_TEMPFAIL;
				qw = true;
			}
	if (qw) {
		m->queue_wide = true;
		for (j = 0; j < env->nrcpts; j++)
			if (rc[j] != NULL &&
			    m->rcpt[j].status == RELAY_PERMFAIL)
				m->rcpt[j].status = RELAY_TEMPFAIL;
		if (m->data.status == RELAY_PERMFAIL)
			m->data.status = RELAY_TEMPFAIL;
		if (st->qw_reply[0] == '\0')
			first_queue_wide(
			    m, rc, st->qw_reply, sizeof(st->qw_reply));
	}
report:
	report_message(st->fd, i, m);
	wait_ack(st->ackfd);
}

static void
message_ended(struct session_state *st, smtp_message_t msg)
{
	size_t i;

	for (i = 0; i < st->n; i++)
		if (st->smsg[i] == msg && !st->reported[i]) {
			finish_message(st, i);
			return;
		}
}

/*
 * The libesmtp session, as one whole: every pending message of msgs on one
 * connection.  Results go to the parent through st.fd as they become final;
 * the return value and reason are the session's.
 */
static enum relay_status
session_run(struct relay *relay, struct relay_msg *msgs, size_t n, int fd,
    int ackfd, char *reason, size_t reasonlen)
{
	struct session_state st;
	smtp_session_t session = NULL;
	auth_context_t actx = NULL;
	struct body *bodies;
	enum relay_status ret = RELAY_OK;
	size_t i, j, queued = 0;
	long ms;
	static const int timeouts[] = {Timeout_GREETING, Timeout_ENVELOPE,
	    Timeout_DATA, Timeout_TRANSFER, Timeout_DATA2};

	memset(&st, 0, sizeof(st));
	st.sock = -1;
	st.relay = relay;
	st.msgs = msgs;
	st.n = n;
	st.fd = fd;
	st.ackfd = ackfd;
	st.smsg = xcalloc(n, sizeof(*st.smsg));
	st.srcpt = xcalloc(n, sizeof(*st.srcpt));
	st.reported = xcalloc(n, sizeof(*st.reported));
	bodies = xcalloc(n, sizeof(*bodies));

	if ((session = smtp_create_session()) == NULL)
		arnie_panic("relay: smtp_create_session failed");
	if (smtp_set_server(session, relay->name) == 0)
		arnie_panic("relay: smtp_set_server(%s) failed", relay->name);
	if (relay->helo_name != NULL)
		smtp_set_hostname(session, relay->helo_name);
	ms = relay->send_timeout > LONG_MAX / 1000 ? LONG_MAX
	                                           : relay->send_timeout * 1000;
	for (i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
		smtp_set_timeout(session,
		    timeouts[i] | Timeout_OVERRIDE_RFC2822_MINIMUM, ms);
	smtp_set_eventcb(session, event_cb, &st);
	smtp_set_monitorcb(session, monitor_cb, &st, 0);
	if (relay->use_tls) {
		smtp_starttls_enable(session, Starttls_REQUIRED);
		smtp_starttls_set_ctx(session, relay->ssl_ctx);
	} else
		smtp_starttls_enable(session, Starttls_DISABLED);
	if (relay->username != NULL) {
		if ((actx = auth_create_context()) == NULL)
			arnie_panic("relay: auth_create_context failed");
		/* PLAIN and LOGIN are fine: TLS is mandatory with AUTH. */
		auth_set_mechanism_flags(actx, AUTH_PLUGIN_PLAIN, 0);
		auth_set_interact_cb(actx, interact_cb, relay);
		smtp_auth_set_context(session, actx);
	}

	for (i = 0; i < n; i++) {
		struct envelope *env = msgs[i].env;

		st.srcpt[i] =
		    xcalloc(env->nrcpts ? env->nrcpts : 1, sizeof(**st.srcpt));
		if (envelope_pending(env) == 0)
			continue;
		bodies[i].fp = msgs[i].body;
		bodies[i].offset = env->body_offset;
		bodies[i].size = env->size;
		if ((st.smsg[i] = smtp_add_message(session)) == NULL)
			arnie_panic("relay: smtp_add_message failed");
		smtp_set_reverse_path(
		    st.smsg[i], env->sender != NULL ? env->sender : "");
		smtp_set_messagecb(st.smsg[i], body_cb, &bodies[i]);
		if (env->size > 0 && env->size <= ULONG_MAX)
			smtp_size_set_estimate(
			    st.smsg[i], (unsigned long)env->size);
		for (j = 0; j < env->nrcpts; j++) {
			if (env->rcpts[j].state != RCPT_PENDING)
				continue;
			st.srcpt[i][j] =
			    smtp_add_recipient(st.smsg[i], env->rcpts[j].addr);
			if (st.srcpt[i][j] == NULL)
				arnie_panic("relay: smtp_add_recipient failed");
		}
		queued++;
	}

	ERR_clear_error();
	relay->cur = &st;
	log_debug("relay %s: session with %zu message(s)", relay->name, queued);
	/* Messages that end while it runs are reported from the event
	 * callback, with the session still counted as started. */
	st.started = 1;
	st.started = smtp_start_session(session);
	relay->cur = NULL;

	for (i = 0; i < n; i++)
		if (st.smsg[i] != NULL && !st.reported[i])
			finish_message(&st, i);

	if (st.auth == AUTH_REFUSED || st.tls_error[0] != '\0' ||
	    st.starttls_missing || st.protocol_error[0] != '\0') {
		ret = RELAY_TEMPFAIL;
		session_reason(relay, &st, st.started, reason, reasonlen);
	} else if (st.qw_reply[0] != '\0') {
		ret = RELAY_TEMPFAIL;
		snprintf(reason, reasonlen, "%s", st.qw_reply);
	} else if (st.attempted < queued) {
		/* Refused, timed out, or broke off before the end. */
		ret = RELAY_TEMPFAIL;
		if (st.sreason[0] == '\0')
			session_reason(relay, &st, st.started, st.sreason,
			    sizeof(st.sreason));
		if (st.attempted == 0)
			snprintf(reason, reasonlen, "%s", st.sreason);
		else
			reasonf(reason, reasonlen,
			    "%s (after %zu of %zu messages)", st.sreason,
			    st.attempted, queued);
	}

	smtp_destroy_session(session);
	if (actx != NULL)
		auth_destroy_context(actx);
	for (i = 0; i < n; i++)
		free(st.srcpt[i]);
	free(st.srcpt);
	free(st.smsg);
	free(st.reported);
	free(bodies);
	return ret;
}

/*
 * Undo what the process inherited from a multithreaded daemon and does not
 * want: handlers of the front-end (libevent's would write into the parent's
 * signal pipe), the sender thread's blocked signals, and sockets (the
 * listener, client and MTA connections, which must close when the parent
 * closes them, not when this process ends).
 */
static void
close_socket(int fd, void *arg)
{
	(void)arg;
	(void)close(fd);
}

static void
child_setup(int keepfd, pid_t parent)
{
	struct sigaction sa, old;
	struct rlimit rl = {0, 0};
	sigset_t none;
	int sig;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	for (sig = 1; sig < NSIG; sig++) {
		if (sigaction(sig, NULL, &old) == -1)
			continue;
		sa.sa_handler = sig == SIGPIPE ? SIG_IGN : SIG_DFL;
		if (sig == SIGPIPE || sig == SIGTERM || sig == SIGINT ||
		    sig == SIGHUP || (old.sa_flags & SA_SIGINFO) ||
		    (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN))
			(void)sigaction(sig, &sa, NULL);
	}
	sigemptyset(&none);
	pthread_sigmask(SIG_SETMASK, &none, NULL);
	/* Die with the daemon: an orphan would go on delivering messages
	 * whose results nobody records (so they are sent again after the
	 * restart) and would keep the spool's sender lock, whose descriptor
	 * it inherited, away from the new daemon. */
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	/* A crash here is libesmtp's, known and logged by the parent; a core
	 * file at every retry would only fill the disk. */
	(void)setrlimit(RLIMIT_CORE, &rl);
	each_socket(keepfd, close_socket, NULL);
}

static void __attribute__((noreturn))
child_main(struct relay *relay, struct relay_msg *msgs, size_t n, int fd,
    int ackfd, pid_t parent)
{
	char reason[RELAY_REPLY_MAX] = "";
	enum relay_status ret;

	child_setup(fd, parent);
	ret = session_run(relay, msgs, n, fd, ackfd, reason, sizeof(reason));
	report_end(fd, ret, reason);
	/* No exit(): atexit handlers and stdio buffers are the parent's. */
	_exit(0);
}

/* ------------------------------------------------------ in the parent */

/* What the parent gathered from one session process. */
struct collect {
	relay_result_fn *fn; /* the caller's, for each message's results */
	void *arg;
	int ackfd; /* to the child: one octet per recorded message */
	bool *got; /* a complete WIRE_MSG arrived for this message */
	size_t ngot;
	bool complete; /* WIRE_END arrived */
	bool unrecorded; /* fn could not record a message's results */
	bool killed;   /* by us, at the deadline */
	bool aborted;  /* by relay_abort() */
	long deadline; /* seconds the child was given */
	enum relay_status status;
	char reason[RELAY_REPLY_MAX];
};

static long
ms_until(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(deadline->tv_sec - now.tv_sec) * 1000 +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

/* 1: len bytes read; 0: end of file or an error first; -1: deadline. */
static int
read_full(int fd, void *buf, size_t len, const struct timespec *deadline)
{
	struct pollfd pfd;
	char *p = buf;
	ssize_t r;
	long ms;

	while (len > 0) {
		if ((ms = ms_until(deadline)) <= 0)
			return -1;
		pfd.fd = fd;
		pfd.events = POLLIN;
		r = poll(&pfd, 1, ms > INT_MAX ? INT_MAX : (int)ms);
		if (r == -1 && errno != EINTR)
			return 0;
		if (r <= 0)
			continue;
		if ((r = read(fd, p, len)) == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return 0;
		p += r;
		len -= (size_t)r;
	}
	return 1;
}

/* One record.  1: taken; 0: end of the report (end of file, a torn or
 * malformed record); -1: deadline. */
static int
read_record(int fd, struct relay_msg *msgs, size_t n, struct collect *c,
    const struct timespec *deadline)
{
	struct wire_head h;
	struct relay_msg *m;
	size_t j;
	int r;

	if ((r = read_full(fd, &h, sizeof(h), deadline)) != 1)
		return r;
	h.res.reply[sizeof(h.res.reply) - 1] = '\0';
	if (h.kind == WIRE_END && !c->complete &&
	    h.res.status <= RELAY_PERMFAIL) {
		c->complete = true;
		c->status = h.res.status;
		snprintf(c->reason, sizeof(c->reason), "%s", h.res.reply);
		return 1;
	}
	if (h.kind != WIRE_MSG || c->complete || h.index >= n ||
	    c->got[h.index] || h.nrcpts != msgs[h.index].env->nrcpts)
		return 0;
	m = &msgs[h.index];
	if ((r = read_full(
	         fd, m->rcpt, h.nrcpts * sizeof(*m->rcpt), deadline)) != 1)
		return r;
	for (j = 0; j < h.nrcpts; j++)
		m->rcpt[j].reply[sizeof(m->rcpt[j].reply) - 1] = '\0';
	m->attempted = h.attempted != 0;
	m->queue_wide = h.queue_wide != 0;
	m->data = h.res;
	c->got[h.index] = true;
	c->ngot++;
	/* Recorded before the session goes on (see wait_ack()).  A child
	 * that is gone makes the write fail, which is no harm.  What cannot
	 * be recorded stops the session: the child, seeing no
	 * acknowledgement, exits. */
	if (c->fn != NULL && c->fn(c->arg, m) == -1) {
		c->unrecorded = true;
		return 0;
	}
	(void)!write(c->ackfd, "k", 1);
	return 1;
}

static void
kill_child(struct relay *relay, bool abort)
{
	pthread_mutex_lock(&relay->child_lock);
	if (relay->child > 0) {
		(void)kill(relay->child, SIGKILL);
		relay->aborted = relay->aborted || abort;
	}
	pthread_mutex_unlock(&relay->child_lock);
}

/* Forget the child before reaping it, so that relay_abort() can never
 * signal a recycled PID.  Returns the wait status, or -1 if unknown. */
static int
reap_child(struct relay *relay, pid_t pid, struct collect *c)
{
	int status;

	pthread_mutex_lock(&relay->child_lock);
	relay->child = 0;
	c->aborted = relay->aborted;
	relay->aborted = false;
	pthread_mutex_unlock(&relay->child_lock);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	return status;
}

/*
 * The whole session is bounded, whatever libesmtp does: it has no connect
 * timeout, and a peer that trickles bytes restarts its read timeouts.  Each
 * message may take a few timeouts (MAIL, RCPTs and DATA, the transfer, the
 * final reply) and the session a few more (connect, greeting, EHLO,
 * STARTTLS, AUTH, QUIT); the transfer also gets 1 s per 16 KiB.
 */
static long
session_deadline(
    const struct relay *relay, const struct relay_msg *msgs, size_t n)
{
	uint64_t bytes = 0;
	size_t i;

	for (i = 0; i < n; i++)
		bytes += msgs[i].env->size;
	return relay->send_timeout * (6 + 3 * (long)n) + (long)(bytes / 16384);
}

/* Read the child's report until it ends, or kill the child at the
 * deadline or on a malformed record; then reap it. */
static int
collect_report(struct relay *relay, pid_t pid, int fd, struct relay_msg *msgs,
    size_t n, struct collect *c)
{
	struct timespec deadline;
	int r;

	c->deadline = session_deadline(relay, msgs, n);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += c->deadline;
	while ((r = read_record(fd, msgs, n, c, &deadline)) == 1)
		continue;
	if (r == -1 || !c->complete) {
		/* Also when the pipe closed without an end: the child is
		 * dead or about to be, and must not linger. */
		c->killed = r == -1;
		kill_child(relay, false);
	}
	return reap_child(relay, pid, c);
}

/* A message the session process gave no (complete) result for: not
 * attempted, so that no attempt is spent on trouble of ours. */
static void
set_unreported(struct relay_msg *m, const char *why)
{
	size_t j;

	m->attempted = false;
	m->queue_wide = false;
	set_result(&m->data, RELAY_TEMPFAIL, 0, why);
	memset(m->rcpt, 0, m->env->nrcpts * sizeof(*m->rcpt));
	for (j = 0; j < m->env->nrcpts; j++)
		if (m->env->rcpts[j].state == RCPT_PENDING)
			m->rcpt[j] = m->data;
}

/* Why the report is incomplete, from the child's wait status. */
static void
death_reason(const struct collect *c, int status, size_t queued, char *dst,
    size_t dstlen)
{
	char what[128];

	if (c->unrecorded)
		snprintf(what, sizeof(what),
		    "session stopped: results cannot be recorded in the spool");
	else if (c->killed)
		snprintf(what, sizeof(what),
		    "relay process killed at the %ld s deadline", c->deadline);
	else if (c->aborted)
		snprintf(what, sizeof(what), "relay process stopped");
	else if (status != -1 && WIFSIGNALED(status))
		snprintf(what, sizeof(what), "relay process died (signal %d)",
		    WTERMSIG(status));
	else if (status != -1 && WIFEXITED(status))
		snprintf(what, sizeof(what),
		    "relay process exited (status %d) without a report",
		    WEXITSTATUS(status));
	else
		snprintf(
		    what, sizeof(what), "relay process ended without a report");
	snprintf(
	    dst, dstlen, "%s after %zu of %zu messages", what, c->ngot, queued);
}

/*
 * Prepare the parent's copy of msgs: results reset, result arrays
 * allocated (the child fills its own copies and sends them back), header
 * changes logged.  Returns the number of messages with pending recipients.
 */
static size_t
prepare_msgs(struct relay_msg *msgs, size_t n)
{
	size_t i, queued = 0;

	for (i = 0; i < n; i++) {
		struct relay_msg *m = &msgs[i];

		relay_msg_clear(m);
		m->attempted = false;
		m->queue_wide = false;
		memset(&m->data, 0, sizeof(m->data));
		m->rcpt = xcalloc(
		    m->env->nrcpts ? m->env->nrcpts : 1, sizeof(*m->rcpt));
		if (envelope_pending(m->env) == 0)
			continue;
		header_check(m);
		queued++;
	}
	return queued;
}

/* Fork the session process, with *fd the read end of its report pipe and
 * *ackfd the write end of its acknowledgements.  Returns its PID, or -1
 * with errno. */
static pid_t
start_child(struct relay *relay, struct relay_msg *msgs, size_t n, int *fd,
    int *ackfd)
{
	pid_t pid, parent = getpid();
	int fds[2], acks[2], saved;

	if (pipe2(fds, O_CLOEXEC) == -1)
		return -1;
	if (pipe2(acks, O_CLOEXEC) == -1) {
		saved = errno;
		close(fds[0]);
		close(fds[1]);
		errno = saved;
		return -1;
	}
	if ((pid = fork()) == 0) {
		close(fds[0]);
		close(acks[1]);
		child_main(relay, msgs, n, fds[1], acks[0], parent);
	}
	saved = errno;
	close(fds[1]);
	close(acks[0]);
	if (pid == -1) {
		close(fds[0]);
		close(acks[1]);
		errno = saved;
		return -1;
	}
	*ackfd = acks[1];
	/* relay_abort() before this point finds no child and the session
	 * runs its course, as if the abort had come before relay_send(). */
	pthread_mutex_lock(&relay->child_lock);
	relay->child = pid;
	pthread_mutex_unlock(&relay->child_lock);
	*fd = fds[0];
	return pid;
}

/*
 * libesmtp 1.1 can crash (a jump through protocol_states[-1] when the
 * upstream drops a pipelined session), and the listener or the milter live
 * in this process.  So each session runs in a child of its own, as Postfix
 * keeps its smtp client apart from its queue manager.  fork() from a
 * threaded daemon is safe for what the child does: malloc is fork-safe in
 * glibc, log.c holds its lock across fork(), the SSL_CTX and the relay are
 * only read, and nothing else runs; a lock left taken by another thread
 * (OpenSSL, the resolver) would hang the child, which the deadline ends.
 */
enum relay_status
relay_send(struct relay *relay, struct relay_msg *msgs, size_t n,
    relay_result_fn *fn, void *arg, char *reason, size_t reasonlen)
{
	struct collect c;
	enum relay_status ret;
	size_t i, queued;
	int fd, status;
	pid_t pid;

	if (reasonlen > 0)
		reason[0] = '\0';
	if ((queued = prepare_msgs(msgs, n)) == 0) {
		snprintf(reason, reasonlen, "nothing to send");
		return RELAY_OK;
	}
	memset(&c, 0, sizeof(c));
	c.got = xcalloc(n, sizeof(*c.got));
	c.fn = fn;
	c.arg = arg;

	if ((pid = start_child(relay, msgs, n, &fd, &c.ackfd)) == -1) {
		log_warn(
		    "relay %s: cannot start the relay process", relay->name);
		snprintf(c.reason, sizeof(c.reason),
		    "cannot start the relay process: %s", strerror(errno));
		ret = RELAY_TEMPFAIL;
		goto unreported;
	}
	status = collect_report(relay, pid, fd, msgs, n, &c);
	close(fd);
	close(c.ackfd);
	if (c.complete) {
		if (!c.aborted && (status == -1 || !WIFEXITED(status) ||
		                      WEXITSTATUS(status) != 0))
			log_warnx("relay %s: relay process ended abnormally "
			          "(wait status %#x) after its report",
			    relay->name, (unsigned)status);
		ret = c.status;
		goto out;
	}
	death_reason(&c, status, queued, c.reason, sizeof(c.reason));
	log_warnx("relay %s: %s", relay->name, c.reason);
	ret = RELAY_TEMPFAIL;

unreported:
	for (i = 0; i < n; i++)
		if (!c.got[i] && envelope_pending(msgs[i].env) > 0)
			set_unreported(&msgs[i], c.reason);
out:
	snprintf(reason, reasonlen, "%s", c.reason);
	if (ret != RELAY_OK)
		log_debug("relay %s: session trouble: %s", relay->name, reason);
	free(c.got);
	return ret;
}

void
relay_abort(struct relay *relay)
{
	kill_child(relay, true);
}
