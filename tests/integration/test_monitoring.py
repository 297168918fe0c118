"""/metrics and /healthz (ARNIE_METRICS_LISTEN): scraped over HTTP from a
running arnie, every line parsed as Prometheus text exposition, the
figures checked against what was sent; health turns 503 with its reason
when the upstream stays paused or the queue grows old."""

import re
import urllib.error
import urllib.request

import arnietest
from arnietest import (ArnieTestCase, free_port, make_message, smtp_send,
                       wait_for)

FROM = "app@example.com"

SAMPLE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)\})? (-?[0-9.e+]+|\+Inf|NaN)$')


def parse_metrics(text):
    """{(name, frozenset(labels)): value}; fails on any line that is not
    a comment, a HELP/TYPE line for the family that follows, or a
    sample."""
    samples = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        m = re.match(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) "
                     r"(counter|gauge|histogram)$", line)
        if m:
            types[m.group(1)] = m.group(2)
            continue
        m = SAMPLE.match(line)
        if not m:
            raise AssertionError("not a Prometheus line: %r" % line)
        name = m.group(1)
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in types and family not in types:
            raise AssertionError("sample without TYPE: %r" % line)
        labels = frozenset(re.findall(r'([a-zA-Z_]+)="([^"]*)"',
                                      m.group(3) or ""))
        samples[(name, labels)] = float(m.group(5))
    return samples


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                    timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def value(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


class MonitoringTest(ArnieTestCase):

    def start(self, up_port, **kw):
        self.mport = free_port()
        return self.arnie(up_port, ARNIE_METRICS_LISTEN="127.0.0.1:%d" %
                          self.mport, **kw)

    def scrape(self):
        status, body = get(self.mport, "/metrics")
        self.assertEqual(status, 200, body)
        return parse_metrics(body)

    def test_metrics_count_what_was_sent(self):
        up = self.upstream()
        up.script_rcpt("gone@example.org", ["550 5.1.1 No such user"])
        d = self.start(up.port)
        n = 5
        for i in range(n):
            code, _ = smtp_send(d.port, FROM, ["user@example.org"],
                                make_message("m%d" % i))
            self.assertEqual(code, 250)
        smtp_send(d.port, FROM, ["gone@example.org"], make_message("bad"))
        for i in range(n):
            self.assertDeliveredOnce(up, "m%d" % i)
        wait_for(lambda: value(self.scrape(), "arnie_messages_total",
                               outcome="failed") == 1,
                 what="the refusal counted")
        s = self.scrape()
        self.assertEqual(value(s, "arnie_messages_received_total",
                               frontend="smtp"), n + 1)
        self.assertGreater(value(s, "arnie_received_bytes_total",
                                 frontend="smtp"), n * 100)
        self.assertEqual(value(s, "arnie_messages_total", outcome="sent"), n)
        self.assertEqual(value(s, "arnie_messages_total",
                               outcome="expired"), 0)
        self.assertEqual(value(s, "arnie_sender"), 1)
        self.assertEqual(value(s, "arnie_upstream_up"), 1)
        self.assertGreater(value(s, "arnie_last_delivery_timestamp_seconds"),
                           0)
        self.assertGreaterEqual(value(s, "arnie_relay_sessions_total"), 1)
        # The histogram: cumulative buckets, +Inf equal to the count.
        buckets = sorted(
            (float(dict(k[1])["le"]) if dict(k[1])["le"] != "+Inf"
             else float("inf"), v)
            for k, v in s.items() if k[0] == "arnie_commit_seconds_bucket")
        counts = [v for _, v in buckets]
        self.assertEqual(counts, sorted(counts))
        self.assertEqual(counts[-1], n + 1)
        self.assertEqual(value(s, "arnie_commit_seconds_count",
                               frontend="smtp"), n + 1)
        self.assertEqual(value(s, "arnie_queue_messages", folder="outbox"),
                         0)
        self.assertEqual(value(s, "arnie_queue_messages", folder="failed"),
                         1)
        status, body = get(self.mport, "/healthz")
        self.assertEqual((status, body), (200, "ok\n"))
        self.assertEqual(get(self.mport, "/nothing")[0], 404)
        req = urllib.request.Request("http://127.0.0.1:%d/metrics" %
                                     self.mport, data=b"x", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urllib.request.urlopen(req, timeout=10)
        # evhttp answers a method it was told not to allow with 501.
        self.assertEqual(cm.exception.code, 501)

    def test_health_turns_503_when_the_upstream_stays_down(self):
        d = self.start(free_port(), HEALTH_MAX_PAUSE_SECONDS=1,
                       HEALTH_MAX_QUEUE_AGE_SECONDS=0)
        code, _ = smtp_send(d.port, FROM, ["user@example.org"],
                            make_message("down"))
        self.assertEqual(code, 250)

        def unhealthy():
            return get(self.mport, "/healthz")[0] == 503
        wait_for(unhealthy, timeout=15, what="/healthz 503")
        status, body = get(self.mport, "/healthz")
        self.assertIn("paused", body)
        self.assertIn("HEALTH_MAX_PAUSE_SECONDS=1", body)
        s = self.scrape()
        self.assertEqual(value(s, "arnie_upstream_up"), 0)
        self.assertGreaterEqual(value(s, "arnie_relay_session_errors_total",
                                      kind="unreachable"), 1)
        self.assertEqual(value(s, "arnie_queue_messages", folder="outbox"),
                         1)

    def test_health_turns_503_when_the_queue_grows_old(self):
        d = self.start(free_port(), HEALTH_MAX_PAUSE_SECONDS=0,
                       HEALTH_MAX_QUEUE_AGE_SECONDS=1)
        self.assertEqual(get(self.mport, "/healthz")[0], 200)
        smtp_send(d.port, FROM, ["user@example.org"], make_message("old"))
        wait_for(lambda: get(self.mport, "/healthz")[0] == 503, timeout=15,
                 what="/healthz 503")
        self.assertIn("oldest queued message", get(self.mport,
                                                   "/healthz")[1])

    def test_a_port_in_use_stops_the_daemon_with_a_message(self):
        d = self.start(free_port(), start=False)
        d.keys["ARNIE_METRICS_LISTEN"] = "127.0.0.1:%d" % d.port
        with open(d.env_path, "a") as f:
            f.write("ARNIE_METRICS_LISTEN=127.0.0.1:%d\n" % d.port)
        d.start(wait=False)
        self.assertEqual(d.proc.wait(timeout=15), 69, d.log_text())
        self.assertIn("cannot listen for metrics", d.log_text())


if __name__ == "__main__":
    arnietest.main()
