/*
 * secret: see secret.h.  Each secret gets its own anonymous mapping,
 * rounded up to whole pages, with its size in a header in front: few
 * secrets exist (the upstream password, a copy of it in the relay), so a
 * page each costs nothing and keeps the no-dump and lock flags exact.
 */
#include "autoconf.h"

#include "secret.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "xmalloc.h"

extern char **environ;

struct header {
	size_t maplen;
};

char *
secret_strndup(const char *s, size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len, maplen;
	struct header *h;
	char *p;

	len = strnlen(s, n);
	if (len > SIZE_MAX - sizeof(*h) - 1 - page)
		arnie_panic("secret: %zu octets", len);
	maplen = (sizeof(*h) + len + 1 + page - 1) / page * page;
	h = mmap(NULL, maplen, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED)
		arnie_panic("secret: cannot map %zu octets", maplen);
	/* Neither failure leaves the secret unusable; both are best effort
	 * (MADV_DONTDUMP needs Linux 3.4, mlock an RLIMIT_MEMLOCK). */
	(void)madvise(h, maplen, MADV_DONTDUMP);
	(void)mlock(h, maplen);
	h->maplen = maplen;
	p = (char *)(h + 1);
	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
secret_strdup(const char *s)
{
	return secret_strndup(s, strlen(s));
}

void
secret_free(char *secret)
{
	struct header *h;
	size_t maplen;

	if (secret == NULL)
		return;
	h = (struct header *)(void *)secret - 1;
	maplen = h->maplen;
	explicit_bzero(h, maplen);
	(void)munlock(h, maplen);
	(void)munmap(h, maplen);
}

void
secret_wipe_env(const char *name)
{
	size_t n = strlen(name);
	char **e;

	for (e = environ; e != NULL && *e != NULL; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			explicit_bzero(*e + n + 1, strlen(*e + n + 1));
	(void)unsetenv(name);
}
