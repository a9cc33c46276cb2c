//! A session image from one statically linked binary, alone in a `FROM
//! scratch` image tagged by the binary's content hash: how the test workload
//! becomes the quickstart's default Pack and the tests' image. Built with the
//! legacy builder and no network, so nothing is ever pulled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::query_parameters::{BuildImageOptions, BuilderVersion};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// Repository name of the workload image.
pub const WORKLOAD_REPOSITORY: &str = "medforge-workload";
/// Label put on the image.
pub const WORKLOAD_LABEL: &str = "dev.medforge.test-workload";

/// Why an image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a statically linked ELF binary (build it with RUSTFLAGS='-C target-feature=+crt-static')", path.display())]
    NotStatic { path: PathBuf },
    #[error("cannot build the tar context: {0}")]
    Context(#[source] std::io::Error),
    #[error("Docker: {what}: {source}")]
    Docker {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("the build of {tag} failed: {detail}\n{log}")]
    Build {
        tag: String,
        detail: String,
        log: String,
    },
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
pub fn build_context(binary: &[u8]) -> Result<Vec<u8>, ImageError> {
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
            .map_err(ImageError::Context)?;
    }
    tar.into_inner().map_err(ImageError::Context)
}

/// Builds (or reuses) the workload image in `docker` from a static binary
/// and returns its tag. Never pulls: the legacy builder, `FROM scratch`.
pub async fn ensure_image_from_binary(
    docker: &Docker,
    binary_path: &Path,
) -> Result<String, ImageError> {
    let binary = tokio::fs::read(binary_path)
        .await
        .map_err(|source| ImageError::Read {
            path: binary_path.to_path_buf(),
            source,
        })?;
    if !is_static_elf(&binary) {
        return Err(ImageError::NotStatic {
            path: binary_path.to_path_buf(),
        });
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
        let info = item.map_err(|source| ImageError::Docker {
            what: format!("build {tag}"),
            source,
        })?;
        if let Some(s) = info.stream {
            log.push_str(&s);
        }
        if let Some(detail) = info.error_detail.and_then(|d| d.message) {
            return Err(ImageError::Build { tag, detail, log });
        }
    }
    docker
        .inspect_image(&tag)
        .await
        .map_err(|source| ImageError::Docker {
            what: format!("inspect {tag} after build:\n{log}"),
            source,
        })?;
    Ok(tag)
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
