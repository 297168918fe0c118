"""The fallback upstream (FALLBACK_EMAIL_*): while the primary has been
paused for FALLBACK_AFTER_SECONDS, messages go to the fallback; the
primary is probed on its backoff and takes over again when it answers;
the log names the relay each recipient went through."""

import json
import time

import arnietest
from arnietest import (ArnieTestCase, make_message, smtp_send, wait_for,
                       write_env)

FROM = "app@example.com"


class FallbackTest(ArnieTestCase):

    def send(self, d, test_id):
        code, _ = smtp_send(d.port, FROM, ["user@example.org"],
                            make_message(test_id))
        self.assertEqual(code, 250)

    def start(self, after):
        """arnie with its primary down and a fallback up."""
        primary = self.upstream()
        primary.stop()
        fallback = self.upstream()
        d = self.arnie(primary.port, FALLBACK_EMAIL_HOST="127.0.0.1",
                       FALLBACK_EMAIL_HOST_PORT=fallback.port,
                       FALLBACK_EMAIL_USE_TLS=False,
                       FALLBACK_AFTER_SECONDS=after)
        return d, primary, fallback

    def test_fallback_while_the_primary_is_down(self):
        d, primary, fallback = self.start(1)
        self.send(d, "fb1")
        self.assertDeliveredOnce(fallback, "fb1")
        self.assertIn("relay=127.0.0.1:%d, delay=" % fallback.port,
                      d.log_text())
        # The primary back: the next message, once the primary's pause is
        # over, probes it, and it takes over.
        primary.restart()

        def probe_due():
            st = json.loads(self.run_queue(d, "stats", "--json").stdout)
            up = st.get("upstream", {})
            return up.get("state") == "paused" and \
                up.get("next_probe", 0) <= time.time()
        wait_for(probe_due, what="the primary's probe due")
        self.send(d, "primary1")
        self.assertDeliveredOnce(primary, "primary1")
        wait_for(lambda: "upstream reachable again" in d.log_text(),
                 what="the primary back")
        self.assertEqual(fallback.with_test_id("primary1"), [])
        self.assertEqual(primary.with_test_id("fb1"), [])

    def test_not_before_fallback_after(self):
        d, primary, fallback = self.start(3600)
        self.send(d, "wait1")
        wait_for(lambda: "queue paused" in d.log_text(), what="a pause")
        # Still the primary's: it comes back and gets the message.
        primary.restart()
        self.assertDeliveredOnce(primary, "wait1")
        self.assertEqual(fallback.all_transactions(), [])

    def test_fallback_settings_are_checked(self):
        path = write_env(self.tmp, name="bad.env",
                         OUTBOUND_EMAIL_HOST="127.0.0.1",
                         FALLBACK_EMAIL_USERNAME="app",
                         FILES_DIRECTORY=self.files_dir)
        r = self.run_arnie(["-c", path, "--check-config"])
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("FALLBACK_EMAIL_HOST is not", r.stderr)
        path = write_env(self.tmp, name="bad2.env",
                         OUTBOUND_EMAIL_HOST="127.0.0.1",
                         FALLBACK_EMAIL_HOST="127.0.0.1",
                         FALLBACK_EMAIL_HOST_PORT=465,
                         FILES_DIRECTORY=self.files_dir)
        r = self.run_arnie(["-c", path, "--check-config"])
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("FALLBACK_EMAIL_HOST_PORT: port 465", r.stderr)


if __name__ == "__main__":
    arnietest.main()
