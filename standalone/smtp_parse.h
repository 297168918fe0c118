/*
 * smtp_parse: the SMTP server's grammar, without any I/O.
 *
 * smtp_parse_command() turns one command line (CRLF already removed) into a
 * verb and its argument, or into the exact reply a server must give for it.
 * It knows the syntax of RFC 5321 (paths, source routes, the null path) and
 * of the MAIL parameters Arnie advertises (SIZE, BODY), and refuses
 * SMTPUTF8 (555), which the relay cannot pass on; it knows
 * nothing about the state of a session (sequence errors are the caller's).
 *
 * smtp_data is the DATA decoder: a streaming state machine that takes the
 * bytes after "354" in chunks of any size and yields the message.
 *  - The message ends only at CRLF "." CRLF, where both CRLFs are real
 *    CR LF pairs (the CRLF of the DATA command counts as the first one).
 *    "\n.\n", "\r.\n", "\n.\r\n", "\r\n.\n" never end it (SMTP smuggling).
 *  - A line starting with "." that is not the end loses that first "."
 *    (dot-unstuffing, RFC 5321 4.5.2); a lone "." line kept in the data
 *    (one next to a bare newline) is stored as it is.
 *  - A bare CR or a bare LF is stored as CRLF.  RFC 5321 2.3.8 says a client
 *    sends CR and LF only as a CRLF line end, so a bare one can only have
 *    been meant as a line end; Postfix 3.9 does the same by default
 *    (smtpd_forbid_bare_newline = normalize).  The stored message then has
 *    CRLF line ends only, so no bare newline can reach the upstream, where it
 *    could end the DATA of a less careful server.
 *  - The size counted is that of the stored message.  Past max_size the
 *    decoder stops storing, frees what it held, keeps reading to the end of
 *    data and reports SMTP_DATA_TOOBIG.
 *
 * Everything here is safe to call from one thread per object; nothing logs.
 */
#ifndef ARNIE_SMTP_PARSE_H
#define ARNIE_SMTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. */
#define SMTP_LINE_MAX 512

enum smtp_verb {
	SMTP_UNKNOWN, /* not a command: reply is set */
	SMTP_EHLO,
	SMTP_HELO,
	SMTP_MAIL,
	SMTP_RCPT,
	SMTP_DATA,
	SMTP_RSET,
	SMTP_NOOP,
	SMTP_QUIT,
	SMTP_VRFY,
	SMTP_HELP,
};

enum smtp_body {
	SMTP_BODY_NONE, /* no BODY= parameter */
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
};

struct smtp_cmd {
	enum smtp_verb verb;
	/*
	 * EHLO/HELO: the domain.  MAIL/RCPT: the mailbox without angle
	 * brackets and source route, "" for the null path <>.  VRFY/HELP/
	 * NOOP: the raw argument.  Always NUL-terminated.
	 */
	char arg[SMTP_LINE_MAX];
	bool eightbit; /* MAIL/RCPT: the mailbox has octets >= 0x80, which
	                * the session refuses (553 5.6.7): without SMTPUTF8
	                * no such address can be relayed */
	/* MAIL parameters. */
	bool has_size;
	uint64_t size;
	enum smtp_body body;
	/* On error: the whole reply line, without CRLF (static storage). */
	const char *reply;
};

/*
 * Parse line[0..len) (no CRLF; it may contain NUL octets).  Returns 0 with
 * cmd filled, or -1 with cmd->reply set and cmd->verb set to the verb when
 * the verb was recognised (SMTP_UNKNOWN otherwise).  Error replies:
 *   500 5.5.2 Line too long         len > SMTP_LINE_MAX - 2
 *   500 5.5.2 Error: bad syntax     empty line, control characters
 *   500 5.5.1 Command unrecognized  unknown verb
 *   501 5.5.4 Syntax: ...           malformed arguments
 *   501 5.1.7 / 5.1.3               bad sender / recipient address
 *   555 5.5.4 Unsupported parameter unknown MAIL/RCPT parameter
 *   555 5.5.4 SMTPUTF8 is not supported
 */
int smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd);

/* The reply text for a line that is too long (also used by the session
 * when it is still discarding the rest of such a line). */
#define SMTP_REPLY_TOO_LONG "500 5.5.2 Line too long"

enum smtp_data_status {
	SMTP_DATA_MORE,   /* give me more input */
	SMTP_DATA_DONE,   /* end of data seen; the message is ready */
	SMTP_DATA_TOOBIG, /* end of data seen; it exceeded max_size */
};

struct smtp_data {
	int state; /* private */
	size_t max_size;
	size_t size; /* octets produced so far (capped) */
	bool overflow;
	char *buf; /* owned: the message so far */
	size_t len, cap;
};

/* Start decoding a message of at most max_size octets. */
void smtp_data_init(struct smtp_data *d, size_t max_size);

/*
 * Feed in[0..len).  Returns how many octets were consumed: all of them while
 * the status is SMTP_DATA_MORE; when the end of data was reached, up to and
 * including its final LF, so what follows (pipelined commands) is left to the
 * caller.  Once DONE or TOOBIG, further calls consume nothing.
 */
size_t smtp_data_feed(struct smtp_data *d, const char *in, size_t len,
    enum smtp_data_status *status);

/*
 * Take the decoded message (owned by the caller, free() it) and its length;
 * the decoder is left empty.  NULL with *lenp 0 after an overflow.  An empty
 * message gives a non-NULL buffer.
 */
char *smtp_data_take(struct smtp_data *d, size_t *lenp);

/*
 * For a caller that streams the message: the octets decoded since the
 * last smtp_data_drop(), which forgets them (the buffer is kept for the
 * next ones).  The size counted for max_size goes on across drops.
 */
const char *smtp_data_peek(const struct smtp_data *d, size_t *lenp);
void smtp_data_drop(struct smtp_data *d);

/* Release what the decoder holds; it may be initialised again.  Safe on a
 * zeroed or already released decoder. */
void smtp_data_release(struct smtp_data *d);

#endif
