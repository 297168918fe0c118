/*
 * tls: see tls.h.  The context carries a struct tls as its app data, so
 * that its info and verify callbacks, which OpenSSL calls with an SSL and
 * nothing else, find the host name and the error buffer.
 */
#include "autoconf.h"

#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "clock.h"
#include "log.h"
#include "xmalloc.h"

struct tls {
	SSL_CTX *ctx;
	char *host;
	bool host_is_ip;
	bool verify;
	char *error; /* tls_watch()'s buffer, or NULL */
	size_t errorlen;
};

static struct tls *
tls_of(const SSL *ssl)
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
	struct tls *tls;

	(void)ret;
	if (!(where & SSL_CB_HANDSHAKE_START))
		return;
	tls = tls_of(ssl);
	if (tls == NULL || tls->host_is_ip)
		return;
	if (SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) == NULL)
		SSL_set_tlsext_host_name(ssl, tls->host);
}

/* Keep the first reason a certificate was refused, for the log. */
static int
verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl;
	struct tls *tls;
	X509 *cert;
	char subject[256] = "";
	int err, depth;

	if (ok)
		return ok;
	ssl = X509_STORE_CTX_get_ex_data(
	    xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	if (ssl == NULL || (tls = tls_of(ssl)) == NULL || !tls->verify ||
	    tls->error == NULL || tls->error[0] != '\0')
		return ok;
	err = X509_STORE_CTX_get_error(xs);
	depth = X509_STORE_CTX_get_error_depth(xs);
	if ((cert = X509_STORE_CTX_get_current_cert(xs)) != NULL)
		X509_NAME_oneline(
		    X509_get_subject_name(cert), subject, sizeof(subject));
	snprintf(tls->error, tls->errorlen,
	    "certificate verify failed: %s (depth %d, subject %s)",
	    X509_verify_cert_error_string(err), depth,
	    subject[0] != '\0' ? subject : "?");
	return ok;
}

struct tls *
tls_new(const char *host, bool verify, const char *ca_file, char *err,
    size_t errlen)
{
	struct tls *tls = xcalloc(1, sizeof(*tls));
	X509_VERIFY_PARAM *param;
	struct in6_addr a6;
	struct in_addr a4;
	char ebuf[256];

	tls->host = xstrdup(host);
	tls->verify = verify;
	tls->host_is_ip = inet_pton(AF_INET, host, &a4) == 1 ||
	                  inet_pton(AF_INET6, host, &a6) == 1;
	if ((tls->ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context: %s",
		    ERR_error_string(ERR_get_error(), ebuf));
		goto fail;
	}
	/* TLS 1.3 too: tls_settle() keeps its session tickets from stalling
	 * libesmtp (see there). */
	SSL_CTX_set_min_proto_version(tls->ctx, TLS1_2_VERSION);
	if (SSL_CTX_set_default_verify_paths(tls->ctx) != 1)
		log_warnx("relay: cannot load the system CA store");
	if (ca_file != NULL && *ca_file != '\0' &&
	    SSL_CTX_load_verify_locations(tls->ctx, ca_file, NULL) != 1) {
		snprintf(err, errlen, "OUTBOUND_EMAIL_CA_FILE %s: %s", ca_file,
		    ERR_error_string(ERR_get_error(), ebuf));
		goto fail;
	}
	param = SSL_CTX_get0_param(tls->ctx);
	X509_VERIFY_PARAM_set_hostflags(
	    param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (tls->host_is_ip ? X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1
	                    : X509_VERIFY_PARAM_set1_host(param, host, 0) != 1) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST %s: not usable for certificate checks",
		    host);
		goto fail;
	}
	SSL_CTX_set_verify(
	    tls->ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, verify_cb);
	SSL_CTX_set_info_callback(tls->ctx, info_cb);
	SSL_CTX_set_app_data(tls->ctx, tls);
	return tls;
fail:
	tls_free(tls);
	return NULL;
}

void
tls_free(struct tls *tls)
{
	if (tls == NULL)
		return;
	SSL_CTX_free(tls->ctx);
	free(tls->host);
	free(tls);
}

SSL_CTX *
tls_ctx(struct tls *tls)
{
	return tls->ctx;
}

void
tls_watch(struct tls *tls, char *error, size_t len)
{
	tls->error = error;
	tls->errorlen = len;
}

/* Wait, until deadline (clock_mono()), for what SSL_read() or SSL_write()
 * said it wants after returning ret.  0, or -1 with errno. */
static int
wait_for_io(SSL *ssl, int ret, double deadline)
{
	struct pollfd p = {SSL_get_fd(ssl), 0, 0};
	double left;
	int n;

	switch (SSL_get_error(ssl, ret)) {
	case SSL_ERROR_WANT_READ:
		p.events = POLLIN;
		break;
	case SSL_ERROR_WANT_WRITE:
		p.events = POLLOUT;
		break;
	case SSL_ERROR_SYSCALL:
		if (errno == 0)
			errno = ECONNRESET;
		return -1;
	default:
		errno = ECONNRESET;
		return -1;
	}
	for (;;) {
		if ((left = deadline - clock_mono()) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		n = poll(&p, 1, (int)(left * 1000) + 1);
		if (n == 1)
			return 0;
		if (n == -1 && errno != EINTR)
			return -1;
	}
}

/* Does buf[0..len) end with the last line of a reply ("250 ..." CRLF)?
 * Earlier lines ("250-...") are dropped from buf as they complete. */
static bool
reply_done(char *buf, size_t *len)
{
	char *nl;
	size_t line;

	while ((nl = memchr(buf, '\n', *len)) != NULL) {
		line = (size_t)(nl - buf) + 1;
		if (line >= 4 && buf[3] != '-')
			return true;
		memmove(buf, nl + 1, *len - line);
		*len -= line;
	}
	return false;
}

int
tls_settle(SSL *ssl, long timeout_ms)
{
	double deadline = clock_mono() + (double)timeout_ms / 1000;
	char buf[1024];
	size_t len = 0;
	int n;

	while ((n = SSL_write(ssl, "NOOP\r\n", 6)) <= 0)
		if (wait_for_io(ssl, n, deadline) == -1)
			goto fail;
	for (;;) {
		if (len == sizeof(buf)) {
			errno = EPROTO; /* a line longer than any reply's */
			goto fail;
		}
		n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - len));
		if (n <= 0) {
			if (wait_for_io(ssl, n, deadline) == -1)
				goto fail;
			continue;
		}
		len += (size_t)n;
		if (reply_done(buf, &len))
			return 0;
	}
fail:
	/* Whatever the server says next could be taken for the reply to
	 * EHLO: the connection is closed under libesmtp instead. */
	n = errno;
	(void)shutdown(SSL_get_fd(ssl), SHUT_RDWR);
	errno = n;
	return -1;
}
