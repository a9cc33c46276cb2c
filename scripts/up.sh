#!/usr/bin/env bash
# Sets up and runs MedForge on this host (Debian, as root), from a fresh
# machine: installs the missing packages, builds the `medforge` binary and the
# static workload that the default Pack runs, then runs
# `medforge up --quickstart` in the foreground. The quickstart starts Docker
# when it is not running, creates a file-backed trial ZFS pool when no pool is
# configured, builds the default Pack, allows CPU-only sessions and starts
# Caddy with its internal CA; it reuses whatever a previous run left. It ends
# by printing the URL to open, how to sign in and the kubectl line.
# Extra arguments go to `medforge up` (see `medforge up --help`);
# `bash scripts/down.sh` stops what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

step "packages"
bash scripts/install-deps.sh
step "build medforge (release)"
cargo build --release --locked --bin medforge
step "build the static workload (the default Pack's image)"
triple="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS='-C target-feature=+crt-static' \
  cargo build --release --locked -p medforge-workload --target "$triple" --target-dir target/workload
step "medforge up --quickstart"
exec target/release/medforge up --quickstart \
  --workload-binary "target/workload/$triple/release/medforge-workload" "$@"
