"""Why the relay settles a TLS 1.3 session before libesmtp goes on
(shared/tls.h, tls_settle()), shown with the smallest client that has the
problem (stall.c) and a plain STARTTLS server whose TLS 1.3 handshake ends
with two session tickets, as OpenSSL's does by default.

libesmtp 1.1, after STARTTLS, queues its EHLO and polls for reading and
writing at once; when the server's tickets are already in the socket, it
reads first, SSL_read() takes the tickets and finds no reply, and libesmtp
waits for the reply to an EHLO it never sent, until its timeout.  The
client here waits 200 ms after the handshake (a slow client: a loaded
machine, a sanitizer build) so that the tickets are there in time:

  TLS 1.3                     stalls: the message is not sent (timeout)
  TLS 1.2                     sent (no messages after a 1.2 handshake)
  TLS 1.3 + tls_settle()      sent: the NOOP's reply comes after the
                              tickets, so they are read before libesmtp
                              polls
and, without the delay, TLS 1.3 + tls_settle() still sends it.
"""

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))
import arnietest  # noqa: E402

STALL = os.environ.get("ARNIE_STALL_BIN", "")


class Upstream:
    """STARTTLS, then a minimal SMTP dialogue; counts NOOPs and messages."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.noops = 0
        self.messages = 0
        self.versions = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,),
                             daemon=True).start()

    def session(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rwb")
        try:
            f.write(b"220 upstream ESMTP\r\n")
            f.flush()
            while True:
                line = f.readline().upper()
                if not line:
                    return
                if line.startswith(b"EHLO"):
                    f.write(b"250-upstream\r\n250 STARTTLS\r\n")
                    f.flush()
                elif line.startswith(b"STARTTLS"):
                    f.write(b"220 go ahead\r\n")
                    f.flush()
                    tls = self.ctx.wrap_socket(conn, server_side=True)
                    self.versions.append(tls.version())
                    self.dialogue(tls.makefile("rwb"))
                    tls.close()
                    return
                else:
                    f.write(b"503 STARTTLS first\r\n")
                    f.flush()
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def dialogue(self, f):
        while True:
            line = f.readline().upper()
            if not line or line.startswith(b"QUIT"):
                f.write(b"221 bye\r\n")
                f.flush()
                return
            if line.startswith(b"NOOP"):
                self.noops += 1
                f.write(b"250 2.0.0 Ok\r\n")
            elif line.startswith(b"EHLO"):
                f.write(b"250-upstream\r\n250 8BITMIME\r\n")
            elif line.startswith(b"DATA"):
                f.write(b"354 go\r\n")
                f.flush()
                while f.readline() not in (b".\r\n", b""):
                    pass
                self.messages += 1
                f.write(b"250 2.0.0 queued\r\n")
            else:
                f.write(b"250 2.0.0 Ok\r\n")
            f.flush()

    def close(self):
        self.sock.close()


class Tls13Test(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not STALL or not os.access(STALL, os.X_OK):
            raise unittest.SkipTest("ARNIE_STALL_BIN is not set")
        cls.tmp = tempfile.TemporaryDirectory(prefix="arnie-tls13-")
        cls.ca = arnietest.TestCA(cls.tmp.name)
        cert, key = cls.ca.issue("upstream", "DNS:localhost,IP:127.0.0.1")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.num_tickets = 2       # OpenSSL's default, said aloud
        cls.up = Upstream(ctx)

    @classmethod
    def tearDownClass(cls):
        cls.up.close()
        cls.tmp.cleanup()

    def run_client(self, version, settle, delay_ms):
        before = (self.up.messages, self.up.noops)
        r = subprocess.run([STALL, str(self.up.port), self.ca.ca_cert,
                            version, "1" if settle else "0", str(delay_ms)],
                           capture_output=True, text=True, timeout=60)
        sent = self.up.messages - before[0]
        noops = self.up.noops - before[1]
        return r, sent, noops

    def test_tls13_tickets_stall_libesmtp(self):
        r, sent, _ = self.run_client("1.3", False, 200)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertEqual(sent, 0)
        self.assertEqual(self.up.versions[-1], "TLSv1.3")

    def test_tls12_does_not_stall(self):
        r, sent, _ = self.run_client("1.2", False, 200)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(sent, 1)
        self.assertEqual(self.up.versions[-1], "TLSv1.2")

    def test_tls13_settled_does_not_stall(self):
        for delay in (200, 0):
            r, sent, noops = self.run_client("1.3", True, delay)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual((sent, noops), (1, 1))
            self.assertEqual(self.up.versions[-1], "TLSv1.3")


if __name__ == "__main__":
    unittest.main(verbosity=2)
