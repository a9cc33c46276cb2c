//! The default Pack's image, built from the static test workload binary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};

use super::dir::Report;

fn default_workload_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    [
        target
            .join("workload")
            .join(&triple)
            .join("release/medforge-workload"),
        exe.with_file_name("medforge-workload"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// The default Pack's image id: built from the workload binary (given, or
/// the one `scripts/up.sh` builds), or reused when an image of the same
/// binary exists.
pub async fn ensure_pack_image(
    socket: &Path,
    binary: Option<&Path>,
    report: &mut Report,
) -> Result<String> {
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => default_workload_binary().ok_or_else(|| {
            anyhow!(
                "no image for the default Pack: pass --default-pack-image, or --workload-binary with the static workload (`scripts/up.sh` builds it)"
            )
        })?,
    };
    let docker = bollard::Docker::connect_with_unix(
        &socket.display().to_string(),
        120,
        &medforge_operator::agent::docker::API_VERSION,
    )
    .context("connecting to Docker")?;
    let existed = match tokio::fs::read(&binary).await {
        Ok(bytes) => docker
            .inspect_image(&medforge_operator::image::tag_for(&bytes))
            .await
            .is_ok(),
        Err(_) => false,
    };
    let tag = medforge_operator::image::ensure_image_from_binary(&docker, &binary)
        .await
        .context("building the default Pack's image")?;
    let id = docker
        .inspect_image(&tag)
        .await
        .with_context(|| format!("inspecting {tag}"))?
        .id
        .ok_or_else(|| anyhow!("{tag} has no id"))?;
    report.note(format!(
        "default Pack image {tag} ({id}) {} {}",
        if existed {
            "exists: reusing it, built from"
        } else {
            "built from"
        },
        binary.display()
    ));
    Ok(id)
}
