"""End to end: a private real Postfix -> arnie-milter -> fake upstream.

Started here, all on 127.0.0.1 with free ports, stopped by PID (Postfix by
`postfix -c DIR stop`, then its master's PID) in a finally block:
  - upstream: aiosmtpd recording what Arnie relays (OUTBOUND_EMAIL_HOST);
  - sink: aiosmtpd as Postfix's relayhost, which must receive nothing but
    the copy-mode message, since in divert mode Postfix delivers nothing
    itself;
  - arnie-milter (divert mode) with a temp spool, and a second one in
    copy mode with its own;
  - Postfix with its own config and queue directories (see
    milterlib.PrivatePostfix), smtpd_milters = non_smtpd_milters =
    arnie-milter, milter_default_action = tempfail,
    local_header_rewrite_clients empty; two more smtpd listeners, one with
    Postfix's default local_header_rewrite_clients, one whose milter is
    the copy-mode arnie-milter.

Checked: mail sent by SMTP (swaks) and mail injected with that instance's
sendmail command both reach the upstream through Arnie with every envelope
recipient, Bcc included; header fields arrive byte for byte, but for the
Bcc: field (which Postfix's cleanup already removes), after the one
Received: field Arnie prepends for the hop (naming the SMTP client's HELO,
host name and address and Postfix's queue ID; for sendmail-injected mail,
which Postfix presents to milters as a connection from 127.0.0.1 port 0,
no "from" clause); a message
without Date, Message-ID and From gets them from Arnie at acceptance
(shared/message.h); what the upstream receives is, byte for byte, what
Arnie spooled (SAVE_SENT_MAIL keeps the spooled copy in sent/); Postfix
logs milter-discard and keeps nothing queued.
With the default local_header_rewrite_clients, Postfix qualifies `To:
someone` and adds Message-Id, Date and From before the milter sees the
header; without it, `To: bare` reaches Arnie as sent.  A message larger
than Arnie's MAX_MESSAGE_SIZE (and smaller than Postfix's limit) gets
Arnie's 552 5.3.4.
With arnie-milter stopped, Postfix answers SMTP clients 451 4.7.1 and
keeps the sendmail-injected message in its queue; once arnie-milter is
back, that message is relayed: nothing is lost.
In copy mode Postfix delivers the message itself (to its relayhost, with
its own Received: field, logging status=sent) and Arnie relays its copy,
byte for byte as spooled.

Seen with Postfix 3.7: the milter does not receive the Received: field
Postfix prepends (the spooled message is Arnie's Received: field, then what
the SMTP client sent, byte for byte, plus what Arnie adds); for
sendmail-injected mail it sees the Message-Id:, Date: and (when missing)
From: fields cleanup appends after the message's own, and no Received:
field either, so Arnie adds only its Received: field there;
SMTP mail gets no such fields from cleanup here, because the test sets
local_header_rewrite_clients empty, as for the remote clients of a real
setup; {i} (the Postfix queue ID) and {client_addr} arrive as asked with
smfi_setsymlist.
"""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterlib  # noqa: E402
from milterlib import find, same_bytes, write_smtp_data  # noqa: E402

# Header fields Postfix must pass unchanged: no space after a colon,
# folding with tab and spaces, raw UTF-8, an encoded word, trailing blanks.
SMTP_MESSAGE = (
    b"From: Sender <sender@example.com>\r\n"
    b"To: r1@example.org\r\n"
    b"Cc: r2@example.net\r\n"
    b"Bcc: bcc@example.com\r\n"
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

# No Date, Message-ID or From: Arnie adds them after the last field.  The
# unqualified To: stays as it is (no local_header_rewrite_clients).
BARE_HEADER = (
    b"To: bare\r\n"
    b"Subject: bare\r\n"
    b"X-Tight:tight\r\n")
BARE_BODY = b"No Date, Message-ID or From.\r\n"
HOST = "arnie.test"
# The HELO name swaks gives Postfix.
HELO = "client.test"

# Through the listener that keeps Postfix's default
# local_header_rewrite_clients: Postfix qualifies the To: address and adds
# Message-Id, Date and From before the milter sees the header.
REWRITE_MESSAGE = (
    b"To: someone\r\n"
    b"Subject: rewritten\r\n"
    b"\r\n"
    b"Completed by Postfix.\r\n")

# Through the listener whose milter is in copy mode: Postfix delivers it
# (to the sink) and Arnie relays its copy (to the upstream).
COPY_MESSAGE = (
    b"From: Copy <copy@example.com>\r\n"
    b"To: c1@example.org\r\n"
    b"Message-ID: <e2e-copy@example.com>\r\n"
    b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
    b"Subject: twice\r\n"
    b"\r\n"
    b"Delivered by Postfix and by Arnie.\r\n")

# Larger than the MAX_MESSAGE_SIZE given to arnie-milter here, smaller
# than Postfix's message_size_limit (10 MB by default).
MAX_SIZE = 20000
BIG_MESSAGE = b"Subject: big\r\n\r\n" + (b"x" * 78 + b"\r\n") * 400

SENDMAIL_MESSAGE = (
    b"From: Local <local@example.com>\n"
    b"To: t1@example.org\n"
    b"Bcc: hidden@example.com\n"
    b"Subject: via sendmail\n"
    b"\n"
    b"Injected locally.\n")


def swaks(port, sender, rcpts, data_file, expect_ok=True):
    return milterlib.swaks(port, sender, rcpts, data_file, HELO, expect_ok)


def received(milter, postfix, copy, rcpt=None, smtp=True):
    """The Received: field Arnie must have prepended to copy, a spooled
    message (milterlib.received_line()): Postfix's queue ID from Arnie's
    log, the client's host name as Postfix's smtpd logged it."""
    # The milter logs the message once it is committed, and the sender may
    # relay it first: the line can come after the upstream has the mail.
    qid = milterlib.await_cond(
        lambda: re.search(r"%s: milter queue_id=(\S+) " % copy["id"],
                          milter.log()), 10, "arnie-milter's log line")
    assert qid.group(1) != "unknown", milter.log()
    name = helo = None
    if smtp:
        name = re.search(r"\bconnect from ([^\s\[]+)\[127\.0\.0\.1\]",
                         postfix.log())
        assert name is not None, postfix.log()
        name, helo = name.group(1).encode(), HELO.encode()
    return milterlib.received_line(
        copy["id"].encode(), HOST.encode(), qid.group(1).encode(),
        rcpt.encode() if rcpt else None, helo, name, b"127.0.0.1")


def rewritten_by_postfix(milter, postfix, upstream, work, port):
    """A client on the host itself, with Postfix's default
    local_header_rewrite_clients (the listener on port): the milter gets
    the header as Postfix rewrote and completed it, not as sent."""
    path = os.path.join(work, "rewrite.eml")
    write_smtp_data(path, REWRITE_MESSAGE)
    swaks(port, "rw@example.com", ["someone@example.org"], path)
    got = milterlib.await_cond(
        lambda: find(upstream.snapshot(), "rw@example.com"), 30,
        "the rewritten message upstream")
    copy = same_bytes(milter, got[0])
    data = milterlib.split_received(
        got[0]["data"], received(milter, postfix, copy, "someone@example.org"),
        milter.started_at)
    assert re.fullmatch(rb"To: someone@postfix\.test\r\n"
                        rb"Subject: rewritten\r\n"
                        rb"Message-Id: <[^>\r\n]+@postfix\.test>\r\n"
                        rb"Date: [^\r\n]+\r\n"
                        rb"From: rw@example\.com\r\n"
                        rb"\r\nCompleted by Postfix\.\r\n", data), data
    # Postfix completed it before Arnie saw it: Arnie added nothing.
    assert " %s: header fixed" % copy["id"] not in milter.log()


def refused_oversize(postfix, upstream, work):
    """Arnie's MAX_MESSAGE_SIZE below Postfix's message_size_limit: Postfix
    takes the message, Arnie refuses it, the client gets Arnie's 552."""
    path = os.path.join(work, "big.eml")
    write_smtp_data(path, BIG_MESSAGE)
    rc, out = swaks(postfix.port, "big@example.com", ["big@example.org"],
                    path, expect_ok=False)
    assert rc != 0 and re.search(
        r"<\*\* +552 5\.3\.4 Arnie: message size exceeds fixed maximum "
        r"message size", out), out
    assert find(upstream.snapshot(), "big@example.com") == []


def copied(copier, postfix, upstream, sink, work, port):
    """Copy mode (the listener on port has the copy-mode milter): Postfix
    delivers the message itself and Arnie relays its own copy."""
    path = os.path.join(work, "copy.eml")
    write_smtp_data(path, COPY_MESSAGE)
    swaks(port, "copy@example.com", ["c1@example.org"], path)
    got = milterlib.await_cond(
        lambda: find(upstream.snapshot(), "copy@example.com"), 30,
        "Arnie's copy upstream")
    assert len(got) == 1 and got[0]["rcpts"] == ["c1@example.org"], got
    copy = same_bytes(copier, got[0])
    rest = milterlib.split_received(
        got[0]["data"], received(copier, postfix, copy, "c1@example.org"),
        copier.started_at)
    assert rest == COPY_MESSAGE, got[0]["data"]
    assert re.search(r" %s: milter queue_id=\S+ client=127\.0\.0\.1 "
                     r"from=<copy@example\.com> nrcpt=1 .*\(copy\)$" %
                     copy["id"], copier.log(), re.M), copier.log()
    # Postfix's own delivery: its Received: field, then the message as
    # the client sent it.
    mine = milterlib.await_cond(
        lambda: find(sink.snapshot(), "copy@example.com"), 30,
        "Postfix's delivery to its relayhost")
    assert len(mine) == 1 and mine[0]["rcpts"] == ["c1@example.org"], mine
    assert re.fullmatch(rb"Received: from [^\r\n]+(\r\n[ \t][^\r\n]*)*\r\n",
                        mine[0]["data"][:-len(COPY_MESSAGE)]), mine[0]
    assert mine[0]["data"].endswith(COPY_MESSAGE), mine[0]
    qid = re.search(r"%s: milter queue_id=(\S+) " % copy["id"],
                    copier.log()).group(1)
    milterlib.await_cond(
        lambda: re.search(r"%s: to=<c1@example\.org>, relay=127\.0\.0\.1"
                          r"\[127\.0\.0\.1\]:%d, .*status=sent" % (
                              qid, sink.port), postfix.log()),
        30, "Postfix's status=sent for %s" % qid)
    assert "%s: milter-discard" % qid not in postfix.log()


def main():
    milterlib.binary()
    milterlib.require("postfix", "sendmail", "postqueue", "postkick", "swaks")
    milterlib.cleanup_on_sigterm()
    if os.geteuid() != 0:
        # Postfix's master must start as root.  Elsewhere this shows as
        # SKIP; CI runs as root, so there it is a failure, never a skip.
        print("SKIP: a private Postfix needs root")
        return 1 if os.environ.get("CI") else 77
    t0 = time.monotonic()
    work = milterlib.tempdir("arnie-postfix-e2e.")
    upstream = sink = milter = copier = postfix = None
    ok = False
    try:
        upstream = milterlib.Upstream()
        sink = milterlib.Upstream()
        milter = milterlib.Milter(
            work, OUTBOUND_EMAIL_HOST_PORT=upstream.port,
            SAVE_SENT_MAIL="true", ARNIE_HOSTNAME=HOST,
            MAX_MESSAGE_SIZE=MAX_SIZE).start()
        copy_dir = os.path.join(work, "copy")
        os.makedirs(copy_dir, 0o755)
        copier = milterlib.Milter(
            copy_dir, OUTBOUND_EMAIL_HOST_PORT=upstream.port,
            SAVE_SENT_MAIL="true", ARNIE_HOSTNAME=HOST,
            ARNIE_MILTER_MODE="copy").start()
        # Postfix completes the header of mail from local_header_rewrite_
        # clients (default: its own addresses, which includes this test's
        # client); empty, SMTP clients are remote ones, whose mail Postfix
        # passes on without Date, Message-ID or From.  Two more listeners:
        # one with the default, one whose milter is in copy mode.
        rewrite_port, copy_port = milterlib.free_port(), milterlib.free_port()
        postfix = milterlib.PrivatePostfix(
            work, milterlib.free_port(),
            "inet:127.0.0.1:%d" % milter.port, sink.port,
            {"local_header_rewrite_clients": ""},
            listeners={
                rewrite_port: {"local_header_rewrite_clients":
                               "permit_inet_interfaces"},
                copy_port: {"smtpd_milters":
                            "inet:127.0.0.1:%d" % copier.port},
            })
        postfix.start()
        t_up = time.monotonic()

        # 1. SMTP to Postfix: two header recipients and a Bcc, named in
        # the envelope and in a Bcc: field, which must not reach them.
        data_file = os.path.join(work, "smtp.eml")
        write_smtp_data(data_file, SMTP_MESSAGE)
        rcpts = ["r1@example.org", "r2@example.net", "bcc@example.com"]
        swaks(postfix.port, "sender@example.com", rcpts, data_file)
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "sender@example.com"), 30,
            "the SMTP message upstream")
        assert len(got) == 1, got
        assert sorted(got[0]["rcpts"]) == sorted(rcpts), got[0]
        # Postfix passes the milter the message as its client sent it,
        # without the Received: field Postfix itself prepends; Arnie's
        # comes first (three recipients: no "for").
        copy = same_bytes(milter, got[0])
        rest = milterlib.split_received(got[0]["data"],
                                        received(milter, postfix, copy),
                                        milter.started_at)
        # Postfix's cleanup removes the Bcc: field before milters see it
        # (seen with 3.7), so Arnie has nothing to change here; behind
        # Sendmail it removes the field itself (tests/milter/bcc.lua).
        assert rest == SMTP_MESSAGE.replace(
            b"Bcc: bcc@example.com\r\n", b""), got[0]["data"]
        assert " %s: header fixed" % copy["id"] not in milter.log()

        # 1b. SMTP, no Date, Message-ID or From: Arnie adds them at the
        # end of the header section when it accepts the message.
        bare_file = os.path.join(work, "bare.eml")
        write_smtp_data(bare_file, BARE_HEADER + b"\r\n" + BARE_BODY)
        t_bare = int(time.time())
        swaks(postfix.port, "bare@example.com", ["bare@example.org"],
              bare_file)
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "bare@example.com"), 30,
            "the bare message upstream")
        copy = same_bytes(milter, got[0])
        milterlib.expect_completed(
            got[0]["data"], BARE_HEADER, BARE_BODY, copy["id"].encode(),
            b"bare@example.com", HOST.encode(), earliest=t_bare,
            received=received(milter, postfix, copy, "bare@example.org"))
        assert "%s: header fixed: added Message-ID, Date, From" % (
            copy["id"]) in milter.log(), milter.log()

        # 1c. The same Postfix default a real setup has for clients on the
        # host itself: Postfix's rewriting reaches Arnie's copy.
        rewritten_by_postfix(milter, postfix, upstream, work, rewrite_port)

        # 1d. Larger than Arnie's MAX_MESSAGE_SIZE: refused with 552.
        refused_oversize(postfix, upstream, work)

        # 2. The instance's sendmail -t: Bcc becomes a recipient and
        # leaves the header.
        postfix.sendmail(["-f", "local@example.com", "-t"], SENDMAIL_MESSAGE)
        got = milterlib.await_cond(
            lambda: find(upstream.snapshot(), "local@example.com"), 90,
            "the sendmail message upstream")
        assert sorted(got[0]["rcpts"]) == ["hidden@example.com",
                                           "t1@example.org"], got[0]
        data = got[0]["data"]
        copy = same_bytes(milter, got[0])
        # A local submission: no "from" clause in Arnie's Received:.
        data = milterlib.split_received(
            data, received(milter, postfix, copy, smtp=False),
            milter.started_at)
        assert data.startswith(b"From: Local <local@example.com>\r\n"), data
        assert b"\r\nSubject: via sendmail\r\n" in data, data
        assert data.endswith(b"\r\n\r\nInjected locally.\r\n"), data
        assert b"Bcc:" not in data and b"hidden" not in data, data
        # Postfix's cleanup completed this header; Arnie adds nothing.
        assert re.search(rb"\r\nMessage-Id: <[^>\r\n]+@postfix\.test>\r\n"
                         rb"Date: [^\r\n]+\r\n\r\n", data), data
        assert " %s: header fixed" % copy["id"] not in milter.log()

        # 3. Postfix delivered nothing itself and keeps nothing.
        milterlib.await_cond(lambda: postfix.queue_ids() == [], 30,
                             "an empty Postfix queue")
        log = postfix.log()
        assert log.count("milter-discard") == 4, log
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
        assert rc != 0 and re.search(
            r"<\*\* +451 4\.7\.1 Service unavailable - try again later",
            out), out
        assert not re.search(r"<\*\* 5\d\d", out), out
        postfix.sendmail(["-f", "wait@example.com", "w@example.org"],
                         b"Subject: wait\n\nwaiting for Arnie\n")
        postfix.kick_pickup()
        milterlib.await_cond(
            lambda: re.search(r"milter-reject: .*Service unavailable.*"
                              r"from=<wait@example\.com>", postfix.log()),
            30, "Postfix to tempfail the sendmail message")
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
        # cleanup added From (with the user's name) as well.
        copy = same_bytes(milter, got[0])
        data = milterlib.split_received(
            got[0]["data"],
            received(milter, postfix, copy, "w@example.org", smtp=False),
            milter.started_at)
        assert data.startswith(b"Subject: wait\r\n"), got[0]
        assert re.search(rb"\r\nFrom: [^\r\n]*<wait@example\.com>\r\n\r\n"
                         rb"waiting for Arnie\r\n$", data), got[0]
        assert " %s: header fixed" % copy["id"] not in milter.log()
        milterlib.await_cond(lambda: postfix.queue_ids() == [], 30,
                             "an empty Postfix queue")
        assert sink.count() == 0, sink.snapshot()
        assert find(upstream.snapshot(), "down@example.com") == []

        # 6. Copy mode: Postfix delivers, Arnie relays a copy.
        copied(copier, postfix, upstream, sink, work, copy_port)
        milterlib.await_cond(lambda: postfix.queue_ids() == [], 30,
                             "an empty Postfix queue")
        t_end = time.monotonic()
        ok = True
        print("PASS: postfix end to end (%.1f s in all, %.1f s after "
              "start-up)" % (t_end - t0, t_end - t_up))
    finally:
        milterlib.tear_down(ok, work, postfix, "Postfix maillog",
                            (milter, copier), (upstream, sink))
    return 0


if __name__ == "__main__":
    sys.exit(main())
