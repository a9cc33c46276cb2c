//! The api against the real thing: the embedded control plane
//! (`medforge-apiserver`) behind `KubeBackend`, with the real scheduler
//! (`medforge_operator::scheduler`) and, where a scenario needs its sessions
//! to run, a node agent on `node-a`.
//!
//! The agent is the real reconciler (the node agent's kube-runtime
//! controller, `reconcile` and `error_policy`, and its snapshot controller)
//! over the agent's own fakes of Docker and ZFS (`FakeContainers`,
//! `FakeWorkspaces`): every status it writes, every finalizer, every
//! snapshot record is the agent's. What is not real: no container runs (a
//! session's upstream is the fake container's address), the readiness
//! probe asks [`Ports`] instead of dialling, and there are no Docker events
//! (a test that kills a container nudges the agent, as the event would).
//! The GpuNode is published once by the test (4 GPUs of a static
//! inventory, Ready), not by the agent's heartbeat; the scheduler is told
//! heartbeats last an hour.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{Controller, watcher};
use medforge_api::backend::{KubeBackend, SessionBackend};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{GpuNode, GpuNodeSpec, Pack, Session, WorkspaceSnapshot};
use medforge_operator::agent::context::Context;
use medforge_operator::agent::dialer::Dialer;
use medforge_operator::agent::metrics::Metrics;
use medforge_operator::agent::runtime::{ContainerState, KubeCluster};
use medforge_operator::agent::testing::{FakeContainers, FakeWorkspaces};
use medforge_operator::agent::{AgentConfig, controller, snapshots};
use medforge_operator::gpu::{GpuInventory, StaticInventory};
use medforge_operator::scheduler::controller::{SchedulerConfig, run as run_scheduler};
use medforge_operator::scheduler::placement::Limits;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{PACK_IMAGE, pack};

/// The namespace of the api's Sessions and snapshot records.
pub const NAMESPACE: &str = "mf-api-test";
/// The node the scenarios' sessions run on.
pub const NODE: &str = "node-a";
/// Where the agent makes workspaces: `pool/<owner>/<session uid>`.
pub const DATASET_ROOT: &str = "pool";

/// What runs beside the embedded control plane.
#[derive(Clone, Debug)]
pub struct Plane {
    /// The real scheduler; without it nothing is ever bound.
    pub scheduler: bool,
    /// A node agent on `node-a`.
    pub agent: bool,
    /// Active sessions per user (the scheduler's limit; an admin's
    /// per-user override travels on the Session).
    pub user_limit: u32,
    /// GPUs of `node-a`.
    pub gpus: u32,
}

impl Plane {
    /// The control plane and the real scheduler: sessions are bound, and
    /// nothing runs them.
    pub fn scheduler() -> Plane {
        Plane {
            scheduler: true,
            agent: false,
            user_limit: 10,
            gpus: 4,
        }
    }

    /// The control plane, the real scheduler and a node agent on `node-a`.
    pub fn agent() -> Plane {
        Plane {
            agent: true,
            ..Plane::scheduler()
        }
    }

    /// The control plane alone: nothing binds.
    pub fn no_scheduler() -> Plane {
        Plane {
            scheduler: false,
            ..Plane::scheduler()
        }
    }
}

/// The readiness probe's view of the sessions' ports: open (the default)
/// or closed (a workload that is not listening yet).
#[derive(Clone, Debug)]
pub struct Ports(Arc<AtomicBool>);

impl Ports {
    /// Opens (`true`) or closes every session's port.
    pub fn set_open(&self, open: bool) {
        self.0.store(open, Ordering::SeqCst);
    }
}

impl Dialer for Ports {
    fn dial(
        &self,
        addr: SocketAddr,
        _timeout: Duration,
    ) -> BoxFuture<'static, std::io::Result<()>> {
        let open = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if open {
                Ok(())
            } else {
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("{addr}: nothing listens (the test closed the ports)"),
                ))
            }
        })
    }

    fn describe(&self) -> String {
        "the test's ports".into()
    }
}

/// The embedded control plane and what runs beside it; stops them when dropped.
pub struct Cluster {
    control_plane: Mutex<Option<TestControlPlane>>,
    pub client: kube::Client,
    pub sessions: Api<Session>,
    pub snapshots: Api<WorkspaceSnapshot>,
    pub nodes: Api<GpuNode>,
    pub packs: Api<Pack>,
    /// The agent's Docker.
    pub docker: FakeContainers,
    /// The agent's ZFS.
    pub zfs: FakeWorkspaces,
    /// The agent's readiness probe.
    pub ports: Ports,
    /// Makes the agent look at every session again (a Docker event would).
    nudge: mpsc::UnboundedSender<()>,
    plane: Plane,
    /// The nodes (and their resource versions) the scheduler's last pass
    /// saw; `None` until the scheduler runs.
    scheduler_saw: Mutex<Option<tokio::sync::watch::Receiver<HashMap<String, String>>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Cluster {
    /// Starts the control plane with `node-a` (Ready, `plane.gpus` GPUs)
    /// and the Pack `default`, then what `plane` asks for.
    pub async fn start(plane: Plane) -> Cluster {
        let control_plane = TestControlPlane::builder()
            .data_subdir("control-plane")
            .namespace(NAMESPACE)
            .start()
            .await;
        let client = control_plane.client.clone();
        let packs: Api<Pack> = Api::all(client.clone());
        packs
            .create(&PostParams::default(), &pack("default", json!({})))
            .await
            .expect("the Pack default");
        let nodes: Api<GpuNode> = Api::all(client.clone());
        nodes
            .create(
                &PostParams::default(),
                &GpuNode::new(NODE, GpuNodeSpec::default()),
            )
            .await
            .expect("the GpuNode");
        let node = publish_ready(&nodes, NODE, plane.gpus).await;
        let (nudge, nudged) = mpsc::unbounded_channel();
        let cluster = Cluster {
            control_plane: Mutex::new(Some(control_plane)),
            sessions: Api::namespaced(client.clone(), NAMESPACE),
            snapshots: Api::namespaced(client.clone(), NAMESPACE),
            nodes,
            packs,
            client,
            docker: FakeContainers::with_image(PACK_IMAGE),
            zfs: FakeWorkspaces::default(),
            ports: Ports(Arc::new(AtomicBool::new(true))),
            nudge,
            plane,
            scheduler_saw: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        };
        if cluster.plane.scheduler {
            cluster.start_scheduler(&node).await;
        }
        if cluster.plane.agent {
            cluster.start_agent(nudged);
        }
        cluster
    }

    /// The api's backend on this control plane.
    pub fn backend(&self) -> Arc<dyn SessionBackend> {
        Arc::new(KubeBackend::new(self.client.clone(), NAMESPACE))
    }

    /// Starts the real scheduler (one replica: it takes the Lease at once)
    /// and waits until a pass of it has seen `node` as it is now.
    pub async fn start_scheduler(&self, node: &GpuNode) {
        let mut cfg = SchedulerConfig::new("api-test-scheduler");
        cfg.limits = Limits {
            max_sessions_per_user: self.plane.user_limit,
            // The api bounds a session's GPUs; nothing more here.
            max_gpus_per_user: 1000,
            // Packs may leave a session without GPUs (as with --quickstart).
            allow_cpu_only: true,
        };
        // The node is published once: its heartbeat must not go stale.
        cfg.heartbeat_timeout = Duration::from_secs(3600);
        let (seen_tx, seen) = tokio::sync::watch::channel(HashMap::<String, String>::new());
        cfg.observer = Some(Arc::new(seen_tx));
        let client = self.client.clone();
        self.spawn(async move {
            let _ = run_scheduler(client, cfg, std::future::pending()).await;
        });
        *self.scheduler_saw.lock().unwrap() = Some(seen);
        self.scheduler_sees(node).await;
    }

    /// Waits until a pass of the scheduler has seen `node` as it is now.
    async fn scheduler_sees(&self, node: &GpuNode) {
        let mut seen = self
            .scheduler_saw
            .lock()
            .unwrap()
            .clone()
            .expect("the scheduler runs");
        let (name, rv) = (
            node.metadata.name.clone(),
            node.metadata.resource_version.clone(),
        );
        tokio::time::timeout(
            Duration::from_secs(30),
            seen.wait_for(|m| name.as_ref().and_then(|n| m.get(n)) == rv.as_ref()),
        )
        .await
        .unwrap_or_else(|_| panic!("the scheduler never saw {name:?}"))
        .expect("the scheduler's observer");
    }

    /// Starts the node agent of `node-a` over the fakes: the Session
    /// controller (reconciles on every change to a Session, and on a nudge)
    /// and the snapshot controller.
    fn start_agent(&self, nudged: mpsc::UnboundedReceiver<()>) {
        let mut config = AgentConfig::new(NODE, DATASET_ROOT);
        config.inventory = Arc::new(StaticInventory::uniform(NODE, self.plane.gpus));
        config.dialer = Arc::new(self.ports.clone());
        config.capacity = None;
        // Only the watch and nudges drive it.
        config.resync = Duration::from_secs(3600);
        config.probe_interval = Duration::from_millis(50);
        config.probe_burst = Duration::from_millis(20);
        config.error_backoff_min = Duration::from_millis(50);
        config.error_backoff_max = Duration::from_secs(1);
        let ctx = Arc::new(Context::new(
            config.clone(),
            self.docker.clone(),
            self.zfs.clone(),
            KubeCluster {
                client: self.client.clone(),
            },
            Arc::new(Metrics::default()),
            None,
        ));
        let nudges = futures::stream::unfold(nudged, |mut rx| async move {
            rx.recv().await.map(|()| ((), rx))
        });
        let sessions = Controller::new(
            Api::<Session>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .reconcile_all_on(nudges)
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|_| async {});
        self.spawn(sessions);
        self.spawn(snapshots::run(
            self.client.clone(),
            self.zfs.clone(),
            config,
            None,
        ));
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().unwrap().push(tokio::spawn(task));
    }

    /// Makes the agent look at every session (as a Docker event would).
    pub fn nudge_agent(&self) {
        let _ = self.nudge.send(());
    }

    /// A Session as stored.
    pub async fn session(&self, name: &str) -> Option<Session> {
        self.sessions.get_opt(name).await.expect("get a Session")
    }

    /// Every Session.
    pub async fn sessions(&self) -> Vec<Session> {
        self.sessions
            .list(&ListParams::default())
            .await
            .expect("list Sessions")
            .items
    }

    /// Every snapshot record.
    pub async fn records(&self) -> Vec<WorkspaceSnapshot> {
        self.snapshots
            .list(&ListParams::default())
            .await
            .expect("list WorkspaceSnapshots")
            .items
    }

    /// A snapshot record as stored.
    pub async fn record(&self, name: &str) -> Option<WorkspaceSnapshot> {
        self.snapshots
            .get_opt(name)
            .await
            .expect("get a WorkspaceSnapshot")
    }

    /// Creates a snapshot record (the control plane sets its creation
    /// time), then writes its status, if it has one; the record as stored.
    pub async fn put_record(&self, mut record: WorkspaceSnapshot) -> WorkspaceSnapshot {
        let status = record.status.take();
        record.metadata.creation_timestamp = None;
        let name = record.metadata.name.clone().expect("a named record");
        let created = self
            .snapshots
            .create(&PostParams::default(), &record)
            .await
            .expect("create a WorkspaceSnapshot");
        match status {
            None => created,
            Some(status) => self
                .snapshots
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({ "status": status })),
                )
                .await
                .expect("write a WorkspaceSnapshot's status"),
        }
    }

    /// Writes part of a Session's status (a JSON merge patch of `status`),
    /// as an operator would.
    pub async fn patch_status(&self, name: &str, status: serde_json::Value) -> Session {
        self.sessions
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({ "status": status })),
            )
            .await
            .expect("write a Session's status")
    }

    /// Creates or replaces a Pack (as kubectl would).
    pub async fn put_pack(&self, pack: Pack) {
        let name = pack.metadata.name.clone().expect("a named Pack");
        match self.packs.get_opt(&name).await.expect("get a Pack") {
            None => {
                self.packs
                    .create(&PostParams::default(), &pack)
                    .await
                    .expect("create a Pack");
            }
            Some(old) => {
                let mut new = pack;
                new.metadata.resource_version = old.metadata.resource_version;
                self.packs
                    .replace(&name, &PostParams::default(), &new)
                    .await
                    .expect("replace a Pack");
            }
        }
    }

    /// Adds a Ready node (no agent runs on it) with `gpus` GPUs, and waits
    /// until the scheduler (if it runs) has seen it.
    pub async fn add_node(&self, name: &str, gpus: u32) -> GpuNode {
        self.nodes
            .create(
                &PostParams::default(),
                &GpuNode::new(name, GpuNodeSpec::default()),
            )
            .await
            .expect("create a GpuNode");
        let node = publish_ready(&self.nodes, name, gpus).await;
        if self.plane.scheduler {
            self.scheduler_sees(&node).await;
        }
        node
    }

    /// The process of the session's container dies with `code`; the agent
    /// is nudged, as Docker's `die` event would.
    pub async fn kill_container(&self, name: &str, code: i64) {
        let uid = self
            .session(name)
            .await
            .and_then(|s| s.metadata.uid)
            .expect("the session's uid");
        let running: Vec<_> = self
            .docker
            .of_session(&uid)
            .into_iter()
            .filter(|c| c.state == ContainerState::Running)
            .collect();
        assert_eq!(running.len(), 1, "one running container: {running:?}");
        self.docker.kill(&running[0].id, code);
        self.nudge_agent();
    }

    /// Stops the control plane: every later call of the api's finds nothing listening.
    pub async fn stop_control_plane(&self) {
        let control_plane = self.control_plane.lock().unwrap().take();
        if let Some(control_plane) = control_plane {
            control_plane.shutdown().await;
        }
    }
}

/// Writes a node's status as its agent would: its GPUs (a static
/// inventory's), Ready, a heartbeat now.
async fn publish_ready(nodes: &Api<GpuNode>, name: &str, gpus: u32) -> GpuNode {
    let inventory = StaticInventory::uniform(name, gpus)
        .gpus()
        .expect("a static inventory");
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "gpus": inventory,
        "allocatable": gpus,
        "lastHeartbeatTime": now,
        "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                        "message": "published by the test", "lastTransitionTime": now}],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("publish a GpuNode's status")
}
