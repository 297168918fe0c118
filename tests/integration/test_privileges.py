"""Started as root, arnie becomes ARNIE_USER once it has bound its port:
every process it runs has that user's uid and gids, and so has every file
it writes; an unknown user is a configuration error (78) naming
ARNIE_USER; a spool that belongs to someone else is refused (77) with the
command that fixes it; ARNIE_USER=root keeps root with one warning; started
as another user, nothing changes.  The user here is Debian's "nobody"."""

import os
import pwd
import signal
import socket

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, wait_for

EX_NOPERM = 77
EX_CONFIG = 78


def privileged_port():
    """A free port below 1024, which only root may bind."""
    for port in range(1023, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below 1024")


def ids_of(pid):
    """(real, effective, saved uids), (gids), [supplementary groups]."""
    uids = gids = groups = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key == "Uid":
                uids = [int(v) for v in value.split()[:3]]
            elif key == "Gid":
                gids = [int(v) for v in value.split()[:3]]
            elif key == "Groups":
                groups = [int(v) for v in value.split()]
    return uids, gids, groups


class PrivilegeTest(ArnieTestCase):

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            if os.environ.get("CI"):
                self.fail("needs root, which CI has")  # no silent skip
            self.skipTest("needs root")
        self.nobody = pwd.getpwnam("nobody")
        # nobody must reach FILES_DIRECTORY, and own it.
        os.chmod(self.tmp, 0o755)
        os.chown(self.files_dir, self.nobody.pw_uid, self.nobody.pw_gid)

    def start_failing(self, **keys):
        d = self.arnie(arnietest.free_port(), start=False, **keys)
        d.start(wait=False)
        d.proc.wait(timeout=20)
        return d.proc.returncode, d.log_text()

    def test_root_becomes_arnie_user_after_binding(self):
        up = self.upstream()
        log = os.path.join(self.files_dir, "arnie.log")
        port = privileged_port()
        d = self.arnie(up.port, ARNIE_USER="nobody", ARNIE_LISTEN_PORT=port,
                       ARNIE_LOG_FILE=log)
        uid, gid = self.nobody.pw_uid, self.nobody.pw_gid
        # The port is bound before the switch; the log says when it is done.
        wait_for(lambda: os.path.exists(log) and "running as nobody" in
                 open(log).read(), what="the switch to nobody")
        uids, gids, groups = ids_of(d.pid)
        self.assertEqual(uids, [uid] * 3)
        self.assertEqual(gids, [gid] * 3)
        self.assertNotIn(0, groups)
        # Bound as root, served as nobody.
        code, _ = smtp_send(port, "app@example.com", ["user@example.org"],
                            make_message("asnobody"))
        self.assertEqual(code, 250)
        self.assertDeliveredOnce(up, "asnobody")
        spool = d.spool.root
        for folder in ("", "inbox", "outbox", "sent", "failed", "corrupt"):
            st = os.stat(os.path.join(spool, folder))
            self.assertEqual((st.st_uid, st.st_gid), (uid, gid), folder)
        # The log file it created is nobody's too, so SIGHUP can reopen it
        # after rotation.
        self.assertEqual(os.stat(log).st_uid, uid)
        with open(log) as f:
            self.assertIn("running as nobody (uid %d, gid %d)" % (uid, gid),
                          f.read())
        os.rename(log, log + ".1")
        d.signal(signal.SIGHUP)
        wait_for(lambda: os.path.exists(log), what="the reopened log file")
        self.assertEqual(os.stat(log).st_uid, uid)
        self.assertEqual(d.stop(), 0)

    def test_arnie_queue_started_as_root_acts_as_arnie_user(self):
        """Its requests are readable by the daemon, and what it writes
        itself belongs to ARNIE_USER, with or without a daemon."""
        d = self.arnie(arnietest.free_port(), ARNIE_USER="nobody")
        code, _ = smtp_send(d.port, "app@example.com", ["user@example.org"],
                            make_message("queued-as-nobody"))
        self.assertEqual(code, 250)
        wait_for(lambda: d.spool.count("outbox") == 1, what="one queued")
        msg = d.spool.list("outbox")[0]
        r = self.run_queue(d, "hold", msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(d.spool.list("hold"), [msg])
        self.assertEqual(d.stop(), 0)
        # No daemon: arnie-queue takes the lock itself, as nobody.
        r = self.run_queue(d, "release", msg)
        self.assertEqual(r.returncode, 0, r.stderr)
        uid = self.nobody.pw_uid
        for path in (d.spool.path("outbox", msg),
                     os.path.join(d.spool.root, "sender.lock"),
                     d.spool.path("control")):
            self.assertEqual(os.stat(path).st_uid, uid, path)
        self.assertEqual(os.listdir(d.spool.path("control")), [])

    def test_unknown_user_is_a_configuration_error(self):
        rc, log = self.start_failing(ARNIE_USER="no-such-arnie-user")
        self.assertEqual(rc, EX_CONFIG, log)
        self.assertIn("ARNIE_USER=no-such-arnie-user: no such user", log)

    def test_spool_of_another_user_is_refused(self):
        spool = os.path.join(self.files_dir, "arniefiles")
        os.makedirs(os.path.join(spool, "outbox"))   # root's
        rc, log = self.start_failing(ARNIE_USER="nobody")
        self.assertEqual(rc, EX_NOPERM, log)
        self.assertIn("does not belong to ARNIE_USER nobody", log)
        self.assertIn("chown -R nobody: %s" % spool, log)
        # A queued file of root's in a spool of nobody's: refused too.
        for folder in ("", "outbox"):
            os.chown(os.path.join(spool, folder), self.nobody.pw_uid,
                     self.nobody.pw_gid)
        with open(os.path.join(spool, "outbox", "queued"), "w") as f:
            f.write("x")
        rc, log = self.start_failing(ARNIE_USER="nobody")
        self.assertEqual(rc, EX_NOPERM, log)
        self.assertIn("(a file in outbox) does not belong", log)

    def test_root_stays_root_when_asked_with_one_warning(self):
        d = self.arnie(arnietest.free_port(), ARNIE_USER="root")
        wait_for(lambda: "started: listening" in d.log_text(),
                 what="the start-up line")
        self.assertEqual(ids_of(d.pid)[0], [0, 0, 0])
        self.assertEqual(d.log_text().count(
            "running as root because ARNIE_USER=root"), 1)

    def test_started_as_another_user_nothing_changes(self):
        # Started as nobody, an ARNIE_USER nobody has cannot matter.
        d = self.arnie(arnietest.free_port(), start=False,
                       ARNIE_USER="no-such-arnie-user")
        uid, gid = self.nobody.pw_uid, self.nobody.pw_gid

        def become_nobody():
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
        d.preexec = become_nobody
        os.chown(d.env_path, uid, gid)
        d.start()
        wait_for(lambda: "started: listening" in d.log_text(),
                 what="the start-up line")
        self.assertEqual(ids_of(d.pid)[0], [uid] * 3)
        self.assertNotIn("running as", d.log_text())
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    arnietest.main()
