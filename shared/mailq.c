/*
 * mailq: see mailq.h.  Everything it knows of the file format comes from
 * spool.h; it only formats.
 */
#include "autoconf.h"

#include "mailq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "logjson.h"
#include "spool.h"
#include "timefmt.h"
#include "xmalloc.h"

/* The folders listed: the queue, and what is held back from it. */
static const enum spool_folder listed_folders[] = {
    SPOOL_IN_OUTBOX,
    SPOOL_IN_HOLD,
};
#define NLISTED (sizeof(listed_folders) / sizeof(listed_folders[0]))

/* IDs sort by arrival. */
static int
oldest_first(const void *a, const void *b)
{
	return strcmp(((const struct mailq_entry *)a)->id,
	    ((const struct mailq_entry *)b)->id);
}

static int
newest_first(const void *a, const void *b)
{
	return oldest_first(b, a);
}

int
mailq_collect(struct spool *spool, const enum spool_folder *folders,
    size_t nfolders, bool newest, struct mailq_entry **vp, size_t *np)
{
	struct mailq_entry *v = NULL;
	spool_id *ids;
	size_t n = 0, k, i, f;

	for (f = 0; f < nfolders; f++) {
		/* Only outbox/ must be readable: hold/ is missing in a
		 * spool made by 0.1.0 and opened read-only. */
		if (spool_list(spool, folders[f], &ids, &k) == -1) {
			if (folders[f] != SPOOL_IN_OUTBOX)
				continue;
			free(v);
			return -1;
		}
		v = xreallocarray(v, n + k + 1, sizeof(*v));
		for (i = 0; i < k; i++, n++) {
			memcpy(v[n].id, ids[i], sizeof(v[n].id));
			v[n].folder = folders[f];
		}
		free(ids);
	}
	/* qsort() must not be given NULL, even with no element. */
	if (n > 1)
		qsort(v, n, sizeof(*v), newest ? newest_first : oldest_first);
	*vp = v;
	*np = n;
	return 0;
}

static const char *
format_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (t <= 0 || gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "%-19s", "-");
	return buf;
}

void
mailq_print_rcpts(FILE *out, const struct envelope *env, const char *indent)
{
	size_t i;

	for (i = 0; i < env->nrcpts; i++) {
		fprintf(out, "%s<%s> %s", indent, env->rcpts[i].addr,
		    spool_rcpt_state_name(env->rcpts[i].state));
		if (env->rcpts[i].reply != NULL)
			fprintf(out, " (%s)", env->rcpts[i].reply);
		fputc('\n', out);
	}
}

static void
print_message(FILE *out, const struct envelope *env, bool held)
{
	char arrived[32], next[32];

	if (held)
		snprintf(next, sizeof(next), "%-19s", "(held)");
	else
		format_time(env->next_attempt, next, sizeof(next));
	fprintf(out, "%-*s %9llu  %s  %8u  %s  <%s>\n", SPOOL_IDLEN, env->id,
	    (unsigned long long)env->size,
	    format_time(env->created, arrived, sizeof(arrived)), env->attempts,
	    next, env->sender);
	mailq_print_rcpts(out, env, "    ");
}

/* Load an entry; a file that cannot be read gets a line of its own. */
static struct envelope *
load_entry(struct spool *spool, const struct mailq_entry *e, FILE *out)
{
	struct envelope *env;

	if (spool_load_from(spool, e->folder, e->id, &env) == 0)
		return env;
	/* Gone meanwhile (sent) is not worth a line. */
	if (errno != ENOENT && out != NULL)
		fprintf(out, "%-*s  unreadable: %s\n", SPOOL_IDLEN, e->id,
		    errno == EBADMSG ? "does not parse, will be moved to "
		                       "corrupt/"
		                     : strerror(errno));
	return NULL;
}

int
mailq_print(struct spool *spool, FILE *out, time_t now)
{
	struct mailq_entry *v;
	unsigned long long bytes = 0;
	struct envelope *env;
	time_t oldest = 0;
	char age[32];
	int listed = 0, held = 0;
	size_t n, i;

	if (mailq_collect(spool, listed_folders, NLISTED, false, &v, &n) == -1)
		return -1;
	if (n > 0)
		fprintf(out, "%-*s %9s  %-19s  %8s  %-19s  %s\n", SPOOL_IDLEN,
		    "ID", "Size", "Arrived (UTC)", "Attempts",
		    "Next attempt (UTC)", "Sender / recipients");
	for (i = 0; i < n; i++) {
		if ((env = load_entry(spool, &v[i], out)) == NULL)
			continue;
		print_message(out, env, v[i].folder == SPOOL_IN_HOLD);
		bytes += env->size;
		if (oldest == 0 || env->created < oldest)
			oldest = env->created;
		listed++;
		held += v[i].folder == SPOOL_IN_HOLD;
		envelope_free(env);
	}
	free(v);
	if (listed == 0) {
		fprintf(out, "The queue is empty.\n");
		return 0;
	}
	timefmt_age((long)(now - oldest), age, sizeof(age));
	fprintf(out, "-- %d message%s, %llu bytes; the oldest is %s old",
	    listed, listed == 1 ? "" : "s", bytes, age);
	if (held > 0)
		fprintf(out, "; %d on hold", held);
	fprintf(out, ".\n");
	return listed;
}

/* key: a JSON string, or null. */
static void
json_field(FILE *out, const char *key, const char *value, const char *sep)
{
	char *q;

	if (value == NULL) {
		fprintf(out, "\"%s\":null%s", key, sep);
		return;
	}
	q = logjson_quote(value);
	fprintf(out, "\"%s\":%s%s", key, q, sep);
	free(q);
}

void
mailq_json_envelope(FILE *out, const struct envelope *env, const char *folder)
{
	size_t i;

	fprintf(out, "{\"id\":\"%s\",\"folder\":\"%s\",\"size\":%llu,", env->id,
	    folder, (unsigned long long)env->size);
	fprintf(out, "\"arrived\":%lld,\"attempts\":%u,\"next_attempt\":%lld,",
	    (long long)env->created, env->attempts,
	    (long long)env->next_attempt);
	json_field(out, "sender", env->sender, ",");
	json_field(out, "last_reply", env->last_reply, ",");
	fputs("\"recipients\":[", out);
	for (i = 0; i < env->nrcpts; i++) {
		fputs(i > 0 ? ",{" : "{", out);
		json_field(out, "address", env->rcpts[i].addr, ",");
		json_field(out, "state",
		    spool_rcpt_state_name(env->rcpts[i].state), ",");
		json_field(out, "reply", env->rcpts[i].reply, "}");
	}
	fputs("]}", out);
}

int
mailq_print_json(struct spool *spool, FILE *out, time_t now)
{
	struct mailq_entry *v;
	struct envelope *env;
	int listed = 0;
	size_t n, i;

	if (mailq_collect(spool, listed_folders, NLISTED, false, &v, &n) == -1)
		return -1;
	fprintf(out, "{\"time\":%lld,\"messages\":[", (long long)now);
	for (i = 0; i < n; i++) {
		if ((env = load_entry(spool, &v[i], NULL)) == NULL)
			continue;
		if (listed++ > 0)
			fputc(',', out);
		mailq_json_envelope(out, env, spool_folder_name(v[i].folder));
		envelope_free(env);
	}
	fputs("]}\n", out);
	free(v);
	return listed;
}
