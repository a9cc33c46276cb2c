use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use medforge_crds::conditions;
use medforge_crds::{DesiredState, Session, SessionCondition, SessionPhase, SessionReason};

use super::*;
use crate::agent::runtime::{ContainerState, DatasetObs};
use crate::agent::testing::{self as fixtures, running_container};

fn policy() -> Policy {
    Policy {
        container_owner: (1000, 1000),
        start_timeout: Duration::from_secs(60),
        resync: Duration::from_secs(300),
        probe_interval: Duration::from_millis(100),
        activity_lead: Duration::from_secs(900),
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

/// A running session whose container started at `t(at)`, the world that
/// sees its container, and its address.
fn running(at: i64) -> (Session, World, SocketAddr) {
    let s0 = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Starting);
    let c = running_container(&s0, t(at));
    let addr = upstream_of(&c).unwrap();
    let mut s = s0.clone();
    s.status = Some(status_running(&s0, &c, addr, t(at)));
    let w = World {
        container: Some(c),
        ..Default::default()
    };
    (s, w, addr)
}

/// Why `step` winds the session down; panics when it is not a `BeginStop`.
#[track_caller]
fn stop_reason(step: Step) -> SessionReason {
    match step {
        Step::BeginStop(cause) => cause.reason,
        other => panic!("expected BeginStop, got {other:?}"),
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
    assert_eq!(
        stop_reason(decide(&s, &w, &p, t(200))),
        SessionReason::StartTimeout
    );
}

#[test]
fn a_container_of_another_session_is_never_adopted() {
    let p = policy();
    let s = with_phase(fixtures::bound_session("s1", 0), SessionPhase::Starting);
    let mut c = running_container(&s, t(1));
    c.labels.insert(
        crate::agent::runtime::labels::SESSION_UID.into(),
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
    let (s, w, addr) = running(100);
    let c = w.container.clone().unwrap();
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
    assert_eq!(
        stop_reason(decide(&s, &World::default(), &p, t(103))),
        SessionReason::ContainerMissing
    );

    // The owner stops it.
    let mut stop = s.clone();
    stop.spec.state = DesiredState::Stopped;
    assert_eq!(
        stop_reason(decide(&stop, &w, &p, t(103))),
        SessionReason::StopRequested
    );
}

#[test]
fn idle_and_lifetime_limits() {
    let p = policy();
    let (mut s, w, _) = running(1000);
    s.spec.idle_timeout = Some("30s".into());
    s.spec.max_lifetime = Some("1h".into());
    // Idle deadline first (1030): wake half the idle timeout before it to
    // look at the connections, then at it.
    assert_eq!(
        decide(&s, &w, &p, t(1010)),
        Step::Wait(Some(Duration::from_secs(5)))
    );
    let mut looked = w.clone();
    looked.open_connections = Some(0);
    assert_eq!(
        decide(&s, &looked, &p, t(1016)),
        Step::Wait(Some(Duration::from_secs(14)))
    );
    assert_eq!(
        stop_reason(decide(&s, &looked, &p, t(1030))),
        SessionReason::Idle
    );
    // An open connection (a websocket) is activity, up to the deadline itself.
    let mut connected = w.clone();
    connected.open_connections = Some(1);
    assert_eq!(decide(&s, &connected, &p, t(1016)), Step::TouchActivity);
    assert_eq!(decide(&s, &connected, &p, t(1030)), Step::TouchActivity);
    let mut touched = s.clone();
    touched.status = Some(status_active(&s, t(1030)));
    assert_eq!(
        decide(&touched, &connected, &p, t(1030)),
        Step::Wait(Some(Duration::from_secs(15))),
        "once: the next look is half an idle timeout later"
    );
    // Activity moves the idle deadline; the lifetime still holds.
    s.status.as_mut().unwrap().last_activity_at = Some(Time(t(4000)));
    assert_eq!(
        decide(&s, &w, &p, t(4010)),
        Step::Wait(Some(Duration::from_secs(5)))
    );
    // Open connections never keep a session past its lifetime.
    s.status.as_mut().unwrap().last_activity_at = Some(Time(t(4590)));
    assert_eq!(
        stop_reason(decide(&s, &connected, &p, t(4600))),
        SessionReason::Expired
    );
    s.status.as_mut().unwrap().last_activity_at = Some(Time(t(4590)));
    assert_eq!(
        stop_reason(decide(&s, &w, &p, t(4600))),
        SessionReason::Expired
    );

    // What the agent recorded at start (the policy's defaults for a spec
    // that set none) is what counts, not the spec.
    let (mut s, w, _) = running(1000);
    s.spec.idle_timeout = None;
    s.spec.max_lifetime = None;
    assert_eq!(decide(&s, &w, &p, t(100_000)), Step::Wait(Some(p.resync)));
    let mut limits = fixtures::limits();
    limits.idle_timeout = "30s".into();
    s.status.as_mut().unwrap().limits = Some(limits);
    let Step::BeginStop(cause) = decide(&s, &w, &p, t(1030)) else {
        panic!("the recorded idle timeout stops it");
    };
    assert_eq!(cause.reason, SessionReason::Idle);
    assert_eq!(cause.message, "no activity for 30s");
}

#[test]
fn a_stop_records_its_snapshot_first_and_finishes_with_it() {
    let p = policy();
    let s0 = with_phase(fixtures::bound_session("s1", 1), SessionPhase::Starting);
    let mut s = s0.clone();
    s.status = Some(status_starting(
        &s0,
        "pool/mf/alice/uid-s1",
        fixtures::limits(),
        t(1),
    ));
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
        open_connections: None,
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
    early.status = Some(status_starting(
        &early,
        "pool/mf/alice/uid-s2",
        fixtures::limits(),
        t(1),
    ));
    let mut early_stop = early.clone();
    early_stop.status = Some(status_stopping(&early, &cause, t(2)));
    let nothing = World::default();
    assert_eq!(decide(&early_stop, &nothing, &p, t(3)), Step::Finish);
    let done = status_finished(&early_stop, &nothing, t(3));
    assert!(done.workspace.unwrap().snapshots.is_empty());
}

/// A session that ran, stopped (at generation 1) and was bound again by the
/// scheduler: phase `Scheduled`, its old container and dataset still there.
fn resumed() -> (Session, World) {
    let (ran, w, _) = running(10);
    let cause = StopCause::new(SessionReason::StopRequested, "stop");
    let mut s = ran.clone();
    s.status.as_mut().unwrap().workspace = Some(medforge_crds::WorkspaceStatus {
        dataset: Some("pool/mf/alice/uid-s1".into()),
        snapshots: vec![],
    });
    let stopping = status_stopping(&s, &cause, t(20));
    assert_eq!(stopping.stopped_generation, Some(1));
    s.status = Some(stopping);
    let mut done = s.clone();
    done.status = Some(status_finished(&s, &World::default(), t(21)));
    assert_eq!(done.status.as_ref().unwrap().stopped_generation, Some(1));
    let mut s = with_phase(done, SessionPhase::Scheduled);
    s.metadata.generation = Some(2);
    let mut old = w.container.unwrap();
    old.state = ContainerState::Exited;
    let w = World {
        container: Some(old),
        dataset: Some(ready_dataset()),
        dataset_observed: true,
        ..Default::default()
    };
    (s, w)
}

#[test]
fn a_resumed_session_replaces_its_old_container_and_keeps_its_workspace() {
    let p = policy();
    let (s, w) = resumed();
    // The old run's container goes first (stopped first if it still runs).
    assert_eq!(decide(&s, &w, &p, t(30)), Step::RemoveContainer);
    let mut live = w.clone();
    live.container.as_mut().unwrap().state = ContainerState::Running;
    assert_eq!(decide(&s, &live, &p, t(30)), Step::StopStray);
    // A container under the name that belongs to another session is not
    // ours to remove: Begin, and the start reports the conflict.
    let mut foreign = w.clone();
    foreign.container.as_mut().unwrap().labels.insert(
        crate::agent::runtime::labels::SESSION_UID.into(),
        "other".into(),
    );
    assert_eq!(decide(&s, &foreign, &p, t(30)), Step::Begin);
    // Then Begin, on the dataset that is there.
    let clean = World {
        container: None,
        ..w.clone()
    };
    assert_eq!(decide(&s, &clean, &p, t(30)), Step::Begin);
    // A dataset that is gone is never replaced by an empty one.
    let gone = World {
        container: None,
        dataset: None,
        dataset_observed: true,
        ..Default::default()
    };
    match decide(&s, &gone, &p, t(30)) {
        Step::Fail {
            reason: SessionReason::WorkspaceMissing,
            message,
        } => assert!(message.contains("pool/mf/alice/uid-s1"), "{message}"),
        other => panic!("{other:?}"),
    }
    // A first start (never ran) creates its dataset as usual.
    let first = fixtures::bound_session("s1", 0);
    assert_eq!(decide(&first, &gone, &p, t(30)), Step::Begin);
    // The failure records the generation it happened at.
    let failed = status_failed(&s, SessionReason::WorkspaceMissing, "gone", t(31));
    assert_eq!(failed.stopped_generation, Some(2));
    assert_eq!(failed.phase, Some(SessionPhase::Failed));
}

#[test]
fn over_sessions_keep_nothing_running() {
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
    let a = status_starting(&s, "d", fixtures::limits(), t(1));
    let mut s2 = s.clone();
    s2.status = Some(a.clone());
    let b = status_starting(&s2, "d", fixtures::limits(), t(50));
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
