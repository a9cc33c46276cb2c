//! zfs-fuse (one daemon per machine) and this harness's file-backed pool.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use backon::{BlockingRetryable, ExponentialBuilder, Retryable};

use crate::error::{HarnessError, Result};
use crate::layout::{self, Layout};
use crate::process::{self, Binaries};

const COMPONENT: &str = "zfs-fuse";
const POOL: &str = "zpool";

/// The fixed socket every zfs-fuse daemon listens on.
pub const DAEMON_SOCKET: &str = "/var/run/zfs/zfs_socket";

/// Short retries for ZFS's transient "dataset is busy".
pub fn busy_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(8)
}

/// Whether a zfs-fuse daemon answers.
pub fn daemon_running(bins: &Binaries) -> bool {
    // Bounded well below the callers' own deadlines, which poll it.
    process::run_within(
        COMPONENT,
        &bins.zpool,
        ["list", "-H", "-o", "name"],
        Duration::from_secs(10),
    )
    .is_ok()
}

/// The PID of the zfs-fuse a harness started, if it is still running.
pub fn our_daemon_pid(layout: &Layout) -> Option<i32> {
    process::read_pidfile(&layout.zfs_fuse_pidfile).filter(|&pid| process::pid_is(pid, "zfs-fuse"))
}

/// PIDs of the zfs-fuse daemons that run now (any harness's, or not a harness's).
pub fn daemon_pids() -> Vec<i32> {
    process::pids_mentioning("zfs-fuse")
        .into_iter()
        .filter(|&pid| process::pid_is(pid, "zfs-fuse"))
        .collect()
}

/// Reuses a running daemon, or starts one (and records that we did).
/// Returns whether it was started now.
///
/// A second daemon is never started while one runs, answering or not: both
/// would serve the one socket and import the same pool files, which
/// corrupts them and hangs every client. A daemon that is busy or starting
/// gets `timeout` to answer. One that does not, and that a harness started
/// (the PID file names it), is hung: it is killed and a new one started,
/// whose pools the caller mounts again ([`ensure_pool`] with
/// `daemon_restarted`). One that no harness started is an error naming its
/// PID: it is not ours to stop.
pub fn ensure_daemon(bins: &Binaries, layout: &Layout, timeout: Duration) -> Result<bool> {
    if daemon_running(bins) {
        return Ok(false);
    }
    let running = daemon_pids();
    if !running.is_empty() {
        if process::poll(timeout, Duration::from_millis(200), || {
            daemon_running(bins).then_some(())
        })
        .is_some()
        {
            return Ok(false);
        }
        if let Some(ours) = our_daemon_pid(layout)
            && running == [ours]
        {
            eprintln!(
                "harness: zfs-fuse (pid {ours}, started by a harness) did not answer within \
                 {timeout:?}; killing it and starting a new one"
            );
            // `terminate` waits until every thread has ended: a new daemon
            // started while the old one's threads still exit fails at once.
            process::terminate(COMPONENT, ours, Duration::from_secs(5))?;
            let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
            return start_daemon(bins, layout, timeout);
        }
        return Err(HarnessError::other(
            COMPONENT,
            format!(
                "zfs-fuse runs (pid {}) but did not answer on {DAEMON_SOCKET} within {timeout:?}; \
                 a second daemon is not started beside it. Stop it by its PID (and `zfs mount -a` \
                 after a new one starts) or wait until it answers",
                running
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    start_daemon(bins, layout, timeout)
}

/// Starts zfs-fuse, records its PID and waits until it answers.
fn start_daemon(bins: &Binaries, layout: &Layout, timeout: Duration) -> Result<bool> {
    let mut cmd = Command::new(&bins.zfs_fuse);
    cmd.args(["--no-daemon", "--no-kstat-mount"]);
    let line = process::command_line(&cmd);
    process::prepare_daemon(COMPONENT, &mut cmd, &bins.search_path, &layout.zfs_fuse_log)?;
    let failed = process::start_failed(COMPONENT, &line, &layout.zfs_fuse_log);
    let mut child = cmd
        .spawn()
        .map_err(|e| failed(format!("cannot spawn: {e}")))?;
    let pid = child.id() as i32;
    if let Some(dir) = layout.zfs_fuse_pidfile.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&layout.zfs_fuse_pidfile, format!("{pid}\n")).map_err(HarnessError::io(
        COMPONENT,
        format!("cannot write {}", layout.zfs_fuse_pidfile.display()),
    ))?;
    let outcome = process::poll(timeout, Duration::from_millis(50), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(format!("it exited with {status}")));
        }
        daemon_running(bins).then_some(Ok(()))
    });
    match outcome {
        Some(Ok(())) => Ok(true),
        Some(Err(reason)) => {
            let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
            Err(failed(reason))
        }
        None => {
            let _ = process::terminate(COMPONENT, pid, Duration::from_secs(10));
            let _ = child.wait();
            let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
            Err(failed(format!(
                "{DAEMON_SOCKET} did not answer within {timeout:?}"
            )))
        }
    }
}

/// The pool's health (`ONLINE`, …), or `None` when no such pool is imported.
pub fn pool_health(bins: &Binaries, pool: &str) -> Option<String> {
    process::run(POOL, &bins.zpool, ["list", "-H", "-o", "health", pool])
        .ok()
        .map(|s| s.trim().to_string())
}

/// Names of all imported pools.
pub fn pools(bins: &Binaries) -> Vec<String> {
    process::run(POOL, &bins.zpool, ["list", "-H", "-o", "name"])
        .map(|s| {
            s.lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// One property of a dataset (`zfs get -Hp -o value`).
pub fn get_property(bins: &Binaries, dataset: &str, property: &str) -> Result<String> {
    process::run(
        POOL,
        &bins.zfs,
        ["get", "-Hp", "-o", "value", property, dataset],
    )
    .map(|s| s.trim().to_string())
}

/// Detaches the pool's dead FUSE mounts ("Transport endpoint is not
/// connected", left by a zfs-fuse that was killed): all of them when the
/// daemon was just restarted, else those whose directory cannot be opened
/// (`stat` does not tell: zfs-fuse lets the kernel cache attributes).
/// Returns how many.
pub fn detach_stale_mounts(pool: &str, daemon_restarted: bool) -> usize {
    const ENOTCONN: i32 = 107;
    let pool_child = format!("{pool}/");
    let mut stale: Vec<_> = layout::mount_entries()
        .into_iter()
        .filter(|m| {
            m.fs_type == "fuse.zfs" && (m.source == pool || m.source.starts_with(&pool_child))
        })
        .filter(|m| {
            daemon_restarted
                || std::fs::read_dir(&m.mount_point)
                    .err()
                    .and_then(|e| e.raw_os_error())
                    == Some(ENOTCONN)
        })
        .map(|m| m.mount_point)
        .collect();
    stale.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in &stale {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    stale.len()
}

/// Makes sure the pool exists, is healthy and mounted: reuses it, imports it
/// from its file, or creates it.
/// `daemon_restarted`: zfs-fuse was started just now (so every mount of the
/// pool that is still listed belongs to the dead daemon).
pub fn ensure_pool(
    bins: &Binaries,
    layout: &Layout,
    size_bytes: u64,
    daemon_restarted: bool,
) -> Result<()> {
    let pool = layout.pool.as_str();
    let detached = detach_stale_mounts(pool, daemon_restarted);
    match pool_health(bins, pool).as_deref() {
        Some("ONLINE") => {}
        Some(_) => {
            // Faulted (its file went away): drop it and start over.
            let _ = process::run(POOL, &bins.zpool, ["destroy", "-f", pool]);
            let _ = process::run(POOL, &bins.zpool, ["export", "-f", pool]);
            let _ = std::fs::remove_file(&layout.pool_file);
            create_pool(bins, layout, size_bytes)?;
        }
        None => {
            let imported = layout.pool_file.exists()
                && process::run(
                    POOL,
                    &bins.zpool,
                    [
                        "import".as_ref(),
                        "-d".as_ref(),
                        layout.state_dir.as_os_str(),
                        pool.as_ref(),
                    ],
                )
                .is_ok();
            if !imported {
                let _ = std::fs::remove_file(&layout.pool_file);
                create_pool(bins, layout, size_bytes)?;
            }
        }
    }
    // After a daemon restart pools come back unmounted.
    if detached > 0 || get_property(bins, pool, "mounted")? != "yes" {
        // A dataset of another test that is being torn down right now may
        // refuse ("directory is not empty"); that is its test's business.
        // The pool's own root must be mounted.
        if let Err(e) = process::run(POOL, &bins.zfs, ["mount", "-a"])
            && get_property(bins, pool, "mounted")? != "yes"
        {
            return Err(e);
        }
    }
    Ok(())
}

fn create_pool(bins: &Binaries, layout: &Layout, size_bytes: u64) -> Result<()> {
    std::fs::create_dir_all(&layout.run_dir).map_err(HarnessError::io(
        POOL,
        format!("cannot create {}", layout.run_dir.display()),
    ))?;
    let file = std::fs::File::create(&layout.pool_file).map_err(HarnessError::io(
        POOL,
        format!("cannot create {}", layout.pool_file.display()),
    ))?;
    file.set_len(size_bytes).map_err(HarnessError::io(
        POOL,
        format!("cannot size {}", layout.pool_file.display()),
    ))?;
    drop(file);
    process::run(
        POOL,
        &bins.zpool,
        [
            "create".as_ref(),
            "-m".as_ref(),
            layout.pool_mountpoint.as_os_str(),
            layout.pool.as_ref(),
            layout.pool_file.as_os_str(),
        ],
    )?;
    Ok(())
}

/// Datasets at and below `dataset`, deepest first; empty when it does not exist.
fn tree_deepest_first(listing: &str) -> Vec<String> {
    let mut names: Vec<String> = listing
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
    names
}

fn is_missing(e: &HarnessError) -> bool {
    matches!(e, HarnessError::CommandFailed { stderr, .. }
        if stderr.contains("does not exist") || stderr.contains("no such pool"))
}

fn is_not_mounted(e: &HarnessError) -> bool {
    matches!(e, HarnessError::CommandFailed { stderr, .. }
        if stderr.contains("not currently mounted") || stderr.contains("not mounted"))
}

/// Destroys the pool (unmounting its datasets first) and removes its file.
pub fn destroy_pool(bins: &Binaries, layout: &Layout) -> Result<()> {
    let pool = layout.pool.as_str();
    detach_stale_mounts(pool, false);
    if pool_health(bins, pool).is_some() {
        if let Ok(listing) = process::run(
            POOL,
            &bins.zfs,
            ["list", "-H", "-o", "name", "-t", "filesystem", "-r", pool],
        ) {
            for ds in tree_deepest_first(&listing) {
                let _ = (|| process::run(POOL, &bins.zfs, ["unmount", ds.as_str()]))
                    .retry(busy_backoff())
                    .when(HarnessError::is_busy)
                    .call();
            }
        }
        (|| process::run(POOL, &bins.zpool, ["destroy", "-f", pool]))
            .retry(busy_backoff())
            .when(HarnessError::is_busy)
            .call()?;
    }
    let _ = std::fs::remove_file(&layout.pool_file);
    Ok(())
}

/// Stops zfs-fuse if a harness started it and no other pool needs it.
/// Returns a note when it was left running.
pub fn stop_daemon_if_ours(bins: &Binaries, layout: &Layout) -> Result<Option<String>> {
    let Some(pid) = our_daemon_pid(layout) else {
        let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
        return Ok(None);
    };
    let others: Vec<String> = pools(bins)
        .into_iter()
        .filter(|p| *p != layout.pool)
        .collect();
    if !others.is_empty() {
        return Ok(Some(format!(
            "zfs-fuse (pid {pid}) left running: other pools use it ({})",
            others.join(", ")
        )));
    }
    // zfs-fuse unmounts everything on SIGTERM, which takes a few seconds.
    process::terminate(COMPONENT, pid, Duration::from_secs(30))?;
    let _ = std::fs::remove_file(&layout.zfs_fuse_pidfile);
    Ok(None)
}

/// Runs `zfs ARGS…`, retrying while the dataset is busy; a failure that
/// `already_done` recognises (nothing left to do) counts as success.
async fn zfs_while_busy(
    zfs: &Path,
    args: &[&str],
    already_done: fn(&HarnessError) -> bool,
) -> Result<()> {
    let run = || async {
        match process::run_async(POOL, zfs, args).await {
            Err(e) if already_done(&e) => Ok(String::new()),
            other => other,
        }
    };
    run.retry(busy_backoff())
        .when(HarnessError::is_busy)
        .await
        .map(drop)
}

/// Unmounts (deepest first, ignoring "not mounted") and destroys a dataset
/// tree with its snapshots, retrying "dataset is busy". Returns the datasets
/// that existed; an absent dataset is not an error.
pub async fn destroy_tree(zfs: &Path, dataset: &str) -> Result<Vec<String>> {
    let listing = match process::run_async(
        POOL,
        zfs,
        [
            "list",
            "-H",
            "-o",
            "name,mountpoint",
            "-t",
            "filesystem",
            "-r",
            dataset,
        ],
    )
    .await
    {
        Ok(listing) => listing,
        Err(e) if is_missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<(String, Option<PathBuf>)> = listing
        .lines()
        .filter_map(|l| {
            let (name, mountpoint) = l.split_once('\t')?;
            let mountpoint = Path::new(mountpoint.trim());
            Some((
                name.trim().to_string(),
                mountpoint.is_absolute().then(|| mountpoint.to_path_buf()),
            ))
        })
        .collect();
    entries.sort_by_key(|(n, _)| std::cmp::Reverse(n.matches('/').count()));
    for (ds, _) in &entries {
        zfs_while_busy(zfs, &["unmount", ds.as_str()], is_not_mounted).await?;
    }
    zfs_while_busy(zfs, &["destroy", "-r", dataset], is_missing).await?;
    // zfs leaves the empty mountpoint directories behind in the parent dataset.
    for (_, mountpoint) in &entries {
        if let Some(dir) = mountpoint
            && !layout::is_mount_point(dir)
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    Ok(entries.into_iter().map(|(name, _)| name).collect())
}

/// Whether a dataset exists.
pub async fn dataset_exists(zfs: &Path, dataset: &str) -> Result<bool> {
    match process::run_async(POOL, zfs, ["list", "-H", "-o", "name", dataset]).await {
        Ok(_) => Ok(true),
        Err(e) if is_missing(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{fake_program as script, spawn_impostor};

    /// What the CI run of 2026-12-02 met: a zfs-fuse that runs but does not
    /// answer in time. The old harness started a second daemon beside it.
    #[test]
    fn a_daemon_that_runs_but_does_not_answer_gets_no_second_one_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        // A process whose program is called zfs-fuse, and which never answers.
        let mut running = spawn_impostor(dir.path(), "zfs-fuse");
        let started = dir.path().join("started");
        let no_answer = script(dir.path(), "zpool", "echo 'connection refused' >&2; exit 1");
        let bins = Binaries {
            zfs_fuse: script(
                dir.path(),
                "second-zfs-fuse",
                &format!("touch {}; exec sleep 60", started.display()),
            ),
            zfs: no_answer.clone(),
            zpool: no_answer,
            ip: PathBuf::new(),
            nsenter: PathBuf::new(),
            dockerd: PathBuf::new(),
            search_path: process::default_search_path(),
        };
        let layout = Layout::for_state_dir(&dir.path().join("state"));

        let result = ensure_daemon(&bins, &layout, Duration::from_millis(600));
        let _ = running.kill();
        let _ = running.wait();

        let err = result.unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}", running.id())) && err.contains("did not answer"),
            "{err}"
        );
        assert!(!started.exists(), "a second zfs-fuse was started");
    }

    #[test]
    fn deepest_datasets_first() {
        let names = tree_deepest_first("p/a\np/a/b/c\np/a/b\n\n");
        assert_eq!(names, ["p/a/b/c", "p/a/b", "p/a"]);
    }

    #[test]
    fn classifies_zfs_errors() {
        let e = |stderr: &str| HarnessError::CommandFailed {
            component: "zpool",
            command: "zfs destroy x".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        };
        assert!(e("cannot destroy 'p/a': dataset is busy").is_busy());
        assert!(is_missing(&e("cannot open 'p/x': dataset does not exist")));
        assert!(is_not_mounted(&e(
            "cannot unmount 'p/a': not currently mounted"
        )));
        assert!(!e("permission denied").is_busy());
    }
}
