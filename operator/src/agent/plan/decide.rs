//! The next step for a session, from what was observed and the time.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use medforge_crds::conditions;
use medforge_crds::{DesiredState, Session, SessionCondition, SessionPhase, SessionReason};

use super::model::{Policy, Step, StopCause, World, planned_snapshot, ran_before};
use crate::agent::runtime::{ContainerObs, ContainerState};

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

/// The idle timeout and maximum lifetime in effect ([`Session::time_limits`]).
pub fn time_limits(s: &Session) -> (Option<&str>, Option<&str>) {
    s.time_limits()
}

/// When the session must stop for idleness or age, and why
/// ([`Session::expiry`], from the activity in its status).
pub fn deadline(s: &Session) -> Option<(Timestamp, SessionReason)> {
    s.expiry(None)
}

/// When the agent looks at the connections open to the workload before an
/// idle stop due `at`: `lead` before it, at most half the idle timeout.
pub fn activity_probe_at(s: &Session, at: Timestamp, lead: Duration) -> Timestamp {
    let idle = time_limits(s)
        .0
        .and_then(|d| medforge_crds::quantity::parse_duration(d).ok())
        .unwrap_or_default();
    let lead = k8s_openapi::jiff::SignedDuration::try_from(lead.min(idle / 2)).unwrap_or_default();
    at.checked_sub(lead).unwrap_or(at)
}

/// Whether a running session's idle stop is near enough to look at the
/// connections open to its workload.
pub fn probes_activity(s: &Session, lead: Duration, now: Timestamp) -> bool {
    matches!(deadline(s), Some((at, SessionReason::Idle)) if activity_probe_at(s, at, lead) <= now)
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
            if !wants_run {
                return stop_requested();
            }
            // Nothing of this run is made before `Begin`: a container of the
            // session here is from an earlier run (it is being resumed).
            if let Some(c) = container
                && c.session_uid() == s.metadata.uid.as_deref()
            {
                return if is_live(c) {
                    Step::StopStray
                } else {
                    Step::RemoveContainer
                };
            }
            if ran_before(s) && w.dataset_observed && w.dataset.is_none() {
                let dataset = s
                    .status
                    .as_ref()
                    .and_then(|st| st.workspace.as_ref()?.dataset.clone())
                    .unwrap_or_default();
                return Step::Fail {
                    reason: SessionReason::WorkspaceMissing,
                    message: format!(
                        "the session's workspace {dataset} is gone from this node; it cannot resume \
                         (restore one of its snapshots into a new session instead)"
                    ),
                };
            }
            Step::Begin
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
            // An open connection (a websocket through the proxy) is
            // activity: recorded once a second at most, before the owner
            // is warned of an idle stop.
            let recorded_this_second = s
                .status
                .as_ref()
                .and_then(|st| st.last_activity_at.as_ref())
                .is_some_and(|t| t.0.as_second() >= now.as_second());
            if probes_activity(s, p.activity_lead, now)
                && w.open_connections.unwrap_or(0) > 0
                && !recorded_this_second
            {
                return Step::TouchActivity;
            }
            if let Some((at, why)) = next
                && at <= now
            {
                let (idle_timeout, max_lifetime) = time_limits(s);
                let message = if why == SessionReason::Idle {
                    format!("no activity for {}", idle_timeout.unwrap_or("?"))
                } else {
                    format!(
                        "ran for its maximum lifetime of {}",
                        max_lifetime.unwrap_or("?")
                    )
                };
                return Step::BeginStop(StopCause::new(why, message));
            }
            match upstream_of(c) {
                Some(addr) if running_status_is_current(s, c, addr) => {
                    // Before an idle stop, wake first to look at the connections.
                    let wake = next.map(|(at, why)| {
                        let probe = activity_probe_at(s, at, p.activity_lead);
                        if why == SessionReason::Idle && probe > now {
                            probe
                        } else {
                            at
                        }
                    });
                    let wait = wake
                        .map(|at| until(now, at).min(p.resync))
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
