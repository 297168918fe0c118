"""STARTTLS and AUTH towards the upstream, with a CA made at test time by
the openssl CLI: verified delivery, refused certificates (mail stays
queued, the log says why), TLS_VERIFY=false, AUTH PLAIN, a wrong password
(queued, never logged), OUTBOUND_EMAIL_PASSWORD_FILE."""

import base64
import os
import re
import resource
import signal
import ssl
import subprocess

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, wait_for

USER = "arnie-user"
PASSWORD = "S3cret-Pw!xyzzy-4711"
CERTIFICATE = re.compile(r"certificate", re.IGNORECASE)
WRONG_NAME = re.compile(r"certificate.*(host ?name|mismatch)", re.IGNORECASE)


class TlsAuthBase(ArnieTestCase):

    def setUp(self):
        super().setUp()
        self.ca = self.make_ca()

    def tls_upstream(self, sans="DNS:localhost,IP:127.0.0.1", name="good",
                     **kw):
        cert, key = self.ca.issue(name, sans)
        return self.upstream(
            tls_context=arnietest.TestCA.server_context(cert, key),
            require_starttls=True, serve_localhost=True, **kw)

    def tls_arnie(self, up, **keys):
        conf = dict(OUTBOUND_EMAIL_HOST="localhost",
                    OUTBOUND_EMAIL_USE_TLS=True,
                    OUTBOUND_EMAIL_CA_FILE=self.ca.ca_cert)
        conf.update(keys)
        return self.arnie(up.port, **conf)

    def send(self, d, test_id):
        code, _ = smtp_send(d.port, "app@example.com", ["user@example.org"],
                            make_message(test_id))
        self.assertEqual(code, 250)

    def assertStaysQueued(self, d, up, test_id, log_pattern):
        """The message is not delivered, not failed, spends no attempt, and
        the log explains why."""
        wait_for(lambda: log_pattern.search(d.log_text()),
                 what="a log line matching %s" % log_pattern.pattern)
        wait_for(lambda: up.connection_count() >= 2,
                 what="a second try (retry after backoff)")
        self.assertEqual(up.with_test_id(test_id, False), [])
        self.assertEqual(d.spool.list("failed"), [])
        envs = d.spool.envelopes("outbox")
        self.assertEqual(len(envs), 1)
        self.assertEqual(envs[0].attempts, 0, envs[0].header_text())
        self.assertEqual(envs[0].rcpt_state("user@example.org"), "pending")



class TlsAuthTest(TlsAuthBase):

    # ------------------------------------------------------------ STARTTLS

    def test_starttls_verified_with_the_test_ca(self):
        up = self.tls_upstream()
        d = self.tls_arnie(up)
        self.send(d, "tls-ok")
        t = self.assertDeliveredOnce(up, "tls-ok")
        self.assertTrue(t.tls, "delivered without STARTTLS")
        # TLS 1.3, settled against libesmtp's stall (tests/tls13).
        self.assertEqual(t.tls_version, "TLSv1.3")
        self.assertTrue(up.sni_names)
        self.assertEqual(set(up.sni_names), {"localhost"}, up.sni_names)

    def test_tls12_only_upstream(self):
        cert, key = self.ca.issue("old", "DNS:localhost,IP:127.0.0.1")
        ctx = arnietest.TestCA.server_context(cert, key)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        up = self.upstream(tls_context=ctx, require_starttls=True,
                           serve_localhost=True)
        d = self.tls_arnie(up)
        self.send(d, "tls12")
        t = self.assertDeliveredOnce(up, "tls12")
        self.assertEqual(t.tls_version, "TLSv1.2")

    def test_starttls_verified_for_an_ip_address_host(self):
        up = self.tls_upstream()
        d = self.tls_arnie(up, OUTBOUND_EMAIL_HOST="127.0.0.1")
        self.send(d, "tls-ip")
        t = self.assertDeliveredOnce(up, "tls-ip")
        self.assertTrue(t.tls)
        # RFC 6066: no SNI for an IP address.
        self.assertTrue(up.sni_names)
        self.assertEqual(set(up.sni_names), {None}, up.sni_names)

    def test_wrong_host_name_is_refused_and_mail_stays_queued(self):
        up = self.tls_upstream(sans="DNS:wrong.example", name="wrong")
        d = self.tls_arnie(up)
        self.send(d, "tls-wrong")
        self.assertStaysQueued(d, up, "tls-wrong", WRONG_NAME)

    def test_unknown_ca_is_refused(self):
        up = self.tls_upstream()
        d = self.tls_arnie(up, OUTBOUND_EMAIL_CA_FILE=None)
        self.send(d, "tls-unknown-ca")
        self.assertStaysQueued(d, up, "tls-unknown-ca", CERTIFICATE)

    def test_tls_verify_false_accepts_a_wrong_name(self):
        up = self.tls_upstream(sans="DNS:wrong.example", name="wrong")
        d = self.tls_arnie(up, OUTBOUND_EMAIL_TLS_VERIFY=False,
                           OUTBOUND_EMAIL_CA_FILE=None)
        self.send(d, "tls-noverify")
        t = self.assertDeliveredOnce(up, "tls-noverify")
        self.assertTrue(t.tls)

    def test_use_tls_refuses_a_server_without_starttls(self):
        up = self.upstream()                     # plain text only
        d = self.tls_arnie(up)
        self.send(d, "tls-missing")
        self.assertStaysQueued(d, up, "tls-missing",
                               re.compile(r"STARTTLS"))

    # ------------------------------------------------------------ AUTH

    def secret_forms(self, password):
        plain = base64.b64encode(("\0%s\0%s" % (USER, password)).encode())
        return [password, plain.decode(),
                base64.b64encode(password.encode()).decode()]

    def assertNoSecretInLog(self, d, password):
        text = d.log_text()
        for form in self.secret_forms(password):
            self.assertNotIn(form, text)

    def test_auth_plain_over_starttls(self):
        up = self.tls_upstream(auth=(USER, PASSWORD), auth_exclude=["LOGIN"])
        d = self.tls_arnie(up, OUTBOUND_EMAIL_USERNAME=USER,
                           OUTBOUND_EMAIL_PASSWORD=PASSWORD)
        self.send(d, "auth-ok")
        t = self.assertDeliveredOnce(up, "auth-ok")
        self.assertEqual(t.user, USER)
        self.assertTrue(t.tls)
        self.assertEqual([(a[1], a[2], a[3]) for a in up.auth_log],
                         [(USER, True, "PLAIN")])
        self.assertNoSecretInLog(d, PASSWORD)

    def test_wrong_password_keeps_mail_queued_and_unlogged(self):
        wrong = "Wr0ng-Pw!plugh-0815"
        up = self.tls_upstream(auth=(USER, PASSWORD))
        d = self.tls_arnie(up, OUTBOUND_EMAIL_USERNAME=USER,
                           OUTBOUND_EMAIL_PASSWORD=wrong)
        self.send(d, "auth-bad")
        wait_for(lambda: len({a[0] for a in up.auth_log}) >= 2,
                 what="AUTH tried on two connections")
        self.assertFalse(any(a[2] for a in up.auth_log))
        self.assertEqual(up.with_test_id("auth-bad", False), [])
        self.assertEqual(d.spool.list("failed"), [])
        envs = d.spool.envelopes("outbox")
        self.assertEqual(len(envs), 1)
        self.assertEqual(envs[0].attempts, 0, envs[0].header_text())
        self.assertTrue(re.search(r"535|auth", d.log_text(), re.IGNORECASE),
                        "the log does not say AUTH failed")
        self.assertNoSecretInLog(d, wrong)
        self.assertEqual(d.stop(), 0)
        self.assertNoSecretInLog(d, wrong)
        # With the right password the same queued message goes out.
        d2 = self.tls_arnie(up, OUTBOUND_EMAIL_USERNAME=USER,
                            OUTBOUND_EMAIL_PASSWORD=PASSWORD)
        self.assertDeliveredOnce(up, "auth-bad")
        self.assertNoSecretInLog(d2, PASSWORD)

    def test_password_file(self):
        path = os.path.join(self.tmp, "password")
        with open(path, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(path, 0o600)
        up = self.tls_upstream(auth=(USER, PASSWORD))
        d = self.tls_arnie(up, OUTBOUND_EMAIL_USERNAME=USER,
                           OUTBOUND_EMAIL_PASSWORD_FILE=path)
        self.send(d, "auth-file")
        t = self.assertDeliveredOnce(up, "auth-file")
        self.assertEqual(t.user, USER)
        self.assertNoSecretInLog(d, PASSWORD)


class CoreDumpTest(TlsAuthBase):
    """The upstream password must not be in a core dump of the daemon,
    wherever it came from (the .env file, the environment, a password
    file): it lives in pages a core dump leaves out, and every other copy
    is wiped."""

    def dump_core(self, d, writer):
        """A core file of d, written by the kernel (kill -SEGV; core_pattern
        must be a plain "core") or by gdb's gcore; returns its bytes."""
        if writer == "kernel":
            d.signal(signal.SIGSEGV)
            d.proc.wait(timeout=30)
            self.assertEqual(d.proc.returncode, -signal.SIGSEGV)
            names = [n for n in os.listdir(self.tmp)
                     if n == "core" or n.startswith("core.")]
            self.assertEqual(len(names), 1, os.listdir(self.tmp))
            path = os.path.join(self.tmp, names[0])
        else:
            path = os.path.join(self.tmp, "gcore")
            r = subprocess.run(["gcore", "-o", path, str(d.pid)],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 0, r.stderr)
            path += ".%d" % d.pid
        with open(path, "rb") as f:
            data = f.read()
        os.unlink(path)
        return data

    def assertNoPasswordInCore(self, source, writer="kernel"):
        if "ASAN_OPTIONS" in os.environ:
            self.skipTest("a sanitizer build writes no core file")
        with open("/proc/sys/kernel/core_pattern") as f:
            pattern = f.read().strip()
        if writer == "kernel" and pattern != "core":
            self.skipTest("core_pattern is %r; the gcore test runs" %
                          pattern)
        up = self.tls_upstream(auth=(USER, PASSWORD))
        keys = dict(OUTBOUND_EMAIL_USERNAME=USER)
        extra = {}
        if source == "file":
            path = os.path.join(self.tmp, "password")
            with open(path, "w") as f:
                f.write(PASSWORD + "\n")
            os.chmod(path, 0o600)
            keys["OUTBOUND_EMAIL_PASSWORD_FILE"] = path
        elif source == "env":
            extra["OUTBOUND_EMAIL_PASSWORD"] = PASSWORD
        else:
            keys["OUTBOUND_EMAIL_PASSWORD"] = '"%s"' % PASSWORD
        d = self.tls_arnie(up, start=False, **keys)
        d.extra_env = extra
        d.preexec = lambda: resource.setrlimit(
            resource.RLIMIT_CORE,
            (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        d.start()
        # The password has been used: a relay session authenticated.
        self.send(d, "core-" + source)
        t = self.assertDeliveredOnce(up, "core-" + source)
        self.assertEqual(t.user, USER)
        core = self.dump_core(d, writer)
        # A real core of the daemon: the user name is in it.
        self.assertGreater(len(core), 1000000)
        self.assertTrue(USER.encode() in core, "no user name in the core")
        plain = base64.b64encode(("\0%s\0%s" % (USER, PASSWORD)).encode())
        for secret in (PASSWORD.encode(), plain):
            at = core.find(secret)
            self.assertEqual(at, -1, "the password is in the %d-octet "
                             "core at offset %d" % (len(core), at))

    def test_password_from_env_file_not_in_core(self):
        self.assertNoPasswordInCore("dotenv")

    def test_password_from_environment_not_in_core(self):
        self.assertNoPasswordInCore("env")

    def test_password_file_not_in_core(self):
        self.assertNoPasswordInCore("file")

    def test_password_not_in_gcore(self):
        self.assertNoPasswordInCore("dotenv", "gdb")


if __name__ == "__main__":
    arnietest.main()
