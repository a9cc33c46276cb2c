//! The embedded control plane killed with SIGKILL in the middle of a stream
//! of writes: every write it acknowledged is there after the restart, with
//! the resourceVersion it was acknowledged with, and no resourceVersion is
//! handed out twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Api;
use kube::api::{ListParams, ObjectMeta, PostParams};

mod support;
use support::{host_port, kube_client};

fn start(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_medforge"))
        .args(["apiserver", "--data-dir"])
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .expect("medforge apiserver starts")
}

fn lease(name: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            ..Default::default()
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_no_resource_version_is_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("apiserver");
    let port = host_port();
    let mut server = start(&dir, port);
    let c = kube_client(&dir).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "default");

    // Eight writers create Leases as fast as they can and record every
    // acknowledgement; the server is killed while they run.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let failed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (leases, acked, failed) = (leases.clone(), acked.clone(), failed.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{w}-{i}");
                match leases.create(&PostParams::default(), &lease(&name)).await {
                    Ok(l) => {
                        let rv = l.metadata.resource_version.unwrap().parse().unwrap();
                        acked.lock().unwrap().insert(name, rv);
                    }
                    Err(e) => {
                        failed.lock().unwrap().push(format!("{e:?}"));
                        return;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked.lock().unwrap().len() < 300 {
        assert!(Instant::now() < deadline, "writes too slow to test");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = server.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let failed = failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 8, "each writer stopped at a failed write");
    // The kill landed inside the stream of writes: some writer's request was
    // already sent (its connection closed under it, not refused).
    let in_flight = failed.iter().filter(|e| !e.contains("refused")).count();
    assert!(
        in_flight > 0,
        "no write was in flight at the kill: {failed:?}"
    );
    eprintln!("writes cut off in flight by the kill: {in_flight} of 8: {failed:?}");
    let max_acked = *acked.values().max().unwrap();

    let mut server = start(&dir, port);
    let c = kube_client(&dir).await;
    let leases: Api<Lease> = Api::namespaced(c, "default");
    let stored: BTreeMap<String, u64> = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|l| {
            (
                l.metadata.name.unwrap(),
                l.metadata.resource_version.unwrap().parse().unwrap(),
            )
        })
        .collect();
    for (name, rv) in &acked {
        assert_eq!(
            stored.get(name),
            Some(rv),
            "acknowledged {name} at {rv} is lost or changed after the crash"
        );
    }
    // Unacknowledged writes may or may not have committed; nothing else is there.
    assert!(stored.len() >= acked.len() && stored.len() <= acked.len() + 8);
    let after = leases
        .create(&PostParams::default(), &lease("after-restart"))
        .await
        .unwrap();
    let rv: u64 = after.metadata.resource_version.unwrap().parse().unwrap();
    let max_stored = *stored.values().max().unwrap();
    assert!(
        rv > max_stored && rv > max_acked,
        "resourceVersion {rv} reused (stored up to {max_stored}, acknowledged up to {max_acked})"
    );
    eprintln!(
        "{} writes acknowledged before SIGKILL, {} stored after restart, next resourceVersion {rv}",
        acked.len(),
        stored.len()
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = server.wait();
}
