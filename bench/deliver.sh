#!/bin/sh
# Messages per second that arnie delivers to Postfix's smtp-sink: the spool
# is filled while the upstream is down, then smtp-sink starts and we time
# until the log says status=sent for every message.  With
# ARNIE_MAX_BATCH=MESSAGES every message goes over one connection.
#   sh bench/deliver.sh [MESSAGES]     (default 2000)
# BATCH=N sets ARNIE_MAX_BATCH (default: all in one connection);
# SAVE_SENT_MAIL=true keeps each delivered message in sent/.
set -eu
. "$(dirname "$0")/common.sh"
count=${1:-2000}
make_workdir
port=$(free_port)
upstream=$(free_port)
cat >"$WORK/.env" <<ENV
OUTBOUND_EMAIL_HOST=127.0.0.1
OUTBOUND_EMAIL_HOST_PORT=$upstream
OUTBOUND_EMAIL_USE_TLS=false
ARNIE_USER=root
FILES_DIRECTORY=$WORK/spool
ARNIE_LISTEN_PORT=$port
ARNIE_MAX_BATCH=${BATCH:-$count}
RETRY_DELAY_SECONDS=1
RETRY_MAX_DELAY_SECONDS=1
SAVE_SENT_MAIL=${SAVE_SENT_MAIL:-false}
ENV
start_arnie "$WORK/.env" "$WORK/fill.log"
wait_for_port "$port"
/usr/sbin/smtp-source -s 10 -m "$count" -l 2048 \
	-f bench@example.com -t sink@example.com "127.0.0.1:$port"
stop_arnie

/usr/sbin/smtp-sink -u nobody "127.0.0.1:$upstream" 100 &
PIDS="$PIDS $!"
wait_for_port "$upstream"
start=$(now)
start_arnie "$WORK/.env" "$WORK/deliver.log"
wait_for_lines "$WORK/deliver.log" "status=sent" "$count" 300
finish=$(now)
rss=$(peak_rss_kb)
# The daemon's and its relay program's CPU (the relay is still running).
cpu=$(cpu_seconds "$ARNIE_PID" $(children "$ARNIE_PID"))
wait_until_empty "$WORK/spool/arniefiles/outbox" 60
sent=$(grep -c "status=sent" "$WORK/deliver.log" || true)
awk -v n="$count" -v a="$start" -v b="$finish" -v c="${BATCH:-$count}" \
    -v r="$rss" -v cpu="$cpu" 'BEGIN {
	printf "deliver: %d messages of 2 KB, up to %d per connection: " \
	    "%.2f s, %.0f msg/s, peak RSS %.1f MiB, " \
	    "CPU %.3f s per 1,000 (daemon and relay)\n", n, c, b - a,
	    n / (b - a), r / 1024, cpu * 1000 / n }'
[ "$sent" -eq "$count" ] || { echo "only $sent of $count logged as sent" >&2; exit 1; }
