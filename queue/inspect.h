/*
 * inspect: arnie-queue's read-only verbs besides list (mailq.h): show,
 * status and stats.  They read the spool as it is, lock nothing and change
 * nothing, so they are safe at any time.
 *
 * Each returns an exit code: 0, 1 when the ID or Message-ID is not found,
 * 74 when the spool cannot be read.
 */
#ifndef ARNIE_INSPECT_H
#define ARNIE_INSPECT_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

struct spool;

/* One message, wherever it is: its envelope, then the message. */
int inspect_show(struct spool *spool, const char *id, FILE *out, time_t now);
/* Every message whose Message-ID is msgid (with or without <>), newest
 * first: where it is, its state, attempts, last reply and the upstream's
 * queued-as ID. */
int inspect_status(
    struct spool *spool, const char *msgid, bool json, FILE *out);
/* Messages and octets per folder, the oldest's age, the last hour's
 * outcomes and the upstream's state as the sender last wrote it. */
int inspect_stats(struct spool *spool, bool json, FILE *out, time_t now);

#endif
