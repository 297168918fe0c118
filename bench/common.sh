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
