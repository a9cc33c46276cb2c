#!/usr/bin/env bash
# Sets up and runs every MedForge test on this machine (Debian, as root):
# installs missing packages, checks formatting and lints, brings up the test
# harness (dockerd in its own network namespace, zfs-fuse with a file-backed
# pool), builds the JupyterLab pack's image into it, runs the whole test
# suite with cargo-nextest, and tears the harness down again by PID. Ends
# with nextest's summary line.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# No module imports another that imports it back, in any crate
# (docs/decisions/0009): cargo-cycles over each package's src/, every
# package checked before this step fails. It is run as `cargo-cycles`, not
# `cargo cycles` (it refuses the argument cargo passes), from the package's
# folder (it reads ./Cargo.toml).
echo "== module cycles"
cargo_cycles=${MEDFORGE_CARGO_CYCLES_ROOT:-/opt/medforge/tools/cargo-cycles}/bin/cargo-cycles
packages=$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    print(p["name"], os.path.dirname(p["manifest_path"]))
')
cyclic=()
while read -r package dir; do
  echo "-- $package ($dir/src)"
  if ! (cd "$dir" && "$cargo_cycles" --workspace "$dir/src"); then
    cyclic+=("$package")
  # cargo-cycles misses cycles made only of function imports; our own
  # text-based graph (scripts/module-cycles.py) counts every path.
  elif ! python3 scripts/module-cycles.py "$dir/src"; then
    cyclic+=("$package")
  fi
done <<<"$packages"
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
  # Bounded: a hung daemon must not hold CI until its own limit. Quiet on
  # success, so nextest's summary stays the last line printed.
  if ! timeout --kill-after=10 600 "$harness" down >target/harness-down.log 2>&1; then
    cat target/harness-down.log >&2
    echo "test.sh: harness teardown failed or took over 10 min (log: target/harness-down.log)" >&2
    bash scripts/harness-diagnose.sh >&2 || true
  fi
  exit "$status"
}
trap cleanup EXIT
echo "== harness up"
harness_vars=$(timeout --kill-after=10 600 "$harness" up)
echo "$harness_vars"

# The JupyterLab pack's image, into the harness's Docker, where
# tests/e2e_jupyter.rs runs it. Built from Debian's packages and PyPI: the
# one step here that reaches them (no test does). Its root file system is
# cached under target/packs/, and an image of the same recipe is reused.
echo "== the JupyterLab pack's image"
DOCKER_HOST=$(sed -n 's/^DOCKER_HOST=//p' <<<"$harness_vars") bash packs/jupyter/build.sh >/dev/null

# The medforge image (the binary of the build above, the libraries it links,
# non-root, labelled with the commit), into the harness's Docker, where
# tests/image.rs checks and runs it.
echo "== the medforge image"
DOCKER_HOST=$(sed -n 's/^DOCKER_HOST=//p' <<<"$harness_vars") bash scripts/build-image.sh >/dev/null

echo "== tests"
# Each test is ended after 5 min (.config/nextest.toml); the whole run gets
# 45 min, so that a wedged run still reports and tears down inside CI's limit.
tests=0
timeout --kill-after=30 2700 cargo nextest run --workspace --locked --profile ci || tests=$?
if [ "$tests" -ne 0 ]; then
  bash scripts/harness-diagnose.sh >&2 || true
  exit "$tests"
fi
