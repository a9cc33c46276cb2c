#!/usr/bin/env bash
# Sets up and runs every MedForge test on this machine (Debian, as root):
# installs missing packages, checks formatting and lints, brings up the test
# harness (dockerd in its own network namespace, zfs-fuse with a file-backed
# pool), runs the whole test suite with cargo-nextest, and tears the harness
# down again by PID. Ends with nextest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build"
cargo build --workspace --all-targets --locked

# The binary alone, with the features a user's `cargo build --bin medforge`
# resolves (tests and dev-dependencies unify more of them into the build above).
echo "== check the medforge binary alone"
cargo check --locked -p medforge --bin medforge

harness=target/debug/mf-harness
cleanup() {
  status=$?
  # Quiet on success, so nextest's summary stays the last line printed.
  if ! "$harness" down >target/harness-down.log 2>&1; then
    cat target/harness-down.log >&2
    echo "test.sh: harness teardown failed (log: target/harness-down.log)" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
echo "== harness up"
"$harness" up

echo "== tests"
cargo nextest run --workspace --locked --profile ci
