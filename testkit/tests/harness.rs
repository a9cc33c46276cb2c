//! The harness itself, on the real components.

use std::net::SocketAddr;
use std::time::Duration;

use medforge_testkit::{DownOptions, Harness, HarnessConfig, HarnessError, TestScope};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates and starts a workload container in `scope`; returns its 8080 address.
async fn start_workload(harness: &Harness, scope: &TestScope, suffix: &str) -> SocketAddr {
    let name = harness
        .start_workload_container(scope, suffix, None)
        .await
        .expect("start a workload container");
    let addr = SocketAddr::new(harness.container_ip(&name).await.expect("ip"), 8080);
    harness
        .wait_for_http(addr, "/healthz", Duration::from_secs(30))
        .await
        .expect("workload answers");
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_are_isolated_and_dropped_scopes_clean_up() -> Result<(), HarnessError> {
    let harness = Harness::get().await?;
    // A second handle reuses the running harness.
    let again = Harness::get().await?;
    assert_eq!(harness.layout(), again.layout());

    let mut a = harness.scope().await?;
    let b = again.scope().await?;
    assert_ne!(a.prefix(), b.prefix());
    let addr_a = start_workload(&harness, &a, "w").await;
    let addr_b = start_workload(&harness, &b, "w").await;
    assert_eq!(harness.http_get(addr_a, "/").await?.text(), a.name("w"));
    assert_eq!(harness.http_get(addr_b, "/").await?.text(), b.name("w"));
    b.create_dataset("x/y", &[]).await?;

    // Cleaning up A leaves B alone.
    let report = a.cleanup().await?;
    assert_eq!(report.containers_removed.len(), 1);
    assert_eq!(b.containers().await?.len(), 1);
    assert!(b.dataset_exists(&format!("{}/x/y", b.dataset())).await?);
    assert_eq!(harness.http_get(addr_b, "/").await?.text(), b.name("w"));

    // Dropping a scope without cleanup still removes its things.
    let b_dataset = b.dataset();
    let b_prefix = b.prefix().to_string();
    drop(b);
    let leftovers = harness
        .docker()
        .list_containers(Some(
            medforge_testkit::bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(std::collections::HashMap::from([(
                    "label".to_string(),
                    vec![format!("{}={b_prefix}", medforge_testkit::SCOPE_LABEL)],
                )])),
                ..Default::default()
            },
        ))
        .await
        .expect("list");
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let c = harness.scope().await?;
    assert!(!c.dataset_exists(&b_dataset).await?);
    drop(c);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_reachable_through_the_namespace_which_has_no_route_out()
-> Result<(), HarnessError> {
    let harness = Harness::get().await?;
    let mut scope = harness.scope().await?;
    let addr = start_workload(&harness, &scope, "net").await;

    // Never dial a container address from the host's own namespace: this
    // machine routes unknown addresses to an outside proxy, and tests send
    // traffic only to loopback or into namespaces they made. Isolation is
    // shown by the namespace having no route out.
    // The namespace has no default route.
    let out = harness
        .netns_command("ip")
        .args(["route", "show", "default"])
        .output()
        .expect("ip route");
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );

    // Websocket echo over a raw stream opened inside the namespace.
    let mut ws = harness.connect(addr).await?;
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    // RFC 6455 5.7: masked "Hello" comes back unmasked.
    ws.write_all(&[
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ])
    .await
    .unwrap();
    let mut echo = [0u8; 7];
    ws.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\x81\x05Hello");
    // Close with 1000: the server answers with 1000.
    ws.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
        .await
        .unwrap();
    let mut close = [0u8; 4];
    ws.read_exact(&mut close).await.unwrap();
    assert_eq!(close, [0x88, 0x02, 0x03, 0xe8]);

    scope.cleanup().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_harness_comes_up_and_goes_down() -> Result<(), HarnessError> {
    // Hold the shared harness so that zfs-fuse is already up (and not ours to stop).
    let _shared = Harness::get().await?;
    let state = tempfile::tempdir().unwrap();
    let config = HarnessConfig::from_env().with_state_dir(state.path().join("h"));

    let harness = Harness::start(config.clone()).await?;
    let layout = harness.layout().clone();
    let status = medforge_testkit::status(&config)?;
    assert!(status.is_up(), "{status}");
    assert!(
        medforge_testkit::up(&config)?.docker_socket == layout.docker_socket,
        "up is idempotent"
    );

    // `down` waits for handles: with one alive and no force it gives up.
    let busy = medforge_testkit::down(
        &config,
        &DownOptions {
            wait: Duration::from_millis(200),
            force: false,
        },
    );
    assert!(matches!(busy, Err(HarnessError::Busy { .. })), "{busy:?}");
    let mut scope = harness.scope().await?;
    scope.cleanup().await?;
    drop(scope);
    drop(harness);

    let report = medforge_testkit::down(&config, &DownOptions::default())?;
    assert!(
        report.stopped.iter().any(|s| s.starts_with("dockerd")),
        "{report}"
    );
    let status = medforge_testkit::status(&config)?;
    assert!(!status.netns && status.dockerd_pid.is_none(), "{status}");
    assert!(status.pool_health.is_none(), "{status}");
    assert!(!layout.docker_data_root.exists());
    assert!(!layout.run_dir.exists());
    assert!(!layout.pool_file.exists());
    // The shared zfs-fuse still serves the shared pool.
    assert!(medforge_testkit::status(&HarnessConfig::from_env())?.is_up());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_that_cannot_start_is_named_with_its_command_and_log() {
    use std::os::unix::fs::PermissionsExt;

    // Real netns and zfs tools, and a dockerd that fails at once.
    let bin = tempfile::tempdir().unwrap();
    let search = medforge_testkit::default_search_path();
    for tool in ["ip", "nsenter", "zfs-fuse", "zpool", "zfs"] {
        let real = medforge_testkit::find_in_path(tool, &search).expect("installed");
        std::os::unix::fs::symlink(real, bin.path().join(tool)).unwrap();
    }
    for (tool, script) in [
        (
            "dockerd",
            "#!/bin/sh\necho 'fake dockerd: cannot frobnicate the bridge' >&2\nexit 1\n",
        ),
        ("containerd", "#!/bin/sh\nexit 1\n"),
        ("runc", "#!/bin/sh\nexit 1\n"),
        ("docker-init", "#!/bin/sh\nexit 1\n"),
    ] {
        let path = bin.path().join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let config = HarnessConfig::from_env()
        .with_state_dir(state.path().join("h"))
        .with_search_path(bin.path().as_os_str());

    let err = Harness::start(config.clone()).await.unwrap_err();
    let message = err.to_string();
    match &err {
        HarnessError::StartFailed {
            component,
            command,
            tail,
            ..
        } => {
            assert_eq!(*component, "dockerd");
            assert!(command.contains("--data-root"), "{command}");
            assert!(command.contains("nsenter --net="), "{command}");
            assert!(tail.contains("cannot frobnicate the bridge"), "{tail}");
        }
        other => panic!("expected StartFailed, got {other:?}"),
    }
    assert!(message.starts_with("dockerd failed to start"), "{message}");
    assert!(
        message.contains("cannot frobnicate the bridge"),
        "{message}"
    );

    // `down` removes the namespace the failed bring-up had created.
    medforge_testkit::down(
        &config,
        &DownOptions {
            wait: Duration::from_secs(5),
            force: false,
        },
    )
    .expect("down");
    let status = medforge_testkit::status(&config).expect("status");
    assert!(!status.netns, "{status}");
}
