/*
 * spool: see spool.h; the file format is documented in docs/spool-format.md.
 *
 * What this module does: creates the spool folders, hands out message IDs,
 * writes, rewrites, moves and reads queue files with the commit order of
 * HOUSE-STYLE ("Spool and durability"), and takes the sender lock.
 *
 * What it never does: edit a queued file in place, hold a lock across I/O
 * (the only mutexes guard the ID counter and the lock descriptor), exit, or
 * log (except spool_load() about a leftover of an interrupted finish).
 *
 * Every path is relative to a directory descriptor opened once by
 * spool_open(), so a spool keeps working on the folders it opened even if
 * the process changes its working directory.  Temporary files in inbox/ are
 * named by fresh IDs, which carry the writer's PID: spool_cleanup_inbox()
 * uses it to tell a crashed writer's leftover from another process's write
 * in progress.
 */
#include "autoconf.h"

#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"
#include "spares.h"
#include "xmalloc.h"

#ifndef IOV_MAX
#define IOV_MAX 1024 /* Linux's UIO_MAXIOV */
#endif

/* A header bigger than this is not one of ours: refuse it before reading a
 * whole message into memory looking for the blank line. */
#define SPOOL_MAX_HEADER (16u * 1024 * 1024)
/* An inbox/ file older than this is junk even if its writer's PID is alive
 * (PIDs are reused): no write takes a day. */
#define SPOOL_STALE_SECONDS (24 * 60 * 60)

struct spool {
	char *path;        /* absolute */
	char *outbox_path; /* absolute, for inotify */
	bool save_sent;
	/* sent/ changed since its last fsync; the sender's thread only
	 * (keep_sent(), spool_sync_finished()). */
	bool sent_unsynced;
	int dirfd;
	int inboxfd;
	int outboxfd;
	int sentfd;
	int failedfd;
	int corruptfd;
	int sparefd;
	int holdfd;
	int controlfd;
	int dedupfd;
	int outcomesfd;
	struct spares *spares; /* spare/, files to reuse */
	pthread_mutex_t lock;  /* guards lockfd */
	int lockfd;            /* sender.lock while we hold it, else -1 */
};

/* ------------------------------------------------------------------ IDs */

/*
 * One counter per process, not per spool: IDs must be unique in the spool
 * whichever struct spool wrote them, and the PID part already separates
 * processes.  id_first is the time of this process's first ID, so that
 * cleanup can tell our own in-progress files from leftovers of an earlier
 * process that had the same PID.
 */
static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t id_last;
static uint64_t id_first;

static uint64_t
now_usec(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000 + (uint64_t)tv.tv_usec;
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Split an ID into its time (microseconds) and PID fields; -1 if the name
 * is not an ID (exactly 19 upper-case hex digits). */
static int
parse_id(const char *id, uint64_t *usec, unsigned *pid)
{
	uint64_t t = 0;
	unsigned p = 0;
	int i, v;

	for (i = 0; i < SPOOL_IDLEN; i++) {
		if ((v = hexval((unsigned char)id[i])) == -1)
			return -1;
		if (i < 13)
			t = t << 4 | (uint64_t)v;
		else
			p = p << 4 | (unsigned)v;
	}
	if (id[SPOOL_IDLEN] != '\0')
		return -1;
	if (usec != NULL)
		*usec = t;
	if (pid != NULL)
		*pid = p;
	return 0;
}

bool
spool_id_is_ours(const char *id)
{
	unsigned pid;

	return parse_id(id, NULL, &pid) == 0 &&
	       pid == ((unsigned)getpid() & 0xFFFFFFu);
}

bool
spool_is_id(const char *name)
{
	return parse_id(name, NULL, NULL) == 0;
}

bool
spool_is_id_with(const char *name, const char *suffix, char id[SPOOL_IDLEN + 1])
{
	if (strlen(name) != SPOOL_IDLEN + strlen(suffix) ||
	    strcmp(name + SPOOL_IDLEN, suffix) != 0)
		return false;
	memcpy(id, name, SPOOL_IDLEN);
	id[SPOOL_IDLEN] = '\0';
	return spool_is_id(id);
}

void
spool_new_id(struct spool *spool, char id[SPOOL_IDLEN + 1])
{
	uint64_t t, now = now_usec();

	(void)spool;
	pthread_mutex_lock(&id_lock);
	/* Strictly increasing even when the clock steps back or two threads
	 * ask within the same microsecond. */
	t = now > id_last ? now : id_last + 1;
	id_last = t;
	if (id_first == 0)
		id_first = t;
	pthread_mutex_unlock(&id_lock);
	snprintf(id, SPOOL_IDLEN + 1, "%013" PRIX64 "%06X",
	    t & UINT64_C(0xFFFFFFFFFFFFF), (unsigned)getpid() & 0xFFFFFFu);
}

time_t
spool_id_time(const char *id)
{
	uint64_t t;

	if (id == NULL || parse_id(id, &t, NULL) == -1)
		return -1;
	return (time_t)(t / 1000000);
}

/* ---------------------------------------------------------- file I/O */

/* Write every byte of iov, looping on short writes and EINTR. */
static int
write_iov(int fd, const struct iovec *iov, int iovcnt)
{
	struct iovec *v =
	    xreallocarray(NULL, iovcnt > 0 ? (size_t)iovcnt : 1, sizeof(*v));
	int i = 0, cnt, rc = -1;
	ssize_t w;
	size_t done;

	if (iovcnt > 0)
		memcpy(v, iov, (size_t)iovcnt * sizeof(*v));
	while (i < iovcnt) {
		if (v[i].iov_len == 0) {
			i++;
			continue;
		}
		cnt = iovcnt - i > IOV_MAX ? IOV_MAX : iovcnt - i;
		if ((w = writev(fd, v + i, cnt)) == -1) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		for (done = (size_t)w; i < iovcnt && done >= v[i].iov_len; i++)
			done -= v[i].iov_len;
		if (i < iovcnt) {
			v[i].iov_base = (char *)v[i].iov_base + done;
			v[i].iov_len -= done;
		}
	}
	rc = 0;
out:
	free(v);
	return rc;
}

static int
write_all(int fd, const void *buf, size_t len)
{
	struct iovec iov = {(void *)buf, len};

	return write_iov(fd, &iov, 1);
}

static int
pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	ssize_t w;

	while (len > 0) {
		if ((w = pwrite(fd, buf, len, off)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf = (const char *)buf + w;
		len -= (size_t)w;
		off += w;
	}
	return 0;
}

/*
 * Read and parse the header of an open spool file named id.  The header is
 * read in chunks until its blank line, never the whole message.
 */
static int
read_envelope(int fd, const char *id, struct envelope **envp)
{
	struct stat st;
	char *buf = NULL;
	size_t cap = 0, len = 0, hend = 0;
	ssize_t n;
	int rc = -1;

	if (fstat(fd, &st) == -1)
		goto out;
	if (!S_ISREG(st.st_mode)) {
		errno = EBADMSG;
		goto out;
	}
	while (hend == 0) {
		if (len == cap) {
			if (cap >= SPOOL_MAX_HEADER) {
				errno = EBADMSG;
				goto out;
			}
			cap = cap ? cap * 2 : 8192;
			buf = xreallocarray(buf, cap, 1);
		}
		n = pread(fd, buf + len, cap - len, (off_t)len);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (n == 0) {
			errno = EBADMSG; /* no blank line at all */
			goto out;
		}
		len += (size_t)n;
		hend = envelope_header_end(buf, len);
	}
	if (envelope_parse_header(buf, hend, (uint64_t)st.st_size, envp) == -1)
		goto out;
	/* The name is the ID: a copy under another name would be sent
	 * twice and logged under a wrong ID. */
	if (strcmp((*envp)->id, id) != 0) {
		envelope_free(*envp);
		*envp = NULL;
		errno = EBADMSG;
		goto out;
	}
	rc = 0;
out:
	free(buf);
	return rc;
}

/* Close a descriptor we wrote, keeping the first error's errno. */
static int
close_checked(int *fdp)
{
	int rc = close(*fdp);

	*fdp = -1;
	return rc;
}

/* -------------------------------------------------------- new files */

/* A new file dirfd/name for writing: a spare renamed into place, or a file
 * created (spares.h says why the first is preferred).  -1 with errno. */
static int
new_file(struct spool *spool, int dirfd, const char *name)
{
	int fd = spares_take(spool->spares, dirfd, name);

	if (fd != -1)
		return fd;
	/* O_EXCL: never append to or truncate someone else's file. */
	return openat(
	    dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
}

/* Remove dirfd/name, keeping its inode for a new message (spares.h). */
static int
remove_file(struct spool *spool, int dirfd, const char *name)
{
	return spares_recycle(spool->spares, dirfd, name);
}

/* The same for a queue file: its inode holds no new message before its
 * removal is durable (spool_sync()). */
static int
remove_queue_file(struct spool *spool, int dirfd, const char *name)
{
	return spares_recycle_synced(spool->spares, dirfd, name);
}

/* The same for a delivered message: emptied later, off the sender's path,
 * which the relay waits for. */
static int
remove_sent_file(struct spool *spool, int dirfd, const char *name)
{
	return spares_recycle_later(spool->spares, dirfd, name);
}

int
spool_keep_spares(struct spool *spool)
{
	return spares_keep(spool->spares);
}

/* -------------------------------------------------------- state files */

#define STATE_SUFFIX ".state"
#define STATE_NAME_MAX (SPOOL_IDLEN + sizeof(STATE_SUFFIX))

static void
state_name(const char *id, char name[STATE_NAME_MAX])
{
	snprintf(name, STATE_NAME_MAX, "%s" STATE_SUFFIX, id);
}

/* Is name "ID.state"?  Its ID goes to id. */
static bool
is_state_name(const char *name, char id[SPOOL_IDLEN + 1])
{
	return spool_is_id_with(name, STATE_SUFFIX, id);
}

/* Remove dirfd/ID.state if there is one. */
static int
unlink_state(struct spool *spool, int dirfd, const char *id)
{
	char name[STATE_NAME_MAX];
	struct stat st;

	state_name(id, name);
	/* Most messages never had a state file: a lookup says so without
	 * the folder locks a rename takes. */
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1 &&
	    errno == ENOENT)
		return 0;
	if (remove_queue_file(spool, dirfd, name) == -1 && errno != ENOENT)
		return -1;
	return 0;
}

/*
 * A queued message's state file is dated when the message is next worth a
 * look (envelope_next_look()), as Postfix dates its deferred queue files:
 * the start-up scan then knows, from one fstatat(), which messages it
 * need not read yet (spool_scan_known()).  A time already past is set
 * too: the date is then never later than the envelope says, even after
 * the clock steps back.
 */
static int
date_next_look(int fd, const struct envelope *env)
{
	struct timespec times[2] = {
	    {.tv_nsec = UTIME_OMIT}, {.tv_sec = envelope_next_look(env)}};

	return futimens(fd, times);
}

/*
 * Write env as tofd/ID.state: a fresh file in inbox/ (named by a fresh ID,
 * which carries our PID, so that another process's cleanup leaves it
 * alone), dated (date_next_look()) when it is a queued message's,
 * fsynced, then renamed over the old state.  Never the message: a state
 * change costs its envelope, whatever the message's size.
 */
static int
write_state(
    struct spool *spool, const struct envelope *env, int tofd, bool durable)
{
	char tmp[SPOOL_IDLEN + 1], name[STATE_NAME_MAX], *hdr;
	size_t hlen;
	int fd, saved;

	if (!spool_is_id(env->id)) {
		errno = EINVAL;
		return -1;
	}
	state_name(env->id, name);
	spool_new_id(spool, tmp);
	if ((fd = new_file(spool, spool->inboxfd, tmp)) == -1)
		return -1;
	hdr = envelope_format(env, &hlen);
	if (write_all(fd, hdr, hlen) == -1 ||
	    (tofd == spool->outboxfd && date_next_look(fd, env) == -1) ||
	    (durable && fsync(fd) == -1) || close_checked(&fd) == -1 ||
	    renameat(spool->inboxfd, tmp, tofd, name) == -1) {
		saved = errno;
		if (fd != -1)
			close(fd);
		unlinkat(spool->inboxfd, tmp, 0);
		free(hdr);
		errno = saved;
		return -1;
	}
	free(hdr);
	return 0;
}

/*
 * Open a queue file to read it.  O_NOATIME: with relatime, the first read
 * of a file written since its last read sets its atime, which dirties
 * its inode for write-back; the sender's start-up load of a big queue
 * would dirty every inode of it while intake fsyncs.  Only the file's
 * owner (or CAP_FOWNER) may ask: a process refused once (it reads another
 * user's files) reads the usual way from then on.
 */
static int
open_to_read(int dirfd, const char *name)
{
	static atomic_bool refused;
	int fd;

	if (!atomic_load_explicit(&refused, memory_order_relaxed)) {
		fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOATIME);
		if (fd != -1 || errno != EPERM)
			return fd;
		atomic_store_explicit(&refused, true, memory_order_relaxed);
	}
	return openat(dirfd, name, O_RDONLY | O_CLOEXEC);
}

/* Read dirfd/ID.state: 1 with *envp, 0 when there is none, -1 with errno
 * (EBADMSG: it does not parse, or names another message). */
static int
read_state(int dirfd, const char *id, struct envelope **envp)
{
	char name[STATE_NAME_MAX], *buf = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t n;
	int fd, rc = -1, saved;

	*envp = NULL;
	state_name(id, name);
	if ((fd = open_to_read(dirfd, name)) == -1)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st) == -1)
		goto out;
	if (!S_ISREG(st.st_mode) || st.st_size > SPOOL_MAX_HEADER) {
		errno = EBADMSG;
		goto out;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (len < (size_t)st.st_size) {
		n = pread(fd, buf + len, (size_t)st.st_size - len, (off_t)len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto out;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (envelope_parse_state(buf, len, envp) == -1)
		goto out;
	if (strcmp((*envp)->id, id) != 0) {
		envelope_free(*envp);
		*envp = NULL;
		errno = EBADMSG;
		goto out;
	}
	rc = 1;
out:
	saved = errno;
	free(buf);
	close(fd);
	errno = saved;
	return rc;
}

/* ------------------------------------------------------ open / close */

static const char *const subdirs[] = {
    "inbox",
    "outbox",
    "sent",
    "failed",
    "corrupt",
    "spare",
    "hold",
    "control",
    "dedup",
    "outcomes",
};

/* mkdir -p with mode 0700 for the parts it creates. */
static int
mkdir_p(const char *path)
{
	char *p = xstrdup(path), *s, c;
	int rc = -1;

	for (s = p + 1;; s++) {
		if (*s != '/' && *s != '\0')
			continue;
		c = *s;
		*s = '\0';
		if (mkdir(p, 0700) == -1 && errno != EEXIST)
			goto out;
		*s = c;
		if (c == '\0')
			break;
	}
	rc = 0;
out:
	free(p);
	return rc;
}

static int
open_dir_at(int at, const char *name)
{
	return openat(at, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

struct spool *
spool_open(const char *dir, bool save_sent)
{
	struct spool *spool = xcalloc(1, sizeof(*spool));
	int *fds[10];
	bool created = false;
	char *abs = NULL;
	size_t i;
	int saved;

	spool->dirfd = spool->inboxfd = spool->outboxfd = -1;
	spool->sentfd = spool->failedfd = spool->corruptfd = -1;
	spool->sparefd = spool->holdfd = spool->controlfd = -1;
	spool->dedupfd = spool->outcomesfd = -1;
	spool->lockfd = -1;
	spool->save_sent = save_sent;
	pthread_mutex_init(&spool->lock, NULL);
	fds[0] = &spool->inboxfd;
	fds[1] = &spool->outboxfd;
	fds[2] = &spool->sentfd;
	fds[3] = &spool->failedfd;
	fds[4] = &spool->corruptfd;
	fds[5] = &spool->sparefd;
	fds[6] = &spool->holdfd;
	fds[7] = &spool->controlfd;
	fds[8] = &spool->dedupfd;
	fds[9] = &spool->outcomesfd;

	if (dir == NULL || *dir == '\0') {
		errno = EINVAL;
		goto fail;
	}
	if (mkdir_p(dir) == -1)
		goto fail;
	if ((abs = realpath(dir, NULL)) == NULL)
		goto fail;
	spool->path = xstrdup(abs);
	spool->outbox_path = xasprintf("%s/outbox", abs);
	if ((spool->dirfd = open_dir_at(AT_FDCWD, abs)) == -1)
		goto fail;
	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		if (mkdirat(spool->dirfd, subdirs[i], 0700) == 0)
			created = true;
		else if (errno != EEXIST)
			goto fail;
		if ((*fds[i] = open_dir_at(spool->dirfd, subdirs[i])) == -1)
			goto fail;
	}
	/* New folders must survive a crash before the first 250. */
	if (created && fsync(spool->dirfd) == -1)
		goto fail;
	spool->spares = spares_open(spool->sparefd);
	free(abs);
	return spool;
fail:
	saved = errno;
	free(abs);
	spool_close(spool);
	errno = saved;
	return NULL;
}

void
spool_close(struct spool *spool)
{
	int *fds[12];
	size_t i;

	if (spool == NULL)
		return;
	/* Its refill thread uses spare/. */
	spares_close(spool->spares);
	fds[0] = &spool->dirfd;
	fds[1] = &spool->inboxfd;
	fds[2] = &spool->outboxfd;
	fds[3] = &spool->sentfd;
	fds[4] = &spool->failedfd;
	fds[5] = &spool->corruptfd;
	fds[6] = &spool->lockfd; /* closing it drops the flock */
	fds[7] = &spool->sparefd;
	fds[8] = &spool->holdfd;
	fds[9] = &spool->controlfd;
	fds[10] = &spool->dedupfd;
	fds[11] = &spool->outcomesfd;
	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
		if (*fds[i] != -1)
			close(*fds[i]);
	pthread_mutex_destroy(&spool->lock);
	free(spool->path);
	free(spool->outbox_path);
	free(spool);
}

const char *
spool_path(const struct spool *spool)
{
	return spool->path;
}

const char *
spool_outbox_path(const struct spool *spool)
{
	return spool->outbox_path;
}

static const char *const folder_names[SPOOL_NFOLDERS] = {
    "outbox",
    "hold",
    "failed",
    "sent",
    "corrupt",
    "control",
    "dedup",
    "outcomes",
};

const char *
spool_folder_name(enum spool_folder folder)
{
	return folder_names[folder];
}

static int
folder_fd(const struct spool *spool, enum spool_folder folder)
{
	switch (folder) {
	case SPOOL_IN_HOLD:
		return spool->holdfd;
	case SPOOL_IN_FAILED:
		return spool->failedfd;
	case SPOOL_IN_SENT:
		return spool->sentfd;
	case SPOOL_IN_CORRUPT:
		return spool->corruptfd;
	case SPOOL_IN_CONTROL:
		return spool->controlfd;
	case SPOOL_IN_DEDUP:
		return spool->dedupfd;
	case SPOOL_IN_OUTCOMES:
		return spool->outcomesfd;
	case SPOOL_IN_OUTBOX:
		break;
	}
	return spool->outboxfd;
}

int
spool_dir_fd(const struct spool *spool, enum spool_folder folder)
{
	return folder_fd(spool, folder);
}

/* A fresh handle on a folder, so that each scan has its own position. */
static DIR *
open_scan(int dirfd)
{
	int fd = open_dir_at(dirfd, ".");
	DIR *d;

	if (fd == -1)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return d;
}

/* Is inbox/name a leftover that nobody will finish? */
static bool
inbox_stale(const char *name)
{
	uint64_t usec, first;
	unsigned pid;

	if (parse_id(name, &usec, &pid) == -1)
		return true;
	if (usec / 1000000 + SPOOL_STALE_SECONDS < now_usec() / 1000000)
		return true;
	if (pid == ((unsigned)getpid() & 0xFFFFFFu)) {
		/* Our PID: ours only if written since our first ID; older
		 * ones belong to an earlier process that had this PID. */
		pthread_mutex_lock(&id_lock);
		first = id_first;
		pthread_mutex_unlock(&id_lock);
		return first == 0 || usec < first;
	}
	/* Another process (the milter and the standalone server may share
	 * a spool): keep its files while it lives. */
	return pid == 0 || (kill((pid_t)pid, 0) == -1 && errno == ESRCH);
}

/* Remove outbox/ID.state files whose message is gone (a crash between
 * the two unlinks of spool_finish()); adds to *n. */
static int
remove_orphan_states(struct spool *spool, int *n)
{
	char id[SPOOL_IDLEN + 1];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int saved;

	if ((d = open_scan(spool->outboxfd)) == NULL)
		return -1;
	while ((errno = 0, de = readdir(d)) != NULL)
		if (is_state_name(de->d_name, id) &&
		    fstatat(spool->outboxfd, id, &st, 0) == -1 &&
		    errno == ENOENT &&
		    unlinkat(spool->outboxfd, de->d_name, 0) == 0)
			(*n)++;
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : 0;
}

static int rename_new(int fromfd, const char *name, int tofd);

/* Put back beside its message in outbox/ a state that a hold or release
 * cut short left in hold/ (spool_hold()). */
static int
mend_holds(struct spool *spool)
{
	char id[SPOOL_IDLEN + 1];
	struct dirent *de;
	DIR *d;
	int saved;

	if ((d = open_scan(spool->holdfd)) == NULL)
		return -1;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (!is_state_name(de->d_name, id) ||
		    faccessat(spool->holdfd, id, F_OK, AT_SYMLINK_NOFOLLOW) ==
		        0)
			continue;
		if (faccessat(spool->outboxfd, id, F_OK, AT_SYMLINK_NOFOLLOW) ==
		    -1) {
			/* Its message is in neither folder. */
			(void)unlinkat(spool->holdfd, de->d_name, 0);
			continue;
		}
		/* A state in outbox/ already is the newer one. */
		if (rename_new(spool->holdfd, de->d_name, spool->outboxfd) ==
		    -1) {
			if (errno != EEXIST)
				break;
			(void)unlinkat(spool->holdfd, de->d_name, 0);
			continue;
		}
		log_warnx("%s: a hold or release was cut short: its state "
		          "is back beside it in outbox/",
		    id);
	}
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : 0;
}

int
spool_cleanup_inbox(struct spool *spool)
{
	struct dirent *de;
	DIR *d;
	int n = 0;

	if ((d = open_scan(spool->inboxfd)) == NULL)
		return -1;
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (!inbox_stale(de->d_name))
			continue;
		if (unlinkat(spool->inboxfd, de->d_name, 0) == 0)
			n++;
		else if (errno != ENOENT && errno != EISDIR && errno != EPERM)
			goto fail;
	}
	if (errno != 0)
		goto fail;
	closedir(d);
	if (mend_holds(spool) == -1 || remove_orphan_states(spool, &n) == -1)
		return -1;
	return n;
fail : {
	int saved = errno;

	closedir(d);
	errno = saved;
}
	return -1;
}

/* -------------------------------------------------------- committing */

/*
 * Rename name from one folder to another, never over a file there: a
 * second message under a queued one's ID (a caller's ID, or two processes
 * with the same PID in different PID namespaces sharing a spool) must fail
 * with EEXIST rather than replace a message that was acknowledged.
 * Filesystems without RENAME_NOREPLACE (EINVAL) get a plain rename.
 */
static int
rename_new(int fromfd, const char *name, int tofd)
{
	if (renameat2(fromfd, name, tofd, name, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	return renameat(fromfd, name, tofd, name);
}

/* A message being written into inbox/ (spool.h). */
struct spool_draft {
	struct envelope *env; /* borrowed */
	int fd;
	off_t size_at; /* where the size value sits in the header */
	uint64_t size; /* octets of the message written so far */
	int error;     /* the first write error, sticky */
};

/* Offset of the size value in a formatted header. */
static off_t
size_offset(const char *hdr, size_t hlen)
{
	static const char key[] = "\nsize: ";
	const char *p = memmem(hdr, hlen, key, sizeof(key) - 1);

	if (p == NULL)
		arnie_panic("spool: envelope without a size line");
	return (off_t)(p - hdr) + (off_t)sizeof(key) - 1;
}

struct spool_draft *
spool_draft_new(struct spool *spool, struct envelope *env)
{
	struct spool_draft *d;
	char *hdr;
	size_t hlen;
	time_t now = time(NULL);
	int saved;

	if (env->nrcpts == 0 || (env->id[0] != '\0' && !spool_is_id(env->id))) {
		errno = EINVAL;
		return NULL;
	}
	if (env->id[0] == '\0')
		spool_new_id(spool, env->id);
	if (env->created == 0)
		env->created = now;
	if (env->next_attempt == 0)
		env->next_attempt = now;
	env->size = 0;
	d = xcalloc(1, sizeof(*d));
	d->env = env;
	hdr = envelope_format(env, &hlen);
	d->size_at = size_offset(hdr, hlen);
	d->fd = new_file(spool, spool->inboxfd, env->id);
	if (d->fd == -1) {
		saved = errno;
		free(hdr);
		free(d);
		errno = saved;
		return NULL;
	}
	if (write_all(d->fd, hdr, hlen) == -1)
		d->error = errno;
	free(hdr);
	return d;
}

int
spool_draft_write(struct spool_draft *d, const struct iovec *iov, int iovcnt)
{
	int i;

	if (d->error == 0 && write_iov(d->fd, iov, iovcnt) == -1)
		d->error = errno;
	if (d->error != 0) {
		errno = d->error;
		return -1;
	}
	for (i = 0; i < iovcnt; i++)
		d->size += iov[i].iov_len;
	return 0;
}

/* Remove the draft's file and free it; errno is kept. */
static void
draft_drop(struct spool *spool, struct spool_draft *d)
{
	int saved = errno;

	if (d->fd != -1)
		close(d->fd);
	(void)remove_file(spool, spool->inboxfd, d->env->id);
	free(d);
	errno = saved;
}

void
spool_draft_abort(struct spool *spool, struct spool_draft *d)
{
	if (d != NULL)
		draft_drop(spool, d);
}

int
spool_draft_commit(struct spool *spool, struct spool_draft *d)
{
	char size[ENVELOPE_SIZE_WIDTH + 1];

	if (d->error != 0) {
		errno = d->error;
		goto fail;
	}
	/* The width is fixed, so the header keeps its length. */
	snprintf(
	    size, sizeof(size), "%-*" PRIu64, ENVELOPE_SIZE_WIDTH, d->size);
	if (pwrite_all(d->fd, size, ENVELOPE_SIZE_WIDTH, d->size_at) == -1)
		goto fail;
	/* The data must be on disk before its name appears in outbox/, or
	 * a crash could leave a named but empty file. */
	if (fsync(d->fd) == -1)
		goto fail;
	/* close() can report a deferred write error (NFS, quotas). */
	if (close_checked(&d->fd) == -1)
		goto fail;
	/* Atomic: outbox/ never holds a partial file.  Durable only after
	 * spool_sync() fsyncs outbox/, which the caller batches. */
	if (rename_new(spool->inboxfd, d->env->id, spool->outboxfd) == -1)
		goto fail;
	d->env->size = d->size;
	free(d);
	return 0;
fail:
	draft_drop(spool, d);
	return -1;
}

int
spool_write(struct spool *spool, struct envelope *env, const struct iovec *iov,
    int iovcnt)
{
	struct spool_draft *d;

	if (iovcnt < 0 || (iovcnt > 0 && iov == NULL)) {
		errno = EINVAL;
		return -1;
	}
	if ((d = spool_draft_new(spool, env)) == NULL)
		return -1;
	if (spool_draft_write(d, iov, iovcnt) == -1) {
		draft_drop(spool, d);
		return -1;
	}
	return spool_draft_commit(spool, d);
}

int
spool_sync_finished(struct spool *spool)
{
	if (!spool->sent_unsynced)
		return 0;
	if (fsync(spool->sentfd) == -1)
		return -1;
	spool->sent_unsynced = false;
	return 0;
}

int
spool_sync(struct spool *spool)
{
	unsigned long epoch = spares_sync_begin(spool->spares);

	if (fsync(spool->outboxfd) == -1)
		return -1;
	/* Files that left outbox/ before this fsync may hold new mail. */
	spares_settle(spool->spares, epoch);
	return 0;
}

void
spool_commit_reply(int err, struct spool_reply *reply)
{
	if (err == ENOSPC || err == EDQUOT) {
		reply->code = "452";
		reply->enhanced = "4.3.1";
		reply->text = "Insufficient system storage";
	} else {
		reply->code = "451";
		reply->enhanced = "4.3.0";
		reply->text = "Queue file write error";
	}
}

int
spool_discard(struct spool *spool, const char *id)
{
	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	/* unlink, not recycled: the sender may have opened it already,
	 * and a reused inode would hand it another message's bytes. */
	if (unlinkat(spool->outboxfd, id, 0) == -1 ||
	    unlink_state(spool, spool->outboxfd, id) == -1)
		return -1;
	return fsync(spool->outboxfd);
}

int
spool_commit(struct spool *spool, struct envelope *env, const struct iovec *iov,
    int iovcnt)
{
	int saved;

	if (spool_write(spool, env, iov, iovcnt) == -1)
		return -1;
	if (spool_sync(spool) == -1) {
		/* Not durable, so the client will be told 4xx and retry:
		 * take the file back rather than send it twice. */
		saved = errno;
		(void)spool_discard(spool, env->id);
		errno = saved;
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------- reading */

/* IDs as a scan collects them: fixed-size, sortable, searchable. */
struct idset {
	char (*v)[SPOOL_IDLEN + 1];
	size_t n, cap;
};

static void
idset_add(struct idset *set, const char *id)
{
	if (set->n == set->cap) {
		set->cap = set->cap ? 2 * set->cap : 256;
		set->v = xreallocarray(set->v, set->cap, sizeof(*set->v));
	}
	memcpy(set->v[set->n++], id, SPOOL_IDLEN + 1);
}

static int
compare_id(const void *a, const void *b)
{
	return memcmp(a, b, SPOOL_IDLEN);
}

static bool
idset_has(const struct idset *set, const char *id)
{
	return set->n > 0 &&
	       bsearch(id, set->v, set->n, sizeof(*set->v), compare_id) != NULL;
}

/* The IDs of the names in dirfd: messages (ids) and state files (states,
 * or ids too when states is NULL). */
static int
collect_ids(int dirfd, struct idset *ids, struct idset *states)
{
	char id[SPOOL_IDLEN + 1];
	struct dirent *de;
	DIR *d;
	int saved;

	if ((d = open_scan(dirfd)) == NULL)
		return -1;
	/* Dotfiles and other names are an operator's or editor's temporary
	 * files: not messages, and not ours to remove. */
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (spool_is_id(de->d_name))
			idset_add(ids, de->d_name);
		else if (is_state_name(de->d_name, id))
			idset_add(states != NULL ? states : ids, id);
	}
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : 0;
}

int
spool_scan(struct spool *spool, spool_scan_fn *fn, void *arg)
{
	return spool_scan_folder(spool, SPOOL_IN_OUTBOX, fn, arg);
}

int
spool_scan_folder(
    struct spool *spool, enum spool_folder folder, spool_scan_fn *fn, void *arg)
{
	struct dirent *de;
	DIR *d;
	int saved;

	if ((d = open_scan(folder_fd(spool, folder))) == NULL)
		return -1;
	/* Dotfiles and other names are an operator's or editor's temporary
	 * files: not messages, and not ours to remove. */
	while ((errno = 0, de = readdir(d)) != NULL)
		if (spool_is_id(de->d_name))
			fn(de->d_name, 0, arg);
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : 0;
}

/* What a scan knows of id (SPOOL_KNOWN_*), given what it may know at all
 * and the sorted IDs with a state file and with a finished copy. */
static unsigned
known_of(const char *id, unsigned knowable, const struct idset *states,
    const struct idset *finished)
{
	unsigned known = knowable;

	if (idset_has(states, id))
		known &= ~(unsigned)SPOOL_KNOWN_NO_STATE;
	if (idset_has(finished, id))
		known &= ~(unsigned)SPOOL_KNOWN_UNFINISHED;
	return known;
}

int
spool_list(
    struct spool *spool, enum spool_folder folder, spool_id **ids, size_t *n)
{
	struct idset set = {0}, states = {0};
	int rc;

	rc = collect_ids(folder_fd(spool, folder), &set, &states);
	free(states.v);
	if (rc == -1) {
		free(set.v);
		return -1;
	}
	if (set.n > 1)
		qsort(set.v, set.n, sizeof(*set.v), compare_id);
	*ids = set.v;
	*n = set.n;
	return 0;
}

/* When a message with a state file need not be read before: the file's
 * date (date_next_look()) if still to come, else 0. */
static time_t
not_before(int dirfd, const char *id, time_t now)
{
	char name[STATE_NAME_MAX];
	struct stat st;

	state_name(id, name);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1 ||
	    st.st_mtime <= now)
		return 0;
	return st.st_mtime;
}

int
spool_scan_known(struct spool *spool, spool_scan_known_fn *fn, void *arg)
{
	struct idset ids = {0}, states = {0}, finished = {0};
	unsigned knowable;
	time_t now = time(NULL);
	const char *id;
	size_t i;
	int rc = 0, saved;

	knowable = SPOOL_KNOWN_NO_STATE | SPOOL_KNOWN_UNFINISHED;
	if (collect_ids(spool->outboxfd, &ids, &states) == -1) {
		/* What was read is still queued, with nothing known. */
		rc = -1;
		knowable = 0;
	}
	/* Nothing known of sent/ and failed/ if they cannot be read: every
	 * lookup is then made, as without a scan. */
	if (ids.n > 0 && knowable != 0 &&
	    (collect_ids(spool->sentfd, &finished, NULL) == -1 ||
	        collect_ids(spool->failedfd, &finished, NULL) == -1))
		knowable &= ~(unsigned)SPOOL_KNOWN_UNFINISHED;
	saved = errno;
	if (states.n > 1)
		qsort(states.v, states.n, sizeof(*states.v), compare_id);
	if (finished.n > 1)
		qsort(finished.v, finished.n, sizeof(*finished.v), compare_id);
	for (i = 0; i < ids.n; i++) {
		id = ids.v[i];
		/* A move to sent/ or failed/ cut short is completed at the
		 * first load, whatever the date. */
		fn(id, known_of(id, knowable, &states, &finished),
		    idset_has(&states, id) && !idset_has(&finished, id)
		        ? not_before(spool->outboxfd, id, now)
		        : 0,
		    arg);
	}
	free(ids.v);
	free(states.v);
	free(finished.v);
	errno = saved;
	return rc;
}

/* The time of sent/ID's last change: its state file's (written when it
 * was sent), or the message's when it has none (0.1.0 spools). */
static int
sent_time(int dirfd, const char *id, time_t *t)
{
	char name[STATE_NAME_MAX];
	struct stat st;

	state_name(id, name);
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == -1 &&
	    fstatat(dirfd, id, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return -1;
	*t = st.st_mtim.tv_sec;
	return 0;
}

/*
 * A state in sent/ without its message, while the message is still queued:
 * a move to sent/ a crash cut short, which the sender completes when it
 * loads the message (complete_finish()).  Not for pruning, however old.
 */
static bool
move_pending(struct spool *spool, const char *id)
{
	struct stat st;

	return fstatat(spool->sentfd, id, &st, AT_SYMLINK_NOFOLLOW) == -1 &&
	       errno == ENOENT &&
	       fstatat(spool->outboxfd, id, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int
spool_prune_sent(struct spool *spool, time_t before, int max)
{
	struct idset ids = {0};
	char name[STATE_NAME_MAX];
	size_t i;
	time_t t;
	int removed = 0;
	bool gone;

	if (collect_ids(spool->sentfd, &ids, NULL) == -1) {
		free(ids.v);
		return -1;
	}
	/* An ID with both files is listed twice: sorted, the second is
	 * found gone. */
	if (ids.n > 1)
		qsort(ids.v, ids.n, sizeof(*ids.v), compare_id);
	for (i = 0; i < ids.n && removed < max; i++) {
		if ((i > 0 && compare_id(ids.v[i], ids.v[i - 1]) == 0) ||
		    sent_time(spool->sentfd, ids.v[i], &t) == -1 ||
		    t >= before || move_pending(spool, ids.v[i]))
			continue;
		/* The message first: a state left alone goes next time. */
		state_name(ids.v[i], name);
		gone = unlinkat(spool->sentfd, ids.v[i], 0) == 0;
		gone = unlinkat(spool->sentfd, name, 0) == 0 || gone;
		if (gone)
			removed++;
	}
	free(ids.v);
	return removed;
}

/*
 * spool_finish() writes the final file into sent/ or failed/ before it
 * removes outbox/ID, so that a crash in between never loses a message.  The
 * leftover is recognised here: the finished copy exists and is at least as
 * new as the queued one.  (A message an operator copied back from failed/
 * into outbox/ to retry it is newer than its old copy, so it is kept.)
 */
static bool
finished_leftover(struct spool *spool, const char *id, const struct stat *q,
    const char **where)
{
	struct stat st;

	if (fstatat(spool->sentfd, id, &st, 0) == 0 &&
	    (st.st_mtim.tv_sec > q->st_mtim.tv_sec ||
	        (st.st_mtim.tv_sec == q->st_mtim.tv_sec &&
	            st.st_mtim.tv_nsec >= q->st_mtim.tv_nsec))) {
		*where = "sent";
		return true;
	}
	if (fstatat(spool->failedfd, id, &st, 0) == 0 &&
	    (st.st_mtim.tv_sec > q->st_mtim.tv_sec ||
	        (st.st_mtim.tv_sec == q->st_mtim.tv_sec &&
	            st.st_mtim.tv_nsec >= q->st_mtim.tv_nsec))) {
		*where = "failed";
		return true;
	}
	return false;
}

/*
 * spool_finish() puts the final state into sent/ or failed/ before it moves
 * the message there.  A crash in between leaves the message in outbox/ and
 * its final state beside where it was going: the move is completed here.
 * Returns true when it was (the message has left the queue).
 */
static bool
complete_finish(struct spool *spool, const char *id)
{
	static const char *const where[] = {"sent", "failed"};
	char name[STATE_NAME_MAX];
	int dirs[2] = {spool->sentfd, spool->failedfd};
	struct stat st;
	size_t i;

	state_name(id, name);
	for (i = 0; i < 2; i++) {
		if (fstatat(dirs[i], name, &st, 0) == -1 ||
		    fstatat(dirs[i], id, &st, 0) == 0)
			continue;
		log_warnx("%s: its final state is in %s/: completing the move "
		          "a crash interrupted",
		    id, where[i]);
		if (renameat(spool->outboxfd, id, dirs[i], id) == -1 ||
		    fsync(dirs[i]) == -1 ||
		    unlink_state(spool, spool->outboxfd, id) == -1)
			log_warn("%s: cannot move it to %s/", id, where[i]);
		return true;
	}
	return false;
}

/* The message file's envelope, replaced by its state file's if it has
 * one: the state as it stands, the body where the message file has it. */
static int
load_current(
    int dirfd, int fd, const char *id, bool stateless, struct envelope **envp)
{
	struct envelope *msg, *st = NULL;
	int got = 0;

	if (read_envelope(fd, id, &msg) == -1)
		return -1;
	if (!stateless && (got = read_state(dirfd, id, &st)) == -1) {
		envelope_free(msg);
		return -1;
	}
	if (got == 1) {
		if (st->size != msg->size) {
			envelope_free(st);
			envelope_free(msg);
			errno = EBADMSG;
			return -1;
		}
		st->body_offset = msg->body_offset;
		envelope_free(msg);
		msg = st;
	}
	*envp = msg;
	return 0;
}

int
spool_load(struct spool *spool, const char *id, struct envelope **envp)
{
	return spool_load_known(spool, id, 0, envp);
}

/* spool_load_known(), leaving the message file open in *fdp (when not
 * NULL) after a successful load. */
static int
load_known(struct spool *spool, const char *id, unsigned known,
    struct envelope **envp, int *fdp)
{
	bool unfinished = (known & SPOOL_KNOWN_UNFINISHED) != 0;
	struct stat st;
	const char *where;
	int fd, rc, saved;

	*envp = NULL;
	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	if (!unfinished && complete_finish(spool, id)) {
		errno = ENOENT;
		return -1;
	}
	if ((fd = open_to_read(spool->outboxfd, id)) == -1)
		return -1;
	if (fstat(fd, &st) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	if (!unfinished && finished_leftover(spool, id, &st, &where)) {
		close(fd);
		log_warnx("%s: already in %s/, removing the copy left in "
		          "outbox/ by an interrupted move",
		    id, where);
		if (spool_discard(spool, id) == -1 && errno != ENOENT)
			return -1;
		errno = ENOENT;
		return -1;
	}
	rc = load_current(
	    spool->outboxfd, fd, id, (known & SPOOL_KNOWN_NO_STATE) != 0, envp);
	if (rc == 0 && fdp != NULL) {
		*fdp = fd;
		return 0;
	}
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int
spool_load_known(
    struct spool *spool, const char *id, unsigned known, struct envelope **envp)
{
	return load_known(spool, id, known, envp, NULL);
}

int
spool_load_open(struct spool *spool, const char *id, unsigned known,
    struct envelope **envp, FILE **bodyp)
{
	int fd, saved;

	*bodyp = NULL;
	if (load_known(spool, id, known, envp, &fd) == -1)
		return -1;
	/* The body where this very file has it (load_current()). */
	if (lseek(fd, (*envp)->body_offset, SEEK_SET) == -1 ||
	    (*bodyp = fdopen(fd, "r")) == NULL) {
		saved = errno;
		close(fd);
		envelope_free(*envp);
		*envp = NULL;
		errno = saved;
		return -1;
	}
	return 0;
}

int
spool_folder_usage(
    struct spool *spool, enum spool_folder folder, struct spool_usage *u)
{
	char id[SPOOL_IDLEN + 1];
	struct dirent *de;
	struct stat st;
	time_t t;
	DIR *d;
	int saved;
	bool message;

	memset(u, 0, sizeof(*u));
	if ((d = open_scan(folder_fd(spool, folder))) == NULL)
		return -1;
	while ((errno = 0, de = readdir(d)) != NULL) {
		message = spool_is_id(de->d_name);
		if (!message && !is_state_name(de->d_name, id))
			continue;
		if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
		    0)
			u->bytes += (unsigned long long)st.st_size;
		if (!message)
			continue;
		u->messages++;
		t = spool_id_time(de->d_name);
		if (t > 0 && (u->oldest == 0 || t < u->oldest))
			u->oldest = t;
	}
	saved = errno;
	closedir(d);
	errno = saved;
	return saved != 0 ? -1 : 0;
}

int
spool_load_from(struct spool *spool, enum spool_folder folder, const char *id,
    struct envelope **envp)
{
	int fd, rc, saved;

	*envp = NULL;
	/* As it is: the repairs are the lock holder's (spool.h). */
	if (folder == SPOOL_IN_OUTBOX)
		return spool_load_known(
		    spool, id, SPOOL_KNOWN_UNFINISHED, envp);
	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	fd = open_to_read(folder_fd(spool, folder), id);
	if (fd == -1)
		return -1;
	rc = load_current(folder_fd(spool, folder), fd, id, false, envp);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

FILE *
spool_open_message(struct spool *spool, const struct envelope *env)
{
	return spool_open_message_from(spool, SPOOL_IN_OUTBOX, env);
}

void
spool_close_message(struct spool *spool, FILE *fp)
{
	if (spool->spares != NULL)
		spares_close_later(spool->spares, fp);
	else
		fclose(fp);
}

FILE *
spool_open_message_from(
    struct spool *spool, enum spool_folder folder, const struct envelope *env)
{
	struct envelope *cur = NULL;
	FILE *fp;
	int fd, saved;

	fd = open_to_read(folder_fd(spool, folder), env->id);
	if (fd == -1)
		return NULL;
	/* The body where the file on disk has it, whatever env says: a
	 * file swapped by hand since the load is read as it is. */
	if (read_envelope(fd, env->id, &cur) == -1)
		goto fail;
	if (lseek(fd, cur->body_offset, SEEK_SET) == -1)
		goto fail;
	envelope_free(cur);
	cur = NULL;
	if ((fp = fdopen(fd, "r")) == NULL)
		goto fail;
	return fp;
fail:
	saved = errno;
	envelope_free(cur);
	close(fd);
	errno = saved;
	return NULL;
}

/* ------------------------------------------------------ state changes */

int
spool_update(struct spool *spool, const struct envelope *env)
{
	/* The rename is visible at once; spool_sync() makes it durable. */
	return write_state(spool, env, spool->outboxfd, true);
}

int
spool_reschedule(struct spool *spool, const struct envelope *env)
{
	return write_state(spool, env, spool->outboxfd, false);
}

/*
 * SAVE_SENT_MAIL: the message and its final state go to sent/ as
 * failed/ messages go to failed/ (spool_finish()), but nothing is fsynced
 * here: sent/ is synced once per session, before outbox/
 * (spool_sync_finished()), and the state file's contents not at all.  A
 * crash of the process loses nothing (the kernel has every change); a
 * power loss can at worst lose the copy in sent/ of a message the
 * upstream already took or leave its state empty, or bring back one to
 * send again, as for any state change since the last spool_sync().  Two
 * fsyncs per message made the relay three times slower
 * (docs/performance.md).
 */
static int
keep_sent(struct spool *spool, const struct envelope *env)
{
	spool->sent_unsynced = true;
	if (write_state(spool, env, spool->sentfd, false) == -1 ||
	    renameat(spool->outboxfd, env->id, spool->sentfd, env->id) == -1)
		return -1;
	return unlink_state(spool, spool->outboxfd, env->id);
}

int
spool_finish(
    struct spool *spool, const struct envelope *env, enum spool_fate fate)
{
	if (!spool_is_id(env->id)) {
		errno = EINVAL;
		return -1;
	}
	if (fate == SPOOL_SENT && !spool->save_sent) {
		/* The message first: a state left without it is removed at
		 * start-up, a message left without its state would be sent
		 * again.  The next spool_sync() makes both durable. */
		if (remove_sent_file(spool, spool->outboxfd, env->id) == -1)
			return -1;
		return unlink_state(spool, spool->outboxfd, env->id);
	}
	if (fate == SPOOL_SENT)
		return keep_sent(spool, env);
	/* The final state first, then the message beside it, then the
	 * folder fsynced: a crash in between leaves the message in outbox/
	 * with its final state already in place, and spool_load() completes
	 * the move (complete_finish()); never a lost or resent message. */
	if (write_state(spool, env, spool->failedfd, true) == -1 ||
	    renameat(spool->outboxfd, env->id, spool->failedfd, env->id) ==
	        -1 ||
	    fsync(spool->failedfd) == -1)
		return -1;
	return unlink_state(spool, spool->outboxfd, env->id);
}

int
spool_quarantine(struct spool *spool, const char *id)
{
	char name[STATE_NAME_MAX];

	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	state_name(id, name);
	if (renameat(spool->outboxfd, id, spool->corruptfd, id) == -1)
		return -1;
	if (renameat(spool->outboxfd, name, spool->corruptfd, name) == -1 &&
	    errno != ENOENT)
		return -1;
	/* Destination first: if only outbox/ were synced, a crash could
	 * lose the file from both folders' view. */
	if (fsync(spool->corruptfd) == -1)
		return -1;
	return fsync(spool->outboxfd);
}

/* ---------------------------------------------------- operator actions */

/* fsync both folders of a move, the destination first (spool_quarantine()). */
static int
sync_move(int tofd, int fromfd)
{
	if (fsync(tofd) == -1)
		return -1;
	return fsync(fromfd);
}

/* Move ID and its state from one folder to another, in the order that
 * spool_cleanup_inbox() mends (see spool_hold()).  When the second rename
 * fails the first is undone, so that the message and its state stay
 * together. */
static int
move_message(const char *id, int fromfd, int tofd, bool state_first)
{
	char name[STATE_NAME_MAX];
	const char *first, *second;
	int saved;

	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	state_name(id, name);
	/* Only a message that is there has its state moved. */
	if (faccessat(fromfd, id, F_OK, AT_SYMLINK_NOFOLLOW) == -1)
		return -1;
	first = state_first ? name : id;
	second = state_first ? id : name;
	if (rename_new(fromfd, first, tofd) == -1 && errno != ENOENT)
		return -1;
	if (rename_new(fromfd, second, tofd) == -1 && errno != ENOENT) {
		saved = errno;
		(void)renameat(tofd, first, fromfd, first);
		errno = saved;
		return -1;
	}
	return sync_move(tofd, fromfd);
}

/*
 * A hold moves the state first, a release the message first: cut short,
 * either leaves the message in outbox/ without a state and its state in
 * hold/, which spool_cleanup_inbox() puts back beside it.
 */
int
spool_hold(struct spool *spool, const char *id)
{
	return move_message(id, spool->outboxfd, spool->holdfd, true);
}

int
spool_release(struct spool *spool, const char *id)
{
	return move_message(id, spool->holdfd, spool->outboxfd, false);
}

int
spool_delete(struct spool *spool, const char *id, enum spool_folder *where)
{
	static const enum spool_folder from[] = {
	    SPOOL_IN_OUTBOX, SPOOL_IN_HOLD, SPOOL_IN_FAILED};
	char name[STATE_NAME_MAX];
	size_t i;
	int fd;

	if (!spool_is_id(id)) {
		errno = EINVAL;
		return -1;
	}
	state_name(id, name);
	for (i = 0; i < sizeof(from) / sizeof(from[0]); i++) {
		fd = folder_fd(spool, from[i]);
		/* The message first: a state left alone is removed at
		 * start-up (outbox/, hold/) or never read (failed/). */
		if (unlinkat(fd, id, 0) == -1) {
			if (errno == ENOENT)
				continue;
			return -1;
		}
		*where = from[i];
		if (unlinkat(fd, name, 0) == -1 && errno != ENOENT)
			return -1;
		return fsync(fd);
	}
	errno = ENOENT;
	return -1;
}

/* Fresh attempts for a failed message; false if no recipient is left. */
static bool
renew(struct envelope *env, time_t now)
{
	size_t i, n = 0;

	for (i = 0; i < env->nrcpts; i++) {
		if (env->rcpts[i].state == RCPT_SENT)
			continue;
		env->rcpts[i].state = RCPT_PENDING;
		envelope_set_reply(&env->rcpts[i].reply, NULL);
		n++;
	}
	env->attempts = 0;
	env->next_attempt = now;
	/* A new lifetime: requeued because it expired, it must not expire
	 * again at its first look. */
	env->created = now;
	env->expires = 0;
	envelope_set_reply(&env->last_reply, NULL);
	return n > 0;
}

/*
 * The fresh state into outbox/ first (alone, it is removed at start-up),
 * then the message, then the old state out of failed/.  Cut short after
 * the message moved, the old state still in failed/ sends the message back
 * there at its next load (complete_finish()): the requeue did not happen,
 * nothing is lost.
 */
int
spool_requeue(struct spool *spool, const char *id, time_t now)
{
	char name[STATE_NAME_MAX];
	struct envelope *env;
	int rc = -1;

	if (spool_load_from(spool, SPOOL_IN_FAILED, id, &env) == -1)
		return -1;
	/* A copy of it queued already (by hand): its state is not ours to
	 * replace. */
	if (faccessat(spool->outboxfd, id, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		goto out;
	}
	if (!renew(env, now)) {
		errno = EINVAL;
		goto out;
	}
	state_name(id, name);
	if (write_state(spool, env, spool->outboxfd, true) == -1)
		goto out;
	if (rename_new(spool->failedfd, id, spool->outboxfd) == -1) {
		unlinkat(spool->outboxfd, name, 0);
		goto out;
	}
	if (unlinkat(spool->failedfd, name, 0) == -1 && errno != ENOENT)
		goto out;
	rc = sync_move(spool->outboxfd, spool->failedfd);
out:
	envelope_free(env);
	return rc;
}

int
spool_check_owner(const char *dir, uid_t uid, const char **what)
{
	static const char *const others[] = {".", "sender.lock"};
	struct dirent *de;
	struct stat sb;
	char path[PATH_MAX];
	size_t i;
	DIR *d;
	int n;

	*what = NULL;
	for (i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]) +
	                    sizeof(others) / sizeof(others[0]);
	     i++) {
		const char *part =
		    i < sizeof(subdirs) / sizeof(subdirs[0])
		        ? subdirs[i]
		        : others[i - sizeof(subdirs) / sizeof(subdirs[0])];

		n = snprintf(path, sizeof(path), "%s/%s", dir, part);
		if (n < 0 || (size_t)n >= sizeof(path)) {
			errno = ENAMETOOLONG;
			return -1;
		}
		if (stat(path, &sb) == 0 && sb.st_uid != uid) {
			*what =
			    strcmp(part, ".") == 0 ? "the folder itself" : part;
			return -1;
		}
	}
	snprintf(path, sizeof(path), "%s/outbox", dir);
	if ((d = opendir(path)) == NULL)
		return 0;
	while (*what == NULL && (de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' &&
		    fstatat(dirfd(d), de->d_name, &sb, AT_SYMLINK_NOFOLLOW) ==
		        0 &&
		    sb.st_uid != uid)
			*what = "a file in outbox";
	closedir(d);
	return *what == NULL ? 0 : -1;
}

#define STATUS_NAME "sender.status"
#define STATUS_TMP ".sender.status.new"
#define STATUS_MAX 65536

int
spool_put_status(struct spool *spool, const char *text)
{
	int fd, saved;

	/* Written aside beside it, not in inbox/, which holds only messages
	 * being written.  One name does: only the holder of the sender lock
	 * writes the status (sender.c). */
	if ((fd = openat(spool->dirfd, STATUS_TMP,
	         O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
	         0600)) == -1)
		return -1;
	if (write_all(fd, text, strlen(text)) == -1 ||
	    close_checked(&fd) == -1 ||
	    renameat(spool->dirfd, STATUS_TMP, spool->dirfd, STATUS_NAME) ==
	        -1) {
		saved = errno;
		if (fd != -1)
			close(fd);
		unlinkat(spool->dirfd, STATUS_TMP, 0);
		errno = saved;
		return -1;
	}
	return 0;
}

int
spool_get_status(struct spool *spool, char **textp)
{
	char *buf = xmalloc(STATUS_MAX + 1);
	ssize_t n;
	int fd, saved;

	if ((fd = openat(spool->dirfd, STATUS_NAME, O_RDONLY | O_CLOEXEC)) ==
	    -1) {
		free(buf);
		return -1;
	}
	do
		n = pread(fd, buf, STATUS_MAX, 0);
	while (n == -1 && errno == EINTR);
	saved = errno;
	close(fd);
	if (n == -1) {
		free(buf);
		errno = saved;
		return -1;
	}
	buf[n] = '\0';
	*textp = buf;
	return 0;
}

int
spool_lock_sender(struct spool *spool)
{
	int fd, rc = -1, saved;

	pthread_mutex_lock(&spool->lock);
	if (spool->lockfd != -1) {
		rc = 0;
		goto out;
	}
	fd = openat(
	    spool->dirfd, "sender.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd == -1)
		goto out;
	/* flock, not fcntl locks: those are per process and would be lost
	 * when any descriptor of the file is closed. */
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		goto out;
	}
	spool->lockfd = fd;
	rc = 0;
out:
	pthread_mutex_unlock(&spool->lock);
	return rc;
}
