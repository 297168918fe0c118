/*
 * logjson: see logjson.h.
 *
 * The object is built into the caller's buffer in this order: time,
 * level, program, pid, id, text, then event and the parsed fields.
 * Everything after the text is added whole or not at all (jbuf_mark()
 * and jbuf_fits()), so that a long line keeps its text and stays valid
 * JSON.
 */
#include "autoconf.h"

#include "logjson.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "xmalloc.h"

/* Keys of one line remembered to drop repeats; more are dropped too. */
#define KEYS_MAX 16
#define KEY_MAX 32
/* A queue ID is 12 to 32 upper-case hex digits. */
#define ID_MIN 12
#define ID_MAX 32
/* Longest time stamp and program name written (logjson.h). */
#define NAME_MAX_OUT 63

struct jbuf {
	char *p;
	size_t len;
	size_t cap;    /* usable octets: outlen minus "}\n" and NUL */
	bool overflow; /* something did not fit since the last mark */
};

static void
put(struct jbuf *b, const char *s, size_t n)
{
	if (b->overflow || b->len > b->cap || n > b->cap - b->len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void
puts_raw(struct jbuf *b, const char *s)
{
	put(b, s, strlen(s));
}

/* Length of the UTF-8 sequence at s (n octets left), 0 if invalid. */
static size_t
utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0], lo = 0x80, hi = 0xbf;
	size_t len, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		len = 3;
		if (c == 0xe0)
			lo = 0xa0;
		else if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f;
	} else
		return 0;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

/*
 * s[0..n) as a JSON string.  When truncate is set, what does not fit is
 * cut at a character (never inside an escape or a UTF-8 sequence) and the
 * string still closed; else the whole string is one item that fits or
 * overflows.
 */
static void
put_string(struct jbuf *b, const char *s, size_t n, bool truncate)
{
	const unsigned char *u = (const unsigned char *)s;
	char esc[8];
	size_t i = 0, k;
	bool reserved;

	put(b, "\"", 1);
	/* Room for the closing quote stays reserved while truncating. */
	if ((reserved = truncate && !b->overflow && b->len < b->cap))
		b->cap--;
	while (i < n && !b->overflow) {
		size_t before = b->len;

		if (u[i] == '"' || u[i] == '\\') {
			esc[0] = '\\';
			esc[1] = (char)u[i];
			put(b, esc, 2);
			k = 1;
		} else if (u[i] < 0x20 || u[i] == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", u[i]);
			put(b, esc, 6);
			k = 1;
		} else if ((k = utf8_len(u + i, n - i)) == 0) {
			put(b, "\\ufffd", 6);
			k = 1;
		} else
			put(b, s + i, k);
		if (b->overflow && truncate) {
			b->len = before;
			break;
		}
		i += k;
	}
	if (reserved) {
		b->overflow = false;
		b->cap++;
	}
	put(b, "\"", 1);
}

/* ,"key": as one piece: all of it fits, or none. */
static void
put_key(struct jbuf *b, const char *key)
{
	char piece[KEY_MAX + 8];
	int n = snprintf(piece, sizeof(piece), ",\"%s\":", key);

	put(b, piece, n < 0 ? sizeof(piece) : (size_t)n);
}

/* Keys the object has of its own: a text's key=value word cannot give
 * them another value (an upstream's reply or a client's address could
 * otherwise pose as the level or the queue ID). */
static bool
reserved_key(const char *key)
{
	static const char *const own[] = {
	    "time", "level", "program", "pid", "id", "text", "event", "reply"};
	size_t i;

	for (i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcmp(key, own[i]) == 0)
			return true;
	return false;
}

/* A name of the header (time stamp, level, program): printable ASCII
 * but quotes and backslashes, '?' for anything else, at most
 * NAME_MAX_OUT octets, so that the header always fits LOGJSON_MIN_OUT. */
static void
put_name(struct jbuf *b, const char *name)
{
	char clean[NAME_MAX_OUT + 3];
	size_t i, n = 0;

	clean[n++] = '"';
	for (i = 0; name[i] != '\0' && i < NAME_MAX_OUT; i++)
		clean[n++] = name[i] > 0x20 && name[i] < 0x7f &&
		                     name[i] != '"' && name[i] != '\\'
		                 ? name[i]
		                 : '?';
	clean[n++] = '"';
	put(b, clean, n);
}

/* Is s[0..n) a JSON number as the log writes them (12, 0.21, -1)? */
static bool
is_number(const char *s, size_t n)
{
	size_t i = 0, digits = 0;

	if (n > 0 && s[0] == '-')
		i++;
	if (i < n && s[i] == '0' && i + 1 < n && s[i + 1] != '.')
		return false; /* a leading zero: an identifier, not a count */
	for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
		digits++;
	if (digits == 0 || digits > 18)
		return false;
	if (i < n && s[i] == '.') {
		for (i++, digits = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
			digits++;
		if (digits == 0)
			return false;
	}
	return i == n;
}

static const char *
level_name(int priority)
{
	static const char *const names[] = {"emerg", "alert", "crit", "err",
	    "warning", "notice", "info", "debug"};

	return names[(unsigned)priority & 7];
}

/* Length of the queue ID (and its ": ") that starts text, or 0. */
static size_t
id_prefix(const char *text)
{
	size_t n = strspn(text, "0123456789ABCDEF");

	return n >= ID_MIN && n <= ID_MAX && text[n] == ':' &&
	               text[n + 1] == ' '
	           ? n
	           : 0;
}

/* One key=value word. */
struct field {
	char key[KEY_MAX];
	const char *val;
	size_t vlen;
};

/* Parse the key=value word at *p (moving *p past it) into f; false, and
 * *p untouched, when the word is not one. */
static bool
parse_field(const char **p, struct field *f)
{
	const char *s = *p, *v, *end;
	size_t klen = strspn(s, "abcdefghijklmnopqrstuvwxyz_");

	if (klen == 0 || klen >= KEY_MAX || s[klen] != '=')
		return false;
	memcpy(f->key, s, klen);
	f->key[klen] = '\0';
	v = s + klen + 1;
	if (*v == '<' && (end = strchr(v, '>')) != NULL) {
		f->val = v + 1;
		f->vlen = (size_t)(end - v - 1);
		*p = end + 1;
	} else if (*v == '"' && (end = strchr(v + 1, '"')) != NULL) {
		f->val = v + 1;
		f->vlen = (size_t)(end - v - 1);
		*p = end + 1;
	} else {
		f->val = v;
		f->vlen = strcspn(v, ", ");
		*p = v + f->vlen;
	}
	return true;
}

/* The fields of rest, each added whole or not at all. */
static void
put_fields(struct jbuf *b, const char *first_field)
{
	char seen[KEYS_MAX][KEY_MAX];
	size_t nseen = 0, i, mark;
	const char *p = first_field, *close;
	struct field f;
	bool dup;

	while (*p != '\0' && nseen < KEYS_MAX) {
		p += strspn(p, ", ");
		if (!parse_field(&p, &f)) {
			p += strcspn(p, ", ");
			continue;
		}
		for (dup = reserved_key(f.key), i = 0; i < nseen; i++)
			dup = dup || strcmp(seen[i], f.key) == 0;
		if (dup)
			continue;
		memcpy(seen[nseen++], f.key, KEY_MAX);
		mark = b->len;
		put_key(b, f.key);
		if (is_number(f.val, f.vlen))
			put(b, f.val, f.vlen);
		else
			put_string(b, f.val, f.vlen, false);
		/* "status=sent (250 ...)": the reply is the rest, inside its
		 * parentheses. */
		if (strcmp(f.key, "status") == 0 && p[0] == ' ' &&
		    p[1] == '(' && (close = strrchr(p, ')')) != NULL &&
		    close[1] == '\0') {
			put_key(b, "reply");
			put_string(b, p + 2, (size_t)(close - p - 2), false);
			p = close + 1;
		}
		if (b->overflow) {
			b->len = mark;
			b->overflow = false;
			return;
		}
	}
}

/* The words before the first key=value one, trimmed; *first set to that
 * word (or the end). */
static void
event_words(
    const char *rest, const char **start, size_t *len, const char **first)
{
	const char *p = rest, *q;
	struct field f;

	for (;;) {
		p += strspn(p, ", ");
		q = p;
		if (*p == '\0' || parse_field(&q, &f))
			break;
		p += strcspn(p, ", ");
	}
	*first = p;
	*start = rest;
	*len = (size_t)(p - rest);
	while (*len > 0 && (rest[*len - 1] == ' ' || rest[*len - 1] == ','))
		(*len)--;
}

size_t
logjson_format(char *out, size_t outlen, const char *stamp, int priority,
    const char *program, long pid, const char *text)
{
	struct jbuf b = {out, 0, 0, false};
	const char *rest, *event, *first;
	char num[24];
	size_t idlen, evlen, mark;

	if (outlen < LOGJSON_MIN_OUT) {
		/* Too small for the header: an empty line, terminated. */
		if (outlen > 0)
			out[0] = '\0';
		return 0;
	}
	b.cap = outlen - 3;
	put(&b, "{\"time\":", 8);
	put_name(&b, stamp);
	put_key(&b, "level");
	put_name(&b, level_name(priority));
	put_key(&b, "program");
	put_name(&b, program);
	put_key(&b, "pid");
	snprintf(num, sizeof(num), "%ld", pid);
	puts_raw(&b, num);
	rest = text;
	if ((idlen = id_prefix(text)) > 0) {
		put_key(&b, "id");
		put_string(&b, text, idlen, true);
		rest = text + idlen + 2;
	}
	put_key(&b, "text");
	put_string(&b, rest, strlen(rest), true);
	/* The header fits in LOGJSON_MIN_OUT: nothing above overflowed. */
	b.overflow = false;

	event_words(rest, &event, &evlen, &first);
	mark = b.len;
	put_key(&b, "event");
	if (evlen > 0)
		put_string(&b, event, evlen, false);
	else if (strstr(first, "status=") != NULL)
		puts_raw(&b, "\"delivery\"");
	else if (strncmp(first, "from=", 5) == 0)
		puts_raw(&b, "\"queued\"");
	else
		puts_raw(&b, "\"message\"");
	if (b.overflow) {
		b.len = mark;
		b.overflow = false;
	} else
		put_fields(&b, first);
	b.cap += 2;
	put(&b, "}\n", 2);
	out[b.len] = '\0';
	return b.len;
}

char *
logjson_quote(const char *s)
{
	size_t n = strlen(s);
	struct jbuf b;

	/* Each octet becomes at most 6 ("\u001f"), plus the quotes. */
	b.cap = 6 * n + 2;
	b.p = xmalloc(b.cap + 1);
	b.len = 0;
	b.overflow = false;
	put_string(&b, s, n, false);
	b.p[b.len] = '\0';
	return b.p;
}
