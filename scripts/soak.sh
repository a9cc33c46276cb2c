#!/usr/bin/env bash
# Runs the chaos soak (tests/soak.rs) on demand for SECS seconds of chaos
# (default 3600; CI runs the short one, 120 s, inside scripts/test.sh):
# the whole single host as separate processes on a private harness, users'
# load through Caddy, SIGKILLs at random, invariants checked throughout.
# The report is written to target/soak/report.md; the run fails on any
# violation. Needs root, like the tests. Usage: scripts/soak.sh [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3600}
case $secs in
  '' | *[!0-9]*) echo "soak.sh: SECS must be a whole number of seconds, not '$secs'" >&2; exit 2 ;;
esac
bash scripts/install-deps.sh
MEDFORGE_SOAK_SECS=$secs cargo test --locked --test soak -- --nocapture
echo "== report: target/soak/report.md"
