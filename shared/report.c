/*
 * report: see report.h.  Keeps a bounded list of the failures since the last
 * report (the first REPORT_MAX_LISTED in full, then only a count, so a flood
 * of failures cannot grow memory without bound) and the current queue-wide
 * trouble, and turns them into one text/plain message.
 *
 * It never sends anything itself: the report is committed to the spool and
 * leaves through the sender like any other message, with its retries.
 */
#include "autoconf.h"

#include "config.h"

#include "report.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "log.h"
#include "spool.h"
#include "timefmt.h"
#include "xmalloc.h"

#define REPORT_MAX_LISTED 500
/* After a failed commit (disk trouble), try again this much later. */
#define REPORT_RETRY_SECONDS 60

struct failure {
	char id[SPOOL_IDLEN + 1];
	char *rcpts; /* "a@b (550 ...), c@d (sent)" */
	char *last_reply;
};

struct report {
	const struct config *cfg;
	time_t next;      /* when report_send() acts next */
	time_t last_sent; /* the previous report, or start-up */
	struct failure *fail;
	size_t nfail; /* listed in fail[] */
	size_t nmore; /* failed but not listed */
	/* Queue-wide trouble. */
	bool trouble; /* ongoing */
	time_t trouble_since;
	char *trouble_reason; /* latest, kept after recovery for the text */
	time_t recovered;     /* when it ended, 0 if ongoing or none */
	bool trouble_told;    /* this stretch of trouble was reported */
	bool recovery_untold; /* it ended after it was reported */
};

struct report *
report_new(const struct config *cfg, time_t now)
{
	struct report *r = xcalloc(1, sizeof(*r));

	r->cfg = cfg;
	r->last_sent = now;
	r->next = cfg->admin_address != NULL && *cfg->admin_address != '\0'
	              ? now + cfg->report_interval
	              : (time_t)-1;
	return r;
}

static void
clear_failures(struct report *r)
{
	size_t i;

	for (i = 0; i < r->nfail; i++) {
		free(r->fail[i].rcpts);
		free(r->fail[i].last_reply);
	}
	free(r->fail);
	r->fail = NULL;
	r->nfail = r->nmore = 0;
}

void
report_free(struct report *r)
{
	if (r == NULL)
		return;
	clear_failures(r);
	free(r->trouble_reason);
	free(r);
}

static const char *
state_word(enum rcpt_state st)
{
	switch (st) {
	case RCPT_SENT:
		return "sent";
	case RCPT_FAILED:
		return "failed";
	case RCPT_PENDING:
		break;
	}
	return "pending";
}

void
report_failed(struct report *r, const struct envelope *env)
{
	struct failure *f;
	char *list = NULL, *item;
	size_t i;

	/* A report that could not be delivered is not worth a report about
	 * itself: that would loop for as long as the admin's mail fails. */
	if (env->origin != NULL && strcmp(env->origin, REPORT_ORIGIN) == 0)
		return;
	if (r->nfail >= REPORT_MAX_LISTED) {
		r->nmore++;
		return;
	}
	for (i = 0; i < env->nrcpts; i++) {
		const struct spool_rcpt *rc = &env->rcpts[i];

		if (rc->reply != NULL)
			item = xasprintf("%s%s<%s> %s: %s", list ? list : "",
			    list ? "\n" : "", rc->addr, state_word(rc->state),
			    rc->reply);
		else
			item = xasprintf("%s%s<%s> %s", list ? list : "",
			    list ? "\n" : "", rc->addr, state_word(rc->state));
		free(list);
		list = item;
	}
	r->fail = xreallocarray(r->fail, r->nfail + 1, sizeof(*r->fail));
	f = &r->fail[r->nfail++];
	memset(f, 0, sizeof(*f));
	snprintf(f->id, sizeof(f->id), "%s", env->id);
	f->rcpts = list != NULL ? list : xstrdup("(no recipients)");
	f->last_reply =
	    env->last_reply != NULL ? xstrdup(env->last_reply) : NULL;
}

void
report_trouble(struct report *r, const char *reason, time_t since)
{
	if (!r->trouble) {
		r->trouble = true;
		r->trouble_since = since;
		r->trouble_told = false;
		r->recovered = 0;
	}
	free(r->trouble_reason);
	r->trouble_reason = xstrdup(reason != NULL ? reason : "unknown");
}

void
report_recovered(struct report *r, time_t now)
{
	if (!r->trouble)
		return;
	r->trouble = false;
	r->recovered = now;
	/* The admin heard of the outage: the next report says it is over. */
	r->recovery_untold = r->recovery_untold || r->trouble_told;
}

time_t
report_next(const struct report *r)
{
	return r->next;
}

/* Growing text buffer with CRLF line ends. */
struct text {
	char *buf;
	size_t len, cap;
};

static void __attribute__((format(printf, 2, 3)))
text_printf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	char *s, *p;
	size_t n;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	/* Every "\n" in the text becomes CRLF; a stray CR is dropped so the
	 * message never has a bare CR or LF (replies may contain either). */
	for (p = s; *p != '\0'; p++) {
		if (*p == '\r')
			continue;
		n = *p == '\n' ? 2 : 1;
		if (t->len + n + 1 > t->cap) {
			t->cap = t->cap ? t->cap * 2 : 4096;
			t->buf = xreallocarray(t->buf, t->cap, 1);
		}
		if (*p == '\n')
			t->buf[t->len++] = '\r';
		t->buf[t->len++] = *p;
	}
	if (t->buf != NULL)
		t->buf[t->len] = '\0';
	free(s);
}

static const char *
report_sender(const struct config *cfg)
{
	if (cfg->report_from != NULL && *cfg->report_from != '\0')
		return cfg->report_from;
	return cfg->admin_address;
}

/* Something worth a mail: failures, trouble longer than an interval
 * that no report has mentioned yet, or the end of trouble one did.  Trouble
 * that is over by now counts too: an outage of almost two intervals can start
 * just after one due time and end just before the next. */
static bool
has_news(const struct report *r, time_t now)
{
	time_t end = r->trouble ? now : r->recovered;

	if (r->nfail + r->nmore > 0 || r->recovery_untold)
		return true;
	return r->trouble_reason != NULL && !r->trouble_told &&
	       end - r->trouble_since >= r->cfg->report_interval;
}

static char *
format_report(struct report *r, const char *id, time_t now, size_t queue_depth,
    time_t oldest, size_t *lenp)
{
	const struct config *cfg = r->cfg;
	const char *host =
	    cfg->helo_name != NULL ? cfg->helo_name : "localhost";
	struct text t = {NULL, 0, 0};
	char date[64], from[64], age[32];
	size_t i, n = r->nfail + r->nmore;

	timefmt_date(now, date, sizeof(date));
	timefmt_date(r->last_sent, from, sizeof(from));
	text_printf(&t, "From: <%s>\n", report_sender(cfg));
	text_printf(&t, "To: <%s>\n", cfg->admin_address);
	if (n > 0)
		text_printf(&t, "Subject: Arnie: %zu failed message%s on %s\n",
		    n, n == 1 ? "" : "s", host);
	else
		text_printf(&t,
		    "Subject: Arnie: upstream %s unreachable on %s\n",
		    r->trouble ? "is" : "was", host);
	text_printf(&t, "Date: %s\n", date);
	text_printf(&t, "Message-ID: <%s.report@%s>\n", id, host);
	text_printf(&t, "MIME-Version: 1.0\n");
	text_printf(&t, "Content-Type: text/plain; charset=UTF-8\n");
	text_printf(&t, "Content-Transfer-Encoding: 8bit\n");
	text_printf(&t, "Auto-Submitted: auto-generated\n");
	text_printf(&t, "\n");
	text_printf(&t, "Arnie on %s, from %s to %s.\n\n", host, from, date);
	if (n > 0) {
		text_printf(&t,
		    "%zu message%s failed and %s moved to "
		    "%s/failed/:\n\n",
		    n, n == 1 ? "" : "s", n == 1 ? "was" : "were",
		    cfg->spool_directory != NULL ? cfg->spool_directory
		                                 : "arniefiles");
		for (i = 0; i < r->nfail; i++) {
			const struct failure *f = &r->fail[i];
			char *p, *line, *save = NULL;

			text_printf(&t, "%s\n", f->id);
			p = xstrdup(f->rcpts);
			for (line = strtok_r(p, "\n", &save); line != NULL;
			     line = strtok_r(NULL, "\n", &save))
				text_printf(&t, "  %s\n", line);
			free(p);
			if (f->last_reply != NULL)
				text_printf(
				    &t, "  last reply: %s\n", f->last_reply);
			text_printf(&t, "\n");
		}
		if (r->nmore > 0)
			text_printf(
			    &t, "... and %zu more, not listed.\n\n", r->nmore);
	} else
		text_printf(&t, "No message failed.\n\n");
	if (queue_depth == 0 || oldest == (time_t)-1)
		text_printf(&t, "Queue: %zu message%s waiting.\n", queue_depth,
		    queue_depth == 1 ? "" : "s");
	else {
		timefmt_age((long)(now - oldest), age, sizeof(age));
		text_printf(&t,
		    "Queue: %zu message%s waiting; the oldest "
		    "arrived %s ago.\n",
		    queue_depth, queue_depth == 1 ? "" : "s", age);
	}
	if (r->trouble) {
		timefmt_date(r->trouble_since, from, sizeof(from));
		timefmt_age((long)(now - r->trouble_since), age, sizeof(age));
		text_printf(&t, "Upstream: unreachable since %s (%s): %s\n",
		    from, age, r->trouble_reason);
	} else if (r->trouble_reason != NULL) {
		timefmt_date(r->trouble_since, from, sizeof(from));
		timefmt_date(r->recovered, date, sizeof(date));
		text_printf(&t, "Upstream: was unreachable from %s to %s: %s\n",
		    from, date, r->trouble_reason);
	}
	*lenp = t.len;
	return t.buf;
}

int
report_send(struct report *r, struct spool *spool, time_t now,
    size_t queue_depth, time_t oldest)
{
	const struct config *cfg = r->cfg;
	struct envelope *env = NULL;
	struct iovec iov;
	char *text = NULL;
	size_t len, n;
	int ret = -1, saved;

	if (r->next == (time_t)-1 || now < r->next)
		return 0;
	if (!has_news(r, now)) {
		r->next = now + cfg->report_interval;
		/* A trouble that ended without a report is old news now. */
		if (!r->trouble && r->trouble_reason != NULL) {
			free(r->trouble_reason);
			r->trouble_reason = NULL;
		}
		return 0;
	}
	env = envelope_new();
	spool_new_id(spool, env->id);
	env->sender = xstrdup(report_sender(cfg));
	envelope_add_rcpt(env, cfg->admin_address);
	env->origin = xstrdup(REPORT_ORIGIN);
	text = format_report(r, env->id, now, queue_depth, oldest, &len);
	iov.iov_base = text;
	iov.iov_len = len;
	if (spool_commit(spool, env, &iov, 1) == -1) {
		saved = errno;
		log_warn("failure report to <%s> not queued, trying again in "
		         "%ds",
		    cfg->admin_address, REPORT_RETRY_SECONDS);
		r->next = now + REPORT_RETRY_SECONDS;
		errno = saved;
		goto out;
	}
	n = r->nfail + r->nmore;
	log_info("%s: failure report to <%s> queued: %zu failed message%s%s",
	    env->id, cfg->admin_address, n, n == 1 ? "" : "s",
	    r->trouble ? ", upstream unreachable" : "");
	clear_failures(r);
	r->trouble_told = r->trouble;
	r->recovery_untold = false;
	if (!r->trouble) {
		free(r->trouble_reason);
		r->trouble_reason = NULL;
	}
	r->last_sent = now;
	r->next = now + cfg->report_interval;
	ret = 1;
out:
	free(text);
	envelope_free(env);
	return ret;
}
