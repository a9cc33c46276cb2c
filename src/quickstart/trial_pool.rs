//! The trial pool: a ZFS pool in a sparse file under the data directory,
//! named from the directory's hash so that several data directories never
//! share one. For trying MedForge out, never for real data.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, run};
use super::zfs::{ZfsTools, pools};

/// Uses the trial pool when it is imported, imports it again when its file
/// is there, else creates it (`pool_size`, sparse); then makes its
/// workspace root. Returns the root and the note the node publishes.
pub async fn ensure(
    tools: &ZfsTools,
    existing: &[String],
    wanted_pool: &str,
    pool_size: &str,
    qs: &QuickstartDir,
    report: &mut Report,
) -> Result<(String, String)> {
    let ZfsTools { zfs, zpool } = tools;
    let trial = qs.trial_pool();
    let file = qs.pool_file();
    if existing.contains(&trial) {
        report.note(format!("trial pool {trial} exists: reusing it"));
    } else if file.exists() {
        run(
            zpool,
            &["import", "-d", &qs.dir.display().to_string(), &trial],
        )
        .await
        .with_context(|| format!("importing the trial pool {trial} from {}", file.display()))?;
        run(zfs, &["mount", "-a"]).await?;
        report.note(format!(
            "trial pool {trial} imported again from {}",
            file.display()
        ));
    } else {
        let bytes = medforge_crds::quantity::parse_bytes(pool_size)
            .map_err(|e| anyhow!("--trial-pool-size: {e}"))?;
        if bytes < 64 << 20 {
            bail!("--trial-pool-size {pool_size} is too small: ZFS needs at least 64Mi");
        }
        let f =
            std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        f.set_len(bytes)
            .with_context(|| format!("sizing {}", file.display()))?;
        let mountpoint = qs.dir.join("pool");
        run(
            zpool,
            &[
                "create",
                "-m",
                &mountpoint.display().to_string(),
                &trial,
                &file.display().to_string(),
            ],
        )
        .await
        .with_context(|| format!("creating the trial pool {trial} on {}", file.display()))?;
        report.note(format!(
            "no ZFS pool {wanted_pool}: created the TRIAL pool {trial} in the file {} ({pool_size}, sparse)",
            file.display()
        ));
    }
    let root = format!("{trial}/workspaces");
    run(zfs, &["create", "-p", &root]).await?;
    let note = format!(
        "workspaces live in the file-backed trial pool {trial} ({}): for trying MedForge out, not for real data; configure a real pool with --zfs-root",
        file.display()
    );
    tracing::warn!("quickstart: TRIAL STORAGE: {note}");
    Ok((root, note))
}

/// Destroys the trial pool: its datasets unmounted first, deepest first,
/// then the pool, retried for a while (zfs-fuse calls a pool busy for a
/// moment after its last user went away). Fails when it stays busy.
pub async fn destroy(qs: &QuickstartDir, out: &mut String) -> Result<()> {
    use std::fmt::Write as _;
    let trial = qs.trial_pool();
    let (Some(zpool), Some(zfs)) = (find_program("zpool"), find_program("zfs")) else {
        return Ok(());
    };
    if !pools(&zpool).await.is_ok_and(|p| p.contains(&trial)) {
        return Ok(());
    }
    let datasets = run(&zfs, &["list", "-H", "-o", "name", "-r", &trial])
        .await
        .unwrap_or_default();
    for ds in datasets.lines().rev() {
        let _ = run(&zfs, &["unmount", "-f", ds]).await;
    }
    let mut last = None;
    for _ in 0..20 {
        match run(&zpool, &["destroy", "-f", &trial]).await {
            Ok(_) => {
                let _ = writeln!(out, "destroyed the trial pool {trial}");
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last
        .unwrap_or_else(|| anyhow!("unknown error"))
        .context(format!(
            "the trial pool {trial} could not be destroyed; the data directory is kept"
        )))
}
