#!/bin/sh
# Install dependencies, build, and run the whole test suite (unit tests,
# integration tests against real peers, milter tests with a private Postfix),
# then the distribution check.  Exits non-zero when any test fails.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] && sh scripts/install-deps.sh
sh scripts/build.sh
cd build
status=0
make -j2 check || status=$?
# The one-line count that CI reads.
awk '/^# PASS:/ { p = $3 } /^# (FAIL|ERROR|XPASS):/ { f += $3 }
     /^# SKIP:/ { s = $3 }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' \
	test-suite.log 2>/dev/null || true
if [ "$status" -ne 0 ]; then
	echo "Failing tests' logs:"
	for log in $(find . -name '*.log' -path '*tests*'); do
		if grep -q '^:test-result: FAIL\|^:test-result: ERROR' \
		    "${log%.log}.trs" 2>/dev/null; then
			echo "==== $log"
			tail -n 60 "$log"
		fi
	done
	exit "$status"
fi
# The tarball must build and pass the whole suite on its own, from a
# read-only source tree.
make -j2 distcheck >distcheck.log 2>&1 || {
	tail -n 40 distcheck.log
	exit 1
}
echo "distcheck: ok"
