/*
 * dedup: see dedup.h.  An entry's text: "ID\nSENDER\nMESSAGE-ID\n".
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

static void
entry_name(const char *sender, const char *msgid, char name[DEDUP_NAME_LEN + 1])
{
	uint64_t h = 0xcbf29ce484222325ULL;

	h = fnv1a(h, sender);
	h = fnv1a(h, "\n"); /* "a"+"bc" and "ab"+"c" differ */
	h = fnv1a(h, msgid);
	snprintf(name, DEDUP_NAME_LEN + 1, "%016" PRIx64, h);
}

static char *
entry_text(const char *id, const char *sender, const char *msgid)
{
	return xasprintf("%s\n%s\n%s\n", id, sender, msgid);
}

int
dedup_find(struct spool *spool, const char *sender, const char *msgid,
    long window, time_t now, char id[SPOOL_IDLEN + 1])
{
	char name[DEDUP_NAME_LEN + 1], buf[DEDUP_ENTRY_MAX + 1], *want;
	int fd = spool_dir_fd(spool, SPOOL_IN_DEDUP), efd, found = 0;
	struct stat st;
	ssize_t n;

	entry_name(sender, msgid, name);
	if ((efd = openat(fd, name, O_RDONLY | O_CLOEXEC)) == -1)
		return errno == ENOENT ? 0 : -1;
	if (fstat(efd, &st) == 0 && st.st_mtime > now - window &&
	    (n = read(efd, buf, DEDUP_ENTRY_MAX)) > SPOOL_IDLEN) {
		buf[n] = '\0';
		/* The same key, not only the same hash. */
		want = entry_text("", sender, msgid);
		if (buf[SPOOL_IDLEN] == '\n' &&
		    strcmp(buf + SPOOL_IDLEN, want) == 0) {
			memcpy(id, buf, SPOOL_IDLEN);
			id[SPOOL_IDLEN] = '\0';
			found = spool_is_id(id);
		}
		free(want);
	}
	close(efd);
	return found;
}

int
dedup_record(struct spool *spool, const struct envelope *env)
{
	char name[DEDUP_NAME_LEN + 1], tmp[DEDUP_NAME_LEN + SPOOL_IDLEN + 3];
	int fd = spool_dir_fd(spool, SPOOL_IN_DEDUP), efd, saved;
	const char *sender = env->sender != NULL ? env->sender : "";
	char *text;
	size_t len;

	if (env->message_id == NULL) {
		errno = EINVAL;
		return -1;
	}
	entry_name(sender, env->message_id, name);
	/* Named by the message's ID while written: unique. */
	snprintf(tmp, sizeof(tmp), ".%s.%s", name, env->id);
	text = entry_text(env->id, sender, env->message_id);
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
