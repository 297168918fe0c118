/*
 * relay: see relay.h.  The daemon's end of arnie-relay: starting it,
 * telling it the settings, handing it batches, taking their results under
 * a deadline, and replacing it when it dies or misbehaves.
 *
 * The relay is fork()ed and exec()ed from the thread that needs one: the
 * main thread at start-up (relay_new()), the sender thread after; between
 * the two only async-signal-safe calls are made (prctl, getppid, dup2 or
 * fcntl, execv, _exit), so a lock another thread held at fork() cannot
 * matter.  It dies with that thread (PR_SET_PDEATHSIG), and both live as
 * long as the daemon: an orphan would go on delivering messages whose
 * results nobody records.  Every descriptor of the daemon
 * is close-on-exec, and the relay closes anything else it finds.
 *
 * Everything the relay says is checked before it is believed: record
 * types in their order, indexes within the batch, recipients that were
 * sent, each result once.  A relay that says anything else is killed.
 */
#include "autoconf.h"

#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "log.h"
#include "relay_proto.h"
#include "secret.h"
#include "spool.h"
#include "wire.h"
#include "xmalloc.h"

/* How long a new relay may take to say hello and load its settings. */
#define RELAY_START_TIMEOUT_MS 30000
/* How long a relay may take to exit when its socket closes. */
#define RELAY_EXIT_WAIT_MS 1000

struct relay {
	char *program;
	int nice; /* the relay program's: the front-end's + RELAY_NICE */
	char *name; /* "host:port" */
	char *host;
	int port;
	bool use_tls;
	bool tls_verify;
	char *ca_file;
	char *username;
	char *password; /* secret */
	char *helo;
	long timeout;
	long max_idle;        /* seconds, 0: no limit */
	double last_used;     /* clock_mono() at the end of the last session */

	pthread_mutex_t lock; /* guards pid and aborted, for relay_abort() */
	pid_t pid;            /* the relay process, 0 when none */
	bool aborted;         /* relay_abort() killed it */
	int sock;             /* our end of its socket, -1 when none */
	unsigned sessions;    /* served by this process */
};

/* What one batch's collection learnt. */
struct collect {
	struct relay_msg *msgs;
	size_t *map;   /* the relay's index -> msgs[] index */
	size_t nsent;  /* messages handed to the relay */
	bool *got;     /* a complete result (DONE) arrived */
	size_t ngot;
	size_t cur;    /* the message whose results are arriving, or SIZE_MAX */
	size_t rcpts_left;
	bool complete; /* END arrived */
	bool unrecorded; /* fn could not record a message's results */
	relay_result_fn *fn;
	void *arg;
	double deadline; /* clock_mono() */
	long seconds;
	enum relay_status status;
	char reason[RELAY_REPLY_MAX];
	char error[RELAY_REPLY_MAX]; /* why the collection stopped early */
};

/* ------------------------------------------------------------ the process */

/* Reap pid, waiting at most ms for it to exit on its own, then killing it.
 * Returns its wait status, or -1 if unknown. */
static int
reap(pid_t pid, int ms)
{
	int status, waited = 0;
	pid_t r;

	for (;;) {
		while ((r = waitpid(pid, &status, WNOHANG)) == -1 &&
		       errno == EINTR)
			continue;
		if (r == pid)
			return status;
		if (r == -1)
			return -1;
		if (waited >= ms)
			break;
		usleep(10000);
		waited += 10;
	}
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) == -1)
		if (errno != EINTR)
			return -1;
	return status;
}

/* Forget the relay (so relay_abort() can never signal a recycled PID),
 * then end it: ms to exit by itself after its socket closed, 0 to kill it
 * at once.  Returns its wait status, or -1. */
static int
stop_relay(struct relay *relay, int ms)
{
	pid_t pid;

	pthread_mutex_lock(&relay->lock);
	pid = relay->pid;
	relay->pid = 0;
	pthread_mutex_unlock(&relay->lock);
	if (relay->sock != -1) {
		close(relay->sock);
		relay->sock = -1;
	}
	relay->sessions = 0;
	if (pid <= 0)
		return -1;
	if (ms == 0)
		(void)kill(pid, SIGKILL);
	return reap(pid, ms);
}

/* A LOG record: the relay's line, written as the daemon's own. */
static void
relay_log(const struct wire_rec *r)
{
	char text[WIRE_MAX + 1];
	uint64_t prio;
	size_t i;

	if (r->n != 2 || wire_text(r, 1) == NULL ||
	    wire_number(r, 0, 7, &prio) == -1)
		return;
	/* One line of the log per record, whatever the relay sent. */
	for (i = 0; i < r->len[1]; i++)
		text[i] = (unsigned char)r->field[1][i] < 0x20 ||
		                  r->field[1][i] == 0x7f
		              ? '?'
		              : r->field[1][i];
	text[i] = '\0';
	if (prio == LOG_DEBUG)
		log_debug("%s", text);
	else if (prio <= LOG_WARNING)
		log_warnx("%s", text);
	else
		log_info("%s", text);
}

/* Milliseconds until deadline (clock_mono()), at least 1 for poll(). */
static int
ms_until(double deadline)
{
	double left = deadline - clock_mono();

	if (left <= 0)
		return 0;
	return left > INT_MAX / 1000 ? INT_MAX : (int)(left * 1000) + 1;
}

/* The next record that is not a LOG line, by deadline (clock_mono()): LOG
 * lines do not extend it.  1, 0 (closed), -1 (errno; ETIMEDOUT). */
static int
next(struct relay *relay, struct wire_rec *r, double deadline)
{
	int got;

	for (;;) {
		if (ms_until(deadline) == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		got = wire_recv(relay->sock, r, ms_until(deadline));
		if (got == 1 && r->fd != -1) {
			/* The relay has no business sending us descriptors. */
			close(r->fd);
			r->fd = -1;
		}
		if (got != 1 || r->type != RR_LOG)
			return got;
		relay_log(r);
	}
}

/* The child, between fork() and exec(): async-signal-safe calls only. */
static void __attribute__((noreturn))
exec_relay(const char *program, int sock, pid_t parent, int nice)
{
	char *const argv[] = {(char *)"arnie-relay", NULL};

	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(1);
	/* The same whichever thread starts it (the sender thread runs at
	 * this value already; the first relay is started at start-up). */
	(void)setpriority(PRIO_PROCESS, 0, nice);
	/* dup2() leaves the copy without close-on-exec; a socket that is
	 * descriptor 3 already needs the flag cleared by hand. */
	if (sock == RELAY_PROTO_FD ? fcntl(sock, F_SETFD, 0) == -1
	                           : dup2(sock, RELAY_PROTO_FD) == -1)
		_exit(126);
	execv(program, argv);
	_exit(127);
}

/* The CONFIG record: every setting, the password included (it travels
 * over the socket only). */
static int
send_config(struct relay *relay)
{
	char port[16], timeout[24];

	snprintf(port, sizeof(port), "%d", relay->port);
	snprintf(timeout, sizeof(timeout), "%ld", relay->timeout);
	return wire_sendv(relay->sock, RR_CONFIG, -1, relay->host, port,
	    relay->use_tls ? "1" : "0", relay->tls_verify ? "1" : "0",
	    relay->ca_file != NULL ? relay->ca_file : "",
	    relay->username != NULL ? relay->username : "",
	    relay->password != NULL ? relay->password : "",
	    relay->helo != NULL ? relay->helo : "", timeout, NULL);
}

/* Wait for HELLO, send CONFIG, wait for READY.  0, or -1 with the reason
 * in err (FAILED's message: a settings error). */
static int
handshake(struct relay *relay, char *err, size_t errlen)
{
	struct wire_rec *r = xcalloc(1, sizeof(*r));
	double start_deadline = clock_mono() + RELAY_START_TIMEOUT_MS / 1000.0;
	int rc = -1;

	if (next(relay, r, start_deadline) != 1 ||
	    r->type != RR_HELLO || wire_text(r, 0) == NULL ||
	    strcmp(wire_text(r, 0), RELAY_PROTO_HELLO) != 0) {
		snprintf(err, errlen,
		    "%s did not start as a relay program of this version "
		    "(ARNIE_RELAY_PROGRAM)",
		    relay->program);
		goto out;
	}
	if (send_config(relay) == -1 ||
	    next(relay, r, start_deadline) != 1) {
		snprintf(err, errlen, "%s stopped while loading its settings",
		    relay->program);
		goto out;
	}
	if (r->type == RR_FAILED) {
		snprintf(err, errlen, "%s",
		    wire_text(r, 0) != NULL ? wire_text(r, 0) : "relay failed");
		goto out;
	}
	if (r->type != RR_READY) {
		snprintf(err, errlen, "%s: protocol error at start-up",
		    relay->program);
		goto out;
	}
	rc = 0;
out:
	free(r);
	return rc;
}

/* Start a relay process.  0, or -1 with a message in err. */
static int
start_relay(struct relay *relay, char *err, size_t errlen)
{
	pid_t pid, parent = getpid();
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return -1;
	}
	if ((pid = fork()) == 0)
		exec_relay(relay->program, sv[1], parent, relay->nice);
	close(sv[1]);
	if (pid == -1) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		return -1;
	}
	pthread_mutex_lock(&relay->lock);
	relay->pid = pid;
	relay->aborted = false;
	pthread_mutex_unlock(&relay->lock);
	relay->sock = sv[0];
	relay->sessions = 0;
	if (handshake(relay, err, errlen) == -1) {
		stop_relay(relay, 0);
		return -1;
	}
	log_debug("relay %s: started %s (pid %ld)", relay->name,
	    relay->program, (long)pid);
	return 0;
}

/* ------------------------------------------------------------ a batch */

static void
set_result(struct relay_result *res, enum relay_status status, int code,
    const char *reply)
{
	res->status = status;
	res->code = code;
	snprintf(res->reply, sizeof(res->reply), "%s", reply);
}

/* A result's status, code and reply from fields i, i+1, i+2. */
static int
parse_result(const struct wire_rec *r, size_t i, struct relay_result *res)
{
	uint64_t status, code;
	const char *reply = wire_text(r, i + 2);

	if (wire_number(r, i, RELAY_PERMFAIL, &status) == -1 ||
	    wire_number(r, i + 1, 99999, &code) == -1 || reply == NULL)
		return -1;
	set_result(res, (enum relay_status)status, (int)code, reply);
	return 0;
}

/* Hold one message of the batch: MSG with its file, then its RCPTs. */
static int
send_message(struct wire_held *out, size_t index, const struct relay_msg *m)
{
	const struct envelope *env = m->env;
	char idx[24], size[24], off[24], nr[24], j_text[24];
	size_t j;

	snprintf(idx, sizeof(idx), "%zu", index);
	snprintf(size, sizeof(size), "%" PRIu64, env->size);
	snprintf(off, sizeof(off), "%lld", (long long)env->body_offset);
	snprintf(nr, sizeof(nr), "%zu", envelope_pending(env));
	if (wire_holdv(out, RR_MSG, fileno(m->body), idx, env->id,
	        env->sender != NULL ? env->sender : "", size, off, nr,
	        NULL) == -1)
		return -1;
	for (j = 0; j < env->nrcpts; j++) {
		if (env->rcpts[j].state != RCPT_PENDING)
			continue;
		snprintf(j_text, sizeof(j_text), "%zu", j);
		if (wire_holdv(out, RR_RCPT, -1, idx, j_text,
		        env->rcpts[j].addr, NULL) == -1)
			return -1;
	}
	return 0;
}

/* BEGIN, the messages with a pending recipient, GO; c->map filled.  Sent
 * in runs (wire_flush()): the relay wakes once per run, not per record. */
static int
send_batch(struct relay *relay, struct relay_msg *msgs, size_t n,
    struct collect *c)
{
	struct wire_held *out;
	char count[24];
	size_t i;
	int rc = -1;

	for (i = 0; i < n; i++)
		if (envelope_pending(msgs[i].env) > 0)
			c->map[c->nsent++] = i;
	snprintf(count, sizeof(count), "%zu", c->nsent);
	if ((out = wire_held_new(relay->sock)) == NULL)
		return -1;
	if (wire_holdv(out, RR_BEGIN, -1, count, NULL) == -1)
		goto done;
	for (i = 0; i < c->nsent; i++)
		if (send_message(out, i, &msgs[c->map[i]]) == -1)
			goto done;
	if (wire_holdv(out, RR_GO, -1, NULL) == -1)
		goto done;
	rc = wire_flush(out);
done:
	wire_held_free(out);
	return rc;
}

static int
protocol(struct collect *c, const char *what)
{
	snprintf(c->error, sizeof(c->error), "relay protocol error: %s", what);
	return -1;
}

/* RESULT: a message's own result; its recipients' follow. */
static int
on_result(struct collect *c, const struct wire_rec *r)
{
	struct relay_msg *m;
	uint64_t idx;

	if (c->cur != SIZE_MAX || r->n != 6 ||
	    wire_number(r, 0, c->nsent - 1, &idx) == -1 || c->got[idx])
		return protocol(c, "unexpected RESULT");
	m = &c->msgs[c->map[idx]];
	if (parse_result(r, 3, &m->data) == -1)
		return protocol(c, "malformed RESULT");
	m->attempted = wire_text(r, 1) != NULL && r->field[1][0] == '1';
	m->queue_wide = wire_text(r, 2) != NULL && r->field[2][0] == '1';
	c->cur = (size_t)idx;
	c->rcpts_left = envelope_pending(m->env);
	return 0;
}

/* RRESULT: one pending recipient's result, once. */
static int
on_rresult(struct collect *c, const struct wire_rec *r)
{
	struct relay_msg *m;
	uint64_t idx, j;

	if (c->cur == SIZE_MAX || r->n != 5 ||
	    wire_number(r, 0, SIZE_MAX, &idx) == -1 || idx != c->cur)
		return protocol(c, "unexpected RRESULT");
	m = &c->msgs[c->map[idx]];
	if (wire_number(r, 1, m->env->nrcpts - 1, &j) == -1 ||
	    m->env->rcpts[j].state != RCPT_PENDING ||
	    m->rcpt[j].reply[0] != '\0' || c->rcpts_left == 0 ||
	    parse_result(r, 2, &m->rcpt[j]) == -1)
		return protocol(c, "malformed RRESULT");
	/* An empty reply would look unset: the result needs a text. */
	if (m->rcpt[j].reply[0] == '\0')
		set_result(&m->rcpt[j], m->rcpt[j].status, m->rcpt[j].code,
		    "no reply");
	c->rcpts_left--;
	return 0;
}

/* DONE: the message is complete; record it, then let the relay go on. */
static int
on_done(struct relay *relay, struct collect *c, const struct wire_rec *r)
{
	char idx_text[24];
	uint64_t idx;
	int stop = 0;

	if (c->cur == SIZE_MAX || wire_number(r, 0, SIZE_MAX, &idx) == -1 ||
	    idx != c->cur || c->rcpts_left != 0)
		return protocol(c, "unexpected DONE");
	c->got[idx] = true;
	c->ngot++;
	c->cur = SIZE_MAX;
	if (c->fn != NULL && c->fn(c->arg, &c->msgs[c->map[idx]]) == -1) {
		c->unrecorded = true;
		stop = 1;
	}
	snprintf(idx_text, sizeof(idx_text), "%zu", (size_t)idx);
	if (wire_sendv(relay->sock, RR_ACK, -1, idx_text, stop ? "1" : "0",
	        NULL) == -1 && errno != EPIPE)
		return protocol(c, "cannot acknowledge");
	return 0;
}

/* END: the session's status and reason. */
static int
on_end(struct collect *c, const struct wire_rec *r)
{
	uint64_t status;

	/* A session ends OK or TEMPFAIL (relay.h); PERMFAIL is for
	 * messages and recipients only. */
	if (c->cur != SIZE_MAX || r->n != 2 ||
	    wire_number(r, 0, RELAY_TEMPFAIL, &status) == -1 ||
	    wire_text(r, 1) == NULL)
		return protocol(c, "unexpected END");
	c->complete = true;
	c->status = (enum relay_status)status;
	snprintf(c->reason, sizeof(c->reason), "%s", wire_text(r, 1));
	return 0;
}

/* Take records until END, a deadline, or trouble (c->error set). */
static void
collect(struct relay *relay, struct collect *c)
{
	struct wire_rec *r = xcalloc(1, sizeof(*r));
	int got, rc;

	while (!c->complete) {
		got = next(relay, r, c->deadline);
		if (got == -1 && errno == ETIMEDOUT) {
			snprintf(c->error, sizeof(c->error),
			    "relay process killed at the %ld s deadline",
			    c->seconds);
			break;
		}
		if (got != 1) {
			if (got == -1 && errno == EBADMSG)
				protocol(c, "not a record");
			break;
		}
		switch (r->type) {
		case RR_RESULT:
			rc = on_result(c, r);
			break;
		case RR_RRESULT:
			rc = on_rresult(c, r);
			break;
		case RR_DONE:
			rc = on_done(relay, c, r);
			break;
		case RR_END:
			rc = on_end(c, r);
			break;
		default:
			rc = protocol(c, "unexpected record");
			break;
		}
		if (rc == -1)
			break;
	}
	free(r);
}

/*
 * The whole session is bounded, whatever libesmtp does: it has no connect
 * timeout, and a peer that trickles bytes restarts its read timeouts.  Each
 * message may take a few timeouts (MAIL, RCPTs and DATA, the transfer, the
 * final reply) and the session a few more (connect, greeting, EHLO,
 * STARTTLS, AUTH, QUIT); the transfer also gets 1 s per 16 KiB.
 */
static long
session_deadline(
    const struct relay *relay, const struct relay_msg *msgs, size_t n)
{
	uint64_t bytes = 0;
	size_t i;

	for (i = 0; i < n; i++)
		bytes += msgs[i].env->size;
	return relay->timeout * (6 + 3 * (long)n) + (long)(bytes / 16384);
}

/* A message the relay gave no complete result for: not attempted, so
 * that no attempt is spent on trouble of ours. */
static void
set_unreported(struct relay_msg *m, const char *why)
{
	size_t j;

	m->attempted = false;
	m->queue_wide = false;
	set_result(&m->data, RELAY_TEMPFAIL, 0, why);
	memset(m->rcpt, 0, m->env->nrcpts * sizeof(*m->rcpt));
	for (j = 0; j < m->env->nrcpts; j++)
		if (m->env->rcpts[j].state == RCPT_PENDING)
			m->rcpt[j] = m->data;
}

/* "relay process died (signal 9)" and the like, then tail. */
static void
exit_text(int status, const char *tail, char *dst, size_t dstlen)
{
	if (status != -1 && WIFSIGNALED(status))
		snprintf(dst, dstlen, "relay process died (signal %d)%s",
		    WTERMSIG(status), tail);
	else if (status != -1 && WIFEXITED(status))
		snprintf(dst, dstlen, "relay process exited (status %d)%s",
		    WEXITSTATUS(status), tail);
	else
		snprintf(dst, dstlen, "relay process ended%s", tail);
}

/* Why the batch ended early, from what was seen and the wait status. */
static void
death_reason(const struct collect *c, bool aborted, int status, char *dst,
    size_t dstlen)
{
	char what[RELAY_REPLY_MAX];

	if (c->unrecorded)
		snprintf(what, sizeof(what),
		    "session stopped: results cannot be recorded in the "
		    "spool");
	else if (aborted)
		snprintf(what, sizeof(what), "relay process stopped");
	else if (c->error[0] != '\0')
		snprintf(what, sizeof(what), "%s", c->error);
	else
		exit_text(status, " without a report", what, sizeof(what));
	snprintf(dst, dstlen, "%.400s after %zu of %zu messages", what, c->ngot,
	    c->nsent);
}

/* Results reset and result arrays allocated.  Returns the number of
 * messages with a pending recipient. */
static size_t
prepare_msgs(struct relay_msg *msgs, size_t n)
{
	size_t i, queued = 0;

	for (i = 0; i < n; i++) {
		struct relay_msg *m = &msgs[i];

		relay_msg_clear(m);
		m->attempted = false;
		m->queue_wide = false;
		memset(&m->data, 0, sizeof(m->data));
		m->rcpt = xcalloc(
		    m->env->nrcpts ? m->env->nrcpts : 1, sizeof(*m->rcpt));
		if (envelope_pending(m->env) > 0)
			queued++;
	}
	return queued;
}

/* Is the idle relay still there?  One that died between sessions (the
 * OOM killer, an operator's kill) is noticed now, not by failing the next
 * batch, which would pause the queue for a retry delay. */
static bool
idle_relay_alive(struct relay *relay)
{
	struct pollfd pfd = {relay->sock, POLLIN, 0};
	struct wire_rec *r;
	char why[128];
	int n, status;

	while ((n = poll(&pfd, 1, 0)) == -1 && errno == EINTR)
		continue;
	if (n == 0)
		return true;
	/* An idle relay has nothing to say but log lines: anything else,
	 * or the end of its socket, means it is gone or talking out of
	 * turn, which is no better. */
	r = xcalloc(1, sizeof(*r));
	n = next(relay, r, clock_mono() + 0.001);
	free(r);
	if (n == -1 && errno == ETIMEDOUT)
		return true; /* only log lines were waiting */
	status = stop_relay(relay, RELAY_EXIT_WAIT_MS);
	exit_text(status, " between sessions", why, sizeof(why));
	log_warnx("relay %s: %s; starting another", relay->name, why);
	return false;
}

/* A relay that may take a session: the one running, unless it has served
 * its RELAY_MAX_SESSIONS, or a new one (*fresh).  0, or -1 with a
 * reason. */
static int
ready_relay(struct relay *relay, bool *fresh, char *err, size_t errlen)
{
	*fresh = false;
	if (relay->sock != -1 && relay->sessions < RELAY_MAX_SESSIONS &&
	    idle_relay_alive(relay))
		return 0;
	*fresh = true;
	if (relay->sock != -1)
		stop_relay(relay, RELAY_EXIT_WAIT_MS);
	if (start_relay(relay, err, errlen) == -1) {
		log_warnx("relay %s: cannot start the relay program: %s",
		    relay->name, err);
		return -1;
	}
	return 0;
}

/* Ready for a session: nothing collected yet. */
static void
collect_init(struct collect *c, struct relay *relay, struct relay_msg *msgs,
    size_t n, relay_result_fn *fn, void *arg)
{
	memset(c, 0, sizeof(*c));
	c->msgs = msgs;
	c->map = xcalloc(n, sizeof(*c->map));
	c->got = xcalloc(n, sizeof(*c->got));
	c->cur = SIZE_MAX;
	c->fn = fn;
	c->arg = arg;
	c->seconds = session_deadline(relay, msgs, n);
	c->deadline = clock_mono() + (double)c->seconds;
}

/*
 * Did a relay kept from an earlier session end this one without a word:
 * no result, no protocol error, not stopped by us?  Then it most likely
 * died while idle, just before idle_relay_alive() could see it (a kill
 * races with the next batch), and the batch deserves a fresh relay rather
 * than a paused queue.
 */
static bool
died_idle(const struct collect *c, bool fresh, bool aborted)
{
	return !fresh && !aborted && !c->complete && !c->unrecorded &&
	    c->ngot == 0 && c->cur == SIZE_MAX && c->error[0] == '\0';
}

enum relay_status
relay_send(struct relay *relay, struct relay_msg *msgs, size_t n,
    relay_started_fn *started, relay_result_fn *fn, void *arg, char *reason,
    size_t reasonlen)
{
	struct collect c;
	char err[RELAY_REPLY_MAX];
	bool aborted, fresh;
	size_t i;
	int status;

	if (reasonlen > 0)
		reason[0] = '\0';
	if (prepare_msgs(msgs, n) == 0) {
		snprintf(reason, reasonlen, "nothing to send");
		return RELAY_OK;
	}
	collect_init(&c, relay, msgs, n, fn, arg);

	relay->last_used = clock_mono();
again:
	if (ready_relay(relay, &fresh, err, sizeof(err)) == -1) {
		snprintf(c.reason, sizeof(c.reason),
		    "cannot start the relay program: %.400s", err);
		c.status = RELAY_TEMPFAIL;
		for (i = 0; i < n; i++)
			if (envelope_pending(msgs[i].env) > 0)
				set_unreported(&msgs[i], c.reason);
		goto out;
	}
	relay->sessions++;
	if (send_batch(relay, msgs, n, &c) == -1) {
		snprintf(c.error, sizeof(c.error),
		    "cannot hand the batch to the relay process: %s",
		    strerror(errno));
	} else {
		if (started != NULL) {
			started(arg);
			started = NULL; /* once, even if the batch is retried */
		}
		collect(relay, &c);
	}
	if (c.complete && !c.unrecorded)
		goto out;
	/* Trouble: this relay is done for; the next session gets another. */
	pthread_mutex_lock(&relay->lock);
	aborted = relay->aborted;
	pthread_mutex_unlock(&relay->lock);
	status = stop_relay(relay, c.error[0] != '\0' || aborted ? 0 : 100);
	if (died_idle(&c, fresh, aborted)) {
		exit_text(status, " between sessions", err, sizeof(err));
		log_warnx("relay %s: %s; starting another", relay->name, err);
		free(c.map);
		free(c.got);
		(void)prepare_msgs(msgs, n);
		collect_init(&c, relay, msgs, n, fn, arg);
		goto again;
	}
	death_reason(&c, aborted, status, c.reason, sizeof(c.reason));
	log_warnx("relay %s: %s", relay->name, c.reason);
	c.status = RELAY_TEMPFAIL;
	for (i = 0; i < c.nsent; i++)
		if (!c.got[i])
			set_unreported(&msgs[c.map[i]], c.reason);
out:
	relay->last_used = clock_mono();
	snprintf(reason, reasonlen, "%s", c.reason);
	if (c.status != RELAY_OK)
		log_debug("relay %s: session trouble: %s", relay->name, reason);
	free(c.map);
	free(c.got);
	return c.status;
}

double
relay_idle(struct relay *relay)
{
	double left;

	if (relay->sock == -1 || relay->max_idle == 0)
		return -1;
	left = relay->last_used + (double)relay->max_idle - clock_mono();
	if (left > 0)
		return left;
	log_debug("relay %s: relay process idle for %ld s, stopped",
	    relay->name, relay->max_idle);
	stop_relay(relay, RELAY_EXIT_WAIT_MS);
	return -1;
}

void
relay_abort(struct relay *relay)
{
	pthread_mutex_lock(&relay->lock);
	if (relay->pid > 0) {
		(void)kill(relay->pid, SIGKILL);
		relay->aborted = true;
	}
	pthread_mutex_unlock(&relay->lock);
}

/* ------------------------------------------------------------ set-up */

/* The settings no relay could work with. */
static int
check_settings(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->outbound_host == NULL || *cfg->outbound_host == '\0') {
		snprintf(err, errlen, "OUTBOUND_EMAIL_HOST is not set");
		return -1;
	}
	if (cfg->outbound_port == 465) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST_PORT=465 needs implicit TLS, which "
		    "Arnie does not support: use port 587 (STARTTLS)");
		return -1;
	}
	if (cfg->outbound_port < 1 || cfg->outbound_port > 65535) {
		snprintf(err, errlen, "OUTBOUND_EMAIL_HOST_PORT=%d is not a port",
		    cfg->outbound_port);
		return -1;
	}
	if (strchr(cfg->outbound_host, ':') != NULL) {
		/* libesmtp splits "host:port" at the first colon. */
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_HOST %s: IPv6 addresses are not supported, "
		    "use a host name",
		    cfg->outbound_host);
		return -1;
	}
	if (cfg->username != NULL && *cfg->username != '\0' && !cfg->use_tls) {
		snprintf(err, errlen,
		    "OUTBOUND_EMAIL_USERNAME is set but OUTBOUND_EMAIL_USE_TLS "
		    "is false: credentials are only sent over TLS");
		return -1;
	}
	if (access(cfg->relay_program, X_OK) == -1) {
		snprintf(err, errlen, "ARNIE_RELAY_PROGRAM %s: %s",
		    cfg->relay_program, strerror(errno));
		return -1;
	}
	return 0;
}

struct relay *
relay_new(const struct config *cfg, char *err, size_t errlen)
{
	struct relay *relay;

	if (check_settings(cfg, err, errlen) == -1)
		return NULL;
	relay = xcalloc(1, sizeof(*relay));
	relay->program = xstrdup(cfg->relay_program);
	relay->host = xstrdup(cfg->outbound_host);
	relay->port = cfg->outbound_port;
	relay->name = xasprintf("%s:%d", relay->host, relay->port);
	relay->use_tls = cfg->use_tls;
	relay->tls_verify = cfg->tls_verify;
	if (cfg->ca_file != NULL)
		relay->ca_file = xstrdup(cfg->ca_file);
	if (cfg->username != NULL && *cfg->username != '\0') {
		relay->username = xstrdup(cfg->username);
		relay->password = secret_strdup(
		    cfg->password != NULL ? cfg->password : "");
	}
	if (cfg->helo_name != NULL && *cfg->helo_name != '\0')
		relay->helo = xstrdup(cfg->helo_name);
	relay->timeout = cfg->send_timeout > 0 ? cfg->send_timeout : 60;
	relay->max_idle = cfg->relay_idle;
	relay->last_used = clock_mono();
	relay->sock = -1;
	/* relay_new() runs on the front-end's thread. */
	relay->nice = getpriority(PRIO_PROCESS, 0) + RELAY_NICE;
	pthread_mutex_init(&relay->lock, NULL);
	/* Started now, so that settings it cannot use (a CA file that does
	 * not load) stop the daemon at start-up, not at the first mail. */
	if (start_relay(relay, err, errlen) == -1) {
		relay_free(relay);
		return NULL;
	}
	return relay;
}

void
relay_free(struct relay *relay)
{
	if (relay == NULL)
		return;
	stop_relay(relay, RELAY_EXIT_WAIT_MS);
	pthread_mutex_destroy(&relay->lock);
	free(relay->program);
	free(relay->host);
	free(relay->name);
	free(relay->ca_file);
	free(relay->username);
	secret_free(relay->password);
	free(relay->helo);
	free(relay);
}

const char *
relay_name(const struct relay *relay)
{
	return relay->name;
}

void
relay_msg_clear(struct relay_msg *msg)
{
	free(msg->rcpt);
	msg->rcpt = NULL;
}
