"""Where the log goes and in which form: ARNIE_LOG_FORMAT=json (one JSON
object per line, the same content as the text line) and
ARNIE_LOG_FILE=syslog (a real datagram socket at /dev/log, made by the
test when the machine has none)."""

import json
import os
import socket

import arnietest
from arnietest import (ArnieTestCase, make_message, smtp_send, wait_for)

FROM = "app@example.com"
EX_CANTCREAT = 73


def json_lines(d):
    """Every line of d's log, parsed (a line that is not JSON fails)."""
    return [json.loads(line) for line in d.log_text().splitlines()
            if line.strip()]


class JsonLogTest(ArnieTestCase):

    def test_every_line_is_a_json_object_with_the_text_fields(self):
        up = self.upstream()
        d = self.arnie(up.port, ARNIE_LOG_FORMAT="json")
        code, reply = smtp_send(d.port, FROM, ["user@example.org"],
                                make_message("json-log"))
        self.assertEqual(code, 250)
        self.assertDeliveredOnce(up, "json-log")
        qid = reply.split()[-1]

        def delivery():
            return [o for o in json_lines(d)
                    if o.get("event") == "delivery" and o.get("id") == qid]
        got = wait_for(delivery, what="the delivery line")[0]
        self.assertEqual(got["to"], "user@example.org")
        self.assertEqual(got["status"], "sent")
        self.assertTrue(got["reply"].startswith("250"), got)
        self.assertEqual(got["attempts"], 1)
        self.assertIsInstance(got["delay"], float)
        self.assertEqual(got["relay"], "127.0.0.1:%d" % up.port)
        self.assertEqual(got["level"], "info")
        self.assertEqual(got["program"], "arnie")
        self.assertEqual(got["pid"], d.pid)
        self.assertRegex(got["time"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        queued = [o for o in json_lines(d)
                  if o.get("event") == "queued" and o.get("id") == qid]
        self.assertEqual(len(queued), 1, json_lines(d))
        self.assertEqual(queued[0]["from"], FROM)
        self.assertEqual(queued[0]["nrcpt"], 1)

    def test_a_bad_format_is_a_configuration_error(self):
        env = os.path.join(self.tmp, "bad.env")
        with open(env, "w") as f:
            f.write("OUTBOUND_EMAIL_HOST=127.0.0.1\n"
                    "ARNIE_LOG_FORMAT=yaml\n")
        r = self.run_arnie(["-c", env, "--check-config"])
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("ARNIE_LOG_FORMAT: 'yaml' is not a log format",
                      r.stderr)


class SyslogTest(ArnieTestCase):

    def take_dev_log(self):
        """A datagram socket bound at /dev/log, for this test only."""
        if os.geteuid() != 0:
            self.skipTest("binding /dev/log needs root")
        if os.path.exists("/dev/log"):
            self.skipTest("/dev/log belongs to this machine's syslog")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind("/dev/log")
        self.addCleanup(os.unlink, "/dev/log")
        self.addCleanup(sock.close)
        sock.settimeout(0.2)
        return sock

    def test_without_a_syslog_socket_the_daemon_says_so(self):
        if os.path.exists("/dev/log"):
            self.skipTest("this machine has a syslog socket")
        d = self.arnie(None, ARNIE_LOG_FILE="syslog", start=False)
        d.start(wait=False)
        wait_for(lambda: not d.running(), what="arnie to exit")
        self.assertEqual(d.proc.returncode, EX_CANTCREAT)
        self.assertIn("cannot open ARNIE_LOG_FILE syslog (no syslog socket "
                      "at /dev/log)", d.log_text())

    def test_lines_reach_syslog_as_mail_facility(self):
        dev_log = self.take_dev_log()
        up = self.upstream()
        d = self.arnie(up.port, ARNIE_LOG_FILE="syslog",
                       ARNIE_LOG_FORMAT="json", start=False)
        d.start(wait=False)
        code, reply = wait_for(
            lambda: _send_when_up(d), what="arnie to take the message")
        self.assertEqual(code, 250)
        qid = reply.split()[-1]
        got = []

        def delivered():
            try:
                got.append(dev_log.recv(65536).decode())
            except socket.timeout:
                pass
            return any('"event":"delivery"' in g and qid in g for g in got)
        wait_for(delivered, what="the delivery line on /dev/log")
        line = [g for g in got if '"event":"delivery"' in g][0]
        # <22>: facility mail (2), priority info (6).
        self.assertTrue(line.startswith("<22>"), line)
        self.assertIn("arnie[%d]: " % d.pid, line)
        obj = json.loads(line[line.index("{"):])
        self.assertEqual(obj["status"], "sent")
        self.assertEqual(obj["id"], qid)
        # Nothing went to the daemon's standard error.
        self.assertEqual(d.log_text().strip(), "")


def _send_when_up(d):
    try:
        return smtp_send(d.port, FROM, ["user@example.org"],
                         make_message("syslog"))
    except OSError:
        return None


if __name__ == "__main__":
    arnietest.main()
