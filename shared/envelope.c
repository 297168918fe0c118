/*
 * envelope: see envelope.h; the text format is documented in
 * docs/spool-format.md.
 */
#include "autoconf.h"

#include "envelope.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "spool.h"
#include "xmalloc.h"

/* What Arnie writes; "arnie-spool 1" (0.1.0, no ID.state files) is read
 * the same way. */
#define SPOOL_MAGIC "arnie-spool 2"
#define SPOOL_MAGIC_V1 "arnie-spool 1"

struct envelope *
envelope_new(void)
{
	return xcalloc(1, sizeof(struct envelope));
}

void
envelope_add_rcpt(struct envelope *env, const char *addr)
{
	struct spool_rcpt *r;

	env->rcpts =
	    xreallocarray(env->rcpts, env->nrcpts + 1, sizeof(*env->rcpts));
	r = &env->rcpts[env->nrcpts++];
	r->addr = xstrdup(addr);
	r->state = RCPT_PENDING;
	r->reply = NULL;
}

size_t
envelope_pending(const struct envelope *env)
{
	size_t i, n = 0;

	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == RCPT_PENDING)
			n++;
	return n;
}

time_t
envelope_next_look(const struct envelope *env)
{
	if (env->expires != 0 && env->expires < env->next_attempt)
		return env->expires;
	return env->next_attempt;
}

void
envelope_set_reply(char **slot, const char *reply)
{
	char *copy = reply != NULL ? xstrdup(reply) : NULL;

	free(*slot);
	*slot = copy;
}

void
envelope_free(struct envelope *env)
{
	size_t i;

	if (env == NULL)
		return;
	for (i = 0; i < env->nrcpts; i++) {
		free(env->rcpts[i].addr);
		free(env->rcpts[i].reply);
	}
	free(env->rcpts);
	free(env->sender);
	free(env->last_reply);
	free(env->origin);
	free(env->message_id);
	free(env);
}

/* A growing buffer for envelope_format(). */
struct sbuf {
	char *p;
	size_t len;
	size_t cap;
};

static void
sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		while (b->len + n + 1 > b->cap)
			b->cap = b->cap ? b->cap * 2 : 512;
		b->p = xreallocarray(b->p, b->cap, 1);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void
sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void __attribute__((format(printf, 2, 3)))
sb_printf(struct sbuf *b, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	sb_str(b, s);
	free(s);
}

enum esc_kind {
	ESC_ADDR, /* inside <>: no blanks, no '<' '>' */
	ESC_TEXT, /* replies, origin: one line, ends kept */
};

/*
 * Percent-encode what would break the line grammar.  Everything else,
 * including UTF-8, stays as is so that grep finds addresses and replies.
 */
static void
sb_escaped(struct sbuf *b, const char *s, enum esc_kind kind)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, n = strlen(s);
	unsigned char c;
	char e[3];
	bool esc;

	for (i = 0; i < n; i++) {
		c = (unsigned char)s[i];
		esc = c < 0x20 || c == 0x7f || c == '%';
		if (kind == ESC_ADDR)
			esc = esc || c == ' ' || c == '<' || c == '>';
		else if (c == ' ' && (i == 0 || i == n - 1))
			esc = true; /* editors and the parser trim blanks */
		if (!esc) {
			sb_add(b, s + i, 1);
			continue;
		}
		e[0] = '%';
		e[1] = hex[c >> 4];
		e[2] = hex[c & 0xf];
		sb_add(b, e, 3);
	}
}

const char *
spool_rcpt_state_name(enum rcpt_state st)
{
	switch (st) {
	case RCPT_PENDING:
		return "pending";
	case RCPT_SENT:
		return "sent";
	case RCPT_FAILED:
		return "failed";
	}
	arnie_panic("envelope: bad recipient state %d", (int)st);
}

char *
envelope_format(const struct envelope *env, size_t *lenp)
{
	struct sbuf b = {NULL, 0, 0};
	size_t i;

	sb_str(&b, SPOOL_MAGIC "\n");
	sb_printf(&b, "id: %s\n", env->id);
	sb_printf(&b, "created: %lld\n", (long long)env->created);
	sb_str(&b, "from: <");
	sb_escaped(&b, env->sender != NULL ? env->sender : "", ESC_ADDR);
	sb_str(&b, ">\n");
	for (i = 0; i < env->nrcpts; i++) {
		sb_printf(&b, "rcpt: %s <",
		    spool_rcpt_state_name(env->rcpts[i].state));
		sb_escaped(&b, env->rcpts[i].addr, ESC_ADDR);
		sb_str(&b, ">");
		if (env->rcpts[i].reply != NULL && *env->rcpts[i].reply) {
			sb_str(&b, " ");
			sb_escaped(&b, env->rcpts[i].reply, ESC_TEXT);
		}
		sb_str(&b, "\n");
	}
	sb_printf(&b, "attempts: %u\n", env->attempts);
	sb_printf(&b, "next-attempt: %lld\n", (long long)env->next_attempt);
	if (env->last_reply != NULL && *env->last_reply) {
		sb_str(&b, "last-reply: ");
		sb_escaped(&b, env->last_reply, ESC_TEXT);
		sb_str(&b, "\n");
	}
	if (env->origin != NULL && *env->origin) {
		sb_str(&b, "origin: ");
		sb_escaped(&b, env->origin, ESC_TEXT);
		sb_str(&b, "\n");
	}
	if (env->message_id != NULL && *env->message_id) {
		sb_str(&b, "message-id: ");
		sb_escaped(&b, env->message_id, ESC_TEXT);
		sb_str(&b, "\n");
	}
	if (env->expires != 0)
		sb_printf(&b, "expires: %lld\n", (long long)env->expires);
	/* Padded to a fixed width, so that a file written in pieces can get
	 * its size in place once the message is complete. */
	sb_printf(&b, "size: %-*" PRIu64 "\n", ENVELOPE_SIZE_WIDTH, env->size);
	sb_str(&b, "\n");
	*lenp = b.len;
	return b.p;
}

/* A hex digit of either case (a %XX escape), or -1. */
static int
hexval_any(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %XX; a '%' not followed by two hex digits is taken literally, so a
 * hand-written "100%" survives.  NULL if the result would hold a NUL. */
static char *
unescape(const char *s, size_t n)
{
	char *out = xmalloc(n + 1);
	size_t i, o = 0;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n &&
		    (hi = hexval_any((unsigned char)s[i + 1])) != -1 &&
		    (lo = hexval_any((unsigned char)s[i + 2])) != -1) {
			if (hi == 0 && lo == 0) {
				free(out);
				return NULL;
			}
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			out[o++] = s[i];
	}
	out[o] = '\0';
	return out;
}

/* Offset just past the blank line that ends the header, or 0 if the data
 * holds no blank line (yet). */
size_t
envelope_header_end(const char *d, size_t n)
{
	const char *nl, *start = d, *end = d + n;

	while ((nl = memchr(start, '\n', (size_t)(end - start))) != NULL) {
		if (nl == start || (nl == start + 1 && *start == '\r'))
			return (size_t)(nl + 1 - d);
		start = nl + 1;
	}
	return 0;
}

/* A decimal number made of digits only, at most max. */
static int
parse_num(const char *s, size_t n, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (max - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

/* "<addr>" at s (n bytes): the decoded address and where the rest starts. */
static char *
parse_addr(const char *s, size_t n, size_t *used)
{
	const char *close;

	if (n < 2 || s[0] != '<')
		return NULL;
	if ((close = memchr(s + 1, '>', n - 1)) == NULL)
		return NULL;
	*used = (size_t)(close + 1 - s);
	return unescape(s + 1, (size_t)(close - s - 1));
}

static int
parse_rcpt(struct envelope *env, const char *v, size_t n)
{
	static const struct {
		const char *name;
		enum rcpt_state state;
	} states[] = {
	    {"pending", RCPT_PENDING},
	    {"sent", RCPT_SENT},
	    {"failed", RCPT_FAILED},
	};
	const char *sp = memchr(v, ' ', n);
	struct spool_rcpt *r;
	size_t i, wlen, used;
	char *addr;

	if (sp == NULL)
		return -1;
	wlen = (size_t)(sp - v);
	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (strlen(states[i].name) == wlen &&
		    memcmp(states[i].name, v, wlen) == 0)
			break;
	if (i == sizeof(states) / sizeof(states[0]))
		return -1;
	v += wlen;
	n -= wlen;
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	if ((addr = parse_addr(v, n, &used)) == NULL)
		return -1;
	envelope_add_rcpt(env, addr);
	free(addr);
	r = &env->rcpts[env->nrcpts - 1];
	r->state = states[i].state;
	v += used;
	n -= used;
	if (n > 0 && *v != ' ' && *v != '\t')
		return -1;
	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	if (n > 0 && (r->reply = unescape(v, n)) == NULL)
		return -1;
	return 0;
}

/* Set a one-per-file text value; a second occurrence is ambiguous. */
static int
parse_text(char **slot, bool *seen, const char *v, size_t n)
{
	if (*seen)
		return -1;
	*seen = true;
	if (n == 0)
		return 0;
	return (*slot = unescape(v, n)) == NULL ? -1 : 0;
}

static int
parse_number(uint64_t *out, bool *seen, const char *v, size_t n, uint64_t max)
{
	if (*seen)
		return -1;
	*seen = true;
	return parse_num(v, n, max, out);
}

/*
 * Parse the header in d[0, hend) (hend from envelope_header_end()) of a
 * file of *total octets (NULL: a state file, the header alone).  Keys are
 * order-independent; unknown keys are skipped so a newer Arnie's files stay
 * readable as long as the version is the same.
 */
static int
parse_header(
    const char *d, size_t hend, const uint64_t *total, struct envelope **envp)
{
	struct envelope *env = envelope_new();
	bool s_id = false, s_created = false, s_from = false, s_size = false;
	bool s_att = false, s_next = false, s_last = false, s_origin = false;
	bool s_msgid = false, s_expires = false;
	const char *line = d, *end = d + hend, *nl, *colon, *v;
	uint64_t num = 0;
	size_t n, klen, used;
	bool first = true;
	int bad = 0;

	if (memchr(d, '\0', hend) != NULL)
		goto bad;
	for (; line < end && !bad; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(end - line));
		n = (size_t)(nl - line);
		/* Trailing blanks and CR are never data: text values encode
		 * theirs, so an editor's CRLF or trailing space is harmless. */
		while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' ||
		                    line[n - 1] == '\t'))
			n--;
		if (first) {
			if (!(n == strlen(SPOOL_MAGIC) &&
			        memcmp(line, SPOOL_MAGIC, n) == 0) &&
			    !(n == strlen(SPOOL_MAGIC_V1) &&
			        memcmp(line, SPOOL_MAGIC_V1, n) == 0))
				goto bad;
			first = false;
			continue;
		}
		if (n == 0)
			break; /* the blank line: end of header */
		if ((colon = memchr(line, ':', n)) == NULL || colon == line)
			goto bad;
		klen = (size_t)(colon - line);
		v = colon + 1;
		while (v < line + n && (*v == ' ' || *v == '\t'))
			v++;
		n -= (size_t)(v - line);
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(line, k, klen) == 0)
		if (KEY("id")) {
			if (s_id || n != SPOOL_IDLEN)
				goto bad;
			s_id = true;
			memcpy(env->id, v, SPOOL_IDLEN);
			env->id[SPOOL_IDLEN] = '\0';
			bad = !spool_is_id(env->id);
		} else if (KEY("created")) {
			bad = parse_number(&num, &s_created, v, n, INT64_MAX);
			env->created = (time_t)num;
		} else if (KEY("from")) {
			if (s_from)
				goto bad;
			s_from = true;
			env->sender = parse_addr(v, n, &used);
			bad = env->sender == NULL || used != n;
		} else if (KEY("rcpt")) {
			bad = parse_rcpt(env, v, n);
		} else if (KEY("attempts")) {
			bad = parse_number(&num, &s_att, v, n, UINT_MAX);
			env->attempts = (unsigned)num;
		} else if (KEY("next-attempt")) {
			bad = parse_number(&num, &s_next, v, n, INT64_MAX);
			env->next_attempt = (time_t)num;
		} else if (KEY("last-reply")) {
			bad = parse_text(&env->last_reply, &s_last, v, n);
		} else if (KEY("origin")) {
			bad = parse_text(&env->origin, &s_origin, v, n);
		} else if (KEY("message-id")) {
			bad = parse_text(&env->message_id, &s_msgid, v, n);
		} else if (KEY("expires")) {
			bad = parse_number(&num, &s_expires, v, n, INT64_MAX);
			env->expires = (time_t)num;
		} else if (KEY("size")) {
			bad =
			    parse_number(&env->size, &s_size, v, n, UINT64_MAX);
		}
#undef KEY
	}
	if (bad || !s_id || !s_created || !s_from || !s_size ||
	    env->nrcpts == 0)
		goto bad;
	/* Catches truncation (a crash or a full disk while copying by hand)
	 * and anything appended after the message. */
	if (total != NULL && (hend > *total || env->size != *total - hend))
		goto bad;
	env->body_offset = (off_t)hend;
	*envp = env;
	return 0;
bad:
	envelope_free(env);
	errno = EBADMSG;
	return -1;
}

int
envelope_parse(const char *data, size_t len, struct envelope **envp)
{
	size_t hend = envelope_header_end(data, len);

	if (hend == 0) {
		errno = EBADMSG;
		return -1;
	}
	return envelope_parse_header(data, hend, len, envp);
}

int
envelope_parse_header(
    const char *d, size_t hend, uint64_t total, struct envelope **envp)
{
	return parse_header(d, hend, &total, envp);
}

int
envelope_parse_state(const char *data, size_t len, struct envelope **envp)
{
	size_t hend = envelope_header_end(data, len);

	if (hend == 0 || hend != len) {
		errno = EBADMSG;
		return -1;
	}
	if (parse_header(data, hend, NULL, envp) == -1)
		return -1;
	(*envp)->body_offset = 0;
	return 0;
}
