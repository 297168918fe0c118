/*
 * commitq: see commitq.h.
 *
 * One writer thread and a FIFO of jobs behind one mutex.  Each round the
 * thread takes every queued job at once, commits them with intake_commit()
 * outside the lock, fsyncs outbox/ once, wakes the sender, and only then
 * reports to each job.  A job is told 0 only when its file is durable; when
 * the directory fsync fails, every file of the round is removed again and
 * every job gets the error, so a client told 4xx that retries does not cause
 * a second copy to be sent.
 *
 * It never logs about individual jobs (the front-end answers the client and
 * logs with the message ID) and never blocks submitters on the disk.
 */
#include "autoconf.h"

#include "commitq.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "envelope.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "sender.h"
#include "spool.h"
#include "xmalloc.h"

#define EX_OSERR 71 /* sysexits.h */

struct job {
	struct job *next;
	struct intake *in;
	bool flush; /* intake_flush(), not a commit */
	commitq_done_fn *done;
	void *arg;
	int error;
	double submitted; /* clock_mono(), for the commit latency */
};

struct commitq {
	struct spool *spool;
	struct sender *sender;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct job *head;   /* guarded by lock */
	struct job **tailp; /* guarded by lock */
	bool stopping;      /* guarded by lock */
};

/* Write, sync and report one round of jobs, in submission order. */
static void
commit_round(struct commitq *q, struct job *jobs)
{
	struct job *j, *next;
	const struct envelope *env;
	const char *id;
	bool any = false;
	int err;

	for (j = jobs; j != NULL; j = j->next) {
		if (j->flush) {
			intake_flush(j->in); /* its errors are the intake's */
			continue;
		}
		/* Before the rename, whose inotify event may wake the sender
		 * first; withdrawn below if the message is not queued after
		 * all (an error, a duplicate). */
		env = intake_envelope(j->in);
		sender_note_commit(q->sender, env->id, env->expires);
		if (intake_commit(j->in) == 0)
			any = true;
		else {
			j->error = errno != 0 ? errno : EIO;
			sender_withdraw_commit(q->sender, env->id);
		}
	}
	/* One directory fsync makes every rename of the round durable. */
	if (any && spool_sync(q->spool) == -1) {
		err = errno != 0 ? errno : EIO;
		log_warn("commit: fsync of outbox/ failed, refusing the "
		         "messages of this round");
		for (j = jobs; j != NULL; j = j->next) {
			if (j->error != 0 || j->flush)
				continue;
			/* Renamed but not durable: take it back, or the
			 * client's retry would queue a second copy. */
			id = intake_envelope(j->in)->id;
			if (spool_discard(q->spool, id) == -1 &&
			    errno != ENOENT)
				log_warn("%s: cannot remove from outbox/", id);
			else
				sender_withdraw_commit(q->sender, id);
			j->error = err;
		}
		any = false;
	}
	for (j = jobs; j != NULL; j = j->next) {
		if (j->flush)
			continue;
		if (j->error == 0)
			intake_committed(j->in);
		if (j->error == 0 && intake_duplicate_of(j->in) != NULL)
			sender_withdraw_commit(
			    q->sender, intake_envelope(j->in)->id);
		metrics_commit(j->error == 0, intake_envelope(j->in)->size,
		    clock_mono() - j->submitted);
	}
	/* Before the callbacks: once a client hears 250 the message should
	 * already be on its way. */
	if (any && q->sender != NULL)
		sender_wake(q->sender);
	for (j = jobs; j != NULL; j = next) {
		next = j->next;
		j->done(j->arg, j->error);
		free(j);
	}
}

static void *
writer_main(void *arg)
{
	struct commitq *q = arg;
	struct job *jobs;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (q->head == NULL && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		jobs = q->head;
		q->head = NULL;
		q->tailp = &q->head;
		pthread_mutex_unlock(&q->lock);
		/* Stop only once everything submitted has been served. */
		if (jobs == NULL)
			break;
		commit_round(q, jobs);
	}
	return NULL;
}

struct commitq *
commitq_new(struct spool *spool, struct sender *sender)
{
	struct commitq *q = xcalloc(1, sizeof(*q));
	sigset_t all, old;
	int rc;

	q->spool = spool;
	q->sender = sender;
	/* Files to reuse for the messages to come. */
	if (spool_keep_spares(spool) == -1)
		log_warn("commit: cannot start keeping spare files");
	q->head = NULL;
	q->tailp = &q->head;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	/* Signals belong to the front-end's main loop (libevent, or
	 * smfi_main()'s sigwait): the writer must never receive one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&q->thread, NULL, writer_main, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		fatal(EX_OSERR, "commit: cannot start the writer thread");
	}
	return q;
}

static void
enqueue(struct commitq *q, struct intake *in, bool flush, commitq_done_fn *done,
    void *arg)
{
	struct job *j = xcalloc(1, sizeof(*j));

	j->in = in;
	j->flush = flush;
	j->done = done;
	j->arg = arg;
	j->submitted = clock_mono();
	pthread_mutex_lock(&q->lock);
	if (q->stopping)
		arnie_panic("commitq_submit after commitq_free");
	*q->tailp = j;
	q->tailp = &j->next;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
}

void
commitq_submit(
    struct commitq *q, struct intake *in, commitq_done_fn *done, void *arg)
{
	enqueue(q, in, false, done, arg);
}

void
commitq_flush(
    struct commitq *q, struct intake *in, commitq_done_fn *done, void *arg)
{
	enqueue(q, in, true, done, arg);
}

/* commitq_commit()'s rendezvous with the writer thread. */
struct waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool done;
	int error;
};

static void
wake_waiter(void *arg, int error)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->lock);
	w->error = error;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

int
commitq_commit(struct commitq *q, struct intake *in)
{
	struct waiter w = {
	    PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0};

	commitq_submit(q, in, wake_waiter, &w);
	pthread_mutex_lock(&w.lock);
	while (!w.done)
		pthread_cond_wait(&w.cond, &w.lock);
	pthread_mutex_unlock(&w.lock);
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return w.error;
}

void
commitq_free(struct commitq *q)
{
	if (q == NULL)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q);
}
