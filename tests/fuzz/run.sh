#!/bin/sh
# Build Arnie's libFuzzer harnesses out of tree and run each for a while.
#
#   tests/fuzz/run.sh [SECONDS [TARGET...]]
#
# SECONDS (default 60) bounds each target (-max_total_time).  TARGETs are
# spool, smtp_parse, message, config, wire, logjson, stats (default: all), run FUZZ_JOBS (2) at a
# time.  The build goes to FUZZ_BUILD (default /tmp/build-fuzz), which is
# configured with CC=clang first if it holds no autoconf.h; binaries, corpora
# and crash files go to FUZZ_BUILD/fuzz/.  Each harness is linked directly
# with the sources it tests, with ASan and UBSan.  Exits non-zero if a build
# fails or a target finds a crash.  Not part of make check; scripts/check.sh
# (what CI runs) runs every target for 60 s.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-spool smtp_parse message config wire logjson stats}
build=${FUZZ_BUILD:-/tmp/build-fuzz}
jobs=${FUZZ_JOBS:-2}
cc=${FUZZ_CC:-clang}
out=$build/fuzz

cflags="-g -O1 -fno-omit-frame-pointer -Wall -Wextra
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"

if [ ! -f "$build/autoconf.h" ]; then
	mkdir -p "$build"
	(cd "$build" && CC=$cc "$top/configure" -q)
fi
mkdir -p "$out"

sources() {
	s=$top/shared
	case $1 in
	spool) echo "$s/spool.c $s/spares.c $s/envelope.c $s/xmalloc.c $s/log.c $s/logjson.c" ;;
	smtp_parse) echo "$top/standalone/smtp_parse.c $s/xmalloc.c $s/log.c $s/logjson.c" ;;
	message) echo "$s/message.c $s/timefmt.c $s/xmalloc.c $s/log.c $s/logjson.c" ;;
	config) echo "$s/config.c $s/dotenv.c $s/timefmt.c $s/xmalloc.c $s/secret.c $s/log.c $s/logjson.c" ;;
	wire) echo "$s/wire.c" ;;
	logjson) echo "$s/logjson.c $s/xmalloc.c $s/log.c" ;;
	stats) echo "$s/stats.c $s/xmalloc.c $s/log.c $s/logjson.c" ;;
	*) echo "run.sh: unknown target $1" >&2; return 1 ;;
	esac
}

for t in $targets; do
	src=$(sources "$t")
	echo "build fuzz_$t"
	# shellcheck disable=SC2086 # word splitting wanted
	$cc $cflags -I"$build" -iquote "$top/shared" \
	    -iquote "$top/standalone" -o "$out/fuzz_$t" \
	    "$here/fuzz_$t.c" $src -lpthread
done

run_one() {
	t=$1
	corpus=$out/corpus/$t
	mkdir -p "$corpus" "$out/artifacts/$t"
	# Seeds are read, never written: new inputs go to the corpus.
	rc=0
	"$out/fuzz_$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/" \
	    "$corpus" "$here/seeds/$t" </dev/null >"$out/$t.log" 2>&1 || rc=$?
	# The last status line (coverage, corpus, speed) and the totals.
	{ grep -E '^#[0-9]+' "$out/$t.log" | tail -n 1
	  grep -E '^stat::|^==[0-9]+==ERROR|^SUMMARY|^artifact_prefix|Test unit written' \
	      "$out/$t.log" || true; } | sed "s/^/$t: /"
	return $rc
}

fail=0
pids=
running=0
for t in $targets; do
	run_one "$t" &
	pids="$pids $!"
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		for p in $pids; do
			wait "$p" || fail=1
		done
		pids=
		running=0
	fi
done
for p in $pids; do
	wait "$p" || fail=1
done
if [ "$fail" -eq 0 ]; then
	echo "run.sh: no crash"
	exit 0
fi
echo "run.sh: CRASH.  Each input that crashed is under $out/artifacts/TARGET/;"
echo "fix the bug, then copy the input into tests/fuzz/seeds/TARGET/ and"
echo "commit it, so that every later run replays it first."
ls -l "$out"/artifacts/*/ 2>/dev/null || true
exit 1
