#!/bin/sh
# Quick start: install, build, and run Arnie on 127.0.0.1:8025 in front of a
# local capture upstream (an aiosmtpd Maildir on 127.0.0.1:2525), then send
# one message through it and show where it landed.
#   sh scripts/demo.sh         set up, start, send a test message
#   sh scripts/demo.sh stop    stop both processes (by their PID files)
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
demo="$top/build/demo"

stop_pidfile() {
	[ -f "$1" ] || return 0
	pid=$(cat "$1")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		i=0
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
	fi
	rm -f "$1"
}

wait_for_port() {
	i=0
	until /usr/bin/python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "nothing listens on 127.0.0.1:$1" >&2; return 1; }
		sleep 0.1
	done
}

if [ "${1:-}" = stop ]; then
	stop_pidfile "$demo/arnie.pid"
	stop_pidfile "$demo/upstream.pid"
	echo "demo stopped"
	exit 0
fi

[ "$(id -u)" -eq 0 ] && sh scripts/install-deps.sh
sh scripts/build.sh

mkdir -p "$demo"
rm -rf "$demo/captured"  # the Maildir handler creates it with tmp/ new/ cur/
stop_pidfile "$demo/arnie.pid"
stop_pidfile "$demo/upstream.pid"

cat >"$demo/.env" <<ENV
# A demo configuration: relay to the local capture upstream, without TLS.
OUTBOUND_EMAIL_HOST=127.0.0.1
OUTBOUND_EMAIL_HOST_PORT=2525
OUTBOUND_EMAIL_USE_TLS=false
FILES_DIRECTORY=$demo
SAVE_SENT_MAIL=true
# The demo runs in your checkout as you ($(id -un)); an installed Arnie
# started as root becomes the "arnie" user instead (see the README).
ARNIE_USER=$(id -un)
# The relay program as built here; an installed Arnie knows its own.
ARNIE_RELAY_PROGRAM=$PWD/build/relay/arnie-relay
ENV

/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:2525 \
	-c aiosmtpd.handlers.Mailbox "$demo/captured" \
	>"$demo/upstream.log" 2>&1 &
echo $! >"$demo/upstream.pid"
wait_for_port 2525

"$top/build/standalone/arnie" -c "$demo/.env" >"$demo/arnie.log" 2>&1 &
echo $! >"$demo/arnie.pid"
wait_for_port 8025

printf 'From: app@example.com\r\nTo: user@example.com\r\nSubject: Hello from Arnie\r\n\r\nIt works.\r\n' >"$demo/email.txt"
curl -sS smtp://127.0.0.1:8025 --mail-from app@example.com \
	--mail-rcpt user@example.com --upload-file "$demo/email.txt"

i=0
until [ -n "$(ls -A "$demo/captured/new" 2>/dev/null)" ]; do
	i=$((i + 1))
	[ $i -lt 100 ] || { echo "the message did not arrive; see $demo/arnie.log" >&2; exit 1; }
	sleep 0.1
done

cat <<MSG

Arnie is running on 127.0.0.1:8025 (pid $(cat "$demo/arnie.pid")), relaying to a
capture upstream on 127.0.0.1:2525 (pid $(cat "$demo/upstream.pid")).

The test message went through; the upstream stored it in:
  $(ls "$demo/captured/new"/*)
Arnie's log:      $demo/arnie.log
Arnie's spool:    $demo/arniefiles/{outbox,sent,failed}
Send another:     curl smtp://127.0.0.1:8025 --mail-from app@example.com --mail-rcpt user@example.com --upload-file $demo/email.txt
Stop the demo:    sh scripts/demo.sh stop
MSG
