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

# No module imports another that imports it back, in any crate's library or
# binary (docs/decisions/0009): cargo-modules' acyclic check, one target at a
# time (it stops at the first cycle of a target), every target checked
# before this step fails.
echo "== module cycles"
cargo_modules=${MEDFORGE_CARGO_MODULES_ROOT:-/opt/medforge/tools/cargo-modules}/bin/cargo-modules
targets=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "lib" in t["kind"]:
            print(p["name"], "--lib")
        elif "bin" in t["kind"]:
            print(p["name"], "--bin=" + t["name"])
')
cyclic=()
while read -r package target; do
  if ! "$cargo_modules" dependencies --package "$package" "$target" --acyclic --layout none; then
    cyclic+=("$package $target")
  fi
done <<<"$targets"
if [ ${#cyclic[@]} -gt 0 ]; then
  echo "test.sh: module cycles in: ${cyclic[*]}" >&2
  exit 1
fi

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
