/*
 * reply: the one place that decides what an upstream's SMTP reply means.
 *
 * Pure: no I/O, no state.  Every part of the relay asks reply_classify()
 * instead of looking at codes itself, so that "is this the message's fault
 * or the upstream's" is answered the same way everywhere, and a table test
 * (tests/unit/check_reply.c) pins every case down.
 *
 *   REPLY_OK          2xx: done.
 *   REPLY_TEMP        4xx about this recipient or this message: try it
 *                     again later, counting an attempt.
 *   REPLY_TEMP_QUEUE  about the upstream or our standing with it, not the
 *                     message: service closing (421), TLS unavailable or
 *                     throttling (454, as SES sends it even after DATA),
 *                     AUTH needed or refused (530, 534, 535, 538), any
 *                     refusal of the session itself (greeting, EHLO,
 *                     STARTTLS, AUTH).  The queue pauses and backs off; no
 *                     message spends an attempt.
 *   REPLY_PERM        5xx about the recipient or the message: refused for
 *                     good.
 *   REPLY_MALFORMED   not an SMTP reply (a code outside 200-599, such as
 *                     the 2500 libesmtp reads from "2500 ok"): a protocol
 *                     error of the upstream, queue-wide like REPLY_TEMP_QUEUE.
 *   REPLY_NONE        no reply at all (the connection ended first): try
 *                     again, as queue-wide trouble decides.
 */
#ifndef ARNIE_REPLY_H
#define ARNIE_REPLY_H

#include <stdbool.h>
#include <stddef.h>

enum reply_class {
	REPLY_OK,
	REPLY_TEMP,
	REPLY_TEMP_QUEUE,
	REPLY_PERM,
	REPLY_MALFORMED,
	REPLY_NONE,
};

/* Where in the dialogue the reply came. */
enum reply_stage {
	REPLY_AT_SESSION, /* greeting, EHLO, STARTTLS, AUTH */
	REPLY_AT_MAIL,
	REPLY_AT_RCPT,
	REPLY_AT_DATA, /* the reply to DATA (354 expected) */
	REPLY_AT_END,  /* the reply to the end of the message */
};

/* The class of reply code at stage; text (the reply's text, or NULL) is
 * not needed for any rule today but kept in the signature for the ones
 * that will (SES words its quotas). */
enum reply_class reply_classify(
    int code, const char *text, enum reply_stage stage);

/* True for the classes that pause the whole queue. */
bool reply_is_queue_wide(enum reply_class c);

/* True when line[0..len) is a well-formed reply line: three digits, the
 * first 2 to 5 (RFC 5321 4.2), then nothing, a space or a hyphen. */
bool reply_line_ok(const char *line, size_t len);

/* "ok", "temp", "temp-queue", "perm", "malformed", "none": for logs. */
const char *reply_class_name(enum reply_class c);

/*
 * The upstream's own ID for a message, from its 250 after DATA: the word
 * after "queued as" (Postfix, Postmark: "250 2.0.0 Ok: queued as
 * 4XkT2b"), or the one after a bare "Ok" (Amazon SES: "250 Ok
 * 0100018c...-000000").  Written into out (NUL-terminated, cut to len);
 * false, and out empty, when the reply names none.
 */
bool reply_queued_as(const char *reply, char *out, size_t len);

/*
 * What kind of queue-wide trouble a session's reason (session.h, or a
 * queue-wide reply) names, for monitoring and alerts: "tls" (the
 * handshake, the certificate, STARTTLS missing), "auth" (AUTH refused,
 * 530/534/535/538), "unreachable" (no connection, no answer), "throttled"
 * (454 outside STARTTLS and AUTH, or a 4xx that speaks of throttling, a
 * rate limit or too many messages), "refused" (421 or
 * another refusal of the session), else "other" (a protocol error).
 * Static strings.
 */
const char *reply_trouble_kind(const char *reason);

#endif
