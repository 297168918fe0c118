/*
 * monitor: see monitor.h.
 */
#include "autoconf.h"

#include "monitor.h"

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "config.h"
#include "log.h"
#include "metrics.h"
#include "xmalloc.h"

/* A scrape's client gets this long for its request. */
#define MONITOR_TIMEOUT_SECONDS 10

struct monitor {
	const struct config *cfg;
	struct spool *spool;
	struct event_base *base;
	struct evhttp *http;
	struct event *stop_ev;
	int stopfd; /* eventfd: monitor_free() ends the loop through it */
	pthread_t thread;
	bool started;
};

static void
reply(struct evhttp_request *req, int code, const char *reason,
    const char *type, const char *body)
{
	struct evbuffer *buf = evbuffer_new();

	if (buf == NULL) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evhttp_add_header(
	    evhttp_request_get_output_headers(req), "Content-Type", type);
	evbuffer_add(buf, body, strlen(body));
	evhttp_send_reply(req, code, reason, buf);
	evbuffer_free(buf);
}

static void
on_metrics(struct evhttp_request *req, void *arg)
{
	struct monitor *m = arg;
	char *text = metrics_format(m->spool, time(NULL));

	reply(req, HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8",
	    text);
	free(text);
}

static void
on_health(struct evhttp_request *req, void *arg)
{
	struct monitor *m = arg;
	char reason[256], body[sizeof(reason) + 1];
	bool ok;

	ok = metrics_healthy(m->spool, m->cfg->health_max_pause,
	    m->cfg->health_max_queue_age, time(NULL), reason, sizeof(reason));
	snprintf(body, sizeof(body), "%s\n", reason);
	reply(req, ok ? HTTP_OK : 503, ok ? "OK" : "Service Unavailable",
	    "text/plain; charset=utf-8", body);
}

static void
on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	evhttp_send_error(req, HTTP_NOTFOUND, NULL);
}

static void
on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct monitor *m = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(m->base);
}

struct monitor *
monitor_new(const struct config *cfg)
{
	char host[INET6_ADDRSTRLEN];
	struct monitor *m;
	int port;

	if (cfg->metrics_listen == NULL)
		return NULL;
	if (config_split_listen(
	        cfg->metrics_listen, host, sizeof(host), &port) == -1)
		fatalx(EX_CONFIG,
		    "ARNIE_METRICS_LISTEN: '%s' is not "
		    "[ADDRESS:]PORT",
		    cfg->metrics_listen);
	m = xcalloc(1, sizeof(*m));
	m->cfg = cfg;
	if ((m->base = event_base_new()) == NULL ||
	    (m->http = evhttp_new(m->base)) == NULL)
		fatalx(EX_OSERR, "cannot set up the metrics listener");
	if (evhttp_bind_socket_with_handle(m->http, host, (ev_uint16_t)port) ==
	    NULL)
		fatal(EX_UNAVAILABLE,
		    "cannot listen for metrics on %s (ARNIE_METRICS_LISTEN)",
		    cfg->metrics_listen);
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(m->http, MONITOR_TIMEOUT_SECONDS);
	evhttp_set_max_body_size(m->http, 1024);
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_cb(m->http, "/metrics", on_metrics, m);
	evhttp_set_cb(m->http, "/healthz", on_health, m);
	evhttp_set_gencb(m->http, on_other, m);
	if ((m->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1 ||
	    (m->stop_ev = event_new(m->base, m->stopfd, EV_READ, on_stop, m)) ==
	        NULL ||
	    event_add(m->stop_ev, NULL) == -1)
		fatal(EX_OSERR, "cannot set up the metrics listener");
	return m;
}

static void *
monitor_main(void *arg)
{
	struct monitor *m = arg;

	if (event_base_dispatch(m->base) == -1)
		log_warnx("metrics: the event loop failed");
	return NULL;
}

void
monitor_start(struct monitor *m, struct spool *spool)
{
	sigset_t all, old;
	int rc;

	if (m == NULL)
		return;
	m->spool = spool;
	/* Signals belong to the daemon's main loop. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&m->thread, NULL, monitor_main, m);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		errno = rc;
		fatal(EX_OSERR, "cannot start the metrics thread");
	}
	m->started = true;
	log_info("metrics and health on http://%s/metrics and /healthz",
	    m->cfg->metrics_listen);
}

void
monitor_free(struct monitor *m)
{
	uint64_t one = 1;

	if (m == NULL)
		return;
	if (m->started) {
		(void)!write(m->stopfd, &one, sizeof(one));
		pthread_join(m->thread, NULL);
	}
	event_free(m->stop_ev);
	evhttp_free(m->http);
	event_base_free(m->base);
	close(m->stopfd);
	free(m);
}
