//! An in-memory control plane for tests and benchmarks (feature `testing`). It
//! keeps Sessions and GpuNodes in maps, streams changes like a watch, and (in
//! automatic mode) plays the scheduler, deciding with the scheduler's own pure
//! placement code (`medforge_operator::scheduler::placement`), one decision at
//! a time like the real single leader, and, optionally, the node agent:
//! Running, Ready and an upstream after binding; Stopped with a `Stop`
//! snapshot record on stop; manual snapshots taken; snapshot records
//! released on delete.

mod control_plane;
mod simulate;
mod snapshots;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use medforge_crds::{
    GpuHealth, GpuInfo, GpuNode, GpuNodeSpec, GpuNodeStatus, NodeCondition, NodeReason, Pack,
    Session, SessionStatus, WorkspaceSnapshot,
};
use tokio::sync::broadcast;

use super::contract::{BackendError, WatchEvent};

/// Whether the simulated scheduler decides by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerMode {
    /// Binds or refuses every new Session right after it is created.
    Automatic,
    /// Leaves Sessions Pending; the test decides with [`MemoryBackend::bind`] / [`MemoryBackend::refuse`].
    Manual,
}

/// How the in-memory control plane behaves.
#[derive(Clone, Debug)]
pub struct MemoryBackendConfig {
    /// Automatic or manual scheduling.
    pub scheduler: SchedulerMode,
    /// Active sessions per user when the Session carries no `medforge.dev/max-sessions` annotation.
    pub default_user_limit: u32,
    /// After binding, the simulated agent makes the Session Running and Ready after this delay;
    /// `None` leaves it Scheduled.
    pub start_after: Option<Duration>,
    /// Namespace written into the Sessions' (and snapshot records') metadata.
    pub namespace: String,
    /// The simulated agent takes a manual snapshot (its record becomes
    /// `ReadyToUse`) this long after the record is created; `None` leaves
    /// manual records pending. Only in automatic mode.
    pub snapshot_after: Option<Duration>,
}

impl Default for MemoryBackendConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerMode::Automatic,
            default_user_limit: 2,
            start_after: Some(Duration::ZERO),
            namespace: "medforge".into(),
            snapshot_after: Some(Duration::ZERO),
        }
    }
}

/// The in-memory control plane. Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct MemoryBackend {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    events: broadcast::Sender<WatchEvent>,
    snapshot_events: broadcast::Sender<WatchEvent<WorkspaceSnapshot>>,
    config: MemoryBackendConfig,
    reachable: AtomicBool,
    activity_writes: AtomicU64,
    /// Watch events held back while a test delays the watch.
    held: Mutex<Option<Vec<WatchEvent>>>,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<String, Session>,
    nodes: BTreeMap<String, GpuNode>,
    packs: BTreeMap<String, Pack>,
    snapshots: BTreeMap<String, WorkspaceSnapshot>,
    resource_version: u64,
    activity: BTreeMap<String, jiff::Timestamp>,
}

impl State {
    /// The next resource version.
    fn bump(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

impl MemoryBackend {
    /// An empty control plane.
    pub fn new(config: MemoryBackendConfig) -> Self {
        let (events, _) = broadcast::channel(4096);
        let (snapshot_events, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                snapshot_events,
                config,
                reachable: AtomicBool::new(true),
                activity_writes: AtomicU64::new(0),
                held: Mutex::new(None),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `step` on a task of its own once `delay` has passed (zero: at
    /// the runtime's next turn), as the simulated scheduler and agent act
    /// after the write that called for them.
    fn after(&self, delay: Duration, step: impl FnOnce(&MemoryBackend) + Send + 'static) {
        let backend = self.clone();
        tokio::spawn(async move {
            if delay.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(delay).await;
            }
            step(&backend);
        });
    }

    fn emit(&self, event: WatchEvent) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(buffer) = held.as_mut() {
            buffer.push(event);
            return;
        }
        // No receiver is fine: the watch relists on start.
        let _ = self.inner.events.send(event);
    }

    /// Holds the watch back (`true`): writes happen, their events wait;
    /// `false` delivers the held events in order. For tests of what a
    /// replica knows before its watch tells it.
    pub fn hold_watch(&self, hold: bool) {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        if hold {
            held.get_or_insert_with(Vec::new);
        } else if let Some(events) = held.take() {
            for event in events {
                let _ = self.inner.events.send(event);
            }
        }
    }

    fn check_reachable(&self) -> Result<(), BackendError> {
        if self.inner.reachable.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(BackendError::Unreachable(
                "memory backend switched off".into(),
            ))
        }
    }

    /// Makes every call fail as if the control plane were down (or back up).
    pub fn set_reachable(&self, reachable: bool) {
        self.inner.reachable.store(reachable, Ordering::Relaxed);
    }

    /// Creates or replaces a Pack.
    pub fn put_pack(&self, pack: Pack) {
        let name = pack.metadata.name.clone().unwrap_or_default();
        self.lock().packs.insert(name, pack);
    }

    /// Adds a Ready node with `gpus` healthy GPUs `GPU-<node>-<index>`.
    pub fn add_node(&self, name: &str, gpus: u32) {
        let mut node = GpuNode::new(name, GpuNodeSpec::default());
        node.status = Some(GpuNodeStatus {
            gpus: (0..gpus)
                .map(|index| GpuInfo {
                    index,
                    uuid: format!("GPU-{name}-{index}"),
                    model: "Simulated GPU".into(),
                    memory_bytes: 80 << 30,
                    health: GpuHealth::Healthy,
                })
                .collect(),
            allocatable: gpus,
            conditions: vec![condition(
                NodeCondition::Ready,
                true,
                NodeReason::AgentReady,
                "simulated",
            )],
            ..GpuNodeStatus::default()
        });
        self.put_node(node);
    }

    /// Stores a node as given.
    pub fn put_node(&self, node: GpuNode) {
        let mut st = self.lock();
        st.nodes
            .insert(node.metadata.name.clone().unwrap_or_default(), node);
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<GpuNode> {
        self.lock().nodes.get(name).cloned()
    }

    /// Stores a Session as given (metadata filled in), without scheduling it.
    pub fn insert(&self, mut session: Session) -> Session {
        let mut st = self.lock();
        fill_metadata(&mut st, &mut session, &self.inner.config.namespace);
        let name = session.metadata.name.clone().unwrap_or_default();
        st.sessions.insert(name, session.clone());
        self.emit(WatchEvent::Apply(session.clone()));
        session
    }

    /// Changes a Session's status as an operator would.
    pub fn update_status(&self, name: &str, change: impl FnOnce(&mut SessionStatus)) {
        self.update_status_if(name, |_, status| {
            change(status);
            true
        });
    }

    /// Changes a Session's status when `change` says it did, under a new resource version.
    fn update_status_if(
        &self,
        name: &str,
        change: impl FnOnce(&Session, &mut SessionStatus) -> bool,
    ) {
        let mut st = self.lock();
        let rv = st.bump();
        if let Some(session) = st.sessions.get_mut(name) {
            let mut status = session.status.clone().unwrap_or_default();
            if change(session, &mut status) {
                session.status = Some(status);
                session.metadata.resource_version = Some(rv);
                let session = session.clone();
                self.emit(WatchEvent::Apply(session));
            }
        }
    }

    /// A Session by name.
    pub fn session(&self, name: &str) -> Option<Session> {
        self.lock().sessions.get(name).cloned()
    }

    /// All Sessions.
    pub fn sessions(&self) -> Vec<Session> {
        self.lock().sessions.values().cloned().collect()
    }

    /// The activity last recorded for a Session.
    pub fn activity(&self, name: &str) -> Option<jiff::Timestamp> {
        self.lock().activity.get(name).copied()
    }

    /// How many times activity was written (batches, not requests).
    pub fn activity_writes(&self) -> u64 {
        self.inner.activity_writes.load(Ordering::Relaxed)
    }

    fn listing(st: &State) -> VecDeque<WatchEvent> {
        let mut events = VecDeque::with_capacity(st.sessions.len() + 2);
        events.push_back(WatchEvent::Init);
        events.extend(st.sessions.values().cloned().map(WatchEvent::InitApply));
        events.push_back(WatchEvent::InitDone);
        events
    }
}

fn fill_metadata(st: &mut State, session: &mut Session, namespace: &str) {
    fill_object_metadata(st, &mut session.metadata, namespace);
}

/// What the control plane fills in on create: namespace, uid, creation
/// time, generation and resource version.
fn fill_object_metadata(
    st: &mut State,
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    namespace: &str,
) {
    let rv = st.bump();
    meta.namespace = Some(namespace.to_owned());
    meta.uid
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp
        .get_or_insert_with(|| Time(jiff::Timestamp::now()));
    meta.generation.get_or_insert(1);
    meta.resource_version = Some(rv);
}

/// A `metav1.Condition` with the current time.
pub fn condition(
    type_: impl AsRef<str>,
    status: bool,
    reason: impl AsRef<str>,
    message: &str,
) -> Condition {
    let mut conditions = Vec::with_capacity(1);
    set_condition(&mut conditions, type_, status, reason, message);
    conditions.remove(0)
}

/// Sets or replaces the condition of a type (`medforge_crds::conditions`,
/// without an observed generation).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: impl AsRef<str>,
    status: bool,
    reason: impl AsRef<str>,
    message: &str,
) {
    medforge_crds::conditions::set_condition(
        conditions,
        type_,
        Some(status),
        reason,
        message,
        None,
        Time(jiff::Timestamp::now()),
    );
}
