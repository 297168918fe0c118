"""End to end: a private real Sendmail -> arnie-milter -> fake upstream.

Sendmail is not installed for this test: Debian's packages (sendmail-bin,
sendmail-base, sendmail-cf, libwrap0) are fetched with `apt-get download`
and unpacked with `dpkg -x` into a work directory; nothing is installed and
the host's /etc is not changed.  Without the packages (no network, no
apt-get) the test is skipped (77) and says why.

The work directory is made in the build tree, not in /tmp: Sendmail refuses
files (the milter socket, host status) under a world-writable directory,
and /tmp is one.  How Sendmail is run from there:
  - the binary loses its setgid bit, or the loader would ignore
    LD_LIBRARY_PATH (which finds the unpacked libwrap);
  - every Sendmail process runs in a UTS namespace whose host name is
    mta.test: with an unqualified host name Sendmail sleeps 60 s at start;
  - Sendmail logs only through syslog(3): syslog_to_file.c, built here with
    cc and preloaded, appends its lines to a file;
  - no DNS: a hosts file and a service switch of the test's own;
  - command-line runs happen in a mount namespace where /etc is an overlay
    whose /etc/mail holds this test's sendmail.cf and submit.cf, so that
    `sendmail`, `sendmail -Am` and `sendmail -C /etc/mail/sendmail.cf`
    choose their configuration as on a real host.

Started here, all on 127.0.0.1 with free ports, stopped by PID in a finally
block: an aiosmtpd upstream (what Arnie relays); an aiosmtpd sink as
Sendmail's SMART_HOST (what Sendmail delivers itself); arnie-milter, divert
mode; the Sendmail daemon (`-bD`: in the foreground, so its PID is ours)
with the INPUT_MAIL_FILTER line of docs/sendmail.md.  The MSP config
(submit.mc) relays to that daemon.

Checked, each as docs/sendmail.md states it:
  1. SMTP mail reaches the upstream through Arnie with every recipient,
     Bcc included; Sendmail passes the Bcc: field to the milter and Arnie
     drops it; the other fields arrive byte for byte after Arnie's
     Received:; Sendmail logs the milter's discard and delivers nothing;
     masquerading and the genericstable of sendmail.mc are not applied
     to Arnie's copy.
  2. Command-line mail (`sendmail -t`, through submit.cf) reaches Arnie
     over SMTP from 127.0.0.1, masqueraded by submit.mc (header, not
     envelope), its Bcc: field already removed by the MSP; Arnie logs the
     daemon's queue ID, not the MSP's; `mailq` and `mailq -Ac` stay empty.
  3. `sendmail -Am -bs` is filtered, with no client address (Arnie's
     Received: says "local submission", its log client=0); plain
     `sendmail -bs` is the MSP's and reaches Arnie from 127.0.0.1.
  4. Not filtered, delivered by Sendmail itself, masqueraded and
     generics-mapped, Bcc: addresses removed: `sendmail -Am`, `sendmail -C
     /etc/mail/sendmail.cf`, `sendmail` on a host without submit.cf, and
     mail already in Sendmail's queue (`sendmail -Am -odq`, then a queue
     run).
  5. With confMAX_MESSAGE_SIZE above Arnie's MAX_MESSAGE_SIZE, a message
     between the two gets Arnie's 552 5.3.4; one above both, Sendmail's
     own 552, without reaching Arnie; EHLO announces Sendmail's limit.
  6. arnie-milter down (F=T): SMTP clients get 451 4.3.2 at MAIL;
     command-line mail waits in the client queue (`mailq -Ac`) and
     `sendmail -Ac -q` sends it through Arnie once it is back.  Meanwhile,
     without an F= flag Sendmail delivers by itself, and F=R refuses the
     session at its greeting.
  7. A unix socket (S=local:) in a world-writable, sticky or group-writable
     directory, or below a world-writable one: the daemon exits 71 and says
     why; in a 0755 directory it works (Sendmail as root, the socket mode
     0660).

Seen with Sendmail 8.17.1.9: the milter gets neither the Received: field
Sendmail prepends nor a Message-Id: or Date: (Sendmail adds those when it
delivers), so Arnie adds Message-ID, Date (and From) to SMTP mail that
lacks them; the MSP adds its own Received:, Date: and Message-Id:, which
do reach Arnie; {i} (Sendmail's queue ID) arrives with smfi_setsymlist, as
asked; for `sendmail -Am -bs`, {client_addr} is "0" (Arnie logs client=0);
for mail sent without -t, Sendmail's own delivery leaves an empty Bcc:
field.
"""

import glob
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import milterlib  # noqa: E402
from milterlib import find, same_bytes, write_smtp_data  # noqa: E402

PACKAGES = ("sendmail-bin", "sendmail-base", "sendmail-cf", "libwrap0")
MTA_HOST = "mta.test"   # Sendmail's host name ($j)
HOST = "arnie.test"     # ARNIE_HOSTNAME
HELO = "client.test"    # what swaks says
# The deliberately wrong pair of step 5: Sendmail takes more than Arnie.
MAX_SIZE = 50000
SENDMAIL_MAX_SIZE = 100000

# Sender fields that sendmail.mc rewrites when Sendmail delivers: From by
# MASQUERADE_AS, Reply-To by the genericstable.  Message-ID and Date are
# there, so that Arnie's only change is the Bcc: field it drops.
SMTP_MESSAGE = (
    b"From: App <app@mta.test>\r\n"
    b"Reply-To: gen@mta.test\r\n"
    b"To: r1@example.org\r\n"
    b"Bcc: hidden@example.com\r\n"
    b"Message-ID: <sendmail-e2e@example.com>\r\n"
    b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
    b"Subject: through Sendmail\r\n"
    b"X-Tight:tight\r\n"
    b"X-Folded: first\r\n\tsecond\r\n"
    b"\r\n"
    b"Hello through Sendmail.\r\n"
    b".a line that starts with a dot\r\n")
BCC_LINE = b"Bcc: hidden@example.com\r\n"

# For the command line (LF line ends, as applications write them).
LOCAL_MESSAGE = (
    b"From: Local <app@mta.test>\n"
    b"Reply-To: gen@mta.test\n"
    b"To: t1@example.org\n"
    b"Bcc: hidden2@example.com\n"
    b"Subject: via submit.cf\n"
    b"\n"
    b"Injected locally.\n")

# Mail that Sendmail delivers itself, without any milter (step 4).
BYPASS_MESSAGE = (
    b"From: App <app@mta.test>\n"
    b"Reply-To: gen@mta.test\n"
    b"Bcc: b@example.org\n"
    b"Subject: not filtered\n"
    b"\n"
    b"Delivered by Sendmail.\n")


class Skip(Exception):
    """The test cannot run here (printed, exit 77)."""


def unpack_sendmail(work):
    """Debian's Sendmail unpacked under work/root; its root directory."""
    debs = os.path.join(work, "debs")
    os.makedirs(debs)
    try:
        p = subprocess.run(["apt-get", "download"] + list(PACKAGES),
                           cwd=debs, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Skip("apt-get download %s: %s" % (" ".join(PACKAGES), e))
    if p.returncode != 0:
        raise Skip("apt-get download %s failed (network?):\n%s" % (
            " ".join(PACKAGES), p.stdout.decode(errors="replace")))
    root = os.path.join(work, "root")
    for deb in sorted(os.listdir(debs)):
        subprocess.run(["dpkg", "-x", os.path.join(debs, deb), root],
                       check=True, timeout=60)
    binary = os.path.join(root, "usr/libexec/sendmail/sendmail")
    # A setgid binary makes the loader ignore LD_LIBRARY_PATH.
    os.chmod(binary, os.stat(binary).st_mode & ~stat.S_ISGID)
    return root


def unsafe_dir(top):
    """The first folder from top up to / that is group- or world-writable,
    or None."""
    d = top
    while True:
        if os.stat(d).st_mode & 0o022:
            return d
        if d == "/":
            return None
        d = os.path.dirname(d)


def safe_workdir():
    """A work directory in the build tree (where ARNIE_MILTER_BIN is), or,
    when that tree lies below a world-writable folder (a checkout in /tmp),
    in /var/cache (root's, 0755): Sendmail refuses paths through a
    world-writable directory."""
    top = os.path.dirname(os.path.dirname(milterlib.binary()))
    if unsafe_dir(top) is not None:
        top = "/var/cache"
        if unsafe_dir(top) is not None:
            raise Skip("no folder Sendmail accepts for the test's files: "
                       "%s is group- or world-writable" % unsafe_dir(top))
    work = tempfile.mkdtemp(prefix="sendmail-e2e.", dir=top)
    # The MSP runs as user mail and must reach its files.
    os.chmod(work, 0o755)
    return work


def build_shim(work):
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "syslog_to_file.c")
    out = os.path.join(work, "syslog_to_file.so")
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", out, src],
                   check=True, timeout=60)
    return out


def mc_common(root, work):
    """The lines of both .mc files that keep Sendmail inside work."""
    return [
        "divert(-1)dnl",
        # This order: the other one gives a garbage V line.
        "include(`%s/usr/share/sendmail/cf/m4/cf.m4')dnl" % root,
        "include(`%s/usr/share/sendmail/cf/debian/autoconf.m4')dnl" % root,
        "OSTYPE(`debian')dnl",
        "define(`MAIL_SETTINGS_DIR', `%s/')dnl" % work,
        "define(`confHOSTS_FILE', `%s/hosts')dnl" % work,
        "define(`confSERVICE_SWITCH_FILE', `%s/service.switch')dnl" % work,
        "define(`confBIND_OPTS', `-DNSRCH -DEFNAMES')dnl",
        "define(`confDONT_PROBE_INTERFACES', `True')dnl",
        "undefine(`confHOST_STATUS_DIRECTORY')dnl",
        "define(`confDEAD_LETTER_DROP', `%s/dead.letter')dnl" % work,
        "define(`HELP_FILE', `%s/etc/mail/helpfile')dnl" % root,
        "FEATURE(`nocanonify')dnl",
        "FEATURE(`accept_unresolvable_domains')dnl",
    ]


def mta_mc(root, work, port, sink_port, filter_sock, flags="F=T, ",
           max_size=SENDMAIL_MAX_SIZE):
    """The daemon's sendmail.mc: the filter line of docs/sendmail.md (with
    other flags: what the doc warns against)."""
    return mc_common(root, work) + [
        "define(`QUEUE_DIR', `%s/mqueue')dnl" % work,
        "define(`STATUS_FILE', `%s/sendmail.st')dnl" % work,
        "define(`confPID_FILE', `%s/sendmail.pid')dnl" % work,
        "define(`ALIAS_FILE', `%s/aliases')dnl" % work,
        "define(`confMAX_MESSAGE_SIZE', `%d')dnl" % max_size,
        "define(`SMART_HOST', `[127.0.0.1]')dnl",
        "define(`RELAY_MAILER_ARGS', `TCP $h %d')dnl" % sink_port,
        "define(`ESMTP_MAILER_ARGS', `TCP $h %d')dnl" % sink_port,
        "FEATURE(`no_default_msa')dnl",
        # Applied when Sendmail delivers, after Arnie took its copy.
        "MASQUERADE_AS(`masq.test')dnl",
        "FEATURE(`genericstable', `hash %s/generics')dnl" % work,
        "GENERICS_DOMAIN(`%s')dnl" % MTA_HOST,
        "DAEMON_OPTIONS(`Port=%d, Addr=127.0.0.1, Name=MTA')dnl" % port,
        "INPUT_MAIL_FILTER(`arnie', `S=%s, %sT=S:30s;R:2m;E:5m')dnl"
        % (filter_sock, flags),
        "MAILER(`local')dnl",
        "MAILER(`smtp')dnl",
    ]


def submit_mc(root, work, mta_port):
    """submit.mc, as Debian's, relaying to the daemon's port; masquerading
    here happens before the MTA, and so before Arnie."""
    return mc_common(root, work) + [
        "define(`confCF_VERSION', `Submit')dnl",
        "define(`MSP_QUEUE_DIR', `%s/clientmqueue')dnl" % work,
        "define(`STATUS_FILE', `%s/clientmqueue/sendmail.st')dnl" % work,
        # The MSP refuses to run as root; Debian's smmsp does not exist.
        "define(`confRUN_AS_USER', `mail:mail')dnl",
        # FEATURE(msp) takes no port: the relay mailer's arguments do.
        "define(`RELAY_MAILER_ARGS', `TCP $h %d')dnl" % mta_port,
        "MASQUERADE_AS(`msp.test')dnl",
        "FEATURE(`msp', `[127.0.0.1]')dnl",
    ]


class Sendmail:
    """The unpacked Sendmail, its configurations and its log."""

    def __init__(self, root, work, shim):
        self.root = root
        self.work = work
        self.binary = os.path.join(root, "usr/libexec/sendmail/sendmail")
        self.maillog = os.path.join(work, "maillog")
        self.etc_upper = os.path.join(work, "etc", "upper")
        self.etc_mail = os.path.join(self.etc_upper, "mail")
        os.makedirs(self.etc_mail)
        os.makedirs(os.path.join(work, "etc", "work"))
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            # The unpacked libwrap.so.0 (in usr/lib/<multiarch>/).
            "LD_LIBRARY_PATH": os.path.dirname(
                glob.glob(os.path.join(root, "usr/lib/*/libwrap.so.0"))[0]),
            "LD_PRELOAD": shim,
            "SYSLOG_TO_FILE": self.maillog,
        }
        # Written by processes running as user mail too.
        with open(self.maillog, "w"):
            pass
        os.chmod(self.maillog, 0o666)
        with open(os.path.join(work, "hosts"), "w") as f:
            f.write("127.0.0.1 localhost %s\n" % MTA_HOST)
        with open(os.path.join(work, "service.switch"), "w") as f:
            f.write("hosts files\naliases files\n")
        with open(os.path.join(work, "aliases"), "w"):
            pass
        os.mkdir(os.path.join(work, "mqueue"), 0o700)
        cq = os.path.join(work, "clientmqueue")
        os.mkdir(cq)
        shutil.chown(cq, "mail", "mail")
        os.chmod(cq, 0o770)
        self.daemon = None

    def make_cf(self, name, lines):
        """Write name.mc, m4 it into name.cf; returns the .cf path."""
        mc = os.path.join(self.work, name + ".mc")
        with open(mc, "w") as f:
            f.write("\n".join(lines) + "\n")
        cf = os.path.join(self.work, name + ".cf")
        with open(cf, "wb") as f:
            subprocess.run(["m4", mc], stdout=f, check=True, timeout=30)
        return cf

    def makemap(self, cf, name, lines):
        """A hash map work/name.db from lines ("key\tvalue\n")."""
        subprocess.run(
            [os.path.join(self.root, "usr/libexec/sendmail/makemap"), "-C",
             cf, "hash", os.path.join(self.work, name)],
            input="".join(lines).encode(), env=self.env, check=True,
            timeout=30)

    def install(self, sendmail_cf, submit_cf=None):
        """What the command-line runs find in /etc/mail."""
        for name in ("sendmail.cf", "submit.cf"):
            path = os.path.join(self.etc_mail, name)
            if os.path.exists(path):
                os.unlink(path)
        shutil.copy(sendmail_cf, os.path.join(self.etc_mail, "sendmail.cf"))
        if submit_cf is not None:
            shutil.copy(submit_cf, os.path.join(self.etc_mail, "submit.cf"))

    def argv(self, args, etc=False, binary=None):
        """args run as Sendmail with host name mta.test; etc: with
        install()'s /etc/mail."""
        script = "hostname %s" % MTA_HOST
        if etc:
            script += (' && mount -t overlay overlay -o "lowerdir=/etc,'
                       'upperdir=%s,workdir=%s" /etc' % (
                           self.etc_upper,
                           os.path.join(self.work, "etc", "work")))
        return (["unshare", "--uts"] +
                (["-m", "--propagation", "private"] if etc else []) +
                ["--", "sh", "-c", script + ' && exec "$@"', "sh",
                 binary or self.binary] + list(args))

    def run(self, args, input=None, etc=True, binary=None, check=True,
            timeout=60):
        p = subprocess.run(self.argv(args, etc, binary), input=input,
                           env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout)
        out = p.stdout.decode(errors="replace")
        if check and p.returncode != 0:
            raise AssertionError("sendmail %s exited %d:\n%s\n--- log:\n%s"
                                 % (" ".join(args), p.returncode, out,
                                    self.log()))
        return p.returncode, out

    def mailq(self, *args):
        """mailq (the symlink to sendmail) with args, under /etc/mail."""
        return self.run(args, binary=os.path.join(
            self.root, "usr/libexec/sendmail/mailq"))[1]

    def start(self, cf, port):
        self.daemon = subprocess.Popen(self.argv(["-C", cf, "-bD"]),
                                       env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)

        def up():
            if self.daemon.poll() is not None:
                raise AssertionError("sendmail -bD exited %d: %s\n%s" % (
                    self.daemon.returncode,
                    self.daemon.stdout.read().decode(errors="replace"),
                    self.log()))
            return milterlib.port_open(port)
        milterlib.await_cond(up, 20, "Sendmail to listen")

    def stop(self):
        if self.daemon is None or self.daemon.poll() is not None:
            return
        self.daemon.terminate()
        try:
            self.daemon.wait(15)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()

    def log(self):
        with open(self.maillog, errors="replace") as f:
            return f.read()


def smtp_session(sm, args, sender, rcpt, data):
    """One message in an SMTP session on Sendmail's standard input (-bs),
    a command at a time (Sendmail refuses a client that talks before its
    turn), up to the first refusal; returns the replies, the greeting
    first and the answer to QUIT last."""
    p = subprocess.Popen(sm.argv(args, etc=True), env=sm.env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    # The replies are read without a timeout of their own.
    timer = threading.Timer(30, p.kill)
    timer.start()
    replies = []

    def say(text):
        if text is not None:
            p.stdin.write(text)
            p.stdin.flush()
        lines = []
        while True:
            line = p.stdout.readline().decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                replies.append("".join(lines))
                return line[:1] in ("2", "3")
    try:
        steps = [None, b"EHLO app.test\r\n", b"MAIL FROM:<%s>\r\n" % (
            sender.encode()), b"RCPT TO:<%s>\r\n" % rcpt.encode(),
            b"DATA\r\n", re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"]
        for step in steps:
            if not say(step):
                break
        say(b"QUIT\r\n")
        assert p.wait(30) == 0, replies
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    return replies


def mta_qid(milter, copy):
    """The Sendmail queue ID ({i}) Arnie logged for copy, a spooled
    message."""
    qid = re.search(r"%s: milter queue_id=(\S+) " % copy["id"], milter.log())
    assert qid is not None and qid.group(1) != "unknown", milter.log()
    return qid.group(1)


def received(milter, copy, rcpt=None, helo=HELO):
    """The Received: field Arnie must have prepended to copy (a spooled
    message); helo None: a session without a client address."""
    return milterlib.received_line(
        copy["id"].encode(), HOST.encode(), mta_qid(milter, copy).encode(),
        rcpt.encode() if rcpt else None,
        helo.encode() if helo else None,
        b"localhost" if helo else None, b"127.0.0.1")


def through_arnie(milter, upstream, sender, rcpts):
    """sender's message, relayed by Arnie: (as relayed, as spooled)."""
    got = milterlib.await_cond(lambda: find(upstream.snapshot(), sender),
                               30, "%s's message upstream" % sender)
    assert len(got) == 1 and sorted(got[0]["rcpts"]) == sorted(rcpts), got
    return got[0], same_bytes(milter, got[0])


def by_sendmail(sink, sender, rcpt):
    """sender's message, delivered by Sendmail itself to its smart host."""
    got = milterlib.await_cond(lambda: find(sink.snapshot(), sender), 30,
                               "Sendmail's delivery of %s's message" % sender)
    assert len(got) == 1 and got[0]["rcpts"] == [rcpt], got
    return got[0]["data"]


def check_smtp(sm, milter, upstream, work, port):
    """1. SMTP, divert mode: everything through Arnie."""
    path = os.path.join(work, "smtp.eml")
    write_smtp_data(path, SMTP_MESSAGE)
    rcpts = ["r1@example.org", "hidden@example.com"]
    milterlib.swaks(port, "app@mta.test", rcpts, path, HELO)
    got, copy = through_arnie(milter, upstream, "app@mta.test", rcpts)
    rest = milterlib.split_received(got["data"], received(milter, copy),
                                    milter.started_at)
    # Untouched but for the Bcc: field, which Sendmail did pass: From and
    # Reply-To as sent (no masquerading, no genericstable).
    assert rest == SMTP_MESSAGE.replace(BCC_LINE, b""), got["data"]
    assert "%s: header fixed: dropped Bcc" % copy["id"] in milter.log(), \
        milter.log()
    qid = mta_qid(milter, copy)
    log = sm.log()
    assert re.search(r"%s: Milter: data, discard\n.*%s: discarded\n" % (
        qid, qid), log), log


def check_command_line(sm, milter, upstream):
    """2. `sendmail -t` through submit.cf: SMTP from 127.0.0.1."""
    sm.run(["-t"], input=LOCAL_MESSAGE)
    got, copy = through_arnie(milter, upstream, "root@mta.test",
                              ["t1@example.org", "hidden2@example.com"])
    assert re.search(r" %s: milter queue_id=\S+ client=127\.0\.0\.1 "
                     r"from=<root@mta\.test> nrcpt=2 " % copy["id"],
                     milter.log()), milter.log()
    rest = milterlib.split_received(
        got["data"], received(milter, copy, helo=MTA_HOST),
        milter.started_at)
    # The MSP's Received:, Date: and Message-Id:, then the message with
    # submit.mc's masquerading applied and without the Bcc: field.
    assert re.fullmatch(
        rb"Received: \(from root@localhost\)\r\n"
        rb"\tby mta\.test \([^)]*/Submit\) id \w+;\r\n\t[^\r\n]+\r\n"
        rb"Date: [^\r\n]+\r\nMessage-Id: <[^>\r\n]+@mta\.test>\r\n"
        rb"From: Local <app@msp\.test>\r\nReply-To: gen@msp\.test\r\n"
        rb"To: t1@example\.org\r\nSubject: via submit\.cf\r\n\r\n"
        rb"Injected locally\.\r\n", rest), got["data"]
    # Nothing for Arnie to fix: the MSP removed Bcc and added the rest.
    assert " %s: header fixed" % copy["id"] not in milter.log()
    # Two queue IDs: the MSP's, then the daemon's, which Arnie logs.
    msp_qid = re.search(rb"/Submit\) id (\w+);", rest).group(1).decode()
    qid = mta_qid(milter, copy)
    assert msp_qid != qid
    assert re.search(r"%s: to=.* stat=Sent \(%s Message accepted" % (
        msp_qid, qid), sm.log()), sm.log()
    assert "%s: Milter: data, discard\n" % qid in sm.log(), sm.log()
    assert "is empty" in sm.mailq(), sm.mailq()
    assert "is empty" in sm.mailq("-Ac"), sm.mailq("-Ac")


def check_bs(sm, milter, upstream):
    """3. `sendmail -Am -bs`: filtered, no client address; plain
    `sendmail -bs` is the MSP's, and comes from 127.0.0.1."""
    replies = smtp_session(
        sm, ["-Am", "-bs"], "bs@mta.test", "bs@example.org",
        b"Subject: via -bs\r\nMessage-ID: <bs@example.com>\r\n"
        b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
        b"From: bs@mta.test\r\n\r\nNo address.\r\n")
    assert replies[-2].startswith("250 2.0.0 "), replies
    got, copy = through_arnie(milter, upstream, "bs@mta.test",
                              ["bs@example.org"])
    rest = milterlib.split_received(
        got["data"], received(milter, copy, "bs@example.org", helo=None),
        milter.started_at)
    assert rest.startswith(b"Subject: via -bs\r\n"), got["data"]
    # Sendmail's {client_addr} for such a session.
    assert re.search(r" %s: milter queue_id=\S+ client=0 from=<bs@mta\.test> "
                     % copy["id"], milter.log()), milter.log()
    replies = smtp_session(sm, ["-bs"], "msp@mta.test", "msp@example.org",
                           b"Subject: via the MSP's -bs\r\n\r\nHello.\r\n")
    assert "/Submit;" in replies[0], replies
    _, copy = through_arnie(milter, upstream, "msp@mta.test",
                            ["msp@example.org"])
    assert re.search(r" %s: milter queue_id=\S+ client=127\.0\.0\.1 " %
                     copy["id"], milter.log()), milter.log()


def check_bypasses(sm, milter, sink, cf, submit_cf):
    """4. What Sendmail delivers without calling any milter."""
    runs = [
        ("am@mta.test", ["-Am", "-odi"]),
        ("cf@mta.test", ["-C", "/etc/mail/sendmail.cf", "-odi"]),
        ("nosubmit@mta.test", ["-odi"]),
    ]
    for sender, args in runs:
        sm.install(cf, None if sender == "nosubmit@mta.test" else submit_cf)
        sm.run(args + ["-f", sender, "x@example.org"], input=BYPASS_MESSAGE)
    # Already in Sendmail's queue: a queue run delivers it.
    sm.install(cf, submit_cf)
    sm.run(["-Am", "-odq", "-f", "queued@mta.test", "x@example.org"],
           input=BYPASS_MESSAGE)
    sm.run(["-Am", "-q"])
    for sender in [s for s, _ in runs] + ["queued@mta.test"]:
        data = by_sendmail(sink, sender, "x@example.org")
        # sendmail.mc's masquerading and genericstable, at delivery.
        assert b"\r\nFrom: App <app@masq.test>\r\n" in data, data
        assert b"\r\nReply-To: generic@generic.test\r\n" in data, data
        # Sendmail deletes the Bcc: addresses when it delivers (an empty
        # "Bcc:" stays, seen with 8.17 for mail sent without -t).
        assert b"b@example.org" not in data, data
        assert b"\r\nBcc:\r\n" in data, data
        assert "<%s>" % sender not in milter.log(), milter.log()


def check_sizes(sm, milter, upstream, work, port, mta_args):
    """5. Between Arnie's limit and Sendmail's: Arnie's 552; above both:
    Sendmail's own, and Arnie never sees it.  Equal limits are not enough:
    Sendmail counts a line end as one octet, Arnie as two (CRLF)."""
    for sender, size, reply in [
            ("mid@mta.test", 70000,
             r"552 5\.3\.4 Arnie: message size exceeds fixed maximum "
             r"message size"),
            ("huge@mta.test", 150000,
             r"552 5\.2\.3 Message exceeds maximum fixed size \(%d\)" %
             SENDMAIL_MAX_SIZE)]:
        path = os.path.join(work, sender + ".eml")
        write_smtp_data(path, b"Subject: big\r\n\r\n" +
                        (b"x" * 78 + b"\r\n") * (size // 80))
        rc, out = milterlib.swaks(port, sender, ["big@example.org"], path,
                                  HELO, expect_ok=False)
        assert rc != 0 and re.search(r"<\*\* +" + reply, out), out
        assert "<-  250-SIZE %d\n" % SENDMAIL_MAX_SIZE in out, out
        assert find(upstream.snapshot(), sender) == []
    log = milter.log()
    assert "from=<mid@mta.test>: message larger than MAX_MESSAGE_SIZE=%d" % (
        MAX_SIZE) in log, log
    assert "<huge@mta.test>" not in log, log
    # 628 lines of 80 octets with CRLF, 79 with LF: over 50000 for Arnie,
    # under it for Sendmail, whose limit is Arnie's here.
    data = b"Subject: equal\r\n\r\n" + (b"x" * 78 + b"\r\n") * 628
    cf = sm.make_cf("equal", mta_mc(
        *mta_args, filter_sock="inet:%d@127.0.0.1" % milter.port,
        max_size=MAX_SIZE))
    replies = smtp_session(sm, ["-C", cf, "-bs"], "equal@mta.test",
                           "big@example.org", data)
    assert replies[-2].startswith("552 5.3.4 Arnie: message size "), replies
    lf_size = len(data) - data.count(b"\r\n")
    assert lf_size < MAX_SIZE < len(data)
    assert re.search(r"from=<equal@mta\.test>, size=%d, " % lf_size,
                     sm.log()), sm.log()


def check_down(sm, milter, upstream, sink, work, port, mta_args):
    """6. arnie-milter stopped, then back; while it is down, what other
    F= flags would do (through -bs sessions, with their own configs)."""
    assert milter.stop() == 0, "arnie-milter did not exit 0"
    path = os.path.join(work, "down.eml")
    write_smtp_data(path, SMTP_MESSAGE)
    rc, out = milterlib.swaks(port, "down@mta.test", ["d@example.org"], path,
                              HELO, expect_ok=False)
    assert rc != 0 and re.search(r"<\*\* +451 4\.3\.2 ", out), out
    assert re.search(r"MAIL FROM:<down@mta\.test>\n<\*\* +451", out), out
    sm.run(["-f", "wait@mta.test", "w@example.org"],
           input=b"Subject: wait\n\nwaiting for Arnie\n")
    queue = sm.mailq("-Ac")
    assert "wait@mta.test" in queue and "451 4.3.2" in queue, queue
    sock = "inet:%d@127.0.0.1" % milter.port
    # No F= flag: the filter is skipped and Sendmail delivers by itself.
    cf = sm.make_cf("noflag", mta_mc(*mta_args, filter_sock=sock, flags=""))
    replies = smtp_session(sm, ["-C", cf, "-bs", "-odi"], "noflag@mta.test",
                           "n@example.org", b"Subject: no flag\r\n\r\nx\r\n")
    assert replies[-2].startswith("250 2.0.0 "), replies
    by_sendmail(sink, "noflag@mta.test", "n@example.org")
    # F=R: the session is refused from its greeting on.
    cf = sm.make_cf("reject", mta_mc(*mta_args, filter_sock=sock,
                                     flags="F=R, "))
    replies = smtp_session(sm, ["-C", cf, "-bs"], "reject@mta.test",
                           "r@example.org", b"Subject: F=R\r\n\r\nx\r\n")
    assert len(replies) == 2 and replies[0].startswith(
        "554 mta.test ESMTP not accepting messages"), replies
    milter.start()
    sm.run(["-Ac", "-q"])
    got, copy = through_arnie(milter, upstream, "wait@mta.test",
                              ["w@example.org"])
    assert got["data"].endswith(b"\r\n\r\nwaiting for Arnie\r\n"), got
    assert "is empty" in sm.mailq("-Ac"), sm.mailq("-Ac")
    assert find(upstream.snapshot(), "down@mta.test") == []


def check_unix(sm, milter, work, upstream, mta_args):
    """7. S=local: refused in unsafe directories (a socket file there, as
    a running arnie-milter would leave), working in a safe one (milter's,
    0755)."""
    for mode, why, inner in [(0o777, "World writable directory", False),
                             (0o1777, "World writable directory", False),
                             (0o770, "Group writable directory", False),
                             (0o777, "World writable directory", True)]:
        d = os.path.join(work, "sock%o%s" % (mode, "-inner" * inner))
        os.mkdir(d)
        os.chmod(d, mode)
        if inner:
            # A safe directory below an unsafe one is no better.
            d = os.path.join(d, "safe")
            os.mkdir(d, 0o755)
        sock = os.path.join(d, "milter.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(sock)
        s.close()
        cf = sm.make_cf("unsafe%o%s" % (mode, "-inner" * inner),
                        mta_mc(*mta_args, filter_sock="local:" + sock))
        rc, out = sm.run(["-C", cf, "-bD"], etc=False, check=False,
                         timeout=20)
        assert rc == 71, (rc, out)
        assert "Xarnie: local socket name %s unsafe: %s" % (sock, why) \
            in out, out
    assert stat.S_IMODE(os.stat(milter.path).st_mode) == 0o660
    cf = sm.make_cf("unix", mta_mc(*mta_args,
                                   filter_sock="local:" + milter.path))
    replies = smtp_session(sm, ["-C", cf, "-bs"], "unix@mta.test",
                           "unix@example.org",
                           b"Subject: via a unix socket\r\n\r\nHello.\r\n")
    assert replies[-2].startswith("250 2.0.0 "), replies
    _, copy = through_arnie(milter, upstream, "unix@mta.test",
                            ["unix@example.org"])
    # Sendmail passed no Date, Message-Id or From of its own.
    assert "%s: header fixed: added Message-ID, Date, From" % copy["id"] \
        in milter.log(), milter.log()


def main():
    milterlib.binary()
    milterlib.require("swaks", "m4", "cc", "unshare", "dpkg", "apt-get")
    milterlib.cleanup_on_sigterm()
    if os.geteuid() != 0:
        # Namespaces, an overlay on /etc, a daemon as root.
        print("SKIP: a private Sendmail needs root")
        return 1 if os.environ.get("CI") else 77
    t0 = time.monotonic()
    try:
        work = safe_workdir()
    except Skip as e:
        print("SKIP: %s" % e)
        return 77
    upstream = sink = milter = unix_milter = sm = None
    ok = False
    try:
        try:
            root = unpack_sendmail(work)
        except Skip as e:
            print("SKIP: %s" % e)
            ok = True
            return 77
        sm = Sendmail(root, work, build_shim(work))
        upstream = milterlib.Upstream()
        sink = milterlib.Upstream()
        arnie_dir = os.path.join(work, "arnie")
        os.mkdir(arnie_dir, 0o755)
        milter = milterlib.Milter(
            arnie_dir, OUTBOUND_EMAIL_HOST_PORT=upstream.port,
            SAVE_SENT_MAIL="true", ARNIE_HOSTNAME=HOST,
            MAX_MESSAGE_SIZE=MAX_SIZE).start()
        unix_dir = os.path.join(work, "unix")
        os.mkdir(unix_dir, 0o755)
        unix_milter = milterlib.Milter(
            unix_dir, unix=True, OUTBOUND_EMAIL_HOST_PORT=upstream.port,
            SAVE_SENT_MAIL="true", ARNIE_HOSTNAME=HOST).start()
        port = milterlib.free_port()
        mta_args = (root, work, port, sink.port)
        cf = sm.make_cf("sendmail", mta_mc(
            *mta_args, filter_sock="inet:%d@127.0.0.1" % milter.port))
        submit_cf = sm.make_cf("submit", submit_mc(root, work, port))
        sm.makemap(cf, "generics", ["gen@mta.test\tgeneric@generic.test\n"])
        sm.install(cf, submit_cf)
        sm.start(cf, port)
        t_up = time.monotonic()

        check_smtp(sm, milter, upstream, work, port)
        check_command_line(sm, milter, upstream)
        check_bs(sm, milter, upstream)
        check_bypasses(sm, milter, sink, cf, submit_cf)
        check_sizes(sm, milter, upstream, work, port, mta_args)
        # Divert mode: Sendmail delivered only the step 4 messages itself.
        assert sorted(m["from"] for m in sink.snapshot()) == [
            "am@mta.test", "cf@mta.test", "nosubmit@mta.test",
            "queued@mta.test"], sink.snapshot()
        check_down(sm, milter, upstream, sink, work, port, mta_args)
        check_unix(sm, unix_milter, work, upstream, mta_args)
        assert sink.count() == 5, sink.snapshot()
        t_end = time.monotonic()
        ok = True
        print("PASS: sendmail end to end (%.1f s in all, %.1f s after "
              "start-up)" % (t_end - t0, t_end - t_up))
    finally:
        milterlib.tear_down(ok, work, sm, "Sendmail log",
                            (milter, unix_milter), (upstream, sink))
    return 0


if __name__ == "__main__":
    sys.exit(main())
