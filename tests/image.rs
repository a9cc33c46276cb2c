//! The `medforge` image `scripts/build-image.sh` builds into the harness's
//! Docker (scripts/test.sh does, before the tests): it holds the binary of
//! this build and exactly the files it needs (the libraries `ldd` lists, the
//! CA certificates, a passwd and group, /tmp), runs as a non-root user, is
//! labelled with the commit, and the binary runs in it with no network, a
//! read-only root and no capabilities.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use futures::StreamExt;
use medforge_testkit::Harness;
use medforge_testkit::bollard::container::LogOutput;
use medforge_testkit::bollard::models::{ContainerCreateBody, HostConfig};
use medforge_testkit::bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, WaitContainerOptions,
};

const TAG: &str = "medforge:dev";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn output(program: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sha256(path: &Path) -> String {
    output("sha256sum", &[path.to_str().unwrap()], &repo())
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs the image with `args` (no network, read-only, no capabilities);
/// its exit code and what it printed.
async fn run(harness: &Harness, name: &str, args: &[&str]) -> (i64, String) {
    let docker = harness.docker();
    let config = ContainerCreateBody {
        image: Some(TAG.to_string()),
        cmd: Some(args.iter().map(|a| a.to_string()).collect()),
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    harness.create_and_start(name, config).await.unwrap();
    let mut waited = docker.wait_container(name, None::<WaitContainerOptions>);
    let code = match waited.next().await {
        Some(Ok(r)) => r.status_code,
        // A non-zero exit arrives as an error carrying the code.
        Some(Err(medforge_testkit::bollard::errors::Error::DockerContainerWaitError {
            code,
            ..
        })) => code,
        other => panic!("waiting for {name}: {other:?}"),
    };
    let mut logs = docker.logs(
        name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let mut text = String::new();
    while let Some(chunk) = logs.next().await {
        match chunk.unwrap() {
            LogOutput::StdOut { message } | LogOutput::StdErr { message } => {
                text.push_str(&String::from_utf8_lossy(&message))
            }
            _ => {}
        }
    }
    docker
        .remove_container(name, None::<RemoveContainerOptions>)
        .await
        .unwrap();
    (code, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_holds_this_build_and_only_what_it_needs_and_runs_unprivileged() {
    let harness = Harness::get().await.expect("harness");
    let scope = harness.scope().await.expect("scope");
    let docker = harness.docker();
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_medforge"));
    let build = format!(
        "DOCKER_HOST=unix://{} bash scripts/build-image.sh\n(scripts/test.sh does this before the tests)",
        harness.layout().docker_socket.display()
    );
    let Ok(image) = docker.inspect_image(TAG).await else {
        panic!("the image {TAG} is not in the harness's Docker; build it with\n  {build}");
    };
    let config = image.config.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    let sum = sha256(&binary);
    assert_eq!(
        labels.get("dev.medforge.binary.sha256"),
        Some(&sum),
        "{TAG} holds another build of medforge than {}; build it again with\n  {build}",
        binary.display()
    );
    let head = output("git", &["rev-parse", "HEAD"], &repo());
    let revision = labels
        .get("org.opencontainers.image.revision")
        .expect("the commit label");
    assert!(
        revision.starts_with(head.trim()),
        "labelled {revision}, the checkout is at {head}"
    );
    let version = output(binary.to_str().unwrap(), &["--version"], &repo());
    assert_eq!(
        labels
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        version.split_whitespace().last()
    );
    assert_eq!(config.user.as_deref(), Some("65532:65532"), "not root");
    assert_eq!(
        config.entrypoint,
        Some(vec!["/usr/local/bin/medforge".to_string()])
    );
    assert_eq!(
        image.root_fs.and_then(|r| r.layers).map(|l| l.len()),
        Some(1),
        "one layer: nothing under it"
    );

    // Its files: exactly the binary, the libraries it links, and the rest.
    let name = scope.name("image-files");
    docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(TAG.to_string()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut tarball = Vec::new();
    let mut export = docker.export_container(&name);
    while let Some(chunk) = export.next().await {
        tarball.extend_from_slice(&chunk.unwrap());
    }
    docker
        .remove_container(&name, None::<RemoveContainerOptions>)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tar_path = dir.path().join("image.tar");
    std::fs::write(&tar_path, &tarball).unwrap();
    let listing = output("tar", &["-tvf", tar_path.to_str().unwrap()], dir.path());
    let mut files = BTreeSet::new();
    let mut binary_entry = None;
    for line in listing.lines() {
        let mode = line.split_whitespace().next().unwrap();
        let path = line.split_whitespace().last().unwrap();
        assert!(
            !mode.contains('s') && !mode.contains('S'),
            "no setuid or setgid file: {line}"
        );
        // Docker adds these to every container's file system.
        if [
            "dev",
            "proc",
            "sys",
            "etc/hostname",
            "etc/hosts",
            "etc/resolv.conf",
            ".dockerenv",
            "etc/mtab",
        ]
        .iter()
        .any(|d| path.trim_start_matches("./").starts_with(d))
        {
            continue;
        }
        if mode.starts_with('-') {
            let file = format!("/{}", path.trim_start_matches("./"));
            if file == "/usr/local/bin/medforge" {
                binary_entry = Some(path.to_string());
            }
            files.insert(file);
        }
    }
    let ldd = output("ldd", &[binary.to_str().unwrap()], &repo());
    let mut expected: BTreeSet<String> = ldd
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            match cols.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect();
    assert!(expected.len() >= 2, "ldd lists the loader and libc: {ldd}");
    for f in [
        "/usr/local/bin/medforge",
        "/etc/passwd",
        "/etc/group",
        "/etc/ssl/certs/ca-certificates.crt",
    ] {
        expected.insert(f.to_string());
    }
    assert_eq!(files, expected, "the image's files");
    let inside = dir.path().join("medforge");
    let extracted = Command::new("tar")
        .args([
            "-xOf",
            tar_path.to_str().unwrap(),
            binary_entry.as_deref().expect("the binary's entry"),
        ])
        .output()
        .unwrap();
    assert!(
        extracted.status.success(),
        "{}",
        String::from_utf8_lossy(&extracted.stderr)
    );
    std::fs::write(&inside, extracted.stdout).unwrap();
    assert_eq!(
        sha256(&inside),
        sum,
        "the binary in the image is this build"
    );

    // It runs: unprivileged, no network, read-only.
    let (code, text) = run(&harness, &scope.name("image-version"), &["--version"]).await;
    assert_eq!((code, text.trim()), (0, version.trim()));
    let (code, text) = run(&harness, &scope.name("image-crds"), &["crds"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("kind: CustomResourceDefinition") && text.contains("sessions.medforge.dev"),
        "{}",
        &text[..text.len().min(500)]
    );
}
