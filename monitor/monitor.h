/*
 * monitor: /metrics (Prometheus text) and /healthz over HTTP for both
 * daemons (here, not in shared/, which links no libevent), when
 * ARNIE_METRICS_LISTEN names an address (off by default; an address
 * without a host is on 127.0.0.1).
 *
 * Served by libevent's evhttp from a thread and an event loop of its own,
 * so that a scrape, which reads the spool's folders, never waits on the
 * daemon's SMTP or milter work nor delays it.  GET and HEAD only
 * (evhttp answers other methods 501); any other path is 404.  /healthz
 * answers 200 "ok", or 503 and the reason (metrics_healthy()).  Both
 * daemons run one; the figures are the process's own (metrics.h).
 */
#ifndef ARNIE_MONITOR_H
#define ARNIE_MONITOR_H

struct config;
struct spool;
struct monitor;

/* Bind the address, before the daemon gives up root; NULL when
 * ARNIE_METRICS_LISTEN is unset.  Exits 69 with a message when the address
 * cannot be bound. */
struct monitor *monitor_new(const struct config *cfg);
/* Start serving spool's figures (cfg and spool borrowed until
 * monitor_free()); signals stay blocked in its thread. */
void monitor_start(struct monitor *m, struct spool *spool);
/* Stop the thread and close the socket; NULL is accepted. */
void monitor_free(struct monitor *m);

#endif
