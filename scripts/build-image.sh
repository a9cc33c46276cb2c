#!/usr/bin/env bash
# Builds the image of the `medforge` binary from this checkout's own build,
# without pulling anything: a root file system holding only the binary, the
# shared libraries it links (as `ldd` lists them, the dynamic loader
# included), the CA certificates, /tmp and a passwd/group naming the
# non-root user it runs as (65532), imported with `docker import` (FROM
# scratch, in effect). Labels: org.opencontainers.image.revision (the
# commit, `-dirty` when the tree has changes), .version, and
# dev.medforge.binary.sha256 (the binary's hash, which tests/image.rs checks
# against the build it runs with).
#
# Usage: scripts/build-image.sh [--release] [TAG]   (TAG: medforge:dev)
# Without --release it packs target/debug/medforge as it is (the test build).
# The Docker is the one DOCKER_HOST names. Prints the image id.
#
# It holds no iptables, nsenter or zfs: enough for `medforge api`,
# `medforge operator --no-agent` and `medforge apiserver`; a node agent's
# image needs those tools too (charts/medforge/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
if [ "${1:-}" = "--release" ]; then
  profile=release
  shift
fi
tag=${1:-medforge:dev}
log() { printf 'build-image: %s\n' "$*" >&2; }

# A release image is built here; the debug one takes the binary the
# workspace build made (scripts/test.sh: `cargo build --workspace
# --all-targets`, the binary the tests run), since `cargo build --bin
# medforge` would link it again with fewer features in its place.
if [ "$profile" = release ]; then
  cargo build --locked --release --bin medforge >&2
fi
bin=target/$profile/medforge
if [ ! -x "$bin" ]; then
  log "no $bin: run cargo build --workspace --all-targets first (or pass --release)"
  exit 1
fi

docker_cli=${DOCKER:-docker}
if ! "$docker_cli" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log "Docker does not answer at ${DOCKER_HOST:-unix:///var/run/docker.sock} (start it, or set DOCKER_HOST)"
  exit 1
fi

commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
  commit="$commit-dirty"
fi
version=$("$bin" --version | awk '{print $NF}')
sum=$(sha256sum "$bin" | cut -d' ' -f1)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -D -m 0755 "$bin" "$root/usr/local/bin/medforge"
# Every library the loader would map, at the path it looks for it, with the
# content of the file that path resolves to here.
libs=$(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
if [ -z "$libs" ]; then
  log "ldd lists no libraries for $bin (a static build needs none; this script expects a dynamic one)"
  exit 1
fi
for lib in $libs; do
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$root/etc"
printf 'medforge:x:65532:65532:medforge:/nonexistent:/nonexistent\n' >"$root/etc/passwd"
printf 'medforge:x:65532:\n' >"$root/etc/group"
install -d -m 1777 "$root/tmp"

tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$work/root.tar" .
id=$("$docker_cli" import \
  --change 'USER 65532:65532' \
  --change 'ENTRYPOINT ["/usr/local/bin/medforge"]' \
  --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
  --change "LABEL org.opencontainers.image.title=medforge org.opencontainers.image.revision=$commit org.opencontainers.image.version=$version" \
  --change "LABEL dev.medforge.binary.sha256=$sum dev.medforge.binary.profile=$profile" \
  "$work/root.tar" "$tag")
log "$tag: $id ($(du -h "$work/root.tar" | cut -f1), commit $commit, binary $profile ${sum:0:12})"
echo "$id"
