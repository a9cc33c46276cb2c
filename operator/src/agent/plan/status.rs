//! The status each step writes. Pure: from the session, what the step
//! found, and the time.

use std::net::SocketAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use medforge_crds::conditions::set_condition;
use medforge_crds::{
    Session, SessionCondition, SessionLimits, SessionPhase, SessionReason, SessionStatus,
    WorkspaceStatus,
};

use super::model::{StopCause, World, planned_snapshot};
use crate::agent::runtime::{ContainerObs, PullError, PullProgress};

/// A session's status being rewritten: the conditions set on it carry the
/// session's generation and one time.
struct Draft {
    st: SessionStatus,
    generation: Option<i64>,
    at: Time,
}

impl Draft {
    fn of(s: &Session, now: Timestamp) -> Draft {
        Draft {
            st: s.status.clone().unwrap_or_default(),
            generation: s.metadata.generation,
            at: Time(now),
        }
    }

    /// Sets one condition; whether it changed.
    fn set(
        &mut self,
        type_: SessionCondition,
        status: Option<bool>,
        reason: impl AsRef<str>,
        message: &str,
    ) -> bool {
        set_condition(
            &mut self.st.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.at.clone(),
        )
    }

    /// Sets the phase with its reason and message (`None`: cleared).
    fn phase(&mut self, phase: SessionPhase, why: Option<(SessionReason, &str)>) {
        self.st.phase = Some(phase);
        self.st.reason = why.map(|(r, _)| r.to_string());
        self.st.message = why.map(|(_, m)| m.to_string());
    }

    /// The session ended: no GPUs, no upstream, the stop time.
    fn ended(&mut self) {
        self.st.gpus.clear();
        self.st.upstream = None;
        self.st.stopped_at = Some(self.at.clone());
    }

    /// The status, as observed at the session's generation.
    fn observed(mut self) -> SessionStatus {
        self.st.observed_generation = self.generation;
        self.st
    }
}

/// `Starting`: the inputs are good; the workspace and container come next.
pub fn status_starting(
    s: &Session,
    dataset: &str,
    limits: SessionLimits,
    now: Timestamp,
) -> SessionStatus {
    let mut d = Draft::of(s, now);
    d.phase(SessionPhase::Starting, None);
    d.st.limits = Some(limits);
    // A session that waited for its image says the wait is over.
    if medforge_crds::conditions::find(&d.st.conditions, SessionCondition::ImagePulling).is_some() {
        d.set(
            SessionCondition::ImagePulling,
            Some(false),
            SessionReason::Pulled,
            "the Pack's image is on this node",
        );
    }
    d.st.workspace
        .get_or_insert_with(WorkspaceStatus::default)
        .dataset = Some(dataset.to_string());
    d.set(
        SessionCondition::WorkspaceReady,
        Some(false),
        SessionReason::Creating,
        &format!("creating dataset {dataset}"),
    );
    d.set(
        SessionCondition::ContainerReady,
        Some(false),
        SessionReason::Creating,
        "creating the container",
    );
    d.set(
        SessionCondition::Ready,
        Some(false),
        SessionReason::Starting,
        "the node agent is creating the workspace and the container",
    );
    d.observed()
}

/// `Running`: the workload answers at `upstream`.
pub fn status_running(
    s: &Session,
    c: &ContainerObs,
    upstream: SocketAddr,
    now: Timestamp,
) -> SessionStatus {
    let mut d = Draft::of(s, now);
    d.phase(SessionPhase::Running, None);
    d.st.container_id = Some(c.id.clone());
    d.st.upstream = Some(upstream.to_string());
    d.st.started_at = Some(Time(c.started_at.unwrap_or(now)));
    d.st.stopped_at = None;
    let dataset =
        d.st.workspace
            .as_ref()
            .and_then(|w| w.dataset.clone())
            .unwrap_or_default();
    d.set(
        SessionCondition::WorkspaceReady,
        Some(true),
        SessionReason::WorkspaceReady,
        &format!("dataset {dataset} is mounted at /workspace"),
    );
    d.set(
        SessionCondition::ContainerReady,
        Some(true),
        SessionReason::ContainerRunning,
        &format!("container {} runs", c.name),
    );
    d.set(
        SessionCondition::Ready,
        Some(true),
        SessionReason::Running,
        &format!("the workload accepts connections at {upstream}"),
    );
    d.observed()
}

/// `Ready=False` while the container runs but the workload does not answer yet.
pub fn status_waiting_for_port(s: &Session, addr: SocketAddr, now: Timestamp) -> SessionStatus {
    let mut d = Draft::of(s, now);
    d.set(
        SessionCondition::Ready,
        Some(false),
        SessionReason::WaitingForPort,
        &format!("waiting for the workload to accept connections at {addr}"),
    );
    d.st
}

/// Bytes as people read them (`12.3 MiB`).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// What a pull's progress says in a condition's message.
pub fn pull_message(image: &str, p: &PullProgress) -> String {
    if p.queued {
        format!("waiting for a free pull slot on this node to pull {image}")
    } else if p.total == 0 {
        format!("pulling {image}")
    } else {
        format!(
            "pulling {image}: {} of {} ({}%)",
            bytes(p.done),
            bytes(p.total),
            p.done.saturating_mul(100) / p.total
        )
    }
}

/// `ImagePulling=True` with the bytes done and in all, and `Ready=False`
/// (`Pulling`). `None` when the status already says exactly this.
pub fn status_image_pulling(
    s: &Session,
    image: &str,
    p: &PullProgress,
    now: Timestamp,
) -> Option<SessionStatus> {
    let mut d = Draft::of(s, now);
    let message = pull_message(image, p);
    let a = d.set(
        SessionCondition::ImagePulling,
        Some(true),
        SessionReason::Pulling,
        &message,
    );
    let b = d.set(
        SessionCondition::Ready,
        Some(false),
        SessionReason::Pulling,
        &message,
    );
    (a || b).then_some(d.st)
}

/// `ImagePulling=False` and `Ready=False` with the failure's reason and the
/// registry's words; the next attempt's time is in the message. `None`
/// when the status already says so.
pub fn status_pull_failed(
    s: &Session,
    error: &PullError,
    attempts: u32,
    retry_in: std::time::Duration,
    now: Timestamp,
) -> Option<SessionStatus> {
    let mut d = Draft::of(s, now);
    let message = format!(
        "{error} (attempt {attempts}; the node agent tries again in {}s)",
        retry_in.as_secs().max(1)
    );
    let a = d.set(
        SessionCondition::ImagePulling,
        Some(false),
        error.reason(),
        &message,
    );
    let b = d.set(
        SessionCondition::Ready,
        Some(false),
        error.reason(),
        &message,
    );
    (a || b).then_some(d.st)
}

/// `Ready=False` with `reason` while the session waits before it begins.
/// `None` when the status already says so.
pub fn status_waiting(
    s: &Session,
    reason: SessionReason,
    message: &str,
    now: Timestamp,
) -> Option<SessionStatus> {
    let mut d = Draft::of(s, now);
    d.set(SessionCondition::Ready, Some(false), reason, message)
        .then_some(d.st)
}

/// `Ready=False` (`GpuInUse`) while a GPU of the session is held by another
/// session on this node. `None` when the status already says so.
pub fn status_gpu_in_use(s: &Session, message: &str, now: Timestamp) -> Option<SessionStatus> {
    let mut d = Draft::of(s, now);
    let changed = d.set(
        SessionCondition::Ready,
        Some(false),
        SessionReason::GpuInUse,
        message,
    );
    changed.then_some(d.st)
}

/// `lastActivityAt: now`: connections to the workload were open.
pub fn status_active(s: &Session, now: Timestamp) -> SessionStatus {
    let mut st = s.status.clone().unwrap_or_default();
    st.last_activity_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
    st
}

/// `Stopping`: the cause and the snapshot to take are recorded before
/// anything is stopped, so a restarted agent finishes the same stop.
pub fn status_stopping(s: &Session, cause: &StopCause, now: Timestamp) -> SessionStatus {
    let mut d = Draft::of(s, now);
    d.phase(SessionPhase::Stopping, Some((cause.reason, &cause.message)));
    d.st.stopped_generation = d.generation;
    d.st.upstream = None;
    if let Some(ws) = d.st.workspace.as_mut()
        && ws.dataset.is_some()
    {
        ws.snapshots.push(format!(
            "{}-{}",
            StopCause::snapshot_prefix(cause.reason),
            now.as_millisecond()
        ));
    }
    d.set(
        SessionCondition::Ready,
        Some(false),
        cause.reason,
        &cause.message,
    );
    d.observed()
}

/// The end of a stop: `Stopped` or `Failed` by the recorded cause; GPUs
/// and upstream released. A planned snapshot that could not be taken (the
/// dataset never existed) is dropped from the list.
pub fn status_finished(s: &Session, w: &World, now: Timestamp) -> SessionStatus {
    let mut d = Draft::of(s, now);
    // A reason this agent did not write (or none) ends the session as a stop.
    let why =
        d.st.reason
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(SessionReason::StopRequested);
    let phase = StopCause::final_phase(why);
    if let Some(planned) = planned_snapshot(s)
        && (w.dataset.is_none() || w.planned_snapshot_exists != Some(true))
        && let Some(ws) = d.st.workspace.as_mut()
    {
        ws.snapshots.retain(|n| *n != planned);
    }
    d.st.phase = Some(phase);
    d.ended();
    let message = d.st.message.clone().unwrap_or_default();
    let (c_reason, c_message) = if phase == SessionPhase::Failed {
        (why, message.as_str())
    } else {
        (SessionReason::ContainerStopped, "the container is stopped")
    };
    d.set(
        SessionCondition::ContainerReady,
        Some(false),
        c_reason,
        c_message,
    );
    d.set(SessionCondition::Ready, Some(false), why, &message);
    d.observed()
}

/// `Failed` at once, with nothing running (bad input, a refused create).
pub fn status_failed(
    s: &Session,
    why: SessionReason,
    message: &str,
    now: Timestamp,
) -> SessionStatus {
    let mut d = Draft::of(s, now);
    d.phase(SessionPhase::Failed, Some((why, message)));
    d.st.stopped_generation = d.generation;
    d.ended();
    let failed_condition = match why {
        SessionReason::WorkspaceFailed
        | SessionReason::SnapshotNotFound
        | SessionReason::WorkspaceMissing => SessionCondition::WorkspaceReady,
        _ => SessionCondition::ContainerReady,
    };
    d.set(failed_condition, Some(false), why, message);
    d.set(SessionCondition::Ready, Some(false), why, message);
    d.observed()
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
    let mut d = Draft::of(s, now);
    let changed = d.set(condition, None, why, message);
    changed.then_some(d.st)
}
