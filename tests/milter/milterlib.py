"""Helpers for the arnie-milter tests (run with /usr/bin/python3).

Everything runs on 127.0.0.1 with ports picked at run time, in a temp dir;
every process started here is stopped by its PID.  Nothing here skips a
test: a missing tool is an error, as the README's install command provides
it.
"""

import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


def binary():
    path = os.environ.get("ARNIE_MILTER_BIN")
    if not path or not os.access(path, os.X_OK):
        raise SystemExit("ARNIE_MILTER_BIN is not set to the built "
                         "milter/arnie-milter (run through make check)")
    return path


def require(*tools):
    for tool in tools:
        if shutil.which(tool, path=os.environ.get("PATH", "") +
                        ":/usr/sbin:/sbin") is None:
            raise SystemExit("missing tool %s (see the README's test "
                             "dependencies)" % tool)


def cleanup_on_sigterm():
    """Turn SIGTERM and SIGHUP (make check's timeout, a closed terminal)
    into SystemExit, so that finally blocks stop what the test started."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


def free_port():
    """A port nobody listens on right now (bound, then released)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def await_cond(cond, timeout, what):
    """Poll cond() until it is true or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(0.02)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_open(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Milter:
    """The real arnie-milter with its own .env and spool under workdir."""

    def __init__(self, workdir, unix=False, **settings):
        self.workdir = workdir
        self.port = free_port()
        # libmilter's spelling, for miltertest; Postfix writes inet:HOST:PORT.
        if unix:
            self.path = os.path.join(workdir, "milter.sock")
            self.sock = "unix:" + self.path
        else:
            self.path = None
            self.sock = "inet:%d@127.0.0.1" % self.port
        self.spool = os.path.join(workdir, "arniefiles")
        self.logfile = os.path.join(workdir, "arnie-milter.log")
        conf = {
            "OUTBOUND_EMAIL_HOST": "127.0.0.1",
            # Nobody listens there unless a test says otherwise: queued
            # files stay in outbox/ to be inspected.
            "OUTBOUND_EMAIL_HOST_PORT": str(free_port()),
            "OUTBOUND_EMAIL_USE_TLS": "false",
            "FILES_DIRECTORY": workdir,
            "ARNIE_MILTER_SOCKET": self.sock,
            "ARNIE_LOG_FILE": self.logfile,
            "RETRY_DELAY_SECONDS": "1",
            "RETRY_MAX_DELAY_SECONDS": "2",
            # Tests run as root; the switch to another user has a test of
            # its own.
            "ARNIE_USER": "root",
        }
        if os.environ.get("ARNIE_RELAY_BIN"):
            conf["ARNIE_RELAY_PROGRAM"] = os.environ["ARNIE_RELAY_BIN"]
        conf.update({k: str(v) for k, v in settings.items()})
        self.envfile = os.path.join(workdir, "arnie.env")
        with open(self.envfile, "w") as f:
            for k, v in conf.items():
                f.write("%s=%s\n" % (k, v))
        self.proc = None
        self.wrapper = []   # argv prefix that ends in exec, e.g. unshare

    def start(self):
        # The earliest second a Date: field added by this run may carry.
        self.started_at = int(time.time())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("ARNIE_", "OUTBOUND_EMAIL_"))
               or k in ("ARNIE_MILTER_BIN", "ARNIE_SRCDIR", "ARNIE_BIN")}
        self.proc = subprocess.Popen(self.wrapper +
                                     [binary(), "-v", "-c", self.envfile],
                                     env=env, cwd=self.workdir,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

        def listening():
            if self.proc.poll() is not None:
                raise AssertionError("arnie-milter exited %s: %s\n%s" % (
                    self.proc.returncode,
                    self.proc.stderr.read().decode(errors="replace"),
                    self.log()))
            # The socket listens before the spool is open (it is bound
            # before privileges are dropped): ready is the log line that
            # follows both.
            if self.path is not None:
                if not unix_open(self.path):
                    return False
            elif not port_open(self.port):
                return False
            return " listening on " in self.log()
        await_cond(listening, 10, "arnie-milter to listen")
        return self

    def live_spool(self):
        """The spool as the running daemon sees it (through its mount
        namespace when a wrapper gave it one)."""
        return "/proc/%d/root%s" % (self.proc.pid, self.spool)

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop by PID; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("arnie-milter ignored signal %d" % sig)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""


def stop_milters(*milters):
    """Stop them (None: skipped) together: libmilter takes up to 5 s to
    notice SIGTERM."""
    for m in milters:
        if m is not None and m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGTERM)
    for m in milters:
        if m is not None:
            m.stop()


def tear_down(ok, work, mta, mta_log_name, milters, servers):
    """End an end-to-end test: stop the MTA, the milters and the servers
    (None: skipped); remove work if the test passed, else keep it and print
    the logs."""
    if mta is not None:
        mta.stop()
    stop_milters(*milters)
    for s in servers:
        if s is not None:
            s.stop()
    if ok:
        shutil.rmtree(work, ignore_errors=True)
        return
    print("FAIL: files kept in %s" % work)
    if mta is not None:
        print("--- %s:\n%s" % (mta_log_name, mta.log()))
    for m in milters:
        if m is not None:
            print("--- arnie-milter log:\n" + m.log())


def parse_spool_file(path):
    """A queued file: (fields, message bytes).  fields maps a key to the
    list of its values, in order (rcpt repeats)."""
    with open(path, "rb") as f:
        data = f.read()
    head, sep, message = data.partition(b"\n\n")
    if not sep:
        raise AssertionError("%s: no blank line after the envelope" % path)
    lines = head.decode().split("\n")
    if lines[0] not in ("arnie-spool 1", "arnie-spool 2"):
        raise AssertionError("%s: bad magic %r" % (path, lines[0]))
    fields = {}
    for line in lines[1:]:
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if int(fields["size"][0]) != len(message):
        raise AssertionError("%s: size %s but %d octets" % (
            path, fields["size"][0], len(message)))
    return fields, message


# The fields arnie-milter adds to a header section that lacks them, in this
# order, after the last field (shared/message.h, Postfix's cleanup order).
ADDED_ORDER = ("Message-ID", "Date", "From")
DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
MONTHS = (b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug",
          b"Sep", b"Oct", b"Nov", b"Dec")
DATE_RE = re.compile(
    rb"(?P<wday>[A-Z][a-z]{2}), (?P<day>[1-9]|[12][0-9]|3[01]) "
    rb"(?P<mon>[A-Z][a-z]{2}) (?P<year>[0-9]{4}) "
    rb"(?P<h>[01][0-9]|2[0-3]):(?P<m>[0-5][0-9]):(?P<s>[0-5][0-9]) "
    rb"(?P<off>[+-][0-9]{4})")


def check_date(value, earliest, latest, offset=None):
    """value, an added Date: field's value, must be an RFC 5322 date as
    Postfix writes it ("Tue, 5 Mar 2024 09:08:07 +0100": day without a
    leading zero, numeric offset, no comment), with the right weekday,
    between the Unix times earliest and latest, and with the numeric
    offset offset (b"+0530") when given."""
    m = DATE_RE.fullmatch(value)
    if m is None or m["wday"] not in DAYS or m["mon"] not in MONTHS:
        raise AssertionError("malformed Date: %r" % value)
    off = int(m["off"][1:3]) * 60 + int(m["off"][3:5])
    if m["off"][:1] == b"-":
        off = -off
    try:
        dt = datetime.datetime(
            int(m["year"]), MONTHS.index(m["mon"]) + 1, int(m["day"]),
            int(m["h"]), int(m["m"]), int(m["s"]),
            tzinfo=datetime.timezone(datetime.timedelta(minutes=off)))
    except ValueError as e:
        raise AssertionError("impossible Date: %r (%s)" % (value, e))
    if DAYS[dt.weekday()] != m["wday"]:
        raise AssertionError("Date: %r: wrong weekday" % value)
    if not earliest <= dt.timestamp() <= latest:
        raise AssertionError("Date: %r is not between %s and %s" % (
            value, earliest, latest))
    if offset is not None and m["off"] != offset:
        raise AssertionError("Date: %r: offset is not the local %s" % (
            value, offset.decode()))


def received_line(msg_id, host, qid=None, rcpt=None, helo=None, name=None,
                  addr=None):
    """The Received: field arnie-milter prepends (shared/message.h,
    message_received()), ending in b"; DATE\r\n" where the date goes.
    helo None: a local submission, without the "from" clause; name None:
    the client's address alone; qid: the MTA's queue ID ({i}); rcpt: the
    only recipient."""
    if helo is None:
        line = b"Received: by %s (Arnie milter, local submission) id %s" % (
            host, msg_id)
    else:
        literal = b"IPv6:" + addr if b":" in addr else addr
        line = (b"Received: from %s (%s[%s])\r\n"
                b"\tby %s (Arnie milter) with ESMTP id %s" % (
                    helo, name + b" " if name else b"", literal, host,
                    msg_id))
    third = []
    if qid:
        third.append(b"(MTA queue id %s)" % qid)
    if rcpt:
        third.append(b"for <%s>" % rcpt)
    if third:
        line += b"\r\n\t" + b" ".join(third)
    return line + b"; DATE\r\n"


def split_received(message, want, earliest=0, latest=None, offset=None):
    """message must start with want (from received_line()) with a date,
    checked with check_date(), in place of DATE; returns the rest."""
    if latest is None:
        latest = time.time()
    prefix = want[:-len(b"DATE\r\n")]
    if not message.startswith(prefix):
        raise AssertionError("Received: field differs:\ngot:  %r\n"
                             "want: %r" % (message[:len(want) + 40], want))
    end = message.find(b"\r\n", len(prefix))
    if end < 0:
        raise AssertionError("Received: field unterminated: %r" % message)
    check_date(message[len(prefix):end], earliest, latest, offset)
    return message[end + 2:]


def expect_completed(message, header, body, msg_id, sender, host,
                     added=ADDED_ORDER, earliest=0, latest=None,
                     offset=None, received=None):
    """message (bytes) must be, byte for byte: the Received: field
    received (from received_line(); None: no such check), then header (the
    fields the MTA passed, unchanged), then exactly the fields named in
    added, in ADDED_ORDER, then the empty line, then body (unchanged).
    msg_id is the spool ID, sender the envelope sender (b"" for <>), host
    ARNIE_HOSTNAME; the dates are checked with check_date()."""
    if latest is None:
        latest = time.time()
    if received is not None:
        message = split_received(message, received, earliest, latest, offset)
    if not message.startswith(header):
        raise AssertionError("the original header fields changed:\n%r\n"
                             "expected them to start with:\n%r" % (
                                 message, header))
    rest = message[len(header):]
    lines = []
    for name in ADDED_ORDER:
        if name not in added:
            continue
        if name == "Message-ID":
            lines.append(b"Message-ID: <%s@%s>\r\n" % (msg_id, host))
        elif name == "Date":
            date = re.match(rb"(?:Message-ID: [^\r\n]*\r\n)?"
                            rb"Date: ([^\r\n]*)\r\n", rest)
            if date is None:
                raise AssertionError("no Date: field added after the "
                                     "original ones:\n%r" % message)
            check_date(date.group(1), earliest, latest, offset)
            lines.append(b"Date: %s\r\n" % date.group(1))
        else:
            lines.append(b"From: %s\r\n" % (
                sender if sender else b"MAILER-DAEMON@" + host))
    want = header + b"".join(lines) + b"\r\n" + body
    if message != want:
        raise AssertionError("completed message differs:\ngot:  %r\n"
                             "want: %r" % (message, want))


def unescape(text):
    return re.sub(r"%([0-9A-Fa-f]{2})",
                  lambda m: chr(int(m.group(1), 16)), text)


def queued(spool, folder="outbox"):
    """Messages in spool/folder, oldest first, as dicts."""
    d = os.path.join(spool, folder)
    out = []
    for name in sorted(os.listdir(d)):
        if name.startswith(".") or name.endswith(".state"):
            continue
        fields, message = parse_spool_file(os.path.join(d, name))
        out.append({
            "id": name,
            "from": unescape(fields["from"][0].strip("<>")),
            "rcpts": [unescape(v.split(" ", 1)[1].split(" ", 1)[0]
                               .strip("<>"))
                      for v in fields.get("rcpt", [])],
            "origin": fields.get("origin", [""])[0],
            "fields": fields,
            "message": message,
        })
    return out


def write_smtp_data(path, message):
    """The DATA text for swaks --no-data-fixup (which would otherwise add
    a CRLF of its own before the final dot): dot-stuffed, with the end."""
    stuffed = re.sub(rb"(?m)^\.", b"..", message)
    with open(path, "wb") as f:
        f.write(stuffed + b".\r\n")


def swaks(port, sender, rcpts, data_file, helo, expect_ok=True):
    """Send data_file (from write_smtp_data()) to 127.0.0.1:port; returns
    swaks's exit status and transcript."""
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--from", sender,
           "--to", ",".join(rcpts), "--data", data_file, "--no-data-fixup",
           "--helo", helo, "--timeout", "30"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120)
    out = p.stdout.decode(errors="replace")
    if expect_ok and p.returncode != 0:
        raise AssertionError("swaks failed (%d):\n%s" % (p.returncode, out))
    return p.returncode, out


def find(msgs, sender):
    """The messages (as Upstream.snapshot() or queued() give them) from
    sender."""
    return [m for m in msgs if m["from"] == sender]


def spooled(milter, sender):
    """The copy of sender's message that Arnie queued, from sent/ (where
    SAVE_SENT_MAIL moves it once relayed)."""
    got = await_cond(
        lambda: find(queued(milter.spool, "sent"), sender), 30,
        "%s's message in sent/" % sender)
    assert len(got) == 1, got
    return got[0]


def same_bytes(milter, relayed):
    """What the upstream received is what Arnie spooled."""
    copy = spooled(milter, relayed["from"])
    assert relayed["data"] == copy["message"], (
        "relayed and spooled bytes differ:\nrelayed: %r\nspooled: %r" % (
            relayed["data"], copy["message"]))
    return copy


class Upstream:
    """A fake smarthost (aiosmtpd) that records every envelope it gets."""

    def __init__(self, port=None):
        from aiosmtpd.controller import Controller

        self.messages = []
        self.lock = threading.Lock()
        outer = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with outer.lock:
                    outer.messages.append({
                        "from": envelope.mail_from,
                        "rcpts": list(envelope.rcpt_tos),
                        "data": envelope.original_content,
                    })
                return "250 2.0.0 Ok: queued"

        self.port = port or free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1",
                                     port=self.port)
        self.controller.start()

    def count(self):
        with self.lock:
            return len(self.messages)

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def stop(self):
        self.controller.stop()


def tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


# Services a private Postfix needs; the pipe transports of Debian's
# master.cf (maildrop, uucp, ...) name users that may not exist.
POSTFIX_SERVICES = {
    "pickup", "cleanup", "qmgr", "rewrite", "bounce", "defer", "trace",
    "verify", "flush", "proxymap", "proxywrite", "smtp", "relay", "showq",
    "error", "retry", "discard", "local", "virtual", "anvil", "scache",
    "postlog", "tlsmgr",
}


class PrivatePostfix:
    """A Postfix instance of its own under workdir, leaving /etc/postfix
    alone.

    Checked on Debian 12 (Postfix 3.7): as root, `postfix -c DIR start`,
    `sendmail -C DIR` and `postqueue -c DIR` accept a config directory
    that is not listed in alternate_config_directories (the default
    main.cf need not even exist); the queue directory is created by
    `postfix start` (post-install create-missing) but must exist as an
    empty folder first.  Start-up errors reach maillog_file (postlogd),
    so no syslog daemon is needed; maillog_file must match
    maillog_file_prefixes.  meta_directory stays /etc/postfix, where
    postfix-files and postfix-script live.  Every service runs
    unchrooted (column 5 = n), so the milter and relay addresses are the
    host's.
    """

    def __init__(self, workdir, smtpd_port, milter, relay_port, extra=None,
                 listeners=None):
        """extra: main.cf settings added to (or overriding) the usual ones;
        listeners: {port: {parameter: value}}, more smtpd services on
        127.0.0.1, each with its own -o overrides of main.cf."""
        self.dir = os.path.join(workdir, "postfix")
        self.listeners = listeners or {}
        self.queue = os.path.join(self.dir, "queue")
        self.data = os.path.join(self.dir, "data")
        self.maillog = os.path.join(self.dir, "maillog")
        self.port = smtpd_port
        os.makedirs(self.queue)
        os.makedirs(self.data)
        shutil.chown(self.data, "postfix")
        for d in (workdir, self.dir):
            os.chmod(d, 0o755)
        settings = [
            ("compatibility_level", "3.6"),
            ("queue_directory", self.queue),
            ("data_directory", self.data),
            ("meta_directory", "/etc/postfix"),
            ("maillog_file", self.maillog),
            ("maillog_file_prefixes", self.dir),
            ("myhostname", "postfix.test"),
            ("mydomain", "test"),
            ("inet_interfaces", "127.0.0.1"),
            ("inet_protocols", "ipv4"),
            ("mydestination", ""),
            ("mynetworks", "127.0.0.0/8"),
            # Where Postfix would deliver if it did: a sink that must stay
            # empty in divert mode.
            ("relayhost", "[127.0.0.1]:%d" % relay_port),
            ("smtp_tls_security_level", "none"),
            ("smtpd_tls_security_level", "none"),
            ("alias_maps", ""),
            ("alias_database", ""),
            # The lines docs/postfix.md tells users to add.
            ("smtpd_milters", milter),
            ("non_smtpd_milters", "$smtpd_milters"),
            ("milter_default_action", "tempfail"),
            # Discarded mail never reaches Postfix's queue manager, which
            # hands out the flow-control tokens; without this, after about
            # 100 messages each new one waits 1 s.
            ("in_flow_delay", "0"),
        ]
        settings += list((extra or {}).items())
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            for k, v in settings:
                f.write("%s = %s\n" % (k, v))
        self._write_master_cf()
        self.started = False

    def _write_master_cf(self):
        out = []
        keep = False
        with open("/etc/postfix/master.cf") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                if line[0] in " \t":
                    if keep:
                        out.append(line.rstrip("\n"))
                    continue
                fields = line.split()
                keep = fields[0] in POSTFIX_SERVICES
                if not keep:
                    continue
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = "127.0.0.1:%d" % self.port
                if fields[4] in ("y", "-"):
                    fields[4] = "n"
                out.append(" ".join(fields))
        for port, overrides in sorted(self.listeners.items()):
            out.append("127.0.0.1:%d inet n - n - - smtpd" % port)
            out += ["  -o %s=%s" % kv for kv in sorted(overrides.items())]
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write("\n".join(out) + "\n")

    def cmd(self, *args, check=True, input=None, timeout=60):
        p = subprocess.run(list(args), input=input, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("%s failed (%d): %s\n--- maillog:\n%s" % (
                " ".join(args), p.returncode,
                p.stdout.decode(errors="replace"), self.log()))
        return p

    def start(self):
        self.cmd("postfix", "-c", self.dir, "start")
        self.started = True
        for port in [self.port] + sorted(self.listeners):
            await_cond(lambda: port_open(port), 20,
                       "Postfix smtpd on port %d" % port)
        return self

    def master_pid(self):
        try:
            with open(os.path.join(self.queue, "pid", "master.pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        if not self.started:
            return
        pid = self.master_pid()
        self.cmd("postfix", "-c", self.dir, "stop", check=False)
        self.started = False
        if pid is None:
            return

        def gone():
            try:
                os.kill(pid, 0)
                return False
            except ProcessLookupError:
                return True
        try:
            await_cond(gone, 15, "Postfix master to exit")
        except AssertionError:
            os.kill(pid, signal.SIGKILL)

    def sendmail(self, args, message):
        return self.cmd("sendmail", "-C", self.dir, *args, input=message)

    def queue_ids(self):
        """IDs of messages in any Postfix queue (postqueue -p)."""
        p = self.cmd("postqueue", "-c", self.dir, "-j")
        import json
        return [json.loads(line)["queue_id"]
                for line in p.stdout.decode().splitlines() if line.strip()]

    def kick_pickup(self):
        """Make pickup scan maildrop/ now instead of at its next wakeup."""
        self.cmd("postkick", "-c", self.dir, "public", "pickup", "W",
                 check=False)

    def log(self):
        try:
            with open(self.maillog, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""
