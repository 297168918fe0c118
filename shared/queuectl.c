/*
 * queuectl: see queuectl.h.  The files in control/:
 *
 *   REQ.new     a request being written by a tool
 *   REQ         a request, complete (renamed from REQ.new)
 *   REQ.answer  the lock holder's answer being written
 *   REQ.reply   the answer, complete (renamed from REQ.answer)
 *
 * The lock holder unlinks REQ before it acts: a tool whose unlink of REQ
 * succeeds has withdrawn it, one that finds it gone knows it was taken.
 */
#include "autoconf.h"

#include "queuectl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "envelope.h"
#include "log.h"
#include "spool.h"
#include "xmalloc.h"

/* Files tools left in control/ (a request never taken back, an answer
 * never read) go after this long. */
#define QUEUECTL_STALE_SECONDS 3600

/* ------------------------------------------------------------- answers */

struct answer {
	char *text;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3)))
say(struct answer *a, const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(a->text + a->len, a->cap - a->len, fmt, ap);
		va_end(ap);
		if (n >= 0 && (size_t)n < a->cap - a->len)
			break;
		a->cap = 2 * a->cap + (n > 0 ? (size_t)n : 0) + 64;
		a->text = xreallocarray(a->text, a->cap, 1);
	}
	a->len += (size_t)n;
}

/* ------------------------------------------------------------- actions */

struct ctx {
	struct spool *spool;
	const struct queuectl_hooks *hooks;
	time_t now;
	struct answer *answer;
	bool summary; /* a "*" request: count what went well */
	size_t done;
};

/* "ok", "missing" or "error" for the result of a spool action; in a
 * summary, only what did not go well gets a line. */
static void
say_result(struct ctx *c, const char *id, int rc, const char *done,
    const char *missing)
{
	if (rc == 0) {
		if (c->summary)
			c->done++;
		else
			say(c->answer, "ok %s: %s\n", id, done);
	} else if (errno == ENOENT)
		say(c->answer, "missing %s: %s\n", id, missing);
	else
		say(c->answer, "error %s: %s\n", id, strerror(errno));
}

static void
hook_queued(struct ctx *c, const char *id)
{
	if (c->hooks != NULL && c->hooks->queued != NULL)
		c->hooks->queued(c->hooks->arg, id);
}

static void
hook_removed(struct ctx *c, const char *id)
{
	if (c->hooks != NULL && c->hooks->removed != NULL)
		c->hooks->removed(c->hooks->arg, id);
}

/* Due now: its next attempt, on disk, no later than now. */
static int
make_due(struct ctx *c, const char *id, bool *changed)
{
	struct envelope *env;
	int rc = 0;

	*changed = false;
	if (spool_load(c->spool, id, &env) == -1)
		return -1;
	if (env->next_attempt > c->now) {
		env->next_attempt = c->now;
		rc = spool_reschedule(c->spool, env);
		*changed = rc == 0;
	}
	envelope_free(env);
	if (rc == 0)
		hook_queued(c, id);
	return rc;
}

static void
do_retry(struct ctx *c, const char *id)
{
	bool changed;
	int rc = make_due(c, id, &changed);

	if (rc == 0)
		log_info("%s: due now (arnie-queue retry)", id);
	say_result(c, id, rc, "due now",
	    "not in the queue (held: release it; failed: requeue it)");
}

static void
do_hold(struct ctx *c, const char *id)
{
	int rc = spool_hold(c->spool, id);

	if (rc == 0) {
		hook_removed(c, id);
		log_info("%s: held (arnie-queue)", id);
	}
	say_result(c, id, rc, "held", "not in the queue");
}

static void
do_release(struct ctx *c, const char *id)
{
	bool changed;
	int rc = spool_release(c->spool, id);

	/* Released to be sent now, as Postfix's postsuper -H does. */
	if (rc == 0 && make_due(c, id, &changed) == -1)
		log_warn("%s: released, but cannot make it due now", id);
	if (rc == 0)
		log_info("%s: released (arnie-queue)", id);
	say_result(c, id, rc, "released", "not on hold");
}

static void
do_delete(struct ctx *c, const char *id)
{
	enum spool_folder where = SPOOL_IN_OUTBOX;
	char done[64];
	int rc = spool_delete(c->spool, id, &where);

	if (rc == 0) {
		if (where == SPOOL_IN_OUTBOX)
			hook_removed(c, id);
		log_info("%s: deleted from %s/ (arnie-queue)", id,
		    spool_folder_name(where));
	}
	snprintf(
	    done, sizeof(done), "deleted from %s/", spool_folder_name(where));
	say_result(c, id, rc, done, "not in outbox/, hold/ or failed/");
}

static void
do_requeue(struct ctx *c, const char *id)
{
	int rc = spool_requeue(c->spool, id, c->now);

	if (rc == 0) {
		hook_queued(c, id);
		log_info("%s: requeued from failed/ (arnie-queue)", id);
	} else if (errno == EINVAL || errno == EEXIST) {
		say(c->answer, "refused %s: %s\n", id,
		    errno == EINVAL ? "no recipient left to try"
		                    : "a copy of it is queued already");
		return;
	}
	say_result(c, id, rc, "requeued", "not in failed/");
}

typedef void action_fn(struct ctx *c, const char *id);

/* Every message of a folder, oldest first, answered as one line (a
 * queue may hold more than an answer should). */
static void
each(struct ctx *c, enum spool_folder folder, action_fn *fn, const char *done)
{
	spool_id *ids;
	size_t n, i;

	if (spool_list(c->spool, folder, &ids, &n) == -1) {
		say(c->answer, "error %s/: %s\n", spool_folder_name(folder),
		    strerror(errno));
		return;
	}
	c->summary = true;
	c->done = 0;
	for (i = 0; i < n; i++)
		fn(c, ids[i]);
	c->summary = false;
	free(ids);
	say(c->answer, "ok %zu message%s %s\n", c->done,
	    c->done == 1 ? "" : "s", done);
}

static void
flush_one(struct ctx *c, const char *id)
{
	bool changed;

	/* Gone meanwhile is not worth a word. */
	if (make_due(c, id, &changed) == -1 && errno != ENOENT)
		say(c->answer, "error %s: %s\n", id, strerror(errno));
}

static void
do_flush(struct ctx *c)
{
	spool_id *ids = NULL;
	size_t n = 0, i;

	if (spool_list(c->spool, SPOOL_IN_OUTBOX, &ids, &n) == -1)
		say(c->answer, "error outbox/: %s\n", strerror(errno));
	for (i = 0; i < n; i++)
		flush_one(c, ids[i]);
	free(ids);
	if (c->hooks != NULL && c->hooks->flushed != NULL)
		c->hooks->flushed(c->hooks->arg);
	log_info("queue flushed (arnie-queue): %zu message%s due now", n,
	    n == 1 ? "" : "s");
	say(c->answer, "ok queue flushed: %zu message%s due now\n", n,
	    n == 1 ? "" : "s");
}

static const struct verb {
	const char *name;
	action_fn *fn;
	int all;          /* the folder "*" means, or -1 when it is refused */
	const char *done; /* for the answer to "*" */
} verbs[] = {
    {"retry", do_retry, -1, NULL},
    {"hold", do_hold, SPOOL_IN_OUTBOX, "held"},
    {"release", do_release, SPOOL_IN_HOLD, "released"},
    {"delete", do_delete, -1, NULL},
    {"requeue", do_requeue, SPOOL_IN_FAILED, "requeued"},
};

/* One request line, NUL-terminated. */
static void
apply_line(struct ctx *c, char *line)
{
	char *verb = line, *arg;
	size_t i;

	if ((arg = strchr(line, ' ')) != NULL)
		*arg++ = '\0';
	if (strcmp(verb, "flush") == 0 && arg == NULL) {
		do_flush(c);
		return;
	}
	for (i = 0; arg != NULL && i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(verb, verbs[i].name) != 0)
			continue;
		if (strcmp(arg, "*") == 0 && verbs[i].all != -1)
			each(c, (enum spool_folder)verbs[i].all, verbs[i].fn,
			    verbs[i].done);
		else if (spool_is_id(arg))
			verbs[i].fn(c, arg);
		else
			break;
		return;
	}
	say(c->answer, "refused not a request: %.80s%s%.80s\n", verb,
	    arg != NULL ? " " : "", arg != NULL ? arg : "");
}

char *
queuectl_apply(struct spool *spool, const char *request,
    const struct queuectl_hooks *hooks, time_t now)
{
	struct answer a = {xmalloc(256), 0, 256};
	struct ctx c = {spool, hooks, now, &a, false, 0};
	char *copy = xstrdup(request), *line, *save = NULL;

	a.text[0] = '\0';
	for (line = strtok_r(copy, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save))
		if (*line != '\0')
			apply_line(&c, line);
	free(copy);
	/* Make the state changes durable before the answer says "ok". */
	if (spool_sync(spool) == -1)
		log_warn("cannot fsync %s", spool_outbox_path(spool));
	return a.text;
}

/* -------------------------------------------------------------- files */

/* Write name.tmp_suffix, then rename it to name: readers see all of it or
 * nothing. */
static int
put_file(int dirfd, const char *name, const char *tmp_suffix, const char *text)
{
	char tmp[NAME_MAX + 1];
	size_t len = strlen(text), off = 0;
	ssize_t n;
	int fd, saved;

	snprintf(tmp, sizeof(tmp), "%s%s", name, tmp_suffix);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		return -1;
	while (off < len) {
		if ((n = write(fd, text + off, len - off)) == -1) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	if (renameat(dirfd, tmp, dirfd, name) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	unlinkat(dirfd, tmp, 0);
	errno = saved;
	return -1;
}

/* The contents of dirfd/name (owned, NUL-terminated), at most max
 * octets; -1 with errno (EFBIG when larger). */
static int
get_file(int dirfd, const char *name, size_t max, char **textp)
{
	char *buf = xmalloc(max + 2);
	size_t len = 0;
	ssize_t n;
	int fd, saved;

	if ((fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC)) == -1) {
		free(buf);
		return -1;
	}
	while (len <= max) {
		n = read(fd, buf + len, max + 1 - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	saved = n == -1 ? errno : len > max ? EFBIG : 0;
	close(fd);
	if (saved != 0) {
		free(buf);
		errno = saved;
		return -1;
	}
	buf[len] = '\0';
	*textp = buf;
	return 0;
}

/* ------------------------------------------------------- the lock holder */

/* Take and answer one request (control/name). */
static void
serve_one(struct spool *spool, const char *name,
    const struct queuectl_hooks *hooks, time_t now)
{
	int fd = spool_dir_fd(spool, SPOOL_IN_CONTROL);
	char reply[NAME_MAX + 1], *request = NULL, *answer;

	if (get_file(fd, name, QUEUECTL_MAX_REQUEST, &request) == -1) {
		if (errno == ENOENT)
			return; /* withdrawn */
		answer = xasprintf("error request: %s\n", strerror(errno));
	} else if (unlinkat(fd, name, 0) == -1) {
		free(request);
		return; /* withdrawn meanwhile */
	} else
		answer = queuectl_apply(spool, request, hooks, now);
	unlinkat(fd, name, 0);
	snprintf(reply, sizeof(reply), "%s.reply", name);
	if (put_file(fd, reply, ".answer", answer) == -1)
		log_warn("cannot answer arnie-queue's request %s", name);
	free(answer);
	free(request);
}

/* Remove what tools left in control/ long ago: requests never taken back
 * after a crash, answers never read. */
static void
remove_stale(struct spool *spool, time_t now)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int fd;

	if ((fd = openat(spool_dir_fd(spool, SPOOL_IN_CONTROL), ".",
	         O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return;
	}
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.' &&
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
		        0 &&
		    S_ISREG(st.st_mode) &&
		    st.st_mtime < now - QUEUECTL_STALE_SECONDS)
			unlinkat(dirfd(d), de->d_name, 0);
	closedir(d);
}

int
queuectl_serve(
    struct spool *spool, const struct queuectl_hooks *hooks, time_t now)
{
	spool_id *ids;
	size_t n, i;

	remove_stale(spool, now);
	if (spool_list(spool, SPOOL_IN_CONTROL, &ids, &n) == -1)
		return -1;
	for (i = 0; i < n; i++)
		serve_one(spool, ids[i], hooks, now);
	free(ids);
	return (int)n;
}

/* ---------------------------------------------------------------- tools */

struct queuectl_request {
	struct spool *spool;
	char id[SPOOL_IDLEN + 1];
	char reply[SPOOL_IDLEN + sizeof(".reply")];
	int inotifyfd;
};

struct queuectl_request *
queuectl_submit(struct spool *spool, const char *request)
{
	struct queuectl_request *req = xcalloc(1, sizeof(*req));
	char path[PATH_MAX];
	int saved;

	req->spool = spool;
	spool_new_id(spool, req->id);
	snprintf(req->reply, sizeof(req->reply), "%s.reply", req->id);
	snprintf(path, sizeof(path), "%s/control", spool_path(spool));
	/* Watch first: an answer renamed in before would be missed. */
	req->inotifyfd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (req->inotifyfd == -1 ||
	    inotify_add_watch(req->inotifyfd, path, IN_MOVED_TO | IN_ONLYDIR) ==
	        -1 ||
	    put_file(spool_dir_fd(spool, SPOOL_IN_CONTROL), req->id, ".new", request) == -1) {
		saved = errno;
		queuectl_request_free(req);
		errno = saved;
		return NULL;
	}
	return req;
}

int
queuectl_await(struct queuectl_request *req, int timeout_ms, char **reply)
{
	char buf[4096]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	double end = clock_mono() + timeout_ms / 1000.0, left;
	struct pollfd pfd = {req->inotifyfd, POLLIN, 0};
	int fd = spool_dir_fd(req->spool, SPOOL_IN_CONTROL);

	for (;;) {
		if (get_file(fd, req->reply, QUEUECTL_MAX_REQUEST * 4, reply) ==
		    0)
			return 0;
		if (errno != ENOENT)
			return -1;
		if ((left = end - clock_mono()) <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (poll(&pfd, 1, (int)(left * 1000) + 1) == -1 &&
		    errno != EINTR)
			return -1;
		/* Which file came does not matter: look again. */
		while (read(req->inotifyfd, buf, sizeof(buf)) > 0)
			continue;
	}
}

int
queuectl_withdraw(struct queuectl_request *req)
{
	return unlinkat(spool_dir_fd(req->spool, SPOOL_IN_CONTROL), req->id, 0);
}

void
queuectl_request_free(struct queuectl_request *req)
{
	if (req == NULL)
		return;
	unlinkat(spool_dir_fd(req->spool, SPOOL_IN_CONTROL), req->reply, 0);
	if (req->inotifyfd != -1)
		close(req->inotifyfd);
	free(req);
}
