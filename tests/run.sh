#!/usr/bin/env bash
# Runs the whole jumpgate test suite on a fresh machine: installs what the tests need,
# then runs every unit and integration test. Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cargo >/dev/null || { echo "tests/run.sh: cargo (Rust toolchain) is required" >&2; exit 1; }
command -v cc >/dev/null || need_apt+=(gcc)
command -v redis-server >/dev/null || need_apt+=(redis-server)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || need_apt+=(nginx-light)
[ -x /usr/bin/caddy ] || command -v caddy >/dev/null || need_apt+=(caddy)
# tests/ops/check.sh needs only the tools, promtool and systemd-analyze: without recommends,
# so prometheus does not bring the node exporter along.
need_tools=()
command -v promtool >/dev/null || need_tools+=(prometheus)
command -v systemd-analyze >/dev/null || need_tools+=(systemd)
if [ $((${#need_apt[@]} + ${#need_tools[@]})) -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    # Packages start their services when installed: prometheus would take 9090, and its init
    # script fails the install where it cannot start. The tests start what they need, so a
    # policy-rc.d answering 101 (which invoke-rc.d and deb-systemd-invoke both obey) keeps
    # every service down during the install; one that is already there is left alone.
    policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
    fi
    apt-get update -qq
    if [ ${#need_apt[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    fi
    if [ ${#need_tools[@]} -gt 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_tools[@]}"
    fi
    if [ -n "$policy" ]; then rm -f "$policy"; trap - EXIT; fi
  else
    echo "tests/run.sh: please install: ${need_apt[*]} ${need_tools[*]}" >&2; exit 1
  fi
fi

# The Redis tests use a real Redis on 127.0.0.1:6379 (their own key prefix, cleaned up);
# start one when none answers. It keeps nothing on disk.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "${TMPDIR:-/tmp}" --logfile "${TMPDIR:-/tmp}/jumpgate-test-redis.log"
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

cargo build --locked --all-targets
# The suite is bounded as a whole, so a hang fails the run instead of eating CI's time
# (every request a test makes has its own, shorter timeout). TERM first, KILL a minute later.
timeout --kill-after=60 "${JUMPGATE_TEST_TIMEOUT:-2400}" \
  cargo test --locked --all-targets -- --test-threads="${JUMPGATE_TEST_THREADS:-4}"

# The operator-side files: alerting rules and their tests, the Grafana dashboard, the systemd
# unit (see tests/ops/check.sh).
timeout 300 bash tests/ops/check.sh

# Browser tests: headless Chromium through the gateway (see README, "Browser tests").
timeout --kill-after=60 "${JUMPGATE_E2E_TIMEOUT:-1200}" bash tests/e2e/run.sh
