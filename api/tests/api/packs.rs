//! The Pack catalogue: `GET /api/v2/packs` for users, internal users and
//! admins; creates held to it (unknown, deprecated, exposure not offered,
//! GPUs outside the range: 422); admins' `PUT` and `DELETE
//! /api/v2/admin/packs/{name}` (201/200, 422 naming the field, 204, 404,
//! 409 while in use, 403 for others), recorded in the audit log.

use axum::http::Method;
use medforge_api::backend::SessionBackend;
use serde_json::{Value, json};

use crate::common::{Client, PACK_IMAGE, TestApp, TestEnv};

/// The catalogue of these tests, besides `default`: a GPU Pack with a
/// range, a deprecated one, an internal-only and an external-only one, and
/// one whose name no create body can give.
fn stock(t: &TestApp) {
    t.put_pack(
        "gpu-large",
        json!({
            "displayName": "Large GPU",
            "description": "Two to four GPUs.",
            "minima": {"gpus": 2},
            "maxima": {"gpus": 4, "memory": "64Gi"},
            "sessionDefaults": {"gpus": 2, "idleTimeout": "2h"},
            "resources": {"cpu": "8", "memory": "32Gi"},
        }),
    );
    t.put_pack("old", json!({"deprecated": true}));
    t.put_pack("inside", json!({"exposures": ["internal"]}));
    t.put_pack("outside", json!({"exposures": ["external"]}));
    t.put_pack("dotted.pack", json!({}));
}

/// The names a caller sees.
async fn listed(t: &TestApp, who: &Client) -> Vec<String> {
    t.get_as(who, "/api/v2/packs")
        .await
        .data(200)
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Sets a user's flags as an admin.
async fn patch_user(t: &TestApp, admin: &Client, id: &str, body: Value) {
    t.req(Method::PATCH, &format!("/api/v2/admin/users/{id}"))
        .cookie(admin)
        .json(body)
        .send()
        .await
        .data(200);
}

/// `errors[]` of a 422 as `field: message`.
fn errors(problem: &Value) -> Vec<String> {
    problem["errors"]
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
        .collect()
}

async fn the_catalogue_lists_what_each_caller_may_use(env: TestEnv) {
    let t = env.app().await;
    stock(&t);
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let admin = t.admin("root@example.org").await;
    t.refuses_anonymous(Method::GET, "/api/v2/packs").await;

    // A user: neither deprecated nor internal-only Packs, nor one whose
    // name a create cannot give; by name.
    assert_eq!(listed(&t, &ada).await, ["default", "gpu-large", "outside"]);
    let res = t.get_as(&ada, "/api/v2/packs").await;
    let meta = res.json()["meta"].clone();
    assert_eq!(meta["has_more"], false);
    assert_eq!(meta["limit"], 50);
    let packs = res.data(200);
    let large = &packs[1];
    assert_eq!(large["display_name"], "Large GPU");
    assert_eq!(large["description"], "Two to four GPUs.");
    assert_eq!(large["image"], PACK_IMAGE);
    assert_eq!(large["port"], 8080);
    assert_eq!(large["exposures"], json!(["external", "internal"]));
    assert_eq!(large["gpus"], json!({"min": 2, "max": 4, "default": 2}));
    assert_eq!(large["resources"], json!({"cpu": "8", "memory": "32Gi"}));
    assert_eq!(
        large["session_defaults"],
        json!({"gpus": 2, "idle_timeout": "2h"})
    );
    assert_eq!(large["maxima"], json!({"gpus": 4, "memory": "64Gi"}));
    assert_eq!(large["deprecated"], false);
    let default = &packs[0];
    assert_eq!(default["display_name"], "default", "the name, when unset");
    assert_eq!(default["gpus"], json!({"min": 0, "max": 8, "default": 1}));
    assert_eq!(packs[2]["exposures"], json!(["external"]));

    // A user who may use the internal domain sees the internal-only Pack.
    patch_user(&t, &admin, &bob.id, json!({"can_use_internal": true})).await;
    assert_eq!(
        listed(&t, &bob).await,
        ["default", "gpu-large", "inside", "outside"]
    );
    // The range follows the caller's own policy.
    patch_user(
        &t,
        &admin,
        &bob.id,
        json!({"session_policy": {"maxima": {"gpus": 3}}}),
    )
    .await;
    let packs = t.get_as(&bob, "/api/v2/packs").await.data(200);
    assert_eq!(packs[0]["gpus"], json!({"min": 0, "max": 3, "default": 1}));
    assert_eq!(packs[1]["gpus"], json!({"min": 2, "max": 3, "default": 2}));

    // Admins see every Pack, deprecated ones marked.
    assert_eq!(
        listed(&t, &admin).await,
        [
            "default",
            "dotted.pack",
            "gpu-large",
            "inside",
            "old",
            "outside"
        ]
    );
    let all = t.get_as(&admin, "/api/v2/packs").await.data(200);
    assert_eq!(all[4]["deprecated"], true);

    // In pages, by name.
    let res = t.get_as(&admin, "/api/v2/packs?limit=4").await;
    let meta = res.json()["meta"].clone();
    assert_eq!(res.data(200).as_array().unwrap().len(), 4);
    assert_eq!(meta["has_more"], true);
    assert_eq!(meta["next_cursor"], "inside");
    let rest = t
        .get_as(&admin, "/api/v2/packs?limit=4&cursor=inside")
        .await
        .data(200);
    let names: Vec<&str> = rest
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["old", "outside"]);
    for (query, field) in [("limit=0", "limit"), ("cursor=UPPER", "cursor")] {
        assert_eq!(
            t.get_as(&ada, &format!("/api/v2/packs?{query}"))
                .await
                .error_fields(),
            [field]
        );
    }
    t.backend.set_reachable(false);
    t.get_as(&ada, "/api/v2/packs")
        .await
        .problem(503, "control_plane_unavailable");
}

async fn creates_are_held_to_the_catalogue(env: TestEnv) {
    let t = env.app().await;
    stock(&t);
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    let refused = async |who: &Client, exposure: &str, body: Value| {
        let problem = t
            .post(&format!("/api/v2/{exposure}/sessions"))
            .cookie(who)
            .json(body)
            .send()
            .await
            .problem(422, "validation_failed");
        errors(&problem)
    };
    assert_eq!(
        refused(&ada, "external", json!({"pack": "nope"})).await,
        ["pack: no Pack is named `nope`; GET /api/v2/packs lists the Packs you may use"]
    );
    let deprecated = refused(&ada, "external", json!({"pack": "old"})).await;
    assert!(
        deprecated[0].starts_with("pack: Pack `old` is deprecated"),
        "{deprecated:?}"
    );
    assert_eq!(
        refused(&ada, "external", json!({"pack": "inside"})).await,
        ["pack: Pack `inside` does not offer external sessions (it offers: internal)"]
    );
    assert_eq!(
        refused(&admin, "internal", json!({"pack": "outside"})).await,
        ["pack: Pack `outside` does not offer internal sessions (it offers: external)"]
    );
    // GPUs outside the Pack's range.
    assert_eq!(
        refused(&ada, "external", json!({"pack": "gpu-large", "gpus": 1})).await,
        ["gpus: 1 is below the minimum 2 (Pack gpu-large)"]
    );
    assert_eq!(
        refused(&ada, "external", json!({"pack": "gpu-large", "gpus": 5})).await,
        ["gpus: 5 is above the maximum 4 (Pack gpu-large)"]
    );
    assert!(t.backend.sessions().is_empty(), "nothing was created");

    // Within the range; without a count, the Pack's default.
    let res = t
        .create_session(&ada, json!({"pack": "gpu-large", "gpus": 3}))
        .await;
    assert_eq!(res.data(201)["session"]["gpu_count"], 3);
    t.backend.add_node("node-b", 4);
    let res = t.create_session(&ada, json!({"pack": "gpu-large"})).await;
    let s = res.data(201)["session"].clone();
    assert_eq!(s["gpu_count"], 2);
    assert_eq!(s["pack"], "gpu-large");

    // Deprecated now: no new sessions, but a session of it stops and resumes.
    t.put_pack(
        "gpu-large",
        json!({"deprecated": true, "minima": {"gpus": 2}}),
    );
    let id = s["id"].as_str().unwrap();
    t.wait_phase(id, "running").await;
    t.post_as(&ada, &format!("/api/v2/external/sessions/{id}/stop"))
        .await
        .data(202);
    t.wait_phase(id, "stopped").await;
    let resumed = t
        .post_as(&ada, &format!("/api/v2/external/sessions/{id}/start"))
        .await
        .data(202);
    assert_eq!(resumed["session"]["state"], "running");
    t.wait_phase(id, "running").await;
    let deprecated = refused(&ada, "external", json!({"pack": "gpu-large", "gpus": 2})).await;
    assert!(deprecated[0].contains("deprecated"), "{deprecated:?}");
}

/// `PUT /api/v2/admin/packs/{name}` as `who` with `body`.
async fn put(t: &TestApp, who: &Client, name: &str, body: Value) -> crate::common::Res {
    t.req(Method::PUT, &format!("/api/v2/admin/packs/{name}"))
        .cookie(who)
        .json(body)
        .send()
        .await
}

async fn admins_create_and_replace_packs(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    let image = format!("registry.example.org:5000/packs/jupyter@{PACK_IMAGE}");
    let whole = json!({
        "image": image,
        "port": 8888,
        "command": ["jupyter", "lab", "--ip=0.0.0.0"],
        "env": [{"name": "JUPYTER_ENABLE_LAB", "value": "yes"}],
        "display_name": "Jupyter",
        "description": "JupyterLab with Python 3.\nOne or two GPUs.",
        "exposures": ["external"],
        "resources": {"cpu": "4", "memory": "16Gi", "shm": "2Gi", "pids": 8192},
        "session_defaults": {"gpus": 1, "workspace_quota": "100Gi", "idle_timeout": "2h", "max_lifetime": "24h"},
        "minima": {"gpus": 1},
        "maxima": {"gpus": 2, "memory": "64Gi"},
    });
    let created = put(&t, &admin, "jupyter", whole.clone()).await.data(201);
    let view = &created["pack"];
    assert_eq!(view["name"], "jupyter");
    assert_eq!(view["display_name"], "Jupyter");
    assert_eq!(view["gpus"], json!({"min": 1, "max": 2, "default": 1}));
    assert_eq!(view["command"], whole["command"]);
    assert_eq!(view["env"], whole["env"]);
    // The Pack as written, in the CRD's own names.
    let stored = t.backend.get_pack("jupyter").await.unwrap().unwrap();
    let expected: medforge_crds::PackSpec = serde_json::from_value(json!({
        "image": image,
        "port": 8888,
        "command": ["jupyter", "lab", "--ip=0.0.0.0"],
        "env": [{"name": "JUPYTER_ENABLE_LAB", "value": "yes"}],
        "displayName": "Jupyter",
        "description": "JupyterLab with Python 3.\nOne or two GPUs.",
        "exposures": ["external"],
        "resources": {"cpu": "4", "memory": "16Gi", "shm": "2Gi", "pids": 8192},
        "sessionDefaults": {"gpus": 1, "workspaceQuota": "100Gi", "idleTimeout": "2h", "maxLifetime": "24h"},
        "minima": {"gpus": 1},
        "maxima": {"gpus": 2, "memory": "64Gi"},
    }))
    .unwrap();
    assert_eq!(stored.spec, expected);
    // Users may use it at once, and are held to it.
    assert_eq!(
        t.create_session(&ada, json!({"pack": "jupyter", "gpus": 3}))
            .await
            .error_fields(),
        ["gpus"]
    );

    // Replaced: what the body leaves out is gone.
    let replaced = put(
        &t,
        &admin,
        "jupyter",
        json!({"image": PACK_IMAGE, "deprecated": true}),
    )
    .await
    .data(200);
    assert_eq!(replaced["pack"]["deprecated"], true);
    assert_eq!(replaced["pack"]["display_name"], "jupyter");
    let stored = t.backend.get_pack("jupyter").await.unwrap().unwrap();
    assert_eq!(
        stored.spec,
        serde_json::from_value(json!({"image": PACK_IMAGE, "deprecated": true})).unwrap()
    );

    // Every invalid field is named.
    let long = |n: usize| "x".repeat(n);
    for (body, fields) in [
        (json!({"image": "jupyter:latest"}), &["image"][..]),
        (
            json!({"image": format!("Jupyter@{PACK_IMAGE}")}),
            &["image"],
        ),
        (json!({}), &["image"]),
        (json!({"image": PACK_IMAGE, "port": 0}), &["port"]),
        (json!({"image": PACK_IMAGE, "port": 65536}), &["port"]),
        (
            json!({"image": PACK_IMAGE, "display_name": long(65), "description": long(1025)}),
            &["display_name", "description"],
        ),
        (
            json!({"image": PACK_IMAGE, "exposures": ["everywhere"]}),
            &["exposures[0]"],
        ),
        (
            json!({"image": PACK_IMAGE, "exposures": ["internal", "internal"]}),
            &["exposures"],
        ),
        (
            json!({"image": PACK_IMAGE, "minima": {"gpus": 3}, "maxima": {"gpus": 2}}),
            &["minima.gpus"],
        ),
        (
            json!({"image": PACK_IMAGE, "minima": {"gpus": 9}}),
            &["minima.gpus"],
        ),
        (
            json!({"image": PACK_IMAGE, "minima": {"gpus": 1}, "session_defaults": {"gpus": 0}}),
            &["session_defaults.gpus"],
        ),
        (
            json!({"image": PACK_IMAGE, "maxima": {"memory": "lots"}, "resources": {"pids": 1}}),
            &["resources.pids", "maxima.memory"],
        ),
        (
            json!({"image": PACK_IMAGE, "env": [{"name": "1X"}], "command": ["a\u{0}"]}),
            &["command[0]", "env[0].name"],
        ),
        (json!({"image": PACK_IMAGE, "colour": "blue"}), &["colour"]),
    ] {
        let res = put(&t, &admin, "checked", body.clone()).await;
        assert_eq!(res.error_fields(), fields, "{body}");
    }
    assert!(
        t.backend.get_pack("checked").await.unwrap().is_none(),
        "nothing was written"
    );
    // A name no Pack can have names the parameter.
    let problem = put(&t, &admin, "Bad_Name", json!({"image": PACK_IMAGE}))
        .await
        .problem(404, "not_found");
    assert_eq!(problem["errors"][0]["field"], "name");

    // Only admins; writes are origin-checked.
    put(&t, &ada, "mine", json!({"image": PACK_IMAGE}))
        .await
        .problem(403, "admin_required");
    t.req(Method::DELETE, "/api/v2/admin/packs/jupyter")
        .cookie(&ada)
        .send()
        .await
        .problem(403, "admin_required");
    t.refuses_anonymous(Method::PUT, "/api/v2/admin/packs/mine")
        .await;
    t.refuses_anonymous(Method::DELETE, "/api/v2/admin/packs/jupyter")
        .await;
    t.req(Method::PUT, "/api/v2/admin/packs/mine")
        .cookie(&admin)
        .header("origin", "https://evil.example")
        .json(json!({"image": PACK_IMAGE}))
        .send()
        .await
        .problem(403, "origin_not_allowed");
    assert!(t.backend.get_pack("mine").await.unwrap().is_none());

    // The audit log has both writes, newest first, with the bodies.
    let log = t
        .get_as(&admin, "/api/v2/admin/audit?target=jupyter")
        .await
        .data(200);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pack.replaced", "pack.created"]);
    assert_eq!(log[1]["actor"], admin.id.as_str());
    assert_eq!(log[1]["detail"], whole);
}

async fn admins_delete_packs_no_session_uses(env: TestEnv) {
    let t = env.app().await;
    stock(&t);
    let ada = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    let delete = async |name: &str| {
        t.req(Method::DELETE, &format!("/api/v2/admin/packs/{name}"))
            .cookie(&admin)
            .send()
            .await
    };
    delete("nope").await.problem(404, "not_found");

    let s = t
        .create_session(&ada, json!({"pack": "gpu-large"}))
        .await
        .data(201)["session"]
        .clone();
    let id = s["id"].as_str().unwrap();
    delete("gpu-large").await.problem_mentioning(
        409,
        "pack_in_use",
        "used by 1 session that is neither stopped nor failed",
    );
    assert!(t.backend.get_pack("gpu-large").await.unwrap().is_some());

    // Stopped, it no longer holds the Pack.
    t.post_as(&ada, &format!("/api/v2/external/sessions/{id}/stop"))
        .await
        .data(202);
    t.wait_phase(id, "stopped").await;
    let res = delete("gpu-large").await;
    assert_eq!(res.status.as_u16(), 204, "{}", res.text());
    assert!(t.backend.get_pack("gpu-large").await.unwrap().is_none());
    assert!(!listed(&t, &admin).await.contains(&"gpu-large".to_owned()));
    delete("gpu-large").await.problem(404, "not_found");
    assert_eq!(
        t.create_session(&ada, json!({"pack": "gpu-large"}))
            .await
            .error_fields(),
        ["pack"]
    );
    let log = t
        .get_as(&admin, "/api/v2/admin/audit?action=pack.deleted")
        .await
        .data(200);
    assert_eq!(log[0]["target"], "gpu-large");
    assert_eq!(log.as_array().unwrap().len(), 1);
}

crate::scenarios!(
    the_catalogue_lists_what_each_caller_may_use,
    creates_are_held_to_the_catalogue,
    admins_create_and_replace_packs,
    admins_delete_packs_no_session_uses,
);
