/*
 * message: see message.h.  A single pass over the header section, one line
 * (CRLF-terminated, as libesmtp splits them) at a time, then a plan kept as
 * offsets into the caller's buffer plus one owned string of added fields.
 *
 * The rules for which fields libesmtp keeps mirror its header table
 * (headers.c, header_actions[] and process_header()) rather than RFC 5322,
 * because the point is to leave it nothing to change; message.h lists them
 * with the reasons.  This module never copies the message, never touches
 * the disk and never fails.
 */
#include "autoconf.h"

#include "message.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "timefmt.h"
#include "xmalloc.h"

enum rule_kind {
	RULE_ONCE, /* the first is kept, repeats are dropped */
	RULE_DROP, /* never sent by libesmtp */
};

struct rule {
	const char *name;
	enum rule_kind kind;
	int field; /* enum message_field, or -1 */
};

/* libesmtp 1.1's table: REQUIRE/SHOULD/OPTIONAL entries are RULE_ONCE,
 * PROHIBIT entries RULE_DROP; PRESERVE entries (Received, Content-*, MIME-*,
 * Resent-*) and unknown names pass, repeats included. */
static const struct rule rules[] = {
    {"Date", RULE_ONCE, MESSAGE_DATE},
    {"From", RULE_ONCE, MESSAGE_FROM},
    {"Message-ID", RULE_ONCE, MESSAGE_ID},
    {"Sender", RULE_ONCE, -1},
    {"To", RULE_ONCE, -1},
    {"Cc", RULE_ONCE, -1},
    {"Bcc", RULE_ONCE, -1},
    {"Reply-To", RULE_ONCE, -1},
    {"Disposition-Notification-To", RULE_ONCE, -1},
    {"Return-Path", RULE_DROP, -1},
    {"Original-Recipient", RULE_DROP, -1},
    {"Resent-Reply-To", RULE_DROP, -1},
};
#define NRULES (sizeof(rules) / sizeof(rules[0]))

/* libesmtp looks a name up whole, then by its text up to the first '-';
 * "Original-" shares a hash bucket with "Original-Recipient" and its
 * length-limited compare matches it, so every Original-* field is
 * prohibited too (seen with Original-Subject). */
#define ORIGINAL_PREFIX "Original-"
static const struct rule original_rule = {"Original-*", RULE_DROP, -1};
/* Instructions to Arnie (intake.h): read at acceptance, never relayed. */
#define ARNIE_PREFIX "X-Arnie-"
static const struct rule arnie_rule = {"X-Arnie-*", RULE_DROP, -1};

/* Blind copies are named in these fields; unless MESSAGE_KEEP_BCC says
 * otherwise, every one of them goes, so that no recipient reads who else
 * got the message (Sendmail, msmtp, dma and nullmailer remove them too).
 * The envelope still holds every recipient. */
static const struct rule bcc_rules[] = {
    {"Bcc", RULE_DROP, -1},
    {"Resent-Bcc", RULE_DROP, -1},
};

/*
 * The length of the field name when line[0..len) starts a header field as
 * Postfix's is_header() sees it: printable US-ASCII other than ':', then
 * optional SP/HTAB, then ':'.  The returned length runs up to the colon,
 * spaces included, since that is the name libesmtp compares.  0: not a
 * header field.
 */
static size_t
field_name_len(const char *line, size_t len)
{
	size_t i;
	bool space = false;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c == ':')
			return i > 0 ? i : 0;
		if (c == ' ' || c == '\t') {
			if (i == 0)
				return 0;
			space = true;
			continue;
		}
		if (space || c < 0x21 || c > 0x7e)
			return 0;
	}
	return 0;
}

static const struct rule *
find_rule(const char *name, size_t nlen, unsigned opts)
{
	size_t i, plen = sizeof(ORIGINAL_PREFIX) - 1;

	if (!(opts & MESSAGE_KEEP_BCC))
		for (i = 0; i < sizeof(bcc_rules) / sizeof(bcc_rules[0]); i++)
			if (strlen(bcc_rules[i].name) == nlen &&
			    strncasecmp(bcc_rules[i].name, name, nlen) == 0)
				return &bcc_rules[i];
	for (i = 0; i < NRULES; i++)
		if (strlen(rules[i].name) == nlen &&
		    strncasecmp(rules[i].name, name, nlen) == 0)
			return &rules[i];
	if (nlen >= plen && strncasecmp(name, ORIGINAL_PREFIX, plen) == 0)
		return &original_rule;
	plen = sizeof(ARNIE_PREFIX) - 1;
	if (nlen >= plen && strncasecmp(name, ARNIE_PREFIX, plen) == 0)
		return &arnie_rule;
	return NULL;
}

/* The end of the line starting at pos: just past its CRLF, or len. */
static size_t
line_end(const char *msg, size_t len, size_t pos)
{
	const char *p;
	size_t from = pos;

	while (
	    from < len && (p = memchr(msg + from, '\n', len - from)) != NULL) {
		size_t i = (size_t)(p - msg);

		if (i > pos && msg[i - 1] == '\r')
			return i + 1;
		from = i + 1; /* a bare LF belongs to the line */
	}
	return len;
}

/* Decide about the field msg[off..end) now that its last line is known. */
static void
close_field(struct message_scan *scan, const struct rule *r, unsigned *seen,
    size_t off, size_t end, size_t *cap)
{
	struct message_range *d;
	bool repeated = false;

	if (r == NULL)
		return;
	if (r->field >= 0)
		scan->count[r->field]++;
	if (r->kind == RULE_ONCE && seen[r - rules]++ == 0)
		return;
	if (r->kind == RULE_ONCE)
		repeated = true;
	if (scan->ndrop == *cap) {
		*cap = *cap == 0 ? 4 : *cap * 2;
		scan->drop =
		    xreallocarray(scan->drop, *cap, sizeof(*scan->drop));
	}
	d = &scan->drop[scan->ndrop++];
	d->off = off;
	d->len = end - off;
	d->repeated = repeated;
	d->name = r->name;
	if (repeated)
		scan->nrepeated++;
}

void
message_scan(
    const char *msg, size_t len, unsigned opts, struct message_scan *scan)
{
	unsigned seen[NRULES] = {0};
	const struct rule *cur = NULL;
	size_t pos = 0, end, field_off = 0, cap = 0;
	bool in_field = false;

	memset(scan, 0, sizeof(*scan));
	scan->end = MESSAGE_END_EOF;
	scan->header_len = len;
	scan->body_off = len;
	for (; pos < len; pos = end) {
		size_t nlen;

		end = line_end(msg, len, pos);
		if (end - pos == 2 && msg[pos] == '\r' &&
		    msg[pos + 1] == '\n') {
			scan->end = MESSAGE_END_BLANK;
			scan->header_len = pos;
			scan->body_off = end;
			break;
		}
		if (in_field && (msg[pos] == ' ' || msg[pos] == '\t'))
			continue; /* folded: part of the current field */
		if ((nlen = field_name_len(msg + pos, end - pos)) == 0) {
			/* Body text without the empty line before it. */
			scan->end = MESSAGE_END_BODY;
			scan->header_len = pos;
			scan->body_off = pos;
			break;
		}
		if (in_field)
			close_field(scan, cur, seen, field_off, pos, &cap);
		cur = find_rule(msg + pos, nlen, opts);
		field_off = pos;
		in_field = true;
		scan->has_header = true;
	}
	if (in_field)
		close_field(scan, cur, seen, field_off, scan->header_len, &cap);

	/* libesmtp ends a last line that lacks its CRLF with one; the spool
	 * gets it too, unless that line is in a dropped field. */
	if (len > 0 &&
	    (len < 2 || msg[len - 2] != '\r' || msg[len - 1] != '\n')) {
		bool dropped = scan->ndrop > 0 &&
		               scan->drop[scan->ndrop - 1].off +
		                       scan->drop[scan->ndrop - 1].len ==
		                   len;

		if (!dropped)
			scan->eol_fix = msg[len - 1] == '\r' ? "\n" : "\r\n";
	}
}

bool
message_line_ends_header(const char *line, size_t len, bool in_field)
{
	if (len == 2 && line[0] == '\r' && line[1] == '\n')
		return true;
	if (in_field && len > 0 && (line[0] == ' ' || line[0] == '\t'))
		return false;
	return field_name_len(line, len) == 0;
}

/* Append a line's value part to v without its line break (unfolding). */
static void
append_value(char **v, size_t *vlen, const char *p, size_t n)
{
	while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r'))
		n--;
	*v = xreallocarray(*v, *vlen + n + 1, 1);
	memcpy(*v + *vlen, p, n);
	*vlen += n;
	(*v)[*vlen] = '\0';
}

/* v with the blanks at both ends removed, in place. */
static char *
trim(char *v)
{
	char *p = v, *e;

	while (*p == ' ' || *p == '\t')
		p++;
	e = p + strlen(p);
	while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	memmove(v, p, (size_t)(e - p) + 1);
	return v;
}

char *
message_field_value(const char *msg, size_t len, const char *name)
{
	size_t off = 0, n, nlen, k, vlen = 0, want = strlen(name);
	bool in_field = false, taking = false;
	const char *line, *nl;
	char *v = NULL;

	while (off < len) {
		line = msg + off;
		nl = memchr(line, '\n', len - off);
		n = nl != NULL ? (size_t)(nl - line) + 1 : len - off;
		if (message_line_ends_header(line, n, in_field) ||
		    (n == 1 && line[0] == '\n'))
			break;
		if (in_field && (line[0] == ' ' || line[0] == '\t')) {
			if (taking)
				append_value(&v, &vlen, line, n);
		} else if (taking)
			break;
		else {
			nlen = k = field_name_len(line, n);
			while (k > 0 &&
			       (line[k - 1] == ' ' || line[k - 1] == '\t'))
				k--;
			in_field = true;
			if (k == want && strncasecmp(line, name, want) == 0) {
				taking = true;
				append_value(
				    &v, &vlen, line + nlen + 1, n - nlen - 1);
			}
		}
		off += n;
	}
	return v != NULL ? trim(v) : NULL;
}

void
message_scan_clear(struct message_scan *scan)
{
	if (scan == NULL)
		return;
	free(scan->drop);
	scan->drop = NULL;
	scan->ndrop = 0;
}

/* True when s can go into a header field as it is. */
static bool
header_safe(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

void
message_fixup(struct message_fix *fix, const char *msg, size_t len,
    unsigned opts, const char *id, const char *sender, const char *hostname,
    time_t when)
{
	char date[64];
	char *msgid = NULL, *datel = NULL, *from = NULL;
	size_t i;

	memset(fix, 0, sizeof(*fix));
	if (hostname == NULL || *hostname == '\0')
		hostname = "localhost";
	message_scan(msg, len, opts, &fix->scan);

	/* Postfix's order and place: after the last field. */
	if (fix->scan.count[MESSAGE_ID] == 0) {
		fix->add[MESSAGE_ID] = true;
		msgid = xasprintf("Message-ID: <%s@%s>\r\n", id, hostname);
	}
	if (fix->scan.count[MESSAGE_DATE] == 0) {
		fix->add[MESSAGE_DATE] = true;
		timefmt_date(when, date, sizeof(date));
		datel = xasprintf("Date: %s\r\n", date);
	}
	if (fix->scan.count[MESSAGE_FROM] == 0) {
		fix->add[MESSAGE_FROM] = true;
		if (sender != NULL && *sender != '\0' && header_safe(sender))
			from = xasprintf("From: %s\r\n", sender);
		else
			from =
			    xasprintf("From: MAILER-DAEMON@%s\r\n", hostname);
	}
	if (msgid != NULL || datel != NULL || from != NULL) {
		fix->added = xasprintf("%s%s%s", msgid != NULL ? msgid : "",
		    datel != NULL ? datel : "", from != NULL ? from : "");
		fix->addedlen = strlen(fix->added);
	}
	free(msgid);
	free(datel);
	free(from);

	fix->size = len + fix->addedlen;
	for (i = 0; i < fix->scan.ndrop; i++)
		fix->size -= fix->scan.drop[i].len;
	if (fix->scan.end != MESSAGE_END_BLANK)
		fix->size += 2;
	if (fix->scan.eol_fix != NULL)
		fix->size += strlen(fix->scan.eol_fix);
}

void
message_fix_clear(struct message_fix *fix)
{
	if (fix == NULL)
		return;
	message_scan_clear(&fix->scan);
	free(fix->added);
	fix->added = NULL;
	fix->addedlen = 0;
}

int
message_iovcnt(const struct message_fix *fix)
{
	/* Kept runs between drops, eol fix, added, empty line, the rest. */
	return (int)fix->scan.ndrop + 5;
}

static int
put(struct iovec *iov, int n, const void *base, size_t len)
{
	if (len == 0)
		return n;
	iov[n].iov_base = (void *)base;
	iov[n].iov_len = len;
	return n + 1;
}

int
message_iov(const struct message_fix *fix, const char *msg, size_t len,
    struct iovec *iov, int maxiov)
{
	static const char crlf[] = "\r\n";
	const struct message_scan *scan = &fix->scan;
	size_t i, pos = 0;
	int n = 0;

	if (maxiov < message_iovcnt(fix)) {
		errno = EOVERFLOW;
		return -1;
	}
	/* The header section without the dropped fields. */
	for (i = 0; i < scan->ndrop; i++) {
		n = put(iov, n, msg + pos, scan->drop[i].off - pos);
		pos = scan->drop[i].off + scan->drop[i].len;
	}
	n = put(iov, n, msg + pos, scan->header_len - pos);
	/* A message that ends in its header: its last line is a field's. */
	if (scan->end == MESSAGE_END_EOF && scan->eol_fix != NULL)
		n = put(iov, n, scan->eol_fix, strlen(scan->eol_fix));
	n = put(iov, n, fix->added, fix->addedlen);
	if (scan->end != MESSAGE_END_BLANK)
		n = put(iov, n, crlf, 2);
	/* The empty line, if the message has one, and the body. */
	n = put(iov, n, msg + scan->header_len, len - scan->header_len);
	if (scan->end != MESSAGE_END_EOF && scan->eol_fix != NULL)
		n = put(iov, n, scan->eol_fix, strlen(scan->eol_fix));
	return n;
}

/* Append s to buf[0..*used), keeping it terminated; text that does not
 * fit is cut, which only shortens a log line. */
static void
append(char *buf, size_t buflen, size_t *used, const char *s)
{
	int n = snprintf(buf + *used, buflen - *used, "%s", s);

	if (n < 0)
		return;
	*used += (size_t)n < buflen - *used ? (size_t)n : buflen - *used - 1;
}

void
message_fix_log(const struct message_fix *fix, const char *id)
{
	static const char *const names[MESSAGE_NFIELDS] = {
	    [MESSAGE_DATE] = "Date",
	    [MESSAGE_FROM] = "From",
	    [MESSAGE_ID] = "Message-ID"};
	static const enum message_field order[] = {
	    MESSAGE_ID, MESSAGE_DATE, MESSAGE_FROM};
	const struct message_scan *scan = &fix->scan;
	char buf[512];
	size_t used = 0, i, j;
	bool first = true;

	buf[0] = '\0';
	for (i = 0; i < MESSAGE_NFIELDS; i++) {
		if (!fix->add[order[i]])
			continue;
		append(buf, sizeof(buf), &used, first ? "added " : ", ");
		append(buf, sizeof(buf), &used, names[order[i]]);
		first = false;
	}
	/* Each dropped name once, in message order. */
	first = true;
	for (i = 0; i < scan->ndrop; i++) {
		const struct message_range *d = &scan->drop[i];
		bool seen = false;

		for (j = 0; j < i && !seen; j++)
			seen = scan->drop[j].name == d->name &&
			       scan->drop[j].repeated == d->repeated;
		if (seen)
			continue;
		if (first)
			append(buf, sizeof(buf), &used,
			    used > 0 ? "; dropped " : "dropped ");
		else
			append(buf, sizeof(buf), &used, ", ");
		if (d->repeated)
			append(buf, sizeof(buf), &used, "repeated ");
		append(buf, sizeof(buf), &used, d->name);
		first = false;
	}
	if (scan->end != MESSAGE_END_BLANK) {
		append(buf, sizeof(buf), &used, used > 0 ? "; " : "");
		append(buf, sizeof(buf), &used,
		    scan->end == MESSAGE_END_BODY
		        ? "empty line inserted before the body"
		        : "empty line appended");
	}
	if (used > 0)
		log_info("%s: header fixed: %s", id, buf);
}

void
message_lines_feed(struct message_lines *l, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len, *nl;
	size_t n;

	while (p < end) {
		if ((nl = memchr(p, '\n', (size_t)(end - p))) == NULL) {
			l->cur += (size_t)(end - p);
			l->cr = end[-1] == '\r';
			/* A CR at the end may be half of a CRLF. */
			n = l->cur - (l->cr ? 1 : 0);
			if (n > l->longest)
				l->longest = n;
			return;
		}
		n = l->cur + (size_t)(nl - p);
		/* The CR of the CRLF, in this piece or at the end of the
		 * last one. */
		if (nl > p ? nl[-1] == '\r' : l->cr)
			n--;
		if (n > l->longest)
			l->longest = n;
		l->cur = 0;
		l->cr = false;
		p = nl + 1;
	}
}

/* Characters that would end a token or a comment of a trace field early
 * (a ';' would even end its list of tokens): not written from outside. */
#define TRACE_TOKEN " ()[]\\;"
#define TRACE_COMMENT "()[]\\;"

/* A copy of s where control characters and the octets in bad are '?', so
 * that it can neither start a new line nor change the field's structure. */
static char *
trace_text(const char *s, const char *bad)
{
	char *copy = xstrdup(s != NULL ? s : ""), *p;

	for (p = copy; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c < 0x20 || c == 0x7f || strchr(bad, c) != NULL)
			*p = '?';
	}
	return copy;
}

char *
message_received(const struct message_trace *t)
{
	char date[64];
	char *from = NULL, *by, *third = NULL, *h;
	char *helo, *name = NULL, *addr, *id, *comment = NULL, *rcpt = NULL;
	const char *a;

	timefmt_date(t->when, date, sizeof(date));
	if (t->helo != NULL) {
		a = t->client_addr != NULL ? t->client_addr : "";
		/* Postfix's {client_addr} has no "IPv6:" tag; allow one. */
		if (strncasecmp(a, "IPv6:", 5) == 0)
			a += 5;
		/* A HELO may be an address literal: keep its brackets. */
		helo = trace_text(t->helo, " ()\\;");
		addr = trace_text(a, TRACE_TOKEN);
		/* Sendmail names an unresolved client "[ADDR]": the address
		 * alone says that. */
		if (t->client_name != NULL && *t->client_name != '\0' &&
		    *t->client_name != '[')
			name = trace_text(t->client_name, TRACE_TOKEN);
		/* RFC 5321 TCP-info: [Domain FWS] address-literal. */
		from = xasprintf("from %s (%s%s[%s%s])\r\n\t", helo,
		    name != NULL ? name : "", name != NULL ? " " : "",
		    strchr(addr, ':') != NULL ? "IPv6:" : "", addr);
		free(helo);
		free(name);
		free(addr);
	}
	id = trace_text(t->id, TRACE_TOKEN);
	by = xasprintf("by %s%s%s%s%s%s id %s",
	    t->by != NULL && *t->by != '\0' ? t->by : "localhost",
	    t->by_comment != NULL ? " (" : "",
	    t->by_comment != NULL ? t->by_comment : "",
	    t->by_comment != NULL ? ")" : "", t->with != NULL ? " with " : "",
	    t->with != NULL ? t->with : "", id);
	if (t->comment != NULL)
		comment = trace_text(t->comment, TRACE_COMMENT);
	/* A quoted local part may hold spaces and specials: only controls
	 * are a danger there. */
	if (t->rcpt != NULL)
		rcpt = trace_text(t->rcpt, "");
	if (comment != NULL || rcpt != NULL)
		third = xasprintf("\r\n\t%s%s%s%s%s%s%s",
		    comment != NULL ? "(" : "", comment != NULL ? comment : "",
		    comment != NULL ? ")" : "",
		    comment != NULL && rcpt != NULL ? " " : "",
		    rcpt != NULL ? "for <" : "", rcpt != NULL ? rcpt : "",
		    rcpt != NULL ? ">" : "");
	h = xasprintf("Received: %s%s%s; %s\r\n", from != NULL ? from : "", by,
	    third != NULL ? third : "", date);
	free(from);
	free(by);
	free(third);
	free(id);
	free(comment);
	free(rcpt);
	return h;
}
