/*
 * stall: the smallest libesmtp client that shows why Arnie settles a
 * TLS 1.3 session (shared/tls.h, tls_settle()), run by test_tls13.py.
 *
 *   stall PORT CA_FILE MAX_VERSION SETTLE DELAY_MS
 *
 * Sends one message to 127.0.0.1:PORT over STARTTLS with TLS at most
 * MAX_VERSION ("1.2" or "1.3"), trusting CA_FILE for "localhost".  When the
 * handshake is done it waits DELAY_MS, as a client slower than its server
 * would (a loaded machine, a sanitizer build), so that the server's
 * session tickets are in the socket before libesmtp polls; with SETTLE
 * "1" it then calls tls_settle().  Read timeouts are 3 s.  Prints one
 * line, "status CODE after MS ms", and exits 0 when the message got 250.
 */
#include "autoconf.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libesmtp declares smtp_starttls_set_ctx() only for OpenSSL users. */
#include <openssl/ssl.h>
#include <libesmtp.h>

#include "tls.h"

static int settle, delay_ms;

static void
event_cb(smtp_session_t session, int event_no, void *arg, ...)
{
	va_list ap;
	SSL *ssl;

	(void)session;
	va_start(ap, arg);
	if (event_no == SMTP_EV_WRONG_PEER_CERTIFICATE) {
		/* libesmtp's own name check knows no IP addresses; OpenSSL
		 * has checked "localhost" (tls.c), as in the relay. */
		*va_arg(ap, int *) = 1;
		va_end(ap);
		return;
	}
	if (event_no != SMTP_EV_STARTTLS_OK) {
		va_end(ap);
		return;
	}
	ssl = va_arg(ap, SSL *);
	va_end(ap);
	usleep((useconds_t)delay_ms * 1000);
	if (settle && SSL_version(ssl) == TLS1_3_VERSION &&
	    tls_settle(ssl, 3000) == -1)
		perror("stall: tls_settle");
}

static double
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int
main(int argc, char *argv[])
{
	static const int timeouts[] = {Timeout_GREETING, Timeout_ENVELOPE,
	    Timeout_DATA, Timeout_TRANSFER, Timeout_DATA2};
	const smtp_status_t *st;
	smtp_session_t s;
	smtp_message_t m;
	struct tls *tls;
	char server[64], err[256];
	double start;
	size_t i;
	int code;

	if (argc != 6) {
		fprintf(stderr, "usage: stall PORT CA_FILE 1.2|1.3 0|1 "
		                "DELAY_MS\n");
		return 2;
	}
	settle = strcmp(argv[4], "1") == 0;
	delay_ms = atoi(argv[5]);
	if ((tls = tls_new("localhost", true, argv[2], err, sizeof(err))) ==
	    NULL) {
		fprintf(stderr, "stall: %s\n", err);
		return 2;
	}
	SSL_CTX_set_max_proto_version(tls_ctx(tls),
	    strcmp(argv[3], "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION);
	s = smtp_create_session();
	snprintf(server, sizeof(server), "127.0.0.1:%s", argv[1]);
	smtp_set_server(s, server);
	smtp_set_hostname(s, "client.test");
	smtp_starttls_enable(s, Starttls_REQUIRED);
	smtp_starttls_set_ctx(s, tls_ctx(tls));
	for (i = 0; i < sizeof(timeouts) / sizeof(timeouts[0]); i++)
		smtp_set_timeout(
		    s, timeouts[i] | Timeout_OVERRIDE_RFC2822_MINIMUM, 3000);
	smtp_set_eventcb(s, event_cb, NULL);
	m = smtp_add_message(s);
	smtp_set_reverse_path(m, "app@example.com");
	smtp_add_recipient(m, "user@example.org");
	smtp_set_message_str(m, (void *)"Subject: stall\r\n\r\nbody\r\n");
	start = now_ms();
	(void)smtp_start_session(s);
	st = smtp_message_transfer_status(m);
	code = st != NULL ? st->code : 0;
	printf("status %d after %.0f ms (%s)\n", code, now_ms() - start,
	    smtp_strerror(smtp_errno(), err, sizeof(err)));
	smtp_destroy_session(s);
	tls_free(tls);
	return code == 250 ? 0 : 1;
}
