/*
 * dedup: see dedup.h.  An entry's text: "ID\nKEY", KEY being the sender,
 * the sorted recipients and the Message-ID, one per line.
 */
#include "autoconf.h"

#include "dedup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"
#include "xmalloc.h"

/* An entry is this big at most: an ID and two header-sized strings. */
#define DEDUP_ENTRY_MAX 4096
#define DEDUP_NAME_LEN 16

static uint64_t
fnv1a(uint64_t h, const char *s)
{
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static int
compare_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The key of env: sender, recipients sorted, Message-ID (owned). */
static char *
entry_key(const struct envelope *env)
{
	const char **rcpts = xcalloc(env->nrcpts + 1, sizeof(*rcpts));
	char *key = NULL;
	size_t len = 0, i;
	FILE *out;

	if ((out = open_memstream(&key, &len)) == NULL)
		arnie_panic("dedup: out of memory");
	for (i = 0; i < env->nrcpts; i++)
		rcpts[i] = env->rcpts[i].addr;
	if (env->nrcpts > 1)
		qsort(rcpts, env->nrcpts, sizeof(*rcpts), compare_str);
	fprintf(out, "%s\n", env->sender != NULL ? env->sender : "");
	for (i = 0; i < env->nrcpts; i++)
		fprintf(out, "%s,", rcpts[i]);
	fprintf(out, "\n%s\n", env->message_id);
	if (fclose(out) != 0)
		arnie_panic("dedup: out of memory");
	free(rcpts);
	return key;
}

static void
entry_name(const char *key, char name[DEDUP_NAME_LEN + 1])
{
	snprintf(name, DEDUP_NAME_LEN + 1, "%016" PRIx64,
	    fnv1a(0xcbf29ce484222325ULL, key));
}

int
dedup_find(struct spool *spool, const struct envelope *env, long window,
    time_t now, char id[SPOOL_IDLEN + 1])
{
	char name[DEDUP_NAME_LEN + 1], buf[DEDUP_ENTRY_MAX + 1], *key;
	int fd = spool_dir_fd(spool, SPOOL_IN_DEDUP), efd, found = 0, saved;
	struct stat st;
	ssize_t n;

	key = entry_key(env);
	entry_name(key, name);
	if ((efd = openat(fd, name, O_RDONLY | O_CLOEXEC)) == -1) {
		saved = errno;
		free(key);
		errno = saved;
		return saved == ENOENT ? 0 : -1;
	}
	if (fstat(efd, &st) == 0 && st.st_mtime > now - window &&
	    (n = read(efd, buf, DEDUP_ENTRY_MAX)) > SPOOL_IDLEN) {
		buf[n] = '\0';
		/* The same key, not only the same hash. */
		if (buf[SPOOL_IDLEN] == '\n' &&
		    strcmp(buf + SPOOL_IDLEN + 1, key) == 0) {
			memcpy(id, buf, SPOOL_IDLEN);
			id[SPOOL_IDLEN] = '\0';
			found = spool_is_id(id);
		}
	}
	close(efd);
	free(key);
	return found;
}

int
dedup_record(struct spool *spool, const struct envelope *env)
{
	char name[DEDUP_NAME_LEN + 1], tmp[DEDUP_NAME_LEN + SPOOL_IDLEN + 3];
	int fd = spool_dir_fd(spool, SPOOL_IN_DEDUP), efd, saved;
	char *key, *text;
	size_t len;

	if (env->message_id == NULL) {
		errno = EINVAL;
		return -1;
	}
	key = entry_key(env);
	entry_name(key, name);
	/* Named by the message's ID while written: unique. */
	snprintf(tmp, sizeof(tmp), ".%s.%s", name, env->id);
	text = xasprintf("%s\n%s", env->id, key);
	free(key);
	len = strlen(text);
	if ((efd = openat(fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	         0600)) == -1) {
		free(text);
		return -1;
	}
	if (len > DEDUP_ENTRY_MAX || write(efd, text, len) != (ssize_t)len ||
	    close(efd) == -1 || renameat(fd, tmp, fd, name) == -1) {
		saved = len > DEDUP_ENTRY_MAX ? EMSGSIZE : errno;
		unlinkat(fd, tmp, 0);
		free(text);
		errno = saved;
		return -1;
	}
	free(text);
	return 0;
}

int
dedup_prune(struct spool *spool, time_t before, int max)
{
	int fd, removed = 0;
	struct dirent *de;
	struct stat st;
	DIR *d;

	fd = openat(spool_dir_fd(spool, SPOOL_IN_DEDUP), ".",
	    O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	/* Temporary names (a crash while writing) go the same way. */
	while (removed < max && (de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 &&
		    strcmp(de->d_name, "..") != 0 &&
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
		        0 &&
		    S_ISREG(st.st_mode) && st.st_mtime < before &&
		    unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	closedir(d);
	return removed;
}
