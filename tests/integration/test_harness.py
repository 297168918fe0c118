"""The fake upstream on its own: if these fail, the other tests' verdicts
about arnie mean nothing.  No arnie is started here."""

import smtplib
import ssl

import arnietest
from arnietest import ArnieTestCase, make_message, wait_for


class FakeUpstreamTest(ArnieTestCase):

    def client(self, up):
        s = smtplib.SMTP("127.0.0.1", up.port, local_hostname="c.test",
                         timeout=10)
        self.addCleanup(s.close)
        return s

    def test_rules_and_recording(self):
        up = self.upstream()
        s = self.client(up)
        s.ehlo()
        self.assertIn("pipelining", s.esmtp_features)
        s.mail("a@x.test")
        self.assertEqual(s.rcpt("ok@y.test")[0], 250)
        self.assertEqual(s.rcpt("perm@y.test")[0], 550)
        self.assertEqual(s.rcpt("temp@y.test")[0], 451)
        code, _ = s.data(make_message("h1"))
        self.assertEqual(code, 250)
        s.quit()
        t = up.with_test_id("h1")
        self.assertEqual(len(t), 1)
        self.assertEqual(t[0].rcpt_tos, ["ok@y.test"])
        self.assertEqual(t[0].conn, 1)
        self.assertEqual(up.connection_count(), 1)
        self.assertTrue(t[0].content.startswith(b"From: <app@example.com>"))

    def test_scripts(self):
        up = self.upstream()
        up.script_rcpt("x@y.test", ["451 4.3.0 later"])
        up.script_data(["451 4.3.0 try later", "250 ok"])
        s = self.client(up)
        s.ehlo()
        s.mail("a@x.test")
        self.assertEqual(s.rcpt("x@y.test")[0], 451)
        self.assertEqual(s.rcpt("x@y.test")[0], 250)
        self.assertEqual(s.data(make_message("h2"))[0], 451)
        s.mail("a@x.test")
        s.rcpt("x@y.test")
        self.assertEqual(s.data(make_message("h2"))[0], 250)
        self.assertEqual(len(up.with_test_id("h2")), 1)
        self.assertEqual(len(up.with_test_id("h2", accepted_only=False)), 2)

    def test_connect_reply_and_restart(self):
        up = self.upstream()
        up.connect_reply = "421 4.3.2 down"
        with self.assertRaises(smtplib.SMTPConnectError):
            smtplib.SMTP("127.0.0.1", up.port, timeout=5)
        self.assertEqual(up.connection_count(), 1)
        up.connect_reply = None
        up.stop()
        self.assertFalse(arnietest.port_open(up.port))
        up.restart()
        s = self.client(up)
        s.ehlo()
        s.quit()
        self.assertEqual(up.connection_count(), 2)

    def test_starttls_auth(self):
        ca = self.make_ca()
        cert, key = ca.issue("good", "DNS:localhost,IP:127.0.0.1")
        up = self.upstream(tls_context=ca.server_context(cert, key),
                           require_starttls=True, auth=("u", "pw"))
        ctx = ssl.create_default_context(cafile=ca.ca_cert)
        s = smtplib.SMTP("localhost", up.port, local_hostname="c.test",
                         timeout=10)
        self.addCleanup(s.close)
        s.starttls(context=ctx)
        with self.assertRaises(smtplib.SMTPAuthenticationError):
            s.login("u", "wrong")
        s.login("u", "pw")
        s.sendmail("a@x.test", ["b@y.test"], make_message("h3"))
        t = up.with_test_id("h3")[0]
        self.assertTrue(t.tls)
        self.assertEqual(t.user, "u")
        results = [a[2] for a in up.auth_log]
        # smtplib tries each offered mechanism before giving up.
        self.assertTrue(results[-1])
        self.assertFalse(any(results[:-1]))

    def test_wrong_name_cert_is_refused_by_a_verifying_client(self):
        ca = self.make_ca()
        cert, key = ca.issue("wrong", "DNS:wrong.example")
        up = self.upstream(tls_context=ca.server_context(cert, key))
        ctx = ssl.create_default_context(cafile=ca.ca_cert)
        s = smtplib.SMTP("localhost", up.port, timeout=10)
        self.addCleanup(s.close)
        with self.assertRaises(ssl.SSLCertVerificationError):
            s.starttls(context=ctx)

    def test_wait_for_times_out(self):
        with self.assertRaises(AssertionError):
            wait_for(lambda: False, timeout=0.2, what="nothing")


if __name__ == "__main__":
    arnietest.main()
