//! The scheduler against the embedded control plane: races, restarts,
//! limits and cordons, with real watches and optimistic concurrency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{Condition, GpuNode, NodeCondition, Session};
use medforge_operator::scheduler::controller::{SchedulerConfig, run};
use medforge_operator::scheduler::placement::Limits;
use medforge_testkit::{
    create, eventually, merge, node_condition, publish_ready_node, session_spec,
};
use tokio::task::JoinHandle;

const NS: &str = "sched-test";

async fn env() -> TestControlPlane {
    TestControlPlane::builder().namespace(NS).start().await
}

fn cfg(limits: Limits) -> SchedulerConfig {
    let mut c = SchedulerConfig::new("test-scheduler");
    c.limits = limits;
    c.heartbeat_timeout = Duration::from_secs(3600);
    c.resync = Duration::from_millis(200);
    c
}

type Seen = tokio::sync::watch::Receiver<HashMap<String, String>>;

fn observed(c: &mut SchedulerConfig) -> Seen {
    let (tx, rx) = tokio::sync::watch::channel(HashMap::new());
    c.observer = Some(Arc::new(tx));
    rx
}

/// Waits until the scheduler has made a pass with this version of the node.
async fn scheduler_saw(seen: &mut Seen, node: &GpuNode) {
    let (name, rv) = (node.name_any(), node.resource_version());
    tokio::time::timeout(
        Duration::from_secs(10),
        seen.wait_for(|m| m.get(&name) == rv.as_ref()),
    )
    .await
    .expect("the scheduler never saw the node change")
    .unwrap();
}

fn spawn_scheduler(client: &Client, c: SchedulerConfig) -> JoinHandle<()> {
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = run(client, c, std::future::pending()).await {
            panic!("scheduler stopped: {e}");
        }
    })
}

fn session(name: &str, owner: &str, gpus: u32) -> Session {
    let mut s = session_spec().owner(owner).gpus(gpus).session(name);
    s.metadata.labels = Some(BTreeMap::from([("medforge.test/round".into(), "x".into())]));
    s
}

/// Polls until every listed Session has a `Scheduled` condition and returns them.
async fn decided(api: &Api<Session>, names: &[String]) -> Vec<Session> {
    eventually("every session decided", Duration::from_secs(20), || async {
        let list = api.list(&ListParams::default()).await.unwrap().items;
        let done: Vec<Session> = list
            .into_iter()
            .filter(|s| names.contains(&s.name_any()))
            .filter(|s| scheduled_opt(s).is_some())
            .collect();
        if done.len() == names.len() {
            Ok(done)
        } else {
            Err(format!(
                "only {} of {} sessions decided",
                done.len(),
                names.len()
            ))
        }
    })
    .await
}

fn bound_gpus(sessions: &[Session]) -> Vec<String> {
    sessions
        .iter()
        .filter(|s| scheduled_opt(s).is_some_and(|c| c.status == "True"))
        .flat_map(|s| {
            s.status
                .as_ref()
                .unwrap()
                .gpus
                .iter()
                .map(|g| g.uuid.clone())
        })
        .collect()
}

fn reasons(sessions: &[Session]) -> Vec<String> {
    let mut r: Vec<String> = sessions.iter().map(scheduled_reason).collect();
    r.sort();
    r
}

async fn create_all(api: &Api<Session>, names: &[String], owner_of: impl Fn(usize) -> String) {
    let creates = names.iter().enumerate().map(|(i, n)| {
        let api = api.clone();
        let s = session(n, &owner_of(i), 1);
        async move { create(&api, &s).await }
    });
    futures::future::join_all(creates).await;
}

async fn delete_all_and_wait(api: &Api<Session>) {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .unwrap();
    eventually("sessions deleted", Duration::from_secs(10), || async {
        api.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
}

/// A control plane with two ready nodes, `node-a` with 4 GPUs and `node-b`
/// with 3 (seven in all), and the Sessions of the test namespace.
async fn seven_gpus_on_two_nodes() -> (TestControlPlane, Api<Session>) {
    let e = env().await;
    let now = Timestamp::now();
    publish_ready_node(&e.client, "node-a", 4, now).await;
    publish_ready_node(&e.client, "node-b", 3, now).await;
    let api = Api::namespaced(e.client.clone(), NS);
    (e, api)
}

/// The GPUs of the bound sessions of a round on the seven GPUs: all seven,
/// none twice.
fn all_seven_given_once(sessions: &[Session], round: u64) -> Vec<String> {
    let gpus = bound_gpus(sessions);
    assert_eq!(gpus.len(), 7, "round {round}: {:?}", reasons(sessions));
    assert_distinct(&gpus);
    gpus
}

fn assert_distinct(gpus: &[String]) {
    let set: HashSet<&String> = gpus.iter().collect();
    assert_eq!(set.len(), gpus.len(), "a GPU was given twice: {gpus:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_sessions_race_for_seven_gpus_fifty_times() {
    let (e, api) = seven_gpus_on_two_nodes().await;
    let sched = spawn_scheduler(&e.client, cfg(Limits::default()));

    for round in 0..50 {
        let names: Vec<String> = (0..8).map(|i| format!("r{round}-s{i}")).collect();
        create_all(&api, &names, |i| format!("user-{i}")).await;
        let sessions = decided(&api, &names).await;
        all_seven_given_once(&sessions, round);
        let refused: Vec<&Session> = sessions
            .iter()
            .filter(|s| scheduled(s).status == "False")
            .collect();
        assert_eq!(refused.len(), 1, "round {round}");
        assert_eq!(scheduled(refused[0]).reason, "NoGpuAvailable");
        for s in &sessions {
            let st = s.status.as_ref().unwrap();
            if st.node_name.is_some() {
                let slug = st.slug.as_deref().unwrap();
                assert_eq!(slug.len(), 8);
            }
        }
        delete_all_and_wait(&api).await;
    }
    sched.abort();
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_scheduler_mid_binding_never_gives_a_gpu_twice() {
    let (e, api) = seven_gpus_on_two_nodes().await;

    for round in 0..10u64 {
        let names: Vec<String> = (0..8).map(|i| format!("k{round}-s{i}")).collect();
        let sched = spawn_scheduler(&e.client, cfg(Limits::default()));
        create_all(&api, &names, |i| format!("user-{i}")).await;
        // Kill it at a different moment each round: before, during and after
        // choosing and writing bindings.
        tokio::time::sleep(Duration::from_millis(round * 3)).await;
        sched.abort();
        let _ = sched.await;
        let sched = spawn_scheduler(&e.client, cfg(Limits::default()));
        let sessions = decided(&api, &names).await;
        all_seven_given_once(&sessions, round);
        sched.abort();
        let _ = sched.await;
        delete_all_and_wait(&api).await;
    }
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_holds_when_creates_race() {
    let e = env().await;
    publish_ready_node(&e.client, "node-a", 8, Timestamp::now()).await;
    let sched = spawn_scheduler(&e.client, cfg(Limits::default()));
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    let names: Vec<String> = (0..4).map(|i| format!("lim-{i}")).collect();
    // Users alice and bob each create two sessions at the same instant.
    create_all(&api, &names, |i| {
        if i % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        }
    })
    .await;
    let sessions = decided(&api, &names).await;
    for user in ["alice", "bob"] {
        let mine: Vec<&Session> = sessions.iter().filter(|s| s.spec.owner == user).collect();
        let bound = mine
            .iter()
            .filter(|s| scheduled(s).status == "True")
            .count();
        assert_eq!(bound, 1, "{user} should get exactly one session");
        let refused = mine
            .iter()
            .find(|s| scheduled(s).status == "False")
            .unwrap();
        let c = scheduled(refused);
        assert_eq!(c.reason, "UserLimitReached");
        assert!(c.message.contains("limit is 1"), "{}", c.message);
        assert_eq!(
            refused.status.as_ref().unwrap().reason.as_deref(),
            Some("UserLimitReached")
        );
    }

    // Stopping alice's bound session frees her slot; the waiting one binds.
    let bound = sessions
        .iter()
        .find(|s| s.spec.owner == "alice" && scheduled(s).status == "True")
        .unwrap();
    let mut stopped = bound.clone();
    stopped.status.as_mut().unwrap().phase = Some(medforge_crds::SessionPhase::Stopped);
    api.replace_status(&bound.name_any(), &PostParams::default(), &stopped)
        .await
        .unwrap();
    let waiting = sessions
        .iter()
        .find(|s| s.spec.owner == "alice" && scheduled(s).status == "False")
        .unwrap()
        .name_any();
    poll(&api, &waiting, |s| {
        scheduled_opt(s).is_some_and(|c| c.status == "True")
    })
    .await;
    sched.abort();
    e.shutdown().await;
}

async fn poll(api: &Api<Session>, name: &str, ok: impl Fn(&Session) -> bool) -> Session {
    let what = format!("{name} to reach the wanted state");
    eventually(&what, Duration::from_secs(10), || async {
        let s = api.get(name).await.unwrap();
        if ok(&s) { Ok(s) } else { Err(s.status) }
    })
    .await
}

/// Creates a one-GPU Session of `u` and waits until the scheduler decided it.
async fn create_and_decide(api: &Api<Session>, name: &str) -> Session {
    create(api, &session(name, "u", 1)).await;
    poll(api, name, |s| scheduled_opt(s).is_some()).await
}

/// The reason of a decided Session's `Scheduled` condition.
fn scheduled_reason(s: &Session) -> String {
    scheduled(s).reason.clone()
}

/// A Session's `Scheduled` condition, if the scheduler decided it.
fn scheduled_opt(s: &Session) -> Option<&Condition> {
    s.condition(medforge_crds::SessionCondition::Scheduled)
}

/// A decided Session's `Scheduled` condition.
fn scheduled(s: &Session) -> &Condition {
    scheduled_opt(s).expect("a Scheduled condition")
}

/// Merge-patches a node and waits until the scheduler has seen the change.
async fn change_node(nodes: &Api<GpuNode>, seen: &mut Seen, name: &str, patch: serde_json::Value) {
    let n = merge(nodes, name, patch).await;
    scheduler_saw(seen, &n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordons_and_stale_heartbeats_steer_placement() {
    let e = env().await;
    let now = Timestamp::now();
    publish_ready_node(&e.client, "node-a", 2, now).await;
    publish_ready_node(&e.client, "node-b", 2, now).await;
    let mut c = cfg(Limits {
        max_sessions_per_user: 100,
        max_gpus_per_user: 100,
        allow_cpu_only: false,
    });
    c.heartbeat_timeout = Duration::from_secs(30);
    let mut seen = observed(&mut c);
    let sched = spawn_scheduler(&e.client, c);
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    let nodes: Api<GpuNode> = Api::all(e.client.clone());
    let bind = |name: &'static str| {
        let api = api.clone();
        async move {
            let st = create_and_decide(&api, name).await.status.unwrap();
            (st.node_name, st.gpus.first().map(|g| g.uuid.clone()))
        }
    };

    // Packing puts the first session on node-a, GPU 0.
    assert_eq!(
        bind("c1").await,
        (Some("node-a".into()), Some("GPU-node-a-0".into()))
    );
    for (patch, session, (node, gpu)) in [
        // Cordon GPU 1 of node-a: node-b is now the only node with a free GPU there.
        (
            serde_json::json!({"spec": {"disabledGpus": ["GPU-node-a-1"]}}),
            "c2",
            ("node-b", "GPU-node-b-0"),
        ),
        // Uncordon: GPU 1 of node-a is used again (node-a has 1 free, node-b 1: pack picks node-a by name).
        (
            serde_json::json!({"spec": {"disabledGpus": null}}),
            "c3",
            ("node-a", "GPU-node-a-1"),
        ),
    ] {
        change_node(&nodes, &mut seen, "node-a", patch).await;
        assert_eq!(bind(session).await, (Some(node.into()), Some(gpu.into())));
    }
    // Whole-node cordon of node-b: nothing fits any more.
    change_node(
        &nodes,
        &mut seen,
        "node-b",
        serde_json::json!({"spec": {"unschedulable": true}}),
    )
    .await;
    let s = create_and_decide(&api, "c4").await;
    assert_eq!(scheduled_reason(&s), "NoGpuAvailable");
    api.delete("c4", &DeleteParams::default()).await.unwrap();

    // A fresh node with a stale heartbeat gets nothing, and is marked Ready=Unknown.
    let n = publish_ready_node(
        &e.client,
        "node-stale",
        8,
        Timestamp::now() - Duration::from_secs(120),
    )
    .await;
    scheduler_saw(&mut seen, &n).await;
    let s = create_and_decide(&api, "c5").await;
    assert_eq!(scheduled_reason(&s), "NoGpuAvailable");
    let ready = eventually(
        "node-stale marked Ready=Unknown",
        Duration::from_secs(10),
        || async {
            let n = nodes.get("node-stale").await.unwrap();
            let ready = node_condition(&n, NodeCondition::Ready).unwrap();
            (ready.status == "Unknown").then_some(ready)
        },
    )
    .await;
    assert_eq!(ready.reason, "NodeStatusUnknown");
    sched.abort();
    e.shutdown().await;
}

/// A scheduler told to stop drains and hands its Lease back: the other
/// replica becomes leader at once, although the Lease is an hour long and
/// would otherwise keep it waiting for that hour; and it then binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_scheduler_hands_the_lease_over() {
    use k8s_openapi::api::coordination::v1::Lease;
    let e = env().await;
    publish_ready_node(&e.client, "node-a", 2, Timestamp::now()).await;
    let hour = |identity: &str| {
        let mut c = cfg(Limits::default());
        c.lease.identity = identity.into();
        c.lease.duration = Duration::from_secs(3600);
        c
    };
    let leases: Api<Lease> = Api::namespaced(e.client.clone(), "medforge-system");
    let holder = || async {
        leases
            .get_opt("medforge-scheduler")
            .await
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
    let client = e.client.clone();
    let a_config = hour("replica-a");
    let a = tokio::spawn(async move {
        run(client, a_config, async move {
            let _ = stopped_a.await;
        })
        .await
    });
    eventually("replica-a to lead", Duration::from_secs(60), || async {
        holder().await.as_deref() == Some("replica-a")
    })
    .await;
    let b = spawn_scheduler(&e.client, hour("replica-b"));
    stop_a.send(()).unwrap();
    a.await.unwrap().expect("replica-a stops cleanly");
    eventually(
        "replica-b to take over the released lease",
        Duration::from_secs(60),
        || async {
            match holder().await {
                Some(h) if h == "replica-b" => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    create(&api, &session("after-handover", "u", 1)).await;
    let s = poll(&api, "after-handover", |s| {
        s.status.as_ref().and_then(|st| st.node_name.as_deref()) == Some("node-a")
    })
    .await;
    assert_eq!(s.status.unwrap().gpus.len(), 1);
    b.abort();
    let _ = b.await;
    e.shutdown().await;
}

/// Writes what a node agent writes when a session stops: `Stopped`, GPUs
/// freed, the workspace named, the generation the stop began at.
async fn agent_stopped(api: &Api<Session>, name: &str) -> Session {
    use kube::api::{Patch, PatchParams};
    let s = api.get(name).await.unwrap();
    let status = serde_json::json!({"status": {
        "phase": "Stopped",
        "gpus": null,
        "reason": "StopRequested",
        "workspace": {"dataset": format!("pool/ws/u/{}", s.uid().unwrap())},
        "stoppedGeneration": s.metadata.generation,
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap()
}

/// Asks a stopped session to run again, as the api's start does.
async fn resume(api: &Api<Session>, name: &str) -> Session {
    merge(
        api,
        name,
        serde_json::json!({"spec": {"state": "Running", "resumeRequestedAt": Timestamp::now().to_string()}}),
    )
    .await
}

/// A stopped session asked to run again is bound again, only on the node
/// holding its workspace, with the same slug; while that node is full or
/// cordoned it stays Stopped with a condition naming the node, and resumes
/// by itself once it can. A stopped session not asked to resume stays put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_is_bound_again_on_its_workspaces_node() {
    let e = env().await;
    let now = Timestamp::now();
    publish_ready_node(&e.client, "node-a", 1, now).await;
    publish_ready_node(&e.client, "node-b", 1, now).await;
    let mut c = cfg(Limits {
        max_sessions_per_user: 100,
        max_gpus_per_user: 100,
        allow_cpu_only: false,
    });
    let mut seen = observed(&mut c);
    let sched = spawn_scheduler(&e.client, c);
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    let nodes: Api<GpuNode> = Api::all(e.client.clone());

    let first = create_and_decide(&api, "r1").await;
    let first_st = first.status.clone().unwrap();
    assert_eq!(first_st.node_name.as_deref(), Some("node-a"));
    let slug = first_st.slug.clone().unwrap();
    agent_stopped(&api, "r1").await;
    // Its GPU goes to the next session; r1 (state Running, not asked again) stays Stopped.
    let other = create_and_decide(&api, "r2").await;
    assert_eq!(
        other.status.unwrap().gpus[0].uuid,
        "GPU-node-a-0",
        "the stopped session's GPU was free"
    );
    assert_eq!(
        api.get("r1").await.unwrap().phase(),
        medforge_crds::SessionPhase::Stopped
    );

    // Resume while node-a is full: refused with the node named, still Stopped,
    // although node-b has a free GPU.
    let asked = resume(&api, "r1").await;
    let refused = poll(&api, "r1", |s| {
        scheduled_opt(s).is_some_and(|c| {
            c.status == "False" && c.observed_generation == asked.metadata.generation
        })
    })
    .await;
    assert_eq!(scheduled_reason(&refused), "NoGpuAvailable");
    assert!(scheduled(&refused).message.contains("node node-a"));
    assert_eq!(refused.phase(), medforge_crds::SessionPhase::Stopped);

    // node-a frees up: r1 resumes on its own, on node-a, with its slug.
    api.delete("r2", &DeleteParams::default()).await.unwrap();
    let bound = poll(&api, "r1", |s| {
        s.phase() == medforge_crds::SessionPhase::Scheduled
    })
    .await;
    let st = bound.status.clone().unwrap();
    assert_eq!(
        (st.node_name.as_deref(), st.gpus[0].uuid.as_str()),
        (Some("node-a"), "GPU-node-a-0")
    );
    assert_eq!(st.slug.as_deref(), Some(slug.as_str()));
    assert_eq!(scheduled(&bound).status, "True");

    // Stopped again, its node cordoned: WorkspaceNodeUnavailable, not node-b.
    agent_stopped(&api, "r1").await;
    change_node(
        &nodes,
        &mut seen,
        "node-a",
        serde_json::json!({"spec": {"unschedulable": true}}),
    )
    .await;
    let asked = resume(&api, "r1").await;
    let refused = poll(&api, "r1", |s| {
        scheduled_opt(s).is_some_and(|c| {
            c.status == "False" && c.observed_generation == asked.metadata.generation
        })
    })
    .await;
    assert_eq!(scheduled_reason(&refused), "WorkspaceNodeUnavailable");
    assert!(
        scheduled(&refused).message.contains("is cordoned"),
        "{:?}",
        scheduled(&refused)
    );
    assert_eq!(refused.phase(), medforge_crds::SessionPhase::Stopped);
    assert_eq!(refused.status.unwrap().gpus, vec![]);
    sched.abort();
    e.shutdown().await;
}

/// A ready WorkspaceSnapshot record of alice's on `node`, as an agent writes it.
async fn put_record(client: &Client, name: &str, node: &str) {
    use medforge_crds::{
        SnapshotCondition, SnapshotReason, SnapshotSource, WorkspaceSnapshot,
        WorkspaceSnapshotSpec, WorkspaceSnapshotStatus,
    };
    let api: Api<WorkspaceSnapshot> = Api::namespaced(client.clone(), NS);
    let mut r = WorkspaceSnapshot::new(
        name,
        WorkspaceSnapshotSpec {
            owner: "alice".into(),
            session: SnapshotSource {
                name: "old".into(),
                uid: "u-old".into(),
            },
            node: node.into(),
            snapshot: "pool/ws/alice/u-old@stop-1".into(),
            reason: SnapshotReason::Stop,
        },
    );
    let created = api.create(&PostParams::default(), &r).await.unwrap();
    let mut status = WorkspaceSnapshotStatus {
        taken_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        )),
        ..Default::default()
    };
    medforge_crds::conditions::set_condition(
        &mut status.conditions,
        SnapshotCondition::ReadyToUse,
        Some(true),
        "Taken",
        "on the pool",
        None,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
    );
    r = created;
    r.status = Some(status);
    api.replace_status(name, &PostParams::default(), &r)
        .await
        .unwrap();
}

/// A new session restoring a snapshot is bound only on the snapshot's node;
/// one naming a record that does not exist (yet) waits, Pending, with
/// `SnapshotNotFound`, and is bound once the record is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restoring_session_is_bound_on_its_snapshots_node() {
    let e = env().await;
    let now = Timestamp::now();
    publish_ready_node(&e.client, "node-a", 2, now).await;
    publish_ready_node(&e.client, "node-b", 2, now).await;
    let sched = spawn_scheduler(
        &e.client,
        cfg(Limits {
            max_sessions_per_user: 100,
            max_gpus_per_user: 100,
            allow_cpu_only: false,
        }),
    );
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    let restoring = |name: &str, record: &str| {
        let mut s = session(name, "alice", 1);
        s.spec.workspace = Some(medforge_crds::WorkspaceSpec {
            quota: None,
            restore_from: Some(record.into()),
        });
        s
    };
    // Packing would put these on node-a: the snapshots say node-b.
    put_record(&e.client, "old-stop-1", "node-b").await;
    for name in ["c1", "c2"] {
        create(&api, &restoring(name, "old-stop-1")).await;
        let s = poll(&api, name, |s| scheduled_opt(s).is_some()).await;
        assert_eq!(scheduled(&s).status, "True", "{:?}", scheduled(&s));
        assert_eq!(s.status.unwrap().node_name.as_deref(), Some("node-b"));
    }
    // node-b is full now: the third is refused, naming the node.
    create(&api, &restoring("c3", "old-stop-1")).await;
    let s = poll(&api, "c3", |s| scheduled_opt(s).is_some()).await;
    assert_eq!(scheduled_reason(&s), "NoGpuAvailable");
    assert!(
        scheduled(&s).message.contains("node-b"),
        "{:?}",
        scheduled(&s)
    );

    create(&api, &restoring("later", "new-stop-1")).await;
    let waiting = poll(&api, "later", |s| scheduled_opt(s).is_some()).await;
    assert_eq!(scheduled_reason(&waiting), "SnapshotNotFound");
    assert!(
        scheduled(&waiting)
            .message
            .contains("\"new-stop-1\" does not exist")
    );
    assert_eq!(waiting.phase(), medforge_crds::SessionPhase::Pending);
    put_record(&e.client, "new-stop-1", "node-a").await;
    let bound = poll(&api, "later", |s| {
        scheduled_opt(s).is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(bound.status.unwrap().node_name.as_deref(), Some("node-a"));
    sched.abort();
    e.shutdown().await;
}

/// Sessions finished longer ago than the history keeps are deleted; a
/// recently stopped one, a running one and one asked to resume stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_finished_longer_ago_than_the_history_are_deleted() {
    use kube::api::{Patch, PatchParams};
    let e = env().await;
    publish_ready_node(&e.client, "node-a", 4, Timestamp::now()).await;
    let mut c = cfg(Limits {
        max_sessions_per_user: 100,
        max_gpus_per_user: 100,
        allow_cpu_only: false,
    });
    c.history = Some(Duration::from_secs(3600));
    let sched = spawn_scheduler(&e.client, c);
    let api: Api<Session> = Api::namespaced(e.client.clone(), NS);
    let stopped_at = |name: &str, ago: i64| {
        let api = api.clone();
        let name = name.to_string();
        async move {
            let at = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(ago);
            let s = api.get(&name).await.unwrap();
            let status = serde_json::json!({"status": {
                "phase": "Stopped",
                "gpus": null,
                "stoppedAt": at.to_string(),
                "stoppedGeneration": s.metadata.generation,
            }});
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    };
    for name in ["old", "recent", "running", "resumed"] {
        create_and_decide(&api, name).await;
    }
    stopped_at("recent", 60).await;
    stopped_at("resumed", 7200).await;
    // Asked to run again (a newer generation) before the sweep: kept.
    resume(&api, "resumed").await;
    stopped_at("old", 7200).await;
    eventually("old deleted", Duration::from_secs(20), || async {
        match api.get_opt("old").await.unwrap() {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    let left: HashSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(
        left,
        HashSet::from(["recent".into(), "running".into(), "resumed".into()])
    );
    sched.abort();
    e.shutdown().await;
}
