/*
 * xmalloc: allocation that never returns NULL, and the panic for bugs.
 *
 * Generic layer: knows nothing about mail.  Out of memory is treated like a
 * bug (the process cannot go on safely), so these functions abort with a
 * message instead of returning NULL.  Everything they return is owned by the
 * caller and released with free(), or with xfree_secret() for secrets.
 */
#ifndef ARNIE_XMALLOC_H
#define ARNIE_XMALLOC_H

#include <stdarg.h>
#include <stddef.h>

void *xmalloc(size_t size);
void *xcalloc(size_t nmemb, size_t size);
void *xreallocarray(void *ptr, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap)
    __attribute__((format(printf, 1, 0)));

/* Wipe a NUL-terminated secret, then free it; NULL is accepted. */
void xfree_secret(char *secret);

/* A bug: log the message and abort.  Never returns. */
void arnie_panic(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
