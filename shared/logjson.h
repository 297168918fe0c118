/*
 * logjson: a log line as one JSON object (ARNIE_LOG_FORMAT=json), for log
 * shippers.
 *
 * Pure: no I/O.  The text of a line is the one the text format writes;
 * its parts become fields, so that both formats say the same thing:
 *
 *   "0193A4B5C6D7E000020: to=<a@b>, relay=h:587, delay=0.21, attempts=1,
 *    status=sent (250 2.0.0 Ok: queued as X)"
 *   -> {"time":..., "level":"info", "program":"arnie", "pid":12,
 *       "id":"0193A4B5C6D7E000020", "event":"delivery", "to":"a@b",
 *       "relay":"h:587", "delay":0.21, "attempts":1, "status":"sent",
 *       "reply":"250 2.0.0 Ok: queued as X", "text":"to=<a@b>, ..."}
 *
 * - "id": a queue ID (12 or more upper-case hex digits) that starts the
 *   line, followed by ": ".
 * - key=value words (key: lower-case letters and "_") become fields:
 *   <address> without its brackets, "quoted" without its quotes, a
 *   decimal number as a number; "status=X (reply)" gives "status" and
 *   "reply".  The first of a repeated key is kept; a key of the object's
 *   own (time, level, program, pid, id, text, event, reply) is never
 *   taken from the text.
 * - "event": the words before the first key=value one ("removed",
 *   "moved to failed/", "milter"); without any, "delivery" for a line with
 *   a status, "queued" for one that starts with from=, else "message".
 * - "text": the line after the ID, always, whatever was parsed.
 * Strings are escaped for JSON; bytes that are not UTF-8 become U+FFFD.
 */
#ifndef ARNIE_LOGJSON_H
#define ARNIE_LOGJSON_H

#include <stddef.h>

/* The smallest buffer that holds the header of every line. */
#define LOGJSON_MIN_OUT 256

/*
 * Write the object and a newline into out, always terminated and always
 * a complete object: a line that does not fit loses its parsed fields
 * first, then the end of its text.  stamp is an ISO-8601 time and program
 * a plain name (cut at 63 octets; a space, a quote, a backslash or a byte
 * that is not printable ASCII becomes '?'), priority syslog's.  Returns
 * the length written; an outlen below LOGJSON_MIN_OUT gets an empty
 * string and 0.
 */
size_t logjson_format(char *out, size_t outlen, const char *stamp, int priority,
    const char *program, long pid, const char *text);

/* s as a JSON string, quotes included, escaped as above (owned; for
 * arnie-queue's --json output). */
char *logjson_quote(const char *s);

#endif
