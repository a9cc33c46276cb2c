//! Session routes: create (bound, refused, timed out, wait=ready), list,
//! get, stop, start, delete. Every scenario runs on the embedded control
//! plane with the real scheduler (`Plane::scheduler()`), and with a node
//! agent (`Plane::agent()`) when its sessions must run or stop; one runs
//! with no scheduler at all.

use std::time::Duration;

use axum::http::Method;

use medforge_api::backend::{MAX_SESSIONS_ANNOTATION, OWNER_LABEL, SLUG_KEY};
use medforge_crds::{DesiredState, SessionPhase};
use serde_json::json;

use crate::common::{OneSession, Plane, TestApp, TestEnv, eventually, pack};

async fn create_binds_and_answers_201(env: TestEnv) {
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let body = json!({"gpus": 2, "idle_timeout": "30m", "max_lifetime": "12h",
                      "resources": {"cpu": "4", "memory": "16Gi", "shm": "2Gi", "pids": 4096}});
    let res = t.create_session(&ada, body).await;
    let data = res.data(201);
    assert_eq!(data["message"], "Session scheduled.");
    let s = &data["session"];
    let id = s["id"].as_str().unwrap();
    let slug = s["slug"].as_str().unwrap();
    assert_eq!(slug.len(), 8);
    assert!(
        slug.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert_eq!(s["exposure"], "external");
    assert_eq!(s["owner"], ada.id.as_str());
    assert_eq!(s["pack"], "default");
    assert_eq!(s["state"], "running");
    assert_eq!(s["gpu_count"], 2);
    assert_eq!(s["gpus"].as_array().unwrap().len(), 2);
    assert_eq!(s["node"], "node-a");
    // Bound; no agent runs it.
    assert_eq!(s["phase"], "scheduled", "{s}");
    assert_eq!(
        s["url"].as_str().unwrap(),
        format!("https://s-{slug}.external.medforge.test/")
    );
    assert!(s["created_at"].as_str().is_some());
    assert_eq!(s["error_message"], serde_json::Value::Null);
    // The resource as written, and bound by the scheduler.
    let session = t.stored(id).await.expect("Session resource");
    let status = session.status.clone().unwrap();
    assert_eq!(status.node_name.as_deref(), Some("node-a"));
    assert_eq!(status.gpus.len(), 2);
    assert_eq!(status.slug.as_deref(), Some(slug), "the slug the api chose");
    let labels = session.metadata.labels.clone().unwrap();
    assert_eq!(labels[OWNER_LABEL], ada.id);
    assert_eq!(labels[SLUG_KEY], slug);
    assert_eq!(
        session.metadata.annotations.clone().unwrap()[SLUG_KEY],
        slug
    );
    assert_eq!(session.spec.gpus, 2);
    assert_eq!(session.spec.idle_timeout.as_deref(), Some("30m"));
    assert_eq!(
        session.spec.resources.unwrap().memory.as_deref(),
        Some("16Gi")
    );
    // An empty body uses the defaults.
    let res = t.post_as(&ada, "/api/v2/external/sessions").await;
    assert_eq!(res.data(201)["session"]["gpu_count"], 1);
}

async fn create_rejects_bad_input(env: TestEnv) {
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let create = |body: serde_json::Value| t.create_session(&ada, body);
    let refused: [(serde_json::Value, &[&str]); 9] = [
        (json!({"gpus": 99}), &["gpus"]),
        (json!({"gpus": -1}), &["gpus"]),
        (json!({"gpus": "two"}), &["gpus"]),
        (json!({"pack": "Bad_Pack"}), &["pack"]),
        (
            json!({"idle_timeout": "forever", "max_lifetime": "1d"}),
            &["idle_timeout", "max_lifetime"],
        ),
        (
            json!({"resources": {"cpu": "lots", "pids": 1}}),
            &["resources.cpu", "resources.pids"],
        ),
        (json!({"resources": {"gpu": 1}}), &["resources.gpu"]),
        (json!({"owner": "someone"}), &["owner"]),
        (json!([1, 2]), &["body"]),
    ];
    for (body, fields) in refused {
        assert_eq!(create(body.clone()).await.error_fields(), fields, "{body}");
    }
    t.post_as(&ada, "/api/v2/external/sessions?wait=soon")
        .await
        .problem(422, "validation_failed");
    let malformed: [(&str, Vec<u8>, u16, &str); 3] = [
        ("application/json", b"{".to_vec(), 400, "malformed_json"),
        (
            "application/x-www-form-urlencoded",
            b"gpus=1".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/json",
            vec![b' '; 200 * 1024],
            413,
            "payload_too_large",
        ),
    ];
    for (content_type, body, status, code) in malformed {
        t.post("/api/v2/external/sessions")
            .cookie(&ada)
            .body(Some(content_type), body)
            .send()
            .await
            .problem(status, code);
    }
    t.post("/api/v2/external/sessions")
        .json(json!({}))
        .send()
        .await
        .problem(401, "unauthenticated");
    assert!(t.stored_sessions().await.is_empty(), "nothing was created");
}

async fn each_maximum_is_enforced_and_named(env: TestEnv) {
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    // The default policy's maxima (`SessionPolicy::default`), one over each.
    let over: [(serde_json::Value, &str, &str); 8] = [
        (json!({"gpus": 9}), "gpus", "9 is above the maximum 8"),
        (
            json!({"resources": {"cpu": "33"}}),
            "resources.cpu",
            "33 is above the maximum 32",
        ),
        (
            json!({"resources": {"memory": "999Ti"}}),
            "resources.memory",
            "999Ti is above the maximum 256Gi",
        ),
        (
            json!({"resources": {"shm": "900Gi"}}),
            "resources.shm",
            "900Gi is above the maximum 64Gi",
        ),
        (
            json!({"resources": {"pids": 1_000_000}}),
            "resources.pids",
            "1000000 is above the maximum 32768",
        ),
        (
            json!({"workspace_quota": "2Ti"}),
            "workspace_quota",
            "2Ti is above the maximum 1Ti",
        ),
        (
            json!({"idle_timeout": "169h"}),
            "idle_timeout",
            "169h is above the maximum 168h",
        ),
        (
            json!({"max_lifetime": "721h"}),
            "max_lifetime",
            "721h is above the maximum 720h",
        ),
    ];
    for (body, field, message) in over {
        let problem = t
            .create_session(&ada, body.clone())
            .await
            .problem(422, "validation_failed");
        let errors = problem["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{problem}");
        assert_eq!(errors[0]["field"], field, "{problem}");
        assert_eq!(
            errors[0]["message"],
            format!("{message} (the operator's policy)"),
            "{problem}"
        );
    }
    // Several at once are all named.
    let all =
        json!({"gpus": 9, "resources": {"memory": "999Ti", "pids": 1_000_000, "shm": "900Gi"}});
    assert_eq!(
        t.create_session(&ada, all).await.error_fields(),
        [
            "resources.memory",
            "resources.shm",
            "resources.pids",
            "gpus"
        ]
    );
    assert!(t.stored_sessions().await.is_empty(), "nothing was created");

    // A Pack's maxima are lower still, and say so; a GPU count the body
    // leaves out is lowered to the Pack's maximum, not refused.
    t.cluster()
        .put_pack(pack(
            "small",
            json!({"maxima": {"memory": "4Gi", "gpus": 0, "idleTimeout": "1h"}}),
        ))
        .await;
    let problem = t
        .create_session(
            &ada,
            json!({"pack": "small", "resources": {"memory": "5Gi"}, "idle_timeout": "2h"}),
        )
        .await
        .problem(422, "validation_failed");
    let messages: Vec<String> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}: {}",
                e["field"].as_str().unwrap(),
                e["message"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            "resources.memory: 5Gi is above the maximum 4Gi (Pack small)",
            "idle_timeout: 2h is above the maximum 1h (Pack small)",
        ]
    );
    assert_eq!(
        t.create_session(&ada, json!({"pack": "small", "gpus": 1}))
            .await
            .error_fields(),
        ["gpus"]
    );
    // At the maxima, and with the GPU count left to the Pack, it is
    // created (and bound without a GPU: this scheduler allows it, as the
    // quickstart's does).
    let res = t
        .create_session(
            &ada,
            json!({"pack": "small", "resources": {"memory": "4Gi"}, "idle_timeout": "1h"}),
        )
        .await;
    let created = res.data(201)["session"].clone();
    assert_eq!(created["gpu_count"], 0);
    let stored = t.stored(created["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(stored.spec.gpus, 0);
    assert_eq!(stored.spec.idle_timeout.as_deref(), Some("1h"));

    // A Pack's default GPU count is what a body without one gets.
    t.cluster()
        .put_pack(pack("duo", json!({"sessionDefaults": {"gpus": 2}})))
        .await;
    let bob = t.user("bob@example.org").await;
    let res = t.create_session(&bob, json!({"pack": "duo"})).await;
    let created = res.data(201)["session"].clone();
    assert_eq!(created["gpu_count"], 2);
    assert_eq!(created["gpus"].as_array().unwrap().len(), 2, "{created}");
}

async fn internal_sessions_need_permission(env: TestEnv) {
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    t.post_as(&ada, "/api/v2/internal/sessions")
        .await
        .problem(403, "internal_not_allowed");
    assert!(t.stored_sessions().await.is_empty());
    t.req(
        axum::http::Method::PATCH,
        &format!("/api/v2/admin/users/{}", ada.id),
    )
    .cookie(&admin)
    .json(json!({"can_use_internal": true}))
    .send()
    .await
    .data(200);
    let res = t.post_as(&ada, "/api/v2/internal/sessions").await;
    let s = res.data(201)["session"].clone();
    assert_eq!(s["exposure"], "internal");
    assert!(
        s["url"]
            .as_str()
            .unwrap()
            .ends_with(".internal.medforge.test/")
    );
    // Admins may always.
    t.post_as(&admin, "/api/v2/internal/sessions")
        .await
        .data(201);
}

async fn refused_sessions_give_409_and_leave_nothing(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let ada = t.user("ada@example.org").await;
    let res = t.create_session(&ada, json!({"gpus": 5})).await;
    res.problem_mentioning(409, "no_gpu_available", "GPU");
    assert!(
        t.stored_sessions().await.is_empty(),
        "the refused Session is deleted"
    );

    // The per-user limit override travels as an annotation; the scheduler enforces it.
    let admin = t.admin("root@example.org").await;
    t.req(
        axum::http::Method::PATCH,
        &format!("/api/v2/admin/users/{}", ada.id),
    )
    .cookie(&admin)
    .json(json!({"max_sessions": 1}))
    .send()
    .await
    .data(200);
    let first = t.session(&ada).await;
    let first_id = first["id"].as_str().unwrap();
    let stored = t.stored(first_id).await.unwrap();
    assert_eq!(
        stored.metadata.annotations.unwrap()[MAX_SESSIONS_ANNOTATION],
        "1"
    );
    t.post_as(&ada, "/api/v2/external/sessions")
        .await
        .problem(409, "user_limit_reached");
    assert_eq!(t.stored_sessions().await.len(), 1);
    // Once stopped (by its agent), it no longer counts.
    t.post_as(&ada, &format!("/api/v2/external/sessions/{first_id}/stop"))
        .await
        .data(202);
    t.wait_phase(first_id, "stopped").await;
    t.session(&ada).await;
}

async fn concurrent_creates_at_limit_one(env: TestEnv) {
    let t = env
        .on(Plane {
            user_limit: 1,
            ..Plane::scheduler()
        })
        .await;
    let ada = t.user("ada@example.org").await;
    let create = || t.post("/api/v2/external/sessions").cookie(&ada).send();
    let (a, b) = tokio::join!(create(), create());
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 409], "{} / {}", a.text(), b.text());
    let refused = if a.status.as_u16() == 409 { &a } else { &b };
    refused.problem(409, "user_limit_reached");
    assert_eq!(
        t.stored_sessions().await.len(),
        1,
        "exactly one Session remains"
    );
}

/// `Idempotency-Key`: a retry with the same key and body gets the session
/// the first request created (201 again, `Idempotent-Replayed: true`) and
/// creates nothing, also when retries race; another body or exposure with
/// the key is 409; another user's key of the same text is theirs alone; a
/// bad key is 400; quotas still hold.
async fn idempotency_keys_make_retried_creates_return_the_first_session(env: TestEnv) {
    let t = env
        .on(Plane {
            user_limit: 2,
            ..Plane::scheduler()
        })
        .await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let keyed = |who: &crate::common::Client, key: &str, body: serde_json::Value| {
        t.post("/api/v2/external/sessions")
            .cookie(who)
            .header("idempotency-key", key)
            .json(body)
            .send()
    };
    let key = "9b2f6c1e-retry-key";
    let body = json!({"gpus": 1, "idle_timeout": "30m"});
    // Sent three times at once (a client retrying on other replicas before
    // the first answers): one creates, the others get its session.
    let (a, b, c) = tokio::join!(
        keyed(&ada, key, body.clone()),
        keyed(&ada, key, body.clone()),
        keyed(&ada, key, body.clone())
    );
    let id = a.data(201)["session"]["id"].as_str().unwrap().to_owned();
    for res in [&b, &c] {
        assert_eq!(res.data(201)["session"]["id"], id.as_str());
    }
    let replayed: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|r| r.header("idempotent-replayed"))
        .collect();
    assert_eq!(
        replayed.iter().filter(|r| r.is_none()).count(),
        1,
        "one created it: {replayed:?}"
    );
    assert_eq!(t.stored_sessions().await.len(), 1);
    let stored = t.stored(&id).await.expect("the Session");
    let stamp = &stored.metadata.annotations.clone().unwrap()["medforge.dev/idempotency"];
    assert!(stamp.starts_with(&format!("{}/", ada.id)), "{stamp}");

    // The same body, written differently: the same session, nothing new.
    let again = keyed(
        &ada,
        key,
        json!({"idle_timeout": "30m", "gpus": 1.0, "pack": null}),
    )
    .await;
    let data = again.data(201);
    assert_eq!(data["session"]["id"], id.as_str());
    assert_eq!(data["message"], "Session scheduled.");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Retries racing each other: all get it.
    let (a, b, c) = tokio::join!(
        keyed(&ada, key, body.clone()),
        keyed(&ada, key, body.clone()),
        keyed(&ada, key, body.clone())
    );
    for res in [a, b, c] {
        assert_eq!(res.data(201)["session"]["id"], id.as_str());
    }
    assert_eq!(
        t.stored_sessions().await.len(),
        1,
        "one Session for every retry"
    );

    // Another body with the key: refused, nothing created.
    keyed(&ada, key, json!({"gpus": 2, "idle_timeout": "30m"}))
        .await
        .problem(409, "idempotency_key_reused");
    keyed(&ada, key, json!({}))
        .await
        .problem(409, "idempotency_key_reused");
    assert_eq!(t.stored_sessions().await.len(), 1);

    // Bob's key of the same text is his: a session of his own.
    let bobs = keyed(&bob, key, body.clone()).await.data(201)["session"].clone();
    assert_ne!(bobs["id"], id.as_str());
    assert_eq!(bobs["owner"], bob.id.as_str());
    let bobs_again = keyed(&bob, key, body.clone()).await;
    assert_eq!(bobs_again.data(201)["session"]["id"], bobs["id"]);
    assert_eq!(t.stored_sessions().await.len(), 2);

    // Quotas hold for keyed creates; a retry is no new session.
    t.create_session(&ada, json!({"gpus": 1})).await.data(201);
    keyed(&ada, "another-key", body.clone())
        .await
        .problem(409, "user_limit_reached");
    assert_eq!(
        keyed(&ada, key, body.clone()).await.data(201)["session"]["id"],
        id.as_str()
    );
    assert_eq!(t.stored_sessions().await.len(), 3);

    // The same key and body on the other exposure is another request.
    let root = t.admin("root@example.org").await;
    t.post("/api/v2/external/sessions")
        .cookie(&root)
        .header("idempotency-key", "exposure-key")
        .json(json!({"gpus": 1}))
        .send()
        .await
        .data(201);
    t.post("/api/v2/internal/sessions")
        .cookie(&root)
        .header("idempotency-key", "exposure-key")
        .json(json!({"gpus": 1}))
        .send()
        .await
        .problem(409, "idempotency_key_reused");

    // Bad keys: 400 naming the header, nothing created.
    let before = t.stored_sessions().await.len();
    for bad in ["", "has space", "a,b", "quote\"d", &"k".repeat(129)] {
        let problem = keyed(&bob, bad, body.clone())
            .await
            .problem(400, "invalid_idempotency_key");
        assert_eq!(problem["errors"][0]["field"], "Idempotency-Key", "{bad:?}");
    }
    let twice = t
        .post("/api/v2/external/sessions")
        .cookie(&bob)
        .header("idempotency-key", "one")
        .header("idempotency-key", "two")
        .json(body.clone())
        .send()
        .await;
    twice.problem(400, "invalid_idempotency_key");
    assert_eq!(t.stored_sessions().await.len(), before);
    // The longest key is taken: the create reaches the scheduler (and
    // finds every GPU of node-a held).
    keyed(&bob, &"k".repeat(128), body.clone())
        .await
        .problem(409, "no_gpu_available");
}

/// The case `Idempotency-Key` is for: a replica cut off after it wrote the
/// Session, before it answered (here: the request is dropped while it waits
/// for Ready, as a killed process drops it), and the client's retry on
/// another replica (its own watch and index, the same database and control
/// plane), which gets that session and creates none.
async fn a_create_cut_after_its_write_is_retried_on_another_replica(env: TestEnv) {
    // No node agent: `wait=ready` holds the first request open once bound.
    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let other = medforge_api::Api::with_db(
        t.state().config().clone(),
        t.state().db().clone(),
        t.cluster().backend(),
    );
    assert!(other.wait_synced(Duration::from_secs(10)).await);
    let body = json!({"gpus": 1});
    let first = t
        .post("/api/v2/external/sessions?wait=ready")
        .cookie(&ada)
        .header("idempotency-key", "cut-after-write")
        .json(body.clone())
        .send();
    let written = eventually("the first create's Session", async || {
        let stored = t.stored_sessions().await;
        (stored.len() == 1).then(|| stored[0].metadata.name.clone().unwrap())
    });
    let name = tokio::select! {
        res = first => panic!("the first create answered before it was cut: {}", res.text()),
        name = written => name,
    };
    let retry = crate::common::request(&other.router(), Method::POST, "/api/v2/external/sessions")
        .cookie(&ada)
        .header("idempotency-key", "cut-after-write")
        .json(body)
        .send()
        .await;
    assert_eq!(retry.header("idempotent-replayed"), Some("true"));
    let data = retry.data(201);
    assert_eq!(data["session"]["id"], name.as_str());
    assert_eq!(data["session"]["owner"], ada.id.as_str());
    assert_eq!(t.stored_sessions().await.len(), 1, "no second Session");
}

async fn create_gives_up_when_the_scheduler_is_silent(env: TestEnv) {
    // No scheduler runs.
    let t = env
        .on_with(
            |c| c.sessions.schedule_timeout = Duration::from_millis(200),
            Plane::no_scheduler(),
        )
        .await;
    let ada = t.user("ada@example.org").await;
    let res = t.post_as(&ada, "/api/v2/external/sessions").await;
    res.problem(503, "scheduler_timeout");
    assert_eq!(res.header("retry-after"), Some("5"));
    assert!(t.stored_sessions().await.is_empty());
    // The control plane down: 503 too.
    t.cluster().stop_control_plane().await;
    t.post_as(&ada, "/api/v2/external/sessions")
        .await
        .problem(503, "control_plane_unavailable");
}

async fn wait_ready_returns_once_ready(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let ada = t.user("ada@example.org").await;
    let res = t
        .post_as(&ada, "/api/v2/external/sessions?wait=ready")
        .await;
    let data = res.data(201);
    assert_eq!(data["message"], "Session ready.");
    assert_eq!(data["session"]["phase"], "running");
    assert_eq!(data["session"]["ready"], true);
    assert!(data["session"]["started_at"].as_str().is_some());
}

async fn wait_ready_answers_202_or_409_when_not_ready(env: TestEnv) {
    let t = env
        .on_with(
            |c| c.sessions.ready_timeout = Duration::from_secs(2),
            Plane::agent(),
        )
        .await;
    let ada = t.user("ada@example.org").await;
    // The workload does not listen yet: not Ready within the wait.
    t.cluster().ports.set_open(false);
    let res = t
        .post_as(&ada, "/api/v2/external/sessions?wait=ready")
        .await;
    let data = res.data(202);
    assert_eq!(data["session"]["phase"], "starting", "{data}");
    assert_eq!(data["session"]["ready"], false);

    // A session that fails while starting: its Pack's image is not on the
    // node, and a local image id cannot be pulled.
    t.cluster()
        .put_pack(pack(
            "elsewhere",
            json!({"image": format!("sha256:{}", "b".repeat(64))}),
        ))
        .await;
    let res = t
        .post("/api/v2/external/sessions?wait=ready")
        .cookie(&ada)
        .json(json!({"pack": "elsewhere"}))
        .send()
        .await;
    res.problem_mentioning(409, "session_failed", "not present on node node-a");
}

async fn list_shows_own_sessions_paginated(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let admin = t.admin("root@example.org").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(t.session(&ada).await["id"].as_str().unwrap().to_owned());
    }
    let bobs = t.session(&bob).await;
    // Newest first, one per page.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            None => "/api/v2/external/sessions?limit=1".to_owned(),
            Some(c) => format!("/api/v2/external/sessions?limit=1&cursor={c}"),
        };
        let res = t.get_as(&ada, &uri).await;
        let body = res.json();
        let page = res.data(200);
        assert_eq!(page.as_array().unwrap().len(), 1);
        assert_eq!(body["meta"]["limit"], 1);
        seen.push(page[0]["id"].as_str().unwrap().to_owned());
        if body["meta"]["has_more"] == false {
            assert!(body["meta"]["next_cursor"].is_null());
            break;
        }
        cursor = Some(body["meta"]["next_cursor"].as_str().unwrap().to_owned());
    }
    let mut expected = ids.clone();
    expected.sort();
    let mut got = seen.clone();
    got.sort();
    assert_eq!(got, expected, "each of ada's sessions once, none of bob's");
    // Admins see everyone's; and can filter by owner.
    let all = t
        .get_as(&admin, "/api/v2/external/sessions")
        .await
        .data(200);
    assert_eq!(all.as_array().unwrap().len(), 4);
    let bob_only = t
        .get_as(
            &admin,
            &format!("/api/v2/external/sessions?owner={}", bob.id),
        )
        .await
        .data(200);
    assert_eq!(bob_only[0]["id"], bobs["id"]);
    assert_eq!(bob_only.as_array().unwrap().len(), 1);
    // State filter.
    t.post_as(&ada, &format!("/api/v2/external/sessions/{}/stop", ids[0]))
        .await
        .data(202);
    t.wait_phase(&ids[0], "stopped").await;
    let stopped = t
        .get_as(&ada, "/api/v2/external/sessions?state=stopped")
        .await
        .data(200);
    assert_eq!(stopped.as_array().unwrap().len(), 1);
    assert_eq!(stopped[0]["id"], ids[0].as_str());
    let active = t
        .get_as(&ada, "/api/v2/external/sessions?state=active")
        .await
        .data(200);
    assert_eq!(active.as_array().unwrap().len(), 2);
    // The internal list is separate.
    let internal = t.get_as(&ada, "/api/v2/internal/sessions").await.data(200);
    assert!(internal.as_array().unwrap().is_empty());
    // Errors.
    let bad = |q: &str| {
        t.get(&format!("/api/v2/external/sessions?{q}"))
            .cookie(&ada)
            .send()
    };
    assert_eq!(bad("state=sleeping").await.error_fields(), ["state"]);
    assert_eq!(bad("limit=0").await.error_fields(), ["limit"]);
    assert_eq!(bad("limit=lots").await.error_fields(), ["limit"]);
    assert_eq!(bad("cursor=%21%21").await.error_fields(), ["cursor"]);
    assert_eq!(
        bad(&format!("owner={}", bob.id)).await.error_fields(),
        ["owner"]
    );
    t.refuses_anonymous(Method::GET, "/api/v2/external/sessions")
        .await;
}

impl OneSession {
    /// `method /api/v2/external/sessions/{id}{rest}` is a 404 for the other
    /// user, a 401 without a login, and a 404 for the owner with an id that
    /// names nothing.
    async fn hides_from_others(&self, method: Method, rest: &str) {
        for (id, who, status, code) in [
            (self.id.as_str(), Some(&self.other), 404, "not_found"),
            (self.id.as_str(), None, 401, "unauthenticated"),
            ("nope", Some(&self.owner), 404, "not_found"),
        ] {
            let path = format!("/api/v2/external/sessions/{id}{rest}");
            self.t
                .problem(method.clone(), &path, who, status, code)
                .await;
        }
    }
}

async fn get_shows_one_session_to_its_owner(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    t.wait_phase(id, "running").await;
    let path = format!("/api/v2/external/sessions/{id}");
    let got = t.get_as(&f.owner, &path).await.data(200);
    assert_eq!(got["id"], id);
    assert_eq!(got["phase"], "running");
    assert_eq!(got["ready"], true);
    t.get_as(&f.admin, &path).await.data(200);
    f.hides_from_others(Method::GET, "").await;
    let internal = format!("/api/v2/internal/sessions/{id}");
    t.problem(Method::GET, &internal, Some(&f.owner), 404, "not_found")
        .await;
}

async fn stop_is_idempotent(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    f.hides_from_others(Method::POST, "/stop").await;
    let path = format!("/api/v2/external/sessions/{id}/stop");
    let first = t.post_as(&f.owner, &path).await.data(202);
    assert_eq!(first["message"], "Session stop requested.");
    assert_eq!(first["session"]["state"], "stopped");
    assert_eq!(
        t.stored(id).await.unwrap().spec.state,
        DesiredState::Stopped
    );
    t.wait_phase(id, "stopped").await;
    let again = t.post_as(&f.owner, &path).await.data(202);
    assert_eq!(again["message"], "Session is already terminal.");
    assert_eq!(again["session"]["phase"], "stopped");
    assert!(again["session"]["stopped_at"].as_str().is_some());
}

async fn start_resumes_a_stopped_session_on_the_same_url(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    let (t, id) = (&f.t, f.id.as_str());
    f.hides_from_others(Method::POST, "/start").await;
    let path = format!("/api/v2/external/sessions/{id}/start");
    t.wait_phase(id, "running").await;
    let view = |v: &serde_json::Value| v["session"].clone();
    let running = t.post_as(&f.owner, &path).await.data(202);
    assert_eq!(
        running["message"],
        "Session is already running or starting."
    );
    let generation = t.stored(id).await.unwrap().metadata.generation;
    assert_eq!(
        t.stored(id).await.unwrap().metadata.generation,
        generation,
        "nothing written for a running session"
    );

    t.post_as(&f.owner, &format!("/api/v2/external/sessions/{id}/stop"))
        .await
        .data(202);
    t.wait_phase(id, "stopped").await;
    let before = t
        .get_as(&f.owner, &format!("/api/v2/external/sessions/{id}"))
        .await
        .data(200);
    let started = t.post_as(&f.owner, &path).await.data(202);
    assert_eq!(started["message"], "Session starting.");
    assert_eq!(view(&started)["state"], "running");
    assert_ne!(view(&started)["phase"], "stopped");
    let stored = t.stored(id).await.unwrap();
    assert_eq!(stored.spec.state, DesiredState::Running);
    assert!(stored.spec.resume_requested_at.is_some());
    assert_eq!(
        stored.status.as_ref().unwrap().gpus.len(),
        1,
        "GPUs bound again"
    );
    t.wait_phase(id, "running").await;
    let after = t
        .get_as(&f.owner, &format!("/api/v2/external/sessions/{id}"))
        .await
        .data(200);
    assert_eq!(after["url"], before["url"], "the same URL");
    assert!(after["url"].as_str().is_some());

    // A session that ended on its own (its container died: Failed) keeps
    // `state: running`; start still works.
    t.cluster().kill_container(id, 1).await;
    t.wait_phase(id, "failed").await;
    let failed = t.stored(id).await.unwrap();
    assert_eq!(failed.spec.state, DesiredState::Running);
    assert_eq!(
        failed.status.unwrap().reason.as_deref(),
        Some("ContainerExited")
    );
    let again = t.post_as(&f.admin, &path).await.data(202);
    assert_eq!(
        again["message"], "Session starting.",
        "admins may start it too"
    );
    t.wait_phase(id, "running").await;
}

async fn two_starts_racing_for_the_last_gpus_one_wins(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let carol = t.user("carol@example.org").await;
    let mut ids = Vec::new();
    for who in [&ada, &bob] {
        let s = t.create_session(who, json!({"gpus": 2})).await.data(201);
        let id = s["session"]["id"].as_str().unwrap().to_owned();
        t.post_as(who, &format!("/api/v2/external/sessions/{id}/stop"))
            .await
            .data(202);
        t.wait_phase(&id, "stopped").await;
        ids.push(id);
    }
    // Carol takes two of the node's four GPUs: two are left for two resumes of two.
    t.create_session(&carol, json!({"gpus": 2})).await.data(201);
    let (path_a, path_b) = (
        format!("/api/v2/external/sessions/{}/start", ids[0]),
        format!("/api/v2/external/sessions/{}/start", ids[1]),
    );
    let (a, b) = tokio::join!(t.post_as(&ada, &path_a), t.post_as(&bob, &path_b));
    let (winner, loser) = match (a.status.as_u16(), b.status.as_u16()) {
        (202, 409) => ((a, &ids[0]), (b, &ids[1])),
        (409, 202) => ((b, &ids[1]), (a, &ids[0])),
        other => panic!(
            "expected one 202 and one 409, got {other:?}: {} / {}",
            a.text(),
            b.text()
        ),
    };
    winner.0.data(202);
    loser.0.problem_mentioning(409, "no_gpu_available", "GPU");
    let lost = t.stored(loser.1).await.unwrap();
    assert_eq!(
        lost.spec.state,
        DesiredState::Stopped,
        "the refused start is withdrawn"
    );
    assert_eq!(lost.phase(), SessionPhase::Stopped);
    assert!(lost.status.unwrap().gpus.is_empty());
    t.wait_phase(winner.1, "running").await;
}

async fn delete_is_for_admins(env: TestEnv) {
    let f = env.one_session_on(Plane::agent()).await;
    f.t.wait_phase(&f.id, "running").await;
    let (t, id) = (&f.t, f.id.as_str());
    let path = format!("/api/v2/external/sessions/{id}");
    let delete = |p: &str| t.req(Method::DELETE, p).cookie(&f.admin).send();
    t.refuses_anonymous(Method::DELETE, &path).await;
    t.problem(Method::DELETE, &path, Some(&f.owner), 403, "admin_required")
        .await;
    delete("/api/v2/external/sessions/nope")
        .await
        .problem(404, "not_found");
    let res = delete(&path).await;
    assert_eq!(res.status.as_u16(), 204, "{}", res.text());
    assert!(res.body.is_empty());
    assert!(res.header("x-request-id").is_some());
    // The agent's finalizer holds it until its container and workspace are
    // dealt with.
    eventually("the Session gone", async || {
        t.stored(id).await.is_none().then_some(())
    })
    .await;
    t.wait_phase_gone(id).await;
    delete(&path).await.problem(404, "not_found");
}

impl TestApp {
    async fn wait_phase_gone(&self, id: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.state().index().get(id).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} stays in the index"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The create workflow without HTTP: a principal and a body in, a bound
/// session out; a body the api refuses never reaches the control plane.
async fn create_session_is_a_function_of_its_own(env: TestEnv) {
    use medforge_api::sessions::{CreateSession, Created, create_session};
    use medforge_api::tokens::Principal;
    use medforge_crds::Exposure;

    let t = env.on(Plane::scheduler()).await;
    let ada = t.user("ada@example.org").await;
    let user = medforge_api::users::get_user(t.state().db(), &ada.id)
        .await
        .unwrap()
        .unwrap();
    let principal = Principal {
        user,
        token_hash: [0; 32],
    };
    let body = CreateSession {
        gpus: Some(1),
        ..CreateSession::default()
    };
    let created = create_session(t.state(), &principal, Exposure::External, body, false)
        .await
        .unwrap();
    let Created::Scheduled(entry) = created else {
        panic!("{created:?}");
    };
    let stored = t.stored(&entry.name).await.expect("the Session exists");
    assert_eq!(stored.spec.owner, ada.id);
    assert_eq!(stored.spec.gpus, 1);

    let bad = CreateSession {
        idle_timeout: Some("1d".into()),
        ..CreateSession::default()
    };
    let err = create_session(t.state(), &principal, Exposure::External, bad, false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, medforge_api::ApiError::Validation(e) if e[0].field == "idle_timeout"),
        "{err:?}"
    );
    let refused = create_session(
        t.state(),
        &principal,
        Exposure::Internal,
        CreateSession::default(),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&refused, medforge_api::ApiError::Forbidden { code, .. } if *code == "internal_not_allowed"),
        "{refused:?}"
    );
    assert_eq!(
        t.stored_sessions().await.len(),
        1,
        "only the first reached the control plane"
    );
}

crate::scenarios!(
    create_binds_and_answers_201,
    create_session_is_a_function_of_its_own,
    create_rejects_bad_input,
    each_maximum_is_enforced_and_named,
    internal_sessions_need_permission,
    refused_sessions_give_409_and_leave_nothing,
    concurrent_creates_at_limit_one,
    idempotency_keys_make_retried_creates_return_the_first_session,
    a_create_cut_after_its_write_is_retried_on_another_replica,
    create_gives_up_when_the_scheduler_is_silent,
    wait_ready_returns_once_ready,
    wait_ready_answers_202_or_409_when_not_ready,
    list_shows_own_sessions_paginated,
    get_shows_one_session_to_its_owner,
    stop_is_idempotent,
    start_resumes_a_stopped_session_on_the_same_url,
    two_starts_racing_for_the_last_gpus_one_wins,
    delete_is_for_admins,
);
