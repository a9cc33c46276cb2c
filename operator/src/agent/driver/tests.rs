use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use medforge_crds::conditions;
use medforge_crds::keys::WORKSPACE_ON_DELETE_ANNOTATION;
use medforge_crds::{
    DesiredState, Session, SessionCondition, SessionPhase, SessionReason, SessionStatus,
    WorkspaceSpec,
};

use super::drive;
use crate::agent::cleanup::cleanup;
use crate::agent::config::AgentConfig;
use crate::agent::context::Context;
use crate::agent::error::{Error, cause_chain};
use crate::agent::metrics::Metrics;
use crate::agent::plan::StepKind;
use crate::agent::runtime::{ContainerError, Refusal, WorkspaceError};
use crate::agent::testing::{self as fixtures, FakeCluster, FakeContainers, FakeWorkspaces, IMAGE};

type Ctx = Context<FakeContainers, FakeWorkspaces, FakeCluster>;

fn ctx_with(
    config: AgentConfig,
    docker: &FakeContainers,
    zfs: &FakeWorkspaces,
    cluster: &FakeCluster,
) -> Ctx {
    Context::new(
        config,
        docker.clone(),
        zfs.clone(),
        cluster.clone(),
        Arc::new(Metrics::default()),
        None,
    )
}

struct World {
    docker: FakeContainers,
    zfs: FakeWorkspaces,
    cluster: FakeCluster,
}

impl World {
    fn new() -> World {
        World {
            docker: FakeContainers::with_image(IMAGE),
            zfs: FakeWorkspaces::default(),
            cluster: FakeCluster::with_pack(fixtures::pack("default")),
        }
    }
    fn ctx(&self) -> Ctx {
        ctx_with(fixtures::config(), &self.docker, &self.zfs, &self.cluster)
    }
    async fn drive(&self, name: &str) -> Result<Action, Error> {
        drive(&self.ctx(), self.cluster.session(name)).await
    }
    fn phase(&self, name: &str) -> SessionPhase {
        self.cluster.session(name).phase()
    }
    /// Stores the session, drives it, and returns its status.
    async fn settle(&self, s: Session) -> SessionStatus {
        let name = s.name_any();
        self.cluster.put(s);
        self.drive(&name).await.unwrap();
        self.cluster.session(&name).status.unwrap()
    }
}

/// Session `s1` with this workspace.
fn with_workspace(quota: Option<&str>, restore_from: Option<&str>) -> Session {
    let mut s = fixtures::bound_session("s1", 0);
    s.spec.workspace = Some(WorkspaceSpec {
        quota: quota.map(Into::into),
        restore_from: restore_from.map(Into::into),
    });
    s
}

#[tokio::test]
async fn a_bound_session_runs_and_stops() {
    let w = World::new();
    w.cluster.put(fixtures::bound_session("s1", 2));
    w.drive("s1").await.unwrap();
    let s = w.cluster.session("s1");
    let st = s.status.clone().unwrap();
    assert_eq!(s.phase(), SessionPhase::Running);
    assert!(conditions::is_true(&st.conditions, SessionCondition::Ready));
    assert!(conditions::is_true(
        &st.conditions,
        SessionCondition::WorkspaceReady
    ));
    assert_eq!(st.upstream.as_deref(), Some("10.0.0.3:8080"));
    assert_eq!(st.gpus.len(), 2);
    let dataset = "pool/mf/alice/uid-s1";
    assert_eq!(w.zfs.datasets(), vec![dataset]);
    assert_eq!(
        w.zfs
            .property(dataset, medforge_crds::keys::dataset::SESSION_UID)
            .as_deref(),
        Some("uid-s1")
    );
    let containers = w.docker.of_session("uid-s1");
    assert_eq!(containers.len(), 1);
    let spec = w.docker.spec_of(&containers[0].id).unwrap();
    assert_eq!(
        spec.workspace,
        std::path::Path::new("/fake/pool/mf/alice/uid-s1")
    );
    // Starting, Running: two writes for a start.
    assert_eq!(w.cluster.status_writes(), 2);

    // A second reconcile of a running session changes nothing.
    let action = w.drive("s1").await.unwrap();
    assert_eq!(action, Action::requeue(fixtures::config().resync));
    assert_eq!(w.cluster.status_writes(), 2);

    let mut s = w.cluster.session("s1");
    s.spec.state = DesiredState::Stopped;
    w.cluster.put(s);
    w.drive("s1").await.unwrap();
    let s = w.cluster.session("s1");
    let st = s.status.clone().unwrap();
    assert_eq!(s.phase(), SessionPhase::Stopped);
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::StopRequested.as_str())
    );
    assert!(st.gpus.is_empty() && st.upstream.is_none() && st.stopped_at.is_some());
    let snap = st.workspace.unwrap().snapshots[0].clone();
    assert!(snap.starts_with("stop-"), "{snap}");
    assert_eq!(w.zfs.snapshots(), vec![format!("{dataset}@{snap}")]);
    assert_eq!(
        w.docker.of_session("uid-s1")[0].state,
        crate::agent::runtime::ContainerState::Exited
    );
}

/// Stops the driver before `at` (the first time it comes), as if the
/// agent died there, then runs a fresh one to the end.
async fn interrupted_at(w: &World, name: &str, at: StepKind) -> bool {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut config = fixtures::config();
    config.step_hook = Some(Arc::new(move |_s: &Session, kind: StepKind| {
        if kind == at {
            let _ = tx.send(());
            futures::future::pending::<()>().boxed()
        } else {
            async {}.boxed()
        }
    }));
    let ctx = ctx_with(config, &w.docker, &w.zfs, &w.cluster);
    let hit = tokio::select! {
        r = drive(&ctx, w.cluster.session(name)) => { r.unwrap(); false }
        _ = rx.recv() => true,
    };
    // A new agent, without the hook.
    for _ in 0..3 {
        w.drive(name).await.unwrap();
    }
    hit
}

#[tokio::test]
async fn an_agent_killed_at_any_step_converges_with_one_of_everything() {
    let start_steps = StepKind::START;
    for at in start_steps {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("s1", 1));
        assert!(
            interrupted_at(&w, "s1", at).await,
            "{at:?} was never reached"
        );
        assert_eq!(w.phase("s1"), SessionPhase::Running, "{at:?}");
        assert_eq!(w.docker.of_session("uid-s1").len(), 1, "{at:?}");
        assert_eq!(
            w.docker.counts(),
            (1, 1),
            "{at:?}: created and started once"
        );
        assert_eq!(w.zfs.datasets().len(), 1, "{at:?}");
    }
    for at in StepKind::STOP {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("s1", 1));
        w.drive("s1").await.unwrap();
        let mut s = w.cluster.session("s1");
        s.spec.state = DesiredState::Stopped;
        w.cluster.put(s);
        assert!(
            interrupted_at(&w, "s1", at).await,
            "{at:?} was never reached"
        );
        let s = w.cluster.session("s1");
        assert_eq!(s.phase(), SessionPhase::Stopped, "{at:?}");
        let snaps = s.status.unwrap().workspace.unwrap().snapshots;
        assert_eq!(snaps.len(), 1, "{at:?}: one snapshot recorded");
        assert_eq!(w.zfs.snapshots().len(), 1, "{at:?}: the same one taken");
        assert!(w.zfs.snapshots()[0].ends_with(&snaps[0]), "{at:?}");
    }
}

#[tokio::test]
async fn a_dead_or_missing_container_fails_the_session_with_a_death_snapshot() {
    for missing in [false, true] {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("s1", 1));
        w.drive("s1").await.unwrap();
        let id = w.docker.of_session("uid-s1")[0].id.clone();
        if missing {
            w.docker.delete(&id);
        } else {
            w.docker.kill(&id, 137);
        }
        w.drive("s1").await.unwrap();
        let s = w.cluster.session("s1");
        let st = s.status.clone().unwrap();
        assert_eq!(s.phase(), SessionPhase::Failed);
        let want = if missing {
            SessionReason::ContainerMissing
        } else {
            SessionReason::ContainerExited
        };
        assert_eq!(st.reason.as_deref(), Some(want.as_str()));
        if !missing {
            assert!(st.message.unwrap().contains("code 137"));
        }
        assert!(st.gpus.is_empty());
        let snaps = w.zfs.snapshots();
        assert_eq!(snaps.len(), 1);
        assert!(snaps[0].contains("@death-"), "{snaps:?}");
        // Failed is final: the container is never started again.
        w.drive("s1").await.unwrap();
        assert_eq!(w.docker.counts().1, 1);
    }
}

#[tokio::test]
async fn bad_input_fails_with_its_cause_and_makes_nothing() {
    // No such pack.
    let w = World::new();
    let mut s = fixtures::bound_session("s1", 0);
    s.spec.pack = "nope".into();
    let st = w.settle(s).await;
    assert_eq!(st.phase, Some(SessionPhase::Failed));
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::PackNotFound.as_str())
    );
    assert!(st.message.unwrap().contains("\"nope\""));

    // An image that is not on the node.
    let w = World {
        docker: FakeContainers::default(),
        ..World::new()
    };
    let st = w.settle(fixtures::bound_session("s1", 0)).await;
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::ImageNotPresent.as_str())
    );
    assert!(st.message.unwrap().contains(IMAGE));
    assert!(w.zfs.datasets().is_empty(), "nothing made");

    // A restore record that does not exist; one whose ZFS snapshot is gone.
    let w = World::new();
    let st = w.settle(with_workspace(None, Some("old-stop-1"))).await;
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::SnapshotNotFound.as_str())
    );
    assert!(
        st.message
            .unwrap()
            .contains("\"old-stop-1\" does not exist")
    );
    assert!(w.zfs.datasets().is_empty());
    let w = World::new();
    w.cluster.put_snapshot(old_record());
    let st = w.settle(with_workspace(None, Some("old-stop-1"))).await;
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::SnapshotNotFound.as_str())
    );
    assert!(
        st.message
            .unwrap()
            .contains("pool/mf/alice/old@stop-1 is gone")
    );
    assert!(w.zfs.datasets().is_empty());

    // A quota ZFS refuses.
    let w = World::new();
    let st = w.settle(with_workspace(Some("1Ki"), None)).await;
    assert_eq!(
        st.reason.as_deref(),
        Some(SessionReason::WorkspaceFailed.as_str())
    );
    assert!(st.message.unwrap().contains("out of space"));
    assert!(w.zfs.datasets().is_empty());
    assert!(w.docker.of_session("uid-s1").is_empty());
}

/// The record of `pool/mf/alice/old@stop-1`, alice's, on this node.
fn old_record() -> medforge_crds::WorkspaceSnapshot {
    let config = fixtures::config();
    let of = crate::agent::plan::SnapshotOf {
        namespace: "ns".into(),
        session: "old".into(),
        uid: "old".into(),
        owner: "alice".into(),
        retention: None,
    };
    crate::agent::plan::snapshot_record(
        &of,
        "pool/mf/alice/old",
        "stop-1",
        &config.node_name,
        None,
        Timestamp::now(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_restore_clones_the_snapshot() {
    let w = World::new();
    w.zfs.add_snapshot("pool/mf/alice/old@stop-1");
    w.cluster.put_snapshot(old_record());
    w.settle(with_workspace(Some("1Gi"), Some("old-stop-1")))
        .await;
    assert_eq!(w.phase("s1"), SessionPhase::Running);
    assert_eq!(
        w.zfs.property("pool/mf/alice/uid-s1", "origin").as_deref(),
        Some("pool/mf/alice/old@stop-1")
    );
    assert_eq!(
        w.zfs.property("pool/mf/alice/uid-s1", "quota").as_deref(),
        Some("1073741824")
    );
}

#[tokio::test]
async fn docker_down_shows_as_a_condition_and_an_error() {
    let w = World::new();
    w.cluster.put(fixtures::bound_session("s1", 0));
    w.drive("s1").await.unwrap();
    w.docker.set_down(true);
    let err = w.drive("s1").await.unwrap_err();
    assert_eq!(err.category(), SessionReason::DockerUnavailable);
    let s = w.cluster.session("s1");
    let c = s.condition(SessionCondition::ContainerReady).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("Unknown", SessionReason::DockerUnavailable.as_str())
    );
    assert_eq!(
        s.phase(),
        SessionPhase::Running,
        "a Docker outage is not a death"
    );
    // Back up: the condition is corrected.
    w.docker.set_down(false);
    w.drive("s1").await.unwrap();
    let s = w.cluster.session("s1");
    assert!(conditions::is_true(
        &s.status.unwrap().conditions,
        SessionCondition::ContainerReady
    ));

    w.zfs.set_down(true);
    let w2 = World {
        docker: w.docker.clone(),
        zfs: w.zfs.clone(),
        cluster: w.cluster.clone(),
    };
    w2.cluster.put(fixtures::bound_session("s2", 0));
    let err = w2.drive("s2").await.unwrap_err();
    assert_eq!(err.category(), SessionReason::ZfsUnavailable);
}

#[tokio::test]
async fn cleanup_removes_the_container_and_follows_the_dataset_policy() {
    use crate::agent::plan::WorkspaceOnDelete::{Destroy, Keep, Snapshot};
    use medforge_crds::SnapshotReason;
    // (policy, annotation, what becomes of the dataset)
    for (policy, annotation, outcome) in [
        (Snapshot, None, "retired"),
        (Keep, None, "kept"),
        (Destroy, None, "destroyed"),
        (Keep, Some("destroy"), "destroyed"),
        (Destroy, Some("keep"), "kept"),
        (Keep, Some("snapshot"), "retired"),
    ] {
        let w = World::new();
        let mut s = fixtures::bound_session("s1", 0);
        if let Some(a) = annotation {
            s.metadata.annotations = Some(std::collections::BTreeMap::from([(
                WORKSPACE_ON_DELETE_ANNOTATION.to_string(),
                a.to_string(),
            )]));
        }
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        let mut config = fixtures::config();
        config.workspace_on_delete = policy;
        let ctx = ctx_with(config, &w.docker, &w.zfs, &w.cluster);
        let mut s = w.cluster.session("s1");
        s.metadata.deletion_timestamp = Some(Time(Timestamp::from_second(1_800_000_000).unwrap()));
        // An earlier stop left a snapshot and its record.
        let dataset = w.zfs.datasets()[0].clone();
        let stop = format!("{dataset}@stop-1700000000000");
        w.zfs.add_snapshot(&stop);
        let of = crate::agent::plan::SnapshotOf::session(&s);
        w.cluster.put_snapshot(
            crate::agent::plan::snapshot_record(
                &of,
                &dataset,
                "stop-1700000000000",
                "n1",
                None,
                Timestamp::now(),
            )
            .unwrap(),
        );
        // Twice: the second finds everything done (or gone) and is fine.
        for _ in 0..2 {
            cleanup(&ctx, &s).await.unwrap();
        }
        assert!(w.docker.of_session("uid-s1").is_empty());
        let what = format!("{policy:?} {annotation:?}");
        let records = w.cluster.snapshot_records();
        match outcome {
            "destroyed" => {
                assert!(w.zfs.datasets().is_empty(), "{what}");
                assert!(w.zfs.snapshots().is_empty(), "{what}");
                assert!(records.is_empty(), "{what}: records go with it");
            }
            "kept" => {
                assert_eq!(w.zfs.datasets(), std::slice::from_ref(&dataset), "{what}");
                assert_eq!(w.zfs.snapshots(), std::slice::from_ref(&stop), "{what}");
                assert_eq!(records.len(), 1, "{what}");
            }
            _ => {
                // One BeforeDelete snapshot, named after the deletion, with
                // its record; the dataset unmounted and marked retired.
                let predelete = format!("{dataset}@predelete-1800000000000");
                assert_eq!(
                    w.zfs.snapshots(),
                    [predelete.clone(), stop.clone()],
                    "{what}"
                );
                let reasons: Vec<SnapshotReason> = records.iter().map(|r| r.spec.reason).collect();
                assert_eq!(
                    reasons,
                    [SnapshotReason::BeforeDelete, SnapshotReason::Stop],
                    "{what}"
                );
                assert_eq!(records[0].spec.snapshot, predelete);
                assert_eq!(
                    w.zfs
                        .property(&dataset, medforge_crds::keys::dataset::RETIRED)
                        .as_deref(),
                    Some("1800000000000"),
                    "{what}"
                );
                let obs = crate::agent::runtime::Workspaces::inspect(&w.zfs, &dataset)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(!obs.mounted, "{what}");
            }
        }
    }
}

#[tokio::test]
async fn a_gpu_bound_twice_is_never_started_twice() {
    let w = World::new();
    w.cluster.put(fixtures::bound_session("first", 1));
    w.cluster.put(fixtures::bound_session("second", 1)); // the same GPU-0
    let cluster = w.cluster.clone();
    let ctx = w.ctx().with_peers(Arc::new(move || {
        ["first", "second"]
            .iter()
            .map(|n| Arc::new(cluster.session(n)))
            .collect()
    }));
    drive(&ctx, w.cluster.session("first")).await.unwrap();
    assert_eq!(w.phase("first"), SessionPhase::Running);
    let action = drive(&ctx, w.cluster.session("second")).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    let second = w.cluster.session("second");
    assert_eq!(second.phase(), SessionPhase::Scheduled);
    assert_eq!(
        second.condition(SessionCondition::Ready).unwrap().reason,
        SessionReason::GpuInUse
    );
    assert!(w.docker.of_session("uid-second").is_empty());

    // Once the first is stopped, the GPU is free.
    let mut first = w.cluster.session("first");
    first.spec.state = DesiredState::Stopped;
    w.cluster.put(first);
    drive(&ctx, w.cluster.session("first")).await.unwrap();
    drive(&ctx, w.cluster.session("second")).await.unwrap();
    assert_eq!(w.phase("second"), SessionPhase::Running);
}

#[test]
fn errors_name_their_category_and_whole_cause() {
    let e = Error::Container(ContainerError::Unavailable {
        cause: "connection refused".into(),
    });
    assert_eq!(e.category(), SessionReason::DockerUnavailable);
    assert!(cause_chain(&e).contains("connection refused"));
    let long = Error::Workspace(WorkspaceError::Refused {
        command: "zfs".into(),
        stderr: "é".repeat(2000),
        why: Refusal::Other,
    });
    let chain = cause_chain(&long);
    assert!(chain.len() <= 1024 && chain.ends_with("..."));
}

#[tokio::test]
async fn a_missing_image_is_pulled_with_progress_and_a_failed_pull_recovers_by_itself() {
    let image = format!("127.0.0.1:5000/workload@sha256:{}", "b".repeat(64));
    let mut pack = fixtures::pack("default");
    pack.spec.image = image.clone();
    let w = World {
        docker: FakeContainers::default(),
        cluster: FakeCluster::with_pack(pack),
        ..World::new()
    };
    let mut config = fixtures::config();
    config.pulls.backoff_min = Duration::from_millis(50);
    config.pulls.backoff_max = Duration::from_millis(50);
    let ctx = ctx_with(config, &w.docker, &w.zfs, &w.cluster);
    let ready = |s: &Session| {
        conditions::find(
            &s.status.clone().unwrap_or_default().conditions,
            SessionCondition::Ready,
        )
        .map(|c| c.reason.clone())
    };
    w.cluster.put(fixtures::bound_session("s1", 0));
    // The registry does not have it yet: the session says so and waits;
    // nothing is made, and it does not fail.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        drive(&ctx, w.cluster.session("s1")).await.unwrap();
        let s = w.cluster.session("s1");
        if ready(&s).as_deref() == Some(SessionReason::ImageNotFound.as_str()) {
            let st = s.status.unwrap();
            let pulling = conditions::find(&st.conditions, SessionCondition::ImagePulling).unwrap();
            assert_eq!(pulling.status, "False");
            assert!(
                pulling.message.contains("manifest unknown"),
                "{}",
                pulling.message
            );
            assert_ne!(st.phase, Some(SessionPhase::Failed));
            assert!(w.zfs.datasets().is_empty(), "nothing made before the image");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never said ImageNotFound: {:?}",
            s.status
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Once the registry serves it, a later attempt pulls it and the session
    // runs, without a new create.
    w.docker.publish(&image);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while w.phase("s1") != SessionPhase::Running {
        assert!(
            std::time::Instant::now() < deadline,
            "never ran: {:?}",
            w.cluster.session("s1").status
        );
        drive(&ctx, w.cluster.session("s1")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let st = w.cluster.session("s1").status.unwrap();
    let pulling = conditions::find(&st.conditions, SessionCondition::ImagePulling).unwrap();
    assert_eq!(
        (pulling.status.as_str(), pulling.reason.as_str()),
        ("False", "Pulled")
    );
    // A second session of the same Pack finds the image: no pull.
    let pulls = w.docker.pulls();
    w.cluster.put(fixtures::bound_session("s2", 0));
    drive(&ctx, w.cluster.session("s2")).await.unwrap();
    assert_eq!(w.docker.pulls(), pulls);
    assert!(
        conditions::find(
            &w.cluster.session("s2").status.unwrap().conditions,
            SessionCondition::ImagePulling
        )
        .is_none()
    );
}
