#!/usr/bin/env bash
# Stops, by PID, what `bash scripts/up.sh` (`medforge up --quickstart`)
# started: MedForge, Caddy, and Docker and zfs-fuse when it started them.
# Keeps the data; `bash scripts/down.sh --purge` also destroys the trial pool
# and removes the data directory. Extra arguments go to `medforge down`.
set -euo pipefail
cd "$(dirname "$0")/.."
exec target/release/medforge down "$@"
