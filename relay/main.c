/*
 * arnie-relay: the program that speaks SMTP to the upstream smarthost.
 *
 * Started by arnie or arnie-milter (shared/relay.c), never by hand, with
 * its control socket as descriptor 3; the protocol is relay_proto.h.  It
 * is told the upstream's settings once, then runs one libesmtp session
 * (session.h) for each batch it is given, reading each message from the
 * spool file descriptor that came with it, and reports every message's
 * results as soon as they are final.  The daemon records them while the
 * next message goes out; that message's final "." waits until they are
 * recorded, so a crash duplicates at most one message.  It exits when the
 * socket closes.
 *
 * What it never does: open a spool file by itself (it is not told where the
 * spool is; it reads the files the daemon hands it), write to the disk,
 * gain privileges (no_new_privs), or leave a core file (it holds the
 * password, and libesmtp's AUTH buffers are not in no-dump pages).  Once it
 * has its settings the kernel holds it to the writing part (sandbox.h): no
 * file written anywhere, TCP to the upstream's port only.  Reading is not
 * restricted: it runs as the daemon's user and needs the CA store and the
 * resolver's files.  A crash costs one session: the daemon sees the socket
 * close and starts another relay.  Its log lines go to the daemon, which
 * writes them where its own go.
 *
 * Exit codes: 0 when the daemon closed the socket, 78 when the settings do
 * not work (the daemon has the message), 76 on a protocol error, 70 when
 * started without the socket.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "log.h"
#include "relay_proto.h"
#include "sandbox.h"
#include "secret.h"
#include "session.h"
#include "wire.h"
#include "xmalloc.h"

static const int ctl = RELAY_PROTO_FD;
/* A message's results, sent together when its DONE is (wire_flush()):
 * the daemon wakes once per message. */
static struct wire_held *results;

/* Log lines travel to the daemon; nothing else is written anywhere. */
static void
log_to_daemon(int priority, const char *text)
{
	char prio[8];

	snprintf(prio, sizeof(prio), "%d", priority);
	(void)wire_sendv(ctl, RR_LOG, -1, prio, text, NULL);
}

static void __attribute__((noreturn))
protocol_error(const char *what)
{
	log_warnx("relay: protocol error from the daemon: %s", what);
	exit(EX_PROTOCOL);
}

/* The next record; the daemon closing the socket ends the program. */
static void
next(struct wire_rec *r)
{
	int got = wire_recv(ctl, r, -1);

	if (got == 0)
		exit(0);
	if (got == -1) {
		if (errno == EBADMSG)
			protocol_error("not a record");
		exit(EX_IOERR);
	}
}

/* What the process must not keep or gain, before it reads a secret. */
static void
lock_down(void)
{
	struct rlimit none = {0, 0};
	sigset_t all;

	/* The daemon's sender thread blocks every signal, and a mask
	 * survives exec. */
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	(void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	(void)setrlimit(RLIMIT_CORE, &none);
	/* Nothing but the standard descriptors and the control socket. */
	(void)close_range((unsigned)ctl + 1, ~0U, 0);
}

static int
flag(const struct wire_rec *r, size_t i)
{
	const char *s = wire_text(r, i);

	return s != NULL && strcmp(s, "1") == 0;
}

/* The kernel's limits (sandbox.h), now that the settings are read. */
static void
enter_sandbox(int port)
{
	char why[128];
	int rc = sandbox_enter(port, why, sizeof(why));

	if (rc == 1)
		log_debug("relay: sandboxed: no file writes, TCP to ports %d "
		          "and 53 only",
		    port);
	else if (rc == 0)
		log_debug("relay: sandbox partly or not in force: %s", why);
	else
		log_warn("relay: cannot enter the sandbox");
}

/* CONFIG: the settings, checked by building a session; then the
 * sandbox; READY or FAILED. */
static struct session *
configure(void)
{
	struct session_settings set;
	struct wire_rec *r = xcalloc(1, sizeof(*r));
	struct session *s;
	uint64_t port, timeout;
	char err[512];

	next(r);
	if (r->type != RR_CONFIG || r->n != 9 ||
	    wire_number(r, 1, 65535, &port) == -1 ||
	    wire_number(r, 8, 86400, &timeout) == -1 ||
	    wire_text(r, 0) == NULL || wire_text(r, 6) == NULL)
		protocol_error("CONFIG expected");
	memset(&set, 0, sizeof(set));
	set.host = wire_text(r, 0);
	set.port = (int)port;
	set.use_tls = flag(r, 2);
	set.tls_verify = flag(r, 3);
	set.ca_file = r->len[4] > 0 ? wire_text(r, 4) : NULL;
	set.username = r->len[5] > 0 ? wire_text(r, 5) : NULL;
	set.password = wire_text(r, 6);
	set.helo = r->len[7] > 0 ? wire_text(r, 7) : NULL;
	set.timeout = (long)timeout;
	s = session_new(&set, err, sizeof(err));
	/* The record held the password: gone before anything else. */
	explicit_bzero(r, sizeof(*r));
	free(r);
	if (s == NULL) {
		(void)wire_sendv(ctl, RR_FAILED, -1, err, NULL);
		exit(EX_CONFIG);
	}
	enter_sandbox((int)port);
	if (wire_sendv(ctl, RR_READY, -1, NULL) == -1)
		exit(EX_IOERR);
	return s;
}

/* One batch as the daemon sends it: n MSG records, each followed by its
 * RCPT records, then GO.  Strings live in one arena per message. */
struct batch {
	struct session_msg *msgs;
	size_t n;
	char **strings; /* owned, per message */
};

static char *
save(char **arena, size_t *used, const char *s)
{
	size_t len = strlen(s) + 1;
	char *p;

	*arena = xreallocarray(*arena, *used + len, 1);
	p = *arena + *used;
	memcpy(p, s, len);
	*used += len;
	return p;
}

/* Read one MSG and its RCPTs into m; the arena's pointers are fixed up
 * once it stops growing. */
static void
read_message(struct session_msg *m, char **arena, size_t index)
{
	struct wire_rec *r = xcalloc(1, sizeof(*r));
	uint64_t num[3];
	size_t used = 0, j, *addr_off, id_off, sender_off;

	next(r);
	if (r->type != RR_MSG || r->n != 6 || r->fd == -1 ||
	    wire_number(r, 0, SIZE_MAX, &num[0]) == -1 || num[0] != index ||
	    wire_number(r, 3, UINT64_MAX, &m->size) == -1 ||
	    wire_number(r, 4, INT64_MAX, &num[1]) == -1 ||
	    wire_number(r, 5, 1000000, &num[2]) == -1 ||
	    wire_text(r, 1) == NULL || wire_text(r, 2) == NULL)
		protocol_error("MSG expected");
	m->index = index;
	m->fd = r->fd;
	m->offset = (off_t)num[1];
	m->nrcpts = (size_t)num[2];
	m->rcpts = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*m->rcpts));
	*arena = NULL;
	id_off = used;
	save(arena, &used, wire_text(r, 1));
	sender_off = used;
	save(arena, &used, wire_text(r, 2));
	addr_off = xcalloc(m->nrcpts ? m->nrcpts : 1, sizeof(*addr_off));
	for (j = 0; j < m->nrcpts; j++) {
		next(r);
		if (r->type != RR_RCPT || r->n != 3 ||
		    wire_number(r, 0, SIZE_MAX, &num[0]) == -1 ||
		    num[0] != index ||
		    wire_number(r, 1, SIZE_MAX, &num[1]) == -1 ||
		    wire_text(r, 2) == NULL)
			protocol_error("RCPT expected");
		m->rcpts[j].index = (size_t)num[1];
		addr_off[j] = used;
		save(arena, &used, wire_text(r, 2));
	}
	m->id = *arena + id_off;
	m->sender = *arena + sender_off;
	for (j = 0; j < m->nrcpts; j++)
		m->rcpts[j].addr = *arena + addr_off[j];
	free(addr_off);
	free(r);
}

static void
read_batch(struct batch *b, size_t n)
{
	struct wire_rec *r = xcalloc(1, sizeof(*r));
	size_t i;

	b->n = n;
	b->msgs = xcalloc(n ? n : 1, sizeof(*b->msgs));
	b->strings = xcalloc(n ? n : 1, sizeof(*b->strings));
	for (i = 0; i < n; i++)
		read_message(&b->msgs[i], &b->strings[i], i);
	next(r);
	if (r->type != RR_GO)
		protocol_error("GO expected");
	free(r);
}

static void
free_batch(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++) {
		close(b->msgs[i].fd);
		free(b->msgs[i].rcpts);
		free(b->strings[i]);
	}
	free(b->msgs);
	free(b->strings);
}

static void
send_result(int type, size_t index, const char *rcpt_or_flags[2],
    const struct relay_result *res)
{
	char idx[24], status[8], code[16];

	snprintf(idx, sizeof(idx), "%zu", index);
	snprintf(status, sizeof(status), "%d", (int)res->status);
	snprintf(code, sizeof(code), "%d", res->code);
	if (type == RR_RESULT) {
		if (wire_holdv(results, RR_RESULT, -1, idx, rcpt_or_flags[0],
		        rcpt_or_flags[1], status, code, res->reply,
		        NULL) == -1)
			exit(EX_IOERR);
	} else if (wire_holdv(results, RR_RRESULT, -1, idx,
	               rcpt_or_flags[0], status, code, res->reply,
	               NULL) == -1)
		exit(EX_IOERR);
}

/*
 * The message whose results the daemon has not acknowledged yet, if any:
 * at most one at a time, so that the daemon never has more than one ACK
 * to send while the relay is busy sending results (neither can then block
 * the other on a full socket).
 */
static bool unacked;
static size_t unacked_index;

/* session_settle_fn: wait until the daemon has recorded what it was
 * sent; -1 when it says to stop. */
static int
settle(void *arg)
{
	struct wire_rec *r;
	uint64_t got;
	int stop;

	(void)arg;
	if (!unacked)
		return 0;
	r = xcalloc(1, sizeof(*r));
	next(r);
	if (r->type != RR_ACK || r->n != 2 ||
	    wire_number(r, 0, SIZE_MAX, &got) == -1 || got != unacked_index)
		protocol_error("ACK expected");
	unacked = false;
	stop = flag(r, 1);
	free(r);
	return stop ? -1 : 0;
}

/* session_result_fn: the results, sent to be recorded while the session
 * goes on (settle() waits for the daemon's word). */
static int
report(void *arg, struct session_msg *m)
{
	const char *flags[2] = {m->attempted ? "1" : "0",
	    m->queue_wide ? "1" : "0"};
	char idx[24], rcpt[24];
	const char *which[2] = {rcpt, NULL};
	size_t j;

	if (settle(arg) == -1)
		return -1;
	send_result(RR_RESULT, m->index, flags, &m->data);
	for (j = 0; j < m->nrcpts; j++) {
		snprintf(rcpt, sizeof(rcpt), "%zu", m->rcpts[j].index);
		send_result(RR_RRESULT, m->index, which, &m->rcpts[j].result);
	}
	snprintf(idx, sizeof(idx), "%zu", m->index);
	if (wire_holdv(results, RR_DONE, -1, idx, NULL) == -1 ||
	    wire_flush(results) == -1)
		exit(EX_IOERR);
	unacked = true;
	unacked_index = m->index;
	return 0;
}

int
main(int argc, char *argv[])
{
	struct wire_rec *r;
	struct session *s;
	struct batch b;
	enum relay_status st;
	char reason[RELAY_REPLY_MAX], status[8];
	uint64_t n;

	(void)argc;
	(void)argv;
	if (fcntl(ctl, F_GETFD) == -1) {
		fprintf(stderr, "arnie-relay: started by arnie or "
		                "arnie-milter only (no control socket)\n");
		return EX_SOFTWARE;
	}
	lock_down();
	log_init("arnie-relay", NULL, 1);
	log_set_sink(log_to_daemon);
	if (wire_sendv(ctl, RR_HELLO, -1, RELAY_PROTO_HELLO, NULL) == -1)
		return EX_IOERR;
	s = configure();
	if ((results = wire_held_new(ctl)) == NULL)
		return EX_OSERR;
	r = xcalloc(1, sizeof(*r));
	for (;;) {
		next(r);
		if (r->type != RR_BEGIN ||
		    wire_number(r, 0, 100000, &n) == -1)
			protocol_error("BEGIN expected");
		read_batch(&b, (size_t)n);
		st = session_run(s, b.msgs, b.n, report, settle, NULL, reason,
		    sizeof(reason));
		/* The last results are final either way: the session's end
		 * only needs them recorded. */
		(void)settle(NULL);
		free_batch(&b);
		snprintf(status, sizeof(status), "%d", (int)st);
		if (wire_sendv(ctl, RR_END, -1, status, reason, NULL) == -1)
			return EX_IOERR;
	}
}
