#!/bin/sh
# mmdebstrap's customize hook for the JupyterLab pack (build.sh runs it):
# $1 is the new root file system, Debian's packages already in it. Adds the
# user the agent runs sessions as, JupyterLab in a virtualenv from PyPI and
# the server's settings.
set -eu
root=$1
pack=${MEDFORGE_PACK_DIR:?set by build.sh}

# uid/gid 1000, as the node agent runs every session (and as Jupyter's own
# images name it); its home is the workspace.
chroot "$root" groupadd --gid 1000 jovyan
chroot "$root" useradd --uid 1000 --gid 1000 --no-create-home \
  --home-dir /workspace --shell /bin/bash jovyan
# The mount point of the session's workspace.
mkdir -p "$root/workspace"
chown 1000:1000 "$root/workspace"

# JupyterLab and everything it needs, at the pinned versions and nothing
# else (--no-deps with the whole closure listed; `pip check` proves it is
# whole). System site-packages are visible so that `pip install --user`
# (PIP_USER=1 in the image) puts a user's packages into the workspace.
chroot "$root" python3 -m venv --system-site-packages /opt/jupyter
cp "$pack/requirements.txt" "$root/tmp/requirements.txt"
# The build machine's CA bundle: the way to PyPI may pass a proxy that only
# the host's trust store knows.
cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/build-ca.crt"
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root \
  /opt/jupyter/bin/pip install --quiet --no-cache-dir --disable-pip-version-check \
  --cert /tmp/build-ca.crt --no-deps --require-virtualenv -r /tmp/requirements.txt
chroot "$root" /opt/jupyter/bin/pip check --disable-pip-version-check
rm -f "$root/tmp/requirements.txt" "$root/tmp/build-ca.crt"

# The server's settings, system-wide (a user's own ~/.jupyter, in the
# workspace, may add to them).
mkdir -p "$root/etc/jupyter"
cp "$pack/jupyter_server_config.py" "$root/etc/jupyter/jupyter_server_config.py"

# Nothing the image needs at run time: apt's lists and caches, logs of the build.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
  "$root"/root/.cache "$root"/tmp/*
