"""The sequential relay: what reaches the upstream (clients, Bcc, byte
fidelity), batching, and the per-message outcomes (2xx, 4xx, 5xx, mixed
recipients, MAX_SEND_ATTEMPTS) with the spool's view of each message."""

import os
import time

import arnietest
from arnietest import (ArnieTestCase, curl_send, make_message, smtp_send,
                       swaks_send, wait_for)

FROM = "app@example.com"


class RelayTest(ArnieTestCase):

    def send(self, d, test_id, rcpts=("user@example.org",), **kw):
        code, _ = smtp_send(d.port, FROM, list(rcpts),
                            make_message(test_id, **kw))
        self.assertEqual(code, 250)

    # ------------------------------------------------------------ basics

    def test_swaks_curl_and_smtplib_reach_the_upstream(self):
        up = self.upstream()
        d = self.arnie(up.port)
        r = swaks_send(d.port, "sw@example.com", ["to-swaks@example.org"],
                       "--header", "X-Test-Id: via-swaks",
                       "--body", "sent by swaks")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        path = os.path.join(self.tmp, "curl.eml")
        with open(path, "wb") as f:
            f.write(make_message("via-curl"))
        r = curl_send(d.port, "curl@example.com", ["to-curl@example.org"],
                      path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.send(d, "via-smtplib", rcpts=["to-py@example.org"])
        for tid, sender, rcpt in (
                ("via-swaks", "sw@example.com", "to-swaks@example.org"),
                ("via-curl", "curl@example.com", "to-curl@example.org"),
                ("via-smtplib", FROM, "to-py@example.org")):
            t = self.assertDeliveredOnce(up, tid)
            self.assertEqual(t.mail_from, sender)
            self.assertEqual(t.rcpt_tos, [rcpt])
        self.assertIn(b"sent by swaks",
                      up.with_test_id("via-swaks")[0].content)
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")
        # SAVE_SENT_MAIL=false: delivered mail is deleted.
        self.assertEqual(d.spool.list("sent"), [])
        self.assertEqual(d.spool.list("failed"), [])

    def bcc_message(self, test_id):
        return make_message(test_id, extra_headers=[
            "Cc: <cc@example.org>", "Bcc: <hidden@example.net>,",
            "\t<other@example.net>", "Resent-Bcc: <resent@example.net>"])

    BCC_RCPTS = ["user@example.org", "cc@example.org", "hidden@example.net",
                 "other@example.net", "resent@example.net"]

    def test_bcc_fields_are_removed_and_recipients_kept(self):
        up = self.upstream()
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        msg = self.bcc_message("bcc")
        smtp_send(d.port, FROM, self.BCC_RCPTS, msg)
        t = self.assertDeliveredOnce(up, "bcc")
        # Every recipient in the envelope, no hidden address in the text.
        self.assertEqual(sorted(t.rcpt_tos), sorted(self.BCC_RCPTS))
        _, rest = arnietest.strip_received(t.content)
        want = msg.replace(b"Bcc: <hidden@example.net>,\r\n"
                           b"\t<other@example.net>\r\n"
                           b"Resent-Bcc: <resent@example.net>\r\n", b"")
        self.assertNotEqual(want, msg)
        self.assertEqual(rest, want)
        for hidden in (b"hidden@", b"other@", b"resent@", b"Bcc"):
            self.assertNotIn(hidden, t.content)
        # The spool holds the relayed bytes, and the log says why.
        sent = wait_for(lambda: d.spool.envelopes("sent"), what="sent/")
        self.assertEqual(sent[0].body, t.content)
        wait_for(lambda: "header fixed: dropped Bcc, Resent-Bcc" in
                 d.log_text(), what="the log line")

    def test_bcc_fields_kept_when_asked(self):
        up = self.upstream()
        d = self.arnie(up.port, REMOVE_BCC_HEADERS=False)
        msg = self.bcc_message("bcc-kept")
        smtp_send(d.port, FROM, self.BCC_RCPTS, msg)
        t = self.assertDeliveredOnce(up, "bcc-kept")
        self.assertEqual(sorted(t.rcpt_tos), sorted(self.BCC_RCPTS))
        _, rest = arnietest.strip_received(t.content)
        self.assertEqual(rest, msg)

    BODY_8BIT = (b"caf\xc3\xa9 \xe2\x82\xac  trailing blanks   \r\n"
                 b"\r\n"
                 b"\t tab line\r\n" + b"y" * 990 + b"\r\n"
                 b"From the start of a line\r\n"
                 b"last line\r\n")

    def relay_one(self, msg, test_id):
        """Send msg, return (upstream copy, its Received:, the rest, the
        sent/ envelope)."""
        up = self.upstream()
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        code, _ = smtp_send(d.port, FROM, ["user@example.org"], msg)
        self.assertEqual(code, 250)
        t = self.assertDeliveredOnce(up, test_id)
        received, rest = arnietest.strip_received(t.content)
        self.assertIsNotNone(received, t.content[:200])
        ids = wait_for(lambda: d.spool.list("sent"), what="sent/ file")
        self.assertEqual(len(ids), 1)
        return t, received, rest, d.spool.read("sent", ids[0])

    def test_relayed_bytes_equal_sent_bytes_plus_one_received(self):
        msg = (b"From: =?utf-8?q?Caf=C3=A9?= <app@example.com>\r\n"
               b"To: user@example.org, other@example.org\r\n"
               b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
               b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n"
               b"Message-ID: <bytes@test.invalid>\r\n"
               b"X-Test-Id: bytes\r\n"
               b"X-Folded: first part\r\n"
               b"\tsecond part\r\n"
               b"MIME-Version: 1.0\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n"
               b"\r\n" + self.BODY_8BIT)
        t, received, rest, env = self.relay_one(msg, "bytes")
        self.assertEqual(rest, msg)
        self.assertFalse(rest.startswith(b"Received:"))
        self.assertIn(env.id.encode(), received,
                      "the Received: header names the message ID")
        self.assertEqual(env.body, t.content)
        self.assertEqual(env.rcpt_state("user@example.org"), "sent")

    def test_minimal_message_is_completed_on_acceptance(self):
        # What a web application may hand over: no Date, From or
        # Message-ID, and a Return-Path.  Like Postfix's cleanup, Arnie
        # completes the header when it accepts the message (message.h), so
        # the relay sends exactly the spooled bytes.
        msg = (b"Return-Path: <bounces@example.com>\r\n"
               b"To: user@example.org\r\n"
               b"Subject: minimal\r\n"
               b"X-Test-Id: minimal\r\n"
               b"\r\n" + self.BODY_8BIT)
        t, received, rest, env = self.relay_one(msg, "minimal")
        self.assertEqual(env.body, received + rest,
                         "relayed bytes differ from the spooled copy")
        header, body = rest.split(b"\r\n\r\n", 1)
        header += b"\r\n"
        self.assertEqual(body, self.BODY_8BIT)
        self.assertNotIn(b"Return-Path:", header)
        self.assertTrue(header.startswith(
            b"To: user@example.org\r\nSubject: minimal\r\n"
            b"X-Test-Id: minimal\r\n"), header)
        self.assertIn(b"\r\nMessage-ID: <%s@" % env.id.encode(), header)
        self.assertIn(b"\r\nDate: ", header)
        self.assertIn(b"\r\nFrom: %s\r\n" % FROM.encode(), header)

    def test_messages_queued_together_share_one_connection(self):
        up = self.upstream()
        # The first message holds the upstream busy for a while, so the
        # next five pile up in the queue meanwhile.
        up.delay_data[b"X-Test-Id: slow\r\n"] = 2.0
        d = self.arnie(up.port)
        self.send(d, "slow")
        wait_for(lambda: up.rcpt_log, what="the upstream busy with 'slow'")
        for i in range(5):
            self.send(d, "batch%d" % i)
        for i in range(5):
            self.assertDeliveredOnce(up, "batch%d" % i)
        slow = up.with_test_id("slow")[0]
        conns = {up.with_test_id("batch%d" % i)[0].conn for i in range(5)}
        self.assertEqual(len(conns), 1, "5 queued messages went over "
                         "connections %s" % sorted(conns))
        self.assertNotEqual(conns, {slow.conn})

    def test_messages_queued_during_outage_go_out_together(self):
        up = self.upstream()
        d = self.arnie(up.port)
        up.stop()
        for i in range(5):
            self.send(d, "out%d" % i)
        self.assertEqual(d.spool.count("outbox"), 5)
        up.restart()
        for i in range(5):
            self.assertDeliveredOnce(up, "out%d" % i)
        conns = [up.with_test_id("out%d" % i)[0].conn for i in range(5)]
        # After an outage the queue may be probed with one message first;
        # the rest must then share one connection.
        biggest = max(conns.count(c) for c in set(conns))
        self.assertLessEqual(len(set(conns)), 2, conns)
        self.assertGreaterEqual(biggest, 4, conns)

    @staticmethod
    def sync_events(d):
        """The daemon's debug log as a list of "session" (one starts),
        "synced" (the spool's changes made durable) and "sent"."""
        out = []
        for line in d.log_text().splitlines():
            if "status=sent" in line:
                out.append("sent")
            elif "synced to disk" in line:
                out.append("synced")
            elif ": session of " in line:
                out.append("session")
        return out

    def queued_while_down(self, prefix, count, **overrides):
        """An upstream, and a verbose arnie with count messages queued
        while that upstream was down; the upstream is up again."""
        up = self.upstream()
        d = self.arnie(up.port, start=False, **overrides)
        d.args = ["-v"]
        up.stop()
        d.start()
        for i in range(count):
            self.send(d, "%s%d" % (prefix, i))
        return up, d

    def test_back_to_back_sessions_sync_at_the_next_start(self):
        """A full batch with more due makes its changes durable when the
        next session starts, overlapping the relay's connect."""
        up, d = self.queued_while_down("b2b", 7, ARNIE_MAX_BATCH="2")
        up.restart()
        for i in range(7):
            self.assertDeliveredOnce(up, "b2b%d" % i)
        ev = self.sync_events(d)
        # A session that starts right after a full one syncs before its
        # first result: session, synced, sent.
        overlapped = [i for i in range(len(ev) - 2)
                      if ev[i:i + 3] == ["session", "synced", "sent"] and
                      "sent" in ev[:i]]
        self.assertTrue(overlapped, ev)

    def test_deferred_sync_is_done_when_no_session_follows(self):
        """A full session (here one message: MAX_SEND_RATE allows one per
        20 s) with more due leaves its sync to the next session's start;
        when that session cannot start yet, the sender syncs before it
        waits, not 20 s later."""
        up, d = self.queued_while_down("rate", 3, MAX_SEND_RATE="0.05")
        # Restarted with the upstream up: the rate's one token goes to
        # the first session, not to a probe of the closed port.
        d.stop()
        up.restart()
        d.start()
        wait_for(lambda: "sent" in self.sync_events(d), timeout=10,
                 what="a first delivery")
        wait_for(lambda: self.sync_events(d)[-1:] == ["synced"], timeout=5,
                 what="a sync after it, before the next session")
        ev = self.sync_events(d)
        self.assertEqual(ev.count("sent"), 1, ev)

    # ------------------------------------------------------------ outcomes

    def test_451_then_250_is_delivered_once(self):
        up = self.upstream()
        up.script_data(["451 4.3.0 try later"])
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        self.send(d, "t451")
        self.assertDeliveredOnce(up, "t451")
        self.assertEqual(len(up.with_test_id("t451", accepted_only=False)), 2)
        ids = wait_for(lambda: d.spool.list("sent"), what="sent/ file")
        env = d.spool.read("sent", ids[0])
        self.assertEqual(env.rcpt_state("user@example.org"), "sent")
        self.assertGreaterEqual(env.attempts, 1, env.header_text())
        self.assertEqual(d.spool.list("outbox"), [])
        self.assertEqual(d.spool.list("failed"), [])

    def test_550_goes_to_failed_and_is_never_retried(self):
        up = self.upstream()
        d = self.arnie(up.port)
        self.send(d, "t550", rcpts=["perm@example.org"])
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertEqual(env.rcpt_state("perm@example.org"), "failed")
        self.assertIn("550", env.header_text())
        self.assertIn("5.1.1", env.rcpt_reply("perm@example.org") or "")
        self.assertEqual(d.spool.list("outbox"), [])
        # Two full backoff steps later, still only the one RCPT.
        time.sleep(2.5)
        self.assertEqual(len(up.rcpt_attempts("perm@example.org")), 1)
        self.assertEqual(up.with_test_id("t550", accepted_only=False), [])

    def test_554_after_data_goes_to_failed(self):
        up = self.upstream()
        up.script_data(["554 5.7.1 Message rejected: content"])
        d = self.arnie(up.port)
        self.send(d, "t554")
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertIn("5.7.1", env.header_text())
        self.assertEqual(env.rcpt_state("user@example.org"), "failed")
        time.sleep(2.5)
        self.assertEqual(len(up.with_test_id("t554", accepted_only=False)), 1)
        self.assertEqual(up.accepted(), [])

    def test_mixed_recipients(self):
        up = self.upstream()
        up.script_rcpt("later@example.org", ["451 4.2.0 mailbox busy",
                                             "451 4.2.0 mailbox busy"])
        d = self.arnie(up.port)
        rcpts = ["ok@example.org", "later@example.org", "perm@example.org"]
        self.send(d, "mixed", rcpts=rcpts)
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertEqual(env.rcpt_state("ok@example.org"), "sent")
        self.assertEqual(env.rcpt_state("later@example.org"), "sent")
        self.assertEqual(env.rcpt_state("perm@example.org"), "failed")
        self.assertIn("550", env.rcpt_reply("perm@example.org") or "")
        self.assertEqual(d.spool.list("outbox"), [])
        self.assertEqual(len(up.delivered_to("ok@example.org")), 1)
        self.assertEqual(len(up.delivered_to("later@example.org")), 1)
        self.assertEqual(up.delivered_to("perm@example.org"), [])
        # ok was sent once, later three times (451, 451, 250), perm once.
        self.assertEqual(len(up.rcpt_attempts("ok@example.org")), 1)
        self.assertEqual(len(up.rcpt_attempts("later@example.org")), 3)
        self.assertEqual(len(up.rcpt_attempts("perm@example.org")), 1)
        self.assertEqual(len(up.with_test_id("mixed")), 2)

    def test_malformed_rcpt_reply_is_a_protocol_error(self):
        # "2500 ok" is no reply: libesmtp would send an empty message for
        # it and Arnie the real one after, twice.  The session must end
        # before anything is sent, and the message go once when the
        # upstream answers properly.
        up = self.upstream()
        up.script_rcpt("g@example.org", ["2500 ok"])
        d = self.arnie(up.port)
        self.send(d, "garbled", rcpts=["g@example.org"])
        t = self.assertDeliveredOnce(up, "garbled")
        self.assertEqual(t.rcpt_tos, ["g@example.org"])
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")
        # Nothing else reached the upstream: no empty message.
        self.assertEqual(len(up.all_transactions()), 1,
                         up.all_transactions())
        log = d.log_text()
        self.assertIn('upstream protocol error: malformed reply "2500 ok"',
                      log)
        self.assertIn("queue paused", log)
        # The upstream's fault: no attempt spent on the message.
        self.assertIn("attempts=1, status=sent", log)

    def test_malformed_rcpt_reply_with_another_recipient(self):
        up = self.upstream()
        up.script_rcpt("g2@example.org", ["2500 ok"])
        d = self.arnie(up.port)
        rcpts = ["fine@example.org", "g2@example.org"]
        self.send(d, "garbled2", rcpts=rcpts)
        t = self.assertDeliveredOnce(up, "garbled2")
        self.assertEqual(sorted(t.rcpt_tos), rcpts)
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")
        self.assertEqual(len(up.all_transactions()), 1,
                         up.all_transactions())

    def test_max_send_attempts_then_failed(self):
        up = self.upstream()
        d = self.arnie(up.port, MAX_SEND_ATTEMPTS=2)
        self.send(d, "always451", rcpts=["temp@example.org"])
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertEqual(env.attempts, 2, env.header_text())
        self.assertEqual(env.rcpt_state("temp@example.org"), "failed")
        self.assertIn("451", env.header_text())
        self.assertEqual(len(up.rcpt_attempts("temp@example.org")), 2)
        self.assertEqual(d.spool.list("outbox"), [])


if __name__ == "__main__":
    arnietest.main()
