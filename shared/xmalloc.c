/*
 * xmalloc: see xmalloc.h.  Never returns NULL; aborts on exhaustion, since a
 * daemon that cannot allocate a few bytes cannot keep its promises either.
 */
#include "autoconf.h"

#include "xmalloc.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static void
out_of_memory(size_t size)
{
	arnie_panic("out of memory allocating %zu bytes", size);
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		out_of_memory(size);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (p == NULL)
		out_of_memory(nmemb * size);
	return p;
}

void *
xreallocarray(void *ptr, size_t nmemb, size_t size)
{
	size_t total;
	void *p;

	if (size != 0 && nmemb > SIZE_MAX / size)
		arnie_panic("xreallocarray: %zu * %zu overflows", nmemb, size);
	total = nmemb * size;
	p = realloc(ptr, total != 0 ? total : 1);
	if (p == NULL)
		out_of_memory(total);
	return p;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);

	if (p == NULL)
		out_of_memory(n + 1);
	return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		out_of_memory(strlen(fmt));
	return s;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	return s;
}

void
xfree_secret(char *secret)
{
	if (secret == NULL)
		return;
	explicit_bzero(secret, strlen(secret));
	free(secret);
}

void
arnie_panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_CRIT, "panic: ", fmt, ap);
	va_end(ap);
	abort();
}
