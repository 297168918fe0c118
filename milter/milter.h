/*
 * milter: the libmilter front-end of Arnie.
 *
 * Turns each MTA transaction (MAIL, every accepted RCPT, the header fields
 * and the body exactly as the MTA passes them) into one envelope and one
 * intake (intake.h, as the standalone listener does): from its first header
 * field the message gets its spool ID and a Received: field for the hop
 * (message_received(): the client as the MTA saw it, Arnie's host name and
 * spool ID, the MTA's queue ID; no "from" clause for a local submission),
 * its header section is completed (message.h), and a message bigger than
 * the intake's buffer is written to the spool as it arrives.  At
 * end-of-message it is committed through the commit queue (commitq.h),
 * which the connection threads share, so messages ending together share
 * one directory fsync.  Only after the commit has returned does it answer
 * SMFIS_DISCARD (divert mode: the MTA keeps nothing) or SMFIS_ACCEPT
 * (copy mode: the MTA delivers too).  Anything that goes wrong while
 * accepting answers SMFIS_TEMPFAIL (452 4.3.1 for a full disk, else 451
 * 4.3.0), so the MTA keeps or refuses the mail and nothing is lost.  What
 * Arnie will not relay is refused in divert mode (552 5.3.4 over
 * MAX_MESSAGE_SIZE or for a header section over 1 MiB, 553 5.6.7 for a
 * non-ASCII address, 554 5.6.0 for a line over 998 octets, 554 5.6.7 for
 * SMTPUTF8 with a non-ASCII header); in copy mode the MTA delivers it and
 * Arnie keeps no copy (or, for a non-ASCII recipient, none for that
 * recipient).
 *
 * Never includes libevent and never writes a spool file itself.  The state
 * of a connection lives in its SMFICTX private pointer and is freed by the
 * abort and close callbacks, so one connection may carry many transactions.
 */
#ifndef ARNIE_MILTER_H
#define ARNIE_MILTER_H

struct commitq;
struct config;
struct spool;

/*
 * Remember the configuration, the spool and the commit queue into it (which
 * wakes the sender).  All three are borrowed and must outlive smfi_main()
 * and milter_drain().  Call once, before smfi_main().
 */
void milter_init(
    const struct config *cfg, struct spool *spool, struct commitq *q);

/*
 * Register the callbacks and open the socket named in conn, in libmilter's
 * syntax ("inet:PORT@HOST", "inet6:PORT@HOST", "unix:/path" or
 * "local:/path").  A stale unix socket is removed first and the new one is
 * made mode 0660 so that a member of the daemon's group (the MTA's user) can
 * connect.  The socket is listening when this returns 0; -1 (already
 * logged) on failure.  smfi_main() then serves it, once milter_init() has
 * been called; this may come first, so that a daemon started as root can
 * listen before it becomes ARNIE_USER.
 */
int milter_listen(const char *conn);

/* The file of a "unix:" or "local:" socket named in conn (a pointer into
 * it), or NULL for an inet socket. */
const char *milter_socket_path(const char *conn);

/*
 * Call after smfi_main() has returned, before freeing what milter_init()
 * was given: libmilter does not wait for the threads that run callbacks.
 * Waits up to seconds for the callbacks under way (a commit) to return;
 * later ones touch nothing and answer 421 4.3.2 (SMFIS_TEMPFAIL), so the MTA
 * keeps the mail.  Returns 0 when none is left, -1 when one still runs:
 * then nothing given to milter_init() may be freed.
 */
int milter_drain(int seconds);

#endif
