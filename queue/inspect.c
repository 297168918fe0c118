/*
 * inspect: see inspect.h.
 */
#include "autoconf.h"

#include "inspect.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "envelope.h"
#include "logjson.h"
#include "mailq.h"
#include "message.h"
#include "reply.h"
#include "spool.h"
#include "stats.h"
#include "timefmt.h"
#include "xmalloc.h"

/* Where a message may be, in the order show and status look. */
static const enum spool_folder message_folders[] = {
    SPOOL_IN_OUTBOX,
    SPOOL_IN_HOLD,
    SPOOL_IN_FAILED,
    SPOOL_IN_SENT,
};
#define NMESSAGE_FOLDERS (sizeof(message_folders) / sizeof(message_folders[0]))

/* The header section is looked for in this much of a message. */
#define HEADER_READ_MAX (256 * 1024)
#define QUEUED_AS_MAX 256

static const char *
utc(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t <= 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(buf, len, "-");
	return buf;
}

static const char *
ago(time_t t, time_t now, char *buf, size_t len)
{
	if (t <= 0) {
		snprintf(buf, len, "-");
		return buf;
	}
	timefmt_age((long)(now - t), buf, len);
	return buf;
}

/* What an operator calls the state of a message in folder. */
static const char *
state_word(enum spool_folder folder, const struct envelope *env)
{
	switch (folder) {
	case SPOOL_IN_HOLD:
		return "held";
	case SPOOL_IN_FAILED:
		return "failed";
	case SPOOL_IN_SENT:
		return "sent";
	default:
		break;
	}
	return env->attempts > 0 ? "deferred" : "queued";
}

/* The upstream's ID for the message, from a recipient's 250. */
static bool
queued_as(const struct envelope *env, char *out, size_t len)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == RCPT_SENT &&
		    reply_queued_as(env->rcpts[i].reply, out, len))
			return true;
	out[0] = '\0';
	return false;
}

/* ---------------------------------------------------------------- show */

static void
copy_message(FILE *in, FILE *out)
{
	char buf[65536];
	size_t n;

	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		fwrite(buf, 1, n, out);
}

static void
show_envelope(
    FILE *out, const struct envelope *env, enum spool_folder folder, time_t now)
{
	char t1[64], t2[64], qid[QUEUED_AS_MAX];

	fprintf(out, "ID:           %s\n", env->id);
	fprintf(out, "State:        %s (in %s/)\n", state_word(folder, env),
	    spool_folder_name(folder));
	fprintf(out, "Arrived:      %s (%s ago)\n",
	    utc(env->created, t1, sizeof(t1)),
	    ago(env->created, now, t2, sizeof(t2)));
	fprintf(
	    out, "Size:         %llu octets\n", (unsigned long long)env->size);
	fprintf(out, "Sender:       <%s>\n", env->sender);
	if (env->origin != NULL)
		fprintf(out, "Origin:       %s\n", env->origin);
	fprintf(out, "Attempts:     %u\n", env->attempts);
	if (folder == SPOOL_IN_OUTBOX)
		fprintf(out, "Next attempt: %s\n",
		    utc(env->next_attempt, t1, sizeof(t1)));
	if (env->last_reply != NULL)
		fprintf(out, "Last reply:   %s\n", env->last_reply);
	if (queued_as(env, qid, sizeof(qid)))
		fprintf(out, "Queued as:    %s\n", qid);
	fprintf(out, "Recipients:\n");
	mailq_print_rcpts(out, env, "  ");
}

int
inspect_show(struct spool *spool, const char *id, FILE *out, time_t now)
{
	struct envelope *env;
	FILE *in;
	size_t i;

	for (i = 0; i < NMESSAGE_FOLDERS; i++) {
		if (spool_load_from(spool, message_folders[i], id, &env) ==
		    -1) {
			if (errno == ENOENT)
				continue;
			fprintf(stderr, "arnie-queue: %s: %s\n", id,
			    errno == EBADMSG ? "the queue file does not parse"
			                     : strerror(errno));
			return errno == EBADMSG ? 1 : EX_IOERR;
		}
		show_envelope(out, env, message_folders[i], now);
		fprintf(out, "\n");
		if ((in = spool_open_message_from(
		         spool, message_folders[i], env)) != NULL) {
			copy_message(in, out);
			fclose(in);
		}
		envelope_free(env);
		return 0;
	}
	fprintf(stderr,
	    "arnie-queue: %s: not in outbox/, hold/, failed/ or sent/\n", id);
	return 1;
}

/* -------------------------------------------------------------- status */

/* A Message-ID without its angle brackets and blanks (borrowed slice). */
static void
bare_msgid(const char *s, const char **p, size_t *n)
{
	size_t len;

	while (*s == ' ' || *s == '\t' || *s == '<')
		s++;
	len = strlen(s);
	while (len > 0 &&
	       (s[len - 1] == ' ' || s[len - 1] == '\t' || s[len - 1] == '>'))
		len--;
	*p = s;
	*n = len;
}

/* Does the message of env (in folder) carry the Message-ID want? */
static bool
has_msgid(struct spool *spool, enum spool_folder folder,
    const struct envelope *env, const char *want, size_t wlen)
{
	char *buf = xmalloc(HEADER_READ_MAX), *v;
	const char *p;
	size_t n = 0, len;
	bool match = false;
	FILE *in;

	if ((in = spool_open_message_from(spool, folder, env)) != NULL) {
		n = fread(buf, 1, HEADER_READ_MAX, in);
		fclose(in);
	}
	if ((v = message_field_value(buf, n, "Message-ID")) != NULL) {
		bare_msgid(v, &p, &len);
		match = len == wlen && memcmp(p, want, len) == 0;
		free(v);
	}
	free(buf);
	return match;
}

static void
status_text(FILE *out, const struct envelope *env, enum spool_folder folder)
{
	char t[64], qid[QUEUED_AS_MAX];
	size_t i;

	fprintf(out, "%s: %s (in %s/), %u attempt%s, arrived %s\n", env->id,
	    state_word(folder, env), spool_folder_name(folder), env->attempts,
	    env->attempts == 1 ? "" : "s", utc(env->created, t, sizeof(t)));
	if (queued_as(env, qid, sizeof(qid)))
		fprintf(out, "  queued as %s\n", qid);
	if (env->last_reply != NULL)
		fprintf(out, "  last reply: %s\n", env->last_reply);
	for (i = 0; i < env->nrcpts; i++)
		fprintf(out, "  <%s> %s\n", env->rcpts[i].addr,
		    spool_rcpt_state_name(env->rcpts[i].state));
}

static void
status_json(
    FILE *out, const struct envelope *env, enum spool_folder folder, bool first)
{
	char qid[QUEUED_AS_MAX], *q;

	fprintf(out, "%s{\"state\":\"%s\",\"queued_as\":", first ? "" : ",",
	    state_word(folder, env));
	if (queued_as(env, qid, sizeof(qid))) {
		q = logjson_quote(qid);
		fputs(q, out);
		free(q);
	} else
		fputs("null", out);
	fputs(",\"message\":", out);
	mailq_json_envelope(out, env, spool_folder_name(folder));
	fputc('}', out);
}

int
inspect_status(struct spool *spool, const char *msgid, bool json, FILE *out)
{
	struct mailq_entry *v;
	struct envelope *env;
	const char *want;
	size_t wlen, n, i;
	int matches = 0;
	char *q;

	bare_msgid(msgid, &want, &wlen);
	/* Newest first: "did my last attempt go out?" */
	if (mailq_collect(
	        spool, message_folders, NMESSAGE_FOLDERS, true, &v, &n) == -1) {
		fprintf(stderr, "arnie-queue: cannot read %s: %s\n",
		    spool_outbox_path(spool), strerror(errno));
		return EX_IOERR;
	}
	if (json) {
		q = logjson_quote(msgid);
		fprintf(out, "{\"message_id\":%s,\"messages\":[", q);
		free(q);
	}
	for (i = 0; i < n; i++) {
		if (spool_load_from(spool, v[i].folder, v[i].id, &env) == -1)
			continue;
		if (has_msgid(spool, v[i].folder, env, want, wlen)) {
			if (json)
				status_json(
				    out, env, v[i].folder, matches == 0);
			else
				status_text(out, env, v[i].folder);
			matches++;
		}
		envelope_free(env);
	}
	free(v);
	if (json)
		fputs("]}\n", out);
	if (matches == 0 && !json)
		fprintf(stderr,
		    "arnie-queue: no message with Message-ID <%.*s> in "
		    "outbox/, hold/, failed/ or sent/ (delivered mail is kept "
		    "in sent/ only with SAVE_SENT_MAIL=true)\n",
		    (int)wlen, want);
	return matches > 0 ? 0 : 1;
}

/* --------------------------------------------------------------- stats */

static const enum spool_folder stats_folders[] = {
    SPOOL_IN_OUTBOX,
    SPOOL_IN_HOLD,
    SPOOL_IN_FAILED,
    SPOOL_IN_SENT,
    SPOOL_IN_CORRUPT,
};
#define NSTATS_FOLDERS (sizeof(stats_folders) / sizeof(stats_folders[0]))

/* Is the process that wrote the status alive? */
static bool
sender_alive(const struct stats *st)
{
	return st->pid > 0 && (kill(st->pid, 0) == 0 || errno == EPERM);
}

static void
stats_text(FILE *out, const struct spool_usage *u, const struct stats *st,
    bool have_status, time_t now)
{
	char t1[64], t2[64];
	size_t i;

	fprintf(out, "%-8s %9s %14s  %s\n", "Folder", "Messages", "Octets",
	    "Oldest");
	for (i = 0; i < NSTATS_FOLDERS; i++)
		fprintf(out, "%-8s %9zu %14llu  %s\n",
		    spool_folder_name(stats_folders[i]), u[i].messages,
		    u[i].bytes, ago(u[i].oldest, now, t1, sizeof(t1)));
	if (!have_status) {
		fprintf(out, "No sender has relayed this spool yet.\n");
		return;
	}
	fprintf(out,
	    "Last hour:    %u sent, %u deferred, %u failed, %u expired\n",
	    stats_last_hour(st, STATS_SENT, now),
	    stats_last_hour(st, STATS_DEFERRED, now),
	    stats_last_hour(st, STATS_FAILED, now),
	    stats_last_hour(st, STATS_EXPIRED, now));
	if (st->paused)
		fprintf(out, "Upstream:     paused for %s, next probe %s: %s\n",
		    ago(st->paused_since, now, t1, sizeof(t1)),
		    utc(st->next_probe, t2, sizeof(t2)), st->reason);
	else
		fprintf(out, "Upstream:     running\n");
	fprintf(
	    out, "Last delivery: %s", utc(st->last_delivery, t1, sizeof(t1)));
	if (st->last_delivery > 0)
		fprintf(out, " (%s ago)",
		    ago(st->last_delivery, now, t2, sizeof(t2)));
	fprintf(out, "\nSender:       %s %ld (status written %s ago)\n",
	    sender_alive(st) ? "running, PID" : "not running; last PID",
	    (long)st->pid, ago(st->written, now, t1, sizeof(t1)));
}

static void
stats_json(FILE *out, const struct spool_usage *u, const struct stats *st,
    bool have_status, time_t now)
{
	char *q;
	size_t i;

	fprintf(out, "{\"time\":%lld,\"folders\":{", (long long)now);
	for (i = 0; i < NSTATS_FOLDERS; i++)
		fprintf(out,
		    "%s\"%s\":{\"messages\":%zu,\"bytes\":%llu,"
		    "\"oldest\":%lld}",
		    i > 0 ? "," : "", spool_folder_name(stats_folders[i]),
		    u[i].messages, u[i].bytes, (long long)u[i].oldest);
	fputc('}', out);
	if (have_status) {
		fprintf(out,
		    ",\"last_hour\":{\"sent\":%u,\"deferred\":%u,"
		    "\"failed\":%u,\"expired\":%u}",
		    stats_last_hour(st, STATS_SENT, now),
		    stats_last_hour(st, STATS_DEFERRED, now),
		    stats_last_hour(st, STATS_FAILED, now),
		    stats_last_hour(st, STATS_EXPIRED, now));
		q = logjson_quote(st->reason);
		fprintf(out,
		    ",\"upstream\":{\"state\":\"%s\",\"paused_since\":%lld,"
		    "\"next_probe\":%lld,\"reason\":%s,\"last_delivery\":%lld}",
		    st->paused ? "paused" : "running",
		    (long long)st->paused_since, (long long)st->next_probe, q,
		    (long long)st->last_delivery);
		free(q);
		fprintf(out,
		    ",\"sender\":{\"pid\":%ld,\"running\":%s,\"written\":%lld}",
		    (long)st->pid, sender_alive(st) ? "true" : "false",
		    (long long)st->written);
	}
	fputs("}\n", out);
}

int
inspect_stats(struct spool *spool, bool json, FILE *out, time_t now)
{
	struct spool_usage u[NSTATS_FOLDERS];
	struct stats st;
	bool have_status = false;
	char *text;
	size_t i;

	for (i = 0; i < NSTATS_FOLDERS; i++)
		if (spool_folder_usage(spool, stats_folders[i], &u[i]) == -1 &&
		    stats_folders[i] == SPOOL_IN_OUTBOX) {
			fprintf(stderr, "arnie-queue: cannot read %s: %s\n",
			    spool_outbox_path(spool), strerror(errno));
			return EX_IOERR;
		}
	if (spool_get_status(spool, &text) == 0) {
		have_status = stats_parse(text, &st) == 0;
		free(text);
	}
	if (json)
		stats_json(out, u, &st, have_status, now);
	else
		stats_text(out, u, &st, have_status, now);
	return 0;
}
