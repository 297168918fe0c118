#!/bin/sh
# Install dependencies, build, and run the whole test suite (unit tests,
# integration tests against real peers, milter tests with a private Postfix,
# the short chaos tests), then the same suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer, each fuzzer for FUZZ_SECONDS (60), the
# distribution check, and the packages (scripts/package.sh: the .deb built,
# linted, installed, run and purged; the RPM built).  Exits non-zero when
# any of them fails.
#
#   sh scripts/check.sh            everything (what CI runs)
#   QUICK=1 sh scripts/check.sh    the plain build's make check only
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
[ "$(id -u)" -eq 0 ] && sh scripts/install-deps.sh
sh scripts/build.sh

# make check in directory $1; prints the one-line count that CI reads and,
# on failure, the failing tests' logs.
run_check() {
	status=0
	(cd "$1" && make -j2 check) || status=$?
	awk '/^# PASS:/ { p = $3 } /^# (FAIL|ERROR|XPASS):/ { f += $3 }
	     /^# SKIP:/ { s = $3 }
	     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' \
		"$1/test-suite.log" 2>/dev/null || true
	if [ "$status" -ne 0 ]; then
		echo "Failing tests' logs:"
		for log in $(find "$1" -name '*.log' -path '*tests*'); do
			if grep -q '^:test-result: FAIL\|^:test-result: ERROR' \
			    "${log%.log}.trs" 2>/dev/null; then
				echo "==== $log"
				tail -n 60 "$log"
			fi
		done
	fi
	return "$status"
}

run_check build
[ -n "${QUICK:-}" ] && exit 0

# The same suite with ASan and UBSan.  Every report from any process (the
# daemons, their relay children, the unit tests) goes to a file of its own
# under $san: a report fails the run even when no test noticed it.
san=$top/build-asan/sanitizer-reports
mkdir -p build-asan
rm -rf "$san"
mkdir -p "$san"
if [ ! -f build-asan/Makefile ]; then
	(cd build-asan && ../configure -q --enable-sanitizers \
		--prefix=/usr/local --sysconfdir=/etc --localstatedir=/var)
fi
make -C build-asan -j"$(nproc)" >build-asan/build.log 2>&1 ||
	{ tail -n 40 build-asan/build.log; exit 1; }
ASAN_OPTIONS=log_path=$san/asan:detect_leaks=1 \
UBSAN_OPTIONS=log_path=$san/ubsan:print_stacktrace=1 \
	run_check build-asan
if [ -n "$(ls -A "$san")" ]; then
	echo "sanitizer reports:"
	head -n 40 "$san"/*
	exit 1
fi
echo "sanitizers: ok"

# Each fuzzer for a minute; a crash fails the run (its input is kept under
# FUZZ_BUILD/fuzz/artifacts/; tests/fuzz/README.md says what to do).
FUZZ_BUILD=$top/build-fuzz sh tests/fuzz/run.sh "${FUZZ_SECONDS:-60}"

# The tarball must build and pass the whole suite on its own, from a
# read-only source tree.
(cd build && make -j2 distcheck >distcheck.log 2>&1) || {
	tail -n 40 build/distcheck.log
	exit 1
}
echo "distcheck: ok"

# The Debian package, built, linted, installed, run and purged; the RPM
# built.  Installing needs root (CI runs as root).
if [ "$(id -u)" -eq 0 ]; then
	sh scripts/package.sh
	echo "package: ok"
else
	echo "package: skipped (needs root)"
fi
