#!/bin/sh
# Messages per second that arnie accepts durably (250 after fsync), with
# 1 and 10 parallel smtp-source sessions, 2 KB messages.  The upstream is a
# closed port, so the sender stays paused and only acceptance is measured.
#   sh bench/accept.sh [MESSAGES]      (default 2000)
set -eu
. "$(dirname "$0")/common.sh"
count=${1:-2000}
make_workdir

for sessions in 1 10; do
	rm -rf "$WORK/spool"
	port=$(free_port)
	cat >"$WORK/.env" <<ENV
OUTBOUND_EMAIL_HOST=127.0.0.1
OUTBOUND_EMAIL_HOST_PORT=$(free_port)
OUTBOUND_EMAIL_USE_TLS=false
ARNIE_USER=root
FILES_DIRECTORY=$WORK/spool
ARNIE_LISTEN_PORT=$port
MAX_CONNECTIONS=200
RETRY_DELAY_SECONDS=3600
ENV
	start_arnie "$WORK/.env" "$WORK/arnie-$sessions.log"
	wait_for_port "$port"
	start=$(now)
	/usr/sbin/smtp-source -s "$sessions" -m "$count" -l 2048 \
		-f bench@example.com -t sink@example.com "127.0.0.1:$port"
	end=$(now)
	queued=$(count_files "$WORK/spool/arniefiles/outbox")
	rss=$(peak_rss_kb)
	stop_arnie
	[ "$queued" -eq "$count" ] ||
		{ echo "only $queued of $count messages queued" >&2; exit 1; }
	awk -v n="$count" -v s="$sessions" -v a="$start" -v b="$end" \
	    -v r="$rss" 'BEGIN {
		printf "accept: %d sessions, %d messages of 2 KB: %.2f s, " \
		    "%.0f msg/s, peak RSS %.1f MiB\n", s, n, b - a, n / (b - a),
		    r / 1024 }'
done
