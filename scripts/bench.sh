#!/usr/bin/env bash
# bench.sh [--quick] - `make bench`: install what the suites need, then run them
# (bench_suite.py, bench_tls.py, bench_proxy.py; each writes its own results/
# directory).
set -euo pipefail
cd "$(dirname "$0")/.."
SINK_DEPS_EXTRA="python3-aiosmtpd gnuplot-nox" scripts/deps.sh
/usr/bin/python3 scripts/bench_suite.py "$@"
# plaintext vs STARTTLS vs implicit TLS, aiosmtpd and smtp-sink beside
/usr/bin/python3 scripts/bench_tls.py "$@"
# two sinks behind HAProxy (PROXY v2) vs one direct, smtp-sink beside
exec /usr/bin/python3 scripts/bench_proxy.py "$@"
