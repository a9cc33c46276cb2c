//! The test workload image: the statically linked `medforge-workload` binary,
//! alone in a `FROM scratch` image, tagged by the binary's content hash.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bollard::Docker;
use medforge_operator::image;
pub use medforge_operator::image::WORKLOAD_REPOSITORY;

use crate::error::{HarnessError, Result};
use crate::layout::workspace_root;
use crate::process;

const COMPONENT: &str = "workload image";

/// Environment variable naming a prebuilt static workload binary (skips cargo).
pub const ENV_WORKLOAD_BIN: &str = "MEDFORGE_WORKLOAD_BIN";

const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Where the static build goes (its own target dir, so the main build's
/// fingerprints are not invalidated by the different RUSTFLAGS).
pub fn workload_target_dir() -> PathBuf {
    workspace_root().join("target").join("workload")
}

/// Builds the workload as a statically linked release binary (or takes
/// `$MEDFORGE_WORKLOAD_BIN`) and returns its path. Blocking.
pub fn build_workload_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(ENV_WORKLOAD_BIN).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(bin));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = workload_target_dir();
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "medforge-workload", "--target", TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        // Never inherit flags meant for the outer build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .stdin(Stdio::null());
    let line = process::command_line(&cmd);
    let output = cmd
        .output()
        .map_err(HarnessError::io(COMPONENT, format!("cannot run `{line}`")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        return Err(HarnessError::CommandFailed {
            component: COMPONENT,
            command: format!("RUSTFLAGS='-C target-feature=+crt-static' {line}"),
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    Ok(target_dir
        .join(TARGET)
        .join("release")
        .join("medforge-workload"))
}

/// Builds (or reuses) the workload image in `docker` from a static binary
/// and returns its tag (see `medforge_operator::image`).
pub async fn ensure_image_from_binary(docker: &Docker, binary_path: &Path) -> Result<String> {
    image::ensure_image_from_binary(docker, binary_path)
        .await
        .map_err(|e| HarnessError::other(COMPONENT, e.to_string()))
}

/// Builds the static workload binary and its image; returns the tag.
pub async fn ensure_workload_image(docker: &Docker) -> Result<String> {
    let binary = tokio::task::spawn_blocking(build_workload_binary)
        .await
        .map_err(|e| HarnessError::other(COMPONENT, format!("build task failed: {e}")))??;
    ensure_image_from_binary(docker, &binary).await
}
