/*
 * metrics: see metrics.h.
 */
#include "autoconf.h"

#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spool.h"
#include "timefmt.h"
#include "xmalloc.h"

/* Trouble kinds (reply_trouble_kind()), in the order they are shown. */
static const char *const kinds[] = {
    "tls", "auth", "unreachable", "throttled", "refused", "other"};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

/* Upper bounds of the commit latency histogram, in seconds: an fsync
 * takes from a fraction of a millisecond to a second on a slow disk. */
static const double buckets[] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
#define NBUCKETS (sizeof(buckets) / sizeof(buckets[0]))

static const enum spool_folder folders[] = {SPOOL_IN_OUTBOX, SPOOL_IN_HOLD,
    SPOOL_IN_FAILED, SPOOL_IN_SENT, SPOOL_IN_CORRUPT};
#define NFOLDERS (sizeof(folders) / sizeof(folders[0]))

static struct {
	pthread_mutex_t lock;
	const char *frontend;
	uint64_t received, received_bytes, refused;
	uint64_t commit_le[NBUCKETS]; /* cumulative at format time only */
	uint64_t commit_count;
	double commit_sum;
	bool sender;
	uint64_t outcomes[STATS_NEVENTS];
	uint64_t sent_bytes;
	time_t last_delivery;
	uint64_t sessions_ok, session_errors[NKINDS];
	time_t paused_since;
	uint64_t relayed[2]; /* primary, fallback */
} m = {PTHREAD_MUTEX_INITIALIZER, "smtp", 0, 0, 0, {0}, 0, 0, false, {0}, 0, 0,
    0, {0}, 0, {0, 0}};

void
metrics_init(const char *frontend)
{
	pthread_mutex_lock(&m.lock);
	m.frontend = frontend;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_commit(bool ok, uint64_t bytes, double seconds)
{
	size_t i;

	pthread_mutex_lock(&m.lock);
	if (ok) {
		m.received++;
		m.received_bytes += bytes;
		for (i = 0; i < NBUCKETS; i++)
			if (seconds <= buckets[i]) {
				m.commit_le[i]++;
				break;
			}
		m.commit_count++;
		m.commit_sum += seconds;
	} else
		m.refused++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_sender(void)
{
	pthread_mutex_lock(&m.lock);
	m.sender = true;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_outcome(enum stats_event ev, uint64_t bytes, time_t now)
{
	pthread_mutex_lock(&m.lock);
	m.outcomes[ev]++;
	if (ev == STATS_SENT) {
		m.sent_bytes += bytes;
		m.last_delivery = now;
	}
	pthread_mutex_unlock(&m.lock);
}

void
metrics_session(const char *kind)
{
	size_t i;

	pthread_mutex_lock(&m.lock);
	if (kind == NULL)
		m.sessions_ok++;
	else {
		for (i = 0; i < NKINDS - 1; i++)
			if (strcmp(kind, kinds[i]) == 0)
				break;
		m.session_errors[i]++;
	}
	pthread_mutex_unlock(&m.lock);
}

void
metrics_relayed(bool fallback, size_t n)
{
	pthread_mutex_lock(&m.lock);
	m.relayed[fallback ? 1 : 0] += n;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_upstream(time_t paused_since)
{
	pthread_mutex_lock(&m.lock);
	m.paused_since = paused_since;
	pthread_mutex_unlock(&m.lock);
}

/* ------------------------------------------------------------ format */

static void
head(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The upstream as this process knows it, or as the relaying process
 * last wrote it: paused since when (0: running), and the last delivery.
 * Takes the lock itself, and reads the file without it. */
static void
upstream_state(struct spool *spool, time_t *paused_since, time_t *last_delivery)
{
	struct stats st;
	bool sender;
	char *text;

	pthread_mutex_lock(&m.lock);
	sender = m.sender;
	*paused_since = m.paused_since;
	*last_delivery = m.last_delivery;
	pthread_mutex_unlock(&m.lock);
	if (sender)
		return;
	*paused_since = *last_delivery = 0;
	if (spool_get_status(spool, &text) == -1)
		return;
	if (stats_parse(text, &st) == 0) {
		*paused_since = st.paused ? st.paused_since : 0;
		*last_delivery = st.last_delivery;
	}
	free(text);
}

static void
format_intake(FILE *out, const char *fe)
{
	uint64_t cum = 0;
	size_t i;

	head(out, "arnie_messages_received_total", "counter",
	    "Messages accepted (answered 250) by this front-end.");
	fprintf(out,
	    "arnie_messages_received_total{frontend=\"%s\"} %" PRIu64 "\n", fe,
	    m.received);
	head(out, "arnie_received_bytes_total", "counter",
	    "Octets of the messages accepted.");
	fprintf(out,
	    "arnie_received_bytes_total{frontend=\"%s\"} %" PRIu64 "\n", fe,
	    m.received_bytes);
	head(out, "arnie_commit_failures_total", "counter",
	    "Messages refused because the disk did not take them.");
	fprintf(out,
	    "arnie_commit_failures_total{frontend=\"%s\"} %" PRIu64 "\n", fe,
	    m.refused);
	head(out, "arnie_commit_seconds", "histogram",
	    "Time from the end of a message to its being durable.");
	for (i = 0; i < NBUCKETS; i++) {
		cum += m.commit_le[i];
		fprintf(out,
		    "arnie_commit_seconds_bucket{frontend=\"%s\",le=\"%g\"} "
		    "%" PRIu64 "\n",
		    fe, buckets[i], cum);
	}
	fprintf(out,
	    "arnie_commit_seconds_bucket{frontend=\"%s\",le=\"+Inf\"} "
	    "%" PRIu64 "\n",
	    fe, m.commit_count);
	fprintf(out, "arnie_commit_seconds_sum{frontend=\"%s\"} %.6f\n", fe,
	    m.commit_sum);
	fprintf(out,
	    "arnie_commit_seconds_count{frontend=\"%s\"} %" PRIu64 "\n", fe,
	    m.commit_count);
}

static void
format_sender(FILE *out, time_t paused_since, time_t last_delivery, time_t now)
{
	size_t i;

	head(out, "arnie_sender", "gauge",
	    "1 if this process relays the spool.");
	fprintf(out, "arnie_sender %d\n", m.sender ? 1 : 0);
	head(out, "arnie_messages_total", "counter",
	    "Outcomes of the messages this process relayed: sent, deferred "
	    "(an attempt left recipients pending), failed, expired.");
	for (i = 0; i < STATS_NEVENTS; i++)
		fprintf(out,
		    "arnie_messages_total{outcome=\"%s\"} %" PRIu64 "\n",
		    stats_event_name((enum stats_event)i), m.outcomes[i]);
	head(out, "arnie_sent_bytes_total", "counter",
	    "Octets of the messages sent.");
	fprintf(out, "arnie_sent_bytes_total %" PRIu64 "\n", m.sent_bytes);
	head(out, "arnie_relay_sessions_total", "counter",
	    "Relay sessions that reached the messages.");
	fprintf(out, "arnie_relay_sessions_total %" PRIu64 "\n", m.sessions_ok);
	head(out, "arnie_relay_session_errors_total", "counter",
	    "Relay sessions that failed queue-wide, by kind.");
	for (i = 0; i < NKINDS; i++)
		fprintf(out,
		    "arnie_relay_session_errors_total{kind=\"%s\"} %" PRIu64
		    "\n",
		    kinds[i], m.session_errors[i]);
	head(out, "arnie_relay_messages_total", "counter",
	    "Messages handed to each upstream in a session (attempts, probes "
	    "included): the primary, or the fallback (FALLBACK_EMAIL_HOST) "
	    "while the primary is paused.");
	fprintf(out,
	    "arnie_relay_messages_total{relay=\"primary\"} %" PRIu64 "\n"
	    "arnie_relay_messages_total{relay=\"fallback\"} %" PRIu64 "\n",
	    m.relayed[0], m.relayed[1]);
	head(out, "arnie_upstream_up", "gauge",
	    "0 while the queue is paused after queue-wide trouble, else 1.");
	fprintf(out, "arnie_upstream_up %d\n", paused_since != 0 ? 0 : 1);
	head(out, "arnie_upstream_paused_seconds", "gauge",
	    "How long the queue has been paused (0: running).");
	fprintf(out, "arnie_upstream_paused_seconds %lld\n",
	    paused_since != 0 ? (long long)(now - paused_since) : 0LL);
	head(out, "arnie_last_delivery_timestamp_seconds", "gauge",
	    "When the upstream last accepted a message (0: not yet).");
	fprintf(out, "arnie_last_delivery_timestamp_seconds %lld\n",
	    (long long)last_delivery);
}

static void
format_queue(FILE *out, struct spool *spool, time_t now)
{
	struct spool_usage u[NFOLDERS];
	size_t i;

	for (i = 0; i < NFOLDERS; i++)
		if (spool_folder_usage(spool, folders[i], &u[i]) == -1)
			memset(&u[i], 0, sizeof(u[i]));
	head(out, "arnie_queue_messages", "gauge", "Messages per folder.");
	for (i = 0; i < NFOLDERS; i++)
		fprintf(out, "arnie_queue_messages{folder=\"%s\"} %zu\n",
		    spool_folder_name(folders[i]), u[i].messages);
	head(out, "arnie_queue_bytes", "gauge",
	    "Octets of the files per folder.");
	for (i = 0; i < NFOLDERS; i++)
		fprintf(out, "arnie_queue_bytes{folder=\"%s\"} %llu\n",
		    spool_folder_name(folders[i]), u[i].bytes);
	head(out, "arnie_queue_oldest_age_seconds", "gauge",
	    "Age of the oldest message per folder (0: empty).");
	for (i = 0; i < NFOLDERS; i++)
		fprintf(out,
		    "arnie_queue_oldest_age_seconds{folder=\"%s\"} "
		    "%lld\n",
		    spool_folder_name(folders[i]),
		    u[i].oldest > 0 ? (long long)(now - u[i].oldest) : 0LL);
}

char *
metrics_format(struct spool *spool, time_t now)
{
	time_t paused_since, last_delivery;
	char *text = NULL;
	size_t len = 0;
	FILE *out;

	if ((out = open_memstream(&text, &len)) == NULL)
		arnie_panic("metrics_format: out of memory");
	upstream_state(spool, &paused_since, &last_delivery);
	pthread_mutex_lock(&m.lock);
	format_intake(out, m.frontend);
	format_sender(out, paused_since, last_delivery, now);
	pthread_mutex_unlock(&m.lock);
	format_queue(out, spool, now);
	if (fclose(out) != 0)
		arnie_panic("metrics_format: out of memory");
	return text;
}

bool
metrics_healthy(struct spool *spool, long max_pause, long max_age, time_t now,
    char *reason, size_t len)
{
	time_t paused_since, last_delivery;
	struct spool_usage u;
	char age[32];

	upstream_state(spool, &paused_since, &last_delivery);
	if (max_pause > 0 && paused_since != 0 &&
	    now - paused_since > max_pause) {
		timefmt_age((long)(now - paused_since), age, sizeof(age));
		snprintf(reason, len,
		    "the upstream has been paused for %s "
		    "(HEALTH_MAX_PAUSE_SECONDS=%ld)",
		    age, max_pause);
		return false;
	}
	if (max_age > 0 &&
	    spool_folder_usage(spool, SPOOL_IN_OUTBOX, &u) == 0 &&
	    u.oldest > 0 && now - u.oldest > max_age) {
		timefmt_age((long)(now - u.oldest), age, sizeof(age));
		snprintf(reason, len,
		    "the oldest queued message is %s old "
		    "(HEALTH_MAX_QUEUE_AGE_SECONDS=%ld)",
		    age, max_age);
		return false;
	}
	snprintf(reason, len, "ok");
	return true;
}
