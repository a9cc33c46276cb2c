//! Bringing the harness up (once, shared by all test processes), reporting
//! on it and tearing it down.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::time::Duration;

use crate::dockerd;
use crate::error::{HarnessError, Result};
use crate::layout::{self, HarnessConfig, Layout};
use crate::netns;
use crate::process::{self, Binaries};
use crate::zfs;

pub(crate) fn check_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(HarnessError::NotRoot {
            component: "harness",
        })
    }
}

pub(crate) fn open_lock(path: &Path) -> Result<File> {
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
pub(crate) fn bring_up(config: &HarnessConfig, layout: &Layout, bins: &Binaries) -> Result<()> {
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
    // A pool that cannot be destroyed (a daemon that does not answer) does
    // not stop the rest: zfs-fuse, when a harness started it, is still
    // stopped (killed if it does not end), its dead mounts detached, and the
    // namespace removed; the error is returned at the end.
    let zfs_lock = zfs_lock(&layout)?;
    let pool_known = layout.pool_file.exists()
        || (zfs::daemon_running(&bins) && zfs::pool_health(&bins, &layout.pool).is_some());
    let pool_result = if pool_known {
        zfs::ensure_daemon(&bins, &layout, config.start_timeout)
            .and_then(|_| zfs::destroy_pool(&bins, &layout))
    } else {
        Ok(())
    };
    if pool_known && pool_result.is_ok() {
        report.stopped.push(format!("pool {}", layout.pool));
    }
    if let Some(pid) = zfs::our_daemon_pid(&layout) {
        match zfs::stop_daemon_if_ours(&bins, &layout)? {
            Some(note) => report.notes.push(note),
            None => {
                report.stopped.push(format!("zfs-fuse (pid {pid})"));
                let detached = zfs::detach_stale_mounts(&layout.pool, true);
                if detached > 0 {
                    report.notes.push(format!(
                        "detached {detached} dead mounts of {}",
                        layout.pool
                    ));
                }
            }
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
    if pool_result.is_ok() {
        let _ = std::fs::remove_file(&layout.pool_file);
    }
    pool_result.map(|()| report)
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
