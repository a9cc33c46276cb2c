//! A workload container on the real harness: dockerd in the test network
//! namespace, a zfs-fuse dataset bind-mounted at /workspace, HTTP from the
//! test process through the namespace, and a cleanup that leaves nothing.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use medforge_testkit::bollard::errors::Error as DockerError;
use medforge_testkit::bollard::models::{ContainerCreateBody, HostConfig};
use medforge_testkit::{Harness, HarnessConfig, HarnessError, find_in_path};

fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let wanted = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(wanted.as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_container_uses_its_zfs_workspace() -> Result<(), HarnessError> {
    let harness = Harness::get().await?;
    let docker = harness.docker().clone();
    let mut scope = harness.scope().await?;
    let image = harness.workload_image().await?;
    assert!(image.starts_with("medforge-workload:"), "{image}");

    // A dataset with a quota, owned by the container user.
    let ws = scope
        .create_dataset("workspace", &[("quota", "16M")])
        .await?;
    assert!(ws.name.starts_with(&scope.dataset()));
    assert_eq!(
        harness
            .zfs(["get", "-Hp", "-o", "value", "quota", ws.name.as_str()])
            .await?
            .trim(),
        (16u64 << 20).to_string()
    );
    std::os::unix::fs::chown(&ws.mountpoint, Some(1000), Some(1000)).expect("chown the workspace");

    // The container, hardened as a session would be.
    let name = scope.name("session");
    let session = format!("s-{}", scope.prefix());
    let config = ContainerCreateBody {
        image: Some(image.clone()),
        user: Some("1000:1000".into()),
        env: Some(vec![
            format!("MEDFORGE_SESSION={session}"),
            "NVIDIA_VISIBLE_DEVICES=GPU-fake-uuid".into(),
        ]),
        labels: Some(scope.labels()),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/workspace", ws.mountpoint.display())]),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            init: Some(true),
            readonly_rootfs: Some(true),
            memory: Some(128 << 20),
            pids_limit: Some(64),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = harness
        .create_and_start(&name, config)
        .await
        .expect("create and start container");

    let info = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    let host = info.host_config.expect("host config");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(host.init, Some(true));
    assert_eq!(host.memory, Some(128 << 20));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(
        info.config.and_then(|c| c.user).as_deref(),
        Some("1000:1000")
    );

    // Port 8080 answers, from the test process through the namespace.
    let ip = harness.container_ip(&name).await?;
    let addr = SocketAddr::new(ip, 8080);
    harness
        .wait_for_http(addr, "/healthz", Duration::from_secs(30))
        .await?;

    let root = harness.http_get(addr, "/").await?;
    assert_eq!((root.status, root.text()), (200, session.clone()));

    let env: serde_json::Value = harness.http_get(addr, "/env").await?.json()?;
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "GPU-fake-uuid", "{env}");
    assert_eq!(env["MEDFORGE_SESSION"], session.as_str(), "{env}");

    // Write through the container, read back through it and on the host.
    let content = format!("hello from {}\n", scope.prefix());
    let put = harness
        .http_put(addr, "/workspace/hello.txt", content.clone())
        .await?;
    assert_eq!(put.status, 201, "{}", put.text());
    let got = harness.http_get(addr, "/workspace/hello.txt").await?;
    assert_eq!((got.status, got.text()), (200, content.clone()));
    let on_host = ws.mountpoint.join("hello.txt");
    assert_eq!(std::fs::read_to_string(&on_host).unwrap(), content);
    assert_eq!(std::fs::metadata(&on_host).unwrap().uid(), 1000);

    assert_eq!(
        harness
            .http_get(addr, "/workspace/absent.txt")
            .await?
            .status,
        404
    );
    assert_eq!(
        harness
            .http_get(addr, "/workspace/%2e%2e/etc/passwd")
            .await?
            .status,
        400
    );

    // The quota holds: a write past it fails inside the container.
    let too_big = vec![b'x'; 24 << 20];
    let over = harness
        .http(
            medforge_testkit::Method::PUT,
            addr,
            "/workspace/big.bin",
            too_big,
            Duration::from_secs(60),
        )
        .await?;
    assert_eq!(over.status, 507, "{}", over.text());

    // Cleanup removes the container and destroys the datasets.
    let container_id = created.id;
    let report = scope.cleanup().await?;
    assert!(
        report.containers_removed.contains(&container_id),
        "{report:?}"
    );
    assert!(report.datasets_destroyed.contains(&ws.name), "{report:?}");
    assert!(
        report.datasets_destroyed.contains(&scope.dataset()),
        "{report:?}"
    );
    match docker.inspect_container(&name, None).await {
        Err(DockerError::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        other => panic!("container {name} still there: {other:?}"),
    }
    assert!(scope.containers().await?.is_empty());
    assert!(!scope.dataset_exists(&ws.name).await?);
    assert!(!scope.dataset_exists(&scope.dataset()).await?);
    assert!(!is_mounted(&ws.mountpoint));
    assert!(!scope.dataset_mountpoint().exists());
    // A second cleanup finds nothing and does not fail.
    let again = scope.cleanup().await?;
    assert!(again.containers_removed.is_empty() && again.datasets_destroyed.is_empty());
    Ok(())
}

#[tokio::test]
async fn missing_binary_names_component_and_package() {
    // A search path with the netns tools only: dockerd is the first missing one.
    let bin = tempfile::tempdir().unwrap();
    let search = medforge_testkit::default_search_path();
    for tool in ["ip", "nsenter"] {
        let real = find_in_path(tool, &search).expect("ip and nsenter are installed");
        std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("harness");
    let config = HarnessConfig::from_env()
        .with_state_dir(&state_dir)
        .with_search_path(bin.path().as_os_str());

    let err = Harness::start(config).await.unwrap_err();
    let message = err.to_string();
    assert_eq!(err.component(), Some("dockerd"), "{message}");
    assert!(
        matches!(
            err,
            HarnessError::MissingBinary {
                binary: "dockerd",
                package: "docker.io",
                ..
            }
        ),
        "{message}"
    );
    assert!(message.contains("`dockerd`"), "{message}");
    assert!(
        message.contains("apt-get install -y docker.io"),
        "{message}"
    );
    // Nothing was started or created.
    assert!(!state_dir.exists());
}
