#!/usr/bin/env bash
# Installs what MedForge and its tests need on Debian, as root, only when missing.
# Safe to run again: it installs nothing that is already there.
set -euo pipefail

# `--check`: list what is missing and exit 1 if anything is, installing
# nothing (for a quick look; CI runs the script without it).
check_only=false
[ "${1:-}" = "--check" ] && check_only=true

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
want() { # want <command> <package>: the tests only run the command
  have "$1" || need_apt+=("$2")
}
installed() { # installed <package>: dpkg has it installed (not just known)
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}
want_package() { # want_package <package>: the tests need its own files
  installed "$1" || need_apt+=("$1")
}

# Docker: the harness starts dockerd itself and needs containerd, runc and
# docker-init next to it (testkit/src/process.rs lists them); any Docker
# that provides those works, so these are checked as commands.
want dockerd docker.io
want containerd containerd
want runc runc
want docker-init tini
# zfs-fuse by package: the harness talks to the zfs-fuse daemon with the
# `zpool` and `zfs` of that package; OpenZFS's (zfsutils-linux) on the PATH
# would pass a command check but drive the kernel module instead.
want_package zfs-fuse
want caddy caddy
want ip iproute2
want iptables iptables
want nsenter util-linux
# scripts/harness-diagnose.sh lists the daemons with ps when tests fail.
want ps procps
# kubectl: the tests run exactly /usr/bin/kubectl (not whatever is first on
# the PATH), so that file is checked, and that it runs. It is not checked as
# Debian's kubernetes-client package on purpose: on a machine where
# /usr/bin/kubectl comes from another package (Google Cloud SDK's `kubectl`,
# 1.32 here) that package would conflict with it, and Debian's
# kubernetes-client is older (1.20 in bookworm) than the kubectl (1.32) the
# tests were written and run against, whose output they read. A working
# /usr/bin/kubectl is never replaced; kubernetes-client is installed only
# when there is none (or it does not run).
/usr/bin/kubectl version --client >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# The image-pull tests run a registry (Debian's `docker-registry`) inside
# the harness's namespace, one of them with htpasswd logins (bcrypt, made
# by apache2-utils' htpasswd).
want docker-registry docker-registry
want htpasswd apache2-utils
want wrk wrk
want curl curl
want cc gcc
want python3 python3
# The api fuzzer's virtualenv needs venv (a separate package on Debian).
if have python3 && ! python3 -m venv --help >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
# PostgreSQL's server binaries live outside PATH on Debian: the suite runs
# initdb and pg_ctl of one /usr/lib/postgresql/<version>/bin, as the
# `postgres` user that the package creates.
pg_ok=false
for bin in /usr/lib/postgresql/*/bin; do
  [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && pg_ok=true
done
$pg_ok && id postgres >/dev/null 2>&1 || need_apt+=(postgresql)
# glibc's static library, for the statically linked test workload.
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -f /usr/lib/aarch64-linux-gnu/libc.a ] || need_apt+=(libc6-dev)
# The JupyterLab pack's image is built from Debian's packages, not pulled
# (packs/jupyter/build.sh): mmdebstrap makes its root file system.
want mmdebstrap mmdebstrap

if $check_only; then
  if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-deps: missing: ${need_apt[*]} (install with: bash scripts/install-deps.sh)"
    exit 1
  fi
  echo "install-deps: every Debian package the tests need is there"
  exit 0
fi

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

# The module-cycle check (scripts/test.sh; docs/decisions/0009):
# cargo-cycles at a pinned version, in a root of its own so that another
# one on the PATH is neither used nor replaced. Built only when that version
# is not there (about 3 minutes of CPU).
cargo_cycles_version=0.2.0
cargo_cycles_root=${MEDFORGE_CARGO_CYCLES_ROOT:-/opt/medforge/tools/cargo-cycles}
if [ "$("$cargo_cycles_root/bin/cargo-cycles" --version 2>/dev/null)" != "cargo-cycles $cargo_cycles_version" ]; then
  echo "install-deps: installing cargo-cycles $cargo_cycles_version into $cargo_cycles_root"
  cargo install --locked --force --version "$cargo_cycles_version" --root "$cargo_cycles_root" cargo-cycles
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

# Helm's engine for the chart check (tests/chart.rs runs
# scripts/chart-check.py): helm-python-sdk, pinned in
# scripts/helm-requirements.txt, in a virtualenv of its own. Reinstalled only
# when that list changes.
helm_venv=${MEDFORGE_HELM_VENV:-/opt/medforge/tools/helm}
helm_reqs="$(cd "$(dirname "$0")" && pwd)/helm-requirements.txt"
helm_sum=$(sha256sum "$helm_reqs" | cut -d' ' -f1)
if [ "$(cat "$helm_venv/.requirements.sha256" 2>/dev/null)" != "$helm_sum" ] ||
  ! "$helm_venv/bin/python" -c 'import helm_python' >/dev/null 2>&1; then
  echo "install-deps: installing Helm's engine (helm-python-sdk) into $helm_venv"
  mkdir -p "$(dirname "$helm_venv")"
  python3 -m venv --clear "$helm_venv"
  "$helm_venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$helm_reqs"
  "$helm_venv/bin/python" -c 'import helm_python' >/dev/null
  echo "$helm_sum" >"$helm_venv/.requirements.sha256"
fi
