//! ZFS: used when it answers, else zfs-fuse started; workspaces under the
//! configured pool when it exists, else on the trial pool.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::host::{find_program, run, tail, wait_until};
use super::process::spawn_daemon;
use super::{QuickstartDir, Report, trial_pool};

/// The programs that drive ZFS.
pub struct ZfsTools {
    pub zfs: PathBuf,
    pub zpool: PathBuf,
}

/// Makes ZFS answer and the workspace root exist; returns the root and, for
/// a trial pool, the note the node publishes.
pub async fn ensure_zfs(
    zfs: &Path,
    configured_root: &str,
    pool_size: &str,
    qs: &QuickstartDir,
    report: &mut Report,
) -> Result<(String, Option<String>)> {
    let zfs = find_program(&zfs.display().to_string()).ok_or_else(|| {
        anyhow!(
            "the ZFS tools are missing (no `{}`): install them with `apt-get install zfs-fuse` (or zfsutils-linux where kernel ZFS is available)",
            zfs.display()
        )
    })?;
    let zpool = find_program("zpool")
        .ok_or_else(|| anyhow!("`zpool` is missing: install it with `apt-get install zfs-fuse`"))?;
    let tools = ZfsTools { zfs, zpool };
    if !zfs_answers(&tools.zpool).await {
        start_zfs_fuse(&tools, qs, report).await?;
    }
    let wanted_pool = configured_root.split('/').next().unwrap_or_default();
    let existing = pools(&tools.zpool).await?;
    if existing.iter().any(|p| p == wanted_pool) {
        report.note(format!(
            "ZFS pool {wanted_pool} exists: workspaces go under {configured_root}"
        ));
        run(&tools.zfs, &["create", "-p", configured_root]).await?;
        return Ok((configured_root.to_string(), None));
    }
    let (root, note) =
        trial_pool::ensure(&tools, &existing, wanted_pool, pool_size, qs, report).await?;
    Ok((root, Some(note)))
}

/// Starts zfs-fuse (kernel ZFS that does not answer is an error instead)
/// and waits until ZFS answers.
async fn start_zfs_fuse(tools: &ZfsTools, qs: &QuickstartDir, report: &mut Report) -> Result<()> {
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

async fn zfs_answers(zpool: &Path) -> bool {
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
