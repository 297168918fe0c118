/*
 * mailq: the queue as an operator reads it ("arnie-queue list", "arnie
 * --queue").
 *
 * Lists every message in outbox/ and hold/, oldest first: ID, size,
 * arrival, attempts spent, next attempt (or "(held)"), sender, and each
 * recipient with its state and last reply, then a summary line.  Reads the
 * files with the spool's own reader (spool_load_from()) and changes
 * nothing.  A file that does not parse is listed as such (the sender sets
 * it aside in corrupt/).  Times are UTC.
 */
#ifndef ARNIE_MAILQ_H
#define ARNIE_MAILQ_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#include "spool.h"

struct envelope;

/* A message and the folder it is in. */
struct mailq_entry {
	spool_id id;
	enum spool_folder folder;
};
/* The messages of several folders, in order of arrival (newest first if
 * asked): *vp owned.  -1 with errno only if outbox/ cannot be read; another
 * folder that cannot is left out. */
int mailq_collect(struct spool *spool, const enum spool_folder *folders,
    size_t nfolders, bool newest, struct mailq_entry **vp, size_t *np);

/* Print the queue to out.  Returns the number of messages listed, or -1
 * with errno if outbox/ cannot be read. */
int mailq_print(struct spool *spool, FILE *out, time_t now);
/* Each recipient of env on a line of its own after indent: "<addr> state
 * (last reply)". */
void mailq_print_rcpts(
    FILE *out, const struct envelope *env, const char *indent);
/* The same as one JSON object: {"time": now, "messages": [envelope...]}
 * (unreadable files left out). */
int mailq_print_json(struct spool *spool, FILE *out, time_t now);
/* One envelope as a JSON object: id, folder, size, arrived, attempts,
 * next_attempt (times in seconds since the epoch), sender, last_reply,
 * recipients [{address, state, reply}]. */
void mailq_json_envelope(
    FILE *out, const struct envelope *env, const char *folder);

#endif
