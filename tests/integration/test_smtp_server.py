"""The standalone listener: RFC 5321 commands, limits, pipelining, the end
of DATA (no SMTP smuggling) and dot-unstuffing, against the real arnie."""

import os
import re
import socket
import threading
import time

import arnietest
from arnietest import (ArnieTestCase, RawClient, make_message, smtp_send,
                       wait_for)


def transaction(c, sender="app@example.com", rcpts=("user@example.org",)):
    """EHLO, MAIL, RCPT..., DATA on a RawClient; asserts each reply."""
    code, _ = c.cmd("EHLO client.test")
    assert code == 250, code
    code, lines = c.cmd("MAIL FROM:<%s>" % sender)
    assert code == 250, lines
    for r in rcpts:
        code, lines = c.cmd("RCPT TO:<%s>" % r)
        assert code == 250, lines
    code, lines = c.cmd("DATA")
    assert code == 354, lines


class SmtpServerTest(ArnieTestCase):

    def setUp(self):
        super().setUp()
        self.up = self.upstream()

    def start(self, **keys):
        self.d = self.arnie(self.up.port, **keys)
        return self.d

    def client(self):
        c = RawClient(self.d.port)
        self.addCleanup(c.close)
        code, lines = c.reply()
        self.assertEqual(code, 220, lines)
        return c

    def assertNothingStored(self):
        sp = self.d.spool
        self.assertEqual(sp.list("outbox"), [])
        self.assertEqual(sp.list("inbox"), [])

    # ------------------------------------------------------------ commands

    def test_ehlo_extensions_and_simple_commands(self):
        self.start(MAX_MESSAGE_SIZE=123456)
        c = self.client()
        code, lines = c.cmd("EHLO client.test")
        self.assertEqual(code, 250)
        keywords = {l[4:].split()[0].upper() for l in lines[1:]}
        for ext in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES"):
            self.assertIn(ext, keywords, lines)
        # Not offered: the relay could not pass it on (RFC 6531).
        self.assertNotIn("SMTPUTF8", keywords, lines)
        size_line = [l for l in lines if l[4:].upper().startswith("SIZE")]
        self.assertEqual(size_line[0][4:].split()[1], "123456")
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("VRFY someone")[0], 252)
        self.assertIn(c.cmd("HELP")[0], (211, 214))
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("HELO client.test")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(c.closed_by_peer())

    def test_smtputf8_and_non_ascii_addresses_are_refused(self):
        self.start()
        c = self.client()
        c.cmd("EHLO client.test")
        code, lines = c.cmd("MAIL FROM:<app@example.com> SMTPUTF8")
        self.assertEqual(code, 555, lines)
        self.assertIn("5.5.4 SMTPUTF8 is not supported", lines[-1])
        code, lines = c.cmd("MAIL FROM:<j\u00f6rg@example.com>")
        self.assertEqual(code, 553, lines)
        self.assertIn("5.6.7", lines[-1])
        self.assertEqual(c.cmd("MAIL FROM:<app@example.com>")[0], 250)
        code, lines = c.cmd("RCPT TO:<m\u00fcller@example.org>")
        self.assertEqual(code, 553, lines)
        self.assertIn("5.6.7", lines[-1])
        # An ASCII recipient still goes through, 8-bit text in the body
        # too (8BITMIME).
        self.assertEqual(c.cmd("RCPT TO:<user@example.org>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(make_message("utf8", body="caf\u00e9\r\n") + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        t = self.assertDeliveredOnce(self.up, "utf8")
        self.assertEqual(t.rcpt_tos, ["user@example.org"])
        self.assertIn("caf\u00e9".encode(), t.content)

    # ------------------------------------------------------------ limits

    def test_message_over_max_size_gets_552_and_nothing_is_stored(self):
        # Held in memory when it is refused.
        self.over_max_size(10000, 300)            # 21600 octets

    def test_streamed_message_over_max_size_gets_552(self):
        # Already being written to the spool when it passes the limit.
        self.over_max_size(200000, 7000)          # 504000 octets

    def over_max_size(self, limit, lines):
        self.start(MAX_MESSAGE_SIZE=limit)
        c = self.client()
        transaction(c)
        body = ("x" * 70 + "\r\n") * lines
        c.send(make_message("big", body=body) + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 552, lines)
        self.assertIn("5.3.4", lines[-1])
        # The session goes on after the refusal.
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertNothingStored()
        # A message under the limit still goes through on a new session.
        smtp_send(self.d.port, "app@example.com", ["u@example.org"],
                  make_message("small"))
        self.assertDeliveredOnce(self.up, "small")
        self.assertEqual(self.up.with_test_id("big", accepted_only=False), [])

    def test_line_over_998_octets_gets_554_and_nothing_is_stored(self):
        self.start()
        c = self.client()
        transaction(c)
        body = "x" * 998 + "\r\n" + "y" * 999 + "\r\nend\r\n"
        c.send(make_message("longline", body=body) + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 554, lines)
        self.assertIn("5.6.0", lines[-1])
        self.assertIn("998", lines[-1])
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertNothingStored()
        # At the limit it goes through, byte for byte.
        c.cmd("MAIL FROM:<app@example.com>")
        c.cmd("RCPT TO:<user@example.org>")
        self.assertEqual(c.cmd("DATA")[0], 354)
        msg = make_message("atlimit", body="x" * 998 + "\r\n")
        c.send(msg + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        t = self.assertDeliveredOnce(self.up, "atlimit")
        self.assertTrue(t.content.endswith(msg))
        self.assertEqual(
            self.up.with_test_id("longline", accepted_only=False), [])

    def test_big_messages_stream_to_the_spool_in_bounded_memory(self):
        # Four clients at once, 12 MB each: held in memory, as before
        # intake.h, they would grow the daemon by 48 MB.  Streamed, the
        # daemon holds 64 KiB of each.
        self.up.stop()          # intake only: nothing relayed meanwhile
        d = self.start(MAX_MESSAGE_SIZE=64 * 1024 * 1024)
        before = arnietest.vm_hwm_kib(d.pid)
        body = "".join("%07d %s\r\n" % (i, "m" * 60)
                       for i in range(12 * 1024 * 1024 // 70))
        msgs = [make_message("stream%d" % i, body=body) for i in range(4)]
        results = [None] * 4

        def send_one(i):
            results[i] = smtp_send(d.port, "app@example.com",
                                   ["user@example.org"], msgs[i],
                                   timeout=120)[0]
        threads = [threading.Thread(target=send_one, args=(i,))
                   for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        self.assertEqual(results, [250] * 4)
        grown = arnietest.vm_hwm_kib(d.pid) - before
        # (A sanitizer build keeps freed memory in quarantine.)
        if "ASAN_OPTIONS" not in os.environ:
            self.assertLess(grown, 16 * 1024, "the daemon grew by %d KiB "
                            "taking 4 x 12 MB" % grown)
        # Byte for byte, behind the Received: field.
        self.up.restart()
        for i in range(4):
            t = self.assertDeliveredOnce(self.up, "stream%d" % i,
                                         timeout=120)
            self.assertTrue(t.content.endswith(msgs[i]))
        self.assertEqual(d.spool.list("inbox"), [])

    def test_mail_size_parameter_over_max_gets_552(self):
        self.start(MAX_MESSAGE_SIZE=10000)
        c = self.client()
        c.cmd("EHLO client.test")
        code, lines = c.cmd("MAIL FROM:<app@example.com> SIZE=10001")
        self.assertEqual(code, 552, lines)
        self.assertIn("5.3.4", lines[-1])
        code, lines = c.cmd("MAIL FROM:<app@example.com> SIZE=10000")
        self.assertEqual(code, 250, lines)

    def test_recipient_over_max_gets_452(self):
        self.start(MAX_RECIPIENTS=3)
        c = self.client()
        c.cmd("EHLO client.test")
        c.cmd("MAIL FROM:<app@example.com>")
        for i in range(3):
            code, lines = c.cmd("RCPT TO:<r%d@example.org>" % i)
            self.assertEqual(code, 250, lines)
        code, lines = c.cmd("RCPT TO:<r3@example.org>")
        self.assertEqual(code, 452, lines)
        self.assertIn("4.5.3", lines[-1])
        # The three accepted recipients still get the message.
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(make_message("maxrcpt") + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        t = self.assertDeliveredOnce(self.up, "maxrcpt")
        self.assertEqual(sorted(t.rcpt_tos),
                         ["r0@example.org", "r1@example.org",
                          "r2@example.org"])

    def test_command_line_over_512_octets_gets_500(self):
        self.start()
        c = self.client()
        c.cmd("EHLO client.test")
        # 512 octets with the CRLF is the RFC 5321 limit: accepted.
        line = "NOOP " + "x" * (512 - 5 - 2)
        self.assertEqual(len(line) + 2, 512)
        self.assertEqual(c.cmd(line)[0], 250)
        code, lines = c.cmd(line + "x")
        self.assertEqual(code, 500, lines)
        self.assertIn("5.5.2", lines[-1])
        # A much longer line too, and the session survives.
        code, lines = c.cmd("MAIL FROM:<" + "a" * 5000 + "@example.com>")
        self.assertEqual(code, 500, lines)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.com>")[0], 250)

    def test_bad_syntax_gets_501(self):
        self.start()
        c = self.client()
        code, lines = c.cmd("EHLO")
        self.assertEqual(code, 501, lines)
        c.cmd("EHLO client.test")
        for bad in ("MAIL FROM:app@example.com>", "MAIL FROM:<app@example",
                    "MAIL FROM:", "MAIL FROM:<a@b> SIZE=abc"):
            code, lines = c.cmd(bad)
            self.assertEqual(code, 501, "%s -> %s" % (bad, lines))
        self.assertEqual(c.cmd("MAIL FROM:<app@example.com>")[0], 250)
        for bad in ("RCPT TO:", "RCPT TO:<user@example.org",
                    "RCPT TO:user@example.org>"):
            code, lines = c.cmd(bad)
            self.assertEqual(code, 501, "%s -> %s" % (bad, lines))
        self.assertEqual(c.cmd("DATA extra")[0], 501)
        code, lines = c.cmd("FROBNICATE")
        self.assertIn(code, (500, 502), lines)

    def test_bad_sequence_gets_503(self):
        self.start()
        c = self.client()
        c.cmd("EHLO client.test")
        self.assertEqual(c.cmd("RCPT TO:<user@example.org>")[0], 503)
        self.assertEqual(c.cmd("DATA")[0], 503)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.com>")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<app@example.com>")[0], 503)
        self.assertEqual(c.cmd("DATA")[0], 503)
        self.assertEqual(c.cmd("RSET")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<user@example.org>")[0], 503)
        self.assertNothingStored()

    def test_idle_client_gets_421(self):
        self.start(ARNIE_SMTP_TIMEOUT_SECONDS=1)
        c = self.client()
        c.cmd("EHLO client.test")
        t0 = time.monotonic()
        self.assertTrue(c.closed_by_peer(timeout=8),
                        "idle connection not closed")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.8)
        self.assertTrue(c.buf.startswith(b"421"), c.buf)

    @staticmethod
    def trickle(c, data, interval, limit):
        """Send data one octet every interval seconds until the server
        says something or closes, at most limit seconds; returns what it
        said (b"" if nothing) and the seconds it took."""
        t0 = time.monotonic()
        c.sock.settimeout(interval)
        for i in range(len(data)):
            if time.monotonic() - t0 > limit:
                break
            try:
                c.sock.sendall(data[i:i + 1])
                got = c.sock.recv(4096)
                return got, time.monotonic() - t0
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return b"", time.monotonic() - t0
        return b"", time.monotonic() - t0

    def test_trickling_clients_are_cut_off_and_their_slots_freed(self):
        # Each octet comes well within the idle timeout (2 s), so only a
        # deadline per command line and per DATA phase can end these.
        self.start(ARNIE_SMTP_TIMEOUT_SECONDS=2, MAX_CONNECTIONS=2)
        cmd, data = self.client(), self.client()
        transaction(data)
        results = {}

        def run(name, c, payload):
            results[name] = self.trickle(c, payload, 0.25, 10)
        threads = [
            threading.Thread(target=run, args=(
                "cmd", cmd, b"NOOP " + b"x" * 200)),
            threading.Thread(target=run, args=(
                "data", data, b"Subject: slow\r\n\r\n" + b"y" * 200))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for name in ("cmd", "data"):
            said, took = results[name]
            self.assertTrue(said.startswith(b"421 4.4.2"), (name, said))
            self.assertLess(took, 4.5, name)
        # Their slots are free again.
        with RawClient(self.d.port) as c:
            self.assertEqual(c.reply()[0], 220)
        self.assertNothingStored()
        log = self.d.log_text()
        self.assertIn("not complete within 2s, closing", log)
        self.assertIn("too slow", log)

    def test_slow_data_above_the_minimum_rate_is_taken(self):
        # 2 s plus one second per 100 octets: about 1,200 octets a second
        # for 3 s keeps well ahead of the deadline.
        self.start(ARNIE_SMTP_TIMEOUT_SECONDS=2, ARNIE_SMTP_MIN_DATA_RATE=100)
        c = self.client()
        transaction(c)
        msg = make_message("slowok", body=("z" * 58 + "\r\n") * 60)
        for i in range(0, len(msg), 120):
            c.send(msg[i:i + 120])
            time.sleep(0.1)
        c.send(b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertDeliveredOnce(self.up, "slowok")

    def test_connection_over_max_gets_421(self):
        self.start(MAX_CONNECTIONS=2)
        a, b = self.client(), self.client()
        with RawClient(self.d.port) as third:
            code, lines = third.reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(third.closed_by_peer())
        # A freed slot is usable again.
        a.cmd("QUIT")
        self.assertTrue(a.closed_by_peer())

        def fourth_served():
            with RawClient(self.d.port) as c:
                return c.reply()[0] == 220
        wait_for(fourth_served, timeout=5, interval=0.1,
                 what="a connection after one was closed")
        self.assertEqual(b.cmd("NOOP")[0], 250)

    # ------------------------------------------------------------ protocol

    def test_pipelined_client(self):
        self.start()
        c = self.client()
        c.cmd("EHLO client.test")
        c.send("MAIL FROM:<app@example.com>\r\n"
               "RCPT TO:<one@example.org>\r\n"
               "RCPT TO:<two@example.org>\r\n"
               "DATA\r\n")
        codes = [c.reply()[0] for _ in range(4)]
        self.assertEqual(codes, [250, 250, 250, 354])
        # The message, its end, a second transaction and QUIT in one write.
        c.send(make_message("pipe1") + b".\r\n" +
               b"MAIL FROM:<app@example.com>\r\n"
               b"RCPT TO:<three@example.org>\r\n"
               b"DATA\r\n")
        codes = [c.reply()[0] for _ in range(4)]
        self.assertEqual(codes, [250, 250, 250, 354])
        c.send(make_message("pipe2") + b".\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [250, 221])
        t1 = self.assertDeliveredOnce(self.up, "pipe1")
        self.assertEqual(sorted(t1.rcpt_tos),
                         ["one@example.org", "two@example.org"])
        t2 = self.assertDeliveredOnce(self.up, "pipe2")
        self.assertEqual(t2.rcpt_tos, ["three@example.org"])

    def test_smtp_smuggling_is_one_message(self):
        self.start()
        variants = {
            # bare LF . bare LF, as in the 2023 smuggling reports
            "smug1": b"Hello\n.\nMAIL FROM:<evil1@example.net>\n"
                     b"RCPT TO:<smuggled1@example.org>\nDATA\n"
                     b"Subject: smuggled\n\nowned\n.\nQUIT\n"
                     b"tail line\r\n",
            # CRLF . bare LF
            "smug2": b"Hello\r\n.\nMAIL FROM:<evil2@example.net>\r\n"
                     b"RCPT TO:<smuggled2@example.org>\r\nDATA\r\n"
                     b"owned\r\n",
            # bare LF . CRLF
            "smug3": b"Hello\n.\r\nMAIL FROM:<evil3@example.net>\r\n"
                     b"RCPT TO:<smuggled3@example.org>\r\nDATA\r\n"
                     b"owned\r\n",
        }
        for tid, body in variants.items():
            with self.subTest(tid), RawClient(self.d.port) as c:
                self.assertEqual(c.reply()[0], 220)
                transaction(c, rcpts=("victim@example.org",))
                msg = make_message(tid, body="") + body
                c.send(msg + b".\r\n")
                code, lines = c.reply()
                self.assertEqual(code, 250, lines)
                # Had the smuggled commands been read as commands, their
                # replies would come before NOOP's.
                code, lines = c.cmd("NOOP")
                self.assertEqual(code, 250, lines)
                self.assertNotIn("2.1", lines[-1])
                self.assertEqual(c.cmd("QUIT")[0], 221)
                t = self.assertDeliveredOnce(self.up, tid)
                self.assertEqual(t.rcpt_tos, ["victim@example.org"])
                n = tid[-1]
                self.assertIn(b"MAIL FROM:<evil%s@example.net>" % n.encode(),
                              t.content)
        # The upstream never saw a second message or a smuggled recipient.
        self.assertEqual(len(self.up.all_transactions()), 3)
        self.assertFalse([r for r in self.up.rcpt_log
                          if "smuggled" in r[1]], self.up.rcpt_log)
        # The smuggled text is kept as message text.  smtp_parse.h stores a
        # bare LF as CRLF (as Postfix 3.9's smtpd_forbid_bare_newline =
        # normalize), so that no bare newline reaches the upstream; a lone
        # "." line next to a bare newline is kept, and the relay stuffs it.
        for tid, body in variants.items():
            _, rest = arnietest.strip_received(
                self.up.with_test_id(tid)[0].content)
            want = make_message(tid, body="") + re.sub(rb"(?<!\r)\n",
                                                       b"\r\n", body)
            self.assertEqual(rest, want, tid)
            self.assertIsNone(re.search(rb"(?<!\r)\n", rest), tid)

    def test_dot_stuffed_lines_round_trip(self):
        self.start()
        body = (".\r\n..\r\n.leading dot\r\n...three\r\n . space dot\r\n"
                "end.\r\n.\r\n")
        msg = make_message("dots", body=body)
        # smtplib stuffs the dots; arnie must unstuff them once and the
        # relay stuff them again.
        smtp_send(self.d.port, "app@example.com", ["u@example.org"], msg)
        t = self.assertDeliveredOnce(self.up, "dots")
        received, rest = arnietest.strip_received(t.content)
        self.assertIsNotNone(received)
        self.assertEqual(rest, msg)
        # And by hand, with the stuffing written out.
        c = self.client()
        transaction(c)
        c.send(make_message("dots2", body="") +
               b"..\r\n...\r\n..x\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        t = self.assertDeliveredOnce(self.up, "dots2")
        _, rest = arnietest.strip_received(t.content)
        self.assertEqual(rest, make_message("dots2", body="") +
                         b".\r\n..\r\n.x\r\n")


if __name__ == "__main__":
    arnietest.main()
