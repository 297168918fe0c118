/*
 * hooks: see hooks.h.  A record, outcomes/ID, is text: one "KEY=value"
 * line per variable of the command's environment, values on one line.
 */
#include "autoconf.h"

#include "hooks.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "envelope.h"
#include "log.h"
#include "reply.h"
#include "spool.h"
#include "xmalloc.h"

/* A record whose command failed is tried this often in all, this far
 * apart. */
#define HOOK_ATTEMPTS 3
#define HOOK_RETRY_SECONDS 60
/* What a failed command wrote, kept for the log. */
#define HOOK_OUTPUT_MAX 512
#define HOOK_RECORD_MAX 65536
#define HOOK_ARGS_MAX 32

struct failure {
	spool_id id;
	int attempts;
	double next; /* clock_mono() */
};

/* An alert waiting for ALERT_COMMAND: its environment. */
struct alert_job {
	char *envp[5];
};

struct hooks {
	const struct config *cfg;
	struct spool *spool;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool kick, stop;                           /* guarded by lock */
	struct alert_job alerts[HOOKS_ALERTS_MAX]; /* guarded by lock */
	size_t nalerts;
	struct failure *failures;
	size_t nfailures;
};

/* ----------------------------------------------------------- records */

static int
write_all(int fd, const char *p, size_t len)
{
	ssize_t n;

	while (len > 0) {
		if ((n = write(fd, p, len)) == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* KEY=value, the value on one line. */
static void
put_var(FILE *out, const char *key, const char *value)
{
	fprintf(out, "%s=", key);
	for (; value != NULL && *value != '\0'; value++)
		fputc((unsigned char)*value < 0x20 ? ' ' : *value, out);
	fputc('\n', out);
}

static char *
record_text(const struct envelope *env, const char *outcome)
{
	char *text = NULL, qid[256] = "";
	size_t len = 0, i;
	FILE *out;

	if ((out = open_memstream(&text, &len)) == NULL)
		arnie_panic("hooks: out of memory");
	put_var(out, "ARNIE_ID", env->id);
	put_var(out, "ARNIE_MESSAGE_ID", env->message_id);
	put_var(out, "ARNIE_OUTCOME", outcome);
	fputs("ARNIE_RECIPIENTS=", out);
	for (i = 0; i < env->nrcpts; i++)
		fprintf(out, "%s%s", i > 0 ? "," : "", env->rcpts[i].addr);
	fputc('\n', out);
	put_var(out, "ARNIE_REPLY", env->last_reply);
	for (i = 0; i < env->nrcpts && qid[0] == '\0'; i++)
		if (env->rcpts[i].state == RCPT_SENT)
			(void)reply_queued_as(
			    env->rcpts[i].reply, qid, sizeof(qid));
	put_var(out, "ARNIE_QUEUED_AS", qid);
	if (fclose(out) != 0)
		arnie_panic("hooks: out of memory");
	return text;
}

/* KEY=value, the value on one line (owned). */
static char *
env_var(const char *key, const char *value)
{
	char *v = xasprintf("%s=%s", key, value != NULL ? value : ""), *p;

	for (p = v; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
	return v;
}

static void
alert_job_free(struct alert_job *j)
{
	size_t i;

	for (i = 0; j->envp[i] != NULL; i++)
		free(j->envp[i]);
}

void
hooks_alert(
    struct hooks *h, const char *alert, const char *kind, const char *text)
{
	struct alert_job j;

	if (h == NULL || h->cfg->alert_command == NULL)
		return;
	j.envp[0] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	j.envp[1] = env_var("ARNIE_ALERT", alert);
	j.envp[2] = env_var("ARNIE_ALERT_KIND", kind);
	j.envp[3] = env_var("ARNIE_ALERT_TEXT", text);
	j.envp[4] = NULL;
	log_info("alert %s (%s): %s", alert, kind, text);
	pthread_mutex_lock(&h->lock);
	if (h->nalerts == HOOKS_ALERTS_MAX) {
		log_warnx("ALERT_COMMAND is behind: the oldest alert waiting "
		          "is dropped");
		alert_job_free(&h->alerts[0]);
		memmove(&h->alerts[0], &h->alerts[1],
		    (HOOKS_ALERTS_MAX - 1) * sizeof(h->alerts[0]));
		h->nalerts--;
	}
	h->alerts[h->nalerts++] = j;
	h->kick = true;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

int
hooks_record(struct hooks *h, const struct envelope *env, const char *outcome)
{
	char tmp[SPOOL_IDLEN + 8];
	char *text;
	int fd, dirfd, saved;
	size_t len;

	if (h == NULL || h->cfg->outcome_command == NULL)
		return 0;
	dirfd = spool_dir_fd(h->spool, SPOOL_IN_OUTCOMES);
	text = record_text(env, outcome);
	len = strlen(text);
	snprintf(tmp, sizeof(tmp), ".%s.new", env->id);
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1 || write_all(fd, text, len) == -1 || close(fd) == -1 ||
	    renameat(dirfd, tmp, dirfd, env->id) == -1) {
		saved = errno;
		unlinkat(dirfd, tmp, 0);
		free(text);
		errno = saved;
		return -1;
	}
	free(text);
	pthread_mutex_lock(&h->lock);
	h->kick = true;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	return 0;
}

/* ----------------------------------------------------------- running */

/* Keep what the program writes, up to outlen - 1 octets (the rest is
 * read and dropped, so that it never blocks on a full pipe).  false at
 * the end of its output. */
static bool
drain_output(int fd, char *out, size_t outlen, size_t *used)
{
	char sink[4096];
	ssize_t n;
	size_t k;

	if ((n = read(fd, sink, sizeof(sink))) == 0)
		return false;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (*used + 1 < outlen) {
		k = (size_t)n < outlen - 1 - *used ? (size_t)n
		                                   : outlen - 1 - *used;
		memcpy(out + *used, sink, k);
		*used += k;
		out[*used] = '\0';
	}
	return true;
}

/*
 * Wait for the program (pidfd) to exit, reading its output meanwhile,
 * until the deadline or a stop.  true when it exited; its status is then
 * reaped into *status.  The end of its output is not its end: a program
 * may close it and go on, or leave a child holding it.
 */
static bool
await_exit(struct hooks *h, pid_t pid, int pidfd, int outfd, double deadline,
    char *out, size_t outlen, int *status)
{
	struct pollfd pfd[2] = {{pidfd, POLLIN, 0}, {outfd, POLLIN, 0}};
	size_t used = 0;
	nfds_t n = 2;
	double left;
	bool stop;

	out[0] = '\0';
	for (;;) {
		pthread_mutex_lock(&h->lock);
		stop = h->stop;
		pthread_mutex_unlock(&h->lock);
		if (stop || (left = deadline - clock_mono()) <= 0)
			return false;
		/* A stop is looked at every second at least. */
		if (poll(pfd, n, left > 1 ? 1000 : (int)(left * 1000) + 1) ==
		    -1) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (n == 2 && (pfd[1].revents & (POLLIN | POLLHUP)) &&
		    !drain_output(outfd, out, outlen, &used))
			n = 1; /* its output ended; its exit is awaited */
		if (pfd[0].revents & POLLIN) {
			while (waitpid(pid, status, 0) == -1 && errno == EINTR)
				continue;
			return true;
		}
	}
}

/* Spawn argv with envp in a process group of its own, its signals as a
 * fresh program expects them, output to outfd; 0 or an errno. */
static int
spawn(char *const argv[], char *const envp[], int outfd, pid_t *pid)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, all;
	int err;

	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, outfd, 1);
	posix_spawn_file_actions_adddup2(&fa, outfd, 2);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setpgroup(&attr, 0);
	/* The daemon's threads block every signal and ignore SIGPIPE. */
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP |
	                                    POSIX_SPAWN_SETSIGMASK |
	                                    POSIX_SPAWN_SETSIGDEF);
	err = posix_spawn(pid, argv[0], &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	return err;
}

/*
 * Run the command with envp; its exit status, or -1 (with why) when it
 * could not start, overran the timeout, or the hooks are stopping: it is
 * then killed with its process group.
 */
static int
run(struct hooks *h, const char *command, char *const envp[], long timeout,
    char *why, size_t whylen)
{
	char *copy = xstrdup(command), *argv[HOOK_ARGS_MAX + 1], *save = NULL;
	int pipefd[2], pidfd, status = 0, n = 0, err;
	bool exited;
	pid_t pid;

	for (argv[n] = strtok_r(copy, " \t", &save);
	     argv[n] != NULL && n < HOOK_ARGS_MAX;
	     argv[++n] = strtok_r(NULL, " \t", &save))
		continue;
	argv[n] = NULL;
	why[0] = '\0';
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) == -1) {
		snprintf(why, whylen, "pipe: %s", strerror(errno));
		free(copy);
		return -1;
	}
	err = spawn(argv, envp, pipefd[1], &pid);
	close(pipefd[1]);
	free(copy);
	if (err != 0) {
		close(pipefd[0]);
		snprintf(why, whylen, "cannot run it: %s", strerror(err));
		return -1;
	}
	if ((pidfd = pidfd_open(pid, 0)) == -1) {
		/* Without one (Linux < 5.3) the timeout still holds: the
		 * program is killed and reaped below. */
		exited = false;
		snprintf(why, whylen, "pidfd_open: %s", strerror(errno));
	} else {
		exited = await_exit(h, pid, pidfd, pipefd[0],
		    clock_mono() + (double)timeout, why, whylen, &status);
		close(pidfd);
	}
	close(pipefd[0]);
	if (exited)
		return WIFEXITED(status) ? WEXITSTATUS(status)
		                         : 128 + WTERMSIG(status);
	kill(-pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1 && errno == EINTR)
		continue;
	pthread_mutex_lock(&h->lock);
	exited = h->stop;
	pthread_mutex_unlock(&h->lock);
	snprintf(why, whylen,
	    exited ? "killed: the daemon is stopping" : "killed after %lds",
	    timeout);
	return -1;
}

/* The record's lines as an environment, PATH first (owned). */
static char **
record_env(char *text)
{
	char **envp = xcalloc(16, sizeof(*envp)), *line, *save = NULL;
	size_t n = 0;

	envp[n++] = xstrdup("PATH=/usr/local/bin:/usr/bin:/bin");
	for (line = strtok_r(text, "\n", &save); line != NULL && n < 15;
	     line = strtok_r(NULL, "\n", &save))
		if (strncmp(line, "ARNIE_", 6) == 0 &&
		    strchr(line, '=') != NULL)
			envp[n++] = xstrdup(line);
	return envp;
}

static struct failure *
failure_of(struct hooks *h, const char *id)
{
	size_t i;

	for (i = 0; i < h->nfailures; i++)
		if (strcmp(h->failures[i].id, id) == 0)
			return &h->failures[i];
	return NULL;
}

/* Forget a record's failures (it is done with). */
static void
forget(struct hooks *h, const char *id)
{
	struct failure *f = failure_of(h, id);

	if (f != NULL)
		*f = h->failures[--h->nfailures];
}

/* Run the command for outcomes/ID; true when the record is done with. */
static bool
run_record(struct hooks *h, const char *id)
{
	int dirfd = spool_dir_fd(h->spool, SPOOL_IN_OUTCOMES), fd, rc;
	char *text = xmalloc(HOOK_RECORD_MAX + 1), why[HOOK_OUTPUT_MAX];
	struct failure *f;
	char **envp, *nl;
	ssize_t n;
	size_t i;

	if ((fd = openat(dirfd, id, O_RDONLY | O_CLOEXEC)) == -1 ||
	    (n = read(fd, text, HOOK_RECORD_MAX)) < 0) {
		if (fd == -1 && errno == ENOENT) {
			free(text);
			return true; /* gone: nothing to run */
		}
		log_warn("%s: cannot read its outcome record", id);
		if (fd != -1)
			close(fd);
		free(text);
		return false; /* tried again later */
	}
	close(fd);
	text[n] = '\0';
	/* Cut short by a power loss (records are not fsynced): nothing to
	 * tell that would be true. */
	if (strncmp(text, "ARNIE_ID=", 9) != 0 || text[n - 1] != '\n') {
		log_warnx("%s: its outcome record is incomplete, dropped", id);
		free(text);
		return true;
	}
	envp = record_env(text);
	rc = run(h, h->cfg->outcome_command, envp, h->cfg->outcome_timeout, why,
	    sizeof(why));
	for (i = 0; envp[i] != NULL; i++)
		free(envp[i]);
	free(envp);
	free(text);
	if (rc == 0)
		return true;
	if ((nl = strchr(why, '\n')) != NULL)
		*nl = '\0';
	if ((f = failure_of(h, id)) == NULL) {
		h->failures = xreallocarray(
		    h->failures, h->nfailures + 1, sizeof(*h->failures));
		f = &h->failures[h->nfailures++];
		snprintf(f->id, sizeof(f->id), "%s", id);
		f->attempts = 0;
	}
	f->attempts++;
	f->next = clock_mono() + HOOK_RETRY_SECONDS;
	if (rc > 0)
		log_warnx("%s: OUTCOME_COMMAND exited %d%s%s", id, rc,
		    why[0] != '\0' ? ": " : "", why);
	else
		log_warnx("%s: OUTCOME_COMMAND %s", id, why);
	if (f->attempts < HOOK_ATTEMPTS)
		return false;
	log_warnx("%s: OUTCOME_COMMAND failed %d times, giving up on this "
	          "outcome",
	    id, f->attempts);
	return true;
}

/* Every alert waiting, in order, once each. */
static void
run_alerts(struct hooks *h)
{
	char why[HOOK_OUTPUT_MAX], *nl;
	struct alert_job j;
	int rc;

	for (;;) {
		pthread_mutex_lock(&h->lock);
		if (h->nalerts == 0 || h->stop) {
			pthread_mutex_unlock(&h->lock);
			return;
		}
		j = h->alerts[0];
		memmove(&h->alerts[0], &h->alerts[1],
		    --h->nalerts * sizeof(h->alerts[0]));
		pthread_mutex_unlock(&h->lock);
		rc = run(h, h->cfg->alert_command, j.envp,
		    h->cfg->alert_timeout, why, sizeof(why));
		if ((nl = strchr(why, '\n')) != NULL)
			*nl = '\0';
		if (rc > 0)
			log_warnx("ALERT_COMMAND (%s) exited %d%s%s",
			    j.envp[1] + 12, rc, why[0] != '\0' ? ": " : "",
			    why);
		else if (rc < 0)
			log_warnx("ALERT_COMMAND (%s) %s", j.envp[1] + 12, why);
		alert_job_free(&j);
	}
}

/* One pass over outcomes/; returns when to look again (clock_mono()),
 * or 0 when only a new record can bring work. */
static double
run_all(struct hooks *h)
{
	int dirfd = spool_dir_fd(h->spool, SPOOL_IN_OUTCOMES);
	double next = 0, now;
	struct failure *f;
	spool_id *ids;
	size_t n, i;

	if (spool_list(h->spool, SPOOL_IN_OUTCOMES, &ids, &n) == -1) {
		log_warn("cannot read %s/outcomes", spool_path(h->spool));
		return clock_mono() + HOOK_RETRY_SECONDS;
	}
	for (i = 0; i < n; i++) {
		pthread_mutex_lock(&h->lock);
		if (h->stop) {
			pthread_mutex_unlock(&h->lock);
			break;
		}
		pthread_mutex_unlock(&h->lock);
		now = clock_mono();
		if ((f = failure_of(h, ids[i])) != NULL && f->next > now) {
			if (next == 0 || f->next < next)
				next = f->next;
			continue;
		}
		if (run_record(h, ids[i])) {
			unlinkat(dirfd, ids[i], 0);
			forget(h, ids[i]);
		} else if ((f = failure_of(h, ids[i])) != NULL &&
		           (next == 0 || f->next < next))
			next = f->next;
	}
	free(ids);
	return next;
}

static void *
worker(void *arg)
{
	struct hooks *h = arg;
	struct timespec ts;
	double next = 0, wait;

	pthread_mutex_lock(&h->lock);
	while (!h->stop) {
		h->kick = false;
		pthread_mutex_unlock(&h->lock);
		run_alerts(h);
		next = h->cfg->outcome_command != NULL ? run_all(h) : 0;
		pthread_mutex_lock(&h->lock);
		while (!h->stop && !h->kick) {
			if (next == 0) {
				pthread_cond_wait(&h->cond, &h->lock);
				continue;
			}
			if ((wait = next - clock_mono()) <= 0)
				break;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += (time_t)wait + 1;
			if (pthread_cond_timedwait(&h->cond, &h->lock, &ts) ==
			    ETIMEDOUT)
				break;
		}
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

struct hooks *
hooks_new(const struct config *cfg, struct spool *spool)
{
	struct hooks *h;
	sigset_t all, old;
	int rc;

	if (cfg->outcome_command == NULL && cfg->alert_command == NULL)
		return NULL;
	h = xcalloc(1, sizeof(*h));
	h->cfg = cfg;
	h->spool = spool;
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	/* Signals belong to the daemon's main loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&h->thread, NULL, worker, h);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		/* The sender never exits the process: without the thread,
		 * no command runs (outcomes are not recorded either). */
		errno = rc;
		log_warn("cannot start the thread of OUTCOME_COMMAND and "
		         "ALERT_COMMAND; they will not run");
		pthread_mutex_destroy(&h->lock);
		pthread_cond_destroy(&h->cond);
		free(h);
		return NULL;
	}
	return h;
}

void
hooks_free(struct hooks *h)
{
	if (h == NULL)
		return;
	pthread_mutex_lock(&h->lock);
	h->stop = true;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	/* A command running ends by its timeout at the latest. */
	pthread_join(h->thread, NULL);
	while (h->nalerts > 0)
		alert_job_free(&h->alerts[--h->nalerts]);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h->failures);
	free(h);
}
