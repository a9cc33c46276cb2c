//! Workspace snapshots as resources, against the embedded control plane,
//! the harness's real dockerd and zfs-fuse and the test workload: manual
//! snapshots of a running session, restores into new sessions, retention,
//! and deletes of sessions and records while clones depend on them.

mod agent_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use medforge_crds::keys::{self, SNAPSHOT_RETENTION_ANNOTATION};
use medforge_crds::snapshot::snapshot_object_name;
use medforge_crds::{
    Session, SessionPhase, SnapshotCondition, SnapshotReason, SnapshotSource, WorkspaceSnapshot,
    WorkspaceSnapshotSpec, WorkspaceSpec,
};

use agent_support::{Env, is_running_and_ready};

const DEADLINE: Duration = Duration::from_secs(30);

fn records(env: &Env) -> Api<WorkspaceSnapshot> {
    Api::namespaced(env.client.clone(), &env.ns)
}

/// The record a client (the api) creates to ask for a manual snapshot of
/// a running session.
fn manual_request(s: &Session) -> WorkspaceSnapshot {
    let st = s.status.as_ref().unwrap();
    let dataset = st.workspace.as_ref().unwrap().dataset.clone().unwrap();
    let name = format!("manual-{}", Timestamp::now().as_millisecond());
    let mut r = WorkspaceSnapshot::new(
        &snapshot_object_name(&s.name_any(), &s.uid().unwrap(), &name),
        WorkspaceSnapshotSpec {
            owner: s.spec.owner.clone(),
            session: SnapshotSource {
                name: s.name_any(),
                uid: s.uid().unwrap(),
            },
            node: st.node_name.clone().unwrap(),
            snapshot: format!("{dataset}@{name}"),
            reason: SnapshotReason::Manual,
        },
    );
    r.metadata.namespace = s.namespace();
    r
}

/// Polls the record until `pred` holds.
async fn wait_record(
    env: &Env,
    name: &str,
    what: &str,
    pred: impl Fn(&WorkspaceSnapshot) -> bool,
) -> WorkspaceSnapshot {
    let until = Instant::now() + DEADLINE;
    loop {
        let r = records(env).get_opt(name).await.unwrap();
        if let Some(r) = &r
            && pred(r)
        {
            return r.clone();
        }
        assert!(Instant::now() < until, "record {name}: not {what}: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_record_gone(env: &Env, name: &str) {
    let until = Instant::now() + DEADLINE;
    while records(env).get_opt(name).await.unwrap().is_some() {
        assert!(Instant::now() < until, "record {name} still there");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The session's records that are not being deleted, oldest first, as
/// `(reason, ZFS snapshot short name)`.
async fn live_records_of(env: &Env, uid: &str) -> Vec<(SnapshotReason, String)> {
    let mut list: Vec<WorkspaceSnapshot> = records(env)
        .list(&ListParams::default().labels(&format!("{}={uid}", keys::container::SESSION_UID)))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    list.sort_by_key(|r| r.taken_at());
    list.iter()
        .map(|r| (r.spec.reason, r.dataset_and_name().1.to_string()))
        .collect()
}

/// Short names of a dataset's ZFS snapshots, in ZFS's (creation) order.
async fn zfs_snapshots(env: &Env, dataset: &str) -> Vec<String> {
    env.snapshots(dataset)
        .await
        .into_iter()
        .filter_map(|s| s.split_once('@').map(|(_, n)| n.to_string()))
        .collect()
}

async fn zfs_get(env: &Env, property: &str, dataset: &str) -> String {
    env.harness
        .zfs(["get", "-H", "-o", "value", property, dataset])
        .await
        .unwrap()
        .trim()
        .to_string()
}

async fn put(env: &Env, s: &Session, file: &str, body: &str) {
    let body = body.to_string();
    let r = env
        .harness
        .http_put(Env::upstream(s), &format!("/workspace/{file}"), body)
        .await
        .unwrap();
    assert!(r.is_success(), "PUT {file}: {r:?}");
}

async fn read(env: &Env, s: &Session, file: &str) -> String {
    let r = env
        .harness
        .http_get(Env::upstream(s), &format!("/workspace/{file}"))
        .await
        .unwrap();
    assert!(r.is_success(), "GET {file}: {r:?}");
    r.text()
}

fn restoring(owner: &str, record: &str) -> medforge_crds::SessionSpec {
    let mut spec = Env::spec("workload", 0);
    spec.owner = owner.to_string();
    spec.workspace = Some(WorkspaceSpec {
        quota: None,
        restore_from: Some(record.to_string()),
    });
    spec
}

fn seq_body(n: usize) -> String {
    format!("{n}:{}", "x".repeat(n % 97))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_snapshot_of_a_writing_session_restores_consistently_and_only_for_its_owner() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    env.create_bound("src", Env::spec("workload", 0)).await;
    let src = env
        .wait_for("src", "Running", DEADLINE, is_running_and_ready)
        .await;
    put(&env, &src, "notes.txt", "v1").await;

    // A writer keeps creating seq-0, seq-1, … while the snapshot is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let (harness, upstream) = (env.harness.clone(), Env::upstream(&src));
        let (stop, written) = (stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let r = harness
                    .http_put(upstream, &format!("/workspace/seq-{n}"), seq_body(n))
                    .await
                    .unwrap();
                assert!(r.is_success(), "write {n}: {r:?}");
                n += 1;
                written.store(n, Ordering::Relaxed);
            }
            n
        })
    };
    let until = Instant::now() + DEADLINE;
    while written.load(Ordering::Relaxed) < 5 {
        assert!(Instant::now() < until, "the writer wrote nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let request = manual_request(&src);
    let name = request.name_any();
    records(&env)
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let taken = wait_record(&env, &name, "ready", |r| r.is_ready()).await;
    let at_ready = written.load(Ordering::Relaxed);
    // The session keeps writing after it: wait for a few more writes.
    while written.load(Ordering::Relaxed) < at_ready + 5 {
        assert!(
            Instant::now() < until,
            "the writer stopped after the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let total = writer.await.unwrap();

    // The record: the agent's finalizer, taken, sized; the session untouched.
    assert_eq!(taken.finalizers(), [keys::SNAPSHOT_FINALIZER.to_string()]);
    let st = taken.status.clone().unwrap();
    assert!(st.taken_at.is_some() && st.size_bytes.is_some(), "{st:?}");
    let ready = taken.condition(SnapshotCondition::ReadyToUse).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Taken")
    );
    assert_eq!(
        zfs_snapshots(&env, &env.dataset_of(&src)).await,
        [taken.dataset_and_name().1.to_string()]
    );
    let after = env.get("src").await;
    assert!(is_running_and_ready(&after));
    assert_eq!(
        after.status.as_ref().unwrap().container_id,
        src.status.as_ref().unwrap().container_id,
        "the same container ran on"
    );

    // Restored into a new session: notes.txt, and exactly seq-0..seq-k,
    // each whole — the files as they were at one instant.
    env.create_bound("copy", restoring("alice", &name)).await;
    let copy = env
        .wait_for("copy", "Running", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(read(&env, &copy, "notes.txt").await, "v1");
    let copy_ds = env.dataset_of(&copy);
    assert_eq!(zfs_get(&env, "origin", &copy_ds).await, taken.spec.snapshot);
    let dir = std::path::PathBuf::from(zfs_get(&env, "mountpoint", &copy_ds).await);
    let mut seq: Vec<usize> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("seq-")?
                .parse()
                .ok()
        })
        .collect();
    seq.sort();
    let k = seq.len();
    assert!(k >= 5 && k <= total, "{k} of {total} files");
    assert_eq!(seq, (0..k).collect::<Vec<_>>(), "a prefix of the writes");
    for n in 0..k {
        let body = std::fs::read_to_string(dir.join(format!("seq-{n}"))).unwrap();
        // The last file may have been caught mid-write; every earlier one is whole.
        if n + 1 < k {
            assert_eq!(body, seq_body(n), "seq-{n}");
        } else {
            assert!(seq_body(n).starts_with(&body), "seq-{n}: {body:?}");
        }
    }

    // Writes in the restored session do not reach the snapshot: a second
    // restore still reads v1.
    put(&env, &copy, "notes.txt", "changed in the copy").await;
    env.create_bound("copy2", restoring("alice", &name)).await;
    let copy2 = env
        .wait_for("copy2", "Running", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(read(&env, &copy2, "notes.txt").await, "v1");
    assert_eq!(read(&env, &copy, "notes.txt").await, "changed in the copy");

    // Another user's session naming it fails, and makes nothing.
    env.create_bound("thief", restoring("mallory", &name)).await;
    let thief = env
        .wait_phase("thief", SessionPhase::Failed, DEADLINE)
        .await;
    let st = thief.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("SnapshotNotOwned"), "{st:?}");
    assert!(st.message.unwrap().contains("another user"));
    assert!(env.datasets_of_owner("mallory").await.is_empty());
    assert!(env.containers_of(&thief).await.is_empty());

    // A manual snapshot naming another session's dataset is refused.
    let mut forged = manual_request(&src);
    forged.metadata.name = Some("forged".into());
    forged.spec.session.uid = copy.uid().unwrap();
    records(&env)
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    let refused = wait_record(&env, "forged", "refused", |r| {
        r.condition(SnapshotCondition::ReadyToUse).is_some()
    })
    .await;
    let c = refused.condition(SnapshotCondition::ReadyToUse).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "DatasetMismatch"),
        "{c:?}"
    );
    let src_snapshots = zfs_snapshots(&env, &env.dataset_of(&src)).await;
    assert_eq!(
        src_snapshots,
        [taken.dataset_and_name().1.to_string()],
        "nothing taken for it"
    );

    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_and_clone_origins_and_deletes_never_loop() {
    let env = Env::new().await;
    let mut config = env.config();
    config.held_retry = Duration::from_millis(300);
    let agent = env.spawn_agent(config);
    let keep_two = BTreeMap::from([(
        SNAPSHOT_RETENTION_ANNOTATION.to_string(),
        r#"{"keepLast": 2, "keepDays": 0}"#.to_string(),
    )]);
    env.create_bound_with("cycled", Env::spec("workload", 0), keep_two)
        .await;
    let mut s = env
        .wait_for("cycled", "Running", DEADLINE, is_running_and_ready)
        .await;
    let uid = s.uid().unwrap();
    let dataset = env.dataset_of(&s);
    let mut stops = Vec::new();
    for generation in 1..=5 {
        if generation > 1 {
            env.resume_bound("cycled").await;
            s = env
                .wait_for("cycled", "Running again", DEADLINE, |x| {
                    is_running_and_ready(x)
                        && x.status.as_ref().unwrap().container_id
                            != s.status.as_ref().unwrap().container_id
                })
                .await;
        }
        put(&env, &s, "gen", &generation.to_string()).await;
        env.set_state("cycled", "Stopped").await;
        let stopped = env
            .wait_phase("cycled", SessionPhase::Stopped, DEADLINE)
            .await;
        let snap = stopped
            .status
            .unwrap()
            .workspace
            .unwrap()
            .snapshots
            .last()
            .cloned()
            .unwrap();
        let record = snapshot_object_name("cycled", &uid, &snap);
        wait_record(&env, &record, "ready", |r| r.is_ready()).await;
        stops.push((record, snap));
        if generation == 1 {
            // A workspace cloned from the first stop.
            env.create_bound("from-first", restoring("alice", &stops[0].0))
                .await;
            env.wait_for("from-first", "Running", DEADLINE, is_running_and_ready)
                .await;
        }
    }

    // Keep two: stops 4 and 5, and stop 1, a clone's origin. Records and
    // ZFS agree; each deletion was told as an Event.
    let want = |idx: &[usize]| -> Vec<(SnapshotReason, String)> {
        idx.iter()
            .map(|&i| (SnapshotReason::Stop, stops[i].1.clone()))
            .collect()
    };
    let until = Instant::now() + DEADLINE;
    while live_records_of(&env, &uid).await != want(&[0, 3, 4]) {
        assert!(
            Instant::now() < until,
            "records: {:?}",
            live_records_of(&env, &uid).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (record, _) in &stops[1..3] {
        wait_record_gone(&env, record).await;
    }
    let names = |idx: &[usize]| idx.iter().map(|&i| stops[i].1.clone()).collect::<Vec<_>>();
    assert_eq!(zfs_snapshots(&env, &dataset).await, names(&[0, 3, 4]));
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let until = Instant::now() + DEADLINE;
    loop {
        let told: Vec<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("RetentionExpired"))
            .filter_map(|e| e.regarding?.name)
            .collect();
        if stops[1..3].iter().all(|(r, _)| told.contains(r)) {
            assert_eq!(told.len(), 2, "{told:?}");
            break;
        }
        assert!(Instant::now() < until, "retention events: {told:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Deleting the session whose snapshot a clone depends on: done at
    // once, a last snapshot taken, the dataset retired, nothing lost.
    env.delete_and_wait_gone("cycled", DEADLINE).await;
    let until = Instant::now() + DEADLINE;
    loop {
        let live = live_records_of(&env, &uid).await;
        if live.len() == 3 && live[2].0 == SnapshotReason::BeforeDelete {
            assert_eq!(live[..2], want(&[0, 4])[..], "stop 4 went: keep two");
            break;
        }
        assert!(Instant::now() < until, "records after delete: {live:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(zfs_get(&env, "mounted", &dataset).await, "no");
    assert_ne!(zfs_get(&env, keys::dataset::RETIRED, &dataset).await, "-");
    let clone = env.get("from-first").await;
    assert!(is_running_and_ready(&clone));
    assert_eq!(read(&env, &clone, "gen").await, "1");

    // Deleting the origin's record waits for the clone, with a condition.
    records(&env)
        .delete(&stops[0].0, &DeleteParams::default())
        .await
        .unwrap();
    let held = wait_record(&env, &stops[0].0, "held", |r| {
        r.condition(SnapshotCondition::Deleting)
            .is_some_and(|c| c.reason == "CloneDependsOnIt")
    })
    .await;
    assert!(
        held.condition(SnapshotCondition::Deleting)
            .unwrap()
            .message
            .contains(&env.dataset_of(&clone))
    );
    assert!(zfs_snapshots(&env, &dataset).await.contains(&stops[0].1));
    // Once the clone is gone, so is the snapshot.
    env.sessions()
        .patch(
            "from-first",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {
                keys::WORKSPACE_ON_DELETE_ANNOTATION: "destroy"
            }}})),
        )
        .await
        .unwrap();
    env.delete_and_wait_gone("from-first", DEADLINE).await;
    wait_record_gone(&env, &stops[0].0).await;
    assert!(!zfs_snapshots(&env, &dataset).await.contains(&stops[0].1));

    // The retired dataset goes with its last snapshot.
    for r in records(&env)
        .list(&ListParams::default().labels(&format!("{}={uid}", keys::container::SESSION_UID)))
        .await
        .unwrap()
        .items
    {
        records(&env)
            .delete(&r.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
    let until = Instant::now() + DEADLINE;
    while env.dataset_exists(&dataset).await {
        assert!(Instant::now() < until, "the retired dataset is still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live_records_of(&env, &uid).await.is_empty());

    env.finish(agent).await;
}
