//! The test workload image: the statically linked `medforge-workload` binary,
//! alone in a `FROM scratch` image, tagged by the binary's content hash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{HarnessError, Result};
use crate::layout::workspace_root;
use crate::process;

const COMPONENT: &str = "workload image";

/// Repository name of the workload image.
pub const WORKLOAD_REPOSITORY: &str = "medforge-workload";
/// Environment variable naming a prebuilt static workload binary (skips cargo).
pub const ENV_WORKLOAD_BIN: &str = "MEDFORGE_WORKLOAD_BIN";
/// Label put on the image.
pub const WORKLOAD_LABEL: &str = "dev.medforge.test-workload";

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

/// Whether `elf` is a 64-bit ELF without a program interpreter (statically linked).
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&elf[0x20..0x28]);
    let Ok(phoff) = usize::try_from(u64::from_le_bytes(phoff)) else {
        return false;
    };
    let phentsize = usize::from(u16_at(0x36));
    let phnum = usize::from(u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        match elf.get(at..at + 4) {
            Some(t) => u32::from_le_bytes([t[0], t[1], t[2], t[3]]) != PT_INTERP,
            None => false,
        }
    })
}

/// The image tag for a binary: `medforge-workload:<first 16 hex of sha256>`.
pub fn tag_for(binary: &[u8]) -> String {
    let digest = Sha256::digest(binary);
    format!("{WORKLOAD_REPOSITORY}:{}", &hex::encode(digest)[..16])
}

/// The build context: a Dockerfile and the binary, as a tar archive.
pub fn build_context(binary: &[u8]) -> Result<Vec<u8>> {
    let dockerfile = format!(
        "FROM scratch\nCOPY medforge-workload /medforge-workload\nLABEL {WORKLOAD_LABEL}=true\nEXPOSE 8080\nENTRYPOINT [\"/medforge-workload\"]\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in [
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        ("medforge-workload", binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_cksum();
        tar.append_data(&mut header, name, data)
            .map_err(HarnessError::io(COMPONENT, "cannot build the tar context"))?;
    }
    tar.into_inner()
        .map_err(HarnessError::io(COMPONENT, "cannot finish the tar context"))
}

/// Builds (or reuses) the workload image in `docker` from a static binary
/// and returns its tag. Never pulls: the legacy builder, `FROM scratch`.
pub async fn ensure_image_from_binary(docker: &Docker, binary_path: &Path) -> Result<String> {
    let binary = tokio::fs::read(binary_path)
        .await
        .map_err(HarnessError::io(
            COMPONENT,
            format!("cannot read {}", binary_path.display()),
        ))?;
    if !is_static_elf(&binary) {
        return Err(HarnessError::other(
            COMPONENT,
            format!(
                "{} is not a statically linked ELF binary (build with RUSTFLAGS='-C target-feature=+crt-static')",
                binary_path.display()
            ),
        ));
    }
    let tag = tag_for(&binary);
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let context = build_context(&binary)?;
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: Some(tag.clone()),
        rm: true,
        forcerm: true,
        networkmode: Some("none".into()),
        labels: Some(HashMap::from([(
            WORKLOAD_LABEL.to_string(),
            "true".to_string(),
        )])),
        version: BuilderVersion::BuilderV1,
        ..Default::default()
    };
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut log = String::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(HarnessError::docker(format!("build {tag}")))?;
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(HarnessError::other(
                COMPONENT,
                format!("build of {tag} failed: {detail}\n{log}"),
            ));
        }
    }
    docker
        .inspect_image(&tag)
        .await
        .map_err(HarnessError::docker(format!(
            "inspect {tag} after build:\n{log}"
        )))?;
    Ok(tag)
}

/// Builds the static workload binary and its image; returns the tag.
pub async fn ensure_workload_image(docker: &Docker) -> Result<String> {
    let binary = tokio::task::spawn_blocking(build_workload_binary)
        .await
        .map_err(|e| HarnessError::other(COMPONENT, format!("build task failed: {e}")))??;
    ensure_image_from_binary(docker, &binary).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_content_hashes() {
        let a = tag_for(b"one");
        assert!(a.starts_with("medforge-workload:"));
        assert_eq!(a.len(), "medforge-workload:".len() + 16);
        assert_eq!(a, tag_for(b"one"));
        assert_ne!(a, tag_for(b"two"));
    }

    #[test]
    fn context_holds_dockerfile_and_executable() {
        let ctx = build_context(b"\x7fELF-binary").unwrap();
        let mut archive = tar::Archive::new(ctx.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            [
                ("Dockerfile".to_string(), 0o644),
                ("medforge-workload".to_string(), 0o755)
            ]
        );
    }

    #[test]
    fn detects_dynamic_binaries() {
        // The test binary itself is dynamically linked.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!is_static_elf(&me));
        assert!(!is_static_elf(b"#!/bin/sh\n"));
    }
}
