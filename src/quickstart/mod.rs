//! `medforge up --quickstart`: takes a fresh machine to a working MedForge.
//!
//! Each step first looks for what is already there and uses it, so a second
//! run starts nothing twice: Docker (started through systemd when it runs,
//! else as a supervised `dockerd`), ZFS (zfs-fuse started when no ZFS
//! answers; a file-backed *trial* pool under the data directory when the
//! configured pool does not exist), the default Pack (the test workload image,
//! built from the static workload binary; or, with `--default-pack NAME`, the
//! image of the recipe `packs/NAME/`, built by its script when Docker has
//! none), and Caddy with its internal CA in
//! front of the api. Whatever it starts, it records by PID under
//! `<data-dir>/quickstart/`, where `medforge down` finds it.
//!
//! A host with its own pool, Docker and TLS never needs this: without
//! `--quickstart`, `medforge up` starts nothing of its own.

mod caddy;
mod dir;
mod docker;
mod host;
mod pack;
mod process;
mod storage;
mod summary;
mod trial_pool;
mod zfs;

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use crate::cli::QuickstartArgs;
pub use caddy::ensure_caddy;
pub use dir::{QuickstartDir, Report};
pub use summary::summary;

use docker::ensure_docker;
use host::{iptables_usable, is_root};
use pack::{ensure_built_pack, ensure_pack_image};
use process::{live_pid, stop_pid};
use storage::ensure_zfs;

/// What `prepare` settled that `medforge up` uses.
#[derive(Debug)]
pub struct Prepared {
    pub report: Report,
    /// Set when workspaces live on the trial pool.
    pub storage_note: Option<String>,
    /// The ZFS dataset under which workspaces go.
    pub zfs_root: String,
    /// The default Pack's image, when the quickstart provided it.
    pub pack_image: Option<String>,
}

/// The processes the quickstart may start, by the name their PID file has.
pub const MANAGED: &[(&str, &str)] = &[
    ("medforge", "medforge"),
    ("caddy", "caddy"),
    ("dockerd", "dockerd"),
    ("zfs-fuse", "zfs-fuse"),
];

/// Everything before the control plane starts.
pub async fn prepare(
    data_dir: &Path,
    args: &QuickstartArgs,
    docker_socket: &Path,
    zfs_binary: &Path,
    zfs_root: &str,
    default_pack: &str,
    default_pack_image: Option<&str>,
) -> Result<Prepared> {
    if !is_root() {
        bail!(
            "medforge up --quickstart needs root: it starts Docker, ZFS and Caddy and writes iptables rules; run it as root (sudo)"
        );
    }
    let qs = QuickstartDir::new(data_dir);
    std::fs::create_dir_all(&qs.dir).with_context(|| format!("creating {}", qs.dir.display()))?;
    let mut report = Report::default();
    iptables_usable().await?;
    ensure_docker(docker_socket, &qs, &mut report).await?;
    let (zfs_root, storage_note) = ensure_zfs(
        zfs_binary,
        zfs_root,
        &args.trial_pool_size,
        &qs,
        &mut report,
    )
    .await?;
    let pack_image = match default_pack_image {
        Some(i) => {
            report.note(format!("default Pack {default_pack}: image {i} (given)"));
            Some(i.to_string())
        }
        None if default_pack == crate::packs::DEFAULT_PACK => Some(
            ensure_pack_image(docker_socket, args.workload_binary.as_deref(), &mut report).await?,
        ),
        // `medforge up` takes the newest image built for it.
        None => {
            ensure_built_pack(docker_socket, default_pack, &mut report).await?;
            None
        }
    };
    Ok(Prepared {
        report,
        storage_note,
        zfs_root,
        pack_image,
    })
}

/// `medforge down`: stops what `medforge up --quickstart` started, by PID.
pub async fn down(data_dir: &Path, purge: bool) -> Result<String> {
    let qs = QuickstartDir::new(data_dir);
    let mut out = String::new();
    if !qs.dir.is_dir() {
        bail!(
            "{} does not exist: nothing was started by `medforge up --quickstart` with --data-dir {}",
            qs.dir.display(),
            data_dir.display()
        );
    }
    for (name, comm) in MANAGED {
        if *name == "zfs-fuse" && purge {
            trial_pool::destroy(&qs, &mut out).await?;
        }
        let pidfile = qs.pidfile(name);
        match live_pid(&pidfile, comm) {
            Some(pid) => {
                let grace = if *name == "dockerd" {
                    Duration::from_secs(60)
                } else {
                    Duration::from_secs(20)
                };
                stop_pid(pid, comm, grace).await;
                let _ = writeln!(out, "stopped {name} (pid {pid})");
            }
            None => {
                if pidfile.exists() {
                    let _ = writeln!(out, "{name} was not running");
                }
            }
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    if purge {
        // The exec root of a dockerd the quickstart started on its own socket.
        let exec_root = qs.dockerd_exec_root();
        if exec_root.is_dir() {
            let _ = std::fs::remove_dir_all(&exec_root);
        }
        std::fs::remove_dir_all(data_dir)
            .with_context(|| format!("removing {}", data_dir.display()))?;
        let _ = writeln!(out, "removed {}", data_dir.display());
    } else {
        let _ = writeln!(
            out,
            "data kept in {} (`medforge down --purge` removes it)",
            data_dir.display()
        );
    }
    Ok(out)
}
