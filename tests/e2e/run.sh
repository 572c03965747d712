#!/usr/bin/env bash
# jumpgate's browser tests: headless Chromium (Debian's) driven by playwright-core through the
# TLS gateway, against the fake JumpCloud and against oidc-provider. Installs what is missing
# (Chromium, the npm packages), builds examples/e2e_env.rs and runs the tests with node's test
# runner. Screenshots and the environment's log land in tests/e2e/screenshots/.
# Usage: bash tests/e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")"
E2E_DIR=$(pwd)
REPO=$(cd ../.. && pwd)

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "tests/e2e/run.sh: please install: ${need_apt[*]}" >&2
    exit 1
  fi
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "tests/e2e/run.sh: Node.js 20 or later is required (found $(node --version))" >&2
  exit 1
fi

# The pinned packages, installed from package-lock.json when missing or out of date.
if [ ! -d node_modules ] || ! npm ls --depth=0 >/dev/null 2>&1; then
  npm ci --no-audit --no-fund --loglevel=error
fi

(cd "$REPO" && cargo build --locked --example e2e_env)
export E2E_ENV_BIN="${CARGO_TARGET_DIR:-$REPO/target}/debug/examples/e2e_env"
case "$E2E_ENV_BIN" in /*) ;; *) E2E_ENV_BIN="$REPO/$E2E_ENV_BIN" ;; esac

mkdir -p "$E2E_DIR/screenshots"
# Bounded: the tests take well under a minute; a hung browser or process must not hang CI.
timeout --kill-after=15 "${E2E_TIMEOUT:-300}" \
  node --test --test-reporter=spec gateway.test.mjs
