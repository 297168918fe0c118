"""A stand-in for arnie-relay that speaks the relay protocol
(shared/relay_proto.h, records as in shared/wire.h) and misbehaves on
purpose, so that the daemon's side of it can be tested: a relay that says
the wrong hello, dies, goes silent, or sends garbage or results it was
never asked for.

A test writes a tiny program that calls run(mode, record) and names it in
ARNIE_RELAY_PROGRAM; record is a file where each start appends a line
"pid" and each session a line "session N", so the test can count them.

Modes:
  ok         a correct relay that reports every recipient 250
  hello99    says it speaks version 99 of the protocol
  failed     refuses its settings (FAILED) like a CA file that won't load
  garbage    after GO, sends bytes that are not a record
  bad-rcpt   after GO, reports a recipient it was never given
  twice      after GO, reports the same message twice
  exit       after GO, exits with status 3
  silent     after GO, says nothing more
  segv       after GO, kills itself with SIGSEGV
"""

import os
import signal
import socket
import struct
import sys

MAGIC = 0x41523100 | 1
(HELLO, CONFIG, READY, FAILED, BEGIN, MSG, RCPT, GO, RESULT, RRESULT, DONE,
 ACK, END, LOG) = range(1, 15)
LOG_INFO = 6


def send(sock, rtype, *fields):
    fields = [f if isinstance(f, bytes) else str(f).encode() for f in fields]
    head = struct.pack("=III", MAGIC, rtype, len(fields))
    head += struct.pack("=%dI" % len(fields), *[len(f) for f in fields])
    sock.sendmsg([head + b"".join(fields)])


def parse(data):
    """(type, [fields]) of one record, or None if it is not one."""
    if len(data) < 12:
        return None
    magic, rtype, n = struct.unpack_from("=III", data)
    if magic != MAGIC or len(data) < 12 + 4 * n:
        return None
    lens = struct.unpack_from("=%dI" % n, data, 12)
    fields, off = [], 12 + 4 * n
    for ln in lens:
        fields.append(data[off:off + ln])
        off += ln
    return rtype, fields


def recv(sock):
    """(type, [fields], fd or None); exits when the daemon closes."""
    data, fds, _flags, _addr = socket.recv_fds(sock, 20000, 1)
    if not data:
        sys.exit(0)
    rec = parse(data)
    if rec is None:
        sys.exit(76)
    return rec[0], rec[1], (fds[0] if fds else None)


def expect(sock, rtype):
    got, fields, fd = recv(sock)
    if got != rtype:
        sys.exit(76)
    return fields, fd


def read_batch(sock):
    """BEGIN, the messages with their recipients, GO: [(index, [rcpt])]."""
    fields, _ = expect(sock, BEGIN)
    batch = []
    for _ in range(int(fields[0])):
        fields, fd = expect(sock, MSG)
        if fd is not None:
            os.close(fd)
        rcpts = [expect(sock, RCPT)[0][1] for _ in range(int(fields[5]))]
        batch.append((int(fields[0]), rcpts))
    expect(sock, GO)
    return batch


def report_ok(sock, index, rcpts):
    send(sock, RESULT, index, 1, 0, 0, 250, "250 2.0.0 fake: queued")
    for r in rcpts:
        send(sock, RRESULT, index, r, 0, 250, "250 2.1.5 fake: ok")
    send(sock, DONE, index)
    fields, _ = expect(sock, ACK)
    return fields[1] == b"1"


def misbehave(sock, mode, batch):
    if mode == "garbage":
        sock.send(b"this is not a record")
    elif mode == "bad-rcpt":
        send(sock, RESULT, 0, 1, 0, 0, 250, "250 ok")
        send(sock, RRESULT, 0, 99, 0, 250, "250 ok")
    elif mode == "twice":
        report_ok(sock, 0, batch[0][1])
        report_ok(sock, 0, batch[0][1])
    elif mode == "exit":
        sys.exit(3)
    elif mode == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    # silent, or waiting for the daemon to give up on us
    while True:
        recv(sock)


def run(mode, record):
    # The daemon's sender thread blocks every signal, and a mask survives
    # exec: arnie-relay clears it first thing, and so does its stand-in.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    sock = socket.socket(fileno=3)
    with open(record, "a") as f:
        f.write("%d\n" % os.getpid())
    send(sock, HELLO, "arnie-relay 99" if mode == "hello99"
         else "arnie-relay 1")
    expect(sock, CONFIG)
    if mode == "failed":
        send(sock, FAILED, "OUTBOUND_EMAIL_CA_FILE /nowhere: cannot load")
        sys.exit(78)
    send(sock, READY)
    sessions = 0
    while True:
        batch = read_batch(sock)
        sessions += 1
        with open(record, "a") as f:
            f.write("session %d\n" % sessions)
        send(sock, LOG, LOG_INFO, "fake relay: session %d" % sessions)
        if mode != "ok":
            misbehave(sock, mode, batch)
        for index, rcpts in batch:
            if report_ok(sock, index, rcpts):
                break
        send(sock, END, 0, "")


def install(directory, mode):
    """Write a program running mode; returns (its path, its record)."""
    path = os.path.join(directory, "fake-relay-%s" % mode)
    record = path + ".record"
    with open(path, "w") as f:
        f.write("#!/usr/bin/python3\nimport sys\nsys.path.insert(0, %r)\n"
                "import fake_relay\nfake_relay.run(%r, %r)\n" %
                (os.path.dirname(os.path.abspath(__file__)), mode, record))
    os.chmod(path, 0o755)
    open(record, "w").close()
    return path, record


def starts(record):
    with open(record) as f:
        return [int(x) for x in f.read().split("\n") if x.isdigit()]


def sessions(record):
    with open(record) as f:
        return sum(1 for x in f if x.startswith("session"))

