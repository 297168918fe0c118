"""chaos: kill Arnie at random moments under load, against an upstream that
misbehaves, and count what was lost and what was sent twice.

    /usr/bin/python3 tests/chaos/chaos.py [--seconds N] [--target T]
                                          [--min-kills K] [--clients C]

T is "arnie" (the standalone daemon, clients talk to it directly),
"milter" (arnie-milter behind a private Postfix, clients talk to Postfix)
or "both" (the default, one after the other).  For N seconds (default 20)
C client threads (default 4) submit messages, each with an ID of its own,
while a killer SIGKILLs the daemon at random moments (every 0.5 to 2.5 s)
and restarts it at once on the same spool: kills land during intake, during
relay sessions and during start-up scans alike.  The upstream, meanwhile,
answers some RCPTs and some ends of DATA with 451, refuses some connections
with 421, drops some sessions in the middle and lets some hang past the
relay's timeout.

Then the killing stops, the upstream behaves, and the daemon drains its
queue.  A message counts as acknowledged when its client got a 250 (from
Arnie, or from Postfix, which in divert mode answers only after Arnie's
commit), and as delivered each time the upstream answered 250 to its end of
DATA, for each of its recipients.  The run fails (exit 1) when an
acknowledged message never reached the upstream for one of its recipients
(lost > 0), when there were more extra deliveries than kills (each kill may
send again at most the message in flight: duplicates <= extra deliveries <=
kills), or
when fewer than K kills happened (default 5).  The last line printed is a
summary with every figure, also as JSON with --json.

Loopback only, every port picked free, every process stopped by its PID;
the load is bounded by N seconds and at most 50,000 messages.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "milter"))

from aiosmtpd.controller import Controller  # noqa: E402
from aiosmtpd.smtp import SMTP  # noqa: E402

MAX_MESSAGES = 50000
ID_HEADER = b"X-Chaos-Id: "


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" %
                                 (timeout, what))
        time.sleep(interval)


# ------------------------------------------------------------ the upstream

class ChaosUpstream:
    """An aiosmtpd smarthost that misbehaves at random while chaos is on.

    Per connection: 421 at the greeting (5%), a drop after a few messages
    (5%: the transport is closed instead of the reply to an end of DATA),
    a hang after a few messages (2%: no reply for longer than the relay's
    timeout, then a close).  Per message: 451 to a RCPT (3%), 451 to the
    end of DATA (3%).  A message counts as delivered only when this server
    answers 250 to its end of DATA; a dropped or hung one was not taken.
    """

    def __init__(self, hang_seconds, seed):
        self.port = free_port()
        self.hang_seconds = hang_seconds
        self.rng = random.Random(seed)
        self.chaos = True
        self.lock = threading.Lock()
        self.delivered = {}      # (chaos ID, recipient) -> times taken
        self.connections = 0
        self.faults = {"421": 0, "drop": 0, "hang": 0, "rcpt451": 0,
                       "data451": 0}
        up = self

        class Session(SMTP):
            async def _handle_client(self):
                with up.lock:
                    up.connections += 1
                    plan = up._plan()
                self.chaos_plan = plan
                self.chaos_count = 0
                if plan[0] == "421":
                    await self.push("421 4.3.2 chaos: not now")
                    self.transport.close()
                    return
                await super()._handle_client()

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address,
                                  rcpt_options):
                if up._roll("rcpt451", 0.03):
                    return "451 4.3.0 chaos: try later"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"

            async def handle_DATA(self, server, session, envelope):
                plan = server.chaos_plan
                server.chaos_count += 1
                if plan[0] in ("drop", "hang") and \
                        server.chaos_count > plan[1]:
                    if plan[0] == "hang":
                        await asyncio.sleep(up.hang_seconds)
                    server.transport.close()
                    return "421 4.3.2 chaos: gone"
                if up._roll("data451", 0.03):
                    return "451 4.3.0 chaos: try later"
                up._record(envelope.original_content, envelope.rcpt_tos)
                return "250 2.0.0 Ok: queued"

        class _Controller(Controller):
            def factory(self):
                return Session(self.handler, **self.SMTP_kwargs)

        self.controller = _Controller(Handler(), hostname="127.0.0.1",
                                      port=self.port)

    def _plan(self):
        """(fault, messages before it) for a new connection."""
        if not self.chaos:
            return ("ok", 0)
        r = self.rng.random()
        if r < 0.05:
            kind = "421"
        elif r < 0.10:
            kind = "drop"
        elif r < 0.12:
            kind = "hang"
        else:
            return ("ok", 0)
        self.faults[kind] += 1
        return (kind, self.rng.randint(0, 5))

    def _roll(self, fault, p):
        with self.lock:
            if self.chaos and self.rng.random() < p:
                self.faults[fault] += 1
                return True
        return False

    def _record(self, content, rcpts):
        i = content.find(ID_HEADER)
        if i < 0:
            return
        cid = content[i + len(ID_HEADER):content.index(b"\r\n", i)].decode()
        with self.lock:
            for r in rcpts:
                key = (cid, r)
                self.delivered[key] = self.delivered.get(key, 0) + 1

    def start(self):
        self.controller.start()
        return self

    def stop(self):
        self.controller.stop()

    def snapshot(self):
        with self.lock:
            return dict(self.delivered)


# ------------------------------------------------------------ the load

class Clients:
    """Threads that submit messages with fresh IDs until told to stop."""

    def __init__(self, port, count, seed):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = {}     # chaos ID -> its recipients
        self.attempts = 0
        self.refused = 0
        self.threads = [threading.Thread(target=self._run, args=(i, seed))
                        for i in range(count)]

    def _message(self, cid):
        return ("From: <load@example.com>\r\nTo: <sink@example.org>\r\n"
                "Subject: chaos %s\r\nMessage-ID: <%s@chaos.test>\r\n"
                "X-Chaos-Id: %s\r\n\r\n%s" % (
                    cid, cid, cid, "chaos line\r\n" * 20)).encode()

    def _run(self, i, seed):
        rng = random.Random(seed * 100 + i)
        n = 0
        while not self.stop.is_set():
            with self.lock:
                if self.attempts >= MAX_MESSAGES:
                    return
                self.attempts += 1
            n += 1
            cid = "c%d-%d" % (i, n)
            rcpts = ["sink@example.org"]
            if rng.random() < 0.2:
                rcpts.append("second@example.net")
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=10,
                                  local_hostname="chaos.test") as s:
                    s.sendmail("load@example.com", rcpts, self._message(cid))
                with self.lock:
                    self.acked[cid] = rcpts
            except (OSError, smtplib.SMTPException):
                # Daemon down or a 4xx: not acknowledged, not expected.
                with self.lock:
                    self.refused += 1
                time.sleep(0.02)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


# ------------------------------------------------------------ the daemons

def spool_files(spool, folder):
    try:
        return [n for n in os.listdir(os.path.join(spool, folder))
                if not n.startswith(".") and not n.endswith(".state")]
    except FileNotFoundError:
        return []


class StandaloneTarget:
    """arnie on its own port; clients talk to it."""

    name = "arnie"

    def __init__(self, work, upstream_port, save_sent=False):
        import arnietest
        self.arnietest = arnietest
        self.files = os.path.join(work, "files")
        os.makedirs(self.files)
        self.port = free_port()
        keys = dict(
            OUTBOUND_EMAIL_HOST="127.0.0.1",
            OUTBOUND_EMAIL_HOST_PORT=upstream_port,
            OUTBOUND_EMAIL_USE_TLS=False, FILES_DIRECTORY=self.files,
            ARNIE_LISTEN_PORT=self.port, ARNIE_HOSTNAME="arnie.test",
            ARNIE_USER="root", RETRY_DELAY_SECONDS=1,
            RETRY_MAX_DELAY_SECONDS=2, OUTBOUND_EMAIL_TIMEOUT_SECONDS=2,
            MAX_CONNECTIONS=50, SAVE_SENT_MAIL=save_sent,
            ARNIE_RELAY_PROGRAM=arnietest.ARNIE_RELAY_BIN or None)
        env = arnietest.write_env(work, **keys)
        self.daemon = arnietest.Arnie(work, env, self.port, self.files)
        self.spool = os.path.join(self.files, "arniefiles")
        self.client_port = self.port

    def start(self):
        self.daemon.start()

    def kill(self):
        self.daemon.kill9()

    def stop(self):
        self.daemon.stop()

    def log(self):
        return self.daemon.log_text()

    def close(self):
        self.stop()


class MilterTarget:
    """arnie-milter behind a private Postfix; clients talk to Postfix."""

    name = "milter"

    def __init__(self, work, upstream_port, save_sent=False):
        import milterlib
        self.milterlib = milterlib
        self.milter = milterlib.Milter(
            work, OUTBOUND_EMAIL_HOST_PORT=upstream_port,
            ARNIE_HOSTNAME="arnie.test",
            OUTBOUND_EMAIL_TIMEOUT_SECONDS=2, SAVE_SENT_MAIL=save_sent)
        self.sink = milterlib.Upstream()
        self.postfix = milterlib.PrivatePostfix(
            work, free_port(), "inet:127.0.0.1:%d" % self.milter.port,
            self.sink.port, {"local_header_rewrite_clients": "",
                             "smtpd_client_connection_count_limit": "0"})
        self.spool = self.milter.spool
        self.client_port = self.postfix.port
        self.started = False

    def start(self):
        self.milter.start()
        if not self.started:
            self.postfix.start()
            self.started = True

    def kill(self):
        self.milter.stop(sig=signal.SIGKILL)

    def stop(self):
        self.milter.stop()

    def log(self):
        return self.milter.log()

    def close(self):
        try:
            self.postfix.stop()
        finally:
            self.milter.stop()
            self.sink.stop()

    def postfix_kept(self):
        return self.postfix.queue_ids()


# ------------------------------------------------------------ one run

def run(target_name, seconds, clients, min_kills, seed, keep=False,
        save_sent=False):
    work = tempfile.mkdtemp(prefix="arnie-chaos-%s." % target_name)
    os.chmod(work, 0o755)
    rng = random.Random(seed)
    up = ChaosUpstream(hang_seconds=3, seed=seed).start()
    target = None
    ok = False
    try:
        cls = StandaloneTarget if target_name == "arnie" else MilterTarget
        target = cls(work, up.port, save_sent)
        target.start()
        load = Clients(target.client_port, clients, seed)
        load.start()
        kills = 0
        t_end = time.monotonic() + seconds
        while time.monotonic() < t_end:
            time.sleep(rng.uniform(0.5, 2.5))
            target.kill()
            kills += 1
            target.start()
        load.finish()
        up.chaos = False
        # Drain: every acknowledged message must reach the upstream.
        acked = dict(load.acked)
        wanted = [(c, r) for c, rcpts in acked.items() for r in rcpts]

        def drained():
            got = up.snapshot()
            return (all(k in got for k in wanted) and
                    spool_files(target.spool, "outbox") == [])
        try:
            wait_for(drained, 120, "the queue to drain")
        except AssertionError:
            pass
        got = up.snapshot()
        lost = sorted({c for c, r in wanted if (c, r) not in got})
        dups = sorted({c for (c, r), k in got.items() if k > 1})
        extra = sum(k - 1 for k in got.values())
        summary = {
            "target": target_name, "seconds": seconds, "clients": clients,
            "seed": seed, "kills": kills, "submitted": load.attempts,
            "acknowledged": len(acked), "refused": load.refused,
            "delivered": len({c for c, r in got}), "lost": len(lost),
            "duplicated_messages": len(dups), "extra_deliveries": extra,
            "left_in_outbox": len(spool_files(target.spool, "outbox")),
            "failed": len(spool_files(target.spool, "failed")),
            "corrupt": len(spool_files(target.spool, "corrupt")),
            "upstream_connections": up.connections,
            "upstream_faults": dict(up.faults),
        }
        problems = []
        if lost:
            problems.append("lost %d acknowledged messages: %s" % (
                len(lost), ", ".join(lost[:10])))
        if extra > kills:
            problems.append("%d extra deliveries (%d messages), more than "
                            "the %d kills: %s" % (extra, len(dups), kills,
                                                  ", ".join(dups[:10])))
        if kills < min_kills:
            problems.append("only %d kills (at least %d wanted)" % (
                kills, min_kills))
        if summary["corrupt"] or summary["failed"]:
            problems.append("files in corrupt/ or failed/")
        if summary["acknowledged"] == 0:
            problems.append("nothing was acknowledged: the run proves "
                            "nothing")
        ok = not problems
        return ok, summary, problems, work
    finally:
        if target is not None:
            target.close()
        up.stop()
        if ok and not keep:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--target", choices=("arnie", "milter", "both"),
                    default="both")
    ap.add_argument("--min-kills", type=int, default=5)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--save-sent", action="store_true",
                    help="SAVE_SENT_MAIL=true: delivered mail moves to "
                    "sent/")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory even when the run passes")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time())
    targets = ["arnie", "milter"] if args.target == "both" else [args.target]
    status = 0
    for t in targets:
        ok, summary, problems, work = run(t, args.seconds, args.clients,
                                          args.min_kills, seed, args.keep,
                                          args.save_sent)
        for p in problems:
            print("FAIL: %s: %s (files kept in %s)" % (t, p, work))
        if args.json:
            print(json.dumps(summary, sort_keys=True))
        print("%s: %s: %d kills, %d submitted, %d acknowledged, "
              "%d delivered, lost %d, duplicated %d (%d extra deliveries), "
              "upstream faults %s, seed %d" % (
                  "PASS" if ok else "FAIL", t, summary["kills"],
                  summary["submitted"], summary["acknowledged"],
                  summary["delivered"], summary["lost"],
                  summary["duplicated_messages"],
                  summary["extra_deliveries"],
                  ", ".join("%s=%d" % kv for kv in
                            sorted(summary["upstream_faults"].items())),
                  seed))
        if not ok:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
