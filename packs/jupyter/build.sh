#!/usr/bin/env bash
# Builds the JupyterLab pack's image without pulling any image: a Debian 12
# root file system made by mmdebstrap from Debian's packages, JupyterLab
# from PyPI (the versions pinned in requirements.txt) in a virtualenv at
# /opt/jupyter, and the settings in jupyter_server_config.py, imported into
# Docker with `docker import`. Why not `FROM` a base image:
# docs/decisions/0016-jupyter-pack-from-debian.md.
#
#   bash packs/jupyter/build.sh               # build (or reuse), print the image id
#   bash packs/jupyter/build.sh --print-hash  # the recipe's hash, nothing else
#
# The image is labelled dev.medforge.pack=jupyter and with the recipe's hash
# (every file in this folder): when Docker already has an image with that
# hash, nothing is built. The root file system is kept as a tarball under
# target/packs/ ($MEDFORGE_PACK_CACHE), so importing it into another Docker
# (the test harness's, whose data goes with it) needs no network.
#
# Docker is the one DOCKER_HOST names (default: /var/run/docker.sock).
# Environment: MEDFORGE_DEBIAN_MIRROR (http://deb.debian.org/debian),
# MEDFORGE_DEBIAN_SECURITY (http://deb.debian.org/debian-security),
# MEDFORGE_PACK_CACHE (<repository>/target/packs). Needs root (mmdebstrap
# builds as root) only when the tarball is not cached.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=jupyter
port=8888

# The recipe: every file here, by name and content.
recipe_hash() {
  (cd "$here" && LC_ALL=C find . -maxdepth 1 -type f -printf '%f\n' | LC_ALL=C sort |
    xargs sha256sum) | sha256sum | cut -c1-64
}
hash=$(recipe_hash)
if [ "${1:-}" = "--print-hash" ]; then
  echo "$hash"
  exit 0
fi

log() { printf 'packs/%s: %s\n' "$name" "$*" >&2; }

docker_cli=${DOCKER:-docker}
if ! "$docker_cli" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  log "Docker does not answer at ${DOCKER_HOST:-unix:///var/run/docker.sock} (start it, or set DOCKER_HOST)"
  exit 1
fi

existing=$("$docker_cli" image ls -q --no-trunc --filter "label=dev.medforge.pack.recipe=$hash" | head -n1)
if [ -n "$existing" ]; then
  log "image $existing exists for recipe $hash: nothing to build"
  echo "$existing"
  exit 0
fi

cache=${MEDFORGE_PACK_CACHE:-$repo/target/packs}
tarball="$cache/$name-$hash.tar"
if [ ! -f "$tarball" ]; then
  command -v mmdebstrap >/dev/null || {
    log "mmdebstrap is missing: apt-get install -y mmdebstrap (scripts/install-deps.sh installs it)"
    exit 1
  }
  mirror=${MEDFORGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  security=${MEDFORGE_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
  mkdir -p "$cache"
  partial="$tarball.partial"
  rm -f "$partial"
  trap 'rm -f "$partial"' EXIT
  started=$(date +%s)
  log "building the root file system (Debian bookworm from $mirror, JupyterLab from PyPI)"
  # customize.sh runs inside the build with the root file system as $1.
  export MEDFORGE_PACK_DIR="$here"
  mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --include=python3,python3-venv,ca-certificates,procps,less,git \
    --customize-hook="$here/customize.sh" \
    bookworm "$partial" \
    "deb $mirror bookworm main" \
    "deb $mirror bookworm-updates main" \
    "deb $security bookworm-security main"
  mv "$partial" "$tarball"
  # Only the recipe as it is now is worth keeping (half a gigabyte each).
  find "$cache" -maxdepth 1 -name "$name-*.tar" ! -path "$tarball" -delete
  log "root file system built in $(($(date +%s) - started)) s: $tarball ($(du -h "$tarball" | cut -f1))"
else
  log "reusing the root file system $tarball"
fi

version=$(sed -n 's/^jupyterlab==//p' "$here/requirements.txt")
description="JupyterLab $version on Debian 12 with Python 3.11; notebooks in /workspace. No CUDA libraries: install them into the workspace (pip) when you need them."
started=$(date +%s)
id=$("$docker_cli" import \
  --change "CMD [\"/opt/jupyter/bin/jupyter\", \"lab\"]" \
  --change "ENV PATH=/opt/jupyter/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV HOME=/workspace SHELL=/bin/bash LANG=C.UTF-8 PIP_USER=1" \
  --change "ENV JUPYTER_PORT=$port JUPYTER_RUNTIME_DIR=/tmp/jupyter/runtime XDG_CACHE_HOME=/tmp/cache" \
  --change "ENV NVIDIA_VISIBLE_DEVICES=void NVIDIA_DRIVER_CAPABILITIES=compute,utility CUDA_DEVICE_ORDER=PCI_BUS_ID" \
  --change "USER 1000:1000" \
  --change "WORKDIR /workspace" \
  --change "EXPOSE $port" \
  --change "LABEL dev.medforge.pack=$name dev.medforge.pack.port=$port dev.medforge.pack.recipe=$hash" \
  --change "LABEL dev.medforge.pack.display-name=JupyterLab" \
  --change "LABEL dev.medforge.pack.description=\"$description\"" \
  "$tarball" "medforge-pack-$name:${hash:0:12}")
log "imported in $(($(date +%s) - started)) s as medforge-pack-$name:${hash:0:12}"
echo "$id"
