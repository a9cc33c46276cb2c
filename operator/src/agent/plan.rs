//! The reconciler's decisions, without I/O: from a Session, what was
//! observed of its container and dataset, and the time, the one next step;
//! and the status each step writes.
//!
//! Every step is idempotent and keyed by the Session's uid (the container by
//! its name and uid label, the dataset by its name), so a step repeated after
//! a crash finds its own work done and moves on. The one thing that is not
//! naturally idempotent, the name of the snapshot taken on stop, is written
//! to the status (phase `Stopping`) before the container is stopped, so a
//! restarted agent takes the same snapshot name.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use medforge_crds::conditions::{self, set_condition};
use medforge_crds::quantity::parse_duration;
use medforge_crds::{
    DesiredState, Session, SessionCondition, SessionPhase, SessionReason, SessionStatus,
    WorkspaceStatus,
};

use super::runtime::{ContainerObs, ContainerState, DatasetObs};

/// Why a session is being wound down, and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCause {
    pub reason: SessionReason,
    pub message: String,
}

impl StopCause {
    fn new(reason: SessionReason, message: impl Into<String>) -> StopCause {
        StopCause {
            reason,
            message: message.into(),
        }
    }

    /// The phase the session ends in: `Failed` when its container died or
    /// never became ready, `Stopped` otherwise.
    pub fn final_phase(reason: SessionReason) -> SessionPhase {
        match reason {
            SessionReason::ContainerExited
            | SessionReason::ContainerMissing
            | SessionReason::StartTimeout => SessionPhase::Failed,
            _ => SessionPhase::Stopped,
        }
    }

    /// `stop-` or `death-`: the snapshot name's prefix.
    pub fn snapshot_prefix(reason: SessionReason) -> &'static str {
        match Self::final_phase(reason) {
            SessionPhase::Failed => "death",
            _ => "stop",
        }
    }
}

/// What the reconciler observed this pass. The dataset is looked at only in
/// the phases that need it ([`needs_dataset`]); elsewhere it is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub container: Option<ContainerObs>,
    pub dataset: Option<DatasetObs>,
    /// Whether the snapshot planned in status exists (phase `Stopping` only).
    pub planned_snapshot_exists: Option<bool>,
    /// Whether the dataset was looked at (`dataset: None` then means absent).
    pub dataset_observed: bool,
}

/// Settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    pub container_owner: (u32, u32),
    pub start_timeout: Duration,
    pub resync: Duration,
    pub probe_interval: Duration,
}

/// The next step for a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Nothing to do now: look again after this long, or on a change.
    Wait(Option<Duration>),
    /// Check the inputs (Pack, image, restore snapshot) and write `Starting`.
    Begin,
    CreateDataset,
    MountDataset,
    ChownWorkspace,
    CreateContainer,
    StartContainer,
    /// Dial the workload; when it answers, write `Running`, `Ready=True`.
    AwaitPort {
        addr: SocketAddr,
    },
    /// Write `Stopping` with the cause and the snapshot to take.
    BeginStop(StopCause),
    StopContainer,
    Snapshot {
        name: String,
    },
    /// Write the final phase (`Stopped` or `Failed`) and free the GPUs.
    Finish,
    /// Fail at once (nothing running to wind down).
    Fail {
        reason: SessionReason,
        message: String,
    },
    /// Stop a container that runs although its session is over.
    StopStray,
}

/// The kind of a [`Step`], without its data: what the step hook and the
/// metrics see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepKind {
    Begin,
    CreateDataset,
    MountDataset,
    ChownWorkspace,
    CreateContainer,
    StartContainer,
    AwaitPort,
    BeginStop,
    StopContainer,
    Snapshot,
    Finish,
    Fail,
    StopStray,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Begin => "Begin",
            StepKind::CreateDataset => "CreateDataset",
            StepKind::MountDataset => "MountDataset",
            StepKind::ChownWorkspace => "ChownWorkspace",
            StepKind::CreateContainer => "CreateContainer",
            StepKind::StartContainer => "StartContainer",
            StepKind::AwaitPort => "AwaitPort",
            StepKind::BeginStop => "BeginStop",
            StepKind::StopContainer => "StopContainer",
            StepKind::Snapshot => "Snapshot",
            StepKind::Finish => "Finish",
            StepKind::Fail => "Fail",
            StepKind::StopStray => "StopStray",
        }
    }
}

impl Step {
    /// `None` for [`Step::Wait`].
    pub fn kind(&self) -> Option<StepKind> {
        Some(match self {
            Step::Wait(_) => return None,
            Step::Begin => StepKind::Begin,
            Step::CreateDataset => StepKind::CreateDataset,
            Step::MountDataset => StepKind::MountDataset,
            Step::ChownWorkspace => StepKind::ChownWorkspace,
            Step::CreateContainer => StepKind::CreateContainer,
            Step::StartContainer => StepKind::StartContainer,
            Step::AwaitPort { .. } => StepKind::AwaitPort,
            Step::BeginStop(_) => StepKind::BeginStop,
            Step::StopContainer => StepKind::StopContainer,
            Step::Snapshot { .. } => StepKind::Snapshot,
            Step::Finish => StepKind::Finish,
            Step::Fail { .. } => StepKind::Fail,
            Step::StopStray => StepKind::StopStray,
        })
    }
}

/// Whether this pass must look at the dataset.
pub fn needs_dataset(s: &Session) -> bool {
    matches!(
        s.phase(),
        SessionPhase::Scheduled | SessionPhase::Starting | SessionPhase::Stopping
    )
}

/// The snapshot planned when the session started stopping: the last one
/// recorded while the phase is `Stopping` (a session stops only once).
pub fn planned_snapshot(s: &Session) -> Option<String> {
    if s.phase() != SessionPhase::Stopping {
        return None;
    }
    let st = s.status.as_ref()?;
    let last = st.workspace.as_ref()?.snapshots.last()?;
    if last.starts_with("stop-") || last.starts_with("death-") {
        Some(last.clone())
    } else {
        None
    }
}

fn is_live(c: &ContainerObs) -> bool {
    matches!(
        c.state,
        ContainerState::Running | ContainerState::Paused | ContainerState::Restarting
    )
}

/// Where the proxy may dial the container, once it has an address.
pub fn upstream_of(c: &ContainerObs) -> Option<SocketAddr> {
    Some(SocketAddr::new(c.ip?, c.port()?))
}

/// What an exited container says about its end, for the status message.
pub fn exit_message(c: &ContainerObs) -> String {
    let mut msg = format!("container {} {}", c.name, c.state.as_str());
    if let Some(code) = c.exit_code {
        msg.push_str(&format!(" with code {code}"));
    }
    if c.oom_killed {
        msg.push_str(" (killed: out of memory)");
    }
    if let Some(at) = c.finished_at {
        msg.push_str(&format!(" at {at}"));
    }
    if let Some(e) = c.error.as_deref().filter(|e| !e.is_empty()) {
        msg.push_str(&format!(": {e}"));
    }
    msg
}

/// When the session must stop for idleness or age, and why; `None` when it
/// has no such limit.
pub fn deadline(s: &Session) -> Option<(Timestamp, SessionReason)> {
    let st = s.status.as_ref()?;
    let started = st.started_at.as_ref()?.0;
    let mut out: Option<(Timestamp, SessionReason)> = None;
    let mut consider = |at: Timestamp, why: SessionReason| {
        if out.is_none_or(|(t, _)| at < t) {
            out = Some((at, why));
        }
    };
    if let Some(life) = s
        .spec
        .max_lifetime
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
        && let Ok(at) = started.checked_add(life)
    {
        consider(at, SessionReason::Expired);
    }
    if let Some(idle) = s
        .spec
        .idle_timeout
        .as_deref()
        .and_then(|d| parse_duration(d).ok())
    {
        let active = st
            .last_activity_at
            .as_ref()
            .map(|t| t.0)
            .filter(|t| *t > started)
            .unwrap_or(started);
        if let Ok(at) = active.checked_add(idle) {
            consider(at, SessionReason::Idle);
        }
    }
    out
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let ms = at.as_millisecond() - now.as_millisecond();
    Duration::from_millis(ms.max(0) as u64)
}

/// Whether a Running session's status already says what is true.
fn running_status_is_current(s: &Session, c: &ContainerObs, addr: SocketAddr) -> bool {
    let Some(st) = s.status.as_ref() else {
        return false;
    };
    st.upstream.as_deref() == Some(addr.to_string().as_str())
        && st.container_id.as_deref() == Some(c.id.as_str())
        && st.reason.is_none()
        && conditions::is_true(&st.conditions, SessionCondition::Ready)
        && conditions::is_true(&st.conditions, SessionCondition::ContainerReady)
}

/// The next step. Pure: the same inputs give the same step.
pub fn decide(s: &Session, w: &World, p: &Policy, now: Timestamp) -> Step {
    let wants_run = s.spec.state == DesiredState::Running;
    let container = w.container.as_ref();
    let stop_requested = || {
        Step::BeginStop(StopCause::new(
            SessionReason::StopRequested,
            "stopped at the owner's request",
        ))
    };
    match s.phase() {
        SessionPhase::Pending => Step::Wait(None),
        SessionPhase::Stopped | SessionPhase::Failed => {
            if container.is_some_and(is_live) {
                Step::StopStray
            } else {
                Step::Wait(None)
            }
        }
        SessionPhase::Scheduled => {
            if wants_run {
                Step::Begin
            } else {
                stop_requested()
            }
        }
        SessionPhase::Starting => {
            if !wants_run {
                return stop_requested();
            }
            match &w.dataset {
                None => return Step::CreateDataset,
                Some(d) if !d.mounted => return Step::MountDataset,
                Some(d) if d.owner != Some(p.container_owner) => return Step::ChownWorkspace,
                Some(_) => {}
            }
            let Some(c) = container else {
                return Step::CreateContainer;
            };
            if let Some(other) = c.session_uid()
                && Some(other) != s.metadata.uid.as_deref()
            {
                return Step::Fail {
                    reason: SessionReason::NameConflict,
                    message: format!(
                        "the container name {} is taken by a container of another session (uid {other}); \
                         remove that container",
                        c.name
                    ),
                };
            }
            match c.state {
                ContainerState::Created => Step::StartContainer,
                ContainerState::Exited | ContainerState::Dead if !c.ever_started() => {
                    Step::StartContainer
                }
                ContainerState::Exited | ContainerState::Dead => Step::BeginStop(StopCause::new(
                    SessionReason::ContainerExited,
                    format!("{} before it accepted connections", exit_message(c)),
                )),
                ContainerState::Running => {
                    let started = c.started_at.unwrap_or(now);
                    if until(started, now) > p.start_timeout {
                        return Step::BeginStop(StopCause::new(
                            SessionReason::StartTimeout,
                            format!(
                                "the workload did not accept connections on port {} within {:?}",
                                c.port().unwrap_or(0),
                                p.start_timeout
                            ),
                        ));
                    }
                    match upstream_of(c) {
                        Some(addr) => Step::AwaitPort { addr },
                        None => Step::Wait(Some(p.probe_interval)),
                    }
                }
                ContainerState::Paused | ContainerState::Restarting | ContainerState::Removing => {
                    Step::Wait(Some(p.probe_interval))
                }
            }
        }
        SessionPhase::Running => {
            if !wants_run {
                return stop_requested();
            }
            let Some(c) = container else {
                return Step::BeginStop(StopCause::new(
                    SessionReason::ContainerMissing,
                    "the session's container disappeared while it ran",
                ));
            };
            match c.state {
                ContainerState::Running => {}
                ContainerState::Paused | ContainerState::Restarting => {
                    return Step::Wait(Some(p.probe_interval));
                }
                _ => {
                    return Step::BeginStop(StopCause::new(
                        SessionReason::ContainerExited,
                        exit_message(c),
                    ));
                }
            }
            let next = deadline(s);
            if let Some((at, why)) = next
                && at <= now
            {
                let message = if why == SessionReason::Idle {
                    format!(
                        "no activity for {}",
                        s.spec.idle_timeout.as_deref().unwrap_or("?")
                    )
                } else {
                    format!(
                        "ran for its maximum lifetime of {}",
                        s.spec.max_lifetime.as_deref().unwrap_or("?")
                    )
                };
                return Step::BeginStop(StopCause::new(why, message));
            }
            match upstream_of(c) {
                Some(addr) if running_status_is_current(s, c, addr) => {
                    let wait = next
                        .map(|(at, _)| until(now, at).min(p.resync))
                        .unwrap_or(p.resync);
                    Step::Wait(Some(wait))
                }
                Some(addr) => Step::AwaitPort { addr },
                None => Step::Wait(Some(p.probe_interval)),
            }
        }
        SessionPhase::Stopping => {
            if container.is_some_and(is_live) {
                return Step::StopContainer;
            }
            if let Some(name) = planned_snapshot(s)
                && w.dataset.is_some()
                && w.planned_snapshot_exists == Some(false)
            {
                return Step::Snapshot { name };
            }
            Step::Finish
        }
    }
}

fn now_time(now: Timestamp) -> Time {
    Time(now)
}

fn status_of(s: &Session) -> SessionStatus {
    s.status.clone().unwrap_or_default()
}

/// `Starting`: the inputs are good; the workspace and container come next.
pub fn status_starting(s: &Session, dataset: &str, now: Timestamp) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    st.phase = Some(SessionPhase::Starting);
    st.reason = None;
    st.message = None;
    st.workspace
        .get_or_insert_with(WorkspaceStatus::default)
        .dataset = Some(dataset.to_string());
    let t = now_time(now);
    set_condition(
        &mut st.conditions,
        SessionCondition::WorkspaceReady,
        Some(false),
        SessionReason::Creating,
        &format!("creating dataset {dataset}"),
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::ContainerReady,
        Some(false),
        SessionReason::Creating,
        "creating the container",
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        SessionReason::Starting,
        "the node agent is creating the workspace and the container",
        g,
        t,
    );
    st.observed_generation = g;
    st
}

/// `Running`: the workload answers at `upstream`.
pub fn status_running(
    s: &Session,
    c: &ContainerObs,
    upstream: SocketAddr,
    now: Timestamp,
) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    st.phase = Some(SessionPhase::Running);
    st.reason = None;
    st.message = None;
    st.container_id = Some(c.id.clone());
    st.upstream = Some(upstream.to_string());
    st.started_at = Some(now_time(c.started_at.unwrap_or(now)));
    st.stopped_at = None;
    let t = now_time(now);
    let dataset = st
        .workspace
        .as_ref()
        .and_then(|w| w.dataset.clone())
        .unwrap_or_default();
    set_condition(
        &mut st.conditions,
        SessionCondition::WorkspaceReady,
        Some(true),
        SessionReason::WorkspaceReady,
        &format!("dataset {dataset} is mounted at /workspace"),
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::ContainerReady,
        Some(true),
        SessionReason::ContainerRunning,
        &format!("container {} runs", c.name),
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(true),
        SessionReason::Running,
        &format!("the workload accepts connections at {upstream}"),
        g,
        t,
    );
    st.observed_generation = g;
    st
}

/// `Ready=False` while the container runs but the workload does not answer yet.
pub fn status_waiting_for_port(s: &Session, addr: SocketAddr, now: Timestamp) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        SessionReason::WaitingForPort,
        &format!("waiting for the workload to accept connections at {addr}"),
        g,
        now_time(now),
    );
    st
}

/// `Ready=False` (`GpuInUse`) while a GPU of the session is held by another
/// session on this node. `None` when the status already says so.
pub fn status_gpu_in_use(s: &Session, message: &str, now: Timestamp) -> Option<SessionStatus> {
    let mut st = status_of(s);
    let changed = set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        SessionReason::GpuInUse,
        message,
        s.metadata.generation,
        now_time(now),
    );
    changed.then_some(st)
}

/// `Stopping`: the cause and the snapshot to take are recorded before
/// anything is stopped, so a restarted agent finishes the same stop.
pub fn status_stopping(s: &Session, cause: &StopCause, now: Timestamp) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    st.phase = Some(SessionPhase::Stopping);
    st.reason = Some(cause.reason.to_string());
    st.message = Some(cause.message.clone());
    st.upstream = None;
    if let Some(ws) = st.workspace.as_mut()
        && ws.dataset.is_some()
    {
        ws.snapshots.push(format!(
            "{}-{}",
            StopCause::snapshot_prefix(cause.reason),
            now.as_millisecond()
        ));
    }
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        cause.reason,
        &cause.message,
        g,
        now_time(now),
    );
    st.observed_generation = g;
    st
}

/// The end of a stop: `Stopped` or `Failed` by the recorded cause; GPUs
/// and upstream released. A planned snapshot that could not be taken (the
/// dataset never existed) is dropped from the list.
pub fn status_finished(s: &Session, w: &World, now: Timestamp) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    // A reason this agent did not write (or none) ends the session as a stop.
    let why = st
        .reason
        .as_deref()
        .and_then(|r| r.parse().ok())
        .unwrap_or(SessionReason::StopRequested);
    let phase = StopCause::final_phase(why);
    if let Some(planned) = planned_snapshot(s)
        && (w.dataset.is_none() || w.planned_snapshot_exists != Some(true))
        && let Some(ws) = st.workspace.as_mut()
    {
        ws.snapshots.retain(|n| *n != planned);
    }
    st.phase = Some(phase);
    st.gpus.clear();
    st.upstream = None;
    st.stopped_at = Some(now_time(now));
    let message = st.message.clone().unwrap_or_default();
    let t = now_time(now);
    let (c_reason, c_message) = if phase == SessionPhase::Failed {
        (why.as_str(), message.as_str())
    } else {
        ("ContainerStopped", "the container is stopped")
    };
    set_condition(
        &mut st.conditions,
        SessionCondition::ContainerReady,
        Some(false),
        c_reason,
        c_message,
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        why,
        &message,
        g,
        t,
    );
    st.observed_generation = g;
    st
}

/// `Failed` at once, with nothing running (bad input, a refused create).
pub fn status_failed(
    s: &Session,
    why: SessionReason,
    message: &str,
    now: Timestamp,
) -> SessionStatus {
    let g = s.metadata.generation;
    let mut st = status_of(s);
    st.phase = Some(SessionPhase::Failed);
    st.reason = Some(why.to_string());
    st.message = Some(message.to_string());
    st.gpus.clear();
    st.upstream = None;
    st.stopped_at = Some(now_time(now));
    let t = now_time(now);
    let failed_condition = match why {
        SessionReason::WorkspaceFailed | SessionReason::SnapshotNotFound => {
            SessionCondition::WorkspaceReady
        }
        _ => SessionCondition::ContainerReady,
    };
    set_condition(
        &mut st.conditions,
        failed_condition,
        Some(false),
        why,
        message,
        g,
        t.clone(),
    );
    set_condition(
        &mut st.conditions,
        SessionCondition::Ready,
        Some(false),
        why,
        message,
        g,
        t,
    );
    st.observed_generation = g;
    st
}

/// A runtime (Docker or ZFS) not answering, shown as `Unknown` on the
/// condition it concerns. `None` when the status already says so.
pub fn status_runtime_unavailable(
    s: &Session,
    condition: SessionCondition,
    why: SessionReason,
    message: &str,
    now: Timestamp,
) -> Option<SessionStatus> {
    let mut st = status_of(s);
    let changed = set_condition(
        &mut st.conditions,
        condition,
        None,
        why,
        message,
        s.metadata.generation,
        now_time(now),
    );
    changed.then_some(st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fixtures::{self, running_container};

    fn policy() -> Policy {
        Policy {
            container_owner: (1000, 1000),
            start_timeout: Duration::from_secs(60),
            resync: Duration::from_secs(300),
            probe_interval: Duration::from_millis(100),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn with_phase(mut s: Session, phase: SessionPhase) -> Session {
        s.status.as_mut().unwrap().phase = Some(phase);
        s
    }

    fn ready_dataset() -> DatasetObs {
        DatasetObs {
            name: "pool/mf/alice/uid-s1".into(),
            mountpoint: Some("/pool/mf/alice/uid-s1".into()),
            mounted: true,
            owner: Some((1000, 1000)),
            snapshots: Vec::new(),
        }
    }

    #[test]
    fn a_start_goes_step_by_step() {
        let p = policy();
        let s = fixtures::bound_session("s1", 1);
        assert_eq!(decide(&s, &World::default(), &p, t(100)), Step::Begin);

        let s = with_phase(s, SessionPhase::Starting);
        let mut w = World::default();
        assert_eq!(decide(&s, &w, &p, t(100)), Step::CreateDataset);
        w.dataset = Some(DatasetObs {
            mounted: false,
            ..ready_dataset()
        });
        assert_eq!(decide(&s, &w, &p, t(100)), Step::MountDataset);
        w.dataset = Some(DatasetObs {
            owner: Some((0, 0)),
            ..ready_dataset()
        });
        assert_eq!(decide(&s, &w, &p, t(100)), Step::ChownWorkspace);
        w.dataset = Some(ready_dataset());
        assert_eq!(decide(&s, &w, &p, t(100)), Step::CreateContainer);

        let mut c = running_container(&s, t(100));
        c.state = ContainerState::Created;
        c.started_at = None;
        w.container = Some(c.clone());
        assert_eq!(decide(&s, &w, &p, t(100)), Step::StartContainer);

        w.container = Some(running_container(&s, t(100)));
        let addr = upstream_of(w.container.as_ref().unwrap()).unwrap();
        assert_eq!(decide(&s, &w, &p, t(101)), Step::AwaitPort { addr });
        // Never ready: a timeout, not an endless wait.
        assert!(matches!(
            decide(&s, &w, &p, t(200)),
            Step::BeginStop(StopCause {
                reason: SessionReason::StartTimeout,
                ..
            })
        ));
    }

    #[test]
    fn a_container_of_another_session_is_never_adopted() {
        let p = policy();
        let s = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Starting);
        let mut c = running_container(&s, t(1));
        c.labels.insert(
            super::super::runtime::labels::SESSION_UID.into(),
            "other".into(),
        );
        let w = World {
            container: Some(c),
            dataset: Some(ready_dataset()),
            ..Default::default()
        };
        assert!(matches!(
            decide(&s, &w, &p, t(2)),
            Step::Fail {
                reason: SessionReason::NameConflict,
                ..
            }
        ));
    }

    #[test]
    fn running_sessions_rest_until_something_changes() {
        let p = policy();
        let s0 = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Starting);
        let c = running_container(&s0, t(100));
        let addr = upstream_of(&c).unwrap();
        let mut s = s0.clone();
        s.status = Some(status_running(&s0, &c, addr, t(101)));
        let w = World {
            container: Some(c.clone()),
            ..Default::default()
        };
        assert_eq!(decide(&s, &w, &p, t(102)), Step::Wait(Some(p.resync)));

        // A NodeLost mark (or a new address) is corrected by probing again.
        let mut marked = s.clone();
        marked.status.as_mut().unwrap().reason = Some("NodeLost".into());
        assert_eq!(decide(&marked, &w, &p, t(102)), Step::AwaitPort { addr });

        // The container exited or vanished: wind down as a failure.
        let mut dead = c.clone();
        dead.state = ContainerState::Exited;
        dead.exit_code = Some(137);
        let step = decide(
            &s,
            &World {
                container: Some(dead),
                ..Default::default()
            },
            &p,
            t(103),
        );
        match step {
            Step::BeginStop(cause) => {
                assert_eq!(cause.reason, SessionReason::ContainerExited);
                assert!(cause.message.contains("code 137"), "{}", cause.message);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&s, &World::default(), &p, t(103)),
            Step::BeginStop(StopCause {
                reason: SessionReason::ContainerMissing,
                ..
            })
        ));

        // The owner stops it.
        let mut stop = s.clone();
        stop.spec.state = DesiredState::Stopped;
        assert!(matches!(
            decide(&stop, &w, &p, t(103)),
            Step::BeginStop(StopCause {
                reason: SessionReason::StopRequested,
                ..
            })
        ));
    }

    #[test]
    fn idle_and_lifetime_limits() {
        let p = policy();
        let s0 = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Starting);
        let c = running_container(&s0, t(1000));
        let addr = upstream_of(&c).unwrap();
        let mut s = s0.clone();
        s.status = Some(status_running(&s0, &c, addr, t(1000)));
        s.spec.idle_timeout = Some("30s".into());
        s.spec.max_lifetime = Some("1h".into());
        let w = World {
            container: Some(c),
            ..Default::default()
        };
        // Idle deadline first: wake up at it.
        assert_eq!(
            decide(&s, &w, &p, t(1010)),
            Step::Wait(Some(Duration::from_secs(20)))
        );
        assert!(matches!(
            decide(&s, &w, &p, t(1030)),
            Step::BeginStop(StopCause {
                reason: SessionReason::Idle,
                ..
            })
        ));
        // Activity moves the idle deadline; the lifetime still holds.
        s.status.as_mut().unwrap().last_activity_at = Some(Time(t(4000)));
        assert_eq!(
            decide(&s, &w, &p, t(4010)),
            Step::Wait(Some(Duration::from_secs(20)))
        );
        s.status.as_mut().unwrap().last_activity_at = Some(Time(t(4590)));
        assert!(matches!(
            decide(&s, &w, &p, t(4600)),
            Step::BeginStop(StopCause {
                reason: SessionReason::Expired,
                ..
            })
        ));
    }

    #[test]
    fn a_stop_records_its_snapshot_first_and_finishes_with_it() {
        let p = policy();
        let s0 = with_phase(fixtures::bound_session("s1", 1), SessionPhase::Starting);
        let mut s = s0.clone();
        s.status = Some(status_starting(&s0, "pool/mf/alice/uid-s1", t(1)));
        let c = running_container(&s, t(2));
        s.status = Some(status_running(&s, &c, upstream_of(&c).unwrap(), t(3)));

        let cause = StopCause::new(SessionReason::StopRequested, "asked");
        let mut stopping = s.clone();
        stopping.status = Some(status_stopping(&s, &cause, t(10)));
        let st = stopping.status.as_ref().unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Stopping));
        assert_eq!(st.upstream, None, "the proxy stops routing at once");
        assert_eq!(planned_snapshot(&stopping).as_deref(), Some("stop-10000"));

        let mut w = World {
            container: Some(c.clone()),
            dataset: Some(ready_dataset()),
            planned_snapshot_exists: Some(false),
            dataset_observed: true,
        };
        assert_eq!(decide(&stopping, &w, &p, t(11)), Step::StopContainer);
        w.container.as_mut().unwrap().state = ContainerState::Exited;
        assert_eq!(
            decide(&stopping, &w, &p, t(11)),
            Step::Snapshot {
                name: "stop-10000".into()
            }
        );
        w.planned_snapshot_exists = Some(true);
        assert_eq!(decide(&stopping, &w, &p, t(11)), Step::Finish);

        let done = status_finished(&stopping, &w, t(12));
        assert_eq!(done.phase, Some(SessionPhase::Stopped));
        assert!(done.gpus.is_empty());
        assert_eq!(done.workspace.unwrap().snapshots, vec!["stop-10000"]);
        assert!(!conditions::is_true(
            &done.conditions,
            SessionCondition::Ready
        ));

        // A death ends Failed with a death- snapshot.
        let death = StopCause::new(SessionReason::ContainerExited, "exited");
        let mut dying = s.clone();
        dying.status = Some(status_stopping(&s, &death, t(20)));
        assert_eq!(planned_snapshot(&dying).as_deref(), Some("death-20000"));
        let done = status_finished(&dying, &w, t(21));
        assert_eq!(done.phase, Some(SessionPhase::Failed));
        assert_eq!(
            done.reason.as_deref(),
            Some(SessionReason::ContainerExited.as_str())
        );

        // Stopped before any dataset existed: no snapshot is kept.
        let mut early = with_phase(fixtures::bound_session("s2", 0), SessionPhase::Starting);
        early.status = Some(status_starting(&early, "pool/mf/alice/uid-s2", t(1)));
        let mut early_stop = early.clone();
        early_stop.status = Some(status_stopping(&early, &cause, t(2)));
        let nothing = World::default();
        assert_eq!(decide(&early_stop, &nothing, &p, t(3)), Step::Finish);
        let done = status_finished(&early_stop, &nothing, t(3));
        assert!(done.workspace.unwrap().snapshots.is_empty());
    }

    #[test]
    fn over_sessions_never_run_again() {
        let p = policy();
        let s = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Stopped);
        let c = running_container(&s, t(1));
        let w = World {
            container: Some(c),
            ..Default::default()
        };
        assert_eq!(decide(&s, &w, &p, t(2)), Step::StopStray);
        assert_eq!(decide(&s, &World::default(), &p, t(2)), Step::Wait(None));
        let failed = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Failed);
        assert_eq!(
            decide(&failed, &World::default(), &p, t(2)),
            Step::Wait(None)
        );
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let s = fixtures::bound_session("s1", 0);
        let a = status_starting(&s, "d", t(1));
        let mut s2 = s.clone();
        s2.status = Some(a.clone());
        let b = status_starting(&s2, "d", t(50));
        assert_eq!(a.conditions, b.conditions);
        let unavailable = status_runtime_unavailable(
            &s2,
            SessionCondition::ContainerReady,
            SessionReason::DockerUnavailable,
            "down",
            t(60),
        )
        .unwrap();
        s2.status = Some(unavailable);
        assert!(
            status_runtime_unavailable(
                &s2,
                SessionCondition::ContainerReady,
                SessionReason::DockerUnavailable,
                "down",
                t(70)
            )
            .is_none(),
            "nothing to write when it already says so"
        );
    }
}
