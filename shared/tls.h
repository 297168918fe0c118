/*
 * tls: the TLS context of the relay's upstream sessions.
 *
 * Builds the SSL_CTX handed to libesmtp: TLS 1.2 or 1.3, the system CA
 * store plus an
 * optional CA file, the configured host name (or IP address) checked by
 * OpenSSL during the handshake, and that name sent as SNI, which libesmtp
 * 1.1 never sends.  The first reason a certificate is refused is written to
 * the buffer given with tls_watch(), since after a failed handshake OpenSSL
 * only says "certificate verify failed".
 *
 * Used by the relay program only; one thread.  Never logs a secret (it
 * holds none).
 */
#ifndef ARNIE_TLS_H
#define ARNIE_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

struct tls;

/*
 * A context for host (a name or an IP address literal), verifying the
 * certificate when verify, trusting ca_file (PEM; NULL or "": the system
 * store only) besides the system store.  NULL with a one-line message in
 * err (naming OUTBOUND_EMAIL_CA_FILE or OUTBOUND_EMAIL_HOST) on error.
 */
struct tls *tls_new(const char *host, bool verify, const char *ca_file,
    char *err, size_t errlen);
void tls_free(struct tls *tls);

/* The SSL_CTX for smtp_starttls_set_ctx(); borrowed. */
SSL_CTX *tls_ctx(struct tls *tls);

/* Where the next handshakes note the first certificate refusal (a buffer
 * of len octets, which must be "" to be written); NULL stops it. */
void tls_watch(struct tls *tls, char *error, size_t len);

/*
 * After a TLS 1.3 handshake, before libesmtp goes on (its STARTTLS_OK
 * event): send NOOP and read the reply.  Why: a TLS 1.3 server sends its
 * session tickets (NewSessionTicket records) after the handshake.  When
 * they are already in the socket as libesmtp 1.1 polls with its EHLO
 * queued but not sent, poll() says "readable" as well as "writable",
 * libesmtp handles the read first, SSL_read() consumes the tickets and
 * finds no reply, and libesmtp waits for one to a command it never sent
 * until its timeout (tests/tls13 reproduces it).  The server writes its
 * tickets before its reply to NOOP, so once that reply is read OpenSSL has
 * taken them, and the socket is quiet when libesmtp polls.  Costs one
 * round trip per TLS 1.3 session.  0; or -1 with errno (ETIMEDOUT after
 * timeout_ms, a socket error, EPROTO for a reply line over 1 KiB), the
 * connection then shut down so that libesmtp fails the session rather than
 * take the NOOP's reply for its EHLO's.
 */
int tls_settle(SSL *ssl, long timeout_ms);

#endif
