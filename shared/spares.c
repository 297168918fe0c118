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
#include <stdatomic.h>
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
/* Files waiting for the thread to close them, at most; beyond, the caller
 * closes its own.  Each holds a descriptor: a few batches' worth. */
#define CLOSING_MAX 256

/* A stack of spare names. */
struct names {
	char (*v)[SPOOL_IDLEN + 1];
	size_t n, cap;
};

/* Spares emptied but not to be taken before their removal is durable:
 * each with the epoch it was recycled in (spares_settle()). */
struct cooling {
	char (*v)[SPOOL_IDLEN + 1];
	unsigned long *epoch;
	size_t n, cap;
};

struct spares {
	int fd; /* spare/ */
	pthread_mutex_t lock;
	pthread_cond_t work; /* below SPARES_LOW, a dirty spare, a file to
			      * close, or stop */
	struct names clean; /* empty, ready to take */
	struct names dirty; /* recycled, still to be emptied (ID.dirty) */
	struct cooling cooling;
	unsigned long epoch; /* bumped by spares_sync_begin() */
	unsigned long takes; /* spares taken so far */
	FILE **closing; /* files to close (spares_close_later()) */
	size_t nclosing;
	bool keeping, stopping;
	pthread_t thread;
};

static void
names_push(struct names *s, const char *name)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->v = xreallocarray(s->v, s->cap, sizeof(*s->v));
	}
	snprintf(s->v[s->n++], SPOOL_IDLEN + 1, "%s", name);
}

static void
push(struct spares *sp, const char *name)
{
	names_push(&sp->clean, name);
}

/* An emptied spare of the current epoch, to be taken after a sync. */
static void
cool(struct spares *sp, const char *name)
{
	struct cooling *c = &sp->cooling;

	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 256;
		c->v = xreallocarray(c->v, c->cap, sizeof(*c->v));
		c->epoch = xreallocarray(c->epoch, c->cap, sizeof(*c->epoch));
	}
	snprintf(c->v[c->n], SPOOL_IDLEN + 1, "%s", name);
	c->epoch[c->n++] = sp->epoch;
}

unsigned long
spares_sync_begin(struct spares *sp)
{
	unsigned long e;

	pthread_mutex_lock(&sp->lock);
	e = sp->epoch++;
	pthread_mutex_unlock(&sp->lock);
	return e;
}

void
spares_settle(struct spares *sp, unsigned long epoch)
{
	struct cooling *c = &sp->cooling;
	size_t i, kept = 0;

	pthread_mutex_lock(&sp->lock);
	for (i = 0; i < c->n; i++) {
		if (c->epoch[i] <= epoch) {
			names_push(&sp->clean, c->v[i]);
			continue;
		}
		memmove(c->v[kept], c->v[i], SPOOL_IDLEN + 1);
		c->epoch[kept++] = c->epoch[i];
	}
	c->n = kept;
	pthread_mutex_unlock(&sp->lock);
}

/*
 * A recycled file waits to be emptied as ID.dirty, a name no pool takes
 * (spool_is_id() refuses it): another process sharing spare/ must not take
 * it and write a message into it while it is being emptied.
 */
#define DIRTY_SUFFIX ".dirty"
#define DIRTY_NAME_MAX (SPOOL_IDLEN + sizeof(DIRTY_SUFFIX))

static void
dirty_name(const char *id, char name[DIRTY_NAME_MAX])
{
	snprintf(name, DIRTY_NAME_MAX, "%s" DIRTY_SUFFIX, id);
}

/* Is name "ID.dirty"?  Its ID goes to id. */
static bool
is_dirty_name(const char *name, char id[SPOOL_IDLEN + 1])
{
	return spool_is_id_with(name, DIRTY_SUFFIX, id);
}

static bool empty_spare(struct spares *sp, const char *id);

struct spares *
spares_open(int sparefd)
{
	struct spares *sp = xcalloc(1, sizeof(*sp));
	char id[SPOOL_IDLEN + 1];
	struct dirent *de;
	DIR *d;
	int fd;

	sp->fd = sparefd;
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->work, NULL);
	/* What an earlier run left, emptied if it had not been yet;
	 * anything else there is not ours. */
	if ((fd = openat(sparefd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) !=
	        -1 &&
	    (d = fdopendir(fd)) != NULL) {
		while ((de = readdir(d)) != NULL) {
			if (sp->clean.n >= SPARES_MAX)
				break;
			if (spool_is_id(de->d_name))
				push(sp, de->d_name);
			else if (is_dirty_name(de->d_name, id) &&
			    empty_spare(sp, id))
				push(sp, id);
		}
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
	pthread_cond_signal(&sp->work);
	pthread_mutex_unlock(&sp->lock);
	if (sp->keeping)
		pthread_join(sp->thread, NULL);
	while (sp->nclosing > 0)
		fclose(sp->closing[--sp->nclosing]);
	free(sp->closing);
	pthread_cond_destroy(&sp->work);
	pthread_mutex_destroy(&sp->lock);
	/* Dirty spares left (ID.dirty) are emptied at the next open. */
	free(sp->clean.v);
	free(sp->dirty.v);
	free(sp->cooling.v);
	free(sp->cooling.epoch);
	free(sp);
}

/* Pop a name into name; false when the pool is empty. */
static bool
pop(struct spares *sp, char name[SPOOL_IDLEN + 1])
{
	bool got;

	pthread_mutex_lock(&sp->lock);
	if ((got = sp->clean.n > 0)) {
		memcpy(name, sp->clean.v[--sp->clean.n], SPOOL_IDLEN + 1);
		sp->takes++;
	}
	if (sp->clean.n < SPARES_LOW)
		pthread_cond_signal(&sp->work);
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

/*
 * Empty the spare ID.dirty and name it ID, a spare to take; false (and the
 * file unlinked) when it cannot be a spare.  A file with another name
 * elsewhere (a hard link someone made) is not emptied: only this name goes.
 */
static bool
empty_spare(struct spares *sp, const char *id)
{
	char dirty[DIRTY_NAME_MAX];
	struct stat st;
	int fd;

	dirty_name(id, dirty);
	if ((fd = openat(sp->fd, dirty, O_WRONLY | O_CLOEXEC)) == -1) {
		(void)unlinkat(sp->fd, dirty, 0);
		return false;
	}
	if (fstat(fd, &st) == -1 || st.st_nlink != 1 ||
	    ftruncate(fd, 0) == -1) {
		close(fd);
		(void)unlinkat(sp->fd, dirty, 0);
		return false;
	}
	close(fd);
	if (renameat(sp->fd, dirty, sp->fd, id) == -1) {
		(void)unlinkat(sp->fd, dirty, 0);
		return false;
	}
	return true;
}

/*
 * Create the empty spare name.  The inode is allocated unnamed
 * (O_TMPFILE), outside spare/'s lock, then linked in: a create would hold
 * the folder's lock for the whole allocation (the slow part, spares.h),
 * and the sender's recycling renames into the same folder.  0, or -1 with
 * errno.
 */
static int
create_spare(struct spares *sp, const char *name)
{
	/* Cleared for good once unnamed files cannot be linked here: each
	 * try would allocate and free an inode for nothing. */
	static atomic_bool unnamed_works = true;
	char proc[64];
	int fd, saved;

	fd = atomic_load(&unnamed_works) ?
	    openat(sp->fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600) :
	    -1;
	if (fd != -1) {
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
		if (linkat(AT_FDCWD, proc, sp->fd, name, AT_SYMLINK_FOLLOW) ==
		    0)
			return close(fd);
		saved = errno;
		close(fd);
		if (saved == EEXIST || saved == ENOSPC || saved == EDQUOT) {
			errno = saved;
			return -1;
		}
		atomic_store(&unnamed_works, false);
	} else if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)
		atomic_store(&unnamed_works, false);
	/* No O_TMPFILE here (an old kernel, another file system) or no
	 * /proc: a plain create. */
	fd = openat(sp->fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	return fd == -1 ? -1 : close(fd);
}

/* spares_recycle(), spares_recycle_synced() and spares_recycle_later(). */
static int
recycle(struct spares *sp, int dirfd, const char *name, bool later,
    bool after_sync)
{
	char spare[SPOOL_IDLEN + 1], dirty[DIRTY_NAME_MAX];
	bool room;

	pthread_mutex_lock(&sp->lock);
	room = sp->clean.n + sp->dirty.n + sp->cooling.n < SPARES_MAX;
	pthread_mutex_unlock(&sp->lock);
	if (!room)
		return unlinkat(dirfd, name, 0);
	/* Out of its folder in one step, as unlink would; emptied after,
	 * where a crash in between leaves only ID.dirty, never an empty file
	 * under a message's name. */
	spool_new_id(NULL, spare);
	dirty_name(spare, dirty);
	if (renameat(dirfd, name, sp->fd, dirty) == -1) {
		if (errno == ENOENT)
			return -1;
		return unlinkat(dirfd, name, 0);
	}
	/* From here on the file has left its folder: whatever happens to
	 * the spare, the removal asked for is done. */
	pthread_mutex_lock(&sp->lock);
	if (later && sp->keeping) {
		names_push(&sp->dirty, spare);
		pthread_cond_signal(&sp->work);
		pthread_mutex_unlock(&sp->lock);
		return 0;
	}
	pthread_mutex_unlock(&sp->lock);
	if (empty_spare(sp, spare)) {
		pthread_mutex_lock(&sp->lock);
		if (after_sync)
			cool(sp, spare);
		else
			push(sp, spare);
		pthread_mutex_unlock(&sp->lock);
	}
	return 0;
}

int
spares_recycle(struct spares *sp, int dirfd, const char *name)
{
	return recycle(sp, dirfd, name, false, false);
}

int
spares_recycle_synced(struct spares *sp, int dirfd, const char *name)
{
	return recycle(sp, dirfd, name, false, true);
}

int
spares_recycle_later(struct spares *sp, int dirfd, const char *name)
{
	return recycle(sp, dirfd, name, true, true);
}

/* Empty one dirty spare (called with the lock held, returns with it). */
static void
clean_one(struct spares *sp)
{
	char spare[SPOOL_IDLEN + 1];
	bool ok;

	memcpy(spare, sp->dirty.v[--sp->dirty.n], SPOOL_IDLEN + 1);
	pthread_mutex_unlock(&sp->lock);
	ok = empty_spare(sp, spare);
	pthread_mutex_lock(&sp->lock);
	/* The epoch now is no earlier than the recycling's: it settles no
	 * sooner than it should. */
	if (ok)
		cool(sp, spare);
}

/* Close one file of sp->closing (called with the lock held, returns with
 * it). */
static void
close_one(struct spares *sp)
{
	FILE *fp = sp->closing[--sp->nclosing];

	pthread_mutex_unlock(&sp->lock);
	fclose(fp);
	pthread_mutex_lock(&sp->lock);
}

void
spares_close_later(struct spares *sp, FILE *fp)
{
	pthread_mutex_lock(&sp->lock);
	if (!sp->keeping || sp->stopping || sp->nclosing == CLOSING_MAX) {
		pthread_mutex_unlock(&sp->lock);
		fclose(fp);
		return;
	}
	if (sp->closing == NULL)
		sp->closing = xreallocarray(NULL, CLOSING_MAX,
		    sizeof(*sp->closing));
	sp->closing[sp->nclosing++] = fp;
	pthread_cond_signal(&sp->work);
	pthread_mutex_unlock(&sp->lock);
}

static void *
refill_main(void *arg)
{
	struct spares *sp = arg;
	char spare[SPOOL_IDLEN + 1];
	unsigned long failed_at = 0;
	bool failed = false;
	int rc;

	(void)setpriority(PRIO_PROCESS, (id_t)gettid(), SPARES_NICE);
	pthread_mutex_lock(&sp->lock);
	while (!sp->stopping) {
		if (sp->nclosing > 0) {
			close_one(sp);
			continue;
		}
		if (sp->dirty.n > 0) {
			clean_one(sp);
			continue;
		}
		/* After a failure (a full disk), only a take retries. */
		if (failed && sp->takes != failed_at)
			failed = false;
		if (failed || sp->clean.n >= SPARES_LOW) {
			pthread_cond_wait(&sp->work, &sp->lock);
			continue;
		}
		while (!sp->stopping && sp->dirty.n == 0 &&
		    sp->nclosing == 0 && sp->clean.n < SPARES_HIGH) {
			pthread_mutex_unlock(&sp->lock);
			spool_new_id(NULL, spare);
			rc = create_spare(sp, spare);
			pthread_mutex_lock(&sp->lock);
			if ((failed = rc == -1)) {
				failed_at = sp->takes;
				break;
			}
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
	pthread_mutex_lock(&sp->lock);
	sp->keeping = true;
	pthread_mutex_unlock(&sp->lock);
	return 0;
}

unsigned
spares_count(struct spares *sp)
{
	unsigned n;

	pthread_mutex_lock(&sp->lock);
	n = (unsigned)sp->clean.n;
	pthread_mutex_unlock(&sp->lock);
	return n;
}
