/*
 * smtp_parse: SMTP command lines and the DATA stream, see smtp_parse.h.
 *
 * Pure functions over caller memory: no I/O, no logging, no global state.
 * The command parser is liberal where real mailers differ (case of verbs and
 * keywords, spaces after "FROM:", dots in local parts, 8-bit octets) and
 * strict where a mistake would change meaning (brackets, quotes, control
 * characters, unknown parameters).
 */
#include "autoconf.h"

#include "smtp_parse.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xmalloc.h"

#define R_BAD_SYNTAX "500 5.5.2 Error: bad syntax"
#define R_UNKNOWN "500 5.5.1 Command unrecognized"
#define R_EHLO_SYNTAX "501 5.5.4 Syntax: EHLO hostname"
#define R_HELO_SYNTAX "501 5.5.4 Syntax: HELO hostname"
#define R_MAIL_SYNTAX "501 5.5.4 Syntax: MAIL FROM:<address>"
#define R_RCPT_SYNTAX "501 5.5.4 Syntax: RCPT TO:<address>"
#define R_BAD_SENDER "501 5.1.7 Bad sender address syntax"
#define R_BAD_RCPT "501 5.1.3 Bad recipient address syntax"
#define R_BAD_SIZE "501 5.5.4 Bad SIZE parameter"
#define R_BAD_BODY "501 5.5.4 Bad BODY parameter"
/* Not advertised: libesmtp 1.1 cannot pass SMTPUTF8 on to the upstream,
 * and taking such a message would break RFC 6531 after the 250. */
#define R_NO_UTF8 "555 5.5.4 SMTPUTF8 is not supported"
#define R_DUP_PARAM "501 5.5.4 Duplicate parameter"
#define R_BAD_PARAM "501 5.5.4 Bad parameter syntax"
#define R_UNSUPPORTED "555 5.5.4 Unsupported parameter"
#define R_DATA_SYNTAX "501 5.5.4 Syntax: DATA"
#define R_RSET_SYNTAX "501 5.5.4 Syntax: RSET"
#define R_QUIT_SYNTAX "501 5.5.4 Syntax: QUIT"
#define R_VRFY_SYNTAX "501 5.5.4 Syntax: VRFY address"

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {
    {"EHLO", SMTP_EHLO},
    {"HELO", SMTP_HELO},
    {"MAIL", SMTP_MAIL},
    {"RCPT", SMTP_RCPT},
    {"DATA", SMTP_DATA},
    {"RSET", SMTP_RSET},
    {"NOOP", SMTP_NOOP},
    {"QUIT", SMTP_QUIT},
    {"VRFY", SMTP_VRFY},
    {"HELP", SMTP_HELP},
};

enum path_result {
	PATH_OK,
	PATH_SYNTAX, /* no brackets, unbalanced, junk after '>' */
	PATH_BAD,    /* brackets fine, the address inside is not */
};

#define PATH_ALLOW_NULL 0x1       /* <> */
#define PATH_ALLOW_POSTMASTER 0x2 /* <postmaster>, no domain */

static int
fail(struct smtp_cmd *cmd, const char *reply)
{
	cmd->reply = reply;
	return -1;
}

/* Characters RFC 5322 keeps out of an unquoted local part (besides
 * controls and space); everything else, 8-bit included, is accepted. */
static bool
local_special(unsigned char c)
{
	return c <= ' ' || c == 0x7f || strchr("()<>[]\\,;:\"@", c) != NULL;
}

static bool
check_local(const char *s, size_t len, bool *eightbit)
{
	size_t i;

	if (len == 0)
		return false;
	if (s[0] == '"') {
		/* A quoted string must be the whole local part. */
		for (i = 1; i < len; i++) {
			if (s[i] == '\\') {
				if (++i >= len)
					return false;
			} else if (s[i] == '"')
				return i == len - 1 && len >= 2;
			if ((unsigned char)s[i] >= 0x80)
				*eightbit = true;
		}
		return false;
	}
	for (i = 0; i < len; i++) {
		if (local_special((unsigned char)s[i]))
			return false;
		if ((unsigned char)s[i] >= 0x80)
			*eightbit = true;
	}
	return true;
}

/* A host name (letters, digits, '-', '_', 8-bit for IDNs; no empty label)
 * or an address literal in brackets. */
static bool
check_domain(const char *s, size_t len, bool *eightbit)
{
	size_t i;
	unsigned char c;
	bool label_empty = true;

	if (len == 0)
		return false;
	if (s[0] == '[') {
		if (len < 3 || s[len - 1] != ']')
			return false;
		for (i = 1; i < len - 1; i++) {
			c = (unsigned char)s[i];
			if (c <= ' ' || c >= 0x7f || c == '[' || c == ']' ||
			    c == '\\')
				return false;
		}
		return true;
	}
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c == '.') {
			if (label_empty)
				return false;
			label_empty = true;
			continue;
		}
		if (c >= 0x80)
			*eightbit = true;
		else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
		label_empty = false;
	}
	return !label_empty;
}

/* "@a,@b:" (RFC 5321 A-d-l), which is parsed and then ignored. */
static bool
check_route(const char *s, size_t len)
{
	size_t i = 0, start;
	bool dummy = false;

	while (i < len) {
		if (s[i] != '@')
			return false;
		start = ++i;
		while (i < len && s[i] != ',')
			i++;
		if (!check_domain(s + start, i - start, &dummy))
			return false;
		if (i < len)
			i++; /* the comma */
		else
			break;
		if (i == len)
			return false; /* trailing comma */
	}
	return true;
}

/*
 * Parse "<...>" at *pp.  On PATH_OK the mailbox (source route dropped) is
 * copied to out and *pp points after the '>'.
 */
static enum path_result
parse_path(const char **pp, int flags, char *out, size_t outlen, bool *eightbit)
{
	const char *p = *pp, *q, *e, *box, *at = NULL;
	bool inq = false;
	size_t boxlen;

	if (*p != '<')
		return PATH_SYNTAX;
	q = p + 1;
	for (e = q;; e++) {
		if (*e == '\0')
			return PATH_SYNTAX;
		if (inq) {
			if (*e == '\\') {
				if (e[1] == '\0')
					return PATH_SYNTAX;
				e++;
			} else if (*e == '"')
				inq = false;
			continue;
		}
		if (*e == '"')
			inq = true;
		else if (*e == '>')
			break;
		else if (*e == '<')
			return PATH_SYNTAX;
	}
	/* After '>' only parameters may follow, separated by a space. */
	if (e[1] != '\0' && e[1] != ' ')
		return PATH_SYNTAX;

	box = q;
	if (*box == '@') {
		const char *colon = memchr(box, ':', (size_t)(e - box));

		if (colon == NULL || !check_route(box, (size_t)(colon - box)))
			return PATH_BAD;
		box = colon + 1;
	}
	boxlen = (size_t)(e - box);
	if (boxlen == 0) {
		if (box != q || !(flags & PATH_ALLOW_NULL))
			return PATH_BAD;
		goto ok;
	}

	/* The domain starts after the last '@' outside quotes. */
	inq = false;
	for (p = box; p < e; p++) {
		if (inq) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				inq = false;
		} else if (*p == '"')
			inq = true;
		else if (*p == '@')
			at = p;
	}
	if (at == NULL) {
		if ((flags & PATH_ALLOW_POSTMASTER) && boxlen == 10 &&
		    strncasecmp(box, "postmaster", 10) == 0)
			goto ok;
		return PATH_BAD;
	}
	if (!check_local(box, (size_t)(at - box), eightbit) ||
	    !check_domain(at + 1, (size_t)(e - at - 1), eightbit))
		return PATH_BAD;
ok:
	if (boxlen >= outlen)
		return PATH_BAD;
	memcpy(out, box, boxlen);
	out[boxlen] = '\0';
	*pp = e + 1;
	return PATH_OK;
}

/* SIZE=digits; a value too large for 64 bits saturates, so that it is
 * refused as too big rather than as bad syntax. */
static bool
parse_size(const char *v, uint64_t *out)
{
	uint64_t n = 0;

	if (*v == '\0')
		return false;
	for (; *v != '\0'; v++) {
		if (*v < '0' || *v > '9')
			return false;
		if (n > (UINT64_MAX - 9) / 10)
			n = UINT64_MAX;
		else
			n = n * 10 + (uint64_t)(*v - '0');
	}
	*out = n;
	return true;
}

/* MAIL parameters: space-separated "KEY[=VALUE]" words, modified in place. */
static int
parse_mail_params(char *p, struct smtp_cmd *cmd)
{
	char *word, *value;
	bool seen_body = false;

	for (;;) {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			return 0;
		word = p;
		while (*p != ' ' && *p != '\0')
			p++;
		if (*p == ' ')
			*p++ = '\0';
		if ((value = strchr(word, '=')) != NULL)
			*value++ = '\0';
		if (*word == '\0')
			return fail(cmd, R_BAD_PARAM);
		if (strcasecmp(word, "SIZE") == 0) {
			if (cmd->has_size)
				return fail(cmd, R_DUP_PARAM);
			if (value == NULL || !parse_size(value, &cmd->size))
				return fail(cmd, R_BAD_SIZE);
			cmd->has_size = true;
		} else if (strcasecmp(word, "BODY") == 0) {
			if (seen_body)
				return fail(cmd, R_DUP_PARAM);
			seen_body = true;
			if (value != NULL && strcasecmp(value, "7BIT") == 0)
				cmd->body = SMTP_BODY_7BIT;
			else if (value != NULL &&
			         strcasecmp(value, "8BITMIME") == 0)
				cmd->body = SMTP_BODY_8BITMIME;
			else
				return fail(cmd, R_BAD_BODY);
		} else if (strcasecmp(word, "SMTPUTF8") == 0) {
			return fail(cmd, R_NO_UTF8);
		} else
			return fail(cmd, R_UNSUPPORTED);
	}
}

/* MAIL FROM:<path> [params] or RCPT TO:<path> [params]. */
static int
parse_mail_rcpt(char *rest, struct smtp_cmd *cmd)
{
	bool mail = cmd->verb == SMTP_MAIL;
	const char *kw = mail ? "FROM:" : "TO:";
	size_t kwlen = strlen(kw);
	const char *p;

	if (strncasecmp(rest, kw, kwlen) != 0)
		return fail(cmd, mail ? R_MAIL_SYNTAX : R_RCPT_SYNTAX);
	p = rest + kwlen;
	while (*p == ' ') /* "FROM: <a@b>" is common enough */
		p++;
	switch (parse_path(&p, mail ? PATH_ALLOW_NULL : PATH_ALLOW_POSTMASTER,
	    cmd->arg, sizeof(cmd->arg), &cmd->eightbit)) {
	case PATH_OK:
		break;
	case PATH_SYNTAX:
		return fail(cmd, mail ? R_MAIL_SYNTAX : R_RCPT_SYNTAX);
	case PATH_BAD:
		return fail(cmd, mail ? R_BAD_SENDER : R_BAD_RCPT);
	}
	if (!mail) {
		/* No DSN or other RCPT extension is advertised. */
		while (*p == ' ')
			p++;
		return *p == '\0' ? 0 : fail(cmd, R_UNSUPPORTED);
	}
	return parse_mail_params(rest + (p - rest), cmd);
}

static void
trim_right(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && s[n - 1] == ' ')
		s[--n] = '\0';
}

int
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *cmd)
{
	char buf[SMTP_LINE_MAX];
	char *rest;
	size_t i, vlen;

	memset(cmd, 0, sizeof(*cmd));
	cmd->verb = SMTP_UNKNOWN;
	if (len > SMTP_LINE_MAX - 2)
		return fail(cmd, SMTP_REPLY_TOO_LONG);
	if (len == 0)
		return fail(cmd, R_BAD_SYNTAX);
	/* Controls (NUL, a bare CR, tabs) have no place in a command. */
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if (c < ' ' || c == 0x7f)
			return fail(cmd, R_BAD_SYNTAX);
	}
	memcpy(buf, line, len);
	buf[len] = '\0';

	for (vlen = 0; buf[vlen] != ' ' && buf[vlen] != '\0'; vlen++)
		;
	for (i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (vlen == 4 && strncasecmp(buf, verbs[i].name, 4) == 0) {
			cmd->verb = verbs[i].verb;
			break;
		}
	}
	if (cmd->verb == SMTP_UNKNOWN)
		return fail(cmd, R_UNKNOWN);
	rest = buf + vlen;
	while (*rest == ' ')
		rest++;
	trim_right(rest);

	switch (cmd->verb) {
	case SMTP_EHLO:
	case SMTP_HELO:
		if (*rest == '\0' || strchr(rest, ' ') != NULL)
			return fail(cmd, cmd->verb == SMTP_EHLO
			                     ? R_EHLO_SYNTAX
			                     : R_HELO_SYNTAX);
		break;
	case SMTP_MAIL:
	case SMTP_RCPT:
		return parse_mail_rcpt(rest, cmd);
	case SMTP_DATA:
	case SMTP_RSET:
	case SMTP_QUIT:
		if (*rest != '\0')
			return fail(cmd, cmd->verb == SMTP_DATA ? R_DATA_SYNTAX
			                 : cmd->verb == SMTP_RSET
			                     ? R_RSET_SYNTAX
			                     : R_QUIT_SYNTAX);
		break;
	case SMTP_VRFY:
		if (*rest == '\0')
			return fail(cmd, R_VRFY_SYNTAX);
		break;
	default:
		break;
	}
	/* buf and arg have the same size and rest is a suffix of buf. */
	memcpy(cmd->arg, rest, strlen(rest) + 1);
	return 0;
}

/* ---------------------------------------------------------------- DATA */

enum {
	D_START_REAL, /* at a line start after a real CRLF */
	D_START_BARE, /* at a line start after a bare CR or LF */
	D_MID,        /* inside a line */
	D_CR,         /* after a CR inside a line */
	D_DOT_REAL,   /* "." at a real line start */
	D_DOT_BARE,   /* "." at a line start after a bare newline */
	D_DOTCR_REAL, /* ".\r" at a real line start */
	D_DOTCR_BARE, /* ".\r" after a bare newline */
	D_END,        /* CRLF . CRLF seen */
};

void
smtp_data_init(struct smtp_data *d, size_t max_size)
{
	memset(d, 0, sizeof(*d));
	d->state = D_START_REAL;
	d->max_size = max_size;
}

static void
emit(struct smtp_data *d, const char *p, size_t n)
{
	size_t cap;

	if (d->overflow)
		return;
	if (n > d->max_size - d->size) {
		/* Keep nothing of a message that will be refused anyway. */
		free(d->buf);
		d->buf = NULL;
		d->len = d->cap = 0;
		d->overflow = true;
		return;
	}
	if (d->len + n > d->cap) {
		cap = d->cap == 0 ? 8192 : d->cap;
		while (cap < d->len + n)
			cap *= 2;
		d->buf = xreallocarray(d->buf, cap, 1);
		d->cap = cap;
	}
	memcpy(d->buf + d->len, p, n);
	d->len += n;
	d->size += n;
}

size_t
smtp_data_feed(struct smtp_data *d, const char *in, size_t len,
    enum smtp_data_status *status)
{
	size_t i = 0, j;

	while (i < len && d->state != D_END) {
		char c = in[i];

		switch (d->state) {
		case D_MID:
			/* The common case: copy a run of plain octets. */
			for (j = i; j < len && in[j] != '\r' && in[j] != '\n';
			     j++)
				;
			if (j > i) {
				emit(d, in + i, j - i);
				i = j;
				break;
			}
			if (c == '\r')
				d->state = D_CR;
			else {
				emit(d, "\r\n", 2); /* bare LF */
				d->state = D_START_BARE;
			}
			i++;
			break;
		case D_START_REAL:
		case D_START_BARE:
			if (c == '.') {
				d->state = d->state == D_START_REAL
				               ? D_DOT_REAL
				               : D_DOT_BARE;
				i++;
			} else
				d->state = D_MID;
			break;
		case D_CR:
			if (c == '\n') {
				emit(d, "\r\n", 2);
				d->state = D_START_REAL;
				i++;
			} else {
				/* Bare CR; c is looked at again. */
				emit(d, "\r\n", 2);
				d->state = D_START_BARE;
			}
			break;
		case D_DOT_REAL:
		case D_DOT_BARE:
			if (c == '\r') {
				d->state = d->state == D_DOT_REAL
				               ? D_DOTCR_REAL
				               : D_DOTCR_BARE;
				i++;
			} else if (c == '\n') {
				/* ".\n": a lone dot ended by a bare LF. */
				emit(d, ".\r\n", 3);
				d->state = D_START_BARE;
				i++;
			} else
				d->state = D_MID; /* unstuff: drop '.' */
			break;
		case D_DOTCR_REAL:
			if (c == '\n') {
				d->state = D_END;
				i++;
				break;
			}
			emit(d, ".\r\n", 3); /* ".\r" + bare CR */
			d->state = D_START_BARE;
			break;
		case D_DOTCR_BARE:
			emit(d, ".\r\n", 3);
			if (c == '\n') {
				d->state = D_START_REAL;
				i++;
			} else
				d->state = D_START_BARE;
			break;
		default:
			arnie_panic("smtp_data: bad state %d", d->state);
		}
	}
	if (d->state != D_END)
		*status = SMTP_DATA_MORE;
	else
		*status = d->overflow ? SMTP_DATA_TOOBIG : SMTP_DATA_DONE;
	return i;
}

char *
smtp_data_take(struct smtp_data *d, size_t *lenp)
{
	char *buf;

	if (d->overflow) {
		*lenp = 0;
		return NULL;
	}
	buf = d->buf != NULL ? d->buf : xmalloc(1);
	*lenp = d->len;
	d->buf = NULL;
	d->len = d->cap = 0;
	return buf;
}

const char *
smtp_data_peek(const struct smtp_data *d, size_t *lenp)
{
	*lenp = d->len;
	return d->buf != NULL ? d->buf : "";
}

void
smtp_data_drop(struct smtp_data *d)
{
	d->len = 0;
}

void
smtp_data_release(struct smtp_data *d)
{
	free(d->buf);
	d->buf = NULL;
	d->len = d->cap = 0;
}
