//! The default Pack's image: built from the static test workload binary for
//! the Pack `default`, or by a recipe's build script (`packs/<name>/build.sh`)
//! for another default Pack.

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

/// Makes sure Docker has an image built for the Pack `name` (labelled
/// `dev.medforge.pack=<name>`): reuses the newest, or runs the recipe's
/// build script against this Docker (its progress on stderr; a minute or
/// two the first time: Debian's packages and PyPI). Refused, with the
/// command, when this checkout has no such recipe.
pub async fn ensure_built_pack(socket: &Path, name: &str, report: &mut Report) -> Result<()> {
    let docker = crate::packs::docker_at(socket)?;
    if let Some(found) = crate::packs::find_built(&docker, name).await? {
        report.note(format!(
            "default Pack {name}: image {} exists: reusing it",
            found.reference
        ));
        return Ok(());
    }
    let script = crate::packs::recipe_script(name).ok_or_else(|| {
        anyhow!(
            "--default-pack {name}: Docker has no image built for it and there is no recipe packs/{name}/build.sh here: \
             build one with `{}` from a MedForge checkout, or pass --default-pack-image",
            crate::packs::build_command(name)
        )
    })?;
    report.note(format!(
        "default Pack {name}: building its image with {} (Debian packages and PyPI; a few minutes the first time)",
        script.display()
    ));
    let status = tokio::process::Command::new("bash")
        .arg(&script)
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .with_context(|| format!("running bash {}", script.display()))?;
    if !status.success() {
        anyhow::bail!(
            "bash {} failed ({status}); its messages are above",
            script.display()
        );
    }
    let built = crate::packs::find_built(&docker, name)
        .await?
        .ok_or_else(|| anyhow!("{} left no image labelled for {name}", script.display()))?;
    report.note(format!(
        "default Pack {name}: built image {}",
        built.reference
    ));
    Ok(())
}
