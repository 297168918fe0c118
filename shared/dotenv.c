/*
 * dotenv: see dotenv.h.
 *
 * Every value read, and the buffer that held the file, is wiped before its
 * memory is freed: the file holds the password.
 */
#include "autoconf.h"

#include "dotenv.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "secret.h"
#include "xmalloc.h"

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool
is_key_start(char c)
{
	return isalpha((unsigned char)c) || c == '_';
}

static bool
is_key_char(char c)
{
	return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

static const char *
skip_blank(const char *p, const char *end)
{
	while (p < end && is_blank(*p))
		p++;
	return p;
}

static const char *
to_eol(const char *p, const char *end)
{
	while (p < end && *p != '\n')
		p++;
	return p;
}

static void
add_entry(struct dotenv *ef, char *key, char *value, int line)
{
	if (ef->n == ef->cap) {
		ef->cap = ef->cap ? ef->cap * 2 : 32;
		ef->v = xreallocarray(ef->v, ef->cap, sizeof(*ef->v));
	}
	ef->v[ef->n].key = key;
	ef->v[ef->n].value = value;
	ef->v[ef->n].line = line;
	ef->n++;
}

void
dotenv_clear(struct dotenv *ef)
{
	size_t i;

	for (i = 0; i < ef->n; i++) {
		free(ef->v[i].key);
		xfree_secret(ef->v[i].value);
	}
	free(ef->v);
	ef->v = NULL;
	ef->n = ef->cap = 0;
}

/*
 * A quoted value starting at *pp (on the quote).  Returns an owned string
 * and moves *pp past the closing quote, counting the newlines crossed in
 * *line; NULL if the quote is never closed.
 */
static char *
parse_quoted(const char **pp, const char *end, int *line)
{
	const char *p = *pp;
	char quote = *p++;
	char *out = xmalloc((size_t)(end - p) + 1);
	size_t n = 0;

	for (; p < end && *p != quote; p++) {
		if (*p == '\n')
			(*line)++;
		if (quote == '"' && *p == '\\' && p + 1 < end) {
			switch (p[1]) {
			case 'n':
				out[n++] = '\n';
				p++;
				continue;
			case 'r':
				out[n++] = '\r';
				p++;
				continue;
			case 't':
				out[n++] = '\t';
				p++;
				continue;
			case '"':
			case '\\':
				out[n++] = p[1];
				p++;
				continue;
			}
		}
		out[n++] = *p;
	}
	out[n] = '\0';
	if (p == end) {
		xfree_secret(out);
		return NULL;
	}
	*pp = p + 1;
	return out;
}

/* An unquoted value: the rest of the line, less a " #" comment, trimmed. */
static char *
parse_unquoted(const char **pp, const char *end)
{
	const char *p = *pp, *eol = to_eol(p, end), *q;

	for (q = p; q < eol; q++)
		if (*q == '#' && q > p && is_blank(q[-1]))
			break;
	while (q > p && is_blank(q[-1]))
		q--;
	*pp = eol;
	return xstrndup(p, (size_t)(q - p));
}

int
dotenv_parse(struct dotenv *ef, const char *buf, size_t len,
    dotenv_known_fn *known, char *err, size_t errlen)
{
	const char *p = buf, *end = buf + len, *k;
	char *key, *value;
	int line = 1, start;

	while (p < end) {
		start = line;
		p = skip_blank(p, end);
		if (p < end && *p == '#')
			p = to_eol(p, end);
		if (p == end)
			break;
		if (*p == '\n') {
			p++;
			line++;
			continue;
		}
		if ((size_t)(end - p) > 6 && strncmp(p, "export", 6) == 0 &&
		    is_blank(p[6]))
			p = skip_blank(p + 6, end);
		if (p == end || !is_key_start(*p)) {
			seterr(err, errlen, "%s line %d: expected KEY=VALUE",
			    ef->path, start);
			return -1;
		}
		for (k = p; p < end && is_key_char(*p); p++)
			;
		key = xstrndup(k, (size_t)(p - k));
		p = skip_blank(p, end);
		if (p == end || *p != '=') {
			/* Named only if it is one of ours: a bare word may be
			 * the wrapped tail of the password line. */
			seterr(err, errlen, "%s line %d: expected '=' after %s",
			    ef->path, start,
			    known != NULL && known(key) ? key : "the key");
			free(key);
			return -1;
		}
		p = skip_blank(p + 1, end);
		if (p < end && (*p == '"' || *p == '\'')) {
			if ((value = parse_quoted(&p, end, &line)) == NULL) {
				seterr(err, errlen,
				    "%s line %d: the quoted "
				    "value of %s is never closed",
				    ef->path, start, key);
				free(key);
				return -1;
			}
			p = skip_blank(p, end);
			if (p < end && *p == '#')
				p = to_eol(p, end);
			if (p < end && *p != '\n') {
				seterr(err, errlen,
				    "%s line %d: unexpected "
				    "text after the quoted value of %s",
				    ef->path, line, key);
				free(key);
				xfree_secret(value);
				return -1;
			}
		} else
			value = parse_unquoted(&p, end);
		add_entry(ef, key, value, start);
	}
	return 0;
}

/* A bigger buffer for the file: realloc() could leave a copy of the
 * password behind in freed memory, so the old one is wiped by hand. */
static char *
grow_wiped(char *buf, size_t len, size_t cap)
{
	char *bigger = xmalloc(cap);

	if (buf != NULL) {
		memcpy(bigger, buf, len);
		explicit_bzero(buf, len);
		free(buf);
	}
	return bigger;
}

int
dotenv_read(struct dotenv *ef, const char *path, dotenv_known_fn *known,
    char *err, size_t errlen)
{
	struct stat sb;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t r;
	int fd, rc = -1;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		seterr(
		    err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	/* One buffer of the right size, usually: no copy to wipe. */
	if (fstat(fd, &sb) == 0) {
		ef->mode = sb.st_mode;
		if (S_ISREG(sb.st_mode) && sb.st_size < DOTENV_MAX)
			cap = (size_t)sb.st_size + 1;
	}
	buf = grow_wiped(NULL, 0, cap > 0 ? cap : 4096);
	if (cap == 0)
		cap = 4096;
	for (;;) {
		if (len == cap) {
			if (cap >= DOTENV_MAX) {
				seterr(err, errlen,
				    "%s: larger than %d bytes, "
				    "not a configuration file",
				    path, DOTENV_MAX);
				goto out;
			}
			buf = grow_wiped(buf, len, cap * 2);
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			seterr(err, errlen, "cannot read %s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (memchr(buf, '\0', len) != NULL) {
		seterr(err, errlen,
		    "%s: contains a NUL byte, not a "
		    "configuration file",
		    path);
		goto out;
	}
	ef->path = path;
	rc = dotenv_parse(ef, buf, len, known, err, errlen);
out:
	if (buf != NULL) {
		explicit_bzero(buf, cap);
		free(buf);
	}
	close(fd);
	return rc;
}

const char *
dotenv_get(const struct dotenv *ef, const char *key, int *line)
{
	size_t i;

	for (i = ef->n; i-- > 0;)
		if (strcmp(ef->v[i].key, key) == 0) {
			if (line != NULL)
				*line = ef->v[i].line;
			return ef->v[i].value;
		}
	return NULL;
}
