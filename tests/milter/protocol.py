"""arnie-milter at the milter protocol level, driven by miltertest.

For each scenario: start the real arnie-milter on a free port with a temp
spool and an upstream port where nobody listens (so queued files stay in
outbox/), run the scenario's Lua script with miltertest (the script checks
the milter's replies), stop the daemon with SIGTERM (it must exit 0), then
check the queued files and the log here.
"""

import os
import shutil
import subprocess
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def run_lua(milter, script, mode="divert"):
    cmd = ["miltertest", "-s", os.path.join(HERE, script),
           "-D", "port=%d" % milter.port, "-D", "srcdir=%s" % HERE,
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


def mine(q, *senders):
    """The queued messages from these senders, in queue order."""
    return [msg for msg in q if msg["from"] in senders]


def check_one_rcpt(m, q, mode="divert"):
    msgs = mine(q, "alice@example.com")
    assert len(msgs) == 1, msgs
    msg = msgs[0]
    assert msg["rcpts"] == ["bob@example.org"], msg
    assert msg["origin"] == "client=192.0.2.7, queue_id=QID0001", msg
    assert msg["message"] == (
        b"From: Alice <alice@example.com>\r\n"
        b"To: bob@example.org\r\n"
        b"Subject: one\r\n"
        b"\r\n"
        b"Hello Bob.\r\n"
        b"Bye.\r\n"), msg["message"]
    expect_log(m, msg, "QID0001", "192.0.2.7", 1, mode)


def check_several_rcpts(m, q):
    msgs = mine(q, "carol@example.com")
    assert len(msgs) == 1, msgs
    assert msgs[0]["rcpts"] == ["r1@example.org", "r2@example.net",
                                "hidden@example.com"], msgs[0]
    assert b"hidden" not in msgs[0]["message"]
    expect_log(m, msgs[0], "QID0002", "192.0.2.8", 3)


def check_several_tx(m, q):
    by_from = {msg["from"]: msg for msg in
               mine(q, "a1@example.com", "a2@example.com", "a3@example.com",
                    "b@example.com", "c@example.com")}
    assert len(by_from) == 5, sorted(by_from)
    for i in (1, 2, 3):
        msg = by_from["a%d@example.com" % i]
        assert msg["rcpts"] == ["to%d@example.org" % i], msg
        assert msg["message"] == b"Subject: tx %d\r\n\r\nBody %d.\r\n" % (
            i, i), msg
        expect_log(m, msg, "QIDA%d" % i, "192.0.2.9", 1)
    assert by_from["b@example.com"]["message"] == (
        b"Subject: from b\r\n\r\nB part 1\r\nB part 2\r\n")
    assert by_from["b@example.com"]["rcpts"] == ["tob@example.org"]
    assert by_from["c@example.com"]["message"] == (
        b"Subject: from c\r\n\r\nC body\r\n")
    expect_log(m, by_from["c@example.com"], "QIDC", "192.0.2.11", 1)


def check_abort(m, q):
    assert mine(q, "gone@example.com", "drop@example.com") == [], q
    msgs = mine(q, "kept@example.com")
    assert len(msgs) == 1, msgs
    assert msgs[0]["rcpts"] == ["kept@example.org"]
    assert msgs[0]["message"] == b"Subject: after abort\r\n\r\nKept.\r\n"
    assert os.listdir(os.path.join(m.spool, "inbox")) == []


def check_headers(m, q):
    by_from = {msg["from"]: msg for msg in
               mine(q, "h@example.com", "old@example.com")}
    name = "Zo\u00eb \u00c6r\u00f8sk\u00f8bing \u65e5\u672c".encode()
    assert by_from["h@example.com"]["message"] == (
        b"Received: from client.example (client.example [192.0.2.16])\r\n"
        b"\tby mx.example (Postfix) with ESMTP id QIDH\r\n"
        b"\tfor <h@example.org>\r\n"
        b"X-Folded-CRLF: one\r\n two\r\n\tthree\r\n"
        b"Subject: =?UTF-8?B?Wm/DqyDDhnLDuHNrw7hiaW5n?=\r\n"
        b"X-Name: " + name + b"\r\n"
        b"X-Empty: \r\n"
        b"X-Trail: value  \t\r\n"
        b"Subject: second subject\r\n"
        b"\r\n"
        b"line 1\r\n.dot line\r\n\r\nlast\r\n"), \
        by_from["h@example.com"]["message"]
    assert by_from["old@example.com"]["message"] == (
        b"Subject: plain\r\nX-Empty:\r\n\r\nold\r\n"), \
        by_from["old@example.com"]["message"]


def check_oversize(m, q):
    assert [msg["from"] for msg in q] == ["fit@example.com",
                                          "small@example.com"], q
    assert len(q[0]["message"]) == 2000, len(q[0]["message"])
    assert "queue_id=QIDBIG" in m.log() and \
        "MAX_MESSAGE_SIZE=2000" in m.log(), m.log()


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


def check_tempfail(m, q):
    assert q == [], q
    assert "cannot queue message" in m.log(), m.log()


# One daemon per run (stopping one takes libmilter up to 5 s); the scripts
# of a run use distinct senders, so each check finds its own messages.
RUNS = [
    ("divert", {}, None, [
        ("one_rcpt.lua", check_one_rcpt),
        ("several_rcpts.lua", check_several_rcpts),
        ("several_tx.lua", check_several_tx),
        ("abort.lua", check_abort),
        ("headers.lua", check_headers),
    ]),
    ("copy", {"ARNIE_MILTER_MODE": "copy"}, None, [
        ("one_rcpt.lua", lambda m, q: check_one_rcpt(m, q, "copy")),
    ]),
    ("oversize", {"MAX_MESSAGE_SIZE": 2000}, None, [
        ("oversize.lua", check_oversize),
    ]),
    ("tempfail", {}, break_inbox, [
        ("tempfail.lua", check_tempfail),
    ]),
]


def run(name, settings, prepare, scripts, work):
    mode = settings.get("ARNIE_MILTER_MODE", "divert")
    m = milterlib.Milter(work, **settings).start()
    try:
        if prepare is not None:
            prepare(m)
        for script, _ in scripts:
            run_lua(m, script, mode)
    finally:
        rc = m.stop()
    assert rc == 0, "arnie-milter exited %s on SIGTERM" % rc
    assert "arnie-milter stopping" in m.log(), m.log()
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
