//! The node agent's GpuNode heartbeat against the embedded control plane.

use std::sync::Arc;

use futures::FutureExt;
use kube::Api;
use kube::api::{Patch, PatchParams};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{ComponentHealth, GpuNode, NodeCondition};
use medforge_operator::gpu::StaticInventory;
use medforge_operator::node::{HealthCheck, NodeFacts, publish};
use medforge_testkit::{assert_condition, node_condition};

fn health(healthy: bool, message: &'static str) -> HealthCheck {
    Arc::new(move || {
        async move {
            ComponentHealth {
                healthy,
                version: healthy.then(|| "test".to_string()),
                message: (!healthy).then(|| message.to_string()),
            }
        }
        .boxed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_gpus_health_and_heartbeat_and_keeps_admin_cordons() {
    let cp = TestControlPlane::start().await;
    let client = cp.client.clone();
    let mut facts = NodeFacts {
        node_name: "gpu-host-1".into(),
        inventory: Arc::new(StaticInventory::parse("gpu-host-1", "static:4").unwrap()),
        docker: health(true, ""),
        zfs: health(true, ""),
        storage_note: None,
        isolation: None,
    };

    let n = publish(&client, &facts, &[]).await.unwrap();
    let st = n.status.clone().unwrap();
    assert!(
        !st.conditions.iter().any(|c| c.type_ == "TrialStorage"),
        "production storage carries no TrialStorage condition"
    );
    assert_eq!(st.gpus.len(), 4);
    assert_eq!(st.allocatable, 4);
    assert!(st.last_heartbeat_time.is_some());
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");

    // An admin cordons a GPU with a patch; the next heartbeat keeps the
    // cordon (spec is the admin's) and counts one GPU fewer.
    let nodes: Api<GpuNode> = Api::all(client.clone());
    nodes
        .patch(
            "gpu-host-1",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"disabledGpus": ["GPU-static-gpu-host-1-2"]}}),
            ),
        )
        .await
        .unwrap();
    let n = publish(&client, &facts, &[]).await.unwrap();
    assert_eq!(
        n.spec.disabled_gpus,
        vec!["GPU-static-gpu-host-1-2".to_string()]
    );
    assert_eq!(n.status.as_ref().unwrap().allocatable, 3);

    // Docker down: Ready=False with a message that names it.
    facts.docker = health(
        false,
        "cannot connect to the Docker socket /run/docker.sock",
    );
    let n = publish(&client, &facts, &[]).await.unwrap();
    let ready = node_condition(&n, NodeCondition::Ready).unwrap();
    assert_condition(
        &ready,
        "False",
        "RuntimeUnavailable",
        &["Docker: cannot connect"],
    );
    assert_eq!(n.metadata.name.as_deref(), Some("gpu-host-1"));
    assert_eq!(
        nodes.list(&Default::default()).await.unwrap().items.len(),
        1
    );

    // Trial storage is labelled on the node, and the label goes with it.
    facts.storage_note = Some(
        "workspaces live in the file-backed pool /var/lib/medforge/quickstart/pool.img".into(),
    );
    let n = publish(&client, &facts, &[]).await.unwrap();
    let trial = node_condition(&n, NodeCondition::TrialStorage).expect("a TrialStorage condition");
    assert_eq!(
        (trial.status.as_str(), trial.reason.as_str()),
        ("True", "FileBackedPool")
    );
    assert!(trial.message.contains("pool.img"), "{}", trial.message);
    facts.storage_note = None;
    let n = publish(&client, &facts, &[]).await.unwrap();
    assert!(node_condition(&n, NodeCondition::TrialStorage).is_none());
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_isolated_condition_says_whether_session_containers_may_start() {
    use medforge_operator::isolation::{IsolationGate, IsolationStatus};
    let cp = TestControlPlane::start().await;
    let gate = IsolationGate::new(IsolationStatus::Failed("`iptables-save` failed".into()));
    let facts = NodeFacts {
        node_name: "gpu-host-2".into(),
        inventory: Arc::new(StaticInventory::parse("gpu-host-2", "static:1").unwrap()),
        docker: health(true, ""),
        zfs: health(true, ""),
        storage_note: None,
        isolation: Some(gate.subscribe()),
    };
    let isolated = |n: &medforge_crds::GpuNode| {
        n.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.type_ == "Isolated")
            .cloned()
            .expect("an Isolated condition")
    };
    let c = isolated(&publish(&cp.client, &facts, &[]).await.unwrap());
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "IsolationUnavailable")
    );
    assert!(
        c.message.contains("no session container starts"),
        "{}",
        c.message
    );
    assert!(
        c.message.contains("`iptables-save` failed"),
        "{}",
        c.message
    );
    // Its own condition: the node stays Ready for the scheduler.
    let n = publish(&cp.client, &facts, &[]).await.unwrap();
    assert!(
        n.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );
    cp.shutdown().await;
}
