"""OUTCOME_COMMAND: run once per final outcome (sent, failed, expired)
with the message's facts in its environment, from a thread of its own (a
hanging command is killed at its timeout and holds up no delivery), from
records kept in the spool (a restart runs those still waiting)."""

import os

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, wait_for

FROM = "app@example.com"

SCRIPT = """#!/bin/sh
# Written by the test: one file per outcome, with the ARNIE_ variables.
{mode}
env | grep '^ARNIE_' | sort > "{out}/$ARNIE_ID.tmp"
mv "{out}/$ARNIE_ID.tmp" "{out}/$ARNIE_ID"
"""


class HooksTest(ArnieTestCase):

    def hook(self, mode=""):
        """An OUTCOME_COMMAND script writing into self.out."""
        self.out = os.path.join(self.tmp, "outcomes-seen")
        os.makedirs(self.out, exist_ok=True)
        path = os.path.join(self.tmp, "hook.sh")
        with open(path, "w") as f:
            f.write(SCRIPT.format(mode=mode, out=self.out))
        os.chmod(path, 0o755)
        return path

    def seen(self, msg_id):
        """The variables the command saw for spool ID msg_id."""
        path = os.path.join(self.out, msg_id)
        wait_for(lambda: os.path.exists(path), what="the outcome of %s" %
                 msg_id)
        with open(path) as f:
            return dict(line.rstrip("\n").split("=", 1) for line in f)

    def send(self, d, test_id, rcpt="user@example.org", *headers):
        code, text = smtp_send(d.port, FROM, [rcpt],
                               make_message(test_id, extra_headers=headers))
        self.assertEqual(code, 250)
        return text.split()[-1]

    def test_sent_failed_and_expired(self):
        up = self.upstream()
        up.script_rcpt("gone@example.org", ["550 5.1.1 No such user"])
        d = self.arnie(up.port, OUTCOME_COMMAND=self.hook())
        sent = self.send(d, "ok1")
        failed = self.send(d, "bad1", "gone@example.org")
        v = self.seen(sent)
        self.assertEqual(v["ARNIE_OUTCOME"], "sent")
        self.assertEqual(v["ARNIE_MESSAGE_ID"], "<ok1@test.invalid>")
        self.assertEqual(v["ARNIE_RECIPIENTS"], "user@example.org")
        self.assertRegex(v["ARNIE_QUEUED_AS"], r"^[0-9]+$")
        self.assertIn("queued as %s" % v["ARNIE_QUEUED_AS"],
                      v["ARNIE_REPLY"])
        v = self.seen(failed)
        self.assertEqual(v["ARNIE_OUTCOME"], "failed")
        self.assertIn("550 5.1.1 No such user", v["ARNIE_REPLY"])
        self.assertEqual(v["ARNIE_QUEUED_AS"], "")
        up.stop()
        expired = self.send(d, "late1", "user@example.org",
                            "X-Arnie-Expire-After: 1s")
        self.assertEqual(self.seen(expired)["ARNIE_OUTCOME"], "expired")
        # Each record goes once its command ran.
        wait_for(lambda: os.listdir(d.spool.path("outcomes")) == [],
                 what="outcomes/ empty")

    def test_a_hanging_command_holds_up_nothing(self):
        up = self.upstream()
        d = self.arnie(up.port, OUTCOME_COMMAND=self.hook("sleep 30"),
                       OUTCOME_COMMAND_TIMEOUT_SECONDS=1)
        first = self.send(d, "slow1")
        # The sender goes on while the command hangs.
        for i in range(3):
            self.send(d, "more%d" % i)
        for i in range(3):
            self.assertDeliveredOnce(up, "more%d" % i)
        wait_for(lambda: "%s: OUTCOME_COMMAND killed after 1s" % first in
                 d.log_text(), what="the hanging command killed")

    def test_the_program_exit_decides_not_its_output(self):
        """A program that closes its output and hangs is killed at its
        timeout; one that leaves a child holding its output has run."""
        up = self.upstream()
        d = self.arnie(up.port, OUTCOME_COMMAND=self.hook(
            '[ "$(cat {0}/mode)" = hang ] && '
            '{{ exec >/dev/null 2>&1; sleep 30; }}\n'
            '[ "$(cat {0}/mode)" = child ] && {{ sleep 30 & }}'.format(
                self.tmp)),
            OUTCOME_COMMAND_TIMEOUT_SECONDS=2)
        with open(os.path.join(self.tmp, "mode"), "w") as f:
            f.write("hang\n")
        hung = self.send(d, "hang1")
        wait_for(lambda: "%s: OUTCOME_COMMAND killed after 2s" % hung in
                 d.log_text(), what="the silent hanging command killed")
        with open(os.path.join(self.tmp, "mode"), "w") as f:
            f.write("child\n")
        quick = self.send(d, "child1")
        self.assertEqual(self.seen(quick)["ARNIE_OUTCOME"], "sent")
        wait_for(lambda: quick not in os.listdir(d.spool.path("outcomes")),
                 what="its record removed")
        self.assertNotIn("%s: OUTCOME_COMMAND" % quick, d.log_text())

    def test_records_wait_across_a_restart(self):
        up = self.upstream()
        # The command fails until the flag file exists.
        flag = os.path.join(self.tmp, "ready")
        d = self.arnie(up.port, OUTCOME_COMMAND=self.hook(
            '[ -e "%s" ] || { echo not ready; exit 3; }' % flag))
        msg = self.send(d, "later1")
        self.assertDeliveredOnce(up, "later1")
        wait_for(lambda: "%s: OUTCOME_COMMAND exited 3: not ready" % msg in
                 d.log_text(), what="the failed run logged")
        self.assertEqual(os.listdir(d.spool.path("outcomes")), [msg])
        self.assertEqual(d.stop(), 0)
        open(flag, "w").close()
        d.start()
        self.assertEqual(self.seen(msg)["ARNIE_OUTCOME"], "sent")
        wait_for(lambda: os.listdir(d.spool.path("outcomes")) == [],
                 what="outcomes/ empty")


ALERT_SCRIPT = """#!/bin/sh
echo "$ARNIE_ALERT|$ARNIE_ALERT_KIND|$ARNIE_ALERT_TEXT" >> "{out}"
"""


class AlertTest(ArnieTestCase):

    def alert_hook(self):
        self.alerts = os.path.join(self.tmp, "alerts.log")
        path = os.path.join(self.tmp, "alert.sh")
        with open(path, "w") as f:
            f.write(ALERT_SCRIPT.format(out=self.alerts))
        os.chmod(path, 0o755)
        return path

    def seen(self):
        """[(alert, kind, text)] so far."""
        try:
            with open(self.alerts) as f:
                return [tuple(line.rstrip("\n").split("|", 2))
                        for line in f]
        except FileNotFoundError:
            return []

    def test_auth_refused_alerts_at_once_and_clears(self):
        ca = self.make_ca()
        cert, key = ca.issue("good", "DNS:localhost,IP:127.0.0.1")
        up = self.upstream(
            tls_context=arnietest.TestCA.server_context(cert, key),
            require_starttls=True, serve_localhost=True,
            auth=("app", "right"))
        d = self.arnie(up.port, ALERT_COMMAND=self.alert_hook(),
                       ALERT_AFTER_SECONDS=3600,
                       OUTBOUND_EMAIL_HOST="localhost",
                       OUTBOUND_EMAIL_USE_TLS=True,
                       OUTBOUND_EMAIL_CA_FILE=ca.ca_cert,
                       OUTBOUND_EMAIL_USERNAME="app",
                       OUTBOUND_EMAIL_PASSWORD="wrong")
        smtp_send(d.port, FROM, ["user@example.org"], make_message("auth1"))
        wait_for(lambda: [a[:2] for a in self.seen()] == [("paused", "auth")],
                 what="the auth alert, without waiting an hour")
        self.assertIn("AUTH refused", self.seen()[0][2])
        self.assertNotIn("wrong", self.seen()[0][2])
        with up.lock:
            up.auth = ("app", "wrong")
        self.assertDeliveredOnce(up, "auth1")
        wait_for(lambda: len(self.seen()) == 2, what="the recovered alert")
        self.assertEqual(self.seen()[1][:2], ("recovered", "auth"))
        self.assertIn("answers again", self.seen()[1][2])

    def test_unreachable_and_queue_age(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, ALERT_COMMAND=self.alert_hook(),
                       ALERT_AFTER_SECONDS=1, ALERT_QUEUE_AGE_SECONDS=2)
        smtp_send(d.port, FROM, ["user@example.org"], make_message("age1"))
        wait_for(lambda: {a[0] for a in self.seen()} >=
                 {"paused", "queue_age"}, what="paused and queue_age")
        kinds = {a[0]: a[1] for a in self.seen()}
        self.assertEqual(kinds["paused"], "unreachable")
        up.restart()
        self.assertDeliveredOnce(up, "age1")
        wait_for(lambda: {a[0] for a in self.seen()} >=
                 {"recovered", "queue_age_cleared"},
                 what="both cleared")
        # Each said once.
        names = [a[0] for a in self.seen()]
        self.assertEqual(sorted(names), sorted(set(names)), names)


if __name__ == "__main__":
    arnietest.main()
