#!/usr/bin/env bash
# bench.sh [--quick] - `make bench`: install what the suite needs, then run it.
set -euo pipefail
cd "$(dirname "$0")/.."
SINK_DEPS_EXTRA="python3-aiosmtpd gnuplot-nox" scripts/deps.sh
exec /usr/bin/python3 scripts/bench_suite.py "$@"
