/*
 * spool: Arnie's on-disk queue, FILES_DIRECTORY/arniefiles/.
 *
 *   inbox/     files being written; anything left here at start-up is junk
 *   outbox/    queued messages, one file each, named by message ID
 *   sent/      delivered messages, kept only when SAVE_SENT_MAIL is true
 *   failed/    messages given up on, with the reason in their envelope
 *   corrupt/   files in outbox/ that did not parse, set aside for a human
 *   spare/     empty files to reuse for new messages (spares.h)
 *   hold/      messages an operator put on hold (arnie-queue hold)
 *   control/   arnie-queue's requests to the sender, and its answers
 *   dedup/     the index of Message-IDs accepted lately (dedup.h)
 *   outcomes/  final outcomes waiting for OUTCOME_COMMAND (hooks.h)
 *   sender.lock  flock(2)ed by the one process that relays this spool
 *
 * A message file is a versioned text envelope ("arnie-spool 2", key: value
 * lines; see envelope.h), a blank line, then the message exactly as
 * accepted (CRLF line ends).  It is written once and never modified: what
 * changes later (recipients' states, attempts, replies) goes into a small
 * state file beside it, "ID.state", which holds the whole envelope as it
 * stands, and wins over the message file's own header.  The format is
 * documented in docs/spool-format.md; files of 0.1.0 ("arnie-spool 1") are
 * read the same way.
 *
 * Durability: spool_write() (or a draft, written in pieces) writes to
 * inbox/, fsyncs the file and renames it into outbox/; spool_sync() fsyncs
 * outbox/.  Only after both may a front-end say 250.  A state change
 * (spool_update(), spool_finish()) writes a new state file, fsynced, that is
 * renamed over the old one: it costs the envelope, never a copy of the
 * message.  It is visible to every process at once, which is what keeps a
 * restarted daemon from sending again what was delivered; it becomes
 * durable against a power loss at the next spool_sync(), which the sender
 * runs once per session (at its end, or at the start of the next when one
 * follows at once).  Until then a power loss can only bring back the
 * previous state (a message sent again, never one lost: a final state in
 * failed/ is durable before the queued message goes; sent/ is synced once
 * per session, just before outbox/ (spool_sync_finished()), so a power
 * loss may lose the copy kept of a message already delivered).  Directory
 * file descriptors stay open for the life of the spool.
 *
 * All functions are safe to call from several threads at once.  They return
 * 0 or -1 with errno set, and never exit or log, except where noted.
 */
#ifndef ARNIE_SPOOL_H
#define ARNIE_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include "envelope.h"

/* Is name a message ID (exactly SPOOL_IDLEN upper-case hex digits)? */
bool spool_is_id(const char *name);
/* Is name a message ID followed by suffix (".state")?  The ID goes to
 * id. */
bool spool_is_id_with(
    const char *name, const char *suffix, char id[SPOOL_IDLEN + 1]);

struct spool;

/* Open (creating with mode 0700 as needed) dir and its sub-folders. */
struct spool *spool_open(const char *dir, bool save_sent);
void spool_close(struct spool *spool);
const char *spool_path(const struct spool *spool);
/* Absolute path of outbox/, for inotify. */
const char *spool_outbox_path(const struct spool *spool);

/* Keep spare files ready for new messages (spares.h): a background thread,
 * for a daemon that takes messages.  0, or -1 with errno. */
int spool_keep_spares(struct spool *spool);

/* Remove leftovers of interrupted writes from inbox/, and state files in
 * outbox/ or hold/ whose message is gone, after putting back beside its
 * message a state that a hold or release cut short left in hold/ (logged:
 * the one line this module writes); returns how many files were removed
 * from inbox/ and outbox/, or -1 with errno. */
int spool_cleanup_inbox(struct spool *spool);

/* A fresh unique ID; front-ends take one early for their Received: line.
 * IDs are unique per process whatever the spool, so spool may be NULL. */
void spool_new_id(struct spool *spool, char id[SPOOL_IDLEN + 1]);
/* The arrival time encoded in an ID, or -1 if it is not one. */
time_t spool_id_time(const char *id);
/* Was the ID made by this process (its PID part is ours, as spool_new_id()
 * writes it)?  Another process with the same low 24 bits of PID could
 * have made it too: for hints, never for safety. */
bool spool_id_is_ours(const char *id);

/*
 * Accept a message: assign env->id if empty, set env->created (if 0),
 * env->size and env->next_attempt (if 0, to now), write envelope + the
 * message given as iov into inbox/, fsync, close, rename into outbox/.
 * Not yet durable until spool_sync().  On failure nothing is left behind.
 * errno EEXIST: a message with that ID is queued already (never replaced).
 */
int spool_write(struct spool *spool, struct envelope *env,
    const struct iovec *iov, int iovcnt);
/*
 * A message written in pieces, for front-ends that stream it: the envelope
 * header first (env as spool_write() sets it up, its size left blank), then
 * the message as it arrives, then spool_draft_commit(), which fills in the
 * size, fsyncs, closes and renames into outbox/ (env->size set), durable at
 * the next spool_sync().  A write error is kept and reported again by every
 * later call, so a caller may go on feeding and look once at the end.  On
 * any failure of spool_draft_commit(), and by spool_draft_abort(), the file
 * is removed and the draft freed.  env is borrowed until then.  One thread
 * at a time per draft.
 */
struct spool_draft;
struct spool_draft *spool_draft_new(struct spool *spool, struct envelope *env);
int spool_draft_write(
    struct spool_draft *d, const struct iovec *iov, int iovcnt);
int spool_draft_commit(struct spool *spool, struct spool_draft *d);
void spool_draft_abort(struct spool *spool, struct spool_draft *d);

/* fsync outbox/: makes every spool_write(), and every state change that
 * returned before, durable. */
int spool_sync(struct spool *spool);
/* fsync sent/ if spool_finish() moved messages there since the last call:
 * by the sender's thread, before its spool_sync(). */
int spool_sync_finished(struct spool *spool);
/* spool_write() + spool_sync(); if the sync fails, the file is discarded
 * again so that nothing unacknowledged stays queued. */
int spool_commit(struct spool *spool, struct envelope *env,
    const struct iovec *iov, int iovcnt);
/*
 * The SMTP reply a front-end gives when a commit failed with errno err:
 * "452 4.3.1 Insufficient system storage" when the disk or the quota is
 * full (ENOSPC, EDQUOT: RFC 3463 X.3.1, the client may try again later),
 * else "451 4.3.0 Queue file write error".  Static strings.
 */
struct spool_reply {
	const char *code;     /* "452" */
	const char *enhanced; /* "4.3.1" */
	const char *text;     /* "Insufficient system storage" */
};
void spool_commit_reply(int err, struct spool_reply *reply);

/* Remove outbox/ID (and any state) and fsync outbox/: for a message whose
 * commit failed after spool_write() (the client gets 4xx and retries, so
 * keeping it would send it twice).  Unlinked, never kept as a spare: the
 * sender may have opened it already.  errno ENOENT: not there. */
int spool_discard(struct spool *spool, const char *id);

/*
 * What a scan saw of a message: lookups its first spool_load_known() need
 * not repeat.  With many messages queued those lookups (mostly of names
 * that do not exist) were most of the start-up work, and they share
 * outbox/'s lock with the commits of new mail.
 */
#define SPOOL_KNOWN_NO_STATE 0x1   /* no outbox/ID.state */
#define SPOOL_KNOWN_UNFINISHED 0x2 /* nothing of it in sent/ or failed/ */

typedef void spool_scan_fn(const char *id, unsigned known, void *arg);
/* Call fn for each message in outbox/ (one read of outbox/), with known
 * 0.  On a read error (-1, errno set) the messages read so far were
 * given. */
int spool_scan(struct spool *spool, spool_scan_fn *fn, void *arg);
/* What the start-up scan saw: SPOOL_KNOWN_*, and the time before which
 * the message is not worth reading (its state file's date, set by
 * spool_update() and spool_reschedule() to the envelope's
 * envelope_next_look()), or 0 when it is worth reading now. */
typedef void spool_scan_known_fn(
    const char *id, unsigned known, time_t not_before, void *arg);
/* spool_scan(), knowing more at the price of reading sent/ and failed/
 * too (when outbox/ holds messages) and of one fstatat() per state file:
 * for the sender's start-up scan, not for every rescan.  The dates are
 * only as fresh as the scan, as SPOOL_KNOWN_* are. */
int spool_scan_known(struct spool *spool, spool_scan_known_fn *fn, void *arg);

/* Read outbox/ID's envelope as it stands (its state file if it has one).
 * errno ENOENT: gone; EBADMSG: the message file or its state does not parse
 * or they do not fit together (the caller moves them with
 * spool_quarantine()).  If a crash interrupted spool_finish() after the
 * final state reached sent/ or failed/, the move is completed here with a
 * log line and ENOENT is returned. */
int spool_load(struct spool *spool, const char *id, struct envelope **envp);
/* spool_load(), trusting what a scan knew (SPOOL_KNOWN_*; 0: nothing).
 * The knowledge is only as fresh as the scan: for a message's first load
 * after it, by the process that holds the sender lock (no other writes
 * state files). */
int spool_load_known(struct spool *spool, const char *id, unsigned known,
    struct envelope **envp);
/* spool_load_known(), and the message from the same open, positioned at
 * its body as spool_open_message() gives it: one open and one read of the
 * file for the sender's load of a message it is about to send.  *bodyp is
 * NULL unless 0 is returned. */
int spool_load_open(struct spool *spool, const char *id, unsigned known,
    struct envelope **envp, FILE **bodyp);
/* Open the message of a loaded envelope, positioned at body_offset. */
FILE *spool_open_message(struct spool *spool, const struct envelope *env);
/* Close a message opened by the two above, off the caller's path when the
 * spool keeps spares (spares_close_later(): the last close of a delivered
 * message's file is slow). */
void spool_close_message(struct spool *spool, FILE *fp);

/* Write env's new state: outbox/ID.state, dated at the message's next
 * look (envelope_next_look(): spool_scan_known() reads the date), fsynced,
 * renamed over the old one (durable at the next spool_sync()); the
 * message file is untouched. */
int spool_update(struct spool *spool, const struct envelope *env);

/* spool_update() for a change a power loss may undo: a new next-attempt
 * time (arnie-queue retry, flush).  Not fsynced: one fsync per message
 * would make a flush of a large queue slow; lost, the message keeps its
 * old time. */
int spool_reschedule(struct spool *spool, const struct envelope *env);

enum spool_fate {
	SPOOL_SENT,   /* to sent/ with SAVE_SENT_MAIL, else deleted */
	SPOOL_FAILED, /* to failed/, envelope kept with the reason */
};
/* Take a message out of the queue for good, with env's final state: to
 * failed/ (the message file moved, env as ID.state beside it, durable on
 * return), to sent/ (the same, durable at the next spool_sync_finished(),
 * the state's contents never fsynced), or deleted; the removal from
 * outbox/ is durable at the next spool_sync(). */
int spool_finish(
    struct spool *spool, const struct envelope *env, enum spool_fate fate);
/* Move an unreadable outbox/ID, and its state file, to corrupt/. */
int spool_quarantine(struct spool *spool, const char *id);

/* Remove what sent/ holds of at most max messages sent before `before`
 * (the time of their state file, else of the message file;
 * SENT_RETENTION_DAYS), never the state of a move to sent/ a crash cut
 * short.  Returns how many messages went, or -1 with errno if sent/
 * cannot be read. */
int spool_prune_sent(struct spool *spool, time_t before, int max);

/*
 * Does the spool at dir (not opened) belong to uid: the folder, its
 * sub-folders, the sender lock and every file queued in outbox/?  0 when it
 * does or does not exist yet; -1 with *what naming the first part that
 * does not ("outbox", "a file in outbox", ...).  For a daemon about to
 * become that user.
 */
int spool_check_owner(const char *dir, uid_t uid, const char **what);

/*
 * The folders a message may be in, for tools that look at all of them
 * (arnie-queue).  The sender itself only ever loads from outbox/.
 */
enum spool_folder {
	SPOOL_IN_OUTBOX,
	SPOOL_IN_HOLD,
	SPOOL_IN_FAILED,
	SPOOL_IN_SENT,
	SPOOL_IN_CORRUPT,  /* files that did not parse: scans only */
	SPOOL_IN_CONTROL,  /* arnie-queue's requests (queuectl.h): lists only */
	SPOOL_IN_DEDUP,    /* the Message-ID index (dedup.h): no messages */
	SPOOL_IN_OUTCOMES, /* outcomes for OUTCOME_COMMAND (hooks.h) */
};
#define SPOOL_NFOLDERS 8
/* "outbox", "hold", "failed", "sent", "corrupt", "control", "dedup",
 * "outcomes". */
const char *spool_folder_name(enum spool_folder folder);
/* A folder's descriptor, for the modules that keep files of their own
 * there (control/: queuectl.h; dedup/: dedup.h). */
int spool_dir_fd(const struct spool *spool, enum spool_folder folder);
/* A message ID as a value, for lists of them. */
typedef char spool_id[SPOOL_IDLEN + 1];
/* The IDs of the messages in folder, sorted: oldest first.  *ids is
 * owned (free()), NULL when *n is 0.  -1 with errno if it cannot be
 * read. */
int spool_list(
    struct spool *spool, enum spool_folder folder, spool_id **ids, size_t *n);
/* spool_scan() of any folder: each message in it (not its state file). */
int spool_scan_folder(struct spool *spool, enum spool_folder folder,
    spool_scan_fn *fn, void *arg);
/* How many messages a folder holds, their files' octets (state files
 * included) and the oldest one's arrival (0 when empty). */
struct spool_usage {
	size_t messages;
	unsigned long long bytes;
	time_t oldest;
};
int spool_folder_usage(
    struct spool *spool, enum spool_folder folder, struct spool_usage *u);
/* Read a message's envelope in any folder as it stands, for tools that
 * do not hold the sender lock: without spool_load()'s repairs of an
 * interrupted move (they could race the sender's own moves), so a
 * message a crash left half moved may be seen in two folders. */
int spool_load_from(struct spool *spool, enum spool_folder folder,
    const char *id, struct envelope **envp);
/* spool_open_message() of any folder. */
FILE *spool_open_message_from(
    struct spool *spool, enum spool_folder folder, const struct envelope *env);

/*
 * An operator's actions (arnie-queue), by the process that holds the
 * sender lock only, so that no message changes under the sender's feet.
 * Each is durable on return and can be cut short by a crash at any point
 * without losing the message or its state (spool_cleanup_inbox() mends
 * what a hold or release left half done; a rename that fails is undone).
 * errno ENOENT: not in the folder the action takes it from.
 */
/* outbox/ -> hold/: not sent until released. */
int spool_hold(struct spool *spool, const char *id);
/* hold/ -> outbox/, as it was. */
int spool_release(struct spool *spool, const char *id);
/* Remove the message from outbox/, hold/ or failed/ (the first it is in,
 * set in *where). */
int spool_delete(struct spool *spool, const char *id, enum spool_folder *where);
/* failed/ -> outbox/ with fresh attempts: its failed recipients pending
 * again, no attempt spent, due at now, a new lifetime from now (created
 * now, no expiry); recipients the upstream took stay done.  EINVAL: it
 * has no recipient left to try; EEXIST: outbox/ has a copy already. */
int spool_requeue(struct spool *spool, const char *id, time_t now);

/* The sender's status (stats.h), sender.status beside sender.lock:
 * replaced whole (written as .sender.status.new, renamed), never
 * fsynced: it says how things stand, it is not the queue.  For the
 * holder of the sender lock only. */
int spool_put_status(struct spool *spool, const char *text);
/* Read it (owned): -1 with errno ENOENT when no sender wrote one. */
int spool_get_status(struct spool *spool, char **textp);

/* Try to become the one sender of this spool: a non-blocking flock on
 * sender.lock, held until spool_close().  -1 with EWOULDBLOCK when another
 * process holds it. */
int spool_lock_sender(struct spool *spool);

#endif
