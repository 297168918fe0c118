/*
 * mailq: see mailq.h.  Everything it knows of the file format comes from
 * spool.h; it only formats.
 */
#include "autoconf.h"

#include "mailq.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"
#include "timefmt.h"
#include "xmalloc.h"

struct idlist {
	char **ids;
	size_t n, cap;
};

static void
collect_id(const char *id, unsigned known, void *arg)
{
	struct idlist *l = arg;

	(void)known;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->ids = xreallocarray(l->ids, l->cap, sizeof(*l->ids));
	}
	l->ids[l->n++] = xstrdup(id);
}

/* IDs sort by arrival, so this is oldest first. */
static int
compare_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
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

static void
print_message(FILE *out, const struct envelope *env)
{
	char arrived[32], next[32];
	size_t i;

	fprintf(out, "%-*s %9llu  %s  %8u  %s  <%s>\n", SPOOL_IDLEN, env->id,
	    (unsigned long long)env->size,
	    format_time(env->created, arrived, sizeof(arrived)), env->attempts,
	    format_time(env->next_attempt, next, sizeof(next)), env->sender);
	for (i = 0; i < env->nrcpts; i++) {
		fprintf(out, "    <%s> %s", env->rcpts[i].addr,
		    spool_rcpt_state_name(env->rcpts[i].state));
		if (env->rcpts[i].reply != NULL)
			fprintf(out, " (%s)", env->rcpts[i].reply);
		fputc('\n', out);
	}
}

int
mailq_print(struct spool *spool, FILE *out, time_t now)
{
	struct idlist l = {NULL, 0, 0};
	unsigned long long bytes = 0;
	struct envelope *env;
	time_t oldest = 0;
	char age[32];
	int listed = 0;
	size_t i;

	if (spool_scan(spool, collect_id, &l) == -1)
		return -1;
	/* qsort() must not be given NULL, even with no element. */
	if (l.n > 1)
		qsort(l.ids, l.n, sizeof(*l.ids), compare_ids);
	if (l.n > 0)
		fprintf(out, "%-*s %9s  %-19s  %8s  %-19s  %s\n", SPOOL_IDLEN,
		    "ID", "Size", "Arrived (UTC)", "Attempts",
		    "Next attempt (UTC)", "Sender / recipients");
	for (i = 0; i < l.n; i++) {
		if (spool_load(spool, l.ids[i], &env) == -1) {
			/* Gone meanwhile (sent) is not worth a line. */
			if (errno != ENOENT)
				fprintf(out, "%-*s  unreadable: %s\n",
				    SPOOL_IDLEN, l.ids[i],
				    errno == EBADMSG ? "does not parse, will "
				                       "be moved to corrupt/"
				                     : strerror(errno));
			free(l.ids[i]);
			continue;
		}
		print_message(out, env);
		bytes += env->size;
		if (oldest == 0 || env->created < oldest)
			oldest = env->created;
		listed++;
		envelope_free(env);
		free(l.ids[i]);
	}
	free(l.ids);
	if (listed == 0)
		fprintf(out, "The queue is empty.\n");
	else {
		timefmt_age((long)(now - oldest), age, sizeof(age));
		fprintf(out,
		    "-- %d message%s, %llu bytes; the oldest is %s "
		    "old.\n",
		    listed, listed == 1 ? "" : "s", bytes, age);
	}
	return listed;
}
