"""The queue as a whole: an upstream that is down, dead or throttling
costs no message its attempts and one connection per backoff step; queue
lifetime; MAX_SEND_RATE; the admin report; what the sender finds in
outbox/ (a previous run's files, corrupt files, files renamed in by another
process, seen through inotify)."""

import os
import re
import time

import arnietest
from arnietest import ArnieTestCase, make_message, smtp_send, wait_for

FROM = "app@example.com"


class QueueTest(ArnieTestCase):

    def send(self, d, test_id, rcpts=("user@example.org",), **kw):
        code, _ = smtp_send(d.port, FROM, list(rcpts),
                            make_message(test_id, **kw))
        self.assertEqual(code, 250)

    # ------------------------------------------------------------ queue-wide

    def test_upstream_down_for_a_while(self):
        up = self.upstream()
        port = up.port
        up.stop()
        d = self.arnie(port)
        for i in range(3):
            self.send(d, "down%d" % i)
        # Let a few connection attempts fail (RETRY_DELAY_SECONDS=1).
        time.sleep(2.5)
        # The log says what is wrong once per backoff step, not once per
        # message.
        trouble = [l for l in d.log_text().splitlines()
                   if re.search(r"(?i)refused|paused", l)]
        self.assertGreaterEqual(len(trouble), 1, d.log_text())
        self.assertLessEqual(len(trouble), 4, "\n".join(trouble))
        envs = d.spool.envelopes("outbox")
        self.assertEqual(len(envs), 3)
        for env in envs:
            self.assertEqual(env.attempts, 0, env.header_text())
        up.restart()
        for i in range(3):
            self.assertDeliveredOnce(up, "down%d" % i)
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")
        self.assertEqual(d.spool.list("failed"), [])

    def test_dead_upstream_costs_one_connection_per_backoff_step(self):
        up = self.upstream()
        up.connect_reply = "421 4.3.2 Service not available"
        d = self.arnie(up.port, MAX_SEND_ATTEMPTS=3)
        for i in range(10):
            self.send(d, "dead%d" % i)
        c0 = up.connection_count()
        window = 6.0
        time.sleep(window)
        c1 = up.connection_count()
        # RETRY 1 s doubling to 2 s: about four probes in six seconds; one
        # connection per message would be ten per step.
        self.assertGreaterEqual(c1 - c0, 1, "no probe at all")
        self.assertLessEqual(c1 - c0, int(window / 1) + 2,
                             "%d connections in %.0fs" % (c1 - c0, window))
        self.assertLess(c1, 10, "%d connections for 10 messages" % c1)
        envs = d.spool.envelopes("outbox")
        self.assertEqual(len(envs), 10)
        for env in envs:
            self.assertEqual(env.attempts, 0, env.header_text())
        self.assertEqual(d.spool.list("failed"), [])
        up.connect_reply = None
        for i in range(10):
            self.assertDeliveredOnce(up, "dead%d" % i)

    def test_454_throttling_after_data_spends_no_attempts(self):
        up = self.upstream()
        throttle = ("454 4.7.0 Throttling failure: "
                    "Maximum sending rate exceeded.")
        up.script_data([throttle] * 3)
        d = self.arnie(up.port, MAX_SEND_ATTEMPTS=2)
        self.send(d, "ses")
        wait_for(lambda: len(up.with_test_id("ses", False)) >= 2,
                 what="two throttled attempts")
        for env in d.spool.envelopes("outbox"):
            self.assertEqual(env.attempts, 0, env.header_text())
        # Three throttles with MAX_SEND_ATTEMPTS=2: still delivered.
        self.assertDeliveredOnce(up, "ses", timeout=20)
        self.assertEqual(len(up.with_test_id("ses", False)), 4)
        self.assertEqual(d.spool.list("failed"), [])

    def test_421_after_mail_is_queue_wide(self):
        up = self.upstream()
        with up.lock:
            up.mail_replies = ["421 4.7.0 Too many connections, closing"] * 3
        d = self.arnie(up.port, MAX_SEND_ATTEMPTS=2)
        self.send(d, "t421")
        wait_for(lambda: not up.mail_replies, what="three 421 replies")
        for env in d.spool.envelopes("outbox"):
            self.assertEqual(env.attempts, 0, env.header_text())
        self.assertDeliveredOnce(up, "t421")
        self.assertEqual(d.spool.list("failed"), [])

    def test_queue_lifetime_then_failed(self):
        up = self.upstream()
        d = self.arnie(up.port, MAX_QUEUE_LIFETIME_SECONDS=2)
        self.send(d, "old", rcpts=["temp@example.org"])
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertEqual(env.rcpt_state("temp@example.org"), "failed")
        self.assertEqual(d.spool.list("outbox"), [])
        self.assertEqual(up.accepted(), [])

    def test_max_send_rate_paces_the_queue(self):
        up = self.upstream()
        d = self.arnie(up.port, MAX_SEND_RATE=2)
        up.stop()
        n = 6
        for i in range(n):
            self.send(d, "rate%d" % i)
        up.restart()
        for i in range(n):
            self.assertDeliveredOnce(up, "rate%d" % i)
        times = sorted(up.with_test_id("rate%d" % i)[0].at for i in range(n))
        # 6 messages at 2 per second: at least 2 s from first to last even
        # if the bucket starts full with one second's worth.
        self.assertGreaterEqual(times[-1] - times[0], 1.8, times)

    # ------------------------------------------------------------ reports

    def test_failure_report_reaches_admin(self):
        up = self.upstream()
        admin = "admin@example.net"
        d = self.arnie(up.port, ADMIN_ADDRESS=admin,
                       REPORT_INTERVAL_SECONDS=2)
        self.send(d, "reported", rcpts=["perm@example.org"])
        ids = self.wait_spool(d, "failed", 1)
        reports = wait_for(lambda: up.delivered_to(admin),
                           what="a report to ADMIN_ADDRESS")
        r = reports[0]
        self.assertEqual(r.mail_from, admin)
        text = r.content.decode(errors="replace")
        self.assertIn(ids[0], text)
        self.assertIn("550", text)
        self.assertIn("perm@example.org", text)
        # The report is about one failure: one report, not one per tick.
        time.sleep(2.5)
        self.assertEqual(len(up.delivered_to(admin)), 1)

    # ------------------------------------------------------------ spool scans

    def test_outbox_from_a_previous_run_is_delivered(self):
        port = arnietest.free_port()
        d = self.arnie(port)                 # nothing listens on port
        for i in range(3):
            self.send(d, "prev%d" % i)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(d.spool.count("outbox"), 3)
        up = self.upstream(port=port)
        d.start()
        for i in range(3):
            self.assertDeliveredOnce(up, "prev%d" % i)
        wait_for(lambda: d.spool.count("outbox") == 0, what="empty outbox")

    def test_sent_mail_older_than_the_retention_is_pruned(self):
        up = self.upstream()
        d = self.arnie(up.port, SAVE_SENT_MAIL=True, SENT_RETENTION_DAYS=2)
        self.send(d, "kept")
        self.assertDeliveredOnce(up, "kept")
        wait_for(lambda: d.spool.count("sent") == 1, what="kept in sent/")
        self.assertEqual(d.stop(), 0)
        # Two messages sent 3 days ago, as a previous run left them.
        sent = os.path.join(d.files_dir, "arniefiles", "sent")
        old = time.time() - 3 * 86400
        for qid in ("0193A4B5C6D7E000031", "0193A4B5C6D7E000032"):
            for name in (qid, qid + ".state"):
                with open(os.path.join(sent, name), "w") as f:
                    f.write("x")
                os.utime(os.path.join(sent, name), (old, old))
        d.start()
        wait_for(lambda: "removed 2 messages sent more than 2 days ago "
                 "from sent/" in d.log_text(), what="the pruning")
        self.assertEqual([n for n in os.listdir(sent)
                          if n.startswith("0193A4B5C6D7E00003")], [])
        self.assertEqual(d.spool.count("sent"), 1)

    def test_corrupt_outbox_file_is_set_aside(self):
        up = self.upstream()
        outbox = os.path.join(self.files_dir, "arniefiles", "outbox")
        os.makedirs(outbox, mode=0o700)
        bad_id = arnietest.new_spool_id(pid=1)
        with open(os.path.join(outbox, bad_id), "wb") as f:
            f.write(b"this is not an arnie spool file\r\n")
        # A truncated file: the size does not match.
        trunc_id = arnietest.new_spool_id(pid=2)
        good = arnietest.format_spool_file(
            trunc_id, FROM, ["user@example.org"], make_message("trunc"))
        with open(os.path.join(outbox, trunc_id), "wb") as f:
            f.write(good[:-10])
        d = self.arnie(up.port)
        wait_for(lambda: d.spool.count("corrupt") == 2, what="corrupt/")
        self.assertEqual(sorted(d.spool.list("corrupt")),
                         sorted([bad_id, trunc_id]))
        self.assertTrue(d.running())
        self.send(d, "after-corrupt")
        self.assertDeliveredOnce(up, "after-corrupt")
        self.assertEqual(up.with_test_id("trunc", False), [])

    def test_a_deferral_is_dated_and_left_unread_until_then(self):
        """A deferred message's state file is dated at its next attempt;
        the start-up scan trusts the date and does not read the file
        before it (shown by a state edited to say "due now" while keeping
        its date); arnie-queue retry reads it at once."""
        up, d, msg = self.deferred_once("grey")
        state = d.spool.path("outbox", msg + ".state")
        with open(state, "rb") as f:
            text = f.read()
        due = int(re.search(rb"\nnext-attempt: (\d+)\n", text).group(1))
        self.assertGreater(due, time.time() + 200)
        self.assertEqual(int(os.stat(state).st_mtime), due)
        self.assertEqual(d.stop(), 0)
        with open(state, "wb") as f:
            f.write(re.sub(rb"\nnext-attempt: \d+\n", b"\nnext-attempt: 0\n",
                           text))
        os.utime(state, (due, due))
        d.start()
        # Read at start-up, it would go first (it says "due now").
        self.send(d, "after")
        self.assertDeliveredOnce(up, "after")
        self.assertEqual(up.with_test_id("grey"), [])
        r = self.run_queue(d, "retry", msg)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertDeliveredOnce(up, "grey")

    def test_a_dated_message_is_sent_at_its_date(self):
        """Found at start-up with its state dated a few seconds ahead,
        a message is sent once the date has come, not before."""
        up = self.upstream()
        d = self.arnie(up.port, start=False)
        outbox = d.spool.path("outbox")
        os.makedirs(outbox)
        date = int(time.time()) + 3
        arnietest.drop_queue_file(outbox, FROM, ["user@example.org"],
                                  make_message("dated"), date=date)
        d.start()
        self.assertDeliveredOnce(up, "dated")
        self.assertGreaterEqual(time.time(), date)

    def test_file_renamed_into_outbox_is_sent_promptly(self):
        up = self.upstream()
        self.arnie(up.port)
        root = os.path.join(self.files_dir, "arniefiles")
        msg_id = arnietest.new_spool_id()
        data = arnietest.format_spool_file(
            msg_id, FROM, ["dropped@example.org"], make_message("dropped"))
        tmp = os.path.join(root, "drop.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        t0 = time.monotonic()
        os.rename(tmp, os.path.join(root, "outbox", msg_id))
        t = self.assertDeliveredOnce(up, "dropped", timeout=5)
        self.assertLess(time.monotonic() - t0, 3.0)
        self.assertEqual(t.rcpt_tos, ["dropped@example.org"])
        self.assertEqual(t.mail_from, FROM)

    def test_file_made_by_another_arnie_is_picked_up(self):
        # A queue file written by arnie itself (another spool, upstream
        # down), moved by rename into a running arnie's outbox/.
        other_files = os.path.join(self.tmp, "other")
        os.makedirs(other_files)
        a = self.arnie(arnietest.free_port(), FILES_DIRECTORY=other_files)
        self.send(a, "moved")
        self.assertEqual(a.stop(), 0)
        names = a.spool.list("outbox")
        self.assertEqual(len(names), 1)
        up = self.upstream()
        d = self.arnie(up.port)
        src = a.spool.path("outbox", names[0])
        staging = os.path.join(self.files_dir, "arniefiles", names[0] + ".tmp")
        os.rename(src, staging)          # same file system
        os.rename(staging, d.spool.path("outbox", names[0]))
        self.assertDeliveredOnce(up, "moved", timeout=5)

    def test_requeue_recipe_from_the_docs(self):
        # docs/spool-format.md, "Requeueing a failed message", run as
        # written, with the shell.
        up = self.upstream()
        up.script_rcpt("back@example.org", ["550 5.1.1 not yet"])
        d = self.arnie(up.port, SAVE_SENT_MAIL=True)
        self.send(d, "requeued", rcpts=["back@example.org"])
        ids = self.wait_spool(d, "failed", 1)
        env = d.spool.read("failed", ids[0])
        self.assertEqual(env.rcpt_state("back@example.org"), "failed")
        r = arnietest.subprocess.run(
            ["sh", "-ec", 'cd "$1"; id=$2; rm "failed/$id.state" && '
             'mv "failed/$id" outbox/', "sh",
             os.path.join(self.files_dir, "arniefiles"), ids[0]],
            capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertDeliveredOnce(up, "requeued")
        self.wait_spool(d, "sent", 1)
        self.assertEqual(d.spool.list("failed"), [])
        self.assertEqual(d.spool.list("outbox"), [])

    # ------------------------------------------------------------ --queue

    def test_queue_listing_shows_each_recipient(self):
        up = self.upstream()
        d = self.arnie(up.port, RETRY_DELAY_SECONDS=3600,
                       RETRY_MAX_DELAY_SECONDS=3600)
        r = self.run_arnie(["--queue", "-c", d.env_path])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "The queue is empty.\n")
        self.send(d, "listed", rcpts=("ok@example.org", "temp@example.org"))
        # After one attempt ok@ is done and temp@ waits an hour.
        env = wait_for(lambda: [e for e in d.spool.envelopes("outbox")
                                if e.attempts == 1],
                       what="the first attempt recorded")[0]
        r = self.run_arnie(["--queue", "-c", d.env_path])
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("ID "), r.stdout)
        self.assertRegex(lines[1], r"^%s +\d+ +\S+ \S+ +1 +\S+ \S+ +<%s>$"
                         % (env.id, FROM))
        self.assertRegex(lines[2], r"^    <ok@example.org> sent \(250 ")
        self.assertRegex(lines[3], r"^    <temp@example.org> pending \(4")
        self.assertRegex(lines[4], r"^-- 1 message, \d+ bytes; the oldest "
                         r"is \d+s old\.$")
        self.assertEqual(len(lines), 5, r.stdout)


if __name__ == "__main__":
    arnietest.main()
