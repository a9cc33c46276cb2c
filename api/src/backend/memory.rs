//! An in-memory control plane for tests and benchmarks. It keeps Sessions and
//! GpuNodes in maps, streams changes like a watch, and (in automatic mode)
//! simulates the scheduler (bind whole GPUs or refuse with `NoGpuAvailable` /
//! `UserLimitReached`, serialized like the real single leader) and, optionally, the
//! node agent (Running + Ready + upstream after binding; Stopped on stop).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use medforge_crds::{
    AssignedGpu, DesiredState, GpuAllocation, GpuHealth, GpuInfo, GpuNode, GpuNodeSpec,
    GpuNodeStatus, NodeCondition, NodeReason, Session, SessionCondition, SessionPhase,
    SessionReason, SessionStatus,
};
use tokio::sync::broadcast;

use super::{BackendError, MAX_SESSIONS_ANNOTATION, SLUG_KEY, SessionBackend, WatchEvent};

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
    /// Namespace written into the Sessions' metadata.
    pub namespace: String,
}

impl Default for MemoryBackendConfig {
    fn default() -> Self {
        Self {
            scheduler: SchedulerMode::Automatic,
            default_user_limit: 2,
            start_after: Some(Duration::ZERO),
            namespace: "medforge".into(),
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
    config: MemoryBackendConfig,
    reachable: AtomicBool,
    activity_writes: AtomicU64,
}

#[derive(Default)]
struct State {
    sessions: BTreeMap<String, Session>,
    nodes: BTreeMap<String, GpuNode>,
    resource_version: u64,
    activity: BTreeMap<String, jiff::Timestamp>,
}

impl MemoryBackend {
    /// An empty control plane.
    pub fn new(config: MemoryBackendConfig) -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                events,
                config,
                reachable: AtomicBool::new(true),
                activity_writes: AtomicU64::new(0),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn emit(&self, event: WatchEvent) {
        // No receiver is fine: the watch relists on start.
        let _ = self.inner.events.send(event);
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
        let mut st = self.lock();
        st.resource_version += 1;
        let rv = st.resource_version;
        if let Some(session) = st.sessions.get_mut(name) {
            change(session.status.get_or_insert_with(SessionStatus::default));
            session.metadata.resource_version = Some(rv.to_string());
            let session = session.clone();
            self.emit(WatchEvent::Apply(session));
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

    /// Binds a Pending Session as the scheduler would (manual mode), or refuses it when it cannot.
    pub fn bind(&self, name: &str) {
        self.schedule(name);
    }

    /// Refuses a Session with a reason (`NoGpuAvailable`, `UserLimitReached`), as the scheduler would.
    pub fn refuse(&self, name: &str, reason: &str, message: &str) {
        let mut st = self.lock();
        self.refuse_locked(&mut st, name, reason, message);
    }

    fn refuse_locked(&self, st: &mut State, name: &str, reason: &str, message: &str) {
        st.resource_version += 1;
        let rv = st.resource_version;
        if let Some(session) = st.sessions.get_mut(name) {
            let status = session.status.get_or_insert_with(SessionStatus::default);
            status.phase = Some(SessionPhase::Pending);
            status.reason = Some(reason.into());
            status.message = Some(message.into());
            set_condition(
                &mut status.conditions,
                SessionCondition::Scheduled,
                false,
                reason,
                message,
            );
            session.metadata.resource_version = Some(rv.to_string());
            let session = session.clone();
            self.emit(WatchEvent::Apply(session));
        }
    }

    /// The simulated scheduler: one decision at a time, under the state lock.
    fn schedule(&self, name: &str) {
        let mut st = self.lock();
        let Some(session) = st.sessions.get(name).cloned() else {
            return;
        };
        if session.condition(SessionCondition::Scheduled).is_some()
            || session.spec.state == DesiredState::Stopped
        {
            return;
        }
        let limit = session
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MAX_SESSIONS_ANNOTATION))
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(self.inner.config.default_user_limit);
        let active = st
            .sessions
            .values()
            .filter(|other| {
                other.spec.owner == session.spec.owner
                    && other.metadata.name.as_deref() != Some(name)
                    && other.spec.state == DesiredState::Running
                    && !other.phase().is_terminal()
                    && other
                        .condition(SessionCondition::Scheduled)
                        .is_some_and(|c| c.status == "True")
            })
            .count();
        if active as u32 >= limit {
            let message = format!(
                "user {} has {active} active sessions; the limit is {limit}",
                session.spec.owner
            );
            self.refuse_locked(
                &mut st,
                name,
                SessionReason::UserLimitReached.as_str(),
                &message,
            );
            return;
        }
        let Some((node_name, gpus)) = find_gpus(&st, session.spec.gpus) else {
            let message = format!("no node has {} free GPUs", session.spec.gpus);
            self.refuse_locked(
                &mut st,
                name,
                SessionReason::NoGpuAvailable.as_str(),
                &message,
            );
            return;
        };
        if let Some(node) = st.nodes.get_mut(&node_name) {
            let status = node.status.get_or_insert_with(GpuNodeStatus::default);
            for gpu in &gpus {
                status.allocated.push(GpuAllocation {
                    uuid: gpu.uuid.clone(),
                    session: format!("{}/{name}", self.inner.config.namespace),
                    session_uid: session.metadata.uid.clone().unwrap_or_default(),
                });
            }
        }
        st.resource_version += 1;
        let rv = st.resource_version;
        let Some(stored) = st.sessions.get_mut(name) else {
            return;
        };
        let status = stored.status.get_or_insert_with(SessionStatus::default);
        status.phase = Some(SessionPhase::Scheduled);
        status.node_name = Some(node_name.clone());
        status.gpus = gpus;
        status.reason = None;
        status.message = None;
        set_condition(
            &mut status.conditions,
            SessionCondition::Scheduled,
            true,
            SessionReason::Bound,
            &format!("bound to {node_name}"),
        );
        stored.metadata.resource_version = Some(rv.to_string());
        let bound = stored.clone();
        self.emit(WatchEvent::Apply(bound));
        drop(st);

        if let Some(delay) = self.inner.config.start_after {
            let backend = self.clone();
            let name = name.to_owned();
            tokio::spawn(async move {
                if delay.is_zero() {
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(delay).await;
                }
                backend.start(&name);
            });
        }
    }

    /// The simulated node agent: a Scheduled session becomes Running and Ready.
    pub fn start(&self, name: &str) {
        self.update_status_if(name, |session, status| {
            if session.spec.state != DesiredState::Running
                || status.phase != Some(SessionPhase::Scheduled)
            {
                return false;
            }
            let slug = slug_of(session);
            status.phase = Some(SessionPhase::Running);
            status.slug = Some(slug.clone());
            status.upstream = Some(format!("mf-session-{slug}:8080"));
            status.started_at = Some(Time(jiff::Timestamp::now()));
            set_condition(
                &mut status.conditions,
                SessionCondition::Ready,
                true,
                SessionReason::Running,
                "port open",
            );
            true
        });
    }

    /// The simulated node agent: a session whose state is Stopped becomes Stopped and frees its GPUs.
    fn finish_stop(&self, name: &str) {
        let mut freed = None;
        self.update_status_if(name, |session, status| {
            if status.phase.is_some_and(SessionPhase::is_terminal) {
                return false;
            }
            freed = status
                .node_name
                .clone()
                .map(|node| (node, session.metadata.uid.clone()));
            status.phase = Some(SessionPhase::Stopped);
            status.upstream = None;
            status.stopped_at = Some(Time(jiff::Timestamp::now()));
            set_condition(
                &mut status.conditions,
                SessionCondition::Ready,
                false,
                SessionReason::StopRequested,
                "stopped",
            );
            true
        });
        if let Some((node, uid)) = freed {
            self.free_gpus(&node, uid.as_deref());
        }
    }

    fn free_gpus(&self, node: &str, uid: Option<&str>) {
        let mut st = self.lock();
        if let Some(status) = st.nodes.get_mut(node).and_then(|n| n.status.as_mut()) {
            status
                .allocated
                .retain(|a| Some(a.session_uid.as_str()) != uid);
        }
    }

    fn update_status_if(
        &self,
        name: &str,
        change: impl FnOnce(&Session, &mut SessionStatus) -> bool,
    ) {
        let mut st = self.lock();
        st.resource_version += 1;
        let rv = st.resource_version;
        if let Some(session) = st.sessions.get_mut(name) {
            let mut status = session.status.clone().unwrap_or_default();
            if change(session, &mut status) {
                session.status = Some(status);
                session.metadata.resource_version = Some(rv.to_string());
                let session = session.clone();
                self.emit(WatchEvent::Apply(session));
            }
        }
    }

    fn listing(st: &State) -> VecDeque<WatchEvent> {
        let mut events = VecDeque::with_capacity(st.sessions.len() + 2);
        events.push_back(WatchEvent::Init);
        events.extend(st.sessions.values().cloned().map(WatchEvent::InitApply));
        events.push_back(WatchEvent::InitDone);
        events
    }
}

/// The slug the api chose (label), or the status slug once set.
fn slug_of(session: &Session) -> String {
    session
        .status
        .as_ref()
        .and_then(|s| s.slug.clone())
        .or_else(|| {
            session
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SLUG_KEY).cloned())
        })
        .unwrap_or_default()
}

fn fill_metadata(st: &mut State, session: &mut Session, namespace: &str) {
    st.resource_version += 1;
    let meta = &mut session.metadata;
    meta.namespace = Some(namespace.to_owned());
    meta.uid
        .get_or_insert_with(|| uuid::Uuid::new_v4().to_string());
    meta.creation_timestamp
        .get_or_insert_with(|| Time(jiff::Timestamp::now()));
    meta.generation.get_or_insert(1);
    meta.resource_version = Some(st.resource_version.to_string());
}

/// Finds a schedulable node with `count` free GPUs.
fn find_gpus(st: &State, count: u32) -> Option<(String, Vec<AssignedGpu>)> {
    for (name, node) in &st.nodes {
        if node.spec.unschedulable {
            continue;
        }
        let Some(status) = &node.status else { continue };
        let free: Vec<AssignedGpu> = status
            .gpus
            .iter()
            .filter(|g| g.health == GpuHealth::Healthy)
            .filter(|g| !node.spec.disabled_gpus.contains(&g.uuid))
            .filter(|g| !status.allocated.iter().any(|a| a.uuid == g.uuid))
            .map(|g| AssignedGpu {
                index: g.index,
                uuid: g.uuid.clone(),
            })
            .collect();
        if free.len() >= count as usize {
            return Some((
                name.clone(),
                free.into_iter().take(count as usize).collect(),
            ));
        }
    }
    None
}

/// A `metav1.Condition` with the current time.
pub fn condition(
    type_: impl AsRef<str>,
    status: bool,
    reason: impl AsRef<str>,
    message: &str,
) -> Condition {
    Condition {
        last_transition_time: Time(jiff::Timestamp::now()),
        message: message.into(),
        observed_generation: None,
        reason: reason.as_ref().into(),
        status: if status { "True" } else { "False" }.into(),
        type_: type_.as_ref().into(),
    }
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

impl SessionBackend for MemoryBackend {
    fn create(&self, mut session: Session) -> BoxFuture<'_, Result<Session, BackendError>> {
        async move {
            self.check_reachable()?;
            let name = session.metadata.name.clone().unwrap_or_default();
            {
                let mut st = self.lock();
                if st.sessions.contains_key(&name) {
                    return Err(BackendError::Conflict(format!("session {name} exists")));
                }
                fill_metadata(&mut st, &mut session, &self.inner.config.namespace);
                st.sessions.insert(name.clone(), session.clone());
                self.emit(WatchEvent::Apply(session.clone()));
            }
            if self.inner.config.scheduler == SchedulerMode::Automatic {
                let backend = self.clone();
                tokio::spawn(async move {
                    tokio::task::yield_now().await;
                    backend.schedule(&name);
                });
            }
            Ok(session)
        }
        .boxed()
    }

    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Session>, BackendError>> {
        async move {
            self.check_reachable()?;
            Ok(self.session(name))
        }
        .boxed()
    }

    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Session>, BackendError>> {
        async move {
            self.check_reachable()?;
            Ok(self
                .sessions()
                .into_iter()
                .filter(|s| owner.is_none_or(|o| s.spec.owner == o))
                .collect())
        }
        .boxed()
    }

    fn annotate<'a>(
        &'a self,
        name: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.check_reachable()?;
            let mut st = self.lock();
            st.resource_version += 1;
            let rv = st.resource_version;
            let session = st
                .sessions
                .get_mut(name)
                .ok_or_else(|| BackendError::NotFound(format!("session {name}")))?;
            session
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(key.to_owned(), value.to_owned());
            session.metadata.resource_version = Some(rv.to_string());
            self.emit(WatchEvent::Apply(session.clone()));
            Ok(())
        }
        .boxed()
    }

    fn set_state<'a>(
        &'a self,
        name: &'a str,
        state: DesiredState,
    ) -> BoxFuture<'a, Result<Session, BackendError>> {
        async move {
            self.check_reachable()?;
            let updated = {
                let mut st = self.lock();
                st.resource_version += 1;
                let rv = st.resource_version;
                let session = st
                    .sessions
                    .get_mut(name)
                    .ok_or_else(|| BackendError::NotFound(format!("session {name}")))?;
                if session.spec.state != state {
                    session.spec.state = state;
                    session.metadata.generation =
                        Some(session.metadata.generation.unwrap_or(1) + 1);
                    session.metadata.resource_version = Some(rv.to_string());
                    self.emit(WatchEvent::Apply(session.clone()));
                }
                session.clone()
            };
            if state == DesiredState::Stopped
                && self.inner.config.scheduler == SchedulerMode::Automatic
            {
                self.finish_stop(name);
            }
            Ok(updated)
        }
        .boxed()
    }

    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, BackendError>> {
        async move {
            self.check_reachable()?;
            let removed = {
                let mut st = self.lock();
                let removed = st.sessions.remove(name);
                if let Some(session) = &removed {
                    self.emit(WatchEvent::Delete(session.clone()));
                }
                removed
            };
            let Some(session) = removed else {
                return Ok(false);
            };
            if let Some(node) = session.status.as_ref().and_then(|s| s.node_name.clone()) {
                self.free_gpus(&node, session.metadata.uid.as_deref());
            }
            Ok(true)
        }
        .boxed()
    }

    fn watch(&self) -> BoxStream<'static, Result<WatchEvent, BackendError>> {
        let (rx, queue) = {
            let st = self.lock();
            // Subscribed under the lock: no change falls between the listing and the stream.
            (self.inner.events.subscribe(), Self::listing(&st))
        };
        let backend = self.clone();
        futures::stream::unfold(
            (rx, queue, backend),
            |(mut rx, mut queue, backend)| async move {
                loop {
                    if let Some(event) = queue.pop_front() {
                        return Some((Ok(event), (rx, queue, backend)));
                    }
                    match rx.recv().await {
                        Ok(event) => return Some((Ok(event), (rx, queue, backend))),
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            // Like a watch that expired: start over with a full listing.
                            let st = backend.lock();
                            rx = rx.resubscribe();
                            queue = Self::listing(&st);
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )
        .boxed()
    }

    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<GpuNode>, BackendError>> {
        async move {
            self.check_reachable()?;
            Ok(self.lock().nodes.values().cloned().collect())
        }
        .boxed()
    }

    fn set_node_unschedulable<'a>(
        &'a self,
        node: &'a str,
        unschedulable: bool,
    ) -> BoxFuture<'a, Result<GpuNode, BackendError>> {
        async move {
            self.check_reachable()?;
            let mut st = self.lock();
            let n = st
                .nodes
                .get_mut(node)
                .ok_or_else(|| BackendError::NotFound(format!("node {node}")))?;
            n.spec.unschedulable = unschedulable;
            Ok(n.clone())
        }
        .boxed()
    }

    fn set_gpu_disabled<'a>(
        &'a self,
        node: &'a str,
        gpu_uuid: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<GpuNode, BackendError>> {
        async move {
            self.check_reachable()?;
            let mut st = self.lock();
            let n = st
                .nodes
                .get_mut(node)
                .ok_or_else(|| BackendError::NotFound(format!("node {node}")))?;
            let list = &mut n.spec.disabled_gpus;
            list.retain(|u| u != gpu_uuid);
            if disabled {
                list.push(gpu_uuid.to_owned());
            }
            Ok(n.clone())
        }
        .boxed()
    }

    fn record_activity<'a>(
        &'a self,
        activity: &'a [(String, jiff::Timestamp)],
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            self.check_reachable()?;
            self.inner.activity_writes.fetch_add(1, Ordering::Relaxed);
            let mut guard = self.lock();
            let st = &mut *guard;
            for (name, at) in activity {
                if let Some(session) = st.sessions.get_mut(name) {
                    session
                        .status
                        .get_or_insert_with(SessionStatus::default)
                        .last_activity_at = Some(Time(*at));
                    st.activity.insert(name.clone(), *at);
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        async move { self.check_reachable() }.boxed()
    }
}
