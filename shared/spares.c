/*
 * spares: see spares.h.  The pool is a stack of names behind one mutex,
 * read from the folder once at open and kept up to date by this process's
 * takes, recycles and refills; another process sharing the folder may take
 * a name first, which shows up as ENOENT at the rename and is skipped.
 */
#include "autoconf.h"

#include "spares.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spool.h"
#include "xmalloc.h"

/* The refill thread's nice value: it uses the CPU the daemon leaves. */
#define SPARES_NICE 10

struct spares {
	int fd; /* spare/ */
	pthread_mutex_t lock;
	pthread_cond_t low; /* the pool fell below SPARES_LOW, or stop */
	char (*names)[SPOOL_IDLEN + 1];
	size_t n, cap;
	bool keeping, stopping;
	pthread_t thread;
};

static void
push(struct spares *sp, const char *name)
{
	if (sp->n == sp->cap) {
		sp->cap = sp->cap ? sp->cap * 2 : 256;
		sp->names = xreallocarray(sp->names, sp->cap, sizeof(*sp->names));
	}
	snprintf(sp->names[sp->n++], SPOOL_IDLEN + 1, "%s", name);
}

struct spares *
spares_open(int sparefd)
{
	struct spares *sp = xcalloc(1, sizeof(*sp));
	struct dirent *de;
	DIR *d;
	int fd;

	sp->fd = sparefd;
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->low, NULL);
	/* What an earlier run left; anything else there is not ours. */
	if ((fd = openat(sparefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) !=
	        -1 &&
	    (d = fdopendir(fd)) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (spool_is_id(de->d_name) && sp->n < SPARES_MAX)
				push(sp, de->d_name);
		closedir(d);
	} else if (fd != -1)
		close(fd);
	return sp;
}

void
spares_close(struct spares *sp)
{
	if (sp == NULL)
		return;
	pthread_mutex_lock(&sp->lock);
	sp->stopping = true;
	pthread_cond_signal(&sp->low);
	pthread_mutex_unlock(&sp->lock);
	if (sp->keeping)
		pthread_join(sp->thread, NULL);
	pthread_cond_destroy(&sp->low);
	pthread_mutex_destroy(&sp->lock);
	free(sp->names);
	free(sp);
}

/* Pop a name into name; false when the pool is empty. */
static bool
pop(struct spares *sp, char name[SPOOL_IDLEN + 1])
{
	bool got;

	pthread_mutex_lock(&sp->lock);
	if ((got = sp->n > 0))
		memcpy(name, sp->names[--sp->n], SPOOL_IDLEN + 1);
	if (sp->n < SPARES_LOW)
		pthread_cond_signal(&sp->low);
	pthread_mutex_unlock(&sp->lock);
	return got;
}

int
spares_take(struct spares *sp, int dirfd, const char *name)
{
	char spare[SPOOL_IDLEN + 1];
	int fd;

	while (pop(sp, spare)) {
		/* Never over a file there: a new file is new. */
		if (renameat2(sp->fd, spare, dirfd, name, RENAME_NOREPLACE) ==
		    -1)
			continue; /* taken by another process, or removed */
		fd = openat(dirfd, name, O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (fd != -1)
			return fd;
		/* Not ours to write (made by another user): not a spare. */
		(void)unlinkat(dirfd, name, 0);
	}
	return -1;
}

int
spares_recycle(struct spares *sp, int dirfd, const char *name)
{
	char spare[SPOOL_IDLEN + 1];
	struct stat st;
	bool room;
	int fd;

	pthread_mutex_lock(&sp->lock);
	room = sp->n < SPARES_MAX;
	pthread_mutex_unlock(&sp->lock);
	if (!room)
		return unlinkat(dirfd, name, 0);
	/* Out of its folder in one step, as unlink would; emptied after,
	 * where a crash in between leaves only a spare with content, never
	 * an empty file under a message's name. */
	spool_new_id(NULL, spare);
	if (renameat(dirfd, name, sp->fd, spare) == -1) {
		if (errno == ENOENT)
			return -1;
		return unlinkat(dirfd, name, 0);
	}
	/* From here on the file has left its folder: whatever happens to
	 * the spare, the removal asked for is done. */
	if ((fd = openat(sp->fd, spare, O_WRONLY | O_CLOEXEC)) == -1) {
		(void)unlinkat(sp->fd, spare, 0);
		return 0;
	}
	/* A file with another name elsewhere (a hard link someone made) is
	 * not emptied: only this name goes. */
	if (fstat(fd, &st) == -1 || st.st_nlink != 1 ||
	    ftruncate(fd, 0) == -1) {
		close(fd);
		(void)unlinkat(sp->fd, spare, 0);
		return 0;
	}
	close(fd);
	pthread_mutex_lock(&sp->lock);
	push(sp, spare);
	pthread_mutex_unlock(&sp->lock);
	return 0;
}

static void *
refill_main(void *arg)
{
	struct spares *sp = arg;
	char spare[SPOOL_IDLEN + 1];
	bool failed = false;
	int fd;

	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), SPARES_NICE);
	pthread_mutex_lock(&sp->lock);
	while (!sp->stopping) {
		/* After a failure (a full disk), only the next take retries. */
		if (failed || sp->n >= SPARES_LOW) {
			pthread_cond_wait(&sp->low, &sp->lock);
			failed = false;
			continue;
		}
		while (!sp->stopping && sp->n < SPARES_HIGH) {
			pthread_mutex_unlock(&sp->lock);
			spool_new_id(NULL, spare);
			fd = openat(sp->fd, spare,
			    O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
			pthread_mutex_lock(&sp->lock);
			if ((failed = fd == -1))
				break;
			close(fd);
			push(sp, spare);
		}
	}
	pthread_mutex_unlock(&sp->lock);
	return NULL;
}

int
spares_keep(struct spares *sp)
{
	sigset_t all, old;
	int rc;

	if (sp->keeping)
		return 0;
	/* Signals are the main loop's. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&sp->thread, NULL, refill_main, sp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	sp->keeping = true;
	return 0;
}

unsigned
spares_count(struct spares *sp)
{
	unsigned n;

	pthread_mutex_lock(&sp->lock);
	n = (unsigned)sp->n;
	pthread_mutex_unlock(&sp->lock);
	return n;
}
