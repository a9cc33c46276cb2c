//! The scheduler loop: binds pending Sessions to nodes and whole GPUs.
//!
//! It is the only writer of bindings (`status.nodeName`, `status.gpus`), runs
//! as exactly one active replica (it holds a Lease), and makes its decisions
//! one at a time against a [`ClusterView`] rebuilt from the watch caches, so
//! two sessions never get the same GPU. Writes go out concurrently; a binding
//! counts as held from the moment it is chosen until its write fails, and is
//! then taken from the cache like every other binding.
//!
//! This is deliberately not a per-object kube-runtime `Controller`: binding
//! is a global decision (who else holds what), and the serial loop is what
//! makes it safe. See `docs/decisions/0004-scheduler-loop.md`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use medforge_crds::conditions::{self, set_condition};
use medforge_crds::slug::Slug;
use medforge_crds::{
    AssignedGpu, GpuHealth, GpuNode, Session, SessionPhase, SessionStatus, WorkspaceSnapshot,
};
use medforge_crds::{NodeCondition, NodeReason, SessionCondition, SessionReason};
use tokio::sync::mpsc;

use super::placement::{
    ClusterView, Decision, GpuView, Limits, NodeView, Policy, RefuseReason, Request,
};
use crate::leader::{self, LeaseConfig};

/// The label the api puts the slug it chose in (copied to `status.slug`),
/// and the annotation carrying a user's own session limit.
pub use medforge_crds::keys::{MAX_SESSIONS_ANNOTATION, SLUG_KEY as SLUG_LABEL};

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub limits: Limits,
    pub policy: Policy,
    /// A node whose heartbeat is older than this is not Ready.
    pub heartbeat_timeout: Duration,
    pub lease: LeaseConfig,
    /// Binding writes in flight at once.
    pub max_in_flight: usize,
    /// How often stale heartbeats are looked for even when nothing changes.
    pub resync: Duration,
    /// A Stopped or Failed session that has not been asked to run for this
    /// long is deleted (its workspace is kept as snapshots, per the node
    /// agent's policy). `None` keeps every session.
    pub history: Option<Duration>,
    /// Told, after every pass, the resourceVersion of each GpuNode the pass
    /// used: lets tests and diagnostics see what the scheduler has seen.
    pub observer: Option<Arc<tokio::sync::watch::Sender<HashMap<String, String>>>>,
}

impl SchedulerConfig {
    pub fn new(identity: &str) -> Self {
        SchedulerConfig {
            limits: Limits::default(),
            policy: Policy::Pack,
            heartbeat_timeout: Duration::from_secs(40),
            lease: LeaseConfig::new("medforge-system", "medforge-scheduler", identity),
            max_in_flight: 32,
            resync: Duration::from_secs(5),
            history: Some(Duration::from_secs(30 * 86_400)),
            observer: None,
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("a watch stream ended unexpectedly")]
    WatchEnded,
    #[error("lost leadership")]
    LostLeadership,
}

/// Whether a node may receive sessions now: `Ready=True` and a heartbeat
/// younger than `timeout`.
pub fn node_is_ready(node: &GpuNode, now: Timestamp, timeout: Duration) -> bool {
    let Some(status) = node.status.as_ref() else {
        return false;
    };
    let fresh = status
        .last_heartbeat_time
        .as_ref()
        .is_some_and(|t| now.as_millisecond() - t.0.as_millisecond() <= timeout.as_millis() as i64);
    fresh && conditions::is_true(&status.conditions, NodeCondition::Ready)
}

/// The scheduler's view of a GpuNode.
pub fn node_view(node: &GpuNode, now: Timestamp, timeout: Duration) -> NodeView {
    let disabled = &node.spec.disabled_gpus;
    NodeView {
        name: node.name_any(),
        ready: node_is_ready(node, now, timeout),
        unschedulable: node.spec.unschedulable,
        gpus: node
            .status
            .as_ref()
            .map(|s| {
                s.gpus
                    .iter()
                    .map(|g| GpuView {
                        index: g.index,
                        uuid: g.uuid.clone(),
                        healthy: g.health == GpuHealth::Healthy,
                        disabled: disabled
                            .iter()
                            .any(|d| d == &g.uuid || d == &g.index.to_string()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Whether a session waits for the scheduler ([`Session::wants_binding`]).
pub fn wants_binding(s: &Session) -> bool {
    s.wants_binding()
}

/// What one watch event tells the loop: whether it can change a decision,
/// and the Session it is about.
struct Touched {
    decides: bool,
    uid: Option<String>,
}

impl Touched {
    /// A node, a snapshot record, a deleted Session, a relist.
    const ALWAYS: Touched = Touched {
        decides: true,
        uid: None,
    };
}

/// Whether a change to `s` can change what the scheduler decides: it waits
/// for a binding, or it holds none (it stopped or failed, so its GPUs are
/// free; a deleted one arrives as a delete, which always counts). A bound
/// session's own progress (Starting, Running, the agent's status writes,
/// most of the watch's traffic) cannot, and makes no pass.
pub fn may_decide(s: &Session) -> bool {
    s.wants_binding() || !s.holds_binding()
}

/// Builds the view from the caches plus the bindings still being written.
fn build_view(
    nodes: &Store<GpuNode>,
    sessions: &[Arc<Session>],
    in_flight: &HashMap<String, InFlight>,
    cfg: &SchedulerConfig,
) -> ClusterView {
    let now = Timestamp::now();
    let mut view = ClusterView::new();
    for n in nodes.state() {
        view.upsert_node(node_view(&n, now, cfg.heartbeat_timeout));
    }
    for s in sessions {
        if !s.holds_binding() {
            continue;
        }
        let status = s.status.as_ref().expect("holds_binding checked status");
        let uuids: Vec<String> = status.gpus.iter().map(|g| g.uuid.clone()).collect();
        let uid = s.metadata.uid.as_deref().unwrap_or_default();
        if let Err(e) = view.record(
            uid,
            &s.spec.owner,
            status.node_name.as_deref().unwrap_or(""),
            &uuids,
        ) {
            // Cannot happen while this is the only writer; shout if it does.
            tracing::error!(session = %s.name_any(), error = %e, "double allocation found in stored state");
        }
    }
    for (uid, f) in in_flight {
        let _ = view.record(uid, &f.owner, &f.node, &f.gpus);
    }
    view
}

struct InFlight {
    owner: String,
    node: String,
    gpus: Vec<String>,
}

/// A status write in progress, and what it is for.
enum Outcome {
    Bound { uid: String, ok: bool },
    Refused,
}

/// Runs the scheduler until `shutdown` resolves or leadership is lost.
pub async fn run(
    client: Client,
    cfg: SchedulerConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), SchedulerError> {
    tokio::pin!(shutdown);
    let mut leadership = tokio::select! {
        l = leader::acquire(client.clone(), cfg.lease.clone()) => l?,
        _ = &mut shutdown => {
            tracing::info!("scheduler stopped before it became leader");
            return Ok(());
        }
    };

    let sessions_api: Api<Session> = Api::all(client.clone());
    let nodes_api: Api<GpuNode> = Api::all(client.clone());
    let (sessions, sessions_writer) = reflector::store();
    let (nodes, nodes_writer) = reflector::store();
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);

    // Each event says whether it can change a decision (see `may_decide`).
    let session_events = reflector::reflector(
        sessions_writer,
        watcher(sessions_api.clone(), watcher::Config::default()),
    )
    .default_backoff()
    .map_ok(|ev| match ev {
        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => Touched {
            decides: may_decide(&s),
            uid: s.metadata.uid.clone(),
        },
        _ => Touched::ALWAYS,
    })
    .map_err(|e| tracing::warn!(error = %e, "session watch failed; retrying"))
    .boxed();
    let node_events =
        reflector::reflector(nodes_writer, watcher(nodes_api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .map_ok(|_| Touched::ALWAYS)
            .map_err(|e| tracing::warn!(error = %e, "GpuNode watch failed; retrying"))
            .boxed();
    let (snapshots, snapshots_writer) = reflector::store();
    let snapshot_events = reflector::reflector(
        snapshots_writer,
        watcher(
            Api::<WorkspaceSnapshot>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map_ok(|_| Touched::ALWAYS)
    .map_err(|e| tracing::warn!(error = %e, "WorkspaceSnapshot watch failed; retrying"))
    .boxed();
    let mut events = futures::stream::select_all([session_events, node_events, snapshot_events]);

    // Never decide on a partial picture: an unsynced cache would forget
    // allocations and give a GPU twice.
    let wait_synced = async {
        let _ = sessions.wait_until_ready().await;
        let _ = nodes.wait_until_ready().await;
        let _ = snapshots.wait_until_ready().await;
    };
    tokio::pin!(wait_synced);
    loop {
        tokio::select! {
            _ = &mut wait_synced => break,
            ev = events.next() => if ev.is_none() { return Err(SchedulerError::WatchEnded) },
            _ = &mut shutdown => {
                let released = leadership.release().await;
                tracing::info!(lease_released = released, "scheduler stopped before its caches synced");
                return Ok(());
            }
        }
    }
    tracing::info!(
        sessions = sessions.state().len(),
        nodes = nodes.state().len(),
        "scheduler caches synced"
    );

    let mut in_flight: HashMap<String, InFlight> = HashMap::new();
    let mut writes = FuturesUnordered::new();
    // Whether the last pass left sessions waiting for a free write slot.
    let mut left_waiting = false;
    let mut resync = tokio::time::interval(cfg.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let _ = wake_tx.try_send(());

    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => {
                // Drain: let the binding writes in flight land (each is one
                // request), then hand the Lease over.
                let in_flight = writes.len();
                tracing::info!(in_flight, "scheduler stopping: finishing the binding writes in flight");
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    while writes.next().await.is_some() {}
                })
                .await;
                let released = leadership.release().await;
                tracing::info!(in_flight, lease_released = released, "scheduler stopped");
                return Ok(());
            }
            _ = leadership.lost() => return Err(SchedulerError::LostLeadership),
            Some(done) = writes.next(), if !writes.is_empty() => {
                // A written binding stays in flight until the cache shows it
                // (below): until then the cache still calls that session
                // pending and its GPUs free. A failed one is dropped now.
                // Either way a slot is free: a pass binds the next ones.
                if let Outcome::Bound { uid, ok: false } = done {
                    in_flight.remove(&uid);
                }
                if left_waiting {
                    let _ = wake_tx.try_send(());
                }
                continue;
            }
            ev = events.next() => {
                let Some(ev) = ev else {
                    return Err(SchedulerError::WatchEnded);
                };
                // Drain whatever else arrived; no pass when none of it can
                // change a decision (a binding of ours that the cache now
                // shows can: it leaves `in_flight` in a pass).
                let counts = |ev: Result<Touched, ()>| {
                    ev.map_or(true, |t| {
                        t.decides || t.uid.is_some_and(|u| in_flight.contains_key(&u))
                    })
                };
                let mut decides = counts(ev);
                while let Some(Some(ev)) = events.next().now_or_never() {
                    decides |= counts(ev);
                }
                if !decides {
                    continue;
                }
            }
            _ = wake_rx.recv() => {}
            _ = resync.tick() => {
                // These writes wait on the control plane: leadership lost
                // while one waits ends them, as it ends the binding writes.
                let housekeeping = async {
                    mark_stale_nodes(&client, &nodes, &cfg).await;
                    mark_lost_sessions(&sessions_api, &sessions, &nodes, &cfg).await;
                    if let Some(history) = cfg.history {
                        delete_finished_sessions(&client, &sessions, history).await;
                    }
                };
                tokio::select! {
                    biased;
                    _ = leadership.lost() => return Err(SchedulerError::LostLeadership),
                    _ = housekeeping => {}
                }
            }
        }
        // Drain whatever else arrived, then make one pass.
        while let Some(Some(_)) = events.next().now_or_never() {}

        // A binding is in flight until the cache shows it, or shows that its
        // session is gone.
        let all = sessions.state();
        if !in_flight.is_empty() {
            let cached: HashMap<&str, bool> = all
                .iter()
                .filter_map(|s| s.metadata.uid.as_deref().map(|u| (u, s.holds_binding())))
                .collect();
            in_flight.retain(|uid, _| cached.get(uid.as_str()) == Some(&false));
        }
        if let Some(observer) = &cfg.observer {
            observer.send_replace(
                nodes
                    .state()
                    .iter()
                    .map(|n| (n.name_any(), n.resource_version().unwrap_or_default()))
                    .collect(),
            );
        }

        let mut pending: Vec<&Arc<Session>> = all
            .iter()
            .filter(|s| wants_binding(s))
            .filter(|s| {
                s.metadata
                    .uid
                    .as_deref()
                    .is_some_and(|u| !in_flight.contains_key(u))
            })
            .collect();
        left_waiting = false;
        if pending.is_empty() {
            // Nothing to decide: the view is not needed.
            continue;
        }
        // Oldest first, then by name; borrowed, not copied: this runs on
        // every pass over every waiting session.
        pending.sort_by(|a, b| {
            fn key(s: &Session) -> (Option<Timestamp>, &str) {
                (
                    s.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    s.metadata.name.as_deref().unwrap_or(""),
                )
            }
            key(a).cmp(&key(b))
        });
        let mut view = build_view(&nodes, &all, &in_flight, &cfg);

        let used_slugs: std::collections::HashSet<&str> = all
            .iter()
            .filter_map(|s| s.status.as_ref().and_then(|st| st.slug.as_deref()))
            .collect();

        for s in pending {
            if writes.len() >= cfg.max_in_flight {
                // The completion of a write wakes us for the rest.
                left_waiting = true;
                break;
            }
            let mut req = Request::of(s);
            let decision = match restore_node(s, &snapshots) {
                Err(message) => Decision::Refuse {
                    reason: RefuseReason::SnapshotNotFound,
                    message,
                },
                Ok(node) => {
                    req.node = req.node.or(node);
                    view.decide(&req, cfg.limits, cfg.policy)
                }
            };
            let Some(updated) = status_for(s, &decision, &used_slugs) else {
                continue; // already says exactly this
            };
            let api: Api<Session> =
                Api::namespaced(client.clone(), &s.namespace().unwrap_or_default());
            let name = s.name_any();
            match decision {
                Decision::Bind { node, gpus } => {
                    let uuids: Vec<String> = gpus.iter().map(|g| g.uuid.clone()).collect();
                    if view
                        .record(&req.session_uid, &req.owner, &node, &uuids)
                        .is_err()
                    {
                        continue;
                    }
                    tracing::info!(session = %name, uid = %req.session_uid, %node, gpus = ?uuids, "binding");
                    in_flight.insert(
                        req.session_uid.clone(),
                        InFlight {
                            owner: req.owner.clone(),
                            node,
                            gpus: uuids,
                        },
                    );
                    let uid = req.session_uid.clone();
                    writes.push(Box::pin(async move {
                        let ok = write_status(&api, &name, updated).await;
                        Outcome::Bound { uid, ok }
                    })
                        as futures::future::BoxFuture<'static, Outcome>);
                }
                Decision::Refuse { reason, message } => {
                    tracing::info!(session = %name, reason = reason.as_str(), %message, "cannot bind");
                    writes.push(Box::pin(async move {
                        write_status(&api, &name, updated).await;
                        Outcome::Refused
                    }));
                }
            }
        }
        if cfg!(debug_assertions)
            && let Err(e) = view.check_invariants()
        {
            tracing::error!(error = %e, "scheduler invariant broken");
        }
    }
}

/// The node a new session that restores a snapshot must run on: the
/// snapshot's (`None` for a session that restores nothing, or whose
/// workspace exists already). `Err` says why it cannot be placed.
pub fn restore_node(
    s: &Session,
    snapshots: &Store<WorkspaceSnapshot>,
) -> Result<Option<String>, String> {
    let Some(name) = s
        .spec
        .workspace
        .as_ref()
        .and_then(|w| w.restore_from.as_deref())
    else {
        return Ok(None);
    };
    if s.workspace_node().is_some() {
        return Ok(None);
    }
    let ns = s.namespace().unwrap_or_default();
    let key = reflector::ObjectRef::<WorkspaceSnapshot>::new(name).within(&ns);
    match snapshots.get(&key) {
        None => Err(format!(
            "workspace.restoreFrom: WorkspaceSnapshot {name:?} does not exist in namespace {ns}"
        )),
        Some(r) if !r.is_ready() => Err(format!(
            "workspace.restoreFrom: WorkspaceSnapshot {name:?} is not ready to use (being taken, failed or being deleted)"
        )),
        Some(r) => Ok(Some(r.spec.node.clone())),
    }
}

/// Deletes the sessions that stopped or failed longer than `history` ago
/// and are not asked to run again. The node agent's finalizer then keeps
/// their workspaces as snapshots.
async fn delete_finished_sessions(client: &Client, sessions: &Store<Session>, history: Duration) {
    let now = Timestamp::now();
    for s in sessions.state() {
        if s.metadata.deletion_timestamp.is_some() || !finished_before(&s, now, history) {
            continue;
        }
        let api: Api<Session> = Api::namespaced(client.clone(), &s.namespace().unwrap_or_default());
        // Only the version seen: a session resumed meanwhile is not deleted.
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: s.resource_version(),
                uid: s.uid(),
            }),
            ..Default::default()
        };
        match api.delete(&s.name_any(), &params).await {
            Ok(_) => {
                tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), "deleted: finished longer ago than the history keeps")
            }
            Err(e) => tracing::debug!(session = %s.name_any(), error = %e, "history: not deleted"),
        }
    }
}

/// Whether a session stopped or failed longer than `history` before `now`
/// and is not asked to run again.
pub fn finished_before(s: &Session, now: Timestamp, history: Duration) -> bool {
    if !s.phase().is_terminal() || s.wants_resume() {
        return false;
    }
    let Some(stopped) = s.status.as_ref().and_then(|st| st.stopped_at.as_ref()) else {
        return false;
    };
    let Ok(history) = k8s_openapi::jiff::SignedDuration::try_from(history) else {
        return false;
    };
    now.duration_since(stopped.0) > history
}

/// Writes a Session's status with the resourceVersion it was read at. A
/// conflict means the Session changed; the next pass sees the new version.
async fn write_status(api: &Api<Session>, name: &str, session: Session) -> bool {
    match api
        .replace_status(name, &PostParams::default(), &session)
        .await
    {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
            tracing::debug!(session = %name, code = s.code, "status write lost a race; will look again");
            false
        }
        Err(e) => {
            tracing::warn!(session = %name, error = %e, "could not write the session's status");
            false
        }
    }
}

/// The Session with the status the decision calls for, or `None` when its
/// status already says exactly that.
fn status_for(
    s: &Session,
    decision: &Decision,
    used_slugs: &std::collections::HashSet<&str>,
) -> Option<Session> {
    let mut updated = s.clone();
    let generation = s.meta().generation;
    let status = updated.status.get_or_insert_with(SessionStatus::default);
    let now = Time(Timestamp::now());
    match decision {
        Decision::Bind { node, gpus } => {
            status.phase = Some(SessionPhase::Scheduled);
            status.node_name = Some(node.clone());
            status.gpus = gpus
                .iter()
                .map(|g| AssignedGpu {
                    index: g.index,
                    uuid: g.uuid.clone(),
                })
                .collect();
            if status.slug.is_none() {
                let wanted = s
                    .labels()
                    .get(SLUG_LABEL)
                    .filter(|l| l.parse::<Slug>().is_ok() && !used_slugs.contains(l.as_str()));
                status.slug = Some(match wanted {
                    Some(l) => l.clone(),
                    None => Slug::unused(|c| used_slugs.contains(c)).into_string(),
                });
            }
            status.reason = None;
            status.message = None;
            let msg = format!("bound to {node} with {} GPU(s)", gpus.len());
            set_condition(
                &mut status.conditions,
                SessionCondition::Scheduled,
                Some(true),
                SessionReason::Bound,
                &msg,
                generation,
                now,
            );
            status.observed_generation = generation;
            Some(updated)
        }
        Decision::Refuse { reason, message } => {
            // A session asked to resume stays Stopped (or Failed) until it
            // can be bound; the condition says why it is not yet.
            let phase = if s.phase().is_terminal() {
                s.phase()
            } else {
                SessionPhase::Pending
            };
            let mut changed = status.phase != Some(phase);
            status.phase = Some(phase);
            changed |= set_condition(
                &mut status.conditions,
                SessionCondition::Scheduled,
                Some(false),
                reason.as_str(),
                message,
                generation,
                now,
            );
            if status.reason.as_deref() != Some(reason.as_str()) {
                status.reason = Some(reason.as_str().to_string());
                changed = true;
            }
            if status.message.as_deref() != Some(message.as_str()) {
                status.message = Some(message.clone());
                changed = true;
            }
            status.observed_generation = generation;
            changed.then_some(updated)
        }
    }
}

/// A node whose heartbeat went stale while it said Ready turns
/// `Ready=Unknown`, as Kubernetes' node lifecycle controller does; its agent's
/// next heartbeat sets it again.
async fn mark_stale_nodes(client: &Client, nodes: &Store<GpuNode>, cfg: &SchedulerConfig) {
    let now = Timestamp::now();
    let api: Api<GpuNode> = Api::all(client.clone());
    for n in nodes.state() {
        let Some(status) = n.status.as_ref() else {
            continue;
        };
        if !conditions::is_true(&status.conditions, NodeCondition::Ready)
            || node_is_ready(&n, now, cfg.heartbeat_timeout)
        {
            continue;
        }
        let mut updated = (*n).clone();
        let st = updated.status.get_or_insert_with(Default::default);
        let age = st
            .last_heartbeat_time
            .as_ref()
            .map(|t| format!("{}s ago", (now.as_second() - t.0.as_second()).max(0)))
            .unwrap_or_else(|| "never".into());
        let msg = format!("the node agent stopped sending heartbeats (last one {age})");
        set_condition(
            &mut st.conditions,
            NodeCondition::Ready,
            None,
            NodeReason::NodeStatusUnknown,
            &msg,
            n.meta().generation,
            Time(now),
        );
        match api
            .replace_status(&n.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => tracing::warn!(node = %n.name_any(), %msg, "node lost"),
            Err(e) => {
                tracing::debug!(node = %n.name_any(), error = %e, "could not mark the node lost; will look again")
            }
        }
    }
}

/// Sessions on a node whose heartbeat went stale are not moved (their
/// workspace lives there) but shown as `NodeLost`.
async fn mark_lost_sessions(
    api: &Api<Session>,
    sessions: &Store<Session>,
    nodes: &Store<GpuNode>,
    cfg: &SchedulerConfig,
) {
    let now = Timestamp::now();
    let nodes = nodes.state();
    let ready: std::collections::HashSet<String> = nodes
        .iter()
        .filter(|n| node_is_ready(n, now, cfg.heartbeat_timeout))
        .map(|n| n.name_any())
        .collect();
    for s in sessions.state() {
        let Some(status) = s.status.as_ref() else {
            continue;
        };
        let Some(node) = status.node_name.as_deref() else {
            continue;
        };
        // A node that is gone or not Ready has lost its sessions.
        if ready.contains(node) || !s.holds_binding() {
            continue;
        }
        if conditions::find(&status.conditions, SessionCondition::Ready)
            .is_some_and(|c| c.reason == SessionReason::NodeLost)
        {
            continue;
        }
        let mut updated = (*s).clone();
        let st = updated.status.get_or_insert_with(Default::default);
        let msg = format!(
            "node {node} stopped sending heartbeats; the session's workspace lives there, so it is not moved"
        );
        set_condition(
            &mut st.conditions,
            SessionCondition::Ready,
            Some(false),
            SessionReason::NodeLost,
            &msg,
            s.meta().generation,
            Time(now),
        );
        st.reason = Some(SessionReason::NodeLost.to_string());
        st.message = Some(msg);
        let ns_api: Api<Session> = Api::namespaced(
            api.clone().into_client(),
            &s.namespace().unwrap_or_default(),
        );
        write_status(&ns_api, &s.name_any(), updated).await;
    }
}
