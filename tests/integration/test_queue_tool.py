"""arnie-queue against a running daemon and without one: every verb,
its exit codes, and that acting on the queue while the daemon sends loses
and duplicates nothing."""

import json
import os
import signal
import time

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, wait_for

FROM = "app@example.com"


class QueueToolTest(ArnieTestCase):

    def send(self, d, test_id, rcpts=("user@example.org",)):
        code, _ = smtp_send(d.port, FROM, list(rcpts), make_message(test_id))
        self.assertEqual(code, 250)

    def queued_id(self, d, n=1):
        """The IDs in outbox/ once there are n."""
        wait_for(lambda: d.spool.count("outbox") == n,
                 what="%d queued" % n)
        return d.spool.list("outbox")

    def ok(self, d, *args):
        r = self.run_queue(d, *args)
        self.assertEqual(r.returncode, 0,
                         "arnie-queue %s: %s%s" % (" ".join(args), r.stdout,
                                                   r.stderr))
        return r

    # ------------------------------------------------------------ reading

    def test_list_show_stats_while_the_upstream_is_down(self):
        d = self.arnie()          # nothing listens on the upstream port
        self.send(d, "list1")
        self.send(d, "list2", rcpts=("a@example.org", "b@example.org"))
        ids = self.queued_id(d, 2)
        text = self.ok(d, "list").stdout
        for i in ids:
            self.assertIn(i, text)
        self.assertIn("<b@example.org> pending", text)
        self.assertIn("-- 2 messages", text)
        listing = json.loads(self.ok(d, "list", "--json").stdout)
        self.assertEqual([m["id"] for m in listing["messages"]], ids)
        self.assertEqual(listing["messages"][1]["recipients"][1],
                         {"address": "b@example.org", "state": "pending",
                          "reply": None})
        shown = self.ok(d, "show", ids[0]).stdout
        self.assertIn("ID:           %s" % ids[0], shown)
        self.assertIn("State:        ", shown)
        self.assertIn("X-Test-Id: list1", shown)
        # The sender writes what it knows of the upstream.
        def paused():
            st = json.loads(self.ok(d, "stats", "--json").stdout)
            return st.get("upstream", {}).get("state") == "paused"
        wait_for(paused, what="stats saying the upstream is paused")
        st = json.loads(self.ok(d, "stats", "--json").stdout)
        self.assertEqual(st["folders"]["outbox"]["messages"], 2)
        self.assertEqual(st["folders"]["hold"]["messages"], 0)
        self.assertTrue(st["sender"]["running"])
        self.assertEqual(st["sender"]["pid"], d.pid)
        self.assertNotEqual(st["upstream"]["reason"], "")
        text = self.ok(d, "stats").stdout
        self.assertIn("Upstream:     paused", text)
        # Not found, bad usage.
        r = self.run_queue(d, "show", "0" * 19)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("not in outbox/", r.stderr)
        for bad in (["show"], ["show", "nonsense"], ["frobnicate"], [],
                    ["list", "--yaml"], ["hold"], ["retry", "x"],
                    ["purge-sent"], ["hold", "--all", ids[0]]):
            r = self.run_queue(d, *bad)
            self.assertEqual(r.returncode, 64, "%s: %s" % (bad, r.stderr))
            self.assertIn("usage:", r.stderr)

    def test_status_by_message_id_and_queued_as(self):
        up = self.upstream()
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        self.send(d, "reset1")
        self.assertDeliveredOnce(up, "reset1")
        wait_for(lambda: d.spool.count("sent") == 1, what="sent/")
        r = self.ok(d, "status", "<reset1@test.invalid>", "--json")
        st = json.loads(r.stdout)
        self.assertEqual(len(st["messages"]), 1)
        m = st["messages"][0]
        self.assertEqual(m["state"], "sent")
        # The fake upstream answers "250 2.0.0 Ok: queued as N".
        self.assertRegex(m["queued_as"], r"^[0-9]+$")
        self.assertEqual(m["message"]["recipients"][0]["state"], "sent")
        text = self.ok(d, "status", "reset1@test.invalid").stdout
        self.assertIn("sent (in sent/)", text)
        self.assertIn("queued as %s" % m["queued_as"], text)
        r = self.run_queue(d, "status", "<nosuch@test.invalid>")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no message with Message-ID", r.stderr)
        # The sender rewrites its status at most once a second.
        def stats():
            return json.loads(self.ok(d, "stats", "--json").stdout)
        wait_for(lambda: stats().get("last_hour", {}).get("sent") == 1,
                 what="stats counting the delivery")
        st = stats()
        self.assertEqual(st["last_hour"]["deferred"], 0)
        self.assertGreater(st["upstream"]["last_delivery"], 0)
        self.assertEqual(st["upstream"]["state"], "running")

    # ------------------------------------------------------------ actions

    def test_hold_and_release_while_the_daemon_runs(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "held1")
        held = self.queued_id(d)[0]
        r = self.ok(d, "hold", held)
        self.assertIn("%s: held" % held, r.stdout)
        self.assertEqual(d.spool.list("hold"), [held])
        self.assertEqual(d.spool.list("outbox"), [])
        self.assertIn("(held)", self.ok(d, "list").stdout)
        # Held mail stays while other mail goes.
        up.restart()
        self.send(d, "free1")
        self.assertDeliveredOnce(up, "free1")
        self.assertEqual(up.with_test_id("held1"), [])
        r = self.run_queue(d, "hold", held)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.ok(d, "release", held)
        self.assertDeliveredOnce(up, "held1")
        self.assertIn("%s: released (arnie-queue)" % held, d.log_text())

    def test_retry_and_flush_skip_the_wait(self):
        # A deferred message would wait 300 s.
        up, d, msg = self.deferred_once("grey1")
        self.ok(d, "retry", msg)
        self.assertDeliveredOnce(up, "grey1")
        # The queue-wide pause: the upstream down, then back; flush
        # ends the wait.
        up.stop()
        self.send(d, "pause1")
        wait_for(lambda: "queue paused" in d.log_text(), what="a pause")
        up.restart()
        r = self.ok(d, "flush")
        self.assertIn("queue flushed", r.stdout)
        self.assertDeliveredOnce(up, "pause1")

    def test_delete_requeue(self):
        up = self.upstream()
        up.script_rcpt("gone@example.org", ["550 5.1.1 No such user"])
        d = self.arnie(up.port)
        self.send(d, "fail1", rcpts=("gone@example.org",))
        wait_for(lambda: d.spool.count("failed") == 1, what="failed/")
        failed = d.spool.list("failed")[0]
        # Requeued, it is tried again with fresh attempts (the script
        # is used up: 250 now).
        r = self.ok(d, "requeue", failed)
        self.assertIn("requeued", r.stdout)
        wait_for(lambda: len(up.with_test_id("fail1")) == 1,
                 what="the requeued message delivered")
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")
        self.assertEqual(d.spool.list("failed"), [])
        # delete: from outbox/ while the upstream is down.
        up.stop()
        self.send(d, "del1")
        victim = self.queued_id(d)[0]
        self.assertIn("deleted from outbox/",
                      self.ok(d, "delete", victim).stdout)
        self.assertEqual(d.spool.list("outbox"), [])
        r = self.run_queue(d, "delete", victim)
        self.assertEqual(r.returncode, 1)
        up.restart()
        self.send(d, "after-delete")
        self.assertDeliveredOnce(up, "after-delete")
        self.assertEqual(up.with_test_id("del1"), [])

    def test_all_variants_and_safety_while_sending(self):
        """hold --all and release --all while the daemon is sending a
        queue through a slow upstream: every message arrives exactly
        once."""
        up = self.upstream()
        up.delay_data[b"X-Test-Id: bulk"] = 0.05
        d = self.arnie(up.port, ARNIE_MAX_BATCH=5)
        n = 30
        for i in range(n):
            self.send(d, "bulk%02d" % i)
        r = self.ok(d, "hold", "--all")
        held = d.spool.count("hold")
        self.assertGreater(held, 0, r.stdout)
        self.assertEqual(r.stdout, "%d message%s held\n" %
                         (held, "" if held == 1 else "s"))
        time.sleep(0.5)   # let a batch in flight end
        before = len(up.accepted())
        time.sleep(0.5)
        self.assertEqual(len(up.accepted()), before,
                         "held messages were sent")
        self.ok(d, "release", "--all")
        for i in range(n):
            self.assertDeliveredOnce(up, "bulk%02d" % i)
        self.assertEqual(d.spool.count("hold"), 0)
        # requeue --all-failed
        up.script_rcpt("x1@example.org", ["550 5.1.1 no"])
        up.script_rcpt("x2@example.org", ["550 5.1.1 no"])
        self.send(d, "rq1", rcpts=("x1@example.org",))
        self.send(d, "rq2", rcpts=("x2@example.org",))
        wait_for(lambda: d.spool.count("failed") == 2, what="2 failed")
        r = self.ok(d, "requeue", "--all-failed")
        self.assertEqual(r.stdout, "2 messages requeued\n")
        self.assertDeliveredOnce(up, "rq1")
        self.assertDeliveredOnce(up, "rq2")

    def test_without_a_daemon(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "offline1")
        msg = self.queued_id(d)[0]
        d.stop()
        # arnie-queue takes the sender lock and acts itself.
        self.ok(d, "hold", msg)
        self.assertEqual(d.spool.list("hold"), [msg])
        self.ok(d, "release", msg)
        self.assertEqual(d.spool.list("outbox"), [msg])
        self.ok(d, "retry", msg)
        self.assertIn("queue flushed", self.ok(d, "flush").stdout)
        st = json.loads(self.ok(d, "stats", "--json").stdout)
        self.assertFalse(st["sender"]["running"])
        up.restart()
        d.start()
        self.assertDeliveredOnce(up, "offline1")

    def test_a_daemon_that_does_not_answer(self):
        up = self.upstream()
        up.stop()
        d = self.arnie(up.port)
        self.send(d, "stopped1")
        msg = self.queued_id(d)[0]
        d.signal(signal.SIGSTOP)
        try:
            r = self.run_queue(d, "-w", "1", "hold", msg)
        finally:
            d.signal(signal.SIGCONT)
        self.assertEqual(r.returncode, 75, r.stderr)
        self.assertIn("nothing was done", r.stderr)
        # Withdrawn: the daemon, running again, does not act on it.
        control = d.spool.path("control")
        self.assertEqual([n for n in os.listdir(control)
                          if not n.startswith(".")], [])
        self.assertEqual(d.spool.list("outbox"), [msg])

    def test_purge_sent(self):
        up = self.upstream()
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        for i in range(3):
            self.send(d, "purge%d" % i)
        wait_for(lambda: d.spool.count("sent") == 3, what="3 in sent/")
        old = time.time() - 3 * 86400
        names = d.spool.list("sent")
        for name in names[:2]:
            for f in (name, name + ".state"):
                p = d.spool.path("sent", f)
                if os.path.exists(p):
                    os.utime(p, (old, old))
        r = self.ok(d, "purge-sent", "--older-than", "2")
        self.assertIn("removed 2 messages", r.stdout)
        self.assertEqual(d.spool.list("sent"), names[2:])

    def test_bad_configuration(self):
        d = self.arnie(start=False)
        with open(d.env_path, "a") as f:
            f.write("RETRY_DELAY_SECONDS=soon\n")
        r = self.run_queue(d, "list")
        self.assertEqual(r.returncode, 78, r.stderr)
        self.assertIn("RETRY_DELAY_SECONDS", r.stderr)


if __name__ == "__main__":
    arnietest.main()
