/*
 * message: complete a message's header section once, when it is accepted,
 * so that the bytes Arnie spools are the bytes it relays.
 *
 * Why: libesmtp 1.1, the relay's SMTP library, rewrites the header section
 * of every message it sends and cannot be told not to (checked in its
 * headers.c and protocol.c cmd_data2, and by sending crafted messages
 * through it).  What it does, for the header section as it sees it (every
 * line up to the first line that is exactly CRLF; a line starting with SP
 * or HTAB continues the field before it; the field name is every octet
 * before the first ':', compared without regard to case):
 *   - adds "Date:", "From:" (the envelope sender, "<>" when empty) and
 *     "Message-Id:" when the message has none, after the last field;
 *   - drops every Return-Path, Original-Recipient and Resent-Reply-To
 *     field, and every field whose name starts with "Original-": an
 *     unknown name is looked up again by its text up to the first '-',
 *     "Original-" hashes into Original-Recipient's bucket and only 9
 *     octets are compared, so Original-Subject, Original-Message-ID...
 *     are dropped too;
 *   - keeps only the first Date, From, Message-Id, Sender, To, Cc, Bcc,
 *     Reply-To and Disposition-Notification-To field and drops repeats;
 *   - always writes the CRLF line that ends the header section, so a
 *     message without one gets it after its last line;
 *   - ends a last line that lacks its CRLF with one (also in the body).
 * Everything else passes unchanged: other fields and their repeats
 * (Subject, Received, Content-*, MIME-*, Resent-* ...), folding, bare LF
 * and 8-bit octets inside lines; the body is only dot-stuffed.
 *
 * What this module does instead, at accept time, as Postfix's cleanup(8)
 * does with always_add_missing_headers: message_fixup() finds the header
 * section, counts Date, From and Message-ID, and plans the additions and
 * removals above; message_iov() then describes the completed message as
 * an iovec over the original buffer plus a few owned strings, for
 * spool_write()/commitq_submit().  A message spooled that way has nothing
 * left for libesmtp to change, so it goes out byte for byte.
 *
 * The header section, as Postfix's cleanup(8) and mime_state see it: the
 * lines from the start of the message up to the first empty line (exactly
 * CRLF), as long as each is a header field ("name:" with a name of
 * printable US-ASCII other than ':', optional SP/HTAB before the colon,
 * as is_header() in Postfix) or a continuation line of one.  Lines end with
 * CRLF only; a bare LF is part of a line, as for libesmtp.  Three shapes:
 *   MESSAGE_END_BLANK  the usual: an empty line ends the header section.
 *   MESSAGE_END_BODY   a line that is not a header field comes first (a
 *                      message may even start with body text): the body
 *                      starts there, and an empty line is inserted before
 *                      it, as Postfix does ("force output of one blank
 *                      line"), because libesmtp would otherwise take the
 *                      body's first lines for header fields.
 *   MESSAGE_END_EOF    the message ends inside its header section (no
 *                      empty line, possibly no lines at all): the empty
 *                      line is appended, as libesmtp would append it.
 * Missing fields are added at the end of the header section (Postfix's
 * place, and libesmtp's), in Postfix's order:
 *   Message-ID: <ID@HOSTNAME>        ID = the spool ID
 *   Date: Tue, 5 Mar 2024 09:08:07 +0100     local time, numeric offset
 *   From: SENDER                     the envelope sender as an addr-spec
 * With an empty envelope sender, From is "MAILER-DAEMON@HOSTNAME": Postfix
 * writes the bare "MAILER-DAEMON", which is no valid RFC 5322 address and
 * which smarthosts may refuse, so Arnie qualifies it with its host name.
 * Field names of our own follow RFC 5322's spelling; libesmtp compares
 * names without case, so "Message-ID" counts as its "Message-Id".
 *
 * Blind copies: every Bcc: and Resent-Bcc: field is left out too, unless
 * MESSAGE_KEEP_BCC is given (REMOVE_BCC_HEADERS=false).  An application
 * hands Arnie the message as it would hand it to sendmail -t, with the
 * hidden recipients in Bcc:; Sendmail deletes that field when it delivers,
 * as msmtp, dma and nullmailer do, but Arnie takes its copy earlier, and
 * relayed as is the field would show every recipient who else got the
 * message.  The envelope keeps every recipient; message_fix_log() says
 * "dropped Bcc".
 *
 * What still changes a message on its way, and the contract admits it:
 * the dropped and repeated fields listed above are removed at accept time,
 * since libesmtp 1.1 cannot relay them byte for byte (such a message breaks
 * RFC 5322 3.6, which allows each of those fields once, or carries trace
 * fields a relay should not pass on); message_fix_log() says so in the log
 * with the message ID, so that the spool never claims bytes it will not
 * send.  A field name with SP/HTAB before
 * the colon ("Date : x", obsolete syntax) is not the field for libesmtp, so
 * it is not counted here either and the proper field is added beside it.
 * Left as is because no real sender produces them: a NUL inside a field
 * name (libesmtp's name comparison stops there), and a name that is
 * neither a field libesmtp knows nor a prefix of one but lands in the same
 * hash bucket as one (libesmtp then compares beyond the end of its stored
 * name; in practice that never matches).
 *
 * message_received() writes the Received: trace field that both front-ends
 * prepend to the completed message, in one shape for both.
 *
 * Nothing here touches the disk, logs (except message_fix_log()) or fails:
 * memory comes from xmalloc.  The message buffer is borrowed and never
 * modified; a struct message_fix owns its strings until message_fix_clear().
 * The functions are thread-safe (no shared state).
 */
#ifndef ARNIE_MESSAGE_H
#define ARNIE_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>
#include <time.h>

/* The fields added when missing. */
enum message_field {
	MESSAGE_DATE,
	MESSAGE_FROM,
	MESSAGE_ID, /* Message-ID */
	MESSAGE_NFIELDS,
};

enum message_end {
	MESSAGE_END_BLANK, /* an empty line ends the header section */
	MESSAGE_END_BODY,  /* a non-header line does; no empty line */
	MESSAGE_END_EOF,   /* the message ends inside its header section */
};

/* One field to leave out: its first line and every continuation line. */
struct message_range {
	size_t off;       /* offset of the field's first octet */
	size_t len;       /* octets up to and including its last CRLF */
	bool repeated;    /* a repeat of a field allowed once; false: a
	                   * field libesmtp never sends (Return-Path,
	                   * Original-*, Resent-Reply-To) or a blind copy
	                   * field (Bcc, Resent-Bcc) */
	const char *name; /* for the log: "Return-Path", "To",
	                   * "Original-*", "Bcc"...; static */
};

struct message_scan {
	enum message_end end;
	size_t header_len;   /* octets of the header section, without the
	                      * empty line that ends it */
	size_t body_off;     /* first octet after the header section and
	                      * its empty line, if any (len when none) */
	bool has_header;     /* at least one header field */
	const char *eol_fix; /* "\r\n" or "\n" when the last line lacks
	                      * (part of) its CRLF and is kept, else NULL */
	unsigned count[MESSAGE_NFIELDS]; /* fields present, repeats included */
	struct message_range *drop;      /* owned, in message order */
	size_t ndrop;
	unsigned nrepeated; /* ranges in drop[] with repeated set */
};

/* Options of message_scan() and message_fixup(), or-ed. */
enum message_option {
	MESSAGE_KEEP_BCC = 1 << 0, /* keep Bcc: and Resent-Bcc: fields */
};

/*
 * Examine the header section of msg[0..len) (see the top comment) with
 * opts (enum message_option) and fill scan.  Never fails; msg may be NULL
 * when len is 0.  Release with message_scan_clear().
 */
void message_scan(
    const char *msg, size_t len, unsigned opts, struct message_scan *scan);
void message_scan_clear(struct message_scan *scan);

/*
 * Does the whole line line[0..len) (its CRLF included) end the header
 * section, as message_scan() decides: the empty line, or a line that is no
 * header field (nor, when in_field says a field came before it, a
 * continuation line)?  For a caller that meets the lines one at a time.
 */
bool message_line_ends_header(const char *line, size_t len, bool in_field);

/*
 * The value of the first header field called name (compared without case)
 * in the header section of msg[0..len): continuation lines unfolded, blanks
 * around it trimmed; owned, or NULL when there is no such field.  For
 * arnie-queue, which finds a message by its Message-ID.
 */
char *message_field_value(const char *msg, size_t len, const char *name);

/* The plan for one message: what message_iov() will produce. */
struct message_fix {
	struct message_scan scan;
	char *added; /* the lines to add, owned; NULL if none */
	size_t addedlen;
	bool add[MESSAGE_NFIELDS]; /* which fields added holds */
	size_t size;               /* octets of the completed message */
};

/*
 * Scan msg with opts (enum message_option) and plan its completion.  id is
 * the spool ID (for Message-ID),
 * sender the envelope sender without <> ("" for the null sender), hostname
 * Arnie's host name (cfg->helo_name; NULL means "localhost"), when the
 * arrival time for Date.  A sender holding a control character (CR, LF...)
 * cannot be written into a header: MAILER-DAEMON@HOSTNAME is used.
 * Release with message_fix_clear(), which accepts a zeroed struct.
 */
void message_fixup(struct message_fix *fix, const char *msg, size_t len,
    unsigned opts, const char *id, const char *sender, const char *hostname,
    time_t when);
void message_fix_clear(struct message_fix *fix);

/* The number of iovec entries message_iov() needs at most for fix. */
int message_iovcnt(const struct message_fix *fix);

/*
 * Describe the completed message as iov[0..n): the header section without
 * the dropped fields, the added fields, the empty line when needed, the
 * body.  The entries point into msg and into fix, which must both outlive
 * their use (until the commit's done callback).  msg and len must be those
 * given to message_fixup().  Returns n, or -1 with errno EOVERFLOW when
 * maxiov is smaller than message_iovcnt(fix).  Empty pieces are left out.
 */
int message_iov(const struct message_fix *fix, const char *msg, size_t len,
    struct iovec *iov, int maxiov);

/*
 * Log one line, "ID: header fixed: added Message-ID, Date, From; dropped
 * Return-Path, repeated To", when fix adds or drops anything; nothing for
 * a message that needed no change.
 */
void message_fix_log(const struct message_fix *fix, const char *id);

/*
 * Line length.  RFC 5322 2.1.1 allows at most 998 octets a line (CRLF not
 * counted), and upstreams enforce it, often only after they have taken
 * the whole message.  Both front-ends measure what they accept and refuse
 * a longer line at the end of DATA (554 5.6.0), while the application can
 * still re-encode the message (quoted-printable or base64), rather than
 * take it and have the upstream refuse it later.  Folding it instead (as
 * Postfix's smtp_line_length_limit does) would change the message after the
 * 250 and break the bytes-spooled-are-bytes-relayed rule.
 */
#define MESSAGE_LINE_MAX 998
/* The text of both front-ends' 554 5.6.0 for a longer line. */
#define MESSAGE_LINE_REFUSAL                                                   \
	"Message has a line longer than 998 octets; encode it "                \
	"(quoted-printable or base64)"

struct message_lines {
	size_t cur;     /* octets of the line so far */
	size_t longest; /* the longest complete or partial line seen */
	bool cr;        /* the last octet was CR */
};

/* Measure buf[0..len), the next octets of a message fed in pieces; start
 * from a zeroed struct.  A line ends at LF; a CR before it is not counted. */
void message_lines_feed(struct message_lines *l, const char *buf, size_t len);

/*
 * The parts of a Received: trace field (RFC 5321 4.4) for
 * message_received().  Every pointer is borrowed; NULL leaves a part out.
 */
struct message_trace {
	const char *helo;        /* the client's HELO/EHLO name; NULL: no
	                          * "from" clause at all (a local submission,
	                          * as Postfix writes for sendmail(1) mail) */
	const char *client_name; /* its host name ("localhost", "unknown");
	                          * NULL or "": the address alone */
	const char *client_addr; /* its IP address as text, no brackets */
	const char *by;          /* Arnie's host name; NULL: "localhost" */
	const char *by_comment;  /* after the host name: "Arnie", ... */
	const char *with;        /* "ESMTP", "SMTP"; NULL: none */
	const char *id;          /* the spool ID */
	const char *comment;     /* "(comment)" on the line after the ID */
	const char *rcpt;        /* the only recipient: "for <rcpt>"; give
	                          * NULL when there are several, so that a
	                          * Bcc recipient is not disclosed */
	time_t when;             /* the arrival time, written in local time */
};

/*
 * The Received: field for t, with its CRLF, owned by the caller (free()):
 *   Received: from HELO (CLIENT_NAME [CLIENT_ADDR])
 *   <TAB>by BY (BY_COMMENT) with WITH id ID
 *   <TAB>(COMMENT) for <RCPT>; DATE
 * The third line only when there is a comment or a recipient; an IPv6
 * address (one holding ':') is written [IPv6:ADDR]; a client name in
 * brackets (Sendmail's for a client without a host name) is left out, as
 * the address says the same; DATE is as in the Date: field message_fixup()
 * adds.  Text from the client or the MTA cannot break the field: control
 * characters become '?' everywhere, and so does every octet that would end
 * a token or a comment early: "()\\;" and the space in HELO, the same and
 * "[]" in CLIENT_NAME, CLIENT_ADDR and ID, "()[]\\;" in COMMENT.  RCPT keeps
 * everything else (a quoted local part may hold spaces).  Never fails.
 */
char *message_received(const struct message_trace *t);

#endif
