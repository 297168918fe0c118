"""
arnietest: the harness behind Arnie's integration tests.

It starts the real `arnie` binary (path in $ARNIE_BIN) on 127.0.0.1 with a
free port and a temporary spool, in front of a scriptable fake upstream
(aiosmtpd from Debian's python3-aiosmtpd, so run with /usr/bin/python3), and
drives it with real clients: smtplib, swaks, curl and a raw socket client for
protocol corner cases.

Rules kept here so that every test follows them:
- every port is picked free at run time, every file lives in a per-test
  temporary directory (removed when the test passed, kept and printed when it
  failed, with the tail of every daemon log);
- every process is stopped by its PID (SIGTERM, then SIGKILL) in a cleanup;
- conditions are awaited by polling with a deadline (wait_for), not slept on.

Only the standard library and aiosmtpd are used.
"""

import asyncio
import contextlib
import dataclasses
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import logging
import unittest
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

# ------------------------------------------------------------------ basics

# aiosmtpd logs every TLS handshake the daemon refuses, with a traceback;
# that is the expected outcome of several tests, so keep it quiet unless
# asked (ARNIE_TEST_DEBUG=1).
if not os.environ.get("ARNIE_TEST_DEBUG"):
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
warnings.filterwarnings("ignore", message=".*login_data is deprecated.*")

ARNIE_BIN = os.environ.get("ARNIE_BIN", "")
# The built relay program; the installed one is elsewhere.
ARNIE_RELAY_BIN = os.environ.get("ARNIE_RELAY_BIN", "")
ARNIE_QUEUE_BIN = os.environ.get("ARNIE_QUEUE_BIN", "")
ARNIE_SRCDIR = os.environ.get(
    "ARNIE_SRCDIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

# Generous upper bounds; tests poll and normally finish far sooner.
START_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 15.0

# Keys the daemon reads; removed from the environment handed to it so that
# a developer's shell cannot change a test's configuration.
_CONFIG_PREFIXES = ("ARNIE_", "OUTBOUND_EMAIL_", "MAX_", "RETRY_", "REPORT_")
_CONFIG_KEYS = ("ADMIN_ADDRESS", "SAVE_SENT_MAIL", "FILES_DIRECTORY",
                "JOURNAL_STREAM", "NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS")


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=DELIVERY_TIMEOUT, interval=0.05, what=None):
    """Poll predicate() until it returns a true value (returned) or the
    deadline passes (AssertionError naming what was awaited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" %
                                 (timeout, what or predicate))
        time.sleep(interval)


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def localhost_addresses():
    """Loopback addresses "localhost" resolves to here and that can be
    bound (CI images often list ::1 too; a daemon told "localhost" may try
    it first)."""
    out = ["127.0.0.1"]
    try:
        infos = socket.getaddrinfo("localhost", None, type=socket.SOCK_STREAM)
    except OSError:
        return out
    if any(i[4][0] == "::1" for i in infos):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
            out.append("::1")
        except OSError:
            pass
    return out


def vm_hwm_kib(pid):
    """A process's peak resident set so far, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM for %d" % pid)


def clean_env(extra=None):
    """os.environ without any Arnie setting, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(_CONFIG_PREFIXES) and k not in _CONFIG_KEYS}
    if extra:
        env.update({k: str(v) for k, v in extra.items()})
    return env


def _fmt_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def write_env(directory, name=".env", **keys):
    """Write a .env file with keys (None values are left out); returns its
    path."""
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("# written by the Arnie integration tests\n")
        for k, v in keys.items():
            if v is None:
                continue
            f.write("%s=%s\n" % (k, _fmt_value(v)))
    # It may hold a password: readable by its owner only, as it should.
    os.chmod(path, 0o600)
    return path


def make_message(test_id, subject="test", sender="app@example.com",
                 to="user@example.org", extra_headers=(), body=None):
    """A small RFC 5322 message with CRLF line ends, identified by an
    X-Test-Id header so the upstream's copy can be found."""
    lines = [
        "From: <%s>" % sender,
        "To: <%s>" % to,
        "Subject: %s" % subject,
        "Date: Mon, 01 Jan 2024 00:00:00 +0000",
        "Message-ID: <%s@test.invalid>" % test_id,
        "X-Test-Id: %s" % test_id,
    ]
    lines.extend(extra_headers)
    lines.append("")
    if body is None:
        body = "Hello from test %s.\r\nSecond line.\r\n" % test_id
    text = "\r\n".join(lines) + "\r\n" + body
    if not text.endswith("\r\n"):
        text += "\r\n"
    return text.encode()


def strip_received(content):
    """Split an upstream copy into (Arnie's Received: header, the rest).
    The header is the first field, with its folded continuation lines."""
    if not content.startswith(b"Received:"):
        return None, content
    pos = content.index(b"\r\n") + 2
    while content[pos:pos + 1] in (b" ", b"\t"):
        pos = content.index(b"\r\n", pos) + 2
    return content[:pos], content[pos:]


# ------------------------------------------------------------------ TLS

class TestCA:
    """A CA made with the openssl CLI in directory, and server certificates
    signed by it."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.ca_key = os.path.join(directory, "ca.key")
        self.ca_cert = os.path.join(directory, "ca.pem")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", self.ca_key, "-out", self.ca_cert,
                      "-days", "2", "-subj", "/CN=Arnie Test CA",
                      "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")

    def _openssl(self, *args):
        r = subprocess.run(("openssl",) + args, capture_output=True,
                           text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError("openssl %s failed: %s" % (args[0], r.stderr))

    def issue(self, name, sans):
        """A server certificate for sans (e.g. "DNS:localhost,IP:127.0.0.1");
        returns (cert path, key path)."""
        key = os.path.join(self.dir, name + ".key")
        csr = os.path.join(self.dir, name + ".csr")
        cert = os.path.join(self.dir, name + ".pem")
        ext = os.path.join(self.dir, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % sans)
        cn = sans.split(",")[0].split(":", 1)[1]
        self._openssl("req", "-newkey", "ec", "-pkeyopt",
                      "ec_paramgen_curve:prime256v1", "-nodes",
                      "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        self._openssl("x509", "-req", "-in", csr, "-CA", self.ca_cert,
                      "-CAkey", self.ca_key, "-CAcreateserial",
                      "-out", cert, "-days", "2", "-extfile", ext)
        return cert, key

    @staticmethod
    def server_context(cert, key):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx


# ------------------------------------------------------------------ upstream

@dataclasses.dataclass
class Transaction:
    conn: int               # connection number, from 1
    mail_from: str
    rcpt_tos: list          # recipients the upstream accepted
    content: bytes          # message as received (dot-unstuffed)
    reply: str              # reply given to the end of DATA
    user: str = None        # authenticated user, if any
    tls: bool = False       # STARTTLS was done on this connection
    tls_version: str = None  # "TLSv1.3"...
    at: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def accepted(self):
        return self.reply.startswith("2")


class _UpstreamSMTP(SMTP):
    """aiosmtpd's server, numbering connections and able to refuse them."""

    def __init__(self, upstream, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._upstream = upstream

    async def _handle_client(self):
        up = self._upstream
        if self.session.peer[1] == up._trigger_port:
            # Controller.start()'s own probe: not the daemon's connection.
            self.conn_no = 0
            await super()._handle_client()
            return
        self.conn_no = up._new_connection()
        reply = up.connect_reply
        if reply:
            await self.push(reply)
            self.transport.close()
            return
        await super()._handle_client()


def _tls_version(session):
    """The TLS version of an aiosmtpd session, or None."""
    obj = (session.ssl or {}).get("ssl_object")
    return obj.version() if obj is not None else None


class _Handler:
    def __init__(self, upstream):
        self.up = upstream

    async def handle_EHLO(self, server, session, envelope, hostname,
                          responses):
        session.host_name = hostname
        if self.up.pipelining:
            responses.insert(1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address,
                          mail_options):
        reply = self.up._mail_reply(address)
        if reply is None:
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 OK"
        return reply

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        reply = self.up._rcpt_reply(server.conn_no, address)
        if reply.startswith("2"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        content = bytes(envelope.original_content)
        delay = self.up._data_delay(content)
        if delay:
            await asyncio.sleep(delay)
        reply = self.up._data_reply()
        user = None
        if session.authenticated and session.auth_data is not None:
            user = session.auth_data
        self.up._record(Transaction(
            conn=server.conn_no, mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos), content=content, reply=reply,
            user=user, tls=session.ssl is not None,
            tls_version=_tls_version(session)))
        return reply


class FakeUpstream:
    """A scriptable smarthost on 127.0.0.1.

    Recipient rule (rcpt_rule(address) -> reply): by default an address
    containing "perm" gets 550 5.1.1, one containing "temp" 451 4.3.0,
    others 250.  rcpt_script[address] is a list of replies used first, one
    per RCPT for that address.  data_replies is a list of replies used first
    for the ends of DATA (then 250).  connect_reply (e.g. "421 4.3.2 ...")
    refuses every connection after its greeting would be due.  delay_data
    maps a byte string to seconds: a message containing it gets its DATA
    reply that much later.

    Every connection is counted and every DATA recorded as a Transaction;
    all state is guarded by one lock.
    """

    PERM_REPLY = "550 5.1.1 <{addr}>: Recipient address rejected"
    TEMP_REPLY = "451 4.3.0 <{addr}>: Temporary failure, try later"
    OK_DATA = "250 2.0.0 Ok: queued as {n}"

    def __init__(self, port=None, tls_context=None, require_starttls=False,
                 auth=None, auth_require_tls=True, pipelining=True,
                 auth_exclude=(), serve_localhost=False):
        self.port = port or free_port()
        # serve_localhost: listen on every address of "localhost", for
        # tests that give the daemon that name (certificate checks).
        self.hosts = localhost_addresses() if serve_localhost else \
            ["127.0.0.1"]
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.auth = auth          # (user, password) or None
        self.auth_require_tls = auth_require_tls
        self.auth_exclude = list(auth_exclude)   # e.g. ["LOGIN"]
        self.pipelining = pipelining
        self.lock = threading.Lock()
        self.connections = 0
        self.transactions = []
        self.rcpt_log = []        # (conn, address, reply)
        self.auth_log = []        # (conn, login, success, mechanism)
        self.sni_names = []       # server names sent in TLS handshakes
        self.rcpt_script = {}
        self.data_replies = []
        self.mail_replies = []
        self.delay_data = {}
        self.connect_reply = None
        self.controller = None

    # -- script helpers (called by tests, under the lock) --

    def script_rcpt(self, address, replies):
        with self.lock:
            self.rcpt_script[address] = list(replies)

    def script_data(self, replies):
        with self.lock:
            self.data_replies = list(replies)

    def rcpt_rule(self, address):
        if "perm" in address:
            return self.PERM_REPLY.format(addr=address)
        if "temp" in address:
            return self.TEMP_REPLY.format(addr=address)
        return "250 2.1.5 OK"

    # -- called from the server thread --

    def _new_connection(self):
        with self.lock:
            self.connections += 1
            return self.connections

    def _mail_reply(self, address):
        with self.lock:
            if self.mail_replies:
                return self.mail_replies.pop(0)
        return None

    def _rcpt_reply(self, conn, address):
        with self.lock:
            script = self.rcpt_script.get(address)
            if script:
                reply = script.pop(0)
            else:
                reply = self.rcpt_rule(address)
            self.rcpt_log.append((conn, address, reply))
        return reply

    def _data_delay(self, content):
        with self.lock:
            for marker, seconds in self.delay_data.items():
                if marker in content:
                    return seconds
        return 0

    def _data_reply(self):
        with self.lock:
            if self.data_replies:
                return self.data_replies.pop(0)
            return self.OK_DATA.format(n=len(self.transactions) + 1)

    def _record(self, t):
        with self.lock:
            self.transactions.append(t)

    def _authenticator(self, server, session, envelope, mechanism, data):
        ok = False
        login = None
        if isinstance(data, LoginPassword):
            login = data.login.decode(errors="replace")
            ok = (self.auth is not None and
                  data.login == self.auth[0].encode() and
                  data.password == self.auth[1].encode())
        with self.lock:
            self.auth_log.append((server.conn_no, login, ok, mechanism))
        return AuthResult(success=ok, handled=False,
                          auth_data=login if ok else None)

    # -- life cycle --

    def start(self):
        up = self
        kwargs = {}
        if self.tls_context is not None:
            kwargs["tls_context"] = self.tls_context
            kwargs["require_starttls"] = self.require_starttls
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticator
            kwargs["auth_required"] = True
            kwargs["auth_require_tls"] = self.auth_require_tls
            if self.auth_exclude:
                kwargs["auth_exclude_mechanism"] = self.auth_exclude

        class _Controller(Controller):
            def factory(self):
                return _UpstreamSMTP(up, self.handler, **self.SMTP_kwargs)

            def _trigger_server(self):
                # As Controller's, from a known source port, so that this
                # connection is not counted as one of the daemon's.
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    up._trigger_port = s.getsockname()[1]
                    s.settimeout(1.0)
                    s.connect(("127.0.0.1", self.port))
                    s.recv(1024)

        if self.tls_context is not None:
            def sni(sslobj, name, ctx):
                with self.lock:
                    self.sni_names.append(name)
            self.tls_context.sni_callback = sni

        self.controller = _Controller(
            _Handler(self),
            hostname=self.hosts if len(self.hosts) > 1 else self.hosts[0],
            port=self.port,
            server_hostname="upstream.test", **kwargs)
        self.controller.start()
        return self

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None
            wait_for(lambda: not port_open(self.port), timeout=5,
                     what="upstream port %d to close" % self.port)

    _trigger_port = -1

    def restart(self):
        """Start again on the same port, after stop()."""
        return self.start()

    # -- queries --

    def accepted(self):
        with self.lock:
            return [t for t in self.transactions if t.accepted]

    def all_transactions(self):
        with self.lock:
            return list(self.transactions)

    def with_test_id(self, test_id, accepted_only=True):
        key = ("X-Test-Id: %s\r\n" % test_id).encode()
        with self.lock:
            return [t for t in self.transactions
                    if key in t.content and (t.accepted or not accepted_only)]

    def delivered_to(self, address):
        """Accepted transactions that carried address."""
        with self.lock:
            return [t for t in self.transactions
                    if t.accepted and address in t.rcpt_tos]

    def rcpt_attempts(self, address):
        with self.lock:
            return [r for r in self.rcpt_log if r[1] == address]

    def connection_count(self):
        with self.lock:
            return self.connections

    def wait_for(self, predicate, timeout=DELIVERY_TIMEOUT, what=None):
        return wait_for(predicate, timeout=timeout, what=what)


# ------------------------------------------------------------------ daemon

class Arnie:
    """One `arnie` process: started from an .env file, stopped by PID."""

    def __init__(self, workdir, env_path, listen_port, files_dir,
                 extra_env=None, name="arnie"):
        self.workdir = workdir
        self.name = name          # log files: NAME-1.log, NAME-2.log...
        self.env_path = env_path
        self.port = listen_port
        self.files_dir = files_dir
        self.extra_env = extra_env or {}
        self.proc = None
        self.wrapper = []         # argv prefix, e.g. unshare; must exec
        self.args = []            # more options, e.g. ["-v"]
        self.preexec = None       # run in the child before exec
        self.logs = []            # one stderr log per start
        self.returncode = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, wait=True):
        if not ARNIE_BIN or not os.access(ARNIE_BIN, os.X_OK):
            raise AssertionError("ARNIE_BIN (%r) is not an executable; "
                                 "build standalone/arnie first" % ARNIE_BIN)
        log = os.path.join(self.workdir, "%s-%d.log" %
                           (self.name, len(self.logs) + 1))
        self.logs.append(log)
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                self.wrapper + [ARNIE_BIN, "-c", self.env_path] +
                self.args,
                stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                cwd=self.workdir, preexec_fn=self.preexec,
                env=clean_env(self.extra_env))
        self.returncode = None
        if wait:
            self.wait_listening()
        return self

    def wait_listening(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self.returncode = rc
                raise AssertionError(
                    "arnie exited with %d during start-up; log:\n%s" %
                    (rc, self.log_text()))
            # The port takes connections (into the backlog) from the
            # bind on, before the spool exists; "started" comes after
            # both.
            if self.started_logged() and port_open(self.port):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "arnie did not start on %d within %.0fs; log:\n%s" %
                    (self.port, timeout, self.log_text()))
            time.sleep(0.05)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL if need be; returns the exit status."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode
        return self.returncode

    def kill9(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.returncode = self.proc.returncode if self.proc else None

    def started_logged(self):
        """This run's log says the daemon started (or it logs to a file
        of its own, and only the port can tell)."""
        with open(self.env_path) as f:
            own_file = "ARNIE_LOG_FILE=" in f.read()
        if own_file or "ARNIE_LOG_FILE" in (self.extra_env or {}):
            return True
        with contextlib.suppress(OSError):
            with open(self.logs[-1], "rb") as f:
                return b" started: listening on " in f.read()
        return False

    def log_text(self):
        out = []
        for path in self.logs:
            with contextlib.suppress(OSError):
                with open(path, "rb") as f:
                    out.append(f.read().decode(errors="replace"))
        return "".join(out)

    # -- spool --

    @property
    def spool(self):
        return Spool(os.path.join(self.files_dir, "arniefiles"))


# ------------------------------------------------------------------ spool

class Envelope:
    """A spool file split as docs/spool-format.md describes: a version line
    ("arnie-spool 1"), "key: value" lines, a blank line, the message."""

    def __init__(self, path, data, state=None):
        self.path = path
        self.id = os.path.basename(path)
        self.raw = data
        self.state = state
        self.fields, self.body, self.version = self._parse(data)
        if state is not None:
            # ID.state holds the envelope as it stands (spool-format.md).
            self.fields, _, self.version = self._parse(state)

    @staticmethod
    def _parse(data):
        sep = data.find(b"\n\n")
        sep_crlf = data.find(b"\r\n\r\n")
        if sep_crlf != -1 and (sep == -1 or sep_crlf < sep):
            head, body = data[:sep_crlf], data[sep_crlf + 4:]
        elif sep != -1:
            head, body = data[:sep], data[sep + 2:]
        else:
            head, body = data, b""
        lines = head.decode(errors="replace").replace("\r", "").split("\n")
        fields = []
        for line in lines[1:]:
            key, _, value = line.partition(":")
            fields.append((key.strip().lower(), value.strip()))
        return fields, body, lines[0]

    def get(self, key, default=None):
        for k, v in self.fields:
            if k == key:
                return v
        return default

    def get_all(self, key):
        return [v for k, v in self.fields if k == key]

    @property
    def attempts(self):
        return int(self.get("attempts", "0"))

    def rcpt_lines(self):
        return self.get_all("rcpt")

    def rcpt_line(self, address):
        """The rcpt line naming address (with or without <>)."""
        for v in self.rcpt_lines():
            if re.search(r"(^|[\s<])%s([\s>]|$)" % re.escape(address), v):
                return v
        return None

    def rcpt_state(self, address):
        """The state word ("pending", "sent", "failed") that starts the
        address's rcpt line: "rcpt: STATE <addr> [last reply]"."""
        line = self.rcpt_line(address)
        if line is None:
            return None
        return line.split(None, 1)[0]

    def rcpt_reply(self, address):
        line = self.rcpt_line(address)
        if line is None or ">" not in line:
            return None
        return line.split(">", 1)[1].strip()

    def header_text(self):
        return "\n".join("%s: %s" % kv for kv in self.fields)


def new_spool_id(pid=None):
    """An ID as spool.h describes it: 13 upper-case hex digits of
    microseconds since the epoch, then 6 of a process ID."""
    usec = int(time.time() * 1000000)
    return "%013X%06X" % (usec, (pid or os.getpid()) & 0xFFFFFF)


def format_spool_file(msg_id, sender, rcpts, message, attempts=0,
                      next_attempt=0):
    """A queue file written by hand, per docs/spool-format.md."""
    head = ["arnie-spool 1", "id: %s" % msg_id,
            "created: %d" % int(time.time()), "from: <%s>" % sender]
    head += ["rcpt: pending <%s>" % r for r in rcpts]
    head += ["attempts: %d" % attempts, "next-attempt: %d" % next_attempt,
             "size: %d" % len(message)]
    return ("\n".join(head) + "\n\n").encode() + message


def drop_queue_file(outbox, sender, rcpts, message, next_attempt=0,
                    expires=None, rcpt_state="pending", date=None):
    """A queued message written by another process, renamed into outbox;
    its ID.  date: with a state file beside it (its envelope, as Arnie
    leaves a deferred message), dated then (docs/spool-format.md)."""
    msg_id = new_spool_id(pid=len(os.listdir(outbox)) + 1)
    data = format_spool_file(msg_id, sender, rcpts, message,
                             next_attempt=next_attempt)
    data = data.replace(b"rcpt: pending", b"rcpt: " + rcpt_state.encode())
    if expires is not None:
        data = data.replace(b"\nattempts:", b"\nexpires: %d\nattempts:"
                            % expires, 1)
    tmp = os.path.join(os.path.dirname(outbox), "drop.tmp")
    if date is not None:
        head = data[:data.index(b"\n\n") + 2]
        with open(tmp, "wb") as f:
            f.write(head.replace(b"arnie-spool 1", b"arnie-spool 2", 1))
        os.utime(tmp, (date, date))
        os.rename(tmp, os.path.join(outbox, msg_id + ".state"))
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(outbox, msg_id))
    return msg_id


class Spool:
    FOLDERS = ("inbox", "outbox", "sent", "failed", "corrupt", "hold")

    def __init__(self, root):
        self.root = root

    def path(self, folder, name=None):
        if name is None:
            return os.path.join(self.root, folder)
        return os.path.join(self.root, folder, name)

    def list(self, folder):
        """Message files in folder (hidden and temporary names, and the
        state files beside messages, left out)."""
        try:
            names = os.listdir(self.path(folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(n for n in names
                      if not n.startswith(".") and not n.endswith(".state"))

    def count(self, folder):
        return len(self.list(folder))

    def read(self, folder, name):
        """The message file and, if it has one, its state file."""
        with open(self.path(folder, name), "rb") as f:
            data = f.read()
        state = None
        with contextlib.suppress(FileNotFoundError):
            with open(self.path(folder, name + ".state"), "rb") as f:
                state = f.read()
        return Envelope(self.path(folder, name), data, state)

    def envelopes(self, folder):
        out = []
        for n in self.list(folder):
            with contextlib.suppress(FileNotFoundError):
                out.append(self.read(folder, n))
        return out


# ------------------------------------------------------------------ clients

def smtp_send(port, sender, rcpts, msg, timeout=10):
    """Send msg with smtplib; returns the (code, text) of the end of DATA.
    Raises smtplib exceptions on refusal."""
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                      timeout=timeout) as s:
        s.ehlo()
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            if code >= 400:
                raise smtplib.SMTPRecipientsRefused({r: (code, text)})
        code, text = s.data(msg)
        if code >= 400:
            raise smtplib.SMTPDataError(code, text)
        return code, text.decode(errors="replace")


def swaks_send(port, sender, rcpts, *extra, timeout=30):
    cmd = ["swaks", "--server", "127.0.0.1:%d" % port, "--from", sender,
           "--to", ",".join(rcpts), "--helo", "client.test",
           "--timeout", "10"] + list(extra)
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout)


def curl_send(port, sender, rcpts, path, timeout=30):
    cmd = ["curl", "--silent", "--show-error", "--max-time", "10",
           "smtp://127.0.0.1:%d" % port, "--mail-from", sender]
    for r in rcpts:
        cmd += ["--mail-rcpt", r]
    cmd += ["-T", path]
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout)


class RawClient:
    """A line-level SMTP client for the corner cases smtplib hides."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port),
                                             timeout=timeout)
        self.buf = b""

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def _readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; got %r" % self.buf)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode(errors="replace")

    def reply(self):
        """One (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            line = self._readline()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            raise AssertionError("not an SMTP reply: %r" % lines)
        return code, lines

    def closed_by_peer(self, timeout=5):
        """True if the peer closes within timeout (data before EOF is kept
        in the buffer)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True


# ------------------------------------------------------------------ tests

class ArnieTestCase(unittest.TestCase):
    """Base class: a temporary directory per test, helpers to start an
    upstream and a daemon, and cleanups that stop them by PID."""

    maxDiff = None

    def _problems(self):
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return 0
        return len(result.failures) + len(result.errors)

    def setUp(self):
        self._problems_before = self._problems()
        self.tmp = tempfile.mkdtemp(prefix="arnie-itest-")
        # Registered first, so it runs last, after every process is gone.
        self.addCleanup(self._remove_tmp)
        self.daemons = []
        self.files_dir = os.path.join(self.tmp, "files")
        os.makedirs(self.files_dir)

    def _remove_tmp(self):
        # Cleanups run with the outcome reset, so count the result's
        # failures and errors instead.
        if self._problems() == self._problems_before:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        sys.stderr.write("\n[%s] kept %s\n" % (self.id(), self.tmp))
        for d in self.daemons:
            text = d.log_text()
            tail = "\n".join(text.splitlines()[-40:])
            sys.stderr.write("---- arnie log (%s), last lines ----\n%s\n" %
                             (", ".join(d.logs), tail))

    # -- upstream --

    def upstream(self, **kwargs):
        up = FakeUpstream(**kwargs).start()
        self.addCleanup(up.stop)
        return up

    def make_ca(self):
        return TestCA(os.path.join(self.tmp, "ca"))

    # -- daemon --

    def config(self, upstream_port, **overrides):
        """The usual test configuration: plain SMTP to the fake upstream,
        short retry delays."""
        # A stopped upstream's port is free again: never listen on it, or
        # the daemon would relay to itself.
        listen = free_port()
        while listen == upstream_port:
            listen = free_port()
        keys = dict(
            OUTBOUND_EMAIL_HOST="127.0.0.1",
            OUTBOUND_EMAIL_HOST_PORT=upstream_port,
            OUTBOUND_EMAIL_USE_TLS=False,
            FILES_DIRECTORY=self.files_dir,
            ARNIE_LISTEN_ADDRESS="127.0.0.1",
            ARNIE_LISTEN_PORT=listen,
            ARNIE_HOSTNAME="arnie.test",
            RETRY_DELAY_SECONDS=1,
            RETRY_MAX_DELAY_SECONDS=2,
            REPORT_INTERVAL_SECONDS=3600,
            OUTBOUND_EMAIL_TIMEOUT_SECONDS=5,
            SAVE_SENT_MAIL=False,
            # The tests run as root in CI, where no "arnie" user exists;
            # test_privileges.py covers the switch to another user.
            ARNIE_USER="root",
            ARNIE_RELAY_PROGRAM=ARNIE_RELAY_BIN or None,
        )
        keys.update(overrides)
        return keys

    def arnie(self, upstream_port=None, extra_env=None, start=True,
              **overrides):
        """Write an .env and start arnie with it (unless start=False)."""
        if upstream_port is None:
            upstream_port = free_port()   # nothing listens there
        keys = self.config(upstream_port, **overrides)
        env_path = write_env(self.tmp, name="arnie-%d.env" %
                             (len(self.daemons) + 1), **keys)
        d = Arnie(self.tmp, env_path, int(keys["ARNIE_LISTEN_PORT"]),
                  keys["FILES_DIRECTORY"], extra_env,
                  name="arnie%d" % (len(self.daemons) + 1))
        d.keys = keys
        self.daemons.append(d)
        self.addCleanup(d.stop)
        if start:
            d.start()
        return d

    def run_arnie(self, args, extra_env=None, timeout=15):
        """Run arnie to completion (e.g. --check-config)."""
        if not ARNIE_BIN or not os.access(ARNIE_BIN, os.X_OK):
            raise AssertionError("ARNIE_BIN (%r) is not an executable" %
                                 ARNIE_BIN)
        return subprocess.run([ARNIE_BIN] + list(args), capture_output=True,
                              text=True, timeout=timeout, cwd=self.tmp,
                              env=clean_env(extra_env),
                              stdin=subprocess.DEVNULL)

    def deferred_once(self, test_id):
        """An upstream that greylists slow@example.org once, an arnie
        whose next attempt would come 300 s later, and test_id sent to
        that recipient and deferred: (upstream, daemon, spool ID)."""
        up = self.upstream()
        up.script_rcpt("slow@example.org", ["451 4.7.1 Greylisted"])
        d = self.arnie(up.port, RETRY_DELAY_SECONDS=300,
                       RETRY_MAX_DELAY_SECONDS=600)
        code, _ = smtp_send(d.port, "app@example.com", ["slow@example.org"],
                            make_message(test_id))
        self.assertEqual(code, 250)
        wait_for(lambda: any(e.attempts == 1
                             for e in d.spool.envelopes("outbox")),
                 what="a deferral")
        return up, d, d.spool.list("outbox")[0]

    def run_queue(self, d, *args, timeout=30):
        """Run arnie-queue with daemon d's configuration, to completion."""
        if not ARNIE_QUEUE_BIN or not os.access(ARNIE_QUEUE_BIN, os.X_OK):
            raise AssertionError("ARNIE_QUEUE_BIN (%r) is not an "
                                 "executable" % ARNIE_QUEUE_BIN)
        return subprocess.run([ARNIE_QUEUE_BIN, "-c", d.env_path] +
                              list(args), capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp,
                              env=clean_env(), stdin=subprocess.DEVNULL)

    # -- assertions --

    def assertDeliveredOnce(self, up, test_id, timeout=DELIVERY_TIMEOUT):
        """test_id reaches the upstream, and exactly once."""
        wait_for(lambda: up.with_test_id(test_id), timeout=timeout,
                 what="%s at the upstream" % test_id)
        # Give a duplicate a chance to show up before counting.
        time.sleep(0.3)
        got = up.with_test_id(test_id)
        self.assertEqual(len(got), 1, "%s delivered %d times" %
                         (test_id, len(got)))
        return got[0]

    def wait_spool(self, d, folder, n, timeout=DELIVERY_TIMEOUT):
        return wait_for(lambda: d.spool.count(folder) >= n and
                        d.spool.list(folder), timeout=timeout,
                        what="%d file(s) in %s/" % (n, folder))


def main():
    unittest.main(verbosity=2)
