//! The node agent: runs on each GPU host and turns the Sessions bound to it
//! into containers with GPUs and ZFS workspaces, and keeps them true through
//! crashes of itself, of containers and of Docker.
//!
//! - `plan` decides the next step from what was observed (no I/O);
//! - `reconcile` observes, applies one step per pass, writes status, and
//!   runs the finalizer cleanup on delete;
//! - `runtime` holds the traits the reconciler uses; `docker`, `zfs` and
//!   `dialer` implement them on the real things, `fixtures` fakes them;
//! - `events` turns Docker's container events into reconciles;
//! - `recovery` removes containers no Session owns;
//! - `metrics` serves `/metrics`, `/healthz` and `/readyz`.
//!
//! [`run`] wires it all: a kube-runtime `Controller` over the Sessions whose
//! `status.nodeName` is this node, the Docker event watcher, the GpuNode
//! heartbeat ([`crate::node`]), the orphan sweep and the metrics server.
//! See `docs/sessions.md` for the lifecycle it implements.

pub mod dialer;
pub mod docker;
pub mod events;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod recovery;
pub mod runtime;
pub mod spec;
pub mod zfs;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use medforge_crds::{EventAction, NodeReason, Session};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::gpu::{GpuInventory, StaticInventory};
use crate::node::{self, HealthCheck, NodeFacts};
use dialer::{Dialer, TcpDialer};
use docker::DockerContainers;
use metrics::{Health, Metrics};
use plan::StepKind;
use reconcile::{Context, bound_here, error_policy};
use runtime::KubeCluster;
use zfs::ZfsWorkspaces;

/// What happens to a Session's dataset when the Session is deleted. The
/// annotation `medforge.dev/workspace-on-delete: keep|destroy` on a Session
/// overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceOnDelete {
    /// Keep the dataset and its snapshots (an admin prunes them).
    #[default]
    Keep,
    /// Destroy the dataset with its snapshots.
    Destroy,
}

/// Called before each step with the session and the step: lets tests stop
/// the agent at an exact point. The step waits for the returned future.
pub type StepHook = Arc<dyn Fn(&Session, StepKind) -> BoxFuture<'static, ()> + Send + Sync>;

/// What the agent reports about itself while it runs (for tests, benchmarks
/// and diagnostics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentState {
    /// Where the metrics server listens.
    pub metrics_addr: Option<SocketAddr>,
    /// The Session cache has its first full list.
    pub synced: bool,
    /// Distinct sessions reconciled without error since start.
    pub sessions_reconciled: usize,
    /// Containers of live sessions found by the last orphan sweep.
    pub adopted: usize,
    /// Orphan containers removed since start.
    pub orphans_removed: usize,
    /// Orphan sweeps done since start.
    pub sweeps: usize,
}

/// How the node agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// This node's name: the GpuNode it publishes, the `status.nodeName` of
    /// the Sessions it runs.
    pub node_name: String,
    /// Docker's Unix socket.
    pub docker_socket: PathBuf,
    /// The `zfs` program.
    pub zfs_binary: PathBuf,
    /// Workspaces are `<dataset_root>/<owner>/<session uid>`.
    pub dataset_root: String,
    /// The user-defined bridge network sessions join (created if missing).
    pub network: String,
    /// Put before `mf-session-<slug>` in container names (tests use it).
    pub container_prefix: String,
    /// Extra labels on every container (tests put their scope here).
    pub extra_labels: BTreeMap<String, String>,
    /// Docker's `CgroupParent` for session containers; `None` keeps the daemon's.
    pub cgroup_parent: Option<String>,
    /// The user the workload runs as, and who owns `/workspace`.
    pub container_uid: u32,
    pub container_gid: u32,
    /// Process limit when neither the Session nor the Pack sets one.
    pub default_pids: i64,
    /// Size of the `/tmp` tmpfs (the root file system is read-only).
    pub tmp_bytes: u64,
    /// The node's GPUs.
    pub inventory: Arc<dyn GpuInventory>,
    /// Pass GPUs by Docker device request (NVML hosts); with a static
    /// inventory only `NVIDIA_VISIBLE_DEVICES` is set.
    pub gpu_device_requests: bool,
    /// How the readiness probe reaches containers.
    pub dialer: Arc<dyn Dialer>,
    pub workspace_on_delete: WorkspaceOnDelete,
    /// Sessions reconciled at once.
    pub concurrency: u16,
    /// A running session is looked at least this often (the watch and
    /// Docker events drive everything else).
    pub resync: Duration,
    /// GpuNode heartbeat period.
    pub heartbeat: Duration,
    /// A workload that does not accept connections this long after its
    /// container started fails the session (`StartTimeout`).
    pub start_timeout: Duration,
    /// `docker stop` grace period before SIGKILL.
    pub stop_timeout: Duration,
    /// Delay between readiness probes of a starting session.
    pub probe_interval: Duration,
    /// How long one pass keeps probing (every 10 ms) before it yields.
    pub probe_burst: Duration,
    /// A container no Session owns is removed when older than this.
    pub orphan_grace: Duration,
    /// How often orphans are looked for.
    pub orphan_sweep: Duration,
    /// Backoff after a failed reconcile: doubles from min to max.
    pub error_backoff_min: Duration,
    pub error_backoff_max: Duration,
    /// `/metrics`, `/healthz`, `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// Test hook, called before each step.
    pub step_hook: Option<StepHook>,
    /// Set when the workspaces live on trial storage (the quickstart's
    /// file-backed pool); the GpuNode shows it as `TrialStorage`.
    pub storage_note: Option<String>,
    /// Receives the agent's [`AgentState`].
    pub observer: Option<Arc<watch::Sender<AgentState>>>,
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node_name", &self.node_name)
            .field("docker_socket", &self.docker_socket)
            .field("dataset_root", &self.dataset_root)
            .field("network", &self.network)
            .field("container_prefix", &self.container_prefix)
            .field("inventory", &self.inventory.source())
            .field("dialer", &self.dialer.describe())
            .field("workspace_on_delete", &self.workspace_on_delete)
            .field("concurrency", &self.concurrency)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Defaults for a node: Docker at `/var/run/docker.sock`, network
    /// `medforge-sessions`, no GPUs, datasets kept on delete.
    pub fn new(node_name: impl Into<String>, dataset_root: impl Into<String>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            zfs_binary: PathBuf::from("zfs"),
            dataset_root: dataset_root.into(),
            network: "medforge-sessions".to_string(),
            container_prefix: String::new(),
            extra_labels: BTreeMap::new(),
            cgroup_parent: None,
            container_uid: 1000,
            container_gid: 1000,
            default_pids: 4096,
            tmp_bytes: 1 << 30,
            inventory: Arc::new(StaticInventory::new(Vec::new())),
            gpu_device_requests: false,
            dialer: Arc::new(TcpDialer),
            workspace_on_delete: WorkspaceOnDelete::Keep,
            concurrency: 16,
            resync: Duration::from_secs(300),
            heartbeat: Duration::from_secs(10),
            start_timeout: Duration::from_secs(300),
            stop_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_millis(200),
            probe_burst: Duration::from_millis(500),
            orphan_grace: Duration::from_secs(60),
            orphan_sweep: Duration::from_secs(60),
            error_backoff_min: Duration::from_millis(500),
            error_backoff_max: Duration::from_secs(60),
            metrics_addr: None,
            step_hook: None,
            storage_note: None,
            observer: None,
        }
    }

    fn observe(&self, f: impl FnOnce(&mut AgentState)) {
        if let Some(o) = &self.observer {
            o.send_modify(f);
        }
    }
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid Docker configuration: {0}")]
    Docker(#[from] runtime::ContainerError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// This node's sessions by phase, for the metrics.
fn sessions_by_phase(store: &Store<Session>, node: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for s in store.state() {
        if bound_here(&s, node) {
            *out.entry(format!("{:?}", s.phase())).or_insert(0) += 1;
        }
    }
    out
}

fn gpunode_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(medforge_crds::API_VERSION.to_string()),
        kind: Some("GpuNode".to_string()),
        name: Some(node.to_string()),
        ..Default::default()
    }
}

/// Removes orphan containers at start (once the cache is synced) and then
/// every `orphan_sweep`.
async fn sweep_loop(
    config: AgentConfig,
    containers: DockerContainers,
    store: Store<Session>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
) {
    let _ = store.wait_until_ready().await;
    let node = config.node_name.clone();
    loop {
        let live: HashSet<String> = store
            .state()
            .iter()
            .filter(|s| bound_here(s, &node))
            .filter_map(|s| s.uid())
            .collect();
        match recovery::sweep(
            &containers,
            &node,
            &live,
            config.orphan_grace,
            Timestamp::now(),
        )
        .await
        {
            Ok(sweep) => {
                for c in &sweep.removed {
                    metrics.orphans_removed.inc();
                    let note = format!(
                        "removed container {} ({}): no Session with uid {} is bound to this node",
                        c.name,
                        c.id,
                        c.session_uid().unwrap_or("(none)")
                    );
                    tracing::warn!(container = %c.name, %note, "orphan container");
                    let event = KubeEvent {
                        type_: EventType::Warning,
                        reason: NodeReason::OrphanContainerRemoved.to_string(),
                        note: Some(note),
                        action: EventAction::Sweep.to_string(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &gpunode_ref(&node)).await {
                        tracing::debug!(error = %e, "could not publish an event");
                    }
                }
                config.observe(|st| {
                    st.adopted = sweep.adopted;
                    st.orphans_removed += sweep.removed.len();
                    st.sweeps += 1;
                });
            }
            Err(e) => tracing::warn!(error = %e, "could not look for orphan containers"),
        }
        tokio::time::sleep(config.orphan_sweep).await;
    }
}

/// Creates the dataset root, retrying while ZFS does not answer.
async fn ensure_root(workspaces: ZfsWorkspaces, root: String) {
    let mut delay = Duration::from_millis(200);
    loop {
        match workspaces.ensure_root(&root).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(dataset = %root, error = %e, "cannot create the workspace root; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Runs the node agent until `shutdown` resolves (in-flight steps finish
/// first). Docker or ZFS being down does not end it: sessions and the
/// GpuNode show it, and the agent reconnects.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let containers = DockerContainers::connect(&config.docker_socket)?;
    let workspaces = ZfsWorkspaces::new(&config.zfs_binary);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let node = config.node_name.clone();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "medforge-node-agent".to_string(),
            instance: Some(node.clone()),
        },
    );

    // One cache of every Session (the heartbeat counts this node's GPUs from
    // it); only this node's Sessions trigger reconciles.
    let (store, writer) = reflector::store();
    let trigger_node = node.clone();
    let trigger = watcher(
        Api::<Session>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .try_filter(move |s| futures::future::ready(bound_here(s, &trigger_node)));

    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let counter_store = store.clone();
            let counter_node = node.clone();
            let app = metrics::router(
                metrics.clone(),
                health.clone(),
                Arc::new(move || sessions_by_phase(&counter_store, &counter_node)),
            );
            let (bound, serve) = metrics::bind(addr, app)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            tracing::info!(%bound, "serving metrics, /healthz and /readyz");
            config.observe(|st| st.metrics_addr = Some(bound));
            serve.boxed()
        }
        None => futures::future::pending().boxed(),
    };

    let docker_health: HealthCheck = {
        let c = containers.clone();
        Arc::new(move || {
            let c = c.clone();
            async move { c.health().await }.boxed()
        })
    };
    let zfs_health: HealthCheck = {
        let w = workspaces.clone();
        let root = config.dataset_root.clone();
        Arc::new(move || {
            let (w, root) = (w.clone(), root.clone());
            async move { w.health(&root).await }.boxed()
        })
    };
    let facts = NodeFacts {
        node_name: node.clone(),
        inventory: config.inventory.clone(),
        docker: docker_health,
        zfs: zfs_health,
        storage_note: config.storage_note.clone(),
    };
    let heartbeat_store = store.clone();
    let heartbeat = node::heartbeat_loop(
        client.clone(),
        facts,
        move || heartbeat_store.state(),
        config.heartbeat,
    );

    let (event_tx, event_rx) = mpsc::channel(1024);
    let (everyone_tx, everyone_rx) = mpsc::channel(1);
    let docker_events = events::watch(
        containers.client().clone(),
        node.clone(),
        event_tx,
        everyone_tx,
        health.clone(),
        metrics.clone(),
    );

    let sweeper = sweep_loop(
        config.clone(),
        containers.clone(),
        store.clone(),
        recorder.clone(),
        metrics.clone(),
    );
    let root = ensure_root(workspaces.clone(), config.dataset_root.clone());
    let synced_store = store.clone();
    let synced_health = health.clone();
    let synced_config = config.clone();
    let synced = async move {
        let _ = synced_store.wait_until_ready().await;
        synced_health.synced.store(true, Ordering::Relaxed);
        synced_config.observe(|st| st.synced = true);
        tracing::info!(
            sessions = sessions_by_phase(&synced_store, &synced_config.node_name)
                .values()
                .sum::<i64>(),
            "session cache synced"
        );
        futures::future::pending::<()>().await
    };

    let peers_store = store.clone();
    let ctx = Arc::new(
        Context::new(
            config.clone(),
            containers.clone(),
            workspaces.clone(),
            KubeCluster {
                client: client.clone(),
            },
            metrics.clone(),
            Some(recorder),
        )
        .with_peers(Arc::new(move || peers_store.state())),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::for_stream(trigger, store.clone())
        .with_config(controller::Config::default().concurrency(config.concurrency))
        .reconcile_on(ReceiverStream::new(event_rx))
        .reconcile_all_on(ReceiverStream::new(everyone_rx))
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        });

    tracing::info!(node = %node, config = ?config, "node agent starting");
    tokio::pin!(controller);
    tokio::pin!(shutdown);
    let side = async {
        tokio::join!(
            metrics_server,
            heartbeat,
            docker_events,
            sweeper,
            root,
            synced
        );
    };
    tokio::pin!(side);
    tokio::select! {
        _ = &mut controller => {}
        _ = &mut side => {}
        _ = &mut shutdown => {
            tracing::info!("node agent stopping: finishing the steps in flight");
            let _ = stop_tx.send(());
            // The side tasks keep running (heartbeat, events) until the
            // controller has drained.
            tokio::select! {
                _ = &mut controller => {}
                _ = &mut side => {}
            }
        }
    }
    tracing::info!("node agent stopped");
    Ok(())
}
