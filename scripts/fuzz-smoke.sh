#!/usr/bin/env bash
# fuzz-smoke.sh BUILD_DIR SECONDS - run every libFuzzer target in BUILD_DIR
# for a bounded time from its seed corpus; fails on any crash or abort.
set -euo pipefail
build=$(cd "$1" && pwd)
secs=${2:-20}
top=$(cd "$(dirname "$0")/.." && pwd)
pass=0
for bin in "$build"/tests/fuzz_*; do
	[ -x "$bin" ] || continue
	name=$(basename "$bin")
	work=$(mktemp -d)
	cp -r "$top/tests/fuzz/corpus/${name#fuzz_}"/. "$work"/ 2>/dev/null || true
	echo "fuzz: $name for ${secs}s"
	if ! (cd "$work" && "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 "$work" >"$work/log" 2>&1); then
		tail -40 "$work/log"
		echo "fuzz: $name FAILED (crash input kept in $work)"
		echo "fuzz: $pass passed, 1 failed"
		exit 1
	fi
	grep -E "^(#[0-9]+|stat::number_of_executed_units)" "$work/log" | tail -2
	rm -rf "$work"
	pass=$((pass + 1))
done
[ "$pass" -gt 0 ] || { echo "fuzz: no fuzz targets in $build/tests"; exit 1; }
echo "fuzz: $pass passed, 0 failed"
