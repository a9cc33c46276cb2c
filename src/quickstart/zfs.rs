//! ZFS itself: its programs, whether it answers, zfs-fuse started when it
//! does not, and the pools there are.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, run, tail, wait_until};
use super::process::spawn_daemon;

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
    let mut cmd = tokio::process::Command::new(&daemon);
    cmd.args(["--no-daemon", "--no-kstat-mount"])
        .current_dir("/");
    let log = qs.log("zfs-fuse");
    let child = spawn_daemon(cmd, &log, &qs.pidfile("zfs-fuse")).context("starting zfs-fuse")?;
    let pid = child.id().unwrap_or_default();
    drop(child);
    if !wait_until(Duration::from_secs(30), || zfs_answers(&tools.zpool)).await {
        bail!(
            "zfs-fuse (pid {pid}) did not answer within 30 s; its log {} ends with:\n{}",
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
