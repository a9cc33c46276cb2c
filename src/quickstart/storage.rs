//! Where workspaces go: under the configured pool when it exists, else on
//! the trial pool; ZFS made to answer first.

use std::path::Path;

use anyhow::{Result, anyhow};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, run};
use super::trial_pool;
use super::zfs::{ZfsTools, pools, start_zfs_fuse, zfs_answers};

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
