# Helpers shared by the benchmark scripts (sourced, not run).
# Every process started here is recorded and stopped by its PID on exit.

ARNIE_BIN=${ARNIE_BIN:-$(cd "$(dirname "$0")/.." && pwd)/build/standalone/arnie}
# The environment wins over the .env files the scripts write.
ARNIE_RELAY_PROGRAM=${ARNIE_RELAY_PROGRAM:-$(dirname "$ARNIE_BIN")/../relay/arnie-relay}
export ARNIE_RELAY_PROGRAM
PIDS=""

cleanup() {
	for pid in $PIDS; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $PIDS; do
		wait "$pid" 2>/dev/null || true
	done
	[ -n "${WORK:-}" ] && [ -z "${KEEP:-}" ] && rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for_port() {
	/usr/bin/python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("nothing listens on port " + sys.argv[1])
PY
}

now() {
	date +%s.%N
}

# count_files DIR: regular files in DIR
count_files() {
	find "$1" -maxdepth 1 -type f | wc -l
}

# wait_for_lines LOG TEXT COUNT TIMEOUT_SECONDS: until LOG has COUNT lines
# holding TEXT.  One process reading what the log gained: a loop that lists
# a queue folder of thousands of files takes the CPU being measured.
wait_for_lines() {
	/usr/bin/python3 - "$@" <<'PY'
import sys, time
log, text, want, secs = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + secs
n, offset, partial = 0, 0, b""
while n < want:
    if time.monotonic() > deadline:
        sys.exit("timeout: %d of %d lines with %r in %s" % (n, want, text, log))
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        chunk = b""
    offset += len(chunk)
    lines = (partial + chunk).split(b"\n")
    partial = lines.pop()
    n += sum(1 for line in lines if text in line)
    if n < want:
        time.sleep(0.005)
PY
}

# cpu_seconds PID...: user + system CPU seconds of those processes so far.
cpu_seconds() {
	for pid in "$@"; do
		cut -d' ' -f14,15 "/proc/$pid/stat"
	done | awk -v hz="$(getconf CLK_TCK)" '{ t += $1 + $2 } END { printf "%.3f", t / hz }'
}

# children PID: the PIDs of PID's child processes.
children() {
	cat /proc/"$1"/task/*/children 2>/dev/null
}

# wait_until_empty DIR TIMEOUT_SECONDS
wait_until_empty() {
	end=$(( $(date +%s) + $2 ))
	while [ "$(count_files "$1")" -ne 0 ]; do
		[ "$(date +%s)" -lt "$end" ] || { echo "timeout: $1 not empty" >&2; return 1; }
		sleep 0.02
	done
}

# start_arnie ENVFILE LOG: starts the daemon, waits for its port.
start_arnie() {
	"$ARNIE_BIN" -c "$1" >"$2" 2>&1 &
	ARNIE_PID=$!
	PIDS="$PIDS $ARNIE_PID"
}

# peak_rss_kb: the daemon's peak resident set so far, in KiB.
peak_rss_kb() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$ARNIE_PID/status"
}

stop_arnie() {
	kill -TERM "$ARNIE_PID"
	wait "$ARNIE_PID" 2>/dev/null || true
}

# The spool lives on the project's disk, not on a tmpfs: fsync must be real.
make_workdir() {
	WORK=$(mktemp -d "${BENCH_DIR:-$(cd "$(dirname "$0")/.." && pwd)/build}/bench.XXXXXX")
}
