//! How the node agent runs ([`AgentConfig`]) and what it reports about
//! itself while it runs ([`AgentState`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use medforge_crds::Session;
use medforge_crds::policy::{Capacity, SessionPolicy};
use tokio::sync::watch;

use super::dialer::{Dialer, TcpDialer};
use super::plan::{StepKind, WorkspaceOnDelete};
use crate::gpu::{GpuInventory, StaticInventory};
use crate::isolation::CommandPrefix;

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
    /// The operator's defaults and maxima for every session's limits.
    pub policy: SessionPolicy,
    /// What this node has: no session asks Docker for more CPU or memory.
    /// `None` checks only the policy.
    pub capacity: Option<Capacity>,
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
    /// How many of a session's snapshots are kept, unless its records carry
    /// the owner's own retention.
    pub retention: medforge_crds::Retention,
    /// How often a snapshot record whose deletion waits for a clone is
    /// looked at again.
    pub held_retry: Duration,
    /// How long before an idle stop the agent looks at the connections open
    /// to the workload (a websocket through the proxy counts as activity;
    /// at most half the idle timeout). Above the api's `expiry-warning`,
    /// an open websocket is seen before the owner is warned.
    pub activity_lead: Duration,
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
    /// East-west isolation of [`AgentConfig::network`]: the iptables
    /// commands run through this prefix (in the network namespace dockerd
    /// runs in) and are kept applied while the agent runs. `None` leaves
    /// the firewall alone.
    pub isolation: Option<CommandPrefix>,
    /// How often the isolation rules are checked (and restored).
    pub isolation_period: Duration,
    /// How images are pulled: concurrency, backoff, credentials.
    pub pulls: PullPolicy,
    /// How often the node's image state on every Pack is looked at (and
    /// pre-pulls started) besides on every Pack change.
    pub packs_period: Duration,
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
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

impl AgentConfig {
    /// Defaults for a node: Docker at `/var/run/docker.sock`, network
    /// `medforge-sessions`, no GPUs, a snapshot then a retired dataset on delete.
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
            policy: SessionPolicy::default(),
            capacity: host_capacity(),
            tmp_bytes: 1 << 30,
            inventory: Arc::new(StaticInventory::new(Vec::new())),
            gpu_device_requests: false,
            dialer: Arc::new(TcpDialer),
            workspace_on_delete: WorkspaceOnDelete::Snapshot,
            retention: medforge_crds::Retention::default(),
            held_retry: Duration::from_secs(60),
            activity_lead: Duration::from_secs(15 * 60),
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
            isolation: None,
            isolation_period: Duration::from_secs(2),
            pulls: PullPolicy::default(),
            packs_period: Duration::from_secs(30),
        }
    }

    pub(super) fn observe(&self, f: impl FnOnce(&mut AgentState)) {
        if let Some(o) = &self.observer {
            o.send_modify(f);
        }
    }
}

/// This host's CPUs (as this process may use them) and memory
/// (`MemTotal` of `/proc/meminfo`); `None` when either cannot be read.
pub fn host_capacity() -> Option<Capacity> {
    let cpus = std::thread::available_parallelism().ok()?.get() as i64;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Capacity {
        nano_cpus: cpus * 1_000_000_000,
        memory: kib * 1024,
    })
}

/// How a node pulls.
#[derive(Debug, Clone)]
pub struct PullPolicy {
    /// Pulls running at once.
    pub max_concurrent: usize,
    /// The wait after a first failure, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// A Docker config file (`{"auths": {...}}`) with registry credentials;
    /// read at every pull, so a rotated file (or Secret) is picked up.
    pub auth_file: Option<PathBuf>,
}

impl Default for PullPolicy {
    fn default() -> Self {
        PullPolicy {
            max_concurrent: 2,
            backoff_min: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            auth_file: None,
        }
    }
}
