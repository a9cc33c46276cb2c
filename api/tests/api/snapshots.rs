//! Snapshot routes on the embedded control plane with the real scheduler
//! (`common::cluster`): list (own, all for admins, by session, in pages),
//! get, delete, manual snapshots of a running session, restoring a new
//! session from one, the session view's snapshots and the snapshot events.
//!
//! Where sessions run, the node agent of `node-a` runs too, and its
//! snapshot records are the real ones: it records a `Stop` snapshot when a
//! session stops, takes a manual snapshot (or refuses it), holds each
//! record of its node with its finalizer and destroys the ZFS snapshot (in
//! its fake) when the record is deleted, unless a workspace was cloned from
//! it. A record a scenario writes by hand is there for the agent to decide,
//! or on `node-b`, where no agent runs; the list scenario runs no agent at
//! all, and one scenario starts the scheduler late.

use std::collections::BTreeMap;

use axum::http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_api::backend::{SnapshotDeletion, set_condition};
use medforge_crds::keys::{
    OWNER_LABEL, SNAPSHOT_FINALIZER, SNAPSHOT_RETENTION_ANNOTATION, container::SESSION_UID,
};
use medforge_crds::snapshot::snapshot_object_name;
use medforge_crds::{
    SnapshotCondition, SnapshotReason, SnapshotSource, SnapshotStatusReason, WorkspaceSnapshot,
    WorkspaceSnapshotSpec, WorkspaceSnapshotStatus,
};
use serde_json::{Value, json};

use crate::common::cluster::NODE;
use crate::common::{Client, OneSession, Plane, TestApp, TestEnv, eventually};
use crate::events::EventReader;

/// What a record says of itself, for [`record`].
#[derive(Clone, Copy)]
enum Is {
    /// No status: a manual snapshot not taken yet.
    Pending,
    /// `ReadyToUse=True`, with the agent's finalizer.
    Ready,
    /// `ReadyToUse=False` (`DatasetMismatch`).
    Failed,
}

/// A record of a snapshot `name` of `owner`'s session `session` (uid
/// `uid`) on `node`, taken `taken_s` seconds after the epoch.
fn record(
    owner: &str,
    session: &str,
    uid: &str,
    name: &str,
    node: &str,
    taken_s: i64,
    is: Is,
) -> WorkspaceSnapshot {
    let reason = SnapshotReason::of_name(name).unwrap_or(SnapshotReason::Manual);
    let mut r = WorkspaceSnapshot::new(
        &snapshot_object_name(session, uid, name),
        WorkspaceSnapshotSpec {
            owner: owner.into(),
            session: SnapshotSource {
                name: session.into(),
                uid: uid.into(),
            },
            node: node.into(),
            snapshot: format!("pool/{owner}/{uid}@{name}"),
            reason,
        },
    );
    r.metadata.labels = Some(BTreeMap::from([
        (OWNER_LABEL.to_owned(), owner.to_owned()),
        (SESSION_UID.to_owned(), uid.to_owned()),
    ]));
    let at = Time(jiff::Timestamp::from_second(taken_s).unwrap());
    r.metadata.creation_timestamp = Some(at.clone());
    let mut status = WorkspaceSnapshotStatus::default();
    match is {
        Is::Pending => return r,
        Is::Ready => {
            r.metadata.finalizers = Some(vec![SNAPSHOT_FINALIZER.to_owned()]);
            status.taken_at = Some(at);
            status.size_bytes = Some(1 << 20);
            set_condition(
                &mut status.conditions,
                SnapshotCondition::ReadyToUse,
                true,
                SnapshotStatusReason::Taken,
                "taken",
            );
        }
        Is::Failed => set_condition(
            &mut status.conditions,
            SnapshotCondition::ReadyToUse,
            false,
            SnapshotStatusReason::DatasetMismatch,
            "pool/x is not the session's workspace",
        ),
    }
    r.status = Some(status);
    r
}

impl TestApp {
    /// Stores a record (as written, its creation time the control
    /// plane's) and waits until the api's index has it as stored or newer
    /// (an agent may have written it since; the embedded control plane's
    /// resource versions are numbers that only grow).
    async fn put(&self, r: WorkspaceSnapshot) -> String {
        let name = r.metadata.name.clone().unwrap();
        let version = |r: &WorkspaceSnapshot| -> u64 {
            r.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .expect("a numeric resource version")
        };
        let stored = version(&self.cluster().put_record(r).await);
        let index = self.state().snapshots().clone();
        eventually(&format!("{name} indexed"), async || {
            index
                .get(&name)
                .is_some_and(|e| version(&e.record) >= stored)
                .then_some(())
        })
        .await;
        name
    }

    /// Waits until the api's index shows the record `name` in `state` (as
    /// the api shows it); its view.
    async fn snapshot_state(&self, who: &Client, name: &str, state: &str) -> Value {
        eventually(&format!("{name} {state}"), async || {
            let got = self.snapshot_as(who, name).await;
            (got["state"] == state).then_some(got)
        })
        .await
    }

    /// A session's uid.
    async fn uid(&self, id: &str) -> String {
        self.stored(id).await.unwrap().metadata.uid.unwrap()
    }

    /// Stops `who`'s session `id` and returns the id of the snapshot its
    /// stop made (the agent's record, reason `Stop`).
    async fn stop_for_snapshot(&self, who: &Client, id: &str) -> String {
        self.post_as(who, &format!("/api/v2/external/sessions/{id}/stop"))
            .await
            .data(202);
        self.wait_phase(id, "stopped").await;
        let uid = self.uid(id).await;
        let index = self.state().snapshots().clone();
        eventually("the stop's snapshot", async || {
            index
                .of_session(&uid)
                .iter()
                .find(|e| e.record.spec.reason == SnapshotReason::Stop)
                .map(|e| e.name.clone())
        })
        .await
    }

    /// `GET /api/v2/snapshots/{id}` as `who`: its data.
    async fn snapshot_as(&self, who: &Client, id: &str) -> Value {
        self.get_as(who, &format!("/api/v2/snapshots/{id}"))
            .await
            .data(200)
    }

    /// `POST /api/v2/external/sessions/{id}/snapshots` as `who`.
    async fn take_snapshot(&self, who: &Client, id: &str) -> crate::common::Res {
        self.post_as(who, &format!("/api/v2/external/sessions/{id}/snapshots"))
            .await
    }

    /// The ids of every page of `uri` (with `limit=1`), as `who`.
    async fn all_pages(&self, who: &Client, uri: &str) -> Vec<String> {
        let mut ids = Vec::new();
        let mut cursor = String::new();
        loop {
            let res = self
                .get_as(who, &format!("{uri}&limit=1&cursor={cursor}"))
                .await;
            let body = res.json();
            let page = res.data(200);
            assert!(page.as_array().unwrap().len() <= 1);
            ids.extend(
                page.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["id"].as_str().unwrap().to_owned()),
            );
            if body["meta"]["has_more"] == false {
                assert!(body["meta"]["next_cursor"].is_null());
                return ids;
            }
            cursor = body["meta"]["next_cursor"].as_str().unwrap().to_owned();
        }
    }
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn manual_snapshot_of_a_running_session_is_recorded_then_ready(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    t.wait_phase(id, "running").await;
    let uid = t.uid(id).await;
    // The Session's own retention travels to its snapshots.
    let retention = r#"{"keepLast": 2, "keepDays": 1}"#;
    t.cluster()
        .backend()
        .annotate(id, SNAPSHOT_RETENTION_ANNOTATION, retention)
        .await
        .unwrap();
    let index = t.state().index().clone();
    eventually("the annotation indexed", async || {
        index
            .get(id)
            .is_some_and(|e| {
                e.session
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(SNAPSHOT_RETENTION_ANNOTATION))
            })
            .then_some(())
    })
    .await;

    let before = jiff::Timestamp::now().as_millisecond();
    let res = t.take_snapshot(&f.owner, id).await;
    let after = jiff::Timestamp::now().as_millisecond();
    let data = res.data(202);
    let snap = &data["snapshot"];
    let sid = snap["id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.header("location"),
        Some(format!("/api/v2/snapshots/{sid}").as_str())
    );
    assert_eq!(snap["state"], "pending", "{data}");
    assert_eq!(snap["reason"], "manual");
    assert_eq!(snap["session"], json!({"id": id, "uid": uid}));
    assert_eq!(snap["owner"], f.owner.id.as_str());
    assert_eq!(snap["node"], "node-a");
    assert!(snap["taken_at"].is_null());
    // The record, as the node agent reads it.
    let ms: i64 = snap["name"]
        .as_str()
        .unwrap()
        .strip_prefix("manual-")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&ms),
        "{ms} not in {before}..={after}"
    );
    assert_eq!(sid, snapshot_object_name(id, &uid, &format!("manual-{ms}")));
    let stored = t.cluster().record(&sid).await.expect("the record");
    let zfs_name = format!("pool/{}/{uid}@manual-{ms}", f.owner.id);
    assert_eq!(
        stored.spec,
        WorkspaceSnapshotSpec {
            owner: f.owner.id.clone(),
            session: SnapshotSource {
                name: id.to_owned(),
                uid: uid.clone()
            },
            node: "node-a".into(),
            snapshot: zfs_name.clone(),
            reason: SnapshotReason::Manual,
        }
    );
    let labels = stored.metadata.labels.clone().unwrap();
    assert_eq!(labels[OWNER_LABEL], f.owner.id);
    assert_eq!(labels[SESSION_UID], uid);
    assert_eq!(
        stored.metadata.annotations.clone().unwrap()[SNAPSHOT_RETENTION_ANNOTATION],
        retention
    );

    // The agent takes it: the ZFS snapshot exists, the record is held by
    // its finalizer and says when (the time its name carries) and how big.
    let ready = t.snapshot_state(&f.owner, &sid, "ready").await;
    assert!(t.cluster().zfs.snapshots().contains(&zfs_name));
    let taken = t.cluster().record(&sid).await.expect("the record");
    assert_eq!(
        taken.metadata.finalizers,
        Some(vec![SNAPSHOT_FINALIZER.to_owned()])
    );
    let taken_at: jiff::Timestamp = ready["taken_at"].as_str().unwrap().parse().unwrap();
    assert_eq!(taken_at.as_second(), ms.div_euclid(1000), "{ready}");
    // The fake's size of a snapshot is 0.
    assert_eq!(ready["size_bytes"], 0, "{ready}");
    assert_eq!(
        ready["message"],
        format!("snapshot {zfs_name} exists on node node-a").as_str()
    );
    t.snapshot_as(&f.admin, &sid).await;
    // The session lists it.
    let session = t
        .get_as(&f.owner, &format!("/api/v2/external/sessions/{id}"))
        .await
        .data(200);
    assert_eq!(session["snapshot_count"], 1);
    assert_eq!(session["snapshots"][0]["id"], sid.as_str());
    assert_eq!(session["snapshots"][0]["state"], "ready");
    assert_eq!(session["snapshots"][0]["reason"], "manual");
    // An admin may ask too; the snapshot is the owner's.
    let by_admin = t.take_snapshot(&f.admin, id).await.data(202);
    assert_eq!(by_admin["snapshot"]["owner"], f.owner.id.as_str());
}

async fn manual_snapshots_need_a_running_session_of_yours_and_are_bounded(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let id = t.session(&ada).await["id"].as_str().unwrap().to_owned();
    t.wait_phase(&id, "running").await;
    // ZFS does not answer: the agent cannot take a manual snapshot, and
    // they stay pending (it tries again every 5 s). A running session's
    // reconcile does not touch ZFS.
    t.cluster().zfs.set_down(true);
    let path = format!("/api/v2/external/sessions/{id}/snapshots");
    t.problem(Method::POST, &path, Some(&bob), 404, "not_found")
        .await;
    t.refuses_anonymous(Method::POST, &path).await;
    t.problem(
        Method::POST,
        "/api/v2/external/sessions/nope/snapshots",
        Some(&ada),
        404,
        "not_found",
    )
    .await;
    t.problem(
        Method::POST,
        &format!("/api/v2/internal/sessions/{id}/snapshots"),
        Some(&ada),
        404,
        "not_found",
    )
    .await;
    t.post(&path)
        .cookie(&ada)
        .header("origin", "https://evil.example.org")
        .send()
        .await
        .problem(403, "origin_not_allowed");
    assert!(
        t.cluster().records().await.is_empty(),
        "nothing recorded for a refused request"
    );

    // Three may wait; a fourth is refused until the agent takes some.
    let mut taken = Vec::new();
    for _ in 0..3 {
        let data = t.take_snapshot(&ada, &id).await.data(202);
        taken.push(data["snapshot"]["id"].as_str().unwrap().to_owned());
    }
    taken.sort();
    taken.dedup();
    assert_eq!(taken.len(), 3, "three records");
    t.take_snapshot(&ada, &id)
        .await
        .problem_mentioning(409, "too_many_pending_snapshots", "3");
    let records = t.cluster().records().await;
    assert_eq!(records.len(), 3);
    assert!(
        records.iter().all(|r| r.status.is_none()),
        "none taken while ZFS is down: {records:?}"
    );
    // ZFS answers again: the agent takes them.
    t.cluster().zfs.set_down(false);
    let index = t.state().snapshots().clone();
    eventually("taken", async || {
        taken
            .iter()
            .all(|s| index.get(s).is_some_and(|e| e.record.is_ready()))
            .then_some(())
    })
    .await;
    t.take_snapshot(&ada, &id).await.data(202);

    // A stopped session has no running workspace to snapshot.
    t.post_as(&ada, &format!("/api/v2/external/sessions/{id}/stop"))
        .await
        .data(202);
    t.wait_phase(&id, "stopped").await;
    t.take_snapshot(&ada, &id)
        .await
        .problem(409, "session_not_running");
    // Nor has one whose status names no dataset (the agent always names
    // it before Running: the status is written by hand here, and the
    // agent leaves a running session's workspace as it is).
    let b = t.session(&bob).await["id"].as_str().unwrap().to_owned();
    t.wait_phase(&b, "running").await;
    t.cluster()
        .patch_status(&b, json!({"workspace": null}))
        .await;
    eventually("the dataset gone", async || {
        t.state()
            .index()
            .get(&b)
            .is_some_and(|e| e.session.status.as_ref().unwrap().workspace.is_none())
            .then_some(())
    })
    .await;
    t.take_snapshot(&bob, &b)
        .await
        .problem(409, "session_not_running");
}

/// The records are written by hand (no agent runs: the sessions are
/// bound, and nothing takes, retains or releases a record).
async fn lists_show_your_own_snapshots_newest_first_in_pages(env: TestEnv) {
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let admin = t.admin("root@example.org").await;
    let a1 = t.session(&ada).await["id"].as_str().unwrap().to_owned();
    let a2 = t.session(&ada).await["id"].as_str().unwrap().to_owned();
    let b1 = t.session(&bob).await["id"].as_str().unwrap().to_owned();
    let (u1, u2, ub) = (t.uid(&a1).await, t.uid(&a2).await, t.uid(&b1).await);
    // Taken at 100, 300, 200, 250 s (a1) and 250 s (a2: the same time,
    // ordered by id); bob's at 400 s.
    let mut expected = Vec::new();
    for (session, uid, s) in [
        (&a1, &u1, 100),
        (&a1, &u1, 300),
        (&a1, &u1, 200),
        (&a1, &u1, 250),
        (&a2, &u2, 250),
    ] {
        let name = format!("stop-{}", s * 1000);
        expected.push((
            s,
            t.put(record(&ada.id, session, uid, &name, "node-a", s, Is::Ready))
                .await,
        ));
    }
    let bobs = t
        .put(record(
            &bob.id,
            &b1,
            &ub,
            "stop-400000",
            "node-a",
            400,
            Is::Ready,
        ))
        .await;
    // A pending one counts from when its record was made: the control
    // plane sets that (now), so it is the newest.
    expected.push((
        jiff::Timestamp::now().as_second(),
        t.put(record(
            &ada.id,
            &a2,
            &u2,
            "manual-150000",
            "node-a",
            150,
            Is::Pending,
        ))
        .await,
    ));
    expected.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let newest_first: Vec<String> = expected.iter().map(|(_, id)| id.clone()).collect();

    let mine = t.get_as(&ada, "/api/v2/snapshots").await.data(200);
    assert_eq!(ids(&mine), newest_first, "ada's own, newest first");
    let pending = &mine[0];
    assert_eq!(pending["reason"], "manual");
    assert_eq!(pending["state"], "pending");
    assert!(pending["taken_at"].is_null());
    assert_eq!(mine[1]["reason"], "stop");
    assert_eq!(mine[1]["state"], "ready");
    assert_eq!(mine[1]["taken_at"], "1970-01-01T00:05:00Z");
    assert_eq!(mine[1]["size_bytes"], 1 << 20);
    assert_eq!(
        t.all_pages(&ada, "/api/v2/snapshots?").await,
        newest_first,
        "the same in pages of one"
    );
    // One session's.
    let of_a1 = t
        .get_as(&ada, &format!("/api/v2/snapshots?session={a1}"))
        .await
        .data(200);
    let a1_ids: Vec<String> = newest_first
        .iter()
        .filter(|s| s.starts_with(&a1))
        .cloned()
        .collect();
    assert_eq!(ids(&of_a1), a1_ids);
    assert_eq!(
        t.all_pages(&ada, &format!("/api/v2/snapshots?session={a1}"))
            .await,
        a1_ids
    );
    // Another user's session is an empty list, not a leak.
    let none = t
        .get_as(&ada, &format!("/api/v2/snapshots?session={b1}"))
        .await
        .data(200);
    assert!(none.as_array().unwrap().is_empty());
    let bob_sees = t.get_as(&bob, "/api/v2/snapshots").await.data(200);
    assert_eq!(ids(&bob_sees), std::slice::from_ref(&bobs));
    // Admins see everyone's.
    let all = t.get_as(&admin, "/api/v2/snapshots").await.data(200);
    assert_eq!(all.as_array().unwrap().len(), newest_first.len() + 1);
    assert_eq!(all[0]["id"], newest_first[0].as_str(), "ada's pending one");
    assert_eq!(all[1]["id"], bobs.as_str());
    let of_b1 = t
        .get_as(&admin, &format!("/api/v2/snapshots?session={b1}"))
        .await
        .data(200);
    assert_eq!(ids(&of_b1), [bobs]);

    // A session's view lists its newest 20 and counts them all.
    for s in 1000..1025 {
        t.put(record(
            &ada.id,
            &a2,
            &u2,
            &format!("stop-{}", s * 1000),
            "node-a",
            s,
            Is::Ready,
        ))
        .await;
    }
    let a2_view = t
        .get_as(&ada, &format!("/api/v2/external/sessions/{a2}"))
        .await
        .data(200);
    assert_eq!(a2_view["snapshot_count"], 27);
    let listed = a2_view["snapshots"].as_array().unwrap();
    assert_eq!(listed.len(), 20);
    assert_eq!(
        listed[0]["id"],
        snapshot_object_name(&a2, &u2, "manual-150000").as_str(),
        "the pending one, made last"
    );
    assert_eq!(
        listed[1]["id"],
        snapshot_object_name(&a2, &u2, "stop-1024000").as_str()
    );
    assert_eq!(
        listed[19]["id"],
        snapshot_object_name(&a2, &u2, "stop-1006000").as_str()
    );
    assert_eq!(listed[1]["taken_at"], "1970-01-01T00:17:04Z");

    let bad = |q: &str| t.get(&format!("/api/v2/snapshots?{q}")).cookie(&ada).send();
    assert_eq!(bad("limit=0").await.error_fields(), ["limit"]);
    assert_eq!(bad("limit=201").await.error_fields(), ["limit"]);
    assert_eq!(bad("cursor=%21%21").await.error_fields(), ["cursor"]);
    assert_eq!(
        bad("session=Not_A_Session").await.error_fields(),
        ["session"]
    );
    t.refuses_anonymous(Method::GET, "/api/v2/snapshots").await;
}

async fn get_and_delete_are_for_the_owner_and_admins(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    t.wait_phase(id, "running").await;
    let sid = t.stop_for_snapshot(&f.owner, id).await;
    let path = format!("/api/v2/snapshots/{sid}");
    let got = t.snapshot_state(&f.owner, &sid, "ready").await;
    assert_eq!(got["reason"], "stop");
    assert_eq!(got["session"]["id"], id);
    let zfs_name = t.cluster().record(&sid).await.unwrap().spec.snapshot;
    assert!(t.cluster().zfs.snapshots().contains(&zfs_name));
    // Someone else's snapshot does not exist for them.
    t.problem(Method::GET, &path, Some(&f.other), 404, "not_found")
        .await;
    t.problem(Method::DELETE, &path, Some(&f.other), 404, "not_found")
        .await;
    t.refuses_anonymous(Method::GET, &path).await;
    t.refuses_anonymous(Method::DELETE, &path).await;
    t.req(Method::DELETE, &path)
        .cookie(&f.owner)
        .header("origin", "https://evil.example.org")
        .send()
        .await
        .problem(403, "origin_not_allowed");
    assert!(t.cluster().record(&sid).await.is_some(), "still there");
    t.problem(
        Method::GET,
        "/api/v2/snapshots/nope",
        Some(&f.owner),
        404,
        "not_found",
    )
    .await;
    t.problem(
        Method::DELETE,
        "/api/v2/snapshots/nope",
        Some(&f.owner),
        404,
        "not_found",
    )
    .await;

    // The agent's finalizer holds it: 202 while it destroys the snapshot.
    let deleted = t
        .req(Method::DELETE, &path)
        .cookie(&f.owner)
        .send()
        .await
        .data(202);
    assert_eq!(deleted["snapshot"]["id"], sid.as_str());
    assert_eq!(deleted["snapshot"]["state"], "deleting");
    let index = t.state().snapshots().clone();
    eventually("released", async || index.get(&sid).is_none().then_some(())).await;
    assert!(t.cluster().record(&sid).await.is_none());
    assert!(
        !t.cluster().zfs.snapshots().contains(&zfs_name),
        "the agent destroyed the ZFS snapshot"
    );
    t.problem(Method::GET, &path, Some(&f.owner), 404, "not_found")
        .await;
    t.problem(Method::DELETE, &path, Some(&f.owner), 404, "not_found")
        .await;
    let session = t
        .get_as(&f.owner, &format!("/api/v2/external/sessions/{id}"))
        .await
        .data(200);
    assert_eq!(session["snapshot_count"], 0);

    // Without a finalizer it is gone at once: 204. An admin may delete it.
    // (The agent puts its finalizer on every record of its node: this one
    // is on node-b, where none runs.)
    let uid = t.uid(id).await;
    let bare = t
        .put(record(
            &f.owner.id,
            id,
            &uid,
            "manual-5000",
            "node-b",
            5,
            Is::Failed,
        ))
        .await;
    assert_eq!(t.snapshot_as(&f.owner, &bare).await["state"], "failed");
    let res = t
        .req(Method::DELETE, &format!("/api/v2/snapshots/{bare}"))
        .cookie(&f.admin)
        .send()
        .await;
    assert_eq!(res.status.as_u16(), 204, "{}", res.text());
    assert!(res.body.is_empty());
    assert!(t.cluster().record(&bare).await.is_none());
    t.problem(
        Method::GET,
        &format!("/api/v2/snapshots/{bare}"),
        Some(&f.owner),
        404,
        "not_found",
    )
    .await;

    // One a workspace was cloned from stays, deleting, and says why: a
    // session restored from a stop's snapshot (the agent clones its
    // workspace from it), then the snapshot deleted.
    let second = t.session(&f.owner).await["id"].as_str().unwrap().to_owned();
    t.wait_phase(&second, "running").await;
    let origin = t.stop_for_snapshot(&f.owner, &second).await;
    let restored = t
        .create_session(&f.owner, json!({"restore_from": origin}))
        .await
        .data(201)["session"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    t.wait_phase(&restored, "running").await;
    let origin_zfs = t.cluster().record(&origin).await.unwrap().spec.snapshot;
    let restored_uid = t.uid(&restored).await;
    let clone = format!("pool/{}/{restored_uid}", f.owner.id);
    let held_path = format!("/api/v2/snapshots/{origin}");
    let data = t
        .req(Method::DELETE, &held_path)
        .cookie(&f.owner)
        .send()
        .await
        .data(202);
    assert_eq!(data["snapshot"]["state"], "deleting");
    let why = format!(
        "the workspace(s) {clone} were cloned from {origin_zfs}: it is destroyed once they are"
    );
    let still = eventually("the agent says why it waits", async || {
        let got = t.snapshot_as(&f.owner, &origin).await;
        (got["message"] == why.as_str()).then_some(got)
    })
    .await;
    assert_eq!(still["state"], "deleting", "held by the clone");
    assert!(t.cluster().zfs.snapshots().contains(&origin_zfs));
    // Asked again: the same answer, and now it says why.
    let again = t
        .req(Method::DELETE, &held_path)
        .cookie(&f.owner)
        .send()
        .await
        .data(202);
    assert_eq!(again["snapshot"]["state"], "deleting");
    assert_eq!(again["snapshot"]["message"], why.as_str());
    assert!(matches!(
        t.cluster().backend().delete_snapshot("nope").await.unwrap(),
        SnapshotDeletion::Missing
    ));
}

async fn restore_from_needs_your_own_ready_snapshot(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    t.wait_phase(id, "running").await;
    let sid = t.stop_for_snapshot(&f.owner, id).await;
    t.snapshot_state(&f.owner, &sid, "ready").await;
    let before = t.stored_sessions().await.len();

    // Refused before anything is written.
    let restore =
        async |who: &Client, from: &str| t.create_session(who, json!({"restore_from": from})).await;
    restore(&f.owner, "nope")
        .await
        .problem_mentioning(404, "snapshot_not_found", "restore_from");
    restore(&f.other, &sid)
        .await
        .problem(404, "snapshot_not_found");
    assert_eq!(
        restore(&f.owner, "Not_A_Name").await.error_fields(),
        ["restore_from"]
    );
    let uid = t.uid(id).await;
    // A manual snapshot the agent has not taken: ZFS does not answer.
    t.cluster().zfs.set_down(true);
    let pending = t
        .put(record(
            &f.owner.id,
            id,
            &uid,
            "manual-7000",
            NODE,
            7,
            Is::Pending,
        ))
        .await;
    restore(&f.owner, &pending)
        .await
        .problem_mentioning(409, "snapshot_not_ready", "pending");
    // One the agent refused: it names a dataset that is not the session's.
    let mut mismatched = record(&f.owner.id, id, &uid, "manual-8000", NODE, 8, Is::Pending);
    mismatched.spec.snapshot = "pool/x@manual-8000".into();
    let failed = t.put(mismatched).await;
    t.snapshot_state(&f.owner, &failed, "failed").await;
    restore(&f.owner, &failed).await.problem_mentioning(
        409,
        "snapshot_not_ready",
        "is not a Manual snapshot of the workspace of session",
    );
    assert_eq!(
        t.stored_sessions().await.len(),
        before,
        "nothing was created"
    );
    t.cluster().zfs.set_down(false);

    // Its own ready snapshot: the spec carries it.
    let created = restore(&f.owner, &sid).await.data(201);
    let new_id = created["session"]["id"].as_str().unwrap();
    assert_eq!(created["session"]["restored_from"], sid.as_str());
    let stored = t.stored(new_id).await.unwrap();
    assert_eq!(
        stored.spec.workspace.unwrap().restore_from.as_deref(),
        Some(sid.as_str())
    );
    assert_eq!(created["session"]["node"], "node-a");
    // With a quota too; and on the node holding the snapshot.
    // node-b has more free GPUs: packing alone would pick node-a. No agent
    // runs there: its record is written by hand.
    t.cluster().add_node("node-b", 8).await;
    let on_b = t
        .put(record(
            &f.owner.id,
            id,
            &uid,
            "stop-9000",
            "node-b",
            9,
            Is::Ready,
        ))
        .await;
    let created = t
        .create_session(
            &f.owner,
            json!({"restore_from": on_b, "workspace_quota": "10Gi"}),
        )
        .await
        .data(201);
    assert_eq!(created["session"]["node"], "node-b");
    let stored = t
        .stored(created["session"]["id"].as_str().unwrap())
        .await
        .unwrap();
    let workspace = stored.spec.workspace.unwrap();
    assert_eq!(workspace.restore_from.as_deref(), Some(on_b.as_str()));
    assert_eq!(workspace.quota.as_deref(), Some("10Gi"));
}

/// An admin who restores a user's snapshot restores it for that user: the
/// new session is the user's (theirs to see and open), the act is audited,
/// and a disabled owner's snapshot is not restored.
async fn an_admin_restores_a_users_snapshot_for_them(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    t.wait_phase(id, "running").await;
    let sid = t.stop_for_snapshot(&f.owner, id).await;

    let created = t
        .create_session(&f.admin, json!({"restore_from": sid}))
        .await
        .data(201);
    let new_id = created["session"]["id"].as_str().unwrap();
    assert_eq!(created["session"]["restored_from"], sid.as_str());
    let stored = t.stored(new_id).await.unwrap();
    assert_eq!(
        stored.spec.owner, f.owner.id,
        "the snapshot owner's session"
    );
    t.get_as(&f.owner, &format!("/api/v2/external/sessions/{new_id}"))
        .await
        .data(200);
    t.get_as(&f.other, &format!("/api/v2/external/sessions/{new_id}"))
        .await
        .problem(404, "not_found");
    let log = t
        .get_as(
            &f.admin,
            "/api/v2/admin/audit?action=snapshot.restored_for_user",
        )
        .await
        .data(200);
    let entry = &log[0];
    assert_eq!(entry["actor"], f.admin.id.as_str());
    assert_eq!(entry["target"], f.owner.id.as_str());
    assert_eq!(entry["detail"]["session"], new_id);
    assert_eq!(entry["detail"]["snapshot"], sid.as_str());

    // The owner's account disabled: refused, nothing created.
    t.req(
        Method::PATCH,
        &format!("/api/v2/admin/users/{}", f.owner.id),
    )
    .cookie(&f.admin)
    .json(json!({"disabled": true}))
    .send()
    .await
    .data(200);
    let before = t.stored_sessions().await.len();
    t.create_session(&f.admin, json!({"restore_from": sid}))
        .await
        .problem(409, "owner_disabled");
    assert_eq!(t.stored_sessions().await.len(), before);
}

/// The api checked the snapshot, but it was deleted before the scheduler
/// decided: the scheduler's `SnapshotNotFound` is a 409 and nothing stays.
/// No scheduler runs until the record is gone; then the real one starts
/// and refuses the Session.
async fn a_snapshot_gone_before_the_scheduler_decides_is_409(env: TestEnv) {
    let t = env.on(Plane::no_scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let mut ready = record(
        &ada.id,
        "gone",
        "u-gone",
        "stop-1000",
        "node-a",
        1,
        Is::Ready,
    );
    ready.metadata.finalizers = None;
    let sid = t.put(ready).await;
    let cluster = t.cluster();
    let deleter = async {
        eventually("the Session", async || {
            (!cluster.sessions().await.is_empty()).then_some(())
        })
        .await;
        cluster
            .snapshots
            .delete(&sid, &Default::default())
            .await
            .expect("delete the record");
        let node = cluster.nodes.get(NODE).await.expect("node-a");
        cluster.start_scheduler(&node).await;
    };
    let (res, ()) = tokio::join!(
        t.create_session(
            &ada,
            json!({"restore_from": snapshot_object_name("gone", "u-gone", "stop-1000")}),
        ),
        deleter
    );
    res.problem_mentioning(409, "snapshot_not_found", "does not exist");
    assert!(
        t.stored_sessions().await.is_empty(),
        "the refused Session is deleted"
    );
}

async fn snapshot_events_follow_your_own_snapshots(env: TestEnv) {
    let OneSession {
        t,
        owner,
        other,
        id,
        ..
    } = env.one_session_on(Plane::agent()).await;
    t.wait_phase(&id, "running").await;
    let theirs = t.session(&other).await["id"].as_str().unwrap().to_owned();
    t.wait_phase(&theirs, "running").await;
    let mut events = EventReader::new(
        t.get("/api/v2/events")
            .cookie(&owner)
            .send_streaming()
            .await,
    );
    assert_eq!(events.next().await.0, "snapshot");
    // Someone else's come not to this stream.
    t.take_snapshot(&other, &theirs).await.data(202);
    let sid = t.take_snapshot(&owner, &id).await.data(202)["snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = events.next_named("snapshot.created").await;
    assert_eq!(created["id"], sid.as_str(), "{created}");
    assert_eq!(created["state"], "pending");
    let ready = events.next_named("snapshot.ready").await;
    assert_eq!(ready["id"], sid.as_str());
    assert_eq!(ready["state"], "ready");
    t.req(Method::DELETE, &format!("/api/v2/snapshots/{sid}"))
        .cookie(&owner)
        .send()
        .await
        .data(202);
    let deleted = events.next_named("snapshot.deleted").await;
    assert_eq!(deleted["id"], sid.as_str());
    // A stop's record: the agent creates it, then writes its status
    // (ready).
    let stop = t.stop_for_snapshot(&owner, &id).await;
    let created = events.next_named("snapshot.created").await;
    assert_eq!(created["id"], stop.as_str());
    assert_eq!(created["reason"], "stop");
    assert_eq!(
        events.next_named("snapshot.ready").await["id"],
        stop.as_str()
    );
    // A failure is told too: a manual snapshot of a workspace that is not
    // on node-a, which the agent refuses.
    let failing = t
        .put(record(
            &owner.id,
            &id,
            "no-such-uid",
            "manual-1000",
            NODE,
            1,
            Is::Pending,
        ))
        .await;
    assert_eq!(
        events.next_named("snapshot.created").await["id"],
        failing.as_str()
    );
    let failed = events.next_named("snapshot.failed").await;
    assert_eq!(failed["id"], failing.as_str());
    assert_eq!(
        failed["message"],
        format!(
            "the workspace pool/{}/no-such-uid does not exist on node node-a",
            owner.id
        )
        .as_str()
    );
}

crate::scenarios!(
    manual_snapshot_of_a_running_session_is_recorded_then_ready,
    manual_snapshots_need_a_running_session_of_yours_and_are_bounded,
    lists_show_your_own_snapshots_newest_first_in_pages,
    get_and_delete_are_for_the_owner_and_admins,
    restore_from_needs_your_own_ready_snapshot,
    an_admin_restores_a_users_snapshot_for_them,
    a_snapshot_gone_before_the_scheduler_decides_is_409,
    snapshot_events_follow_your_own_snapshots,
);
