//! The kube-backed implementation against the embedded control plane
//! (`medforge-apiserver`): the API serves real Session and GpuNode resources
//! through the kube client; a small stand-in for the scheduler and the node agent
//! binds (or refuses) Sessions by patching their status, as the operator will.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use kube::api::{Api as KubeApi, ListParams, Patch, PatchParams, PostParams};
use medforge_api::backend::{KubeBackend, SLUG_KEY, SessionBackend, condition};
use medforge_api::{Api, Db};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::SessionCondition;
use medforge_crds::{
    DesiredState, GpuHealth, GpuInfo, GpuNode, GpuNodeSpec, GpuNodeStatus, Pack, Session,
};
use serde_json::json;

use crate::common::{Client, Res, client_from, pack, request, test_config};

const NAMESPACE: &str = "mf-api-test";

/// Binds every undecided Session (Running + Ready at once) unless it wants more than 2 GPUs.
async fn stand_in_scheduler(sessions: KubeApi<Session>) {
    loop {
        if let Ok(list) = sessions.list(&ListParams::default()).await {
            for s in list.items {
                if s.condition(SessionCondition::Scheduled).is_some() {
                    continue;
                }
                let name = s.metadata.name.clone().unwrap_or_default();
                let status = if s.spec.gpus > 2 {
                    json!({"status": {
                        "phase": "Pending", "reason": "NoGpuAvailable",
                        "conditions": [condition(SessionCondition::Scheduled, false, "NoGpuAvailable", "no node has 3 free GPUs")]
                    }})
                } else {
                    let slug = s.metadata.labels.as_ref().unwrap()[SLUG_KEY].clone();
                    json!({"status": {
                        "phase": "Running", "nodeName": "node-a", "slug": slug,
                        "upstream": format!("mf-session-{slug}:8080"),
                        "gpus": [{"index": 0, "uuid": "GPU-node-a-0"}],
                        "conditions": [
                            condition(SessionCondition::Scheduled, true, "Bound", "bound to node-a"),
                            condition(SessionCondition::Ready, true, "Serving", "port open"),
                        ]
                    }})
                };
                let _ = sessions
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The embedded control plane with one GpuNode, `node-a`, without a status
/// yet, and the Pack `default` (sessions name it when they name none).
async fn control_plane_with_node_a() -> (TestControlPlane, KubeApi<GpuNode>) {
    let control_plane = TestControlPlane::builder()
        .data_subdir("control-plane")
        .namespace(NAMESPACE)
        .start()
        .await;
    let nodes: KubeApi<GpuNode> = KubeApi::all(control_plane.client.clone());
    nodes
        .create(
            &PostParams::default(),
            &GpuNode::new("node-a", GpuNodeSpec::default()),
        )
        .await
        .unwrap();
    KubeApi::<Pack>::all(control_plane.client.clone())
        .create(&PostParams::default(), &pack("default", json!({})))
        .await
        .unwrap();
    (control_plane, nodes)
}

/// The api on the control plane (a fresh SQLite database), its watch synced.
async fn api_on(control_plane: &TestControlPlane) -> (Api, Arc<KubeBackend>) {
    let backend = Arc::new(KubeBackend::new(control_plane.client.clone(), NAMESPACE));
    let config = test_config(control_plane.dir.path().join("api"));
    let db = Db::connect(None, &config.data_dir).await.unwrap();
    db.migrate().await.unwrap();
    let api = Api::with_db(config, db, backend.clone());
    assert!(
        api.wait_synced(Duration::from_secs(10)).await,
        "watch synced"
    );
    (api, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_backend_on_the_embedded_control_plane() {
    let (control_plane, nodes) = control_plane_with_node_a().await;
    let client = control_plane.client.clone();
    let node_status = GpuNodeStatus {
        gpus: (0..2)
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-node-a-{i}"),
                model: "Simulated".into(),
                memory_bytes: 1 << 30,
                health: GpuHealth::Healthy,
            })
            .collect(),
        allocatable: 2,
        ..GpuNodeStatus::default()
    };
    nodes
        .patch_status(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": node_status})),
        )
        .await
        .unwrap();
    let sessions: KubeApi<Session> = KubeApi::namespaced(client.clone(), NAMESPACE);
    let scheduler = tokio::spawn(stand_in_scheduler(sessions.clone()));

    let (api, backend) = api_on(&control_plane).await;
    backend.ping().await.expect("ping");
    let router = api.router();
    let send =
        |method: Method, uri: &str, who: Option<&Client>, body: Option<serde_json::Value>| {
            let mut r = request(&router, method, uri);
            if let Some(c) = who {
                r = r.cookie(c);
            }
            if let Some(b) = body {
                r = r.json(b);
            }
            r.send()
        };
    let signup: Res = send(
        Method::POST,
        "/api/v2/auth/signup",
        None,
        Some(json!({"email": "ada@example.org", "password": "correct horse"})),
    )
    .await;
    let ada = client_from(&signup);
    medforge_api::ensure_admin(
        api.state().db(),
        medforge_api::PasswordHashing::INSECURE_FAST,
        "root@example.org",
        Some("admin password"),
        medforge_api::ExistingAccount::Refuse,
    )
    .await
    .unwrap();
    let admin = client_from(
        &send(
            Method::POST,
            "/api/v2/auth/login",
            None,
            Some(json!({"email": "root@example.org", "password": "admin password"})),
        )
        .await,
    );

    // Create: bound by the stand-in scheduler.
    let created = send(
        Method::POST,
        "/api/v2/external/sessions",
        Some(&ada),
        Some(json!({"gpus": 1})),
    )
    .await
    .data(201);
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let slug = created["session"]["slug"].as_str().unwrap().to_owned();
    let stored = sessions.get(&id).await.unwrap();
    assert_eq!(stored.spec.owner, ada.id);
    assert_eq!(
        stored.metadata.labels.as_ref().unwrap()["medforge.dev/owner"],
        ada.id
    );
    assert_eq!(backend.list(Some(&ada.id)).await.unwrap().len(), 1);
    assert!(backend.get(&id).await.unwrap().is_some());

    // forward_auth from the watch-fed index.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = request(&router, Method::GET, "/api/v2/auth/session-proxy")
            .header("host", &format!("s-{slug}.external.medforge.test"))
            .cookie(&ada)
            .send()
            .await;
        if res.status == StatusCode::OK {
            assert_eq!(
                res.header("x-upstream"),
                Some(format!("mf-session-{slug}:8080").as_str())
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never routable: {}",
            res.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    medforge_api::flush_activity(api.state()).await;
    let recorded = sessions.get_status(&id).await.unwrap();
    assert!(
        recorded.status.unwrap().last_activity_at.is_some(),
        "activity patched into status"
    );

    // Refused: 409 and the Session is gone.
    send(
        Method::POST,
        "/api/v2/external/sessions",
        Some(&ada),
        Some(json!({"gpus": 3})),
    )
    .await
    .problem(409, "no_gpu_available");
    assert_eq!(
        sessions
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    // Stop sets spec.state. No node agent runs here: the status still says
    // Running and Ready, and will. The session's host answers 404 at once
    // all the same (the very next request, before anything else), and stays
    // 404.
    send(
        Method::POST,
        &format!("/api/v2/external/sessions/{id}/stop"),
        Some(&ada),
        None,
    )
    .await
    .data(202);
    for _ in 0..3 {
        request(&router, Method::GET, "/api/v2/auth/session-proxy")
            .header("host", &format!("s-{slug}.external.medforge.test"))
            .cookie(&ada)
            .send()
            .await
            .problem(404, "not_found");
    }
    assert_eq!(
        sessions
            .get_status(&id)
            .await
            .unwrap()
            .status
            .unwrap()
            .phase,
        Some(medforge_crds::SessionPhase::Running)
    );
    assert_eq!(
        sessions.get(&id).await.unwrap().spec.state,
        DesiredState::Stopped
    );
    // Admin: nodes, cordons.
    let listed = send(Method::GET, "/api/v2/admin/nodes", Some(&admin), None)
        .await
        .data(200);
    assert_eq!(listed[0]["name"], "node-a");
    assert_eq!(listed[0]["total"], 2);
    send(
        Method::POST,
        "/api/v2/admin/nodes/node-a/cordon",
        Some(&admin),
        None,
    )
    .await
    .data(200);
    assert!(nodes.get("node-a").await.unwrap().spec.unschedulable);
    send(
        Method::POST,
        "/api/v2/admin/nodes/node-a/uncordon",
        Some(&admin),
        None,
    )
    .await
    .data(200);
    assert!(!nodes.get("node-a").await.unwrap().spec.unschedulable);
    send(
        Method::POST,
        "/api/v2/admin/nodes/node-a/gpus/1/cordon",
        Some(&admin),
        None,
    )
    .await
    .data(200);
    assert_eq!(
        nodes.get("node-a").await.unwrap().spec.disabled_gpus,
        ["GPU-node-a-1"]
    );
    send(
        Method::POST,
        "/api/v2/admin/nodes/node-a/gpus/GPU-node-a-1/uncordon",
        Some(&admin),
        None,
    )
    .await
    .data(200);
    assert!(
        nodes
            .get("node-a")
            .await
            .unwrap()
            .spec
            .disabled_gpus
            .is_empty()
    );
    send(
        Method::POST,
        "/api/v2/admin/nodes/nope/cordon",
        Some(&admin),
        None,
    )
    .await
    .problem(404, "not_found");
    // Issue 18: a name the control plane could never hold was a 503
    // `control_plane_unavailable` (the client could not even build the URL).
    // It is refused before the control plane is asked, naming the parameter.
    for bad in ["%C3%A9", "a%0Ab", "a%00", "Node-A"] {
        for action in ["cordon", "uncordon"] {
            let problem = send(
                Method::POST,
                &format!("/api/v2/admin/nodes/{bad}/{action}"),
                Some(&admin),
                None,
            )
            .await
            .problem(404, "not_found");
            assert_eq!(problem["errors"][0]["field"], "node", "{problem}");
        }
    }

    // Delete.
    let res = send(
        Method::DELETE,
        &format!("/api/v2/external/sessions/{id}"),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    assert!(sessions.get_opt(&id).await.unwrap().is_none());
    assert!(
        !backend.delete(&id).await.unwrap(),
        "deleting again is not an error"
    );
    send(Method::GET, "/readyz", None, None).await.data(200);

    scheduler.abort();
    api.shutdown().await;
    control_plane.shutdown().await;
}

/// `POST …/start` against the embedded control plane and the **real**
/// scheduler (the node agent's writes are simulated): a resume onto a full
/// node is refused with 409 and withdrawn, one onto a free GPU is bound on
/// the workspace's node with the same slug, and one onto a cordoned node is
/// refused with `workspace_node_unavailable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_against_the_real_scheduler() {
    use medforge_operator::scheduler::controller::{SchedulerConfig, run};
    use medforge_operator::scheduler::placement::Limits;

    let (control_plane, nodes) = control_plane_with_node_a().await;
    let client = control_plane.client.clone();
    let now = jiff::Timestamp::now().to_string();
    let ready = json!({"status": {
        "gpus": [{"index": 0, "uuid": "GPU-node-a-0", "model": "Simulated", "memoryBytes": 1073741824, "health": "Healthy"}],
        "allocatable": 1,
        "lastHeartbeatTime": now,
        "conditions": [{"type": "Ready", "status": "True", "reason": "Ready", "message": "test", "lastTransitionTime": now}],
    }});
    let node = nodes
        .patch_status("node-a", &PatchParams::default(), &Patch::Merge(&ready))
        .await
        .unwrap();
    let mut cfg = SchedulerConfig::new("api-test-scheduler");
    cfg.limits = Limits {
        max_sessions_per_user: 10,
        max_gpus_per_user: 10,
        allow_cpu_only: false,
    };
    cfg.heartbeat_timeout = Duration::from_secs(3600);
    cfg.resync = Duration::from_millis(200);
    let (seen_tx, mut seen) = tokio::sync::watch::channel(std::collections::HashMap::new());
    cfg.observer = Some(Arc::new(seen_tx));
    let scheduler = {
        let client = client.clone();
        tokio::spawn(async move {
            let _ = run(client, cfg, std::future::pending()).await;
        })
    };
    let scheduler_saw = async |seen: &mut tokio::sync::watch::Receiver<
        std::collections::HashMap<String, String>,
    >,
                               node: &GpuNode| {
        let rv = node.metadata.resource_version.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            seen.wait_for(|m| m.get("node-a") == rv.as_ref()),
        )
        .await
        .expect("the scheduler never saw the node")
        .unwrap();
    };
    scheduler_saw(&mut seen, &node).await;
    let sessions: KubeApi<Session> = KubeApi::namespaced(client.clone(), NAMESPACE);
    // What the node agent writes when a session stops.
    let agent_stops = async |id: &str| {
        let s = sessions.get(id).await.unwrap();
        let status = json!({"status": {
            "phase": "Stopped", "gpus": null, "upstream": null,
            "workspace": {"dataset": format!("pool/ws/{}", s.metadata.uid.clone().unwrap())},
            "stoppedGeneration": s.metadata.generation,
        }});
        sessions
            .patch_status(id, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    };

    let (api, _) = api_on(&control_plane).await;
    let router = api.router();
    let signup = async |email: &str| {
        client_from(
            &request(&router, Method::POST, "/api/v2/auth/signup")
                .json(json!({"email": email, "password": "correct horse"}))
                .send()
                .await,
        )
    };
    let (ada, bob) = (
        signup("ada@example.org").await,
        signup("bob@example.org").await,
    );
    let post = async |who: &Client, uri: &str, body: Option<serde_json::Value>| {
        let mut r = request(&router, Method::POST, uri).cookie(who);
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await
    };
    let create = async |who: &Client| {
        let res = post(who, "/api/v2/external/sessions", Some(json!({"gpus": 1}))).await;
        res.data(201)["session"].clone()
    };

    let a = create(&ada).await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    post(
        &ada,
        &format!("/api/v2/external/sessions/{a_id}/stop"),
        None,
    )
    .await
    .data(202);
    agent_stops(&a_id).await;
    let b = create(&bob).await;
    let b_id = b["id"].as_str().unwrap().to_owned();
    let start = format!("/api/v2/external/sessions/{a_id}/start");

    // The only GPU is Bob's: refused, withdrawn, still Stopped.
    post(&ada, &start, None)
        .await
        .problem_mentioning(409, "no_gpu_available", "node-a");
    let stored = sessions.get(&a_id).await.unwrap();
    assert_eq!(stored.spec.state, DesiredState::Stopped, "withdrawn");
    assert_eq!(stored.phase(), medforge_crds::SessionPhase::Stopped);
    assert!(stored.status.unwrap().gpus.is_empty());

    // Bob stops: Ada's start is bound on node-a, with her slug.
    agent_stops(&b_id).await;
    let started = post(&ada, &start, None).await.data(202);
    assert_eq!(started["message"], "Session starting.");
    assert_eq!(started["session"]["slug"], a["slug"]);
    assert_eq!(started["session"]["url"], a["url"]);
    let stored = sessions.get(&a_id).await.unwrap();
    let st = stored.status.clone().unwrap();
    assert_eq!(stored.phase(), medforge_crds::SessionPhase::Scheduled);
    assert_eq!(st.node_name.as_deref(), Some("node-a"));
    assert_eq!(st.gpus.len(), 1);

    // Stopped again, node-a cordoned: the workspace's node cannot take it.
    agent_stops(&a_id).await;
    let cordoned = nodes
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    scheduler_saw(&mut seen, &cordoned).await;
    post(&ada, &start, None).await.problem_mentioning(
        409,
        "workspace_node_unavailable",
        "cordoned",
    );
    assert_eq!(
        sessions.get(&a_id).await.unwrap().spec.state,
        DesiredState::Stopped
    );

    scheduler.abort();
    control_plane.shutdown().await;
}

/// Snapshots through the kube backend and its watched cache of
/// WorkspaceSnapshots. No node agent runs: a manual snapshot's record is
/// created exactly as the agent expects it and stays pending until the
/// test writes the agent's status; a record without a finalizer goes at
/// once on delete (204), one the agent's finalizer holds stays, deleting
/// (202), until the finalizer is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_against_the_embedded_control_plane() {
    use medforge_crds::keys::{
        OWNER_LABEL, SNAPSHOT_FINALIZER, SNAPSHOT_RETENTION_ANNOTATION, container::SESSION_UID,
    };
    use medforge_crds::{SnapshotReason, SnapshotSource, WorkspaceSnapshot, WorkspaceSnapshotSpec};

    let (control_plane, _nodes) = control_plane_with_node_a().await;
    let client = control_plane.client.clone();
    let sessions: KubeApi<Session> = KubeApi::namespaced(client.clone(), NAMESPACE);
    let records: KubeApi<WorkspaceSnapshot> = KubeApi::namespaced(client.clone(), NAMESPACE);
    let scheduler = tokio::spawn(stand_in_scheduler(sessions.clone()));
    let (api, _) = api_on(&control_plane).await;
    let router = api.router();
    let send = async |method: Method, uri: &str, who: &Client, body: Option<serde_json::Value>| {
        let mut r = request(&router, method, uri).cookie(who);
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await
    };
    let ada = client_from(
        &request(&router, Method::POST, "/api/v2/auth/signup")
            .json(json!({"email": "ada@example.org", "password": "correct horse"}))
            .send()
            .await,
    );
    let created = send(
        Method::POST,
        "/api/v2/external/sessions",
        &ada,
        Some(json!({"gpus": 1})),
    )
    .await
    .data(201);
    let id = created["session"]["id"].as_str().unwrap().to_owned();
    let uid = sessions.get(&id).await.unwrap().metadata.uid.unwrap();
    let snapshots_path = format!("/api/v2/external/sessions/{id}/snapshots");
    // Bound and running, but its agent has not named the dataset yet.
    send(Method::POST, &snapshots_path, &ada, None)
        .await
        .problem(409, "session_not_running");

    // What the node agent writes once it made the workspace; the owner's
    // retention, as an admin set it on the Session.
    let dataset = format!("pool/{}/{uid}", ada.id);
    sessions
        .patch_status(
            &id,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"workspace": {"dataset": dataset}}})),
        )
        .await
        .unwrap();
    let retention = r#"{"keepLast": 3, "keepDays": 2}"#;
    sessions
        .patch(
            &id,
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"metadata": {"annotations": {SNAPSHOT_RETENTION_ANNOTATION: retention}}}),
            ),
        )
        .await
        .unwrap();
    let index = api.state().index().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !index.get(&id).is_some_and(|e| {
        e.session
            .metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(SNAPSHOT_RETENTION_ANNOTATION)
            && e.session.status.as_ref().unwrap().workspace.is_some()
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the index never saw the dataset"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let res = send(Method::POST, &snapshots_path, &ada, None).await;
    let taken = res.data(202);
    let sid = taken["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        res.header("location"),
        Some(format!("/api/v2/snapshots/{sid}").as_str())
    );
    let name = taken["snapshot"]["name"].as_str().unwrap().to_owned();
    assert!(name.starts_with("manual-"), "{taken}");
    assert_eq!(sid, format!("{id}-{name}"));
    let stored = records.get(&sid).await.unwrap();
    assert_eq!(
        stored.spec,
        WorkspaceSnapshotSpec {
            owner: ada.id.clone(),
            session: SnapshotSource {
                name: id.clone(),
                uid: uid.clone()
            },
            node: "node-a".into(),
            snapshot: format!("{dataset}@{name}"),
            reason: SnapshotReason::Manual,
        }
    );
    let labels = stored.metadata.labels.clone().unwrap();
    assert_eq!(labels[OWNER_LABEL], ada.id);
    assert_eq!(labels[SESSION_UID], uid);
    assert_eq!(
        stored.metadata.annotations.clone().unwrap()[SNAPSHOT_RETENTION_ANNOTATION],
        retention
    );
    assert!(stored.status.is_none(), "no status: the agent takes it");
    assert!(
        stored.metadata.finalizers.is_none(),
        "the agent adds its own"
    );
    // Read back from the watched cache.
    let got = send(Method::GET, &format!("/api/v2/snapshots/{sid}"), &ada, None)
        .await
        .data(200);
    assert_eq!(got["state"], "pending");
    let listed = send(
        Method::GET,
        &format!("/api/v2/snapshots?session={id}"),
        &ada,
        None,
    )
    .await
    .data(200);
    assert_eq!(listed[0]["id"], sid.as_str());

    // The agent's status: ready, and a new session may be restored from it.
    let now = jiff::Timestamp::now().to_string();
    records
        .patch_status(
            &sid,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {
                "takenAt": now, "sizeBytes": 4096,
                "conditions": [{"type": "ReadyToUse", "status": "True", "reason": "Taken", "message": "taken", "lastTransitionTime": now}],
            }})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = send(Method::GET, &format!("/api/v2/snapshots/{sid}"), &ada, None)
            .await
            .data(200);
        if got["state"] == "ready" {
            assert_eq!(got["size_bytes"], 4096);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never ready: {got}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let restored = send(
        Method::POST,
        "/api/v2/external/sessions",
        &ada,
        Some(json!({"restore_from": sid})),
    )
    .await
    .data(201);
    let restored_id = restored["session"]["id"].as_str().unwrap();
    assert_eq!(
        sessions
            .get(restored_id)
            .await
            .unwrap()
            .spec
            .workspace
            .unwrap()
            .restore_from,
        Some(sid.clone())
    );

    // No finalizer: gone at once.
    let res = send(
        Method::DELETE,
        &format!("/api/v2/snapshots/{sid}"),
        &ada,
        None,
    )
    .await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    assert!(records.get_opt(&sid).await.unwrap().is_none());
    send(Method::GET, &format!("/api/v2/snapshots/{sid}"), &ada, None)
        .await
        .problem(404, "not_found");

    // The agent's finalizer holds a record until it has destroyed the snapshot.
    let mut held = WorkspaceSnapshot::new(
        &format!("{id}-stop-1700000000000"),
        WorkspaceSnapshotSpec {
            owner: ada.id.clone(),
            session: SnapshotSource {
                name: id.clone(),
                uid: uid.clone(),
            },
            node: "node-a".into(),
            snapshot: format!("{dataset}@stop-1700000000000"),
            reason: SnapshotReason::Stop,
        },
    );
    held.metadata.finalizers = Some(vec![SNAPSHOT_FINALIZER.to_owned()]);
    let held_name = held.metadata.name.clone().unwrap();
    records.create(&PostParams::default(), &held).await.unwrap();
    let path = format!("/api/v2/snapshots/{held_name}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while send(Method::GET, &path, &ada, None).await.status != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "never listed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deleting = send(Method::DELETE, &path, &ada, None).await.data(202);
    assert_eq!(deleting["snapshot"]["state"], "deleting");
    assert!(
        records
            .get(&held_name)
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert_eq!(
        send(Method::GET, &path, &ada, None).await.data(200)["state"],
        "deleting"
    );
    records
        .patch(
            &held_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while send(Method::GET, &path, &ada, None).await.status != StatusCode::NOT_FOUND {
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(records.get_opt(&held_name).await.unwrap().is_none());

    scheduler.abort();
    api.shutdown().await;
    control_plane.shutdown().await;
}

/// Packs through the kube backend: `PUT /api/v2/admin/packs/{name}` writes
/// the exact Pack (and, replacing it, keeps what others wrote in its
/// metadata), `GET /api/v2/packs` lists what the control plane holds, a
/// create is held to it, `DELETE` removes it. The CRD refuses a GPU range
/// upside down written some other way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_against_the_embedded_control_plane() {
    let (control_plane, _nodes) = control_plane_with_node_a().await;
    let packs: KubeApi<Pack> = KubeApi::all(control_plane.client.clone());
    let (api, _) = api_on(&control_plane).await;
    let router = api.router();
    let send = async |method: Method, uri: &str, who: &Client, body: Option<serde_json::Value>| {
        let mut r = request(&router, method, uri).cookie(who);
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await
    };
    medforge_api::ensure_admin(
        api.state().db(),
        medforge_api::PasswordHashing::INSECURE_FAST,
        "root@example.org",
        Some("admin password"),
        medforge_api::ExistingAccount::Refuse,
    )
    .await
    .unwrap();
    let admin = client_from(
        &request(&router, Method::POST, "/api/v2/auth/login")
            .json(json!({"email": "root@example.org", "password": "admin password"}))
            .send()
            .await,
    );
    let ada = client_from(
        &request(&router, Method::POST, "/api/v2/auth/signup")
            .json(json!({"email": "ada@example.org", "password": "correct horse"}))
            .send()
            .await,
    );

    let image = format!(
        "registry.example.org/packs/jupyter@{}",
        crate::common::PACK_IMAGE
    );
    let created = send(
        Method::PUT,
        "/api/v2/admin/packs/jupyter",
        &admin,
        Some(json!({
            "image": image,
            "port": 8888,
            "command": ["jupyter", "lab"],
            "env": [{"name": "LAB", "value": "1"}],
            "display_name": "Jupyter",
            "description": "JupyterLab.",
            "exposures": ["external"],
            "resources": {"memory": "16Gi"},
            "session_defaults": {"gpus": 2},
            "minima": {"gpus": 1},
            "maxima": {"gpus": 2},
        })),
    )
    .await
    .data(201);
    assert_eq!(
        created["pack"]["gpus"],
        json!({"min": 1, "max": 2, "default": 2})
    );
    let expected: medforge_crds::PackSpec = serde_json::from_value(json!({
        "image": image,
        "port": 8888,
        "command": ["jupyter", "lab"],
        "env": [{"name": "LAB", "value": "1"}],
        "displayName": "Jupyter",
        "description": "JupyterLab.",
        "exposures": ["external"],
        "resources": {"memory": "16Gi"},
        "sessionDefaults": {"gpus": 2},
        "minima": {"gpus": 1},
        "maxima": {"gpus": 2},
    }))
    .unwrap();
    let stored = packs.get("jupyter").await.unwrap();
    assert_eq!(stored.spec, expected);
    // The object as the control plane keeps it: nothing more in its spec.
    let raw = serde_json::to_value(&stored).unwrap();
    assert_eq!(raw["spec"], serde_json::to_value(&expected).unwrap());

    // An admin's label stays when the api replaces the spec.
    packs
        .patch(
            "jupyter",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"team": "ml"}}})),
        )
        .await
        .unwrap();
    let replaced = send(
        Method::PUT,
        "/api/v2/admin/packs/jupyter",
        &admin,
        Some(json!({"image": image, "display_name": "Jupyter (old)", "deprecated": true})),
    )
    .await
    .data(200);
    assert_eq!(replaced["pack"]["deprecated"], true);
    let stored = packs.get("jupyter").await.unwrap();
    assert_eq!(
        stored.spec,
        serde_json::from_value(
            json!({"image": image, "displayName": "Jupyter (old)", "deprecated": true})
        )
        .unwrap()
    );
    assert_eq!(stored.metadata.labels.unwrap()["team"], "ml");

    // Listed from the control plane: admins see both, users the default.
    let names = |data: serde_json::Value| -> Vec<String> {
        data.as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = send(Method::GET, "/api/v2/packs", &admin, None)
        .await
        .data(200);
    assert_eq!(names(all.clone()), ["default", "jupyter"]);
    assert_eq!(all[1]["display_name"], "Jupyter (old)");
    assert_eq!(all[1]["deprecated"], true);
    let mine = send(Method::GET, "/api/v2/packs", &ada, None)
        .await
        .data(200);
    assert_eq!(names(mine), ["default"]);
    let problem = send(
        Method::POST,
        "/api/v2/external/sessions",
        &ada,
        Some(json!({"pack": "jupyter"})),
    )
    .await
    .problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["field"], "pack");

    // The CRD's own rule: a range upside down is refused, whoever writes it.
    let upside_down = pack(
        "upside-down",
        json!({"minima": {"gpus": 3}, "maxima": {"gpus": 2}}),
    );
    let refused = packs
        .create(&PostParams::default(), &upside_down)
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 422 && s.message.contains("minima.gpus")),
        "{refused:?}"
    );

    let res = send(Method::DELETE, "/api/v2/admin/packs/jupyter", &admin, None).await;
    assert_eq!(res.status, StatusCode::NO_CONTENT, "{}", res.text());
    assert!(packs.get_opt("jupyter").await.unwrap().is_none());
    send(Method::DELETE, "/api/v2/admin/packs/jupyter", &admin, None)
        .await
        .problem(404, "not_found");
}
