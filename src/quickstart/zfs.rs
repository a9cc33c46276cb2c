//! ZFS itself: its programs, whether it answers, zfs-fuse started when it
//! does not, and the pools there are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, run, tail, wait_until};
use super::process::{pids_running_as, spawn_daemon};

/// The programs that drive ZFS.
pub struct ZfsTools {
    pub zfs: PathBuf,
    pub zpool: PathBuf,
}

/// Starts zfs-fuse (kernel ZFS that does not answer is an error instead)
/// and waits until ZFS answers.
pub async fn start_zfs_fuse(
    tools: &ZfsTools,
    qs: &QuickstartDir,
    report: &mut Report,
) -> Result<()> {
    if Path::new("/sys/module/zfs").exists() {
        bail!(
            "kernel ZFS is loaded but `zpool list` fails: {}",
            run(&tools.zpool, &["list"])
                .await
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        );
    }
    let daemon = find_program("zfs-fuse").ok_or_else(|| {
        anyhow!("ZFS does not answer and zfs-fuse is not installed: `apt-get install zfs-fuse`")
    })?;
    start_daemon(tools, &daemon, qs, report, ANSWER_WITHIN).await
}

/// How long zfs-fuse, new or already running, gets to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Starts `daemon` (zfs-fuse) unless one runs, and waits `within` until
/// ZFS answers.
async fn start_daemon(
    tools: &ZfsTools,
    daemon: &Path,
    qs: &QuickstartDir,
    report: &mut Report,
    within: Duration,
) -> Result<()> {
    // Never a second daemon beside one that runs but is slow to answer: both
    // would serve the one socket and import the same pools, which corrupts
    // them. A running one gets as long to answer as a new one.
    let running = pids_running_as("zfs-fuse");
    if !running.is_empty() {
        if wait_until(within, || zfs_answers(&tools.zpool)).await {
            return Ok(());
        }
        bail!(
            "zfs-fuse runs (pid {}) but did not answer `zpool list` within {within:?}; \
             MedForge does not start a second one beside it. Stop it by its PID, or wait \
             until it answers, and run this again",
            running
                .iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut cmd = tokio::process::Command::new(daemon);
    cmd.args(["--no-daemon", "--no-kstat-mount"])
        .current_dir("/");
    let log = qs.log("zfs-fuse");
    let child = spawn_daemon(cmd, &log, &qs.pidfile("zfs-fuse")).context("starting zfs-fuse")?;
    let pid = child.id().unwrap_or_default();
    drop(child);
    if !wait_until(within, || zfs_answers(&tools.zpool)).await {
        bail!(
            "zfs-fuse (pid {pid}) did not answer within {within:?}; its log {} ends with:\n{}",
            log.display(),
            tail(&log, 20)
        );
    }
    // A restarted zfs-fuse imports its pools unmounted.
    run(&tools.zfs, &["mount", "-a"]).await?;
    report.note(format!(
        "ZFS did not answer: started zfs-fuse (pid {pid}, log {})",
        log.display()
    ));
    Ok(())
}

pub async fn zfs_answers(zpool: &Path) -> bool {
    run(zpool, &["list", "-H", "-o", "name"]).await.is_ok()
}

/// The names of the imported pools.
pub async fn pools(zpool: &Path) -> Result<Vec<String>> {
    Ok(run(zpool, &["list", "-H", "-o", "name"])
        .await?
        .lines()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use medforge_testkit::{fake_program as script, spawn_impostor};

    use super::*;

    #[tokio::test]
    async fn a_running_zfs_fuse_that_does_not_answer_gets_no_second_one_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        // A process whose program is called zfs-fuse and which never answers.
        let mut running = spawn_impostor(dir.path(), "zfs-fuse");
        let started = dir.path().join("started");
        let second = script(
            dir.path(),
            "second",
            &format!("touch {}; exec sleep 60", started.display()),
        );
        let no_answer = script(dir.path(), "zpool", "echo 'connection refused' >&2; exit 1");
        let tools = ZfsTools {
            zfs: no_answer.clone(),
            zpool: no_answer,
        };
        let qs = QuickstartDir::new(dir.path());
        std::fs::create_dir_all(&qs.dir).unwrap();
        let mut report = Report::default();

        let result = start_daemon(
            &tools,
            &second,
            &qs,
            &mut report,
            Duration::from_millis(500),
        )
        .await;
        let _ = running.kill();
        let _ = running.wait();

        let err = format!("{:#}", result.unwrap_err());
        assert!(
            err.contains(&running.id().to_string()) && err.contains("does not start a second"),
            "{err}"
        );
        assert!(!started.exists(), "a second zfs-fuse was started");
    }
}
