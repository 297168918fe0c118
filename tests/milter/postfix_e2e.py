"""End to end: a private real Postfix -> arnie-milter -> fake upstream.

Started here, all on 127.0.0.1 with free ports, stopped by PID (Postfix by
`postfix -c DIR stop`, then its master's PID) in a finally block:
  - upstream: aiosmtpd recording what Arnie relays (OUTBOUND_EMAIL_HOST);
  - sink: aiosmtpd as Postfix's relayhost, which must receive nothing, since
    in divert mode Postfix delivers nothing itself;
  - arnie-milter (divert mode) with a temp spool;
  - Postfix with its own config and queue directories (see
    milterlib.PrivatePostfix), smtpd_milters = non_smtpd_milters =
    arnie-milter, milter_default_action = tempfail.

Checked: mail sent by SMTP (swaks) and mail injected with that instance's
sendmail command both reach the upstream through Arnie with every envelope
recipient, Bcc included; header fields arrive byte for byte after Postfix's
own Received: field; Postfix logs milter-discard and keeps nothing queued.
With arnie-milter stopped, Postfix answers SMTP clients 4xx and keeps the
sendmail-injected message in its queue; once arnie-milter is back, that
message is relayed: nothing is lost.

Seen with Postfix 3.7: the milter receives Postfix's own Received: field
first (so it is in the spooled message), and {i} (the Postfix queue ID) at
end-of-message.
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterlib  # noqa: E402

# Header fields Postfix must pass unchanged: no space after a colon,
# folding with tab and spaces, raw UTF-8, an encoded word, trailing blanks.
SMTP_MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: r1@example.org\r\n"
    b"Cc: r2@example.net\r\n"
    b"Message-ID: <e2e-smtp@example.com>\r\n"
    b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
    b"Subject: =?UTF-8?B?Wm/DqyDDhnLDuHNrw7hiaW5n?=\r\n"
    b"X-Tight:tight\r\n"
    b"X-Folded: first\r\n\tsecond\r\n   third\r\n"
    b"X-Name: Zo\xc3\xab \xc3\x86r\xc3\xb8sk\xc3\xb8bing \xe6\x97\xa5\xe6\x9c\xac\r\n"
    b"X-Trail: value  \r\n"
    b"\r\n"
    b"Hello through Postfix.\r\n"
    b".a line that starts with a dot\r\n"
    b"\r\n"
    b"Bye.\r\n")

SENDMAIL_MESSAGE = (
    b"From: Local <local@example.com>\n"
    b"To: t1@example.org\n"
    b"Bcc: hidden@example.com\n"
    b"Subject: via sendmail\n"
    b"\n"
    b"Injected locally.\n")

RECEIVED_PREFIX = re.compile(rb"\A(Received: [^\r\n]*\r\n([ \t][^\r\n]*\r\n)*)+\Z")


def swaks(port, sender, rcpts, data_file, expect_ok=True):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--from", sender,
           "--to", ",".join(rcpts), "--data", data_file,
           "--timeout", "30"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    out = p.stdout.decode(errors="replace")
    if expect_ok and p.returncode != 0:
        raise AssertionError("swaks failed (%d):\n%s" % (p.returncode, out))
    return p.returncode, out


def find(msgs, sender):
    return [m for m in msgs if m["from"] == sender]


def main():
    milterlib.binary()
    milterlib.require("postfix", "sendmail", "postqueue", "postkick", "swaks")
    t0 = time.monotonic()
    work = milterlib.tempdir("arnie-postfix-e2e.")
    upstream = sink = milter = postfix = None
    ok = False
    try:
        upstream = milterlib.Upstream()
        sink = milterlib.Upstream()
        milter = milterlib.Milter(
            work, OUTBOUND_EMAIL_HOST_PORT=upstream.port).start()
        postfix = milterlib.PrivatePostfix(
            work, milterlib.free_port(),
            "inet:127.0.0.1:%d" % milter.port, sink.port)
        postfix.start()
        t_up = time.monotonic()

        # 1. SMTP to Postfix: two header recipients and a Bcc (envelope
        # only).
        data_file = os.path.join(work, "smtp.eml")
        with open(data_file, "wb") as f:
            f.write(SMTP_MESSAGE)
        rcpts = ["r1@example.org", "r2@example.net", "bcc@example.com"]
        swaks(postfix.port, "sender@example.com", rcpts, data_file)
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "sender@example.com"), 30,
            "the SMTP message upstream")
        assert len(got) == 1, got
        assert sorted(got[0]["rcpts"]) == sorted(rcpts), got[0]
        data = got[0]["data"]
        assert data.endswith(SMTP_MESSAGE), data
        prefix = data[:-len(SMTP_MESSAGE)]
        assert RECEIVED_PREFIX.match(prefix), prefix
        assert b"by postfix.test (Postfix)" in prefix, prefix

        # 2. The instance's sendmail -t: Bcc becomes a recipient and
        # leaves the header.
        postfix.sendmail(["-f", "local@example.com", "-t"], SENDMAIL_MESSAGE)
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "local@example.com"), 90,
            "the sendmail message upstream")
        assert sorted(got[0]["rcpts"]) == ["hidden@example.com",
                                           "t1@example.org"], got[0]
        data = got[0]["data"]
        assert b"\r\nSubject: via sendmail\r\n" in data, data
        assert data.endswith(b"\r\n\r\nInjected locally.\r\n"), data
        assert b"Bcc:" not in data and b"hidden" not in data, data

        # 3. Postfix delivered nothing itself and keeps nothing.
        milterlib.await_cond(lambda: postfix.queue_ids() == [], 30,
                             "an empty Postfix queue")
        log = postfix.log()
        assert log.count("milter-discard") == 2, log
        assert "status=sent" not in log, log
        assert sink.count() == 0, sink.snapshot()
        mlog = milter.log()
        assert re.search(r": milter queue_id=[0-9A-F]{6,} client=127\.0\.0\.1 "
                         r"from=<sender@example\.com> nrcpt=3 ", mlog), mlog
        assert "from=<local@example.com> nrcpt=2 " in mlog, mlog

        # 4. arnie-milter stopped: SMTP clients get 4xx, sendmail mail
        # waits in Postfix's queue, nothing reaches either side.
        assert milter.stop() == 0, "arnie-milter did not exit 0"
        rc, out = swaks(postfix.port, "down@example.com",
                        ["down@example.org"], data_file, expect_ok=False)
        assert rc != 0 and re.search(r"<\*\* 4\d\d", out), out
        assert not re.search(r"<\*\* 5\d\d", out), out
        postfix.sendmail(["-f", "wait@example.com", "w@example.org"],
                         b"Subject: wait\n\nwaiting for Arnie\n")
        postfix.kick_pickup()
        milterlib.await_cond(
            lambda: "Service unavailable" in postfix.log()
            .split("milter-discard")[-1], 30,
            "Postfix to tempfail the sendmail message")
        assert len(postfix.queue_ids()) == 1, postfix.queue_ids()
        assert find(upstream.snapshot(), "wait@example.com") == []

        # 5. arnie-milter back (same socket, same spool): the kept message
        # goes through.
        milter.start()
        postfix.kick_pickup()
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "wait@example.com"), 90,
            "the held message upstream after the restart")
        assert got[0]["rcpts"] == ["w@example.org"], got[0]
        milterlib.await_cond(lambda: postfix.queue_ids() == [], 30,
                             "an empty Postfix queue")
        assert sink.count() == 0, sink.snapshot()
        assert find(upstream.snapshot(), "down@example.com") == []
        t_end = time.monotonic()
        ok = True
        print("PASS: postfix end to end (%.1f s in all, %.1f s after "
              "start-up)" % (t_end - t0, t_end - t_up))
    finally:
        if postfix is not None:
            postfix.stop()
        if milter is not None:
            milter.stop()
        for s in (upstream, sink):
            if s is not None:
                s.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("FAIL: files kept in %s" % work)
            if postfix is not None:
                print("--- Postfix maillog:\n" + postfix.log())
            if milter is not None:
                print("--- arnie-milter log:\n" + milter.log())
    return 0


if __name__ == "__main__":
    sys.exit(main())
