"""arnie-relay, the program that speaks SMTP to the upstream: what it may
do (its own locked-down process, no spool, no listener, no secrets in its
argv or environment), and what the daemon does when it dies, hangs, or
says what it should not (a stand-in relay that misbehaves on purpose,
fake_relay.py).  Whatever the relay does, no message is lost, none spends
an attempt on the relay's trouble, and the next session gets a new relay.
"""

import ctypes
import os
import platform
import shutil
import signal
import socket
import struct
import subprocess

import arnietest
import fake_relay
from arnietest import (ArnieTestCase, free_port, make_message, smtp_send,
                       wait_for)

FROM = "app@example.com"


def nice_of(pid, tid=None):
    """The nice value of a thread of pid (its main thread by default)."""
    with open("/proc/%d/task/%d/stat" % (pid, tid or pid)) as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def children(pid):
    """The child processes of pid, every thread's."""
    kids = []
    for task in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                kids += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return kids


SYS_CONNECT = 42   # x86_64


def landlock_abi():
    """The kernel's Landlock ABI version, or 0."""
    libc = ctypes.CDLL(None, use_errno=True)
    # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    v = libc.syscall(444, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(v, 0)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class RelayProgramTest(ArnieTestCase):

    def send(self, d, test_id, rcpts=("user@example.org",)):
        code, _ = smtp_send(d.port, FROM, list(rcpts),
                            make_message(test_id))
        self.assertEqual(code, 250)

    def relay_pid(self, d):
        """The daemon's one relay process (waits for it)."""
        def one():
            kids = children(d.pid)
            return kids[0] if len(kids) == 1 else None
        return wait_for(one, what="one relay process under the daemon")

    def wait_log(self, d, text, timeout=arnietest.DELIVERY_TIMEOUT):
        return wait_for(lambda: text in d.log_text(), timeout=timeout,
                        what="%r in the log" % text)

    # ------------------------------------------------ the real arnie-relay

    def test_relay_is_its_own_locked_down_program(self):
        up = self.upstream()
        d = self.arnie(up.port, OUTBOUND_EMAIL_HELO_NAME="relay.test")
        self.send(d, "own-program")
        self.assertDeliveredOnce(up, "own-program")
        pid = self.relay_pid(d)
        self.assertEqual(os.path.realpath("/proc/%d/exe" % pid),
                         os.path.realpath(arnietest.ARNIE_RELAY_BIN))
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            self.assertEqual(f.read(), b"arnie-relay\0")
        with open("/proc/%d/status" % pid) as f:
            status = f.read()
        self.assertIn("NoNewPrivs:\t1", status)
        # Between sessions it holds the standard descriptors and its
        # socket to the daemon: no spool file or directory, no listener.
        fds = sorted(int(x) for x in os.listdir("/proc/%d/fd" % pid))
        self.assertEqual(fds, [0, 1, 2, 3])
        self.assertTrue(os.readlink("/proc/%d/fd/3" % pid)
                        .startswith("socket:"))
        with open("/proc/%d/environ" % pid, "rb") as f:
            environ = f.read()
        self.assertNotIn(b"OUTBOUND_EMAIL", environ)

    def test_relaying_gives_way_to_intake(self):
        """The sender thread, and what it starts (the relay program, the
        hooks' thread), run 10 nicer than the front-end and the commit
        writer: accepting mail, which the application waits for, comes
        first."""
        up = self.upstream()
        d = self.arnie(up.port)
        self.send(d, "nicer")
        self.assertDeliveredOnce(up, "nicer")
        front = nice_of(d.pid)
        nicer = min(front + 10, 19)
        threads = [nice_of(d.pid, int(t))
                   for t in os.listdir("/proc/%d/task" % d.pid)]
        # The front-end and the commit writer; the sender at least.
        self.assertGreaterEqual(threads.count(front), 2, threads)
        self.assertGreaterEqual(threads.count(nicer), 1, threads)
        self.assertEqual(nice_of(self.relay_pid(d)), nicer)

    def gdb_calls(self, pid, *exprs):
        """Evaluate exprs in the running process pid with gdb; the
        values printed, in order."""
        args = ["gdb", "-p", str(pid), "-batch", "-nx"]
        for e in exprs:
            args += ["-ex", e]
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return [line.split(" = ", 1)[1] for line in r.stdout.splitlines()
                if line.startswith("$") and " = " in line]

    def test_relay_is_sandboxed(self):
        if shutil.which("gdb") is None:
            self.skipTest("needs gdb")
        abi = landlock_abi()
        if abi < 1:
            self.skipTest("no Landlock in this kernel")
        up = self.upstream()
        d = self.arnie(up.port)
        pid = self.relay_pid(d)
        target = os.path.join(self.tmp, "written-by-the-relay")
        # No file can be created, even where its user could write.
        got = self.gdb_calls(pid, 'call (int)open("%s", 65, 384)' % target,
                             "call (int)*(int*)__errno_location()")
        self.assertEqual(got, ["-1", "13"])      # EACCES
        self.assertFalse(os.path.exists(target))
        if abi < 4 or platform.machine() != "x86_64":
            return
        # TCP: the upstream's port only (and 53).
        other = socket.socket()
        self.addCleanup(other.close)
        other.bind(("127.0.0.1", 0))
        other.listen()
        for port, want in ((other.getsockname()[1], ["-1", "13"]),
                           (up.port, ["0", "0"])):
            got = self.gdb_calls(
                pid, "call (int)socket(2, 1, 0)",
                "call (void *)calloc(1, 16)",
                "set {unsigned short}$2 = 2",
                "set {unsigned short}($2 + 2) = %d" % socket.htons(port),
                "set {unsigned int}($2 + 4) = %d" % 0x0100007f,
                # connect(2) by number: gdb's call of connect() passes
                # the address wrongly (EINVAL even unsandboxed).
                "call (int)syscall(%d, $1, $2, 16)" % SYS_CONNECT,
                "call (int)(*(int*)__errno_location() * ($3 != 0))",
                "call (int)close($1)")
            self.assertEqual(got[2:4], want, (port, got))

    def test_relay_killed_mid_session_is_replaced(self):
        up = self.upstream()
        up.delay_data[b"X-Test-Id: in-flight\r\n"] = 2.0
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        self.send(d, "in-flight")
        wait_for(lambda: up.rcpt_log, what="the session under way")
        first = self.relay_pid(d)
        os.kill(first, signal.SIGKILL)
        self.wait_log(d, "relay process died (signal 9)")
        # The daemon goes on with a new relay and the message goes out:
        # at most once more than it reached the upstream before the kill
        # (the upstream may have had all of it: the one in flight).
        self.wait_spool(d, "sent", 1)
        self.assertEqual(d.spool.list("outbox"), [])
        got = up.with_test_id("in-flight")
        self.assertIn(len(got), (1, 2), got)
        self.send(d, "after")
        self.assertDeliveredOnce(up, "after")
        self.assertNotEqual(self.relay_pid(d), first)
        self.assertTrue(d.running())

    def test_relay_dead_between_sessions_costs_no_retry_delay(self):
        up = self.upstream()
        # A failed session would pause the queue for an hour.
        d = self.arnie(up.port, RETRY_DELAY_SECONDS=3600,
                       RETRY_MAX_DELAY_SECONDS=3600)
        self.send(d, "before")
        self.assertDeliveredOnce(up, "before")
        first = self.relay_pid(d)
        os.kill(first, signal.SIGKILL)
        self.send(d, "after-idle-death")
        self.assertDeliveredOnce(up, "after-idle-death")
        self.assertIn("relay process died (signal 9) between sessions",
                      d.log_text())
        self.assertNotEqual(self.relay_pid(d), first)

    def test_idle_relay_exits_and_comes_back(self):
        up = self.upstream()
        d = self.arnie(up.port, ARNIE_RELAY_IDLE_SECONDS=1)
        self.send(d, "before-idle")
        self.assertDeliveredOnce(up, "before-idle")
        # An idle daemon holds no second process (Postfix's max_idle).
        wait_for(lambda: children(d.pid) == [], what="the relay gone")
        self.send(d, "after-idle")
        self.assertDeliveredOnce(up, "after-idle")
        self.relay_pid(d)

    def test_daemon_killed_takes_its_relay_along(self):
        up = self.upstream()
        d = self.arnie(up.port)
        relay = self.relay_pid(d)
        d.kill9()
        # PR_SET_PDEATHSIG: an orphan relay would go on sending what no
        # one records.
        wait_for(lambda: not alive(relay), what="the relay gone")

    # ------------------------- the real arnie-relay, driven by the test

    def drive_relay(self):
        """The real arnie-relay on a socket this test holds as the
        daemon's end, its settings sent and READY read."""
        if not arnietest.ARNIE_RELAY_BIN:
            self.skipTest("ARNIE_RELAY_BIN not set")
        up = self.upstream()
        ours, theirs = socket.socketpair(socket.AF_UNIX,
                                         socket.SOCK_SEQPACKET)
        self.addCleanup(ours.close)
        ours.settimeout(arnietest.DELIVERY_TIMEOUT)
        fd = theirs.fileno()
        proc = subprocess.Popen(
            ["arnie-relay"], executable=arnietest.ARNIE_RELAY_BIN,
            close_fds=False, preexec_fn=lambda: os.dup2(fd, 3))
        theirs.close()
        self.addCleanup(proc.wait)
        self.addCleanup(ours.shutdown, socket.SHUT_RDWR)
        self.assertEqual(self.record(ours)[0], fake_relay.HELLO)
        fake_relay.send(ours, fake_relay.CONFIG, "127.0.0.1", up.port,
                        0, 0, "", "", "", "relay.test", 10)
        self.assertEqual(self.record(ours)[0], fake_relay.READY)
        return up, ours

    def record(self, sock):
        """The next record but LOG lines: (type, [fields])."""
        while True:
            data = sock.recv(65536)
            self.assertTrue(data, "the relay closed its socket")
            rec = fake_relay.parse(data)
            self.assertIsNotNone(rec, data)
            if rec[0] != fake_relay.LOG:
                return rec

    def begin(self, sock, *test_ids):
        """One session: a message to <id>@example.org for each id."""
        fake_relay.send(sock, fake_relay.BEGIN, len(test_ids))
        for i, test_id in enumerate(test_ids):
            data = make_message(test_id)
            with open(os.path.join(self.tmp, test_id), "w+b") as f:
                f.write(data)
                f.flush()
                head = struct.pack("=III", fake_relay.MAGIC, fake_relay.MSG,
                                   6)
                fields = [str(x).encode() for x in
                          (i, test_id, FROM, len(data), 0, 1)]
                head += struct.pack("=6I", *[len(x) for x in fields])
                socket.send_fds(sock, [head + b"".join(fields)],
                                [f.fileno()])
            fake_relay.send(sock, fake_relay.RCPT, i, 0,
                            "%s@example.org" % test_id)
        fake_relay.send(sock, fake_relay.GO)

    def results(self, sock, index):
        """RESULT, RRESULT and DONE of message index: its RESULT's
        fields."""
        rtype, fields = self.record(sock)
        self.assertEqual((rtype, fields[0]), (fake_relay.RESULT,
                                              str(index).encode()))
        self.assertEqual(self.record(sock)[0], fake_relay.RRESULT)
        self.assertEqual(self.record(sock),
                         (fake_relay.DONE, [str(index).encode()]))
        return fields

    def test_next_message_goes_out_while_results_are_recorded(self):
        up, sock = self.drive_relay()
        self.begin(sock, "first", "second")
        self.assertEqual(self.results(sock, 0)[3:5], [b"0", b"250"])
        # Not acknowledged yet, and the next message is under way: the
        # daemon's recording overlaps the upstream's round trips.
        up.wait_for(lambda: up.rcpt_attempts("second@example.org"),
                    what="the second message's RCPT")
        fake_relay.send(sock, fake_relay.ACK, 0, 0)
        self.assertEqual(self.results(sock, 1)[3:5], [b"0", b"250"])
        fake_relay.send(sock, fake_relay.ACK, 1, 0)
        self.assertEqual(self.record(sock)[0], fake_relay.END)
        self.assertDeliveredOnce(up, "first")
        self.assertDeliveredOnce(up, "second")

    def test_unrecorded_results_keep_the_next_message_from_ending(self):
        up, sock = self.drive_relay()
        self.begin(sock, "recorded", "held-back")
        self.results(sock, 0)
        up.wait_for(lambda: up.rcpt_attempts("held-back@example.org"),
                    what="the second message's RCPT")
        # The daemon could not record the first message's results: the
        # second must not be completed, or a crash now would send it
        # twice.
        fake_relay.send(sock, fake_relay.ACK, 0, 1)
        rtype, fields = self.record(sock)
        self.assertEqual(rtype, fake_relay.END)
        self.assertIn(b"results cannot be recorded", fields[1])
        # A later session on a new connection is handled after the first
        # one's end: once it is through, the upstream has seen all of it.
        self.begin(sock, "later")
        self.results(sock, 0)
        fake_relay.send(sock, fake_relay.ACK, 0, 0)
        self.assertEqual(self.record(sock)[0], fake_relay.END)
        self.assertDeliveredOnce(up, "later")
        self.assertDeliveredOnce(up, "recorded")
        self.assertEqual(up.with_test_id("held-back"), [])

    # ------------------------------------- a relay that misbehaves (fake)

    def fake(self, mode, **keys):
        program, record = fake_relay.install(self.tmp, mode)
        keys.setdefault("RETRY_DELAY_SECONDS", 1)
        return self.arnie(free_port(), ARNIE_RELAY_PROGRAM=program,
                          **keys), record

    def assertQueuedUnspent(self, d):
        """The message is still queued and no attempt was spent on it."""
        ids = d.spool.list("outbox")
        self.assertEqual(len(ids), 1, ids)
        env = d.spool.read("outbox", ids[0])
        self.assertEqual(env.attempts, 0, env.header_text())
        self.assertEqual(env.rcpt_state("user@example.org"), "pending")

    def assertReplaced(self, record, d):
        """A second relay started, and the first is gone (reaped)."""
        pids = wait_for(lambda: len(fake_relay.starts(record)) >= 2 and
                        fake_relay.starts(record),
                        what="a second relay started")
        self.assertTrue(d.running())
        wait_for(lambda: not alive(pids[0]), what="the first relay reaped")

    def misbehaving(self, mode, logged):
        d, record = self.fake(mode)
        self.send(d, "victim-" + mode)
        self.wait_log(d, logged)
        self.assertReplaced(record, d)
        self.assertQueuedUnspent(d)
        return d

    def test_garbage_from_the_relay(self):
        self.misbehaving("garbage", "relay protocol error: not a record "
                         "after 0 of 1 messages")

    def test_result_for_a_recipient_never_sent(self):
        self.misbehaving("bad-rcpt", "relay protocol error: malformed "
                         "RRESULT")

    def test_relay_that_exits(self):
        self.misbehaving("exit", "relay process exited (status 3)")

    def test_relay_that_crashes(self):
        self.misbehaving("segv", "relay process died (signal 11)")

    def test_silent_relay_is_killed_at_the_deadline(self):
        # OUTBOUND_EMAIL_TIMEOUT_SECONDS x (6 + 3 x 1 message) = 9 s.
        d, record = self.fake("silent", OUTBOUND_EMAIL_TIMEOUT_SECONDS=1)
        self.send(d, "victim-silent")
        self.wait_log(d, "relay process killed at the 9 s deadline "
                      "after 0 of 1 messages", timeout=30)
        self.assertReplaced(record, d)
        self.assertQueuedUnspent(d)

    def test_results_reported_before_the_trouble_are_kept(self):
        d, record = self.fake("twice", SAVE_SENT_MAIL=True)
        self.send(d, "reported")
        self.wait_log(d, "relay protocol error: unexpected RESULT")
        # The first report was recorded: the message is done.
        self.wait_spool(d, "sent", 1)
        self.assertEqual(d.spool.list("outbox"), [])

    def test_relay_log_lines_reach_the_daemon_log(self):
        d, record = self.fake("ok")
        self.send(d, "logged")
        self.wait_log(d, "fake relay: session 1")

    def test_relay_replaced_after_max_sessions(self):
        # RELAY_MAX_SESSIONS (100) sessions of one message each, then one
        # more: a second relay serves it, as Postfix's max_use.
        d, record = self.fake("ok", ARNIE_MAX_BATCH=1)
        for i in range(101):
            self.send(d, "use%d" % i)
        wait_for(lambda: fake_relay.sessions(record) == 101,
                 what="101 sessions")
        self.assertEqual(len(fake_relay.starts(record)), 2)
        wait_for(lambda: d.spool.count("outbox") == 0, what="outbox empty")

    # ----------------------------------------- a relay that cannot start

    def start_fails(self, program, message):
        path = arnietest.write_env(
            self.tmp, **self.config(free_port(),
                                    ARNIE_RELAY_PROGRAM=program))
        r = self.run_arnie(["-c", path], timeout=60)
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn(message, r.stderr)

    def test_missing_relay_program(self):
        self.start_fails(os.path.join(self.tmp, "nowhere"),
                         "ARNIE_RELAY_PROGRAM %s: No such file or directory"
                         % os.path.join(self.tmp, "nowhere"))

    def test_relay_program_of_another_version(self):
        program, _ = fake_relay.install(self.tmp, "hello99")
        self.start_fails(program, "did not start as a relay program of "
                         "this version")

    def test_relay_program_refuses_the_settings(self):
        program, _ = fake_relay.install(self.tmp, "failed")
        self.start_fails(program,
                         "OUTBOUND_EMAIL_CA_FILE /nowhere: cannot load")

    def test_not_a_relay_program(self):
        self.start_fails("/bin/true", "did not start as a relay program")

    def test_relay_program_run_by_hand(self):
        r = subprocess.run([arnietest.ARNIE_RELAY_BIN],
                                     capture_output=True, text=True,
                                     timeout=10)
        self.assertEqual(r.returncode, 70, r.stderr)
        self.assertIn("started by arnie or arnie-milter only", r.stderr)


if __name__ == "__main__":
    arnietest.main()
