"""Per-message expiry: X-Arnie-Expire-After (from acceptance), Expires:
(a date), DEFAULT_EXPIRE_AFTER; an expired message is never sent, goes to
failed/ with reason "expired", is logged status=expired and counted; the
X-Arnie-* fields never reach the upstream; a bad duration gets 554."""

import json
import os
import re
import smtplib
import time

import arnietest
from arnietest import (ArnieTestCase, free_port, make_message, smtp_send,
                       wait_for)

FROM = "app@example.com"
RCPT = "user@example.org"


class ExpiryTest(ArnieTestCase):

    def send(self, d, test_id, *headers):
        code, _ = smtp_send(d.port, FROM, [RCPT],
                            make_message(test_id, extra_headers=headers))
        self.assertEqual(code, 250)

    def test_expire_after_while_the_upstream_is_down(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "otp1", "X-Arnie-Expire-After: 2s")
        self.send(d, "otp-late", "X-Arnie-Expire-After: 1h")
        env = d.spool.envelopes("outbox")
        self.assertEqual(len(env), 2)
        wait_for(lambda: d.spool.count("failed") == 1, timeout=15,
                 what="the 2 s message in failed/")
        failed = d.spool.envelopes("failed")[0]
        self.assertIn("expired: not sent by its deadline",
                      failed.get("last-reply"))
        self.assertIn("otp1", open(failed.path, "rb").read().decode())
        self.assertIn("status=expired (expired: not sent by its deadline",
                      d.log_text())
        up.restart()
        self.assertDeliveredOnce(up, "otp-late")
        self.assertEqual(up.with_test_id("otp1"), [])
        # The instruction to Arnie never reaches the upstream.
        copy = up.with_test_id("otp-late")[0]
        self.assertNotIn(b"X-Arnie-", copy.content)
        self.assertIn(b"X-Test-Id: otp-late", copy.content)

    def test_deadline_before_the_next_attempt(self):
        """A deferred message leaves at its deadline, not at its next
        attempt 300 s later."""
        up = self.upstream()
        up.script_rcpt(RCPT, ["451 4.7.1 Greylisted"] * 5)
        d = self.arnie(up.port, RETRY_DELAY_SECONDS=300,
                       RETRY_MAX_DELAY_SECONDS=600)
        self.send(d, "grey", "X-Arnie-Expire-After: 3s")
        wait_for(lambda: d.spool.count("failed") == 1, timeout=15,
                 what="the deferred message expired")
        self.assertEqual(up.with_test_id("grey"), [])

    def test_expires_header_and_default(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, DEFAULT_EXPIRE_AFTER="2s")
        # A date that has passed: refused at once, while the application
        # can act.  One in the future: kept (the default does not apply
        # to mail that says when); one that does not parse is ignored.
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            self.send(d, "past", "Expires: Mon, 1 Jan 2024 00:00:00 +0000")
        self.assertEqual(cm.exception.smtp_code, 554)
        self.assertIn(b"has passed", cm.exception.smtp_error)
        self.send(d, "future", "Expires: Fri, 1 Jan 2100 00:00:00 +0000")
        self.send(d, "plain")
        self.send(d, "garbled", "Expires: next tuesday")
        wait_for(lambda: d.spool.count("failed") == 2, timeout=15,
                 what="plain and garbled expired")
        failed = {e.get("message-id") for e in d.spool.envelopes("failed")}
        self.assertEqual(failed, {"<plain@test.invalid>",
                                  "<garbled@test.invalid>"})
        up.restart()
        copy = self.assertDeliveredOnce(up, "future")
        # Expires: is the author's, for the reader: relayed as it is.
        self.assertIn(b"Expires: Fri, 1 Jan 2100 00:00:00 +0000",
                      copy.content)
        self.assertEqual(up.with_test_id("plain"), [])

    def test_deadline_kept_after_a_restart_while_paused(self):
        """Found by the start-up scan while the upstream is down (the
        paused queue loads nothing to send): still expired on time."""
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "first")
        self.send(d, "restart", "X-Arnie-Expire-After: 3s")
        self.assertEqual(d.stop(), 0)
        d.start()
        wait_for(lambda: d.spool.count("failed") == 1, timeout=15,
                 what="the message expired after the restart")
        self.assertEqual(d.spool.envelopes("failed")[0].get("message-id"),
                         "<restart@test.invalid>")
        self.assertEqual(d.spool.count("outbox"), 1)

    def test_the_paused_queue_reads_an_envelope_once(self):
        """While the upstream is down, the sender reads an envelope once:
        those it loaded at start-up are not read again to learn their
        deadlines, nor those this process accepts (it knows them); one
        another process queues is, and expires."""
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, start=False)
        d.args = ["-v"]
        outbox = d.spool.path("outbox")
        os.makedirs(outbox, exist_ok=True)
        tomorrow = int(time.time()) + 86400
        for i in range(20):
            self.drop(outbox, "waiting%d" % i, next_attempt=tomorrow)
        d.start()
        self.send(d, "first")
        wait_for(lambda: "queue paused" in d.log_text(),
                 what="the queue paused")
        for i in range(5):
            self.send(d, "while-paused%d" % i, "X-Arnie-Expire-After: 1h")
        dropped = self.drop(outbox, "dropped",
                            expires=int(time.time()) + 2)
        wait_for(lambda: d.spool.list("failed") == [dropped], timeout=15,
                 what="the dropped message expired")
        read = re.findall(r"read (\d+) queued envelopes? for their "
                          r"deadlines", d.log_text())
        self.assertEqual(sum(int(n) for n in read), 1, read)
        self.assertEqual(d.spool.count("outbox"), 26)

    def test_a_dated_deferral_expires_on_time_while_paused(self):
        """A deferred message the start-up leaves unread until its
        state's date (its deadline, before its next attempt) is read then
        and expires, though the queue is paused; those dated tomorrow are
        never read."""
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, start=False, RETRY_DELAY_SECONDS=60,
                       RETRY_MAX_DELAY_SECONDS=60)
        d.args = ["-v"]
        outbox = d.spool.path("outbox")
        os.makedirs(outbox, exist_ok=True)
        tomorrow = int(time.time()) + 86400
        for i in range(20):
            self.drop(outbox, "waiting%d" % i, next_attempt=tomorrow,
                      dated=True)
        # Time enough for the start and the first session to pause the
        # queue before the date, even on a loaded machine.
        dated = self.drop(outbox, "dated", next_attempt=tomorrow,
                          expires=int(time.time()) + 12, dated=True)
        d.start()
        self.send(d, "first")
        wait_for(lambda: "queue paused" in d.log_text(),
                 what="the queue paused")
        wait_for(lambda: d.spool.list("failed") == [dated], timeout=30,
                 what="the dated message expired")
        self.assertRegex(d.log_text(), dated + ": .*status=expired")
        read = re.findall(r"read (\d+) queued envelopes? for their "
                          r"deadlines", d.log_text())
        self.assertEqual(sum(int(n) for n in read), 1, read)
        self.assertEqual(d.spool.count("outbox"), 21)

    def test_a_finished_message_read_while_paused_is_not_kept(self):
        """A queued message with every recipient done (a move cut short
        by a crash), read while the queue is paused, leaves outbox/ at the
        next probe, not at the next attempt its file names."""
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, SAVE_SENT_MAIL="true")
        self.send(d, "first")
        wait_for(lambda: "queue paused" in d.log_text(),
                 what="the queue paused")
        done = self.drop(d.spool.path("outbox"), "done",
                         next_attempt=int(time.time()) + 86400,
                         rcpt_state="sent")
        wait_for(lambda: d.spool.list("sent") == [done], timeout=10,
                 what="the finished message in sent/")
        self.assertEqual(d.spool.count("outbox"), 1)

    @staticmethod
    def drop(outbox, test_id, next_attempt=0, expires=None,
             rcpt_state="pending", dated=False):
        """A queue file written by another process; its ID.  dated: as
        Arnie leaves a deferred message, its envelope in a state file
        dated at its next look."""
        return arnietest.drop_queue_file(
            outbox, FROM, [RCPT], make_message(test_id), next_attempt,
            expires, rcpt_state,
            date=min(next_attempt, expires or next_attempt) if dated else None)

    def test_a_bad_duration_is_refused(self):
        d = self.arnie(free_port())
        with self.assertRaises(smtplib.SMTPDataError) as cm:
            smtp_send(d.port, FROM, [RCPT], make_message(
                "bad", extra_headers=["X-Arnie-Expire-After: soon"]))
        self.assertEqual(cm.exception.smtp_code, 554)
        self.assertIn(b"X-Arnie-Expire-After: 'soon' is not a duration",
                      cm.exception.smtp_error)
        self.assertEqual(d.spool.count("outbox"), 0)
        self.assertEqual(d.spool.count("inbox"), 0)

    def test_expired_counted(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "count", "X-Arnie-Expire-After: 1s")
        wait_for(lambda: d.spool.count("failed") == 1, timeout=15,
                 what="expired")
        # arnie-queue stats reads what the sender wrote.
        def expired():
            r = self.run_queue(d, "stats", "--json")
            st = json.loads(r.stdout)
            return st.get("last_hour", {}).get("expired") == 1
        wait_for(expired, what="stats counting the expiry")


if __name__ == "__main__":
    arnietest.main()
