/*
 * sender: see sender.h.  One thread owns the scheduler, the relay and the
 * report; other threads only touch the wake-up eventfd (sender_wake) and the
 * stop flag.
 *
 * The loop: take the spool's sender lock (retrying every 2 s while another
 * process holds it); once held, clean inbox/, start watching outbox/ with
 * inotify and only then scan it, so a message committed during the scan is
 * seen by one or the other (the scheduler drops duplicates).  Then: send one
 * batch of due messages if the pause, the rate limit and the heap allow it,
 * queue a report if one is due, and poll() the wake fd and the inotify fd
 * until the next thing to do.  A wake-up only makes the thread read inotify
 * at once: the commit's rename already queued the event.
 *
 * The on-disk file is the truth: the heap starts every message as due now
 * (unread), except one whose state file is dated later (a deferral:
 * spool_scan_known()), which waits unread until that date; the envelope's
 * next-attempt time, read when it is popped, puts it back in its place.
 * Each message's results are applied as soon as they arrive
 * (relay_send() calls record_results(), and the relay ends the next
 * message only once it has returned), so a crash in the middle of a batch
 * sends again at most the message in flight; the messages not reached are
 * untouched and simply sent again.
 * The one exception: when the disk refuses to record results (ENOSPC), the
 * envelope is stashed in memory and written again before its message is looked
 * at, so recipients the upstream accepted are not sent again every few
 * seconds while the disk is full.
 *
 * Stopping: libesmtp blocks in its socket calls, bounded by the relay's
 * timeouts.  sender_stop() waits up to SENDER_STOP_WAIT seconds; if a
 * transfer is still running then, it kills the session (relay_abort()) and
 * waits up to SENDER_ABORT_WAIT more, so that the results the session had
 * already reported (messages the upstream accepted) are applied.  Only if
 * the thread is still busy then is it abandoned: from then on it records
 * nothing more and exits when relay_send() returns, so the rest of the
 * batch stays in outbox/ untouched and is sent again at the next start (a
 * message the upstream already accepted may be delivered twice, never
 * lost).  The sender's memory is then left to the exiting process.
 *
 * It never exits the process and never logs a password.
 */
#include "autoconf.h"

#include "config.h"

#include "sender.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "alert.h"
#include "clock.h"
#include "dedup.h"
#include "hooks.h"
#include "log.h"
#include "metrics.h"
#include "queuectl.h"
#include "relay.h"
#include "reply.h"
#include "report.h"
#include "sched.h"
#include "spool.h"
#include "stats.h"
#include "timefmt.h"
#include "xmalloc.h"

/* The schedule holds spool IDs. */
_Static_assert(SPOOL_IDLEN <= SCHED_IDMAX, "a spool ID fits the schedule");

/* Retry a lock held by another process this often. */
#define SENDER_LOCK_RETRY_MS 2000
/* After a disk error on a message, try it again this much later. */
#define SENDER_DISK_RETRY 5
/* sender_stop() waits this long for a transfer to end, then this long
 * after killing it. */
#define SENDER_STOP_WAIT 3
#define SENDER_ABORT_WAIT 2
/* In the noted set: a commit withdrawn (sender_withdraw_commit()). */
#define NOTE_WITHDRAWN ((time_t)-1)
/* The heap's due time for a message whose envelope this process has not
 * read: found by a scan or inotify, or named by arnie-queue (and one the
 * start-up scan left unread until its date, once the date has come:
 * look_unread()).  Such messages sort before everything else and among
 * themselves by ID; those read sort by their next attempt (due_time()),
 * so the queue stays FIFO through pauses. */
#define DUE_NOW ((time_t)0)
/* In the deadlines heap, the tag of a message's date standing in for its
 * deadline until it is read (found_at_start()). */
#define UNREAD_UNTIL 0x1
/* Wake up at least this often even with nothing due, so that a wall clock
 * stepped backwards cannot leave the queue asleep for long. */
#define SENDER_MAX_SLEEP_MS (600 * 1000)
/* Seconds between two prunings of sent/ (SENT_RETENTION_DAYS), and the
 * most messages one pruning removes (it holds the sender's lock: more go
 * at the next turn of the loop). */
#define PRUNE_INTERVAL 3600
#define PRUNE_SLICE 1000
/* The oldest queued message is looked up this often (at most) for
 * ALERT_COMMAND's queue_age (an O(n) walk of the schedule). */
#define ALERT_AGE_INTERVAL 60
/* While the queue is paused, envelopes read per turn of the loop to learn
 * their deadlines. */
#define LEARN_SLICE 1000
/* sender.status (stats.h) is rewritten at most this often. */
#define STATUS_INTERVAL 1.0

/* An envelope whose results the disk refused; newer than its file. */
struct stashed {
	struct stashed *next;
	struct envelope *env;
};

struct sender {
	const struct config *cfg;
	struct spool *spool;
	struct relay *relay;
	/* FALLBACK_EMAIL_HOST: used while the primary has been paused for
	 * FALLBACK_AFTER_SECONDS, with a pause of its own; NULL: none.
	 * cur is the one the session in progress goes through. */
	struct relay *fallback;
	struct sched_pause fb_pause;
	struct relay *cur;
	bool via_fallback;
	struct report *report;
	struct sched *sched;
	struct sched_rate rate;
	struct sched_pause pause;
	char pause_reason[RELAY_REPLY_MAX]; /* last logged, "" when running */
	int wakefd;
	int inotifyfd;    /* -1 until the lock is held, or if refused */
	int control_wd;   /* inotify's watch of control/, or -1 */
	bool control_due; /* arnie-queue's requests may be waiting */
	bool locked;      /* we hold the spool's sender lock */
	bool told_locked; /* said that another process relays */
	bool told_lock_error;
	size_t max_batch;
	struct stashed *stashed; /* few: only messages hit by disk errors */
	bool unsynced;           /* outbox/ changed since its last fsync */
	time_t next_prune; /* of sent/ (SENT_RETENTION_DAYS), 0: at once */
	time_t next_dedup_prune; /* of dedup/ (DEDUP_WINDOW_SECONDS) */
	/* Deadlines (envelope.h's expires), so that a message leaves the
	 * queue on time even while the queue is paused: those learnt from
	 * loads, and the dates of those the start-up scan left unread
	 * (UNREAD_UNTIL).  The other messages not loaded yet are those
	 * sched holds as DUE_NOW. */
	struct sched *deadlines;
	/* This process's commits and their deadlines (sender_note_commit()),
	 * from other threads: guarded by noted_lock.  The sender swaps it
	 * with its own empty taken, so that a commit never waits for more
	 * than the swap (the sender runs nicer: give_way()). */
	pthread_mutex_t noted_lock;
	struct sched *noted;
	struct sched *taken;
	bool noting;              /* we relay: deadlines are worth noting */
	struct hooks *hooks;      /* OUTCOME_COMMAND, once the lock is held */
	struct alert_state alert; /* ALERT_COMMAND */
	time_t next_age_check;
	bool outcomes_unsynced; /* outcomes/ changed since its fsync */
	struct stats stats;
	bool status_dirty;  /* stats changed since sender.status was written */
	double status_next; /* not written again before this (clock_mono()) */

	pthread_t thread;
	bool started;
	atomic_bool stop;
	/* Held by the thread except while it waits in poll() or relay_send(),
	 * so that sender_stop() can tell a transfer from disk work. */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* signalled when the thread exits */
	bool exited;
	bool abandoned; /* sender_stop() gave up waiting */
};

static time_t
now_sec(void)
{
	return (time_t)clock_wall();
}

/* Arrival time with sub-second precision: the ID carries microseconds in its
 * first 13 hex digits (spool.h); fall back to env->created. */
static double
arrival(const struct envelope *env)
{
	uint64_t t = 0;
	int i, v;

	for (i = 0; i < 13; i++) {
		char c = env->id[i];

		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'A' && c <= 'F')
			v = c - 'A' + 10;
		else
			return (double)env->created;
		t = t << 4 | (uint64_t)v;
	}
	return (double)t / 1e6;
}

struct sender *
sender_new(
    const struct config *cfg, struct spool *spool, char *err, size_t errlen)
{
	struct sender *s = xcalloc(1, sizeof(*s));

	s->cfg = cfg;
	s->spool = spool;
	s->wakefd = s->inotifyfd = s->control_wd = -1;
	if ((s->relay = relay_new(cfg, err, errlen)) == NULL)
		goto fail;
	if (cfg->fb_host != NULL) {
		struct config view;

		config_fallback_view(cfg, &view);
		if ((s->fallback = relay_new(&view, err, errlen)) == NULL)
			goto fail;
	}
	s->cur = s->relay;
	if ((s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	s->report = report_new(cfg, now_sec());
	s->sched = sched_new();
	s->deadlines = sched_new();
	s->noted = sched_new();
	s->taken = sched_new();
	pthread_mutex_init(&s->noted_lock, NULL);
	sched_rate_init(&s->rate, cfg->max_send_rate, clock_mono());
	sched_pause_init(&s->pause, cfg->retry_delay, cfg->retry_max_delay);
	sched_pause_init(&s->fb_pause, cfg->retry_delay, cfg->retry_max_delay);
	alert_init(&s->alert, cfg->alert_after, cfg->alert_queue_age);
	s->max_batch = cfg->max_batch > 0 ? (size_t)cfg->max_batch : 1;
	atomic_init(&s->stop, false);
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->cond, NULL);
	return s;
fail:
	relay_free(s->relay);
	relay_free(s->fallback);
	free(s);
	return NULL;
}

void
sender_wake(struct sender *s)
{
	uint64_t one = 1;
	int saved = errno;

	/* A full counter (EAGAIN) already means "wake up". */
	if (s != NULL && s->wakefd != -1)
		(void)!write(s->wakefd, &one, sizeof(one));
	errno = saved;
}

/* --------------------------------------------------------------- queue */

/* What the scan knew of the message goes with it to its first load. */
static void
scan_one(const char *id, unsigned known, void *arg)
{
	struct sender *s = arg;

	sched_add_tagged(s->sched, id, DUE_NOW, (unsigned char)known);
}

/*
 * The start-up scan: a message dated for later (a deferral,
 * spool_scan_known()) waits unread until its date, which stands in for
 * its deadline in the deadlines heap (it is never later: it is the
 * envelope's next look); then look_unread().  With a big deferred queue,
 * reading every envelope at start-up was a second of CPU per 100,000
 * messages, competing with intake for nothing.
 */
static void
found_at_start(const char *id, unsigned known, time_t not_before, void *arg)
{
	struct sender *s = arg;

	if (not_before == 0) {
		scan_one(id, known, arg);
		return;
	}
	/* What the scan knew would be stale by then: its load looks again. */
	sched_add_new(s->sched, id, not_before);
	sched_add_tagged(s->deadlines, id, not_before, UNREAD_UNTIL);
}

/* A rescan: the IDs only (inotify lost events, or there is none). */
static void
scan_outbox(struct sender *s)
{
	if (spool_scan(s->spool, scan_one, s) == -1)
		log_warn("cannot scan %s", spool_outbox_path(s->spool));
}

/* arnie-queue's requests (queuectl.h) arrive in control/. */
static void
watch_control(struct sender *s)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/control", spool_path(s->spool));
	s->control_wd =
	    inotify_add_watch(s->inotifyfd, path, IN_MOVED_TO | IN_ONLYDIR);
	if (s->control_wd == -1)
		log_warn("cannot watch %s; arnie-queue's requests are seen "
		         "at the next wake-up only",
		    path);
}

/* We hold the lock: clean up, watch, then scan (in that order, see top). */
static void
start_relaying(struct sender *s)
{
	int n;

	if ((n = spool_cleanup_inbox(s->spool)) == -1)
		log_warn("cannot clean %s/inbox", spool_path(s->spool));
	else if (n > 0)
		log_info("removed %d unfinished file%s from %s/inbox", n,
		    n == 1 ? "" : "s", spool_path(s->spool));
	s->inotifyfd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (s->inotifyfd == -1 ||
	    inotify_add_watch(s->inotifyfd, spool_outbox_path(s->spool),
	        IN_MOVED_TO | IN_CLOSE_WRITE | IN_ONLYDIR) == -1) {
		/* In-process commits still wake us (we rescan on wake-ups);
		 * only other processes' files wait for one. */
		log_warn("cannot watch %s; files queued by other processes "
		         "are seen at the next wake-up only",
		    spool_outbox_path(s->spool));
		if (s->inotifyfd != -1)
			close(s->inotifyfd);
		s->inotifyfd = -1;
	} else
		watch_control(s);
	s->hooks = hooks_new(s->cfg, s->spool);
	/* Requests left while no one relayed; and say who relays now. */
	s->control_due = s->status_dirty = true;
	/* The first scan knows what the first loads need not look up. */
	if (spool_scan_known(s->spool, found_at_start, s) == -1)
		log_warn("cannot scan %s", spool_outbox_path(s->spool));
	if (sched_size(s->sched) > 0)
		log_info("%zu message%s queued in %s", sched_size(s->sched),
		    sched_size(s->sched) == 1 ? "" : "s",
		    spool_outbox_path(s->spool));
}

static void
try_lock(struct sender *s)
{
	if (spool_lock_sender(s->spool) == 0) {
		s->locked = true;
		pthread_mutex_lock(&s->noted_lock);
		s->noting = true;
		pthread_mutex_unlock(&s->noted_lock);
		metrics_sender();
		if (s->told_locked || s->told_lock_error)
			log_info("took over relaying %s", spool_path(s->spool));
		start_relaying(s);
		return;
	}
	if (errno == EWOULDBLOCK || errno == EAGAIN) {
		if (!s->told_locked)
			log_info("another process relays this spool (%s); "
			         "accepting mail only",
			    spool_path(s->spool));
		s->told_locked = true;
	} else if (!s->told_lock_error) {
		log_warn(
		    "cannot take the sender lock of %s", spool_path(s->spool));
		s->told_lock_error = true;
	}
}

/* Empty the wake counter and the inotify queue into the heap. */
static void
drain(struct sender *s)
{
	char buf[8192]
	    __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *ev;
	uint64_t count;
	bool woken, rescan = false;
	ssize_t n;
	char *p;

	woken = read(s->wakefd, &count, sizeof(count)) == sizeof(count);
	if (!s->locked)
		return;
	if (woken && (s->inotifyfd == -1 || s->control_wd == -1))
		s->control_due = true;
	if (s->inotifyfd == -1) {
		if (woken)
			scan_outbox(s);
		return;
	}
	for (;;) {
		n = read(s->inotifyfd, buf, sizeof(buf));
		if (n <= 0) {
			if (n == -1 && errno == EINTR)
				continue;
			break;
		}
		for (p = buf; p < buf + n;
		     p += sizeof(struct inotify_event) + ev->len) {
			ev = (const struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				rescan = s->control_due = true;
			else if (ev->wd == s->control_wd)
				s->control_due = true;
			else if (ev->len > 0 && spool_is_id(ev->name))
				sched_add_new(s->sched, ev->name, DUE_NOW);
		}
	}
	/* Events were lost: the directory is the truth. */
	if (rescan)
		scan_outbox(s);
}

/* ------------------------------------------------------------ messages */

static void
log_rcpt(struct sender *s, const struct envelope *env,
    const struct spool_rcpt *rc, bool via_relay, const char *status,
    const char *reply, double now)
{
	log_info("%s: to=<%s>, relay=%s, delay=%.2f, attempts=%u, "
	         "status=%s (%s)",
	    env->id, rc->addr, via_relay ? relay_name(s->cur) : "none",
	    now - arrival(env), env->attempts, status,
	    reply != NULL ? reply : "no reply");
}

static struct envelope *
env_copy(const struct envelope *env)
{
	struct envelope *c = envelope_new();
	size_t i;

	*c = *env;
	c->sender = env->sender != NULL ? xstrdup(env->sender) : NULL;
	c->last_reply =
	    env->last_reply != NULL ? xstrdup(env->last_reply) : NULL;
	c->origin = env->origin != NULL ? xstrdup(env->origin) : NULL;
	c->message_id =
	    env->message_id != NULL ? xstrdup(env->message_id) : NULL;
	c->rcpts = xreallocarray(
	    NULL, env->nrcpts ? env->nrcpts : 1, sizeof(*c->rcpts));
	for (i = 0; i < env->nrcpts; i++) {
		c->rcpts[i].addr = xstrdup(env->rcpts[i].addr);
		c->rcpts[i].state = env->rcpts[i].state;
		c->rcpts[i].reply = env->rcpts[i].reply != NULL
		                        ? xstrdup(env->rcpts[i].reply)
		                        : NULL;
	}
	return c;
}

/* The disk refused env's new state: keep a copy, retried before its stale
 * file is ever sent from again (see prepare()). */
static void
stash(struct sender *s, const struct envelope *env, time_t now)
{
	struct stashed *h = xcalloc(1, sizeof(*h));

	h->env = env_copy(env);
	h->next = s->stashed;
	s->stashed = h;
	sched_add(s->sched, env->id, now + SENDER_DISK_RETRY);
}

/* The stashed envelope of id, now owned by the caller, or NULL. */
static struct envelope *
unstash(struct sender *s, const char *id)
{
	struct stashed **hp, *h;
	struct envelope *env;

	for (hp = &s->stashed; (h = *hp) != NULL; hp = &h->next)
		if (strcmp(h->env->id, id) == 0) {
			*hp = h->next;
			env = h->env;
			free(h);
			return env;
		}
	return NULL;
}

/* When to look at env again: its next attempt, or its deadline if that
 * comes first, so that it leaves the queue on time.  A message due
 * already keeps the time it became due, which orders due messages; never
 * DUE_NOW, which would mean "not read". */
static time_t
due_time(const struct envelope *env)
{
	time_t t = envelope_next_look(env);

	return t > DUE_NOW ? t : DUE_NOW + 1;
}

/*
 * Write env's new state and queue it for its next attempt.  If the disk
 * refuses, the old file stays and env is stashed: our copy keeps the accepted
 * recipients from being sent again.
 */
static int
requeue(struct sender *s, struct envelope *env, time_t now)
{
	if (spool_update(s->spool, env) == -1) {
		if (errno == ENOENT)
			return 0; /* someone took the file away */
		log_warn("%s: cannot update the queue file, trying again in "
		         "%ds",
		    env->id, SENDER_DISK_RETRY);
		stash(s, env, now);
		return -1;
	}
	s->unsynced = true;
	sched_add(s->sched, env->id, due_time(env));
	return 0;
}

static void
count(struct sender *s, enum stats_event ev, const struct envelope *env,
    time_t now)
{
	stats_count(&s->stats, ev, now);
	metrics_outcome(ev, env->size, now);
	s->status_dirty = true;
}

/* Take env out of the queue; on a disk error keep it and try again soon. */
static int
finish(struct sender *s, struct envelope *env, enum spool_fate fate,
    enum stats_event ev, time_t now)
{
	/* The outcome first: a crash between the two reports it twice,
	 * never not at all (hooks.h). */
	if (s->hooks != NULL && s->cfg->outcome_command != NULL) {
		if (hooks_record(s->hooks, env, stats_event_name(ev)) == -1)
			log_warn("%s: cannot record the outcome for "
			         "OUTCOME_COMMAND",
			    env->id);
		s->outcomes_unsynced = true;
	}
	sched_remove(s->deadlines, env->id);
	if (spool_finish(s->spool, env, fate) == -1) {
		if (errno == ENOENT)
			return 0; /* someone took the file away */
		log_warn("%s: cannot move out of the queue, trying again in "
		         "%ds",
		    env->id, SENDER_DISK_RETRY);
		/* Keep the recipients' new states (on disk too if it lets
		 * us, for a crash meanwhile), so that the retry finishes
		 * instead of sending again. */
		(void)spool_update(s->spool, env);
		stash(s, env, now);
		return -1;
	}
	s->unsynced = true;
	count(s, ev, env, now);
	if (fate == SPOOL_FAILED) {
		log_info("%s: moved to failed/", env->id);
		report_failed(s->report, env);
	} else if (s->cfg->save_sent_mail)
		log_info("%s: moved to sent/", env->id);
	else
		log_info("%s: removed", env->id);
	return 0;
}

static bool
any_failed(const struct envelope *env)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == RCPT_FAILED)
			return true;
	return false;
}

/* Every recipient is done: sent/ if all were accepted, else failed/ so that
 * the admin sees it (its envelope shows which recipients got it). */
static int
finish_done(struct sender *s, struct envelope *env, time_t now)
{
	size_t i;

	if (!any_failed(env))
		return finish(s, env, SPOOL_SENT, STATS_SENT, now);
	/* The file in failed/ should say why at a glance, even when the
	 * last attempt was a success for another recipient. */
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == RCPT_FAILED &&
		    env->rcpts[i].reply != NULL) {
			envelope_set_reply(
			    &env->last_reply, env->rcpts[i].reply);
			break;
		}
	return finish(s, env, SPOOL_FAILED, STATS_FAILED, now);
}

/* Out of attempts (failed) or of time (expired): the pending recipients
 * fail with reason. */
static int
give_up(struct sender *s, struct envelope *env, const char *reason, bool expiry,
    bool via_relay, double now)
{
	char *text;
	size_t i;

	for (i = 0; i < env->nrcpts; i++) {
		struct spool_rcpt *rc = &env->rcpts[i];

		if (rc->state != RCPT_PENDING)
			continue;
		if (rc->reply != NULL)
			text =
			    xasprintf("%s; last reply: %s", reason, rc->reply);
		else
			text = xstrdup(reason);
		rc->state = RCPT_FAILED;
		free(rc->reply);
		rc->reply = text;
		log_rcpt(s, env, rc, via_relay, expiry ? "expired" : "bounced",
		    text, now);
	}
	if (env->last_reply != NULL)
		text = xasprintf("%s; last reply: %s", reason, env->last_reply);
	else
		text = xstrdup(reason);
	free(env->last_reply);
	env->last_reply = text;
	return finish(s, env, SPOOL_FAILED,
	    expiry ? STATS_EXPIRED : STATS_FAILED, (time_t)now);
}

/* The reason a message is out of attempts or time, or NULL; *expiry
 * says which (time: its own deadline or the queue lifetime). */
static char *
expired(struct sender *s, const struct envelope *env, time_t now, bool *expiry)
{
	const struct config *cfg = s->cfg;
	char date[TIMEFMT_DATE_MAX];

	*expiry = true;
	if (env->expires != 0 && now >= env->expires) {
		timefmt_date(env->expires, date, sizeof(date));
		return xasprintf("expired: not sent by its deadline, %s", date);
	}
	if (cfg->max_queue_lifetime > 0 &&
	    now - env->created >= cfg->max_queue_lifetime)
		return xasprintf("expired after the queue lifetime of %lds",
		    cfg->max_queue_lifetime);
	*expiry = false;
	if (cfg->max_send_attempts > 0 &&
	    env->attempts >= (unsigned)cfg->max_send_attempts)
		return xasprintf("gave up after %u attempts", env->attempts);
	return NULL;
}

/*
 * A recipient's outcome: its RCPT reply when that refused it, else the
 * reply to the end of DATA (which carries the upstream's queue ID), so a
 * message refused after DATA counts against every recipient.
 */
static const struct relay_result *
outcome(const struct relay_msg *m, size_t j, struct relay_result *none)
{
	const struct relay_result *r = m->rcpt != NULL ? &m->rcpt[j] : NULL;

	if (r != NULL && r->status != RELAY_OK)
		return r;
	if (m->data.status != RELAY_OK || m->data.code != 0)
		return &m->data;
	if (r != NULL && r->code != 0)
		return r;
	/* Attempted, yet no reply at all: not a success. */
	none->status = RELAY_TEMPFAIL;
	none->code = 0;
	snprintf(none->reply, sizeof(none->reply), "no reply from upstream");
	return none;
}

/* ------------------------------------------------------------- routes */

/* The pause of the upstream the session in progress goes through. */
static struct sched_pause *
route_pause(struct sender *s)
{
	return s->via_fallback ? &s->fb_pause : &s->pause;
}

/* Has the primary been paused long enough for the fallback to take over? */
static bool
fallback_due(const struct sender *s, time_t now)
{
	return s->fallback != NULL && s->pause.failures > 0 &&
	       now - s->pause.since >= s->cfg->fallback_after;
}

/*
 * Choose the upstream for the next session and say how many messages it
 * may take: the primary while it runs, or to probe it when its pause is
 * over; the fallback, within its own pause, while the primary has been
 * paused for FALLBACK_AFTER_SECONDS.
 */
static size_t
choose_route(struct sender *s, time_t now)
{
	s->via_fallback = false;
	s->cur = s->relay;
	if (!fallback_due(s, now) ||
	    sched_pause_mode(&s->pause, now) != SCHED_PAUSED)
		return sched_pause_batch(&s->pause, now, s->max_batch);
	s->via_fallback = true;
	s->cur = s->fallback;
	return sched_pause_batch(&s->fb_pause, now, s->max_batch);
}

/* The fallback's own queue-wide state after a session through it. */
static void
update_fallback_pause(
    struct sender *s, bool trouble, const char *reason, time_t now)
{
	long secs;

	if (!trouble) {
		if (sched_pause_ok(&s->fb_pause))
			log_info("fallback upstream %s reachable again",
			    relay_name(s->fallback));
		return;
	}
	secs = sched_pause_fail(&s->fb_pause, now);
	log_warnx("fallback upstream %s paused for %lds: %s",
	    relay_name(s->fallback), secs, reason);
}

/* Apply an attempted message's results to its envelope and the spool.  0
 * when the new state is on disk, -1 when the disk refused it and it is only
 * stashed in memory (see stash()). */
static int
apply(struct sender *s, struct relay_msg *m, double nowd)
{
	struct envelope *env = m->env;
	const struct relay_result *r, *perm = NULL, *temp = NULL, *ok = NULL;
	struct relay_result none;
	time_t now = (time_t)nowd, next;
	char *why;
	bool expiry;
	size_t j;
	int done;

	if (!m->queue_wide)
		env->attempts++;
	for (j = 0; j < env->nrcpts; j++) {
		struct spool_rcpt *rc = &env->rcpts[j];
		const char *status;

		if (rc->state != RCPT_PENDING)
			continue;
		r = outcome(m, j, &none);
		switch (r->status) {
		case RELAY_OK:
			rc->state = RCPT_SENT;
			status = "sent";
			if (ok == NULL)
				ok = r;
			break;
		case RELAY_PERMFAIL:
			rc->state = RCPT_FAILED;
			status = "bounced";
			if (perm == NULL)
				perm = r;
			break;
		default:
			status = "deferred";
			if (temp == NULL)
				temp = r;
			break;
		}
		envelope_set_reply(&rc->reply, r->reply[0] ? r->reply : NULL);
		log_rcpt(s, env, rc, true, status, rc->reply, nowd);
	}
	/* The reply an operator most needs: a refusal, else the reason for
	 * the delay, else the acceptance with the upstream's queue ID. */
	r = perm != NULL ? perm : temp != NULL ? temp : ok;
	if (r != NULL && r->reply[0] != '\0')
		envelope_set_reply(&env->last_reply, r->reply);

	if (envelope_pending(env) == 0)
		return finish_done(s, env, now);
	if ((why = expired(s, env, now, &expiry)) != NULL) {
		done = give_up(s, env, why, expiry, true, nowd);
		free(why);
		return done;
	}
	/* A queue-wide failure spends no attempt; the pause, decided when
	 * the session ends, holds the message back beyond this if longer. */
	if (m->queue_wide)
		next = sched_pause_mode(route_pause(s), now) == SCHED_PAUSED
		           ? route_pause(s)->until
		           : now + s->cfg->retry_delay;
	else
		next = now + sched_backoff(env->attempts, s->cfg->retry_delay,
		                 s->cfg->retry_max_delay);
	env->next_attempt = next;
	count(s, STATS_DEFERRED, env, now);
	return requeue(s, env, now);
}

/* ------------------------------------------------------------ alerts */

static void
alert_recovered(struct sender *s, long secs)
{
	char age[32], *text;

	if (alert_resume(&s->alert) == ALERT_NONE)
		return;
	timefmt_age(secs, age, sizeof(age));
	text = xasprintf("the upstream %s answers again after %s",
	    relay_name(s->relay), age);
	hooks_alert(s->hooks, alert_name(ALERT_RECOVERED), s->alert.kind, text);
	free(text);
}

/* The alerts due now (alert.h); the oldest message is looked up at most
 * once a minute. */
static void
maybe_alert(struct sender *s)
{
	time_t now = now_sec(), oldest = 0;
	enum alert_event ev;
	char age[32], *text;
	const char *id;

	if (s->hooks == NULL || s->cfg->alert_command == NULL)
		return;
	if (s->alert.queue_age > 0 && now >= s->next_age_check) {
		/* A short limit is looked at as often as it is long. */
		s->next_age_check =
		    now + (s->alert.queue_age < ALERT_AGE_INTERVAL
		                  ? s->alert.queue_age
		                  : ALERT_AGE_INTERVAL);
		if ((id = sched_oldest_id(s->sched)) != NULL)
			oldest = spool_id_time(id);
	} else
		oldest = -1; /* not looked at: only the pause is checked */
	while ((ev = alert_check(&s->alert, now, oldest)) != ALERT_NONE) {
		if (ev == ALERT_PAUSED) {
			timefmt_age(
			    (long)(now - s->alert.since), age, sizeof(age));
			text = xasprintf(
			    "queue paused for %s: %s", age, s->alert.text);
		} else if (ev == ALERT_QUEUE_AGE) {
			timefmt_age((long)(now - oldest), age, sizeof(age));
			text = xasprintf("the oldest queued message is %s old "
			                 "(ALERT_QUEUE_AGE_SECONDS=%ld)",
			    age, s->alert.queue_age);
		} else
			text = xasprintf("no queued message is older than "
			                 "%lds any more",
			    s->alert.queue_age);
		hooks_alert(s->hooks, alert_name(ev),
		    ev == ALERT_PAUSED ? s->alert.kind : "queue", text);
		free(text);
	}
}

/*
 * Queue-wide state after a batch.  A dead upstream is probed once per
 * backoff step; the log says what is wrong when it starts or changes, and
 * when it is over, not at every probe.
 */
static void
update_pause(struct sender *s, bool trouble, const char *reason, time_t now)
{
	time_t since = s->pause.since;
	long secs;

	if (!trouble) {
		/* Also after a pause a flush lifted: the alert is told. */
		if (s->alert.paused)
			alert_recovered(s, now - s->alert.since);
		/* The fallback's backoff belongs to this outage. */
		if (s->fallback != NULL)
			sched_pause_ok(&s->fb_pause);
		if (sched_pause_ok(&s->pause)) {
			log_info("upstream reachable again after %lds",
			    (long)(now - since));
			report_recovered(s->report, now);
			s->pause_reason[0] = '\0';
			s->status_dirty = true;
			metrics_upstream(0);
		}
		return;
	}
	secs = sched_pause_fail(&s->pause, now);
	alert_pause(
	    &s->alert, s->pause.since, reply_trouble_kind(reason), reason);
	s->status_dirty = true;
	metrics_upstream(s->pause.since);
	if (strcmp(reason, s->pause_reason) != 0) {
		log_warnx("queue paused: %s; next probe in %lds, then "
		          "backing off up to %lds",
		    reason, secs, (long)s->cfg->retry_max_delay);
		snprintf(
		    s->pause_reason, sizeof(s->pause_reason), "%s", reason);
	} else
		log_debug(
		    "probe failed, queue paused for %lds: %s", secs, reason);
	report_trouble(s->report, reason, s->pause.since);
}

/*
 * Write a stashed envelope again, before its stale file is looked at: finish
 * it if every recipient is done, else update it and queue it for its next
 * attempt.  While the disk still refuses, it stays stashed.
 */
static void
write_stashed(struct sender *s, struct envelope *env, time_t now)
{
	if (envelope_pending(env) == 0) {
		finish_done(s, env, now);
		return;
	}
	requeue(s, env, now);
}

/* ------------------------------------------------------------ deadlines */

static void
note_deadline(struct sender *s, const struct envelope *env)
{
	if (env->expires != 0)
		sched_add(s->deadlines, env->id, env->expires);
	else /* read: a date standing in for it would cost a read more */
		sched_remove(s->deadlines, env->id);
}

/* A deadline came: if the message is still queued and its deadline is
 * still that, it leaves the queue now, sent or not. */
static void
expire_one(struct sender *s, const char *id, double nowd)
{
	struct envelope *env, *newer;
	time_t now = (time_t)nowd;
	char *why = NULL;
	bool expiry;

	/* A stashed envelope is newer than the file (stash()). */
	if ((newer = unstash(s, id)) != NULL)
		env = env_copy(newer);
	else if (spool_load(s->spool, id, &env) == -1)
		return; /* gone, or prepare() will say what is wrong */
	/* Every recipient done (a move cut short): prepare() finishes it
	 * as delivered, never as expired. */
	if (envelope_pending(env) > 0 &&
	    (why = expired(s, env, now, &expiry)) != NULL && expiry) {
		sched_remove(s->sched, id);
		give_up(s, env, why, true, false, nowd);
	} else {
		if (newer != NULL)
			stash(s, newer, now);
		if (env->expires > now)
			note_deadline(s, env);
	}
	free(why);
	envelope_free(newer);
	envelope_free(env);
}

/* What a commit tells the sender, for take_noted(): a deadline (0: none),
 * or NOTE_WITHDRAWN. */
static void
note(struct sender *s, const char *id, time_t what)
{
	if (s == NULL)
		return;
	pthread_mutex_lock(&s->noted_lock);
	if (s->noting)
		sched_add(s->noted, id, what);
	pthread_mutex_unlock(&s->noted_lock);
}

void
sender_note_commit(struct sender *s, const char *id, time_t expires)
{
	note(s, id, expires);
}

void
sender_withdraw_commit(struct sender *s, const char *id)
{
	note(s, id, NOTE_WITHDRAWN);
}

/* A message not loaded yet, loaded to learn its deadline while the queue
 * is paused; it goes back in the queue for its next attempt, now known
 * (no longer DUE_NOW). */
static void
learn_one(struct sender *s, const char *id, unsigned known, time_t now)
{
	struct envelope *env;

	if (spool_load_known(s->spool, id, known, &env) == -1) {
		/* Gone: nothing to learn.  Unreadable: prepare() says why
		 * when its turn comes. */
		if (errno != ENOENT)
			sched_add(s->sched, id, now);
		return;
	}
	note_deadline(s, env);
	/* Every recipient done (a move cut short): prepare() finishes it
	 * at its first chance, whatever its next attempt. */
	sched_add(s->sched, id,
	    envelope_pending(env) > 0 ? due_time(env) : DUE_NOW + 1);
	envelope_free(env);
}

/*
 * What this process's commits noted, taken over: their deadlines, and that
 * they are due (since their ID's time), which spares reading them.  One
 * not in the queue yet (renamed into outbox/ after the note) goes in now
 * if the queue is paused; running, it is left to its inotify event, as it
 * is read to be sent anyway.  A withdrawn one leaves the queue.
 */
static void
take_noted(struct sender *s, time_t now)
{
	char id[SCHED_IDMAX + 1];
	time_t expires, due, since;
	bool paused = sched_pause_mode(&s->pause, now) != SCHED_RUN;
	struct sched *noted;

	pthread_mutex_lock(&s->noted_lock);
	noted = s->noted;
	s->noted = s->taken;
	pthread_mutex_unlock(&s->noted_lock);
	s->taken = noted;
	while (sched_peek(noted, &expires, id)) {
		sched_remove(noted, id);
		if (expires == NOTE_WITHDRAWN) {
			sched_remove(s->sched, id);
			sched_remove(s->deadlines, id);
			continue;
		}
		if (expires != 0)
			sched_add(s->deadlines, id, expires);
		/* An ID runs ahead of the clock after the clock steps
		 * back (spool_new_id() keeps IDs rising). */
		since = spool_id_time(id);
		if (since > now)
			since = now;
		if (since <= DUE_NOW)
			since = DUE_NOW + 1;
		if (sched_due(s->sched, id, &due) ? due == DUE_NOW : paused)
			sched_add(s->sched, id, since);
	}
}

/* A message the start-up scan left unread until its date: the date has
 * come, so it is now one not read yet (DUE_NOW), read first when the
 * queue runs and for its deadline while the queue is paused.  Read
 * since, it has no date left (note_deadline()). */
static void
look_unread(struct sender *s, const char *id)
{
	time_t due;

	if (sched_due(s->sched, id, &due) && due != DUE_NOW)
		sched_add(s->sched, id, DUE_NOW);
}

/* True while the queue is paused and messages are left whose deadlines
 * are not known yet. */
static bool
learning(struct sender *s, time_t now)
{
	time_t due;

	return sched_pause_mode(&s->pause, now) != SCHED_RUN &&
	       sched_peek(s->sched, &due, NULL) && due == DUE_NOW;
}

/* Every message whose deadline has come leaves the queue; while the
 * queue is paused, some not read yet are read to learn their deadlines
 * (the paused queue reads nothing else; running, every message found is
 * loaded to be sent). */
static void
keep_deadlines(struct sender *s)
{
	char id[SCHED_IDMAX + 1];
	double nowd = clock_wall();
	time_t now = (time_t)nowd;
	unsigned char known, tag;
	size_t i;

	take_noted(s, now);
	while (sched_pop_due_tagged(s->deadlines, now, id, &tag))
		if ((tag & UNREAD_UNTIL) != 0)
			look_unread(s, id);
		else
			expire_one(s, id, nowd);
	for (i = 0; i < LEARN_SLICE && learning(s, now); i++) {
		sched_pop_due_tagged(s->sched, DUE_NOW, id, &known);
		learn_one(s, id, known, now);
	}
	if (i > 0)
		log_debug("read %zu queued envelope%s for their deadlines", i,
		    i == 1 ? "" : "s");
}

/*
 * Load a popped ID and decide: 1 = send it (*envp, *bodyp set), 0 = dealt
 * with here (not due yet, finished, gone, quarantined, retried later).
 */
static int
prepare(struct sender *s, const char *id, unsigned known, time_t now,
    double nowd, struct envelope **envp, FILE **bodyp)
{
	struct envelope *env = NULL;
	char *why;
	bool expiry;

	*bodyp = NULL;
	if ((env = unstash(s, id)) != NULL) {
		write_stashed(s, env, now);
		goto done;
	}
	if (spool_load_open(s->spool, id, known, &env, bodyp) == -1) {
		if (errno == ENOENT)
			return 0;
		if (errno == EBADMSG) {
			if (spool_quarantine(s->spool, id) == -1)
				log_warn("%s: cannot parse queue file, and "
				         "cannot move it to corrupt/",
				    id);
			else
				log_warnx("%s: cannot parse queue file, "
				          "moved to corrupt/",
				    id);
			return 0;
		}
		log_warn("%s: cannot read queue file, trying again in %ds", id,
		    SENDER_DISK_RETRY);
		sched_add(s->sched, id, now + SENDER_DISK_RETRY);
		return 0;
	}
	if (envelope_pending(env) == 0) {
		/* Left by a crash between the update and the move. */
		finish_done(s, env, now);
		goto done;
	}
	note_deadline(s, env);
	/* Its deadline first: never sent after it, whatever its next
	 * attempt. */
	if ((why = expired(s, env, now, &expiry)) != NULL &&
	    (expiry || env->next_attempt <= now)) {
		give_up(s, env, why, expiry, false, nowd);
		free(why);
		goto done;
	}
	free(why);
	if (env->next_attempt > now) {
		sched_add(s->sched, id, due_time(env));
		goto done;
	}
	*envp = env;
	return 1;
done:
	envelope_free(env);
	if (*bodyp != NULL)
		spool_close_message(s->spool, *bodyp);
	*bodyp = NULL;
	return 0;
}

/*
 * Make the state changes of a session durable with one fsync of outbox/
 * (see spool.h): each was visible at once, which is all a restarted daemon
 * needs; a power loss before this fsync can only bring a message back.
 * When another session follows at once, it is done at that session's start
 * (batch_started()), while the relay connects; else at once.
 */
static void
sync_state(struct sender *s)
{
	double start = clock_mono();

	if (s->outcomes_unsynced &&
	    fsync(spool_dir_fd(s->spool, SPOOL_IN_OUTCOMES)) == -1)
		log_warn("cannot fsync %s/outcomes", spool_path(s->spool));
	s->outcomes_unsynced = false;
	if (!s->unsynced)
		return;
	s->unsynced = false;
	/* sent/ first: what left outbox/ for it is there on the disk by the
	 * time it has left outbox/ there. */
	if (spool_sync_finished(s->spool) == -1)
		log_warn("cannot fsync %s/sent", spool_path(s->spool));
	if (spool_sync(s->spool) == -1)
		log_warn("cannot fsync %s", spool_outbox_path(s->spool));
	log_debug("sessions' changes synced to disk in %.1f ms",
	    (clock_mono() - start) * 1000);
}

/* One batch in the relay's hands, for record_results(). */
struct batch {
	struct sender *s;
	struct relay_msg *msgs;
	bool *recorded; /* its results are applied */
};

/* relay_started_fn: the previous session's changes made durable while the
 * relay connects for this one (see send_batch()). */
static void
batch_started(void *arg)
{
	/* The fsync under s->lock, as at a session's end: only the results
	 * of this session (and sender_stop()) wait for the lock. */
	struct batch *b = arg;

	pthread_mutex_lock(&b->s->lock);
	if (!b->s->abandoned)
		sync_state(b->s);
	pthread_mutex_unlock(&b->s->lock);
}

/*
 * relay_result_fn: apply a message's results the moment they arrive, while
 * the session waits, so that a crash cannot send again what the upstream
 * took.  A message that was not attempted is left for the end of the
 * session (its file is untouched; the pause, once updated, gates it).
 * When the disk refuses the new state, the session stops (-1).
 */
static int
record_results(void *arg, struct relay_msg *m)
{
	struct batch *b = arg;
	struct sender *s = b->s;
	int rc = 0;

	if (!m->attempted)
		return 0;
	pthread_mutex_lock(&s->lock);
	if (!s->abandoned) {
		/* Held in memory only: a crash now would send it again, so
		 * the next message must not be completed. */
		rc = apply(s, m, clock_wall());
		b->recorded[m - b->msgs] = true;
	}
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/*
 * Will another session start at once after this one (of n messages, limit
 * allowed)?  Then its start makes this one's changes durable
 * (batch_started()), overlapping the relay's connect with the fsync;
 * otherwise the caller syncs now.  Only a guess: when no session starts
 * after all, the main loop syncs before it sleeps.
 */
static bool
next_session_follows(
    struct sender *s, bool trouble, size_t n, size_t limit, time_t now)
{
	time_t due;

	return !trouble && n == limit && sched_peek(s->sched, &due, NULL) &&
	       due <= now;
}

/*
 * Send one batch if anything may go now.  Returns the number of messages
 * handed to the relay, or -1 if the sender was abandoned meanwhile (the
 * caller must then leave at once: nothing may touch the spool any more).
 */
static int
send_batch(struct sender *s)
{
	struct relay_msg *msgs = NULL;
	struct batch batch;
	char id[SCHED_IDMAX + 1], reason[RELAY_REPLY_MAX];
	enum relay_status st;
	struct envelope *env;
	double nowd = clock_wall();
	time_t now = (time_t)nowd, due;
	size_t limit, n = 0, i;
	bool attempted = false, trouble = false;
	FILE *body;
	unsigned char known;

	limit = choose_route(s, now);
	if (limit == 0 || !sched_peek(s->sched, &due, NULL) || due > now)
		return 0;
	limit = sched_rate_avail(&s->rate, clock_mono(), limit);
	if (limit == 0)
		return 0;
	msgs = xcalloc(limit, sizeof(*msgs));
	batch.s = s;
	batch.msgs = msgs;
	batch.recorded = xcalloc(limit, sizeof(*batch.recorded));
	while (n < limit && sched_pop_due_tagged(s->sched, now, id, &known)) {
		env = NULL;
		body = NULL;
		if (prepare(s, id, known, now, nowd, &env, &body) == 1) {
			msgs[n].env = env;
			msgs[n].body = body;
			n++;
		}
	}
	if (n == 0)
		goto out;
	sched_rate_consume(&s->rate, clock_mono(), n);

	reason[0] = '\0';
	pthread_mutex_unlock(&s->lock);
	if (s->via_fallback)
		log_debug("session through the fallback upstream %s",
		    relay_name(s->fallback));
	log_debug("session of %zu message%s", n, n == 1 ? "" : "s");
	st = relay_send(s->cur, msgs, n, batch_started, record_results, &batch,
	    reason, sizeof(reason));
	pthread_mutex_lock(&s->lock);
	if (s->abandoned) {
		/* sender_stop() returned already; the spool may be closed.
		 * What was not recorded yet is sent again at the next start. */
		pthread_mutex_unlock(&s->lock);
		return -1;
	}

	nowd = clock_wall();
	now = (time_t)nowd;
	for (i = 0; i < n; i++)
		if (msgs[i].attempted)
			attempted = true;
	/* A session that ran without trying anything is no progress either;
	 * pausing keeps it from spinning. */
	trouble = st == RELAY_TEMPFAIL || !attempted;
	if (trouble && reason[0] == '\0')
		snprintf(reason, sizeof(reason), "%s",
		    st == RELAY_TEMPFAIL ? "upstream unavailable"
		                         : "no message was attempted");
	metrics_session(trouble ? reply_trouble_kind(reason) : NULL);
	metrics_relayed(s->via_fallback, n);
	if (s->via_fallback)
		update_fallback_pause(s, trouble, reason, now);
	else
		update_pause(s, trouble, reason, now);
	for (i = 0; i < n; i++) {
		if (batch.recorded[i])
			;
		else if (msgs[i].attempted)
			apply(s, &msgs[i], nowd);
		else
			/* Untouched on disk; the pause gates it. */
			sched_add(
			    s->sched, msgs[i].env->id, due_time(msgs[i].env));
		relay_msg_clear(&msgs[i]);
	}
out:
	if (!next_session_follows(s, trouble, n, limit, now))
		sync_state(s);
	for (i = 0; i < n; i++) {
		if (msgs[i].body != NULL)
			spool_close_message(s->spool, msgs[i].body);
		envelope_free(msgs[i].env);
	}
	free(batch.recorded);
	free(msgs);
	return (int)n;
}

/* ------------------------------------------------------ arnie-queue */

static void
control_queued(void *arg, const char *id)
{
	struct sender *s = arg;

	sched_add(s->sched, id, DUE_NOW);
}

static void
control_removed(void *arg, const char *id)
{
	struct sender *s = arg;

	sched_remove(s->sched, id);
	sched_remove(s->deadlines, id);
	/* Stashed again after a disk error since write_all_stashed(): the
	 * file it is newer than has left outbox/ with an older state. */
	envelope_free(unstash(s, id));
}

static void
control_flushed(void *arg)
{
	struct sender *s = arg;
	time_t now = now_sec();

	if (s->fallback != NULL && s->pause.failures > 0) {
		/* The primary probed at once, its outage kept (a reset would
		 * start FALLBACK_AFTER_SECONDS over); the fallback tried
		 * again at once too. */
		s->pause.until = now;
		sched_pause_ok(&s->fb_pause);
		log_info("arnie-queue flush: the primary upstream is probed "
		         "now");
		return;
	}
	if (sched_pause_ok(&s->pause)) {
		log_info("queue pause lifted by arnie-queue flush");
		s->pause_reason[0] = '\0';
		s->status_dirty = true;
		metrics_upstream(0);
	}
}

/* Write every stashed envelope (newer than its file) once more: an
 * action on a message must see, and keep, what the upstream took. */
static void
write_all_stashed(struct sender *s, time_t now)
{
	struct stashed *list = s->stashed, *h;

	s->stashed = NULL; /* those the disk refuses again come back */
	while ((h = list) != NULL) {
		list = h->next;
		write_stashed(s, h->env, now);
		envelope_free(h->env);
		free(h);
	}
}

/* Carry out arnie-queue's requests, between two sessions. */
static void
serve_control(struct sender *s)
{
	static const struct queuectl_hooks hooks = {
	    NULL, control_queued, control_removed, control_flushed};
	struct queuectl_hooks h = hooks;

	if (!s->control_due)
		return;
	s->control_due = false;
	write_all_stashed(s, now_sec());
	h.arg = s;
	if (queuectl_serve(s->spool, &h, now_sec()) == -1)
		log_warn("cannot read %s/control", spool_path(s->spool));
}

static void
maybe_report(struct sender *s)
{
	time_t now = now_sec(), next = report_next(s->report), oldest = -1;
	const char *id;

	if (next == (time_t)-1 || now < next)
		return;
	if ((id = sched_oldest_id(s->sched)) != NULL)
		oldest = spool_id_time(id);
	/* A committed report is found through inotify like any message;
	 * without inotify only a wake-up makes drain() rescan outbox/. */
	if (report_send(
	        s->report, s->spool, now, sched_size(s->sched), oldest) == 1)
		sender_wake(s);
}

/* sender.status for arnie-queue stats: when something changed, at most
 * once a STATUS_INTERVAL. */
static void
maybe_write_status(struct sender *s)
{
	time_t now = now_sec();
	char *text;

	if (!s->status_dirty || clock_mono() < s->status_next)
		return;
	s->status_dirty = false;
	s->status_next = clock_mono() + STATUS_INTERVAL;
	s->stats.paused = sched_pause_mode(&s->pause, now) != SCHED_RUN;
	s->stats.paused_since = s->pause.since;
	s->stats.next_probe = s->pause.until;
	snprintf(
	    s->stats.reason, sizeof(s->stats.reason), "%s", s->pause_reason);
	text = stats_format(&s->stats, getpid(), now);
	if (spool_put_status(s->spool, text) == -1)
		log_warn("cannot write %s/sender.status", spool_path(s->spool));
	free(text);
}

/* sent/ pruned of what is older than SENT_RETENTION_DAYS: at the start,
 * then hourly, in slices. */
static void
maybe_prune(struct sender *s)
{
	time_t now = now_sec();
	int n;

	if (s->cfg->sent_retention_days <= 0 || now < s->next_prune)
		return;
	n = spool_prune_sent(s->spool,
	    now - (time_t)s->cfg->sent_retention_days * 86400, PRUNE_SLICE);
	s->next_prune = n == PRUNE_SLICE ? now : now + PRUNE_INTERVAL;
	if (n == -1)
		log_warn("cannot prune %s/sent", spool_path(s->spool));
	else if (n > 0)
		log_info("removed %d message%s sent more than %d day%s ago "
		         "from sent/",
		    n, n == 1 ? "" : "s", s->cfg->sent_retention_days,
		    s->cfg->sent_retention_days == 1 ? "" : "s");
}

/* dedup/ pruned of what is older than DEDUP_WINDOW_SECONDS (all of it
 * when 0: dedup was turned off): at the start, then hourly, in slices. */
static void
maybe_prune_dedup(struct sender *s)
{
	time_t now = now_sec();
	int n;

	if (now < s->next_dedup_prune)
		return;
	n = dedup_prune(s->spool, now - s->cfg->dedup_window + 1, PRUNE_SLICE);
	s->next_dedup_prune = n == PRUNE_SLICE ? now : now + PRUNE_INTERVAL;
	if (n == -1)
		log_warn("cannot prune %s/dedup", spool_path(s->spool));
}

/* Milliseconds until there is something to do. */
static int
next_timeout(struct sender *s)
{
	double nowd = clock_wall(), wait = SENDER_MAX_SLEEP_MS / 1000.0, w;
	time_t due, next;

	if (!s->locked)
		return SENDER_LOCK_RETRY_MS;
	if ((next = report_next(s->report)) != (time_t)-1 &&
	    (w = (double)next - nowd) < wait)
		wait = w;
	if (s->cfg->sent_retention_days > 0 &&
	    (w = (double)s->next_prune - nowd) < wait)
		wait = w;
	if (s->status_dirty && (w = s->status_next - clock_mono()) < wait)
		wait = w;
	if ((w = (double)s->next_dedup_prune - nowd) < wait)
		wait = w;
	if (s->hooks != NULL && s->cfg->alert_command != NULL) {
		if ((due = alert_pause_due(&s->alert)) != 0 &&
		    (w = (double)due - nowd) < wait)
			wait = w;
		if (s->alert.queue_age > 0 &&
		    (w = (double)s->next_age_check - nowd) < wait)
			wait = w;
	}
	if (sched_peek(s->deadlines, &due, NULL) &&
	    (w = (double)due - nowd) < wait)
		wait = w;
	/* Deadlines still to learn while paused: the next slice at once. */
	if (learning(s, (time_t)nowd))
		wait = 0;
	/* The relay program's idle limit (relay.h): an idle one is stopped
	 * here, a running one's limit is a wake-up. */
	if ((w = relay_idle(s->relay)) >= 0 && w < wait)
		wait = w;
	if (s->fallback != NULL && (w = relay_idle(s->fallback)) >= 0 &&
	    w < wait)
		wait = w;
	if (sched_peek(s->sched, &due, NULL)) {
		if (sched_pause_mode(&s->pause, (time_t)nowd) != SCHED_PAUSED)
			w = (double)due - nowd;
		else if (fallback_due(s, (time_t)nowd))
			/* The fallback's turn, or the primary's probe. */
			w = sched_pause_mode(&s->fb_pause, (time_t)nowd) ==
			            SCHED_PAUSED
			        ? (double)(s->fb_pause.until < s->pause.until
			                       ? s->fb_pause.until
			                       : s->pause.until) -
			              nowd
			        : (double)due - nowd;
		else if (s->fallback != NULL)
			/* The probe, or the fallback's time, if sooner. */
			w = (double)(s->pause.since + s->cfg->fallback_after <
			                     s->pause.until
			                 ? s->pause.since +
			                       s->cfg->fallback_after
			                 : s->pause.until) -
			    nowd;
		else
			w = (double)s->pause.until - nowd;
		if (w <= 0)
			w = sched_rate_wait(&s->rate, clock_mono());
		if (w < wait)
			wait = w;
	}
	if (wait <= 0)
		return 0;
	/* Round up: waking a hair early would find nothing due and spin. */
	return (int)(wait * 1000) + 1;
}

/* Sleep in poll() without the lock.  false if the sender was abandoned
 * meanwhile (the lock is then released and the thread must leave). */
static bool
wait_events(struct sender *s, int timeout)
{
	struct pollfd pfd[2];
	nfds_t n = 1;

	pfd[0].fd = s->wakefd;
	pfd[0].events = POLLIN;
	if (s->inotifyfd != -1) {
		pfd[1].fd = s->inotifyfd;
		pfd[1].events = POLLIN;
		n = 2;
	}
	pthread_mutex_unlock(&s->lock);
	if (poll(pfd, n, timeout) == -1 && errno != EINTR)
		log_warn("sender: poll");
	pthread_mutex_lock(&s->lock);
	if (s->abandoned) {
		pthread_mutex_unlock(&s->lock);
		return false;
	}
	return true;
}

/*
 * Accepting mail is what the application waits for: when the two compete
 * for the CPU, relaying gives way.  This thread, and what it starts (the
 * relay program, hooks), run RELAY_NICE nicer than the front-end; CFS
 * still gives a thread 10 nicer about a tenth of a busy one's share, so
 * relaying never stops.  Its start-up reading of a big queue (a second of
 * CPU per 100,000 messages) no longer slows intake.  Being nicer needs no
 * privilege; should it fail, the thread runs as it is.
 */
static void
give_way(void)
{
	id_t tid = (id_t)gettid();
	int prio;

	errno = 0;
	prio = getpriority(PRIO_PROCESS, tid);
	if ((prio == -1 && errno != 0) ||
	    setpriority(PRIO_PROCESS, tid, prio + RELAY_NICE) == -1)
		log_debug(
		    "sender: cannot lower its priority: %s", strerror(errno));
}

static void *
sender_main(void *arg)
{
	struct sender *s = arg;
	sigset_t all;
	int timeout;

	/* Signals belong to the front-end's thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	give_way();
	pthread_mutex_lock(&s->lock);
	while (!atomic_load(&s->stop)) {
		if (!s->locked) {
			try_lock(s);
			if (!s->locked) {
				if (!wait_events(s, SENDER_LOCK_RETRY_MS))
					return NULL;
				drain(s);
				continue;
			}
		}
		drain(s);
		serve_control(s);
		keep_deadlines(s);
		maybe_alert(s);
		maybe_report(s);
		maybe_prune(s);
		maybe_prune_dedup(s);
		if (send_batch(s) == -1)
			return NULL; /* abandoned; lock released */
		maybe_write_status(s);
		if (atomic_load(&s->stop))
			break;
		timeout = next_timeout(s);
		/* A session that left its changes to the next one's start
		 * (send_batch()), and none is starting. */
		if (timeout != 0)
			sync_state(s);
		if (!wait_events(s, timeout))
			return NULL; /* abandoned; lock released */
		drain(s);
	}
	sync_state(s);
	s->exited = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

int
sender_start(struct sender *s)
{
	int rc;

	if (s->started) {
		errno = EALREADY;
		return -1;
	}
	atomic_store(&s->stop, false);
	s->exited = false;
	if ((rc = pthread_create(&s->thread, NULL, sender_main, s)) != 0) {
		errno = rc;
		return -1;
	}
	s->started = true;
	return 0;
}

/* Wait up to secs for the thread to exit; called with s->lock held. */
static bool
wait_exit(struct sender *s, int secs)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += secs;
	while (!s->exited &&
	       pthread_cond_timedwait(&s->cond, &s->lock, &deadline) == 0)
		;
	return s->exited;
}

void
sender_stop(struct sender *s)
{
	bool done;

	if (s == NULL || !s->started)
		return;
	atomic_store(&s->stop, true);
	sender_wake(s);
	pthread_mutex_lock(&s->lock);
	if (!(done = wait_exit(s, SENDER_STOP_WAIT))) {
		/* Kill the session; the thread then applies what it had
		 * reported (relay_abort() takes no lock of ours). */
		relay_abort(s->relay);
		if (s->fallback != NULL)
			relay_abort(s->fallback);
		done = wait_exit(s, SENDER_ABORT_WAIT);
	}
	if (!done) {
		/* The changes of a session whose sync the stuck one was to
		 * do at its start (send_batch()). */
		sync_state(s);
		s->abandoned = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (done)
		pthread_join(s->thread, NULL);
	else {
		log_warnx(
		    "a transfer is still running; abandoning it, its "
		    "messages stay queued and are sent at the next start");
		pthread_detach(s->thread);
	}
	s->started = false;
}

void
sender_free(struct sender *s)
{
	if (s == NULL)
		return;
	sender_stop(s);
	/* An abandoned thread may still be inside relay_send(): leave it
	 * everything it might touch; the process is exiting. */
	if (s->abandoned)
		return;
	if (s->inotifyfd != -1)
		close(s->inotifyfd);
	if (s->wakefd != -1)
		close(s->wakefd);
	while (s->stashed != NULL) {
		struct stashed *h = s->stashed;

		s->stashed = h->next;
		envelope_free(h->env);
		free(h);
	}
	hooks_free(s->hooks);
	relay_free(s->relay);
	relay_free(s->fallback);
	report_free(s->report);
	sched_free(s->sched);
	sched_free(s->deadlines);
	sched_free(s->noted);
	sched_free(s->taken);
	pthread_mutex_destroy(&s->noted_lock);
	pthread_cond_destroy(&s->cond);
	pthread_mutex_destroy(&s->lock);
	free(s);
}
