#!/usr/bin/env bash
# container-test.sh - build the smtpsink container image with podman and test
# it the way a CI job uses it, without any image registry:
#
#   1. a Debian 12 root file system made with debootstrap (variant minbase)
#      from this machine's Debian mirror, slimmed like debian:bookworm-slim,
#      is imported into podman under the Dockerfile's FROM name (cached in
#      build-container/ and in podman's store: reruns skip this);
#   2. podman builds the Dockerfile (--format docker, so HEALTHCHECK is kept);
#   3. the image is checked (non-root, HEALTHCHECK, ports, env, entrypoint)
#      and run, published on 127.0.0.1 only: the ready line, the health
#      check up and down, mail from the host with Python's smtplib (plain and
#      STARTTLS + AUTH), a stop by SIGTERM, and the exit status and counters
#      that SMTPSINK_EXPECT / --expect / SMTPSINK_JSON make of it.
#
# Needs root, podman, runc, debootstrap (Debian: podman runc debootstrap
# containernetworking-plugins iptables) and the Debian mirror.  Where they are
# missing it prints "SKIP: <reason>" and exits 77.  Every step is bounded in
# time; containers are removed on exit, whatever happens.  The built image
# (localhost/smtpsink:test, its build stage :test-build) and the base stay in
# podman's store as the cache; images of earlier runs are removed.
#
# Environment: SINK_CONTAINER_CACHE (default build-container),
# SINK_DEBIAN_MIRROR / SINK_DEBIAN_SECURITY (default: from /etc/apt sources),
# SINK_CONTAINER_REBUILD_BASE=1 to debootstrap the base again.
# Prints "container-test: N passed, N failed"; exit 0, 1 (a check failed) or 77.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${SINK_CONTAINER_CACHE:-build-container}
IMAGE=localhost/smtpsink:test
SUITE=bookworm
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)
NAME=smtpsink-ct-$$
t_start=$(date +%s)
passed=0 failed=0
containers=()

say() { printf 'container-test: %s\n' "$*"; }
skip() {
	say "SKIP: $*"
	exit 77
}
ok() {
	passed=$((passed + 1))
	say "ok: $*"
}
bad() {
	failed=$((failed + 1))
	say "FAIL: $*"
}
check() { # check DESCRIPTION COMMAND...: one test
	local what=$1
	shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}
elapsed() { echo "$(($(date +%s) - t_start))s"; }

cleanup() {
	local c
	for c in "${containers[@]}"; do
		timeout 30 "${PODMAN[@]}" rm -f -t 2 "$c" >/dev/null 2>&1 || true
	done
	[ -z "${tmp:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- can this machine do it? -----------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "needs root (podman with runc and cgroupfs, as root)"
for c in podman runc debootstrap timeout python3 tar; do
	command -v "$c" >/dev/null ||
		skip "$c not installed (Debian: apt-get install podman runc debootstrap containernetworking-plugins iptables)"
done
if ! out=$(timeout 60 "${PODMAN[@]}" info 2>&1 >/dev/null); then
	skip "podman cannot run here: $(printf '%s' "$out" | tail -n 1)"
fi

# host_uri SUITE: the first Debian archive URI that /etc/apt serves SUITE from.
host_uri() {
	local suite=$1 f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		awk -v s="$suite" '$1 == "deb" { i = 2
			if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
			if ($(i + 1) == s) { print $i; exit } }' "$f"
	done
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk -v s="$suite" 'BEGIN { RS = ""; FS = "\n" } {
			uri = ""; hit = 0; deb = 0
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
				if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb = 1
				if ($i ~ /^Suites:/) { n = split($i, a, /[ \t]+/); for (j = 2; j <= n; j++) if (a[j] == s) hit = 1 }
			}
			if (hit && deb && uri != "") { print uri; exit } }' "$f"
	done
}
MIRROR=${SINK_DEBIAN_MIRROR:-$(host_uri "$SUITE" | head -n 1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY=${SINK_DEBIAN_SECURITY:-$(host_uri "$SUITE-security" | head -n 1)}
SECURITY=${SECURITY:-http://deb.debian.org/debian-security}
MIRROR=${MIRROR%/} SECURITY=${SECURITY%/}
reachable() { timeout 30 python3 -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=20).read(1)' "$1" 2>/dev/null; }
reachable "$MIRROR/dists/$SUITE/Release" || skip "Debian mirror $MIRROR unreachable"
if ! reachable "$SECURITY/dists/$SUITE-security/Release"; then
	say "note: $SECURITY unreachable; the base has no security suite"
	SECURITY=""
fi

BASE=$(awk 'toupper($1) == "FROM" { print $2; exit }' Dockerfile)
[ -n "$BASE" ] || skip "no FROM line in Dockerfile"
case $BASE in */*) ;; *) BASE=docker.io/library/$BASE ;; esac
tmp=$(mktemp -d)

# The mirrors' host names, as this machine resolves them, for apt inside the
# build (podman's /etc/hosts in a container does not copy the host's).
add_hosts=()
for u in "$MIRROR" "$SECURITY"; do
	[ -n "$u" ] || continue
	h=${u#*://}
	h=${h%%/*}
	h=${h%%:*}
	ip=$(getent ahostsv4 "$h" | awk '{ print $1; exit }') || true
	[ -z "$ip" ] || add_hosts+=("--add-host=$h:$ip")
done

# --- 1. the base image: debootstrap, slim, import --------------------------
make_base() {
	local root=$CACHE/rootfs tar=$CACHE/debian-$SUITE-slim.tar
	mkdir -p "$CACHE"
	if [ ! -s "$tar" ] || [ "${SINK_CONTAINER_REBUILD_BASE:-}" = 1 ]; then
		rm -rf "$root" "$tar"
		say "debootstrap $SUITE (minbase) from $MIRROR"
		if ! timeout 900 debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" \
			>"$CACHE/debootstrap.log" 2>&1; then
			tail -n 5 "$CACHE/debootstrap.log"
			rm -rf "$root"
			bad "debootstrap (log: $CACHE/debootstrap.log)"
			return 1
		fi
		# apt sources as in the official image, on this machine's mirror
		rm -f "$root/etc/apt/sources.list"
		{
			printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
				"$MIRROR" "$SUITE" "$SUITE"
			printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
			if [ -n "$SECURITY" ]; then
				printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' \
					"$SECURITY" "$SUITE"
				printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
			fi
		} >"$root/etc/apt/sources.list.d/debian.sources"
		# slim, as debian:*-slim: no docs, man pages or locales from dpkg,
		# no apt caches or translations
		cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<-'EOF'
			path-exclude /usr/share/doc/*
			path-include /usr/share/doc/*/copyright
			path-exclude /usr/share/man/*
			path-exclude /usr/share/groff/*
			path-exclude /usr/share/info/*
			path-exclude /usr/share/lintian/*
			path-exclude /usr/share/linda/*
			path-exclude /usr/share/locale/*
			path-include /usr/share/locale/locale.alias
		EOF
		printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
		cat >"$root/etc/apt/apt.conf.d/docker-clean" <<-'EOF'
			DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
			APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
			Dir::Cache::pkgcache "";
			Dir::Cache::srcpkgcache "";
		EOF
		find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
		find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
		rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/groff/* \
			"$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
			"$root"/var/lib/apt/lists/* "$root"/var/log/*.log "$root"/var/log/apt/*
		find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
			-exec rm -rf {} +
		: >"$root/etc/resolv.conf"
		rm -f "$root/etc/hostname"
		tar -C "$root" --numeric-owner -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
		rm -rf "$root"
	fi
	say "importing $tar as $BASE"
	if ! timeout 300 "${PODMAN[@]}" import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["bash"]' "$tar" "$BASE" >/dev/null; then
		bad "podman import $tar"
		return 1
	fi
}

if [ "${SINK_CONTAINER_REBUILD_BASE:-}" = 1 ] ||
	! timeout 60 "${PODMAN[@]}" image exists "$BASE"; then
	if make_base; then ok "base image $BASE ($(elapsed))"; else
		say "$passed passed, $failed failed"
		exit 1
	fi
else
	say "base image $BASE already in podman's store"
fi

# --- 2. build --------------------------------------------------------------
old_id=$(timeout 60 "${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
say "building $IMAGE"
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if timeout 900 "${PODMAN[@]}" build --format docker --pull=never --network host \
	"${add_hosts[@]}" --label "org.opencontainers.image.revision=$rev" \
	--build-arg "GIT_REV=$rev" \
	-t "$IMAGE" -f Dockerfile . >"$tmp/build.log" 2>&1; then
	ok "podman build ($(elapsed))"
else
	tail -n 30 "$tmp/build.log"
	bad "podman build"
	say "$passed passed, $failed failed"
	exit 1
fi
grep -i 'warn' "$tmp/build.log" | grep -vi 'debconf' | sed 's/^/  build: /' || true
# Keep the build stage tagged (from the cache: a second or two) so that its
# layers, the compiler packages above all, stay cached for the next run; then
# drop the image this build replaced and the untagged leftovers of old builds.
timeout 300 "${PODMAN[@]}" build --format docker --pull=never --network host \
	"${add_hosts[@]}" --target build -t "$IMAGE-build" -f Dockerfile . >/dev/null 2>&1 || true
new_id=$(timeout 60 "${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
	timeout 120 "${PODMAN[@]}" rmi "$old_id" >/dev/null 2>&1 || true
fi
timeout 120 "${PODMAN[@]}" image prune -f >/dev/null 2>&1 || true

# --- 3. the image's configuration -----------------------------------------
cfg() { timeout 60 "${PODMAN[@]}" image inspect --format "$1" "$IMAGE"; }
check "runs as the non-root user smtpsink" test "$(cfg '{{.Config.User}}')" = smtpsink
check "HEALTHCHECK runs smtpsink check" \
	grep -q '\[CMD smtpsink check\]' <<<"$(cfg '{{.Config.Healthcheck.Test}}')"
check "ENTRYPOINT is smtpsink" test "$(cfg '{{json .Config.Entrypoint}}')" = '["smtpsink"]'
check "SMTPSINK_LISTEN=0.0.0.0:2525 in the environment" \
	grep -q 'SMTPSINK_LISTEN=0.0.0.0:2525' <<<"$(cfg '{{json .Config.Env}}')"
check "EXPOSE 2525 and 8025" \
	grep -qE '2525/tcp.*8025/tcp|8025/tcp.*2525/tcp' <<<"$(cfg '{{json .Config.ExposedPorts}}')"
say "image size: $(cfg '{{.Size}}' | awk '{ printf "%.0f MB", $1 / 1e6 }')"

# --- 4. running it ---------------------------------------------------------
# podman asks for RLIMIT_NOFILE 1048576 and a large RLIMIT_NPROC by default;
# where this process may not raise its limits that far (sandboxes: runc then
# fails with "error setting rlimits"), ask for what it has, and 4096
# processes (smtpsink needs one thread per CPU).
ulimit=(--ulimit nproc=4096:4096)
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 1048576 ]; then
	ulimit+=(--ulimit "nofile=$hard:$hard")
fi
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME PORT ARGS...: podman run -d, published on 127.0.0.1:PORT only.
start() {
	local name=$1 port=$2
	shift 2
	containers+=("$name")
	timeout 120 "${PODMAN[@]}" run -d --name "$name" -p "127.0.0.1:$port:2525" "${ulimit[@]}" "$@" \
		>/dev/null 2>"$tmp/$name.run" || {
		cat "$tmp/$name.run"
		return 1
	}
}

logs() { timeout 30 "${PODMAN[@]}" logs "$1" 2>&1; }

# wait_ready NAME: the "smtpsink: ready" line (testcontainers' wait-for-log).
wait_ready() {
	for _ in $(seq 1 100); do
		logs "$1" | grep -q '^smtpsink: ready$' && return 0
		[ "$(state "$1")" = running ] || return 1
		sleep 0.2
	done
	return 1
}

state() { timeout 30 "${PODMAN[@]}" inspect --format '{{.State.Status}}' "$1" 2>/dev/null; }

# wait_healthy NAME: run the image's HEALTHCHECK until it passes (30 s).
wait_healthy() {
	for _ in $(seq 1 30); do
		timeout 20 "${PODMAN[@]}" healthcheck run "$1" >/dev/null 2>&1 && return 0
		sleep 1
	done
	return 1
}

# exit_status NAME: wait (bounded) for the container to end; its exit code.
exit_status() {
	for _ in $(seq 1 150); do
		[ "$(state "$1")" = exited ] && break
		sleep 0.2
	done
	timeout 30 "${PODMAN[@]}" inspect --format '{{.State.ExitCode}}' "$1"
}

# send PORT N [tls]: N messages from the host through the published port.
send() {
	timeout 60 python3 - "$@" <<-'EOF'
		import smtplib, ssl, sys
		port, n = int(sys.argv[1]), int(sys.argv[2])
		tls = len(sys.argv) > 3
		for i in range(n):
		    s = smtplib.SMTP("127.0.0.1", port, timeout=10)
		    if tls:
		        s.starttls(context=ssl.create_default_context(cafile=sys.argv[3]))
		        s.login("user", "secret")
		    s.sendmail("ci@example.test", ["sink@example.test"],
		               "Subject: container test %d\r\n\r\nhello\r\n" % i)
		    try:
		        s.quit()
		    except smtplib.SMTPResponseException as e:
		        # after --exit-after's last message the sink is stopping and
		        # answers QUIT with 421 4.3.2; the message had its 250
		        if e.smtp_code != 421:
		            raise
		    except smtplib.SMTPServerDisconnected:
		        pass
	EOF
}

check_down() {
	local rc=0
	timeout 30 "${PODMAN[@]}" exec "$1" smtpsink check 127.0.0.1:1 2>/dev/null || rc=$?
	[ "$rc" = 1 ]
}

non_root() {
	local u
	u=$(timeout 30 "${PODMAN[@]}" exec "$1" id -u) && [ -n "$u" ] && [ "$u" != 0 ]
}

json_get() { # json_get FILE EXPR: EXPR evaluated on the parsed JSON (j)
	python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# Run 1: configured only by environment, as a CI service; health; 3 messages;
# SIGTERM; SMTPSINK_EXPECT holds -> exit 0; the JSON report.
port=$(free_port)
c1=$NAME-env
if start "$c1" "$port" -e SMTPSINK_EXPECT=messages=3,rejected_messages=0 \
	-e SMTPSINK_JSON=/tmp/summary.json -e SMTPSINK_HOSTNAME=ct.example.test "$IMAGE"; then
	check "ready line 'smtpsink: ready' in the log" wait_ready "$c1"
	check "health check passes (podman healthcheck run)" wait_healthy "$c1"
	hs=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.State.Health.Status}}' "$c1" 2>/dev/null ||
		timeout 30 "${PODMAN[@]}" inspect --format '{{.State.Healthcheck.Status}}' "$c1")
	check "podman reports the container healthy ($hs)" test "$hs" = healthy
	check "smtpsink check fails (exit 1) on a port nobody listens on" check_down "$c1"
	check "the sink runs as a non-root uid" non_root "$c1"
	backend=$(logs "$c1" | grep -oE '(io_uring|epoll) backend' | head -n 1 || true)
	say "backend in the container: ${backend:-unknown}$(logs "$c1" | grep -q 'using epoll' &&
		echo ' (io_uring blocked: fell back by itself)')"
	check "3 messages over the published 127.0.0.1:$port" send "$port" 3
	check "greeting names SMTPSINK_HOSTNAME" python3 -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
sys.exit(b"ct.example.test" not in s.recv(512))' "$port"
	timeout 60 "${PODMAN[@]}" stop -t 15 "$c1" >/dev/null 2>&1 || true
	rc=$(exit_status "$c1")
	check "SIGTERM with SMTPSINK_EXPECT holding: exit 0 (got $rc)" test "$rc" = 0
	if timeout 30 "${PODMAN[@]}" cp "$c1:/tmp/summary.json" "$tmp/summary.json" 2>/dev/null; then
		check "SMTPSINK_JSON report: messages=3" \
			test "$(json_get "$tmp/summary.json" 'j["counters"]["messages"]')" = 3
		check "SMTPSINK_JSON report: stopped by SIGTERM" \
			grep -qi 'term' <<<"$(json_get "$tmp/summary.json" 'j["stop_reason"]')"
	else
		bad "SMTPSINK_JSON report copied out of the container"
	fi
else
	bad "podman run (environment configuration)"
fi
if [ "$failed" -gt 0 ]; then logs "$c1" | tail -n 20 | sed 's/^/  log: /'; fi

# Run 2: an expectation that fails -> exit 3, naming the actual value.
port=$(free_port)
c2=$NAME-fail
if start "$c2" "$port" -e SMTPSINK_EXPECT=messages=5 "$IMAGE"; then
	wait_ready "$c2" || true
	check "1 message (run with SMTPSINK_EXPECT=messages=5)" send "$port" 1
	timeout 60 "${PODMAN[@]}" stop -t 15 "$c2" >/dev/null 2>&1 || true
	rc=$(exit_status "$c2")
	check "failed expectation: exit 3 (got $rc)" test "$rc" = 3
	check "failed expectation named in the log" \
		grep -q 'expectation failed: messages=5, but messages is 1' <<<"$(logs "$c2")"
else
	bad "podman run (failing expectation)"
fi

# Run 3: flags after the image name (they win over the environment), STARTTLS
# with a self-signed certificate, AUTH any, --exit-after: ends by itself.
port=$(free_port)
c3=$NAME-tls
if start "$c3" "$port" -e SMTPSINK_EXIT_AFTER=99 -e SMTPSINK_TLS_SELF_SIGNED=1 \
	-e SMTPSINK_AUTH=any "$IMAGE" --exit-after 2 --tls-cert-out cert.pem \
	--expect messages=2 --expect auth_plain_ok=2 --expect starttls=2; then
	wait_ready "$c3" || true
	if timeout 30 "${PODMAN[@]}" cp "$c3:/var/lib/smtpsink/cert.pem" "$tmp/cert.pem" 2>/dev/null; then
		check "2 messages over STARTTLS (verified certificate) with AUTH" \
			send "$port" 2 "$tmp/cert.pem"
	else
		bad "--tls-cert-out certificate copied out of the container"
	fi
	rc=$(exit_status "$c3")
	check "--exit-after 2 (flag over SMTPSINK_EXIT_AFTER=99): stopped by itself, exit 0 (got $rc)" \
		test "$rc" = 0
else
	bad "podman run (flags, TLS, AUTH)"
fi

# Run 4: docs/ci.md's GitHub Actions services block as written: its
# options (health command and timings), its env, and its verdict step with
# podman for docker and the container's id for ${{ job.services.smtp.id }};
# the port is published on 127.0.0.1 here.  Enough messages -> the step exits
# 0; one message short -> 3.
docs_block() { # docs_block WHAT: "options" (NUL-separated), "env" or "verdict"
	python3 - docs/ci.md "$1" <<-'EOF'
		import re, shlex, sys
		text = open(sys.argv[1]).read()
		block = text.split("<!-- ci-doc-test: services", 1)[1].split("```yaml\n", 1)[1]
		lines = block.split("```", 1)[0].splitlines()
		def under(key):  # the lines indented below "key:" (first occurrence)
		    for i, l in enumerate(lines):
		        if l.strip().startswith(key):
		            ind = len(l) - len(l.lstrip())
		            out = []
		            for m in lines[i + 1:]:
		                if m.strip() and len(m) - len(m.lstrip()) <= ind:
		                    break
		                out.append(m.strip())
		            return [m for m in out if m and not m.startswith("#")]
		    sys.exit("docs/ci.md services block: no " + key)
		what = sys.argv[2]
		if what == "options":
		    sys.stdout.write("\0".join(shlex.split(" ".join(under("options:")))) + "\0")
		elif what == "env":
		    for l in under("env:"):
		        k, v = l.split(":", 1)
		        print("%s=%s" % (k.strip(), v.strip()))
		else:
		    start = [i for i, l in enumerate(lines) if "smtpsink verdict" in l][0]
		    lines = lines[start:]
		    print("\n".join(under("run: |")))
	EOF
}

docs_run() { # docs_run N: the services block, N messages; the verdict step's status
	local name=$NAME-docs-$1 opts envs=() id rc=0
	mapfile -d '' -t opts < <(docs_block options)
	while IFS= read -r e; do envs+=(-e "$e"); done < <(docs_block env)
	docs_block verdict >"$tmp/verdict.sh"
	port=$(free_port)
	start "$name" "$port" "${opts[@]}" "${envs[@]}" "$IMAGE" || return 1
	wait_healthy "$name" || return 1
	send "$port" "$1" || return 1
	id=$(timeout 30 "${PODMAN[@]}" inspect --format '{{.Id}}' "$name")
	sed -i 's/\${{ *job\.services\.smtp\.id *}}/'"$id"'/g' "$tmp/verdict.sh"
	# the step's shell: bash -e, with docker being podman here
	export -f docker
	timeout 120 bash -e "$tmp/verdict.sh" >"$tmp/verdict.out" 2>&1 || rc=$?
	echo "$rc"
}
# shellcheck disable=SC2317 # called by the verdict step's script
docker() { timeout 60 podman --runtime runc --cgroup-manager cgroupfs "$@"; }

if grep -q '<!-- ci-doc-test: services' docs/ci.md; then
	want=$(docs_block env | grep -oE 'messages=[0-9]+' | head -n 1 | cut -d= -f2)
	check "docs/ci.md services block: SMTPSINK_EXPECT names a message count" test -n "$want"
	# started in subshells: named here so that cleanup removes them
	containers+=("$NAME-docs-${want:-1}" "$NAME-docs-$((${want:-1} - 1))")
	rc=$(docs_run "${want:-1}") || rc=none
	check "docs/ci.md services block, $want messages: verdict step exits 0 (got $rc)" test "$rc" = 0
	rc=$(docs_run $((${want:-1} - 1))) || rc=none
	check "docs/ci.md services block, one message short: verdict step exits 3 (got $rc)" \
		test "$rc" = 3
	check "... and its docker logs name the failed expectation" \
		grep -q 'expectation failed: messages=' "$tmp/verdict.out"
else
	bad "docs/ci.md has no '<!-- ci-doc-test: services' block"
fi

# A usage error is exit 2, before anything listens.
rc=0
timeout 60 "${PODMAN[@]}" run --rm "${ulimit[@]}" "$IMAGE" --no-such-option >/dev/null 2>&1 || rc=$?
check "usage error: exit 2 (got $rc)" test "$rc" = 2

say "took $(elapsed)"
say "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
