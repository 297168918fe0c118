/*
 * envelope: a queued message's envelope (sender, recipients and their
 * states, attempts, timing) and its text form, the header of a spool file
 * (docs/spool-format.md).
 *
 * Pure: nothing here touches the disk or logs; memory comes from xmalloc.
 * spool.c reads and writes the files, this module the text in them.
 */
#ifndef ARNIE_ENVELOPE_H
#define ARNIE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* IDs: 13 hex digits of microseconds since the epoch (strictly increasing in
 * a process) + 6 hex digits of the process ID, so they sort by arrival. */
#define SPOOL_IDLEN 19

enum rcpt_state {
	RCPT_PENDING,		/* not yet accepted by the upstream */
	RCPT_SENT,		/* accepted (2xx): never sent again */
	RCPT_FAILED,		/* refused for good (5xx) or given up */
};

/* "pending", "sent" or "failed", as in the spool file. */
const char *spool_rcpt_state_name(enum rcpt_state state);

struct spool_rcpt {
	char *addr;		/* without angle brackets; owned */
	enum rcpt_state state;
	char *reply;		/* last upstream reply for it, or NULL; owned */
};

/* A message's envelope.  Public because front-ends fill it and the sender
 * updates it; every pointer in it is owned by the envelope. */
struct envelope {
	char id[SPOOL_IDLEN + 1]; /* "" until assigned */
	char *sender;		/* reverse path without <>, "" for <> */
	struct spool_rcpt *rcpts;
	size_t nrcpts;
	time_t created;		/* arrival */
	unsigned attempts;	/* attempts spent on this message */
	time_t next_attempt;	/* not before this time */
	char *last_reply;	/* latest reply or reason, or NULL */
	char *origin;		/* for the log: "client=..., helo=..." or NULL */
	char *message_id;	/* its Message-ID field, <> included, or NULL */
	time_t expires;		/* never sent from this time on; 0: no limit */
	uint64_t size;		/* octets of the message after the blank line */
	off_t body_offset;	/* where the message starts in the file (load) */
};

struct envelope *envelope_new(void);
/* Append a pending recipient (copied). */
void envelope_add_rcpt(struct envelope *env, const char *addr);
/* Number of recipients still RCPT_PENDING. */
size_t envelope_pending(const struct envelope *env);
/* When the message is next worth a look: its next attempt, or its
 * deadline (expires) if that comes first. */
time_t envelope_next_look(const struct envelope *env);
void envelope_set_reply(char **slot, const char *reply);
void envelope_free(struct envelope *env);

/*
 * Serialise the envelope header ("arnie-spool 2"), including the blank line
 * that ends it; the size value is padded with spaces to ENVELOPE_SIZE_WIDTH
 * columns.  Returns an owned string and its length.  Replies are stored on
 * one line: CR, LF, other control characters and '%' inside them are
 * percent-encoded (%0D%0A), so they come back from envelope_parse()
 * unchanged.  An empty reply, last_reply or origin is stored as none
 * (NULL).
 */
char *envelope_format(const struct envelope *env, size_t *lenp);
/*
 * Parse a spool file's text ("arnie-spool 2", or 1 as written by 0.1.0):
 * header, blank line, message.  len is the size of the whole file.  Sets
 * *envp (owned) with body_offset and checks that size matches the bytes
 * present.  -1 with errno EBADMSG when it does not parse or is truncated.
 */
int envelope_parse(const char *data, size_t len, struct envelope **envp);

/*
 * Parse a state file (spool.h): an envelope header alone, the state of the
 * message it names; nothing may follow its blank line, and its size is not
 * checked against anything here.  body_offset is 0.
 */
int envelope_parse_state(const char *data, size_t len, struct envelope **envp);

/* Columns of the size value: the header of a file written in pieces keeps
 * its length when the size is filled in. */
#define ENVELOPE_SIZE_WIDTH 20

/* Offset just past the blank line that ends the envelope header in
 * d[0..n), or 0 when there is none (yet). */
size_t envelope_header_end(const char *d, size_t n);
/* Parse the header d[0..hend) (hend from envelope_header_end()) of a file
 * of total octets, as envelope_parse() does. */
int envelope_parse_header(
    const char *d, size_t hend, uint64_t total, struct envelope **envp);

#endif
