#!/usr/bin/env bash
# deps.sh - install the Debian packages the build and the tests need, once.
# Uses apt-get (with sudo when not root); does nothing when all are present.
set -euo pipefail

pkgs=(build-essential cmake pkg-config git clang libclang-rt-dev
      liburing-dev libjemalloc-dev libcriterion-dev libjansson-dev libssl-dev openssl
      libmicrohttpd-dev prometheus
      swaks msmtp curl python3 python3-aiosmtpd python3-yaml libnet-ssleay-perl libio-socket-ssl-perl
      libauthen-sasl-perl postfix man-db haproxy)
# libclang-rt-dev carries libFuzzer's runtime; clang only recommends it.
# python3-yaml: tests/integration/test_deploy_manifests.py parses deploy/kubernetes/.
[ -n "${SINK_DEPS_EXTRA:-}" ] && read -r -a extra <<<"$SINK_DEPS_EXTRA" && pkgs+=("${extra[@]}")

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing ${missing[*]}"
# postfix and haproxy are installed only as tools the tests start themselves
# (smtp-sink/smtp-source, a private smtpd instance with its own config dir -
# scripts/postfix_private.py; haproxy -f in front of smtpsink): answer
# postfix's debconf question and keep invoke-rc.d from starting the daemon.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod +x /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
