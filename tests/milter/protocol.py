"""arnie-milter at the milter protocol level, driven by miltertest.

For each scenario: start the real arnie-milter on a free port with a temp
spool and an upstream port where nobody listens (so queued files stay in
outbox/), run the scenario's Lua script with miltertest (the script checks
the milter's replies), stop the daemon with SIGTERM (it must exit 0), then
check the queued files and the log here.

Every queued message is checked byte for byte as completed at
end-of-message (shared/message.h): first the Received: field Arnie
prepends ("from HELO (CLIENT_NAME [ADDR])", "by ARNIE_HOSTNAME (Arnie
milter) with ESMTP id ID", "(MTA queue id QID)", "for <RCPT>" with one
recipient only; no "from" clause for a local submission); then the header
fields as the MTA passed them, unchanged and in order; then exactly the
fields Arnie adds when missing ("Message-ID: <ID@ARNIE_HOSTNAME>", "Date:
..." in the daemon's local time, "From: SENDER", in that order); then the
empty line and the body, unchanged.
"""

import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import traceback
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))
import milterlib  # noqa: E402
from arnietest import vm_hwm_kib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# ARNIE_HOSTNAME of every run: the right-hand side of added Message-IDs.
HOST = "arnie.test"
# The daemon's time zone: half an hour off and east of UTC, so an added
# Date: must carry the local numeric offset, not UTC's.
TZ, OFFSET = "ARN-5:30", b"+0530"
# What common.lua's open_session() sends: connect host name and HELO.
NAME, HELO = b"client.example", b"helo.example"


def run_lua(milter, script, mode="divert"):
    cmd = ["miltertest", "-s", os.path.join(HERE, script),
           "-D", "sock=%s" % milter.sock, "-D", "srcdir=%s" % HERE,
           "-D", "mode=%s" % mode]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n--- log:\n%s" % (
            script, p.returncode, p.stdout.decode(errors="replace"),
            milter.log()))


def expect_log(milter, msg, qid, client, nrcpt, mode="divert"):
    line = "%s: milter queue_id=%s client=%s from=<%s> nrcpt=%d size=%d " \
           "(%s)" % (msg["id"], qid, client, msg["from"], nrcpt,
                     len(msg["message"]), mode)
    assert line in milter.log(), "log lacks %r:\n%s" % (line, milter.log())


def received(msg, qid, addr, rcpt=True, helo=HELO, name=NAME):
    """The Received: field expected on msg (milterlib.received_line());
    rcpt: the "for" clause names msg's only recipient."""
    return milterlib.received_line(
        msg["id"].encode(), HOST.encode(), qid.encode(),
        msg["rcpts"][0].encode() if rcpt else None, helo, name,
        addr.encode() if addr is not None else None)


def strip_received(m, msg, *args, **kwargs):
    """msg's message after its checked Received: field (see received())."""
    return milterlib.split_received(
        msg["message"], received(msg, *args, **kwargs), m.started_at,
        time.time(), OFFSET)


def expect(m, msg, header, body, added=milterlib.ADDED_ORDER, trace=None):
    """msg, queued by m, is its Received: field (trace: the arguments of
    received() after msg) + header + exactly the added fields + the empty
    line + body (see milterlib.expect_completed)."""
    milterlib.expect_completed(
        msg["message"], header, body, msg["id"].encode(),
        msg["from"].encode(), HOST.encode(), added, m.started_at,
        time.time(), OFFSET, received(msg, *trace))


def mine(q, *senders):
    """The queued messages from these senders, in queue order."""
    return [msg for msg in q if msg["from"] in senders]


def check_one_rcpt(m, q, mode="divert"):
    msgs = mine(q, "alice@example.com")
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert msg["rcpts"] == ["bob@example.org"], msg
    assert msg["origin"] == "client=192.0.2.7, queue_id=QID0001", msg
    # From is there: only Message-ID and Date are added.
    expect(m, msg,
           b"From: Alice <alice@example.com>\r\n"
           b"To: bob@example.org\r\n"
           b"Subject: one\r\n",
           b"Hello Bob.\r\nBye.\r\n", ("Message-ID", "Date"),
           ("QID0001", "192.0.2.7"))
    expect_log(m, msg, "QID0001", "192.0.2.7", 1, mode)


def check_several_rcpts(m, q):
    msgs = mine(q, "carol@example.com")
    assert len(msgs) == 1, msgs
    assert msgs[0]["rcpts"] == ["r1@example.org", "r2@example.net",
                                "hidden@example.com"], msgs[0]
    assert b"hidden" not in msgs[0]["message"]
    expect(m, msgs[0],
           b"From: carol@example.com\r\nTo: r1@example.org\r\n"
           b"Cc: r2@example.net\r\nSubject: three\r\n",
           b"Three recipients.\r\n", ("Message-ID", "Date"),
           ("QID0002", "192.0.2.8", False))
    expect_log(m, msgs[0], "QID0002", "192.0.2.8", 3)


def check_several_tx(m, q):
    by_from = {msg["from"]: msg for msg in
               mine(q, "a1@example.com", "a2@example.com", "a3@example.com",
                    "b@example.com", "c@example.com")}
    assert len(by_from) == 5, sorted(by_from)
    for i in (1, 2, 3):
        msg = by_from["a%d@example.com" % i]
        assert msg["rcpts"] == ["to%d@example.org" % i], msg
        expect(m, msg, b"Subject: tx %d\r\n" % i, b"Body %d.\r\n" % i,
               trace=("QIDA%d" % i, "192.0.2.9"))
        expect_log(m, msg, "QIDA%d" % i, "192.0.2.9", 1)
    expect(m, by_from["b@example.com"], b"Subject: from b\r\n",
           b"B part 1\r\nB part 2\r\n", trace=("QIDB", "192.0.2.10"))
    assert by_from["b@example.com"]["rcpts"] == ["tob@example.org"]
    expect(m, by_from["c@example.com"], b"Subject: from c\r\n",
           b"C body\r\n", trace=("QIDC", "192.0.2.11"))
    expect_log(m, by_from["c@example.com"], "QIDC", "192.0.2.11", 1)


def check_abort(m, q):
    assert mine(q, "gone@example.com", "drop@example.com") == [], q
    msgs = mine(q, "kept@example.com")
    assert len(msgs) == 1, msgs
    assert msgs[0]["rcpts"] == ["kept@example.org"]
    expect(m, msgs[0], b"Subject: after abort\r\n", b"Kept.\r\n",
           trace=("QIDY", "192.0.2.12"))
    assert os.listdir(os.path.join(m.spool, "inbox")) == []


def check_headers(m, q):
    by_from = {msg["from"]: msg for msg in
               mine(q, "h@example.com", "old@example.com",
                    "local@example.com")}
    name = "Zo\u00eb \u00c6r\u00f8sk\u00f8bing \u65e5\u672c".encode()
    # The fields as passed, byte for byte (folding, UTF-8, blanks, the
    # repeated Subject), and only then the three added ones.
    expect(m, by_from["h@example.com"],
           b"Received: from client.example (client.example [192.0.2.16])\r\n"
           b"\tby mx.example (Postfix) with ESMTP id QIDH\r\n"
           b"\tfor <h@example.org>\r\n"
           b"X-Folded-CRLF: one\r\n two\r\n\tthree\r\n"
           b"Subject: =?UTF-8?B?Wm/DqyDDhnLDuHNrw7hiaW5n?=\r\n"
           b"X-Name: " + name + b"\r\n"
           b"X-Empty: \r\n"
           b"X-Trail: value  \t\r\n"
           b"Subject: second subject\r\n",
           b"line 1\r\n.dot line\r\n\r\nlast\r\n",
           trace=("QIDH", "192.0.2.16"))
    # IPv6 (no {client_addr} macro: the connect event's address).
    expect(m, by_from["old@example.com"], b"Subject: plain\r\nX-Empty:\r\n",
           b"old\r\n",
           trace=("QIDOLD", "2001:db8::17", True, b"old.example"))
    # A local submission: no "from" clause.
    expect(m, by_from["local@example.com"], b"Subject: local\r\n",
           b"local\r\n", trace=("QIDL", None, True, None))


def fixed_lines(m, msg_id):
    return [line for line in m.log().splitlines()
            if (" %s: header fixed: " % msg_id) in line]


def check_fixup(m, q):
    by_from = {msg["from"]: msg for msg in
               mine(q, "full@example.com", "trim@example.com", "")}
    assert len(by_from) == 3, sorted(by_from)
    full = by_from["full@example.com"]
    assert strip_received(m, full, "QIDFULL", "192.0.2.18") == (
        b"From: Full <full@example.com>\r\nTo: full@example.org\r\n"
        b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
        b"Message-ID: <full@example.com>\r\nSubject: complete\r\n"
        b"\r\nNothing to add.\r\n"), full["message"]
    assert fixed_lines(m, full["id"]) == [], m.log()
    expect_log(m, full, "QIDFULL", "192.0.2.18", 1)

    trim = by_from["trim@example.com"]
    assert strip_received(m, trim, "QIDTRIM", "192.0.2.18") == (
        b"From: trim@example.com\r\nTo: one@example.org\r\n"
        b"Subject: trimmed\r\n"
        b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
        b"Message-ID: <trim@example.com>\r\n"
        b"\r\nFour fields fewer.\r\n"), trim["message"]
    got = fixed_lines(m, trim["id"])
    assert len(got) == 1 and got[0].endswith(
        " %s: header fixed: dropped Return-Path, repeated To, Original-*, "
        "Resent-Reply-To" % trim["id"]), got
    expect_log(m, trim, "QIDTRIM", "192.0.2.18", 1)

    null = by_from[""]
    assert null["rcpts"] == ["postmaster@example.org"], null
    expect(m, null, b"Subject: bounce\r\n", b"From the null sender.\r\n",
           trace=("QIDNULL", "192.0.2.18"))
    assert b"\r\nFrom: MAILER-DAEMON@arnie.test\r\n" in null["message"]
    got = fixed_lines(m, null["id"])
    assert len(got) == 1 and got[0].endswith(
        " %s: header fixed: added Message-ID, Date, From" % null["id"]), got
    expect_log(m, null, "QIDNULL", "192.0.2.18", 1)


BCC_FIELDS = (b"Bcc: hidden@example.net,\r\n\tother@example.net\r\n"
              b"Resent-Bcc: other@example.net\r\n")


def check_bcc(m, q, kept=False):
    msgs = mine(q, "bcc@example.com")
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert msg["rcpts"] == ["to@example.org", "hidden@example.net",
                            "other@example.net"], msg
    expect(m, msg,
           b"From: bcc@example.com\r\nTo: to@example.org\r\n" +
           (BCC_FIELDS if kept else b"") + b"Subject: blind\r\n",
           b"Who else got this?\r\n", ("Message-ID", "Date"),
           ("QIDBCC", "192.0.2.20", False))
    got = fixed_lines(m, msg["id"])
    want = "%s: header fixed: added Message-ID, Date" % msg["id"]
    if not kept:
        want += "; dropped Bcc, Resent-Bcc"
    assert len(got) == 1 and got[0].endswith(want), (got, want)


def check_utf8(m, q):
    assert mine(q, "utf@example.com") == [], q
    msgs = mine(q, "ascii@example.com")
    assert len(msgs) == 1 and msgs[0]["rcpts"] == ["ascii@example.org"], q
    assert msgs[0]["message"].endswith(b"\r\n\r\ncaf\xc3\xa9\r\n"), msgs
    assert "queue_id=QIDUTF client=192.0.2.21 from=<utf@example.com>: " \
        "SMTPUTF8 with a non-ASCII header, refused" in m.log(), m.log()


def check_longline(m, q):
    assert mine(q, "long@example.com", "longh@example.com") == [], q
    msgs = mine(q, "fit998@example.com")
    assert len(msgs) == 1, q
    assert msgs[0]["message"].endswith(b"\r\n\r\n" + b"x" * 998 + b"\r\n")
    for qid, sender in (("QIDLONG", "long"), ("QIDLONGH", "longh")):
        assert "queue_id=%s client=192.0.2.22 from=<%s@example.com>: " \
            "a line of 999 octets, refused" % (qid, sender) in m.log(), \
            m.log()


def check_copy_limits(m, q):
    # Nothing of these was queued, and the log says the MTA delivers them.
    assert mine(q, "cl1@example.com", "cl3@example.com") == [], q
    # The message with a recipient Arnie cannot relay, for the others.
    partly = mine(q, "cl2@example.com")
    assert [msg["rcpts"] for msg in partly] == [["cl2@example.org"]], q
    for qid, why in (("QIDCL1", "a line of 999 octets"),
                     ("QIDCL2", "non-ASCII recipient <m\u00fcller@"
                                "example.org>"),
                     ("QIDCL3", "message larger than MAX_MESSAGE_SIZE=4000")):
        assert re.search(r"queue_id=%s client=192\.0\.2\.23( from=<[^>]*>)?: "
                         r"%s, not copied \(the MTA delivers it\)" % (
                             qid, re.escape(why)), m.log()), (qid, m.log())


def check_oversize(m, q):
    assert [msg["from"] for msg in q] == ["fit@example.com",
                                          "small@example.com"], q
    # The limit applies to the message as the MTA passed it (2000 octets
    # here); the fields added afterwards (Received: too) may take it beyond.
    header = b"Subject: big\r\n"
    body = (b"x" * 78 + b"\r\n") * 24 + b"x" * 62 + b"\r\n"
    assert len(header) + 2 + len(body) == 2000
    expect(m, q[0], header, body, trace=("QIDFIT", "192.0.2.14"))
    assert "queue_id=QIDBIG" in m.log() and \
        "MAX_MESSAGE_SIZE=2000" in m.log(), m.log()


def check_expiry_dedup(m, q):
    exp = mine(q, "exp@example.com")
    assert len(exp) == 1, q
    fields = exp[0]["fields"]
    lifetime = int(fields["expires"][0]) - int(fields["created"][0])
    assert 3599 <= lifetime <= 3601, fields
    # The instruction to Arnie is not kept for the upstream.
    expect(m, exp[0], b"Subject: expires\r\n", b"Gone in an hour.\r\n",
           trace=("QIDEXP", "192.0.2.21"))
    assert mine(q, "bad@example.com") == [], q
    assert "X-Arnie-Expire-After: 'soon' is not a duration" in m.log(), \
        m.log()
    dup = mine(q, "dup@example.com")
    assert len(dup) == 1, q
    assert dup[0]["fields"]["message-id"] == ["<dup@test.invalid>"], dup
    assert re.search(r"queue_id=QIDDUP2 client=192\.0\.2\.21: duplicate of "
                     r"%s \(message-id=<dup@test\.invalid>" % dup[0]["id"],
                     m.log()), m.log()


def break_inbox(m):
    """As root, permissions do not stop writes: take inbox/ away (the
    spool keeps its descriptor, which now names a removed directory) and
    put a regular file in its place."""
    inbox = os.path.join(m.spool, "inbox")
    milterlib.await_cond(lambda: os.listdir(inbox) == [], 5,
                         "an empty inbox/")
    os.rmdir(inbox)
    with open(inbox, "w") as f:
        f.write("not a directory\n")


def check_metrics(m, q):
    """/metrics of the milter: its front-end's label, the message it took."""
    check_one_rcpt(m, q)
    text = m.metrics
    assert re.search(r'^arnie_messages_received_total\{frontend="milter"\} '
                     r'1$', text, re.M), text
    assert re.search(r'^arnie_commit_seconds_count\{frontend="milter"\} 1$',
                     text, re.M), text
    assert re.search(r'^arnie_queue_messages\{folder="outbox"\} 1$', text,
                     re.M), text


def stale_socket(work):
    """What a crash leaves: a socket file nobody listens on."""
    path = os.path.join(work, "milter.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()


def check_unix(m, q):
    st = os.stat(m.path)
    assert stat.S_ISSOCK(st.st_mode), oct(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    check_one_rcpt(m, q)


def check_tempfail(m, q):
    assert q == [], q
    assert "cannot queue message" in m.log(), m.log()


def tmpfs_spool(m):
    """Run the daemon with its spool on a 1 MB tmpfs, in a mount namespace
    of its own (needs root, which the milter tests have)."""
    os.makedirs(m.spool)
    m.wrapper = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"',
                 m.spool]


tmpfs_spool.before_start = True


def nobody_spool(m):
    """ARNIE_USER=nobody: the spool is made nobody's beforehand, since the
    work directory is root's."""
    import pwd
    nobody = pwd.getpwnam("nobody")
    os.makedirs(m.spool)
    os.chown(m.spool, nobody.pw_uid, nobody.pw_gid)


nobody_spool.before_start = True


def check_nobody(m, q):
    import pwd
    nobody = pwd.getpwnam("nobody")
    st = os.stat(m.path)
    # The socket is handed to ARNIE_USER before the switch; the MTA gets
    # in through the group.
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), st
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert "running as nobody (uid %d, gid %d)" % (
        nobody.pw_uid, nobody.pw_gid) in m.log(), m.log()
    for msg in q:
        st = os.stat(os.path.join(m.spool, "outbox", msg["id"]))
        assert st.st_uid == nobody.pw_uid, (msg["id"], st)
    check_one_rcpt(m, q)


def check_diskfull(m, q):
    assert [msg["from"] for msg in q] == ["fits@example.com"], q
    assert m.live_inbox == [], m.live_inbox
    assert "QIDFULL" in m.log() and "cannot queue message" in m.log() and \
        "No space left on device" in m.log(), m.log()


def check_big(m, q):
    huge, after = mine(q, "huge@example.com"), mine(q, "after@example.com")
    assert len(huge) == 1 and len(after) == 1, q
    body = ((b"b" * 62 + b"\r\n") * 1000) * 96
    expect(m, huge[0], b"Subject: huge\r\n", body,
           trace=("QIDHUGE", "192.0.2.30"))
    # 6 MB passed through; the daemon held 64 KiB of it at a time.
    grown = m.grown["big.lua"]
    # (A sanitizer build keeps freed memory in quarantine.)
    assert grown < 4 * 1024 or "ASAN_OPTIONS" in os.environ, \
        "arnie-milter grew by %d KiB" % grown


# One daemon per run (stopping one takes libmilter up to 5 s); the scripts
# of a run use distinct senders, so each check finds its own messages.
RUNS = [
    ("divert", {}, None, [
        ("one_rcpt.lua", check_one_rcpt),
        ("several_rcpts.lua", check_several_rcpts),
        ("several_tx.lua", check_several_tx),
        ("abort.lua", check_abort),
        ("headers.lua", check_headers),
        ("fixup.lua", check_fixup),
        ("bcc.lua", check_bcc),
        ("utf8.lua", check_utf8),
        ("longline.lua", check_longline),
        ("big.lua", check_big),
    ]),
    ("keepbcc", {"REMOVE_BCC_HEADERS": "false"}, None, [
        ("bcc.lua", lambda m, q: check_bcc(m, q, kept=True)),
    ]),
    ("copy", {"ARNIE_MILTER_MODE": "copy", "MAX_MESSAGE_SIZE": 4000}, None, [
        ("one_rcpt.lua", lambda m, q: check_one_rcpt(m, q, "copy")),
        ("copy_limits.lua", check_copy_limits),
    ]),
    ("oversize", {"MAX_MESSAGE_SIZE": 2000}, None, [
        ("oversize.lua", check_oversize),
    ]),
    ("dedup", {"DEDUP_WINDOW_SECONDS": 3600}, None, [
        ("expiry_dedup.lua", check_expiry_dedup),
    ]),
    ("metrics", {"ARNIE_METRICS_LISTEN": "127.0.0.1:%d" %
                 milterlib.free_port()}, None, [
        ("one_rcpt.lua", check_metrics),
    ]),
    ("unix", {"unix": True}, None, [
        ("one_rcpt.lua", check_unix),
    ]),
    ("tempfail", {}, break_inbox, [
        ("tempfail.lua", check_tempfail),
    ]),
    ("nobody", {"unix": True, "ARNIE_USER": "nobody"}, nobody_spool, [
        ("one_rcpt.lua", check_nobody),
    ]),
    ("diskfull", {}, tmpfs_spool, [
        ("diskfull.lua", check_diskfull),
    ]),
]


def run(name, settings, prepare, scripts, work):
    mode = settings.get("ARNIE_MILTER_MODE", "divert")
    if settings.get("unix"):
        stale_socket(work)
    m = milterlib.Milter(work, ARNIE_HOSTNAME=HOST, **settings)
    wrapped = prepare is tmpfs_spool
    early = getattr(prepare, "before_start", False)
    if early:
        prepare(m)
    m.start()
    try:
        if prepare is not None and not early:
            prepare(m)
        m.grown = {}   # script -> growth of the daemon's peak RSS, KiB
        for script, _ in scripts:
            before = vm_hwm_kib(m.proc.pid)
            run_lua(m, script, mode)
            m.grown[script] = vm_hwm_kib(m.proc.pid) - before
        if "ARNIE_METRICS_LISTEN" in settings:
            with urllib.request.urlopen(
                    "http://%s/metrics" % settings["ARNIE_METRICS_LISTEN"],
                    timeout=10) as r:
                m.metrics = r.read().decode()
        # A spool in the daemon's own mount namespace is gone with it.
        if wrapped:
            q = milterlib.queued(m.live_spool())
            m.live_inbox = os.listdir(os.path.join(m.live_spool(), "inbox"))
    finally:
        rc = m.stop()
    assert rc == 0, "arnie-milter exited %s on SIGTERM" % rc
    assert "arnie-milter stopping" in m.log(), m.log()
    if not wrapped:
        q = milterlib.queued(m.spool)
    failed = 0
    for script, check in scripts:
        try:
            check(m, q)
            print("PASS: %s %s" % (name, script))
        except Exception:
            failed += 1
            print("FAIL: %s %s (files kept in %s)" % (name, script, work))
            traceback.print_exc(file=sys.stdout)
    return failed


def main():
    milterlib.binary()
    milterlib.require("miltertest")
    milterlib.cleanup_on_sigterm()
    os.environ["TZ"] = TZ  # inherited by arnie-milter
    only = sys.argv[1:]
    failed = 0
    for name, settings, prepare, scripts in RUNS:
        if only and name not in only:
            continue
        work = milterlib.tempdir("arnie-milter-%s." % name)
        try:
            n = run(name, settings, prepare, scripts, work)
        except Exception:
            n = 1
            print("FAIL: %s (files kept in %s)" % (name, work))
            traceback.print_exc(file=sys.stdout)
        failed += n
        if n == 0:
            shutil.rmtree(work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
