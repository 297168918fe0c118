"""Idempotent submission (DEDUP_WINDOW_SECONDS): a message whose
Message-ID and envelope sender were accepted within the window is answered
250 "duplicate of ID, not queued again" and not queued; the index survives
a restart; mail without a Message-ID, another sender, an entry older than
the window or the window off (the default) queue as usual."""

import os
import smtplib

import arnietest
from arnietest import ArnieTestCase, make_message, wait_for

FROM = "app@example.com"
RCPT = "user@example.org"


def submit(port, msg, sender=FROM):
    """(code, text) of the end of DATA."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail(sender)
        s.rcpt(RCPT)
        return s.data(msg)


def without_msgid(test_id):
    return b"".join(line for line in
                    make_message(test_id).splitlines(keepends=True)
                    if not line.startswith(b"Message-ID:"))


class DedupTest(ArnieTestCase):

    def test_a_retry_is_not_queued_twice(self):
        up = self.upstream()
        d = self.arnie(up.port, DEDUP_WINDOW_SECONDS=600)
        code, text = submit(d.port, make_message("reset"))
        self.assertEqual(code, 250)
        first = text.decode().split()[-1]
        code, text = submit(d.port, make_message("reset"))
        self.assertEqual(code, 250)
        self.assertEqual(text.decode(),
                         "2.0.0 duplicate of %s, not queued again" % first)
        self.assertDeliveredOnce(up, "reset")
        self.assertRegex(d.log_text(), r"duplicate of %s \(message-id="
                         r"<reset@test\.invalid>, from=<%s>" % (first, FROM))
        # Another sender with the same Message-ID is another message.
        code, text = submit(d.port, make_message("reset"),
                            sender="other@example.com")
        self.assertEqual(code, 250)
        self.assertIn("queued as", text.decode())
        wait_for(lambda: len(up.with_test_id("reset")) == 2,
                 what="the other sender's copy")
        # The same message to other recipients (a second transaction
        # after a 452) is not a duplicate.
        with smtplib.SMTP("127.0.0.1", d.port, timeout=10) as s:
            s.ehlo("client.test")
            s.mail(FROM)
            s.rcpt("second@example.org")
            code, text = s.data(make_message("reset"))
        self.assertIn("queued as", text.decode())
        wait_for(lambda: len(up.with_test_id("reset")) == 3,
                 what="the copy for other recipients")
        # An empty Message-ID names nothing: both copies queued.
        empty = make_message("emptyid").replace(
            b"Message-ID: <emptyid@test.invalid>", b"Message-ID:")
        for _ in range(2):
            code, text = submit(d.port, empty)
            self.assertIn("queued as", text.decode())
        wait_for(lambda: len(up.with_test_id("emptyid")) == 2,
                 what="both copies with an empty Message-ID")
        # Without a Message-ID (Arnie adds a new one each time): both.
        for _ in range(2):
            code, text = submit(d.port, without_msgid("noid"))
            self.assertIn("queued as", text.decode())
        wait_for(lambda: len(up.with_test_id("noid")) == 2,
                 what="both copies without a Message-ID")

    def test_the_index_survives_a_restart_and_ages_out(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port, DEDUP_WINDOW_SECONDS=600)
        code, text = submit(d.port, make_message("once"))
        first = text.decode().split()[-1]
        self.assertEqual(d.stop(), 0)
        d.start()
        code, text = submit(d.port, make_message("once"))
        self.assertIn("duplicate of %s" % first, text.decode())
        self.assertEqual(d.spool.count("outbox"), 1)
        # Older than the window: queued again.
        index = d.spool.path("dedup")
        old = os.stat(index).st_mtime - 3600
        for name in os.listdir(index):
            os.utime(os.path.join(index, name), (old, old))
        code, text = submit(d.port, make_message("once"))
        self.assertIn("queued as", text.decode())
        self.assertEqual(d.spool.count("outbox"), 2)

    def test_off_by_default(self):
        d = self.arnie()
        for _ in range(2):
            code, text = submit(d.port, make_message("twice"))
            self.assertIn("queued as", text.decode())
        self.assertEqual(d.spool.count("outbox"), 2)
        self.assertEqual(os.listdir(d.spool.path("dedup")), [])


if __name__ == "__main__":
    arnietest.main()
