/*
 * smtpd: the standalone SMTP listener, on one libevent loop.
 *
 * It accepts many concurrent clients on cfg->listen_address:listen_port and
 * speaks RFC 5321 with PIPELINING, SIZE, 8BITMIME, ENHANCEDSTATUSCODES
 * and HELP; no STARTTLS and no AUTH (it serves local programs on
 * loopback), and no SMTPUTF8: the relay cannot pass it on, so MAIL ...
 * SMTPUTF8 gets 555 and a non-ASCII address 553 5.6.7.  At the end of DATA
 * it prepends a Received: line and hands the message to the commit queue;
 * it answers 250 only when the commit queue reports the message durable,
 * 452 4.3.1 or 451 4.3.0 when the commit failed.  While a
 * commit runs the session reads nothing more from its client, and pipelined
 * commands already received wait until the DATA reply has been sent.
 *
 * The loop never waits on the disk: commits run on the commit queue's
 * writer thread, whose callback wakes the session with event_active().  So
 * evthread_use_pthreads() must have been called before the event base was
 * created.  Everything else runs on the loop's thread.
 */
#ifndef ARNIE_SMTPD_H
#define ARNIE_SMTPD_H

struct commitq;
struct config;
struct event_base;
struct spool;

struct smtpd;

/*
 * Bind and listen on cfg->listen_address:cfg->listen_port (an IPv4 or IPv6
 * literal; brackets around IPv6 are allowed), without accepting anyone yet:
 * a daemon started as root binds first, then becomes ARNIE_USER and opens
 * its spool.  cfg is borrowed and must outlive the smtpd.  Returns NULL
 * with errno set when the address does not parse (EINVAL) or cannot be
 * bound.
 */
struct smtpd *smtpd_new(struct event_base *base, const struct config *cfg);

/* Start accepting clients, committing their mail through q into spool
 * (both borrowed, to outlive the smtpd). */
void smtpd_start(struct smtpd *sd, struct spool *spool, struct commitq *q);

/* "127.0.0.1:8025" or "[::1]:8025", for log lines.  Borrowed. */
const char *smtpd_address(const struct smtpd *sd);

/*
 * Begin a shutdown: close the listener, answer 421 to every idle session
 * and close it; a session whose commit is running gets its 250/451, then
 * 421.  The loop is made to exit when the last session is gone, or after
 * grace_seconds at most.
 */
void smtpd_shutdown(struct smtpd *sd, int grace_seconds);

/*
 * Close every remaining session and free sd; NULL is accepted.  Call it
 * after commitq_free(), so that no commit callback can still arrive.
 */
void smtpd_free(struct smtpd *sd);

#endif
