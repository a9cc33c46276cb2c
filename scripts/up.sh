#!/usr/bin/env bash
# Sets up and runs MedForge on this host (Debian, as root): installs missing
# packages, builds the `medforge` binary, and runs `medforge up` in the
# foreground. Extra arguments go to `medforge up` (see `medforge up --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --locked --bin medforge
exec target/release/medforge up "$@"
