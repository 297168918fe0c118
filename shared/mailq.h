/*
 * mailq: the queue as an operator reads it ("arnie --queue").
 *
 * Lists every message in outbox/, oldest first: ID, size, arrival, attempts
 * spent, next attempt, sender, and each recipient with its state and last
 * reply, then a summary line.  Reads the files with the spool's own reader
 * and changes nothing, except that, as the sender would, the reader removes
 * a copy left in outbox/ by an interrupted move of a message that is already
 * in sent/ or failed/.  A file that does not parse is listed as such (the
 * sender sets it aside in corrupt/).  Times are UTC.
 */
#ifndef ARNIE_MAILQ_H
#define ARNIE_MAILQ_H

#include <stdio.h>
#include <time.h>

struct spool;

/* Print the queue to out.  Returns the number of messages listed, or -1
 * with errno if outbox/ cannot be read. */
int mailq_print(struct spool *spool, FILE *out, time_t now);

#endif
