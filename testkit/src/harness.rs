//! Bringing the harness up (once, shared by all test processes), handing it
//! to tests, reporting on it and tearing it down.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::Docker;
use bytes::Bytes;
use hyper::Method;
use tokio::net::TcpStream;

use crate::dockerd;
use crate::error::{HarnessError, Result};
use crate::http::{self, HttpResponse};
use crate::image;
use crate::layout::{self, HarnessConfig, Layout};
use crate::netns;
use crate::process::{self, Binaries};
use crate::scope::TestScope;
use crate::zfs;

fn check_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(HarnessError::NotRoot {
            component: "harness",
        })
    }
}

fn open_lock(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(HarnessError::io(
            "harness",
            format!("cannot open lock file {}", path.display()),
        ))
}

/// Takes the machine-wide zfs-fuse lock (exclusive).
fn zfs_lock(layout: &Layout) -> Result<File> {
    if let Some(dir) = layout.zfs_lock_file.parent() {
        std::fs::create_dir_all(dir).map_err(HarnessError::io(
            "zfs-fuse",
            format!("cannot create {}", dir.display()),
        ))?;
    }
    let lock = open_lock(&layout.zfs_lock_file)?;
    lock.lock().map_err(HarnessError::io(
        "zfs-fuse",
        "cannot lock the zfs-fuse lock file",
    ))?;
    Ok(lock)
}

/// Brings every component up, reusing what runs, under the state lock.
fn bring_up(config: &HarnessConfig, layout: &Layout, bins: &Binaries) -> Result<()> {
    let lock = open_lock(&layout.lock_file)?;
    lock.lock().map_err(HarnessError::io(
        "harness",
        "cannot lock the state directory",
    ))?;
    netns::ensure(bins, layout)?;
    dockerd::ensure(bins, layout, config.start_timeout)?;
    let zfs_lock = zfs_lock(layout)?;
    let restarted = zfs::ensure_daemon(bins, layout, config.start_timeout)?;
    zfs::ensure_pool(bins, layout, config.pool_size_bytes, restarted)?;
    drop(zfs_lock);
    let info = serde_json::to_vec_pretty(layout)
        .map_err(|e| HarnessError::other("harness", format!("cannot encode the layout: {e}")))?;
    std::fs::write(&layout.info_file, info).map_err(HarnessError::io(
        "harness",
        format!("cannot write {}", layout.info_file.display()),
    ))?;
    Ok(())
}

/// Brings the harness up (or checks that it is up) and returns its layout.
/// Blocking; safe to call from many processes at once.
pub fn up(config: &HarnessConfig) -> Result<Layout> {
    let bins = Binaries::resolve(&config.search_path)?;
    check_root()?;
    let layout = config.layout()?;
    bring_up(config, &layout, &bins)?;
    Ok(layout)
}

/// Options of [`down`].
#[derive(Debug, Clone)]
pub struct DownOptions {
    /// How long to wait for test processes that hold the harness.
    pub wait: Duration,
    /// Tear down even while tests hold the harness.
    pub force: bool,
}

impl Default for DownOptions {
    fn default() -> Self {
        DownOptions {
            wait: Duration::from_secs(600),
            force: false,
        }
    }
}

/// What [`down`] did.
#[derive(Debug, Default, Clone)]
pub struct DownReport {
    pub containers_removed: usize,
    pub stopped: Vec<String>,
    pub notes: Vec<String>,
}

impl fmt::Display for DownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "containers removed: {}", self.containers_removed)?;
        for s in &self.stopped {
            writeln!(f, "stopped: {s}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        Ok(())
    }
}

/// Tears down what this harness started, by PID: its containers and dockerd,
/// its pool (and file), zfs-fuse if it started it and no other pool needs it,
/// the namespace and the state (logs and lock files stay). Blocking.
pub fn down(config: &HarnessConfig, options: &DownOptions) -> Result<DownReport> {
    let bins = Binaries::resolve(&config.search_path)?;
    check_root()?;
    let mut report = DownReport::default();
    if !config.state_dir.exists() {
        report.notes.push(format!(
            "no state directory {}: nothing to do",
            config.state_dir.display()
        ));
        return Ok(report);
    }
    let layout = config.layout()?;

    // Wait until no test process holds the harness (they hold a shared lock).
    let in_use = open_lock(&layout.in_use_file)?;
    if !options.force {
        let got = process::poll(options.wait, Duration::from_millis(100), || {
            match in_use.try_lock() {
                Ok(()) => Some(Ok(())),
                Err(TryLockError::WouldBlock) => None,
                Err(TryLockError::Error(e)) => Some(Err(e)),
            }
        });
        match got {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(HarnessError::io("harness", "cannot lock in-use file")(e)),
            None => {
                return Err(HarnessError::Busy {
                    state_dir: layout.state_dir.clone(),
                    detail: format!(
                        "still in use by running tests after {:?} (use --force)",
                        options.wait
                    ),
                });
            }
        }
    }
    let lock = open_lock(&layout.lock_file)?;
    lock.lock().map_err(HarnessError::io(
        "harness",
        "cannot lock the state directory",
    ))?;

    // 1. Containers, while dockerd still answers.
    if dockerd::ping(&layout.docker_socket) {
        match dockerd::remove_all_containers_blocking(&layout.docker_socket) {
            Ok(removed) => report.containers_removed = removed.len(),
            Err(e) => report.notes.push(format!("removing containers: {e}")),
        }
    }
    // 2. dockerd (and whatever is left of it).
    if let Some(pid) = dockerd::running_pid(&layout) {
        report.stopped.push(format!("dockerd (pid {pid})"));
    }
    dockerd::stop(&layout)?;

    // 3. The pool, then zfs-fuse if a harness started it and no pool needs it.
    let zfs_lock = zfs_lock(&layout)?;
    let pool_known = layout.pool_file.exists()
        || (zfs::daemon_running(&bins) && zfs::pool_health(&bins, &layout.pool).is_some());
    if pool_known {
        zfs::ensure_daemon(&bins, &layout, config.start_timeout)?;
        zfs::destroy_pool(&bins, &layout)?;
        report.stopped.push(format!("pool {}", layout.pool));
    }
    if let Some(pid) = zfs::our_daemon_pid(&layout) {
        match zfs::stop_daemon_if_ours(&bins, &layout)? {
            Some(note) => report.notes.push(note),
            None => report.stopped.push(format!("zfs-fuse (pid {pid})")),
        }
    } else {
        let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
    }
    drop(zfs_lock);

    // 4. The namespace.
    if netns::exists(&layout) {
        report.stopped.push(format!("netns {}", layout.netns));
    }
    netns::remove(&bins, &layout)?;

    // 5. The state, unless something is still mounted there.
    for dir in [&layout.docker_data_root, &layout.run_dir] {
        if !dir.exists() {
            continue;
        }
        let real = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let mounts = layout::mounts_under(&real);
        if mounts.is_empty() {
            std::fs::remove_dir_all(dir).map_err(HarnessError::io(
                "harness",
                format!("cannot remove {}", dir.display()),
            ))?;
        } else {
            report.notes.push(format!(
                "kept {}: still mounted: {}",
                dir.display(),
                mounts
                    .iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let _ = std::fs::remove_file(&layout.info_file);
    let _ = std::fs::remove_file(&layout.pool_file);
    Ok(report)
}

/// The observed state of each component.
#[derive(Debug, Clone)]
pub struct Status {
    pub layout: Layout,
    pub netns: bool,
    pub dockerd_pid: Option<i32>,
    pub dockerd_answers: bool,
    pub zfs_daemon: bool,
    /// PID of zfs-fuse when this harness started it.
    pub zfs_daemon_ours: Option<i32>,
    pub pool_health: Option<String>,
    pub pool_mounted: bool,
}

impl Status {
    /// Whether everything is up.
    pub fn is_up(&self) -> bool {
        self.netns
            && self.dockerd_answers
            && self.zfs_daemon
            && self.pool_health.as_deref() == Some("ONLINE")
            && self.pool_mounted
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let yes = |b: bool| if b { "up" } else { "down" };
        let l = &self.layout;
        writeln!(f, "state dir: {}", l.state_dir.display())?;
        writeln!(f, "netns {}: {}", l.netns, yes(self.netns))?;
        match self.dockerd_pid {
            Some(pid) => writeln!(
                f,
                "dockerd: pid {pid}, {} ({})",
                if self.dockerd_answers {
                    "answering"
                } else {
                    "not answering"
                },
                l.docker_host()
            )?,
            None => writeln!(f, "dockerd: down")?,
        }
        writeln!(
            f,
            "zfs-fuse: {}{}",
            yes(self.zfs_daemon),
            match self.zfs_daemon_ours {
                Some(pid) => format!(" (started by a harness, pid {pid})"),
                None => String::new(),
            }
        )?;
        writeln!(
            f,
            "pool {}: {}{} at {}",
            l.pool,
            self.pool_health.as_deref().unwrap_or("absent"),
            if self.pool_mounted { ", mounted" } else { "" },
            l.pool_mountpoint.display()
        )?;
        write!(f, "overall: {}", yes(self.is_up()))
    }
}

/// Reports on each component without changing anything. Blocking.
pub fn status(config: &HarnessConfig) -> Result<Status> {
    let bins = Binaries::resolve(&config.search_path)?;
    let layout = match std::fs::canonicalize(&config.state_dir) {
        Ok(dir) => Layout::for_state_dir(&dir),
        Err(_) => Layout::for_state_dir(&config.state_dir),
    };
    let zfs_daemon = zfs::daemon_running(&bins);
    let pool_health = zfs_daemon
        .then(|| zfs::pool_health(&bins, &layout.pool))
        .flatten();
    let pool_mounted = pool_health.is_some()
        && zfs::get_property(&bins, &layout.pool, "mounted").is_ok_and(|v| v == "yes");
    Ok(Status {
        netns: netns::exists(&layout),
        dockerd_pid: dockerd::running_pid(&layout),
        dockerd_answers: dockerd::ping(&layout.docker_socket),
        zfs_daemon,
        zfs_daemon_ours: zfs::our_daemon_pid(&layout),
        pool_health,
        pool_mounted,
        layout,
    })
}

struct Inner {
    layout: Layout,
    bins: Binaries,
    docker: Docker,
    /// Shared lock held while this handle lives, so `down` waits for us.
    _in_use: File,
}

/// A handle on the running harness, for one test.
///
/// Cheap to clone. Holds a shared lock on the state directory so that
/// `mf-harness down` waits until the test is done.
#[derive(Clone)]
pub struct Harness {
    inner: Arc<Inner>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// The harness for the default configuration (`MEDFORGE_HARNESS_DIR` or
    /// `<workspace>/target/harness`), brought up if needed.
    pub async fn get() -> Result<Harness> {
        Harness::start(HarnessConfig::from_env()).await
    }

    /// The harness for `config`, brought up if needed (and reused if up).
    pub async fn start(config: HarnessConfig) -> Result<Harness> {
        let (layout, bins, in_use) = tokio::task::spawn_blocking(move || -> Result<_> {
            let bins = Binaries::resolve(&config.search_path)?;
            check_root()?;
            let layout = config.layout()?;
            // In-use first, then the state lock: the same order as `down`.
            let in_use = open_lock(&layout.in_use_file)?;
            in_use
                .lock_shared()
                .map_err(HarnessError::io("harness", "cannot lock the in-use file"))?;
            bring_up(&config, &layout, &bins)?;
            Ok((layout, bins, in_use))
        })
        .await
        .map_err(|e| HarnessError::other("harness", format!("bring-up task failed: {e}")))??;
        let docker = dockerd::client(&layout.docker_socket)?;
        Ok(Harness {
            inner: Arc::new(Inner {
                layout,
                bins,
                docker,
                _in_use: in_use,
            }),
        })
    }

    /// The same harness with a new Docker client (for use on another runtime:
    /// a client's pooled connections belong to the runtime that made them).
    pub fn with_fresh_client(&self) -> Result<Harness> {
        let docker = dockerd::client(&self.inner.layout.docker_socket)?;
        let in_use = self.inner._in_use.try_clone().map_err(HarnessError::io(
            "harness",
            "cannot duplicate the in-use lock",
        ))?;
        Ok(Harness {
            inner: Arc::new(Inner {
                layout: self.inner.layout.clone(),
                bins: self.inner.bins.clone(),
                docker,
                _in_use: in_use,
            }),
        })
    }

    /// A Docker client for the harness dockerd (API 1.41).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// All names and paths of this harness.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// The dockerd socket (`DOCKER_HOST` is `unix://` + this).
    pub fn docker_socket(&self) -> &Path {
        &self.inner.layout.docker_socket
    }

    /// The pool (root dataset) name.
    pub fn pool(&self) -> &str {
        &self.inner.layout.pool
    }

    /// Where the pool's root dataset is mounted.
    pub fn pool_mountpoint(&self) -> &Path {
        &self.inner.layout.pool_mountpoint
    }

    /// `/var/run/netns/<name>` of the namespace dockerd and the containers live in.
    pub fn netns_path(&self) -> &Path {
        &self.inner.layout.netns_path
    }

    /// The namespace's name (for `ip netns exec` / `nsenter --net`).
    pub fn netns_name(&self) -> &str {
        &self.inner.layout.netns
    }

    /// The `zfs` program.
    pub fn zfs_binary(&self) -> &Path {
        &self.inner.bins.zfs
    }

    /// Runs `zfs ARGS…` and returns its stdout.
    pub async fn zfs<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::run_async("zfs", &self.inner.bins.zfs, args).await
    }

    /// A `std::process::Command` that runs `program` inside the namespace
    /// (through `nsenter --net=…`).
    pub fn netns_command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.inner.bins.nsenter);
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg(program);
        cmd
    }

    /// A fresh scope for one test: a unique prefix, its root dataset
    /// `<pool>/<prefix>` (created), and cleanup of everything labelled with it.
    pub async fn scope(&self) -> Result<TestScope> {
        TestScope::create(self.clone()).await
    }

    /// Builds (or reuses) the `FROM scratch` workload image; returns its tag.
    /// Builds serialise on a lock file, so parallel tests build the image once.
    pub async fn workload_image(&self) -> Result<String> {
        let binary = tokio::task::spawn_blocking(image::build_workload_binary)
            .await
            .map_err(|e| {
                HarnessError::other("workload image", format!("build task failed: {e}"))
            })??;
        let lock_path = self.layout().state_dir.join("image.lock");
        let lock = tokio::task::spawn_blocking(move || -> Result<File> {
            let lock = open_lock(&lock_path)?;
            lock.lock()
                .map_err(HarnessError::io("workload image", "cannot lock image.lock"))?;
            Ok(lock)
        })
        .await
        .map_err(|e| HarnessError::other("workload image", format!("lock task failed: {e}")))??;
        let tag = image::ensure_image_from_binary(self.docker(), &binary).await;
        drop(lock);
        tag
    }

    /// Opens a TCP connection to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        netns::connect(self.netns_path(), addr, http::DEFAULT_TIMEOUT)
            .await
            .map_err(HarnessError::io("netns", format!("connect to {addr}")))
    }

    /// One HTTP request to `addr` inside the namespace, with a deadline.
    pub async fn http(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        http::request(self.netns_path(), addr, method, path, body.into(), timeout).await
    }

    /// One request with extra headers (a `Host` header picks a virtual host).
    pub async fn http_with_headers(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        http::request_with_headers(
            self.netns_path(),
            addr,
            method,
            path,
            headers,
            body.into(),
            http::DEFAULT_TIMEOUT,
        )
        .await
    }

    /// `GET path` with the default deadline (10 s).
    pub async fn http_get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        self.http(Method::GET, addr, path, Bytes::new(), http::DEFAULT_TIMEOUT)
            .await
    }

    /// `PUT path` with a body and the default deadline (10 s).
    pub async fn http_put(
        &self,
        addr: SocketAddr,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        self.http(Method::PUT, addr, path, body, http::DEFAULT_TIMEOUT)
            .await
    }

    /// Polls `GET path` until it answers 2xx, up to `timeout`.
    pub async fn wait_for_http(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        http::wait_for_http(self.netns_path(), addr, path, timeout).await
    }

    /// Polls until `addr` accepts a TCP connection, up to `timeout`.
    pub async fn wait_for_port(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        http::wait_for_port(self.netns_path(), addr, timeout).await
    }

    /// The IP address of a running container (first network with one).
    pub async fn container_ip(&self, container: &str) -> Result<IpAddr> {
        let info = self
            .docker()
            .inspect_container(container, None)
            .await
            .map_err(HarnessError::docker(format!("inspect {container}")))?;
        let settings = info.network_settings.unwrap_or_default();
        let ip = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.ip_address)
            .find(|ip| !ip.is_empty());
        let ip = ip.ok_or_else(|| {
            HarnessError::other("docker", format!("container {container} has no IP address"))
        })?;
        ip.parse().map_err(|e| {
            HarnessError::other(
                "docker",
                format!("container {container}: bad IP {ip:?}: {e}"),
            )
        })
    }

    /// Polls `check` until it returns `Some`, every 50 ms, up to `timeout`;
    /// `what` names the awaited state in the timeout error.
    pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = check().await {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    component: "test",
                    what: what.to_string(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
