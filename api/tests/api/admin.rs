//! Admin routes: nodes and cordons, all sessions, users.

use axum::http::Method;
use serde_json::json;

use crate::common::TestEnv;

async fn nodes_show_free_and_used_gpus(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    t.refuses_anonymous(Method::GET, "/api/v2/admin/nodes")
        .await;
    t.get_as(&ada, "/api/v2/admin/nodes")
        .await
        .problem(403, "admin_required");
    let s = t.session(&ada).await;
    let nodes = t.get_as(&admin, "/api/v2/admin/nodes").await.data(200);
    let node = &nodes[0];
    assert_eq!(node["name"], "node-a");
    assert_eq!(node["ready"], true);
    assert_eq!(node["total"], 4);
    assert_eq!(node["used"], 1);
    assert_eq!(node["free"], 3);
    let held: Vec<_> = node["gpus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| !g["session"].is_null())
        .collect();
    assert_eq!(held.len(), 1);
    assert!(
        held[0]["session"]
            .as_str()
            .unwrap()
            .ends_with(s["id"].as_str().unwrap())
    );
}

async fn cordon_and_uncordon_nodes_and_gpus(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    let nodes = "/api/v2/admin/nodes";
    for (action, who, status, code) in [
        ("node-a/cordon", None, 401, "unauthenticated"),
        ("node-a/cordon", Some(&ada), 403, "admin_required"),
        ("nope/cordon", Some(&admin), 404, "not_found"),
        ("nope/uncordon", Some(&admin), 404, "not_found"),
        ("node-a/gpus/9/cordon", Some(&admin), 404, "not_found"),
        ("nope/gpus/0/uncordon", Some(&admin), 404, "not_found"),
        ("node-a/gpus/0/cordon", Some(&ada), 403, "admin_required"),
        ("node-a/gpus/0/uncordon", None, 401, "unauthenticated"),
    ] {
        let path = format!("{nodes}/{action}");
        t.problem(Method::POST, &path, who, status, code).await;
    }
    // `action` on node-a, as the admin.
    let as_admin = |action: &str| {
        t.post(&format!("{nodes}/node-a/{action}"))
            .cookie(&admin)
            .send()
    };

    let node = as_admin("cordon").await.data(200);
    assert_eq!(node["unschedulable"], true);
    assert_eq!(node["free"], 0);
    t.post_as(&ada, "/api/v2/external/sessions")
        .await
        .problem(409, "no_gpu_available");
    let node = as_admin("uncordon").await.data(200);
    assert_eq!(node["unschedulable"], false);
    assert_eq!(node["free"], 4);

    // One GPU, by index and by UUID.
    let node = as_admin("gpus/0/cordon").await.data(200);
    assert_eq!(node["gpus"][0]["cordoned"], true);
    assert_eq!(node["free"], 3);
    let node = as_admin("gpus/GPU-node-a-1/cordon").await.data(200);
    assert_eq!(node["free"], 2);
    t.create_session(&ada, json!({"gpus": 3}))
        .await
        .problem(409, "no_gpu_available");
    as_admin("gpus/0/uncordon").await.data(200);
    let node = as_admin("gpus/GPU-node-a-1/uncordon").await.data(200);
    assert_eq!(node["free"], 4);
}

async fn admins_list_every_session(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let admin = t.admin("root@example.org").await;
    t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", bob.id))
        .cookie(&admin)
        .json(json!({"can_use_internal": true}))
        .send()
        .await
        .data(200);
    t.session(&ada).await;
    t.post_as(&bob, "/api/v2/internal/sessions").await.data(201);
    let all = t.get_as(&admin, "/api/v2/admin/sessions").await.data(200);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let bobs = t
        .get_as(&admin, &format!("/api/v2/admin/sessions?owner={}", bob.id))
        .await
        .data(200);
    assert_eq!(bobs[0]["exposure"], "internal");
    assert_eq!(bobs.as_array().unwrap().len(), 1);
    t.get_as(&ada, "/api/v2/admin/sessions")
        .await
        .problem(403, "admin_required");
    t.refuses_anonymous(Method::GET, "/api/v2/admin/sessions")
        .await;
    assert_eq!(
        t.get_as(&admin, "/api/v2/admin/sessions?state=nope")
            .await
            .error_fields(),
        ["state"]
    );
}

async fn admins_manage_users(env: TestEnv) {
    let t = env.app().await;
    let admin = t.admin("root@example.org").await;
    let mut emails = Vec::new();
    for i in 0..3 {
        emails.push(t.user(&format!("user{i}@example.org")).await);
    }
    // Paginated by email.
    let res = t.get_as(&admin, "/api/v2/admin/users?limit=2").await;
    let body = res.json();
    assert_eq!(res.data(200).as_array().unwrap().len(), 2);
    assert_eq!(body["meta"]["has_more"], true);
    let cursor = body["meta"]["next_cursor"].as_str().unwrap();
    let rest = t
        .get_as(
            &admin,
            &format!("/api/v2/admin/users?limit=2&cursor={cursor}"),
        )
        .await
        .data(200);
    assert_eq!(rest.as_array().unwrap().len(), 2, "4 users in all");
    assert_eq!(
        t.get_as(&admin, "/api/v2/admin/users?limit=0")
            .await
            .error_fields(),
        ["limit"]
    );
    assert_eq!(
        t.get_as(&admin, "/api/v2/admin/users?cursor=*")
            .await
            .error_fields(),
        ["cursor"]
    );
    t.get("/api/v2/admin/users")
        .cookie(&emails[0])
        .send()
        .await
        .problem(403, "admin_required");
    t.refuses_anonymous(Method::GET, "/api/v2/admin/users")
        .await;
    t.req(
        Method::PATCH,
        &format!("/api/v2/admin/users/{}", emails[1].id),
    )
    .json(json!({"is_admin": true}))
    .send()
    .await
    .problem(401, "unauthenticated");
    t.req(
        Method::PATCH,
        &format!("/api/v2/admin/users/{}", emails[1].id),
    )
    .cookie(&emails[0])
    .json(json!({"is_admin": true}))
    .send()
    .await
    .problem(403, "admin_required");

    let patch = |id: &str, body: serde_json::Value| {
        t.req(Method::PATCH, &format!("/api/v2/admin/users/{id}"))
            .cookie(&admin)
            .json(body)
            .send()
    };
    let user = &emails[0];
    let updated = patch(&user.id, json!({"is_admin": true, "max_sessions": 3}))
        .await
        .data(200);
    assert_eq!(updated["user"]["is_admin"], true);
    assert_eq!(updated["user"]["max_sessions"], 3);
    // The change is visible at once on this replica (the token cache forgets the user).
    let me = t.get("/api/v2/me").cookie(user).send().await.data(200);
    assert_eq!(me["user"]["is_admin"], true);
    let cleared = patch(&user.id, json!({"max_sessions": null}))
        .await
        .data(200);
    assert!(cleared["user"]["max_sessions"].is_null());
    assert_eq!(cleared["user"]["is_admin"], true, "absent fields stay");
    assert_eq!(
        patch(&user.id, json!({"max_sessions": -1}))
            .await
            .error_fields(),
        ["max_sessions"]
    );
    assert_eq!(
        patch(&user.id, json!({"is_admin": "yes"}))
            .await
            .error_fields(),
        ["is_admin"]
    );
    assert_eq!(
        patch(&user.id, json!({"email": "x@y.org"}))
            .await
            .error_fields(),
        ["email"]
    );
    patch("nope", json!({"is_admin": true}))
        .await
        .problem(404, "not_found");
    patch(&admin.id, json!({"is_admin": false}))
        .await
        .problem(409, "last_admin_guard");
    for (content_type, body, status, code) in [
        ("text/plain", "{}", 415, "unsupported_media_type"),
        ("application/json", "{", 400, "malformed_json"),
    ] {
        t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", user.id))
            .cookie(&admin)
            .body(Some(content_type), body)
            .send()
            .await
            .problem(status, code);
    }
}

crate::scenarios!(
    nodes_show_free_and_used_gpus,
    cordon_and_uncordon_nodes_and_gpus,
    admins_list_every_session,
    admins_manage_users,
);
