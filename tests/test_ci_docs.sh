#!/usr/bin/env bash
# test_ci_docs.sh - run docs/ci.md's plain-binary example as written: the
# shell block after the "ci-doc-test: binary" marker, with the built smtpsink
# on PATH, a mail sender in place of ./run-my-tests.sh, a free loopback port
# in place of 2525 and a private directory in place of /tmp.  Sending what
# the example expects must give exit 0; sending less, exit 3 with the failed
# expectation named.
#
#   tests/test_ci_docs.sh SMTPSINK SOURCE_DIR
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: $0 SMTPSINK SOURCE_DIR" >&2
	exit 2
fi
smtpsink=$(realpath "$1") src=$2
doc=$src/docs/ci.md
passed=0 failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ok() {
	passed=$((passed + 1))
	echo "ok: $*"
}
fail() {
	failed=$((failed + 1))
	echo "FAIL: $*"
}

# the fenced block after the marker
awk '/<!-- ci-doc-test: binary/ { m = 1; next }
	m == 1 && /^```/ { m = 2; next }
	m == 2 && /^```/ { exit }
	m == 2 { print }' "$doc" >"$tmp/example.sh"
if [ ! -s "$tmp/example.sh" ]; then
	fail "no shell block after '<!-- ci-doc-test: binary' in $doc"
	echo "$passed passed, $failed failed"
	exit 1
fi
grep -q '^\./run-my-tests\.sh' "$tmp/example.sh" || fail "the example has no ./run-my-tests.sh line"
want=$(grep -oE -- '--expect messages=[0-9]+' "$tmp/example.sh" | grep -oE '[0-9]+$' || true)
[ -n "$want" ] || fail "the example has no --expect messages=N"
want=${want:-1}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/bin"
ln -s "$smtpsink" "$tmp/bin/smtpsink"
# run-my-tests.sh N: N messages to the sink (what "your tests" would do)
cat >"$tmp/bin/run-my-tests.sh" <<EOF
#!/bin/sh
exec timeout 30 python3 - "\$N" <<'PY'
import smtplib, sys
for i in range(int(sys.argv[1])):
    with smtplib.SMTP("127.0.0.1", $port, timeout=10) as s:
        s.sendmail("ci@example.test", ["sink@example.test"], "Subject: %d\r\n\r\nhi\r\n" % i)
PY
EOF
chmod +x "$tmp/bin/run-my-tests.sh"
sed -e "s|127\.0\.0\.1:2525|127.0.0.1:$port|g" -e "s|/tmp/|$tmp/|g" \
	-e 's|^\./run-my-tests\.sh|run-my-tests.sh|' "$tmp/example.sh" >"$tmp/run.sh"

# run N: the example with N messages sent; its exit status
run() {
	local rc=0
	(cd "$tmp" && rm -f smtpsink.ready smtpsink.json &&
		N=$1 PATH="$tmp/bin:$PATH" timeout 60 bash -e "$tmp/run.sh") >"$tmp/out" 2>&1 || rc=$?
	echo "$rc"
}

rc=$(run "$want")
if [ "$rc" = 0 ]; then ok "example with $want messages: exit 0"; else
	fail "example with $want messages: exit $rc"
	sed 's/^/    /' "$tmp/out"
fi
if [ -s "$tmp/smtpsink.json" ] &&
	python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1]))["counters"]["messages"] != int(sys.argv[2]))' \
		"$tmp/smtpsink.json" "$want"; then
	ok "its --json report counts $want messages"
else
	fail "its --json report (smtpsink.json) does not count $want messages"
fi
rc=$(run $((want - 1)))
if [ "$rc" = 3 ]; then ok "example with $((want - 1)) messages: exit 3"; else
	fail "example with $((want - 1)) messages: exit $rc (want 3)"
	sed 's/^/    /' "$tmp/out"
fi
if grep -q "expectation failed: messages=$want, but messages is $((want - 1))" "$tmp/out"; then
	ok "the failed expectation is named with the actual value"
else
	fail "no 'expectation failed' line naming the actual value"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
