#!/usr/bin/env bash
# Runs the whole jumpgate test suite on a fresh machine: installs what the tests need,
# then runs every unit and integration test. Usage: bash tests/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cargo >/dev/null || { echo "tests/run.sh: cargo (Rust toolchain) is required" >&2; exit 1; }
command -v cc >/dev/null || need_apt+=(gcc)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    echo "tests/run.sh: please install: ${need_apt[*]}" >&2; exit 1
  fi
fi

cargo build --locked --all-targets
cargo test --locked --all-targets -- --test-threads="${JUMPGATE_TEST_THREADS:-4}"
