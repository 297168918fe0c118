/*
 * hooks: the programs an operator names to hear of outcomes
 * (OUTCOME_COMMAND) and of trouble (ALERT_COMMAND, alert.h), run by a
 * worker thread of their own so that a slow or hanging program never
 * holds up the sender.
 *
 * Alerts are kept in memory (at most HOOKS_ALERTS_MAX waiting; an older
 * one is dropped, logged) and run before outcomes, once each, with PATH,
 * ARNIE_ALERT, ARNIE_ALERT_KIND and ARNIE_ALERT_TEXT in the environment
 * and ALERT_COMMAND_TIMEOUT_SECONDS; a failure is logged, not retried
 * (the next state change alerts again).
 *
 * The sender records each final outcome (sent, failed, expired) in the
 * spool's outcomes/ folder before the message leaves the queue
 * (hooks_record()), so that none is lost across a restart; the worker runs
 * the command once for each record, oldest first, and removes the record
 * once the command has run, whatever it answered.  A crash between the two
 * runs it again: at least once.  A command that cannot be started, exits
 * non-zero or passes OUTCOME_COMMAND_TIMEOUT_SECONDS (it is then killed,
 * with its process group) is logged with the first line it wrote, and
 * tried again twice, a minute apart, then given up (logged): never retried
 * for ever.  A program has run when it has exited (not when its output
 * ends: a child it leaves behind may hold that); it starts with no signal
 * blocked or ignored.
 *
 * The command is split at blanks into a program and its arguments (no
 * shell, no quoting) and run with a fresh environment: PATH, and
 * ARNIE_ID, ARNIE_MESSAGE_ID, ARNIE_OUTCOME (sent, failed or expired),
 * ARNIE_RECIPIENTS (the addresses, comma-separated), ARNIE_REPLY (the
 * last reply or reason) and ARNIE_QUEUED_AS (the upstream's ID from its
 * 250, or empty).  Its standard input is /dev/null.
 */
#ifndef ARNIE_HOOKS_H
#define ARNIE_HOOKS_H

struct config;
struct envelope;
struct spool;
struct hooks;

#define HOOKS_ALERTS_MAX 32

/* Start the worker when OUTCOME_COMMAND or ALERT_COMMAND is set (NULL
 * otherwise); cfg
 * and spool are borrowed until hooks_free().  The records left by an
 * earlier run are run first. */
struct hooks *hooks_new(const struct config *cfg, struct spool *spool);
/* Record env's final outcome ("sent", "failed", "expired") for the
 * command; the sender's thread, before the message leaves the queue.  0,
 * or -1 with errno (logged by the caller).  NULL hooks: nothing. */
int hooks_record(
    struct hooks *h, const struct envelope *env, const char *outcome);
/* Queue an alert for ALERT_COMMAND (nothing without one). */
void hooks_alert(
    struct hooks *h, const char *alert, const char *kind, const char *text);
/* Stop the worker; a command running is killed (its record stays, and is
 * run again at the next start). */
void hooks_free(struct hooks *h);

#endif
