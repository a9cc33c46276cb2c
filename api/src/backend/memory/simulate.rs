//! The simulated scheduler and node agent of the in-memory control plane. The
//! scheduler's decision is the real one: the state becomes the scheduler's
//! [`ClusterView`] and [`ClusterView::decide`] answers; only the writing of the
//! binding is simulated.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_crds::{
    DesiredState, GpuAllocation, GpuNodeStatus, NodeCondition, SessionCondition, SessionPhase,
    SessionReason, SessionStatus, WorkspaceStatus, conditions,
};
use medforge_operator::scheduler::controller::node_view;
use medforge_operator::scheduler::placement::{ClusterView, Decision, Limits, Policy, Request};

use super::{MemoryBackend, State, set_condition};
use crate::backend::contract::WatchEvent;
use crate::slug::session_slug;

impl MemoryBackend {
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
        let rv = st.bump();
        if let Some(session) = st.sessions.get_mut(name) {
            let resuming = session.phase().is_terminal();
            let generation = session.metadata.generation;
            let status = session.status.get_or_insert_with(SessionStatus::default);
            if !resuming {
                status.phase = Some(SessionPhase::Pending);
            }
            status.reason = Some(reason.into());
            status.message = Some(message.into());
            scheduled_condition(status, false, reason, message, generation);
            session.metadata.resource_version = Some(rv);
            let session = session.clone();
            self.emit(WatchEvent::Apply(session));
        }
    }

    /// The simulated scheduler: one decision at a time, under the state lock.
    pub(super) fn schedule(&self, name: &str) {
        let mut st = self.lock();
        let Some(session) = st.sessions.get(name).cloned() else {
            return;
        };
        if !session.wants_binding() {
            return;
        }
        let limits = Limits {
            max_sessions_per_user: self.inner.config.default_user_limit,
            // The api bounds a session's GPUs; the simulation bounds nothing more.
            max_gpus_per_user: u32::MAX / 2,
            allow_cpu_only: true,
        };
        let mut request = Request::of(&session);
        // A session restored from a snapshot runs on the snapshot's node, on
        // a clone of it; without a ready record it is refused (the real
        // scheduler's `restore_node`, over the simulation's records).
        if request.node.is_none()
            && let Some(from) = session
                .spec
                .workspace
                .as_ref()
                .and_then(|w| w.restore_from.as_deref())
        {
            match st.snapshots.get(from) {
                Some(record) if record.is_ready() => request.node = Some(record.spec.node.clone()),
                found => {
                    let message = match found {
                        None => format!(
                            "workspace.restoreFrom: WorkspaceSnapshot {from:?} does not exist"
                        ),
                        Some(_) => format!(
                            "workspace.restoreFrom: WorkspaceSnapshot {from:?} is not ready to use (being taken, failed or being deleted)"
                        ),
                    };
                    self.refuse_locked(
                        &mut st,
                        name,
                        SessionReason::SnapshotNotFound.as_str(),
                        &message,
                    );
                    return;
                }
            }
        }
        let (node_name, gpus) = match cluster_view(&st).decide(&request, limits, Policy::Pack) {
            Decision::Bind { node, gpus } => (node, gpus),
            Decision::Refuse { reason, message } => {
                self.refuse_locked(&mut st, name, reason.as_str(), &message);
                return;
            }
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
        let rv = st.bump();
        let Some(stored) = st.sessions.get_mut(name) else {
            return;
        };
        let status = stored.status.get_or_insert_with(SessionStatus::default);
        status.phase = Some(SessionPhase::Scheduled);
        status.node_name = Some(node_name.clone());
        status.gpus = gpus
            .into_iter()
            .map(|g| medforge_crds::AssignedGpu {
                index: g.index,
                uuid: g.uuid,
            })
            .collect();
        status.reason = None;
        status.message = None;
        let generation = stored.metadata.generation;
        scheduled_condition(
            status,
            true,
            SessionReason::Bound.as_str(),
            &format!("bound to {node_name}"),
            generation,
        );
        stored.metadata.resource_version = Some(rv);
        let bound = stored.clone();
        self.emit(WatchEvent::Apply(bound));
        drop(st);

        if let Some(delay) = self.inner.config.start_after {
            let name = name.to_owned();
            self.after(delay, move |b| b.start(&name));
        }
    }

    /// The simulated node agent: a Scheduled session becomes Running and
    /// Ready, on its workspace dataset (`pool/<owner>/<uid>`, named once).
    pub fn start(&self, name: &str) {
        self.update_status_if(name, |session, status| {
            if session.spec.state != DesiredState::Running
                || status.phase != Some(SessionPhase::Scheduled)
            {
                return false;
            }
            let workspace = status
                .workspace
                .get_or_insert_with(WorkspaceStatus::default);
            workspace.dataset.get_or_insert_with(|| {
                format!(
                    "pool/{}/{}",
                    session.spec.owner,
                    session.metadata.uid.as_deref().unwrap_or_default()
                )
            });
            let slug = session_slug(session).unwrap_or_default();
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

    /// The simulated node agent: a session whose state is Stopped becomes
    /// Stopped and frees its GPUs; its workspace, when it has one, gets a
    /// `stop-<unix ms>` snapshot and its record.
    pub(super) fn finish_stop(&self, name: &str) {
        let mut freed = None;
        let mut snapshot = None;
        self.update_status_if(name, |session, status| {
            if status.phase.is_some_and(SessionPhase::is_terminal) {
                return false;
            }
            freed = status
                .node_name
                .clone()
                .map(|node| (node, session.metadata.uid.clone()));
            if let (Some(node), Some(workspace)) = (&status.node_name, status.workspace.as_mut())
                && let Some(dataset) = &workspace.dataset
            {
                let short = format!("stop-{}", jiff::Timestamp::now().as_millisecond());
                workspace.snapshots.push(short.clone());
                snapshot = Some((session.clone(), dataset.clone(), node.clone(), short));
            }
            status.phase = Some(SessionPhase::Stopped);
            status.stopped_generation = session.metadata.generation;
            status.gpus.clear();
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
        if let Some((session, dataset, node, short)) = snapshot {
            self.record_stop_snapshot(&session, &dataset, &node, &short);
        }
    }

    pub(super) fn free_gpus(&self, node: &str, uid: Option<&str>) {
        let mut st = self.lock();
        if let Some(status) = st.nodes.get_mut(node).and_then(|n| n.status.as_mut()) {
            status
                .allocated
                .retain(|a| Some(a.session_uid.as_str()) != uid);
        }
    }
}

/// The `Scheduled` condition, at the generation it decided, as the real
/// scheduler writes it.
fn scheduled_condition(
    status: &mut SessionStatus,
    bound: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    conditions::set_condition(
        &mut status.conditions,
        SessionCondition::Scheduled,
        Some(bound),
        reason,
        message,
        generation,
        Time(jiff::Timestamp::now()),
    );
}

/// The stored state as the scheduler sees it. No heartbeats are simulated: a
/// node is Ready when its `Ready` condition says so.
fn cluster_view(st: &State) -> ClusterView {
    let mut view = ClusterView::new();
    for node in st.nodes.values() {
        let mut seen = node_view(node, jiff::Timestamp::now(), Duration::ZERO);
        seen.ready = node
            .status
            .as_ref()
            .is_some_and(|s| conditions::is_true(&s.conditions, NodeCondition::Ready));
        view.upsert_node(seen);
    }
    for session in st.sessions.values().filter(|s| s.holds_binding()) {
        let status = session
            .status
            .as_ref()
            .expect("holds_binding checked status");
        let gpus: Vec<String> = status.gpus.iter().map(|g| g.uuid.clone()).collect();
        // Stored bindings never overlap: this simulation is their only writer.
        let _ = view.record(
            session.metadata.uid.as_deref().unwrap_or_default(),
            &session.spec.owner,
            session.bound_node().unwrap_or_default(),
            &gpus,
        );
    }
    view
}
