#!/bin/sh
# The Debian package as an admin meets it: install it with apt-get, check
# what it created, start the installed arnie exactly as arnie.service's
# ExecStart (as User=arnie), relay one mail to a local upstream, stop it,
# purge, and check that nothing of it is left.  Changes the machine (a
# package, a user): run as root on a test machine, by scripts/package.sh.
#
#   sh tests/package/test_deb.sh build/deb/arnie_VERSION_ARCH.deb
set -eu
deb=$(realpath "$1")
work=$(mktemp -d /tmp/arnie-deb.XXXXXX)
upstream_pid=
arnie_pid=

fail() { echo "test_deb: FAIL: $*"; exit 1; }
cleanup() {
	for pid in $arnie_pid $upstream_pid; do
		kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
	done
	# A failed run must not leave the package (and its edited conffile)
	# for the next one.
	DEBIAN_FRONTEND=noninteractive apt-get purge -y -q arnie \
		>/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Waits up to $1 tenths of a second for the command after it to succeed.
await() {
	n=$1; shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
	done
}

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket()
s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "test_deb: installing $deb"
# From scratch: no arnie package, nor its configuration, from before.
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q arnie >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$deb" >"$work/apt.log" 2>&1 ||
	{ tail -n 20 "$work/apt.log"; fail "apt-get install"; }
dpkg -L arnie >"$work/files"

# What the package promises.
getent passwd arnie >/dev/null || fail "no user arnie"
[ "$(stat -c '%a %U %G' /var/spool/arnie)" = "700 arnie arnie" ] ||
	fail "/var/spool/arnie is $(stat -c '%a %U %G' /var/spool/arnie)"
[ "$(stat -c '%a %U %G' /etc/arnie/arnie.env)" = "640 root arnie" ] ||
	fail "/etc/arnie/arnie.env is $(stat -c '%a %U %G' /etc/arnie/arnie.env)"
dpkg-query -W -f='${Conffiles}\n' arnie | grep -q ' /etc/arnie/arnie.env ' ||
	fail "arnie.env is not a conffile"
for f in /usr/sbin/arnie /usr/sbin/arnie-milter /usr/sbin/arnie-queue \
	/usr/libexec/arnie/arnie-relay; do
	[ -x "$f" ] || fail "$f missing"
done
for u in arnie arnie-milter; do
	[ -f "/lib/systemd/system/$u.service" ] || fail "$u.service missing"
	[ ! -e "/etc/systemd/system/multi-user.target.wants/$u.service" ] ||
		fail "$u.service enabled by the package"
done
# (From the package itself: a minimal image may exclude /usr/share/man.)
dpkg-deb -c "$deb" >"$work/contents"
for m in man8/arnie.8 man8/arnie-milter.8 man8/arnie-queue.8 man5/arnie.env.5
do
	grep -q "/usr/share/man/$m.gz$" "$work/contents" ||
		fail "no man page $m"
done

# The installed configuration refuses to run until the upstream is named.
status=0
/usr/sbin/arnie -c /etc/arnie/arnie.env --check-config >"$work/check" 2>&1 ||
	status=$?
[ "$status" -eq 78 ] && grep -q OUTBOUND_EMAIL_HOST "$work/check" ||
	fail "an unset upstream gave exit $status: $(cat "$work/check")"

# A local upstream that keeps what it receives in a Maildir.
up_port=$(free_port)
smtp_port=$(free_port)
/usr/bin/python3 -m aiosmtpd -n -l "127.0.0.1:$up_port" \
	-c aiosmtpd.handlers.Mailbox "$work/maildir" &
upstream_pid=$!
await 100 /usr/bin/python3 -c "import socket
socket.create_connection(('127.0.0.1', $up_port)).close()" ||
	fail "the upstream did not start"

cat >>/etc/arnie/arnie.env <<CONF
OUTBOUND_EMAIL_HOST=127.0.0.1
OUTBOUND_EMAIL_HOST_PORT=$up_port
OUTBOUND_EMAIL_USE_TLS=false
ARNIE_LISTEN_PORT=$smtp_port
CONF

# ExecStart as the unit has it, as the unit's User= and Group=.
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/arnie.service)
user=$(sed -n 's/^User=//p' /lib/systemd/system/arnie.service)
group=$(sed -n 's/^Group=//p' /lib/systemd/system/arnie.service)
# shellcheck disable=SC2086 # ExecStart is split into words as systemd does
setpriv --reuid="$user" --regid="$group" --init-groups -- $exec_start \
	2>"$work/arnie.log" &
arnie_pid=$!
await 100 /usr/bin/python3 -c "import socket
socket.create_connection(('127.0.0.1', $smtp_port)).close()" ||
	{ cat "$work/arnie.log"; fail "the installed arnie did not listen"; }

printf 'From: app@example.com\r\nTo: user@example.com\r\nSubject: from the package\r\n\r\nhello\r\n' >"$work/mail"
curl -sS "smtp://127.0.0.1:$smtp_port" --mail-from app@example.com \
	--mail-rcpt user@example.com --upload-file "$work/mail" ||
	fail "curl could not hand over the mail"
await 200 sh -c "ls '$work/maildir/new/'* 2>/dev/null | grep -q ." ||
	{ cat "$work/arnie.log"; fail "nothing reached the upstream"; }
grep -q '^Subject: from the package' "$work"/maildir/new/* ||
	fail "the upstream got another message"
grep -q 'status=sent' "$work/arnie.log" || fail "no status=sent in the log"
[ "$(stat -c %U /var/spool/arnie/arniefiles)" = arnie ] ||
	fail "the spool was not made by the arnie user"

kill "$arnie_pid"
wait "$arnie_pid" || fail "arnie exited $? on SIGTERM"
arnie_pid=

echo "test_deb: purging"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q arnie >>"$work/apt.log" 2>&1 ||
	{ tail -n 20 "$work/apt.log"; fail "apt-get purge"; }
left=
while read -r f; do
	[ -d "$f" ] && continue   # shared folders (/usr/sbin) stay
	[ -e "$f" ] && left="$left $f"
done <"$work/files"
for f in /var/spool/arnie /etc/arnie; do
	[ -e "$f" ] && left="$left $f"
done
[ -z "$left" ] || fail "left after purge:$left"
echo "test_deb: ok"
