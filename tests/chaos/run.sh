#!/bin/sh
# The long chaos run: SECONDS (default 120) of load against each front-end
# (arnie, then arnie-milter behind a private Postfix) with SIGKILLs at
# random moments, at least one kill per 4 seconds on average required.
#
#   tests/chaos/run.sh [SECONDS [chaos.py options]]
#
# Uses build/standalone/arnie, build/milter/arnie-milter and
# build/relay/arnie-relay (or $ARNIE_BIN, $ARNIE_MILTER_BIN and
# $ARNIE_RELAY_BIN); needs root for the private Postfix.  Prints each
# run's figures (also as JSON) and exits non-zero if one lost a message,
# sent more extra copies than there were kills, or killed too seldom.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-120}
[ $# -gt 0 ] && shift
min=$((secs / 4))
[ "$min" -ge 5 ] || min=5
ARNIE_BIN=${ARNIE_BIN:-$top/build/standalone/arnie}
ARNIE_MILTER_BIN=${ARNIE_MILTER_BIN:-$top/build/milter/arnie-milter}
ARNIE_RELAY_BIN=${ARNIE_RELAY_BIN:-$top/build/relay/arnie-relay}
export ARNIE_BIN ARNIE_MILTER_BIN ARNIE_RELAY_BIN
exec /usr/bin/python3 "$here/chaos.py" --seconds "$secs" --min-kills "$min" \
	--json "$@"
