#!/bin/sh
# Throughput of Postfix -> arnie-milter -> upstream.
#
#   bench/milter-throughput.sh [-n MESSAGES] [-s SESSIONS] [-l SIZE]
#                              [-f IN_FLOW_DELAY] [BINARY]
#
# Starts (all on 127.0.0.1, free ports, a temp dir) a fake upstream
# (aiosmtpd), arnie-milter in divert mode relaying to it, and a private
# Postfix (tests/milter/milterlib.py PrivatePostfix) whose smtpd_milters is
# arnie-milter; then smtp-source sends MESSAGES messages of SIZE octets over
# SESSIONS parallel SMTP sessions to Postfix, and the clock runs until the
# upstream has received all of them.  Prints the time Postfix took to accept
# them (every one committed to Arnie's spool, since Postfix answers 250 only
# after the milter's end-of-message reply) and the end-to-end rate.
# Needs root (Postfix), postfix, python3-aiosmtpd; defaults 200 / 10 / 1000.
# Postfix runs with in_flow_delay = 0 as docs/postfix.md advises; -f 1s
# shows Postfix's default, which throttles divert mode (see that file).
# BINARY defaults to $ARNIE_MILTER_BIN, else ./milter/arnie-milter.
set -eu

n=200
s=10
l=1000
f=0
while getopts n:s:l:f: opt; do
	case $opt in
	n) n=$OPTARG ;;
	s) s=$OPTARG ;;
	l) l=$OPTARG ;;
	f) f=$OPTARG ;;
	*) echo "usage: $0 [-n MESSAGES] [-s SESSIONS] [-l SIZE]" \
	       "[-f IN_FLOW_DELAY] [BINARY]" >&2
	   exit 64 ;;
	esac
done
shift $((OPTIND - 1))
ARNIE_MILTER_BIN=$(realpath "${1:-${ARNIE_MILTER_BIN:-./milter/arnie-milter}}")
export ARNIE_MILTER_BIN
ARNIE_RELAY_BIN=$(realpath "${ARNIE_RELAY_BIN:-$(dirname "$ARNIE_MILTER_BIN")/../relay/arnie-relay}")
export ARNIE_RELAY_BIN
srcdir=$(cd "$(dirname "$0")/.." && pwd)

exec /usr/bin/python3 - "$srcdir" "$n" "$s" "$l" "$f" <<'EOF'
import os
import subprocess
import sys
import time

srcdir, n, sessions, size = sys.argv[1], *map(int, sys.argv[2:5])
in_flow_delay = sys.argv[5]
sys.path.insert(0, os.path.join(srcdir, "tests", "milter"))
import milterlib  # noqa: E402

milterlib.binary()
milterlib.require("postfix", "smtp-source")
milterlib.cleanup_on_sigterm()
work = milterlib.tempdir("arnie-milter-bench.")
upstream = sink = milter = postfix = None
try:
    upstream = milterlib.Upstream()
    sink = milterlib.Upstream()
    milter = milterlib.Milter(work, OUTBOUND_EMAIL_HOST_PORT=upstream.port,
                              ARNIE_MAX_BATCH=100).start()
    postfix = milterlib.PrivatePostfix(
        work, milterlib.free_port(), "inet:127.0.0.1:%d" % milter.port,
        sink.port, {"in_flow_delay": in_flow_delay,
                    "default_process_limit": str(max(100, sessions * 2))})
    postfix.start()
    t0 = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(n),
                    "-l", str(size), "-f", "bench@example.com",
                    "-t", "sink@example.org", "-M", "bench.example",
                    "127.0.0.1:%d" % postfix.port], check=True, timeout=600)
    t_accepted = time.monotonic()
    milterlib.await_cond(lambda: upstream.count() >= n, 60 + n / 5,
                         "%d messages upstream" % n)
    t_done = time.monotonic()
    assert sink.count() == 0, "Postfix delivered by itself"
    print("messages=%d sessions=%d size=%d in_flow_delay=%s"
          % (n, sessions, size, in_flow_delay))
    print("Postfix accepted all (each committed by arnie-milter) in "
          "%.2f s: %.1f msg/s" % (t_accepted - t0, n / (t_accepted - t0)))
    print("all %d at the upstream after %.2f s: %.1f msg/s end to end"
          % (upstream.count(), t_done - t0, n / (t_done - t0)))
finally:
    if postfix is not None:
        postfix.stop()
    if milter is not None:
        milter.stop()
    for srv in (upstream, sink):
        if srv is not None:
            srv.stop()
    import shutil
    shutil.rmtree(work, ignore_errors=True)
EOF
