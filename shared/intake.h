/*
 * intake: one message on its way into the spool, the same for both
 * front-ends.
 *
 * The front-end makes one when the message starts (the listener at DATA,
 * the milter at its first header), with the envelope and the Received:
 * field it prepends, feeds it the message as it arrives (CRLF line ends,
 * no dot-stuffing: what the client meant), ends it, and hands it to the
 * commit queue (commitq.h), which calls intake_commit() and makes it
 * durable.  It decides, in one place for both front-ends:
 *   - the size limit (MAX_MESSAGE_SIZE, on the octets received): past it
 *     nothing more is kept, and what was kept is dropped at once;
 *   - the line length (message.h, MESSAGE_LINE_MAX);
 *   - the header section's size: its completion (message_fixup()) needs
 *     the whole header section in memory, so one larger than
 *     INTAKE_HEADER_MAX is refused;
 *   - the completed message: message_fixup() on the header section, the
 *     rest as it came, so the spool holds the bytes the relay sends;
 *   - what the envelope learns from the header section: the Message-ID,
 *     and when the message expires (X-Arnie-Expire-After: DURATION from
 *     its arrival, or Expires: DATE, the earlier of the two; without
 *     either, DEFAULT_EXPIRE_AFTER).  X-Arnie-* fields are instructions
 *     to Arnie, removed from the message (message.h); one that does not
 *     parse refuses the message, as does an Expires: that has passed; an
 *     Expires: that does not parse is ignored (it is the author's, for
 *     the reader).
 *
 * Memory is bounded by design: at most INTAKE_BUFFER octets of a message
 * are held (more only while its header section is still incomplete, up
 * to INTAKE_HEADER_MAX).  A message that outgrows the buffer goes to a
 * spool draft (spool.h) as it arrives, its header section completed
 * first; a smaller one stays in memory and is written whole by the
 * commit, so the common case costs the disk nothing until then.
 *
 * Disk work happens in intake_flush() and intake_commit() only, which the
 * caller may run on another thread (the standalone listener gives both to
 * the commit queue's writer, so that its event loop never waits on the
 * disk; the milter's connection threads call intake_flush() themselves).
 * The other functions only use memory, except that refusing or freeing a
 * message that already has a draft removes the draft's file.  One thread
 * at a time per intake.  Nothing logs except intake_log_fixes().
 */
#ifndef ARNIE_INTAKE_H
#define ARNIE_INTAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* What a message may hold in memory, and its header section at most. */
#define INTAKE_BUFFER (64 * 1024)
#define INTAKE_HEADER_MAX (1024 * 1024)

enum intake_status {
	INTAKE_OK,            /* ready for the commit */
	INTAKE_TOOBIG,        /* larger than max_size: 552 5.3.4 */
	INTAKE_HEADER_TOOBIG, /* header section over INTAKE_HEADER_MAX:
	                       * 552 5.3.4 too */
	INTAKE_LONGLINE,      /* a line over MESSAGE_LINE_MAX: 554 5.6.0 */
	INTAKE_BADFIELD,      /* an X-Arnie-* field that does not parse:
	                       * 554 5.6.0 and intake_refusal() */
	INTAKE_IOERR,         /* the spool refused a write: intake_errno() */
};

struct intake_opts {
	unsigned fix_opts;    /* message_fixup()'s options (MESSAGE_KEEP_BCC) */
	const char *hostname; /* for the added Message-ID and From */
	size_t max_size;      /* octets received at most; 0: no limit */
	size_t buffer;        /* memory before a draft; 0: INTAKE_BUFFER */
	long default_expire;  /* DEFAULT_EXPIRE_AFTER seconds; 0: none */
	long dedup_window;    /* DEDUP_WINDOW_SECONDS (dedup.h); 0: off */
};

struct envelope;
struct intake;
struct spool;

/*
 * Start a message for env (taken over; its ID, sender and recipients set)
 * with received, the trace field to prepend (copied), arriving at when
 * (for an added Date:).  Never fails.
 */
struct intake *intake_new(struct spool *spool, struct envelope *env,
    const char *received, const struct intake_opts *opts, time_t when);

/* The next len octets of the message, held in memory.  false once it is
 * refused (too big, header section too big, a write error): what follows
 * may be dropped, intake_end() says why. */
bool intake_add(struct intake *in, const void *buf, size_t len);

/* Does it hold more than it may (INTAKE_BUFFER), with its header section
 * complete, so that intake_flush() must run before more is added? */
bool intake_wants_flush(const struct intake *in);

/* Write what it holds to its draft (made now, the first time, with the
 * header section completed), and forget it.  Disk work: see the top.  A
 * write error refuses the message (INTAKE_IOERR). */
void intake_flush(struct intake *in);

/* The message is complete: INTAKE_OK, or why it is refused (nothing of it
 * is then left in the spool once intake_free() is called). */
enum intake_status intake_end(struct intake *in);

/* After INTAKE_OK, on the commit queue's writer thread: write the message
 * file, or the rest of its draft, and rename it into outbox/, durable at
 * the next spool_sync().  0, or -1 with errno; on failure nothing is left
 * behind. */
int intake_commit(struct intake *in);
/* (intake_commit() writes nothing for a duplicate within the dedup
 * window, and returns 0: see intake_duplicate_of().) */

/* The envelope (size set once committed), the errno of INTAKE_IOERR. */
struct envelope *intake_envelope(const struct intake *in);
/* After intake_commit() returned 0: the spool ID of the message this one
 * repeats (dedup.h), when it was not queued for that; else NULL. */
const char *intake_duplicate_of(const struct intake *in);
/* The message is durable (outbox/ fsynced): record it in the dedup index
 * if it is to be.  On the committing thread; errors are logged. */
void intake_committed(struct intake *in);
int intake_errno(const struct intake *in);
/* The octets received so far, and the longest line, for the log. */
size_t intake_received(const struct intake *in);
size_t intake_longest_line(const struct intake *in);
/* Why INTAKE_BADFIELD, for the client: "X-Arnie-Expire-After: 'soon' is
 * not a duration (90s, 15m, 2h, 1d)". */
const char *intake_refusal(const struct intake *in);
/* message_fix_log() for the message: what the completion changed. */
void intake_log_fixes(const struct intake *in);

/* Free it; a message not committed leaves nothing behind. */
void intake_free(struct intake *in);

#endif
