#!/usr/bin/env bash
# Runs every jumpgate fuzz target (libFuzzer, through cargo-fuzz) for a bounded time and fails
# on the first crash, leak or timeout. Usage: bash fuzz/run.sh [SECONDS_PER_TARGET]
#
# The seed corpus in fuzz/corpus/<target>/ is only read; inputs found during a run are kept
# in target/fuzz-corpus/<target>/ (not committed), so the corpus grows from run to run on
# one machine; a crashing input is kept under fuzz/artifacts/<target>/. The fuzz crate is
# held to the same formatting and lints as the gateway.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-${JUMPGATE_FUZZ_SECONDS:-40}}"
export CARGO_TERM_COLOR=never
# libFuzzer needs rustc's sanitizer and coverage flags, which are nightly-only; the stable
# toolchain accepts them when RUSTC_BOOTSTRAP is set.
export RUSTC_BOOTSTRAP=1

if ! command -v c++ >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  else
    echo "fuzz/run.sh: a C++ compiler is required to build libFuzzer (install g++)" >&2
    exit 1
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

# Every target, and exactly as many as there are: a target that stops being listed (a
# renamed file, a broken Cargo.toml entry) must not quietly stop being fuzzed.
expected=(canonical config cookie directory id_token return_to)
mapfile -t targets < <(cargo fuzz list | sort)
if [ "${targets[*]}" != "${expected[*]}" ]; then
  echo "fuzz/run.sh: expected targets: ${expected[*]}; cargo fuzz list says: ${targets[*]}" >&2
  exit 1
fi
cargo fmt -- --check
cargo clippy --all-targets -- -D warnings
# Release optimisations with debug assertions, overflow checks and AddressSanitizer.
cargo fuzz build

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
kept="../target/fuzz-corpus"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$kept/$t"
  before=$(find "$kept/$t" -type f | wc -l)
  echo "fuzz: $t for ${secs}s"
  if cargo fuzz run "$t" "$kept/$t" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=4096 >"$work/$t.log" 2>&1; then
    grep -E '^Done [0-9]+ runs' "$work/$t.log" || true
    echo "fuzz: $t corpus $before -> $(find "$kept/$t" -type f | wc -l) inputs"
  else
    echo "fuzz: $t FAILED; the end of its output:"
    tail -n 80 "$work/$t.log"
    failed+=("$t")
  fi
done
echo "fuzz: $(( ${#targets[@]} - ${#failed[@]} )) passed, ${#failed[@]} failed"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashing inputs are under fuzz/artifacts/: ${failed[*]}" >&2
  exit 1
fi
