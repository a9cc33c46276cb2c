//! What the node agent's tests share: an embedded control plane in a
//! temporary directory, the harness's dockerd and zfs-fuse through a
//! per-test scope, and the agent's side of it all
//! ([`medforge_operator::agent::testing::TestNode`]: the workload image as a
//! Pack, helpers that poll with deadlines, never sleep, for a state).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Deref;

use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{Session, SessionSpec};
use medforge_operator::agent::testing::{self, Agent, TestNode};
use medforge_testkit::bollard::query_parameters::ListContainersOptions;
use medforge_testkit::{Harness, TestScope};

pub use medforge_operator::agent::testing::is_running_and_ready;

pub struct Env {
    pub harness: Harness,
    pub scope: TestScope,
    control_plane: Option<TestControlPlane>,
    /// The node under test: client, namespace, node name, image.
    target: TestNode,
    cleaned: bool,
}

/// An environment reads as its node: `env.client`, `env.create_bound(…)`.
impl Deref for Env {
    type Target = TestNode;

    fn deref(&self) -> &TestNode {
        &self.target
    }
}

impl Env {
    pub async fn new() -> Env {
        Env::with_harness(Harness::get().await.expect("harness")).await
    }

    /// An environment on a given harness (a private one, for tests that
    /// restart its dockerd).
    pub async fn with_harness(harness: Harness) -> Env {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let scope = harness.scope().await.expect("scope");
        let control_plane = TestControlPlane::start().await;
        let client = control_plane.client.clone();
        let target = medforge_testkit::start_agent_node(&harness, &scope, client).await;
        Env {
            harness,
            scope,
            control_plane: Some(control_plane),
            target,
            cleaned: false,
        }
    }

    pub fn spec(pack: &str, gpus: u32) -> SessionSpec {
        testing::spec(pack, gpus)
    }

    pub async fn dataset_exists(&self, dataset: &str) -> bool {
        self.scope.dataset_exists(dataset).await.unwrap()
    }

    /// Filesystem datasets under `<scope>/ws/<owner>`.
    pub async fn datasets_of_owner(&self, owner: &str) -> Vec<String> {
        let root = format!("{}/ws/{owner}", self.scope.dataset());
        match self
            .harness
            .zfs([
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "filesystem",
                "-r",
                root.as_str(),
            ])
            .await
        {
            Ok(out) => out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != root)
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Snapshots of a dataset, as `zfs list -t snapshot` shows them.
    pub async fn snapshots(&self, dataset: &str) -> Vec<String> {
        match self
            .harness
            .zfs(["list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset])
            .await
        {
            Ok(out) => out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn upstream(s: &Session) -> SocketAddr {
        TestNode::upstream(s)
    }

    /// Stops the agent (aborts its task), then removes what the test made.
    pub async fn finish(self, agent: Agent) {
        agent.kill().await;
        self.cleanup().await;
    }

    /// Removes what the test made: its containers and datasets (the
    /// scope), its network, its control plane.
    pub async fn cleanup(mut self) {
        self.scope.cleanup().await.expect("scope cleanup");
        self.remove_networks().await;
        self.cleaned = true;
        if let Some(control_plane) = self.control_plane.take() {
            control_plane.shutdown().await;
        }
    }
}

impl Drop for Env {
    /// A test that panicked: remove its containers (the scope's own drop
    /// does that too, but after this) so that its network can go.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let harness = self.harness.clone();
        let prefix = self.scope.prefix().to_string();
        let network = self.scope.name("net");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let harness = harness.with_fresh_client().ok()?;
                let docker = harness.docker();
                let list = docker
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(HashMap::from([(
                            "label".to_string(),
                            vec![format!("{}={prefix}", medforge_testkit::SCOPE_LABEL)],
                        )])),
                        ..Default::default()
                    }))
                    .await
                    .ok()?;
                for c in list {
                    let _ = docker
                        .remove_container(
                            c.id.as_deref().unwrap_or_default(),
                            Some(medforge_testkit::bollard::query_parameters::RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
                testing::remove_networks(docker, &network).await;
                Some(())
            })
        })
        .join();
    }
}

/// Polls a list until it has exactly `n` items, each satisfying `ready`.
pub async fn eventually_list<K>(
    api: &kube::Api<K>,
    n: usize,
    within: std::time::Duration,
    ready: impl Fn(&K) -> bool,
) -> Vec<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let until = std::time::Instant::now() + within;
    loop {
        let items = api.list(&Default::default()).await.unwrap().items;
        if items.len() == n && items.iter().all(&ready) {
            return items;
        }
        assert!(
            std::time::Instant::now() < until,
            "expected {n} items within {within:?}, have {items:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
