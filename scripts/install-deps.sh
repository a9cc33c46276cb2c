#!/usr/bin/env bash
# Installs what MedForge and its tests need on Debian, as root, only when missing.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
want() { # want <command> <package>
  have "$1" || need_apt+=("$2")
}

want dockerd docker.io
want zfs-fuse zfs-fuse
want caddy caddy
want ip iproute2
want iptables iptables
want nsenter util-linux
want kubectl kubernetes-client
want wrk wrk
want curl curl
want python3 python3
# The api fuzzer's virtualenv needs venv (a separate package on Debian).
if have python3 && ! python3 -m venv --help >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
want cc gcc
want python3 python3
# The virtualenv module, which Debian ships apart.
if have python3 && ! python3 -m venv --help >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
# PostgreSQL's server binaries live outside PATH on Debian.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# glibc's static library, for the statically linked test workload.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q "${need_apt[@]}"
fi

if ! have cargo; then
  echo "install-deps: cargo is missing: install a Rust toolchain (rustup, Rust >= 1.95) first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "install-deps: installing cargo-nextest"
  cargo install --locked cargo-nextest
fi

# The api fuzzer (tests/api_fuzz.rs): Schemathesis and openapi-spec-validator
# with everything they pull in, pinned in scripts/fuzz-requirements.txt, in a
# virtualenv of their own. Reinstalled only when that list changes.
fuzz_venv=${MEDFORGE_FUZZ_VENV:-/opt/medforge/tools/fuzz}
fuzz_reqs="$(cd "$(dirname "$0")" && pwd)/fuzz-requirements.txt"
fuzz_sum=$(sha256sum "$fuzz_reqs" | cut -d' ' -f1)
if [ "$(cat "$fuzz_venv/.requirements.sha256" 2>/dev/null)" != "$fuzz_sum" ] ||
  ! "$fuzz_venv/bin/st" --version >/dev/null 2>&1; then
  echo "install-deps: installing the api fuzzer into $fuzz_venv"
  mkdir -p "$(dirname "$fuzz_venv")"
  python3 -m venv --clear "$fuzz_venv"
  "$fuzz_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$fuzz_reqs"
  "$fuzz_venv/bin/st" --version >/dev/null
  echo "$fuzz_sum" >"$fuzz_venv/.requirements.sha256"
fi
