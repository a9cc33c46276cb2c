# JupyterLab behind MedForge: the system-wide Jupyter Server settings of the
# pack's image (/etc/jupyter/jupyter_server_config.py). Caddy's forward_auth
# is the only gate in front of a session (docs/auth-and-routing.md): a request
# reaches this server only after the api said its user may open the session,
# so Jupyter's own token and password are off. What stays on, and why:
#
# - XSRF protection (Jupyter's default): a page on another site cannot make
#   the user's browser run code here, since POST/PUT/DELETE need the `_xsrf`
#   cookie echoed in the X-XSRFToken header, which JupyterLab does itself;
# - the Origin check of websockets and API calls: Caddy keeps the browser's
#   Host header, so same-origin requests pass and cross-site ones do not.
#
# The container runs as uid 1000 with a read-only root file system; its
# writable places are /workspace (HOME, the notebooks, persistent) and /tmp
# (a tmpfs: runtime files, per start). The port comes from JUPYTER_PORT (the
# image sets 8888, the Pack's port): a Pack with another port sets both.

c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)

# Listen on every interface of the container: the proxy reaches it over the
# sessions' network, never over loopback.
c.ServerApp.ip = "0.0.0.0"
# A busy port is an error, not a reason to move: the node agent waits for the
# Pack's port and Caddy sends requests there.
c.ServerApp.port_retries = 0
c.ServerApp.open_browser = False
# Sessions have a host of their own (s-<slug>.<domain>), so the server lives
# at the root of it.
c.ServerApp.base_url = "/"
# Requests arrive with the session's public host name, not localhost.
c.ServerApp.allow_remote_access = True
# Caddy sets X-Forwarded-For and -Proto: the logs show the user's address
# and redirects keep https.
c.ServerApp.trust_xheaders = True
c.ServerApp.root_dir = "/workspace"
# Deleting a file frees its space in the workspace's quota at once instead of
# moving it to a trash folder inside it; ZFS snapshots keep the history.
c.FileContentsManager.delete_to_trash = False
# No authentication of its own (see above). An empty token and no password
# make the server accept every request that reaches it.
c.IdentityProvider.token = ""
c.PasswordIdentityProvider.hashed_password = ""
c.PasswordIdentityProvider.password_required = False
# Kept explicit: XSRF checks stay on (Jupyter's default).
c.ServerApp.disable_check_xsrf = False
# "File > Shut Down" would end the container, which the node agent reports as
# a session that died; sessions are stopped through MedForge instead.
c.ServerApp.quit_button = False
# Never ask PyPI or jupyter.org for updates or news from inside a session:
# sessions may have no way out, and a name lookup that cannot be answered
# slows the container's stop.
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
c.LabApp.news_url = None
# Extensions cannot be installed from inside a session (the image's file
# system is read-only): the extension manager lists, it does not install.
c.LabApp.extension_manager = "readonly"
