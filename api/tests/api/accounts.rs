//! Account administration: each signup mode, invites, accounts an admin
//! creates, passwords changed and reset, accounts disabled and enabled, and
//! the audit log that records it all. Over the in-memory control plane,
//! except the three whose sessions must run: a disabled account's session
//! stopped, an account's own session policy and its own snapshot retention
//! held to, on the embedded control plane with the real scheduler and the
//! node agent (`Plane::agent()`).

use axum::http::Method;
use medforge_api::backend::MemoryBackendConfig;
use medforge_api::{ApiConfig, SignupMode};
use medforge_crds::{DesiredState, SessionPhase};
use serde_json::{Value, json};

use crate::common::{Client, Plane, Res, TestApp, TestEnv, client_from, eventually};

const PASSWORD: &str = "correct horse";

async fn signup(t: &TestApp, body: Value) -> Res {
    t.post("/api/v2/auth/signup").json(body).send().await
}

fn account(email: &str) -> Value {
    json!({"email": email, "password": PASSWORD})
}

fn with_code(email: &str, code: &str) -> Value {
    json!({"email": email, "password": PASSWORD, "invite_code": code})
}

/// `user`'s `session_policy` as the admins' user list shows it.
async fn policy_shown(t: &TestApp, admin: &Client, user: &Client) -> Value {
    let view = t.get_as(admin, "/api/v2/admin/users").await.data(200);
    view.as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == user.id.as_str())
        .unwrap()["session_policy"]
        .clone()
}

/// Whether a 422's first error names a field of `session_policy`.
fn names_session_policy(problem: &Value) -> bool {
    problem["errors"][0]["field"]
        .as_str()
        .unwrap()
        .starts_with("session_policy")
}

async fn app_with_signup(env: &TestEnv, mode: SignupMode) -> TestApp {
    env.app_with(
        move |c| c.auth.signup = mode,
        MemoryBackendConfig::default(),
    )
    .await
}

async fn send_as(t: &TestApp, who: &Client, method: Method, path: &str, body: Value) -> Res {
    t.req(method, path).cookie(who).json(body).send().await
}

async fn closed_signup_is_the_default_and_admins_create_accounts(env: TestEnv) {
    assert_eq!(
        ApiConfig::new("medforge.test", "/nonexistent").auth.signup,
        SignupMode::Closed,
        "a fresh install is closed"
    );
    let t = app_with_signup(&env, SignupMode::Closed).await;
    signup(&t, account("a@example.org"))
        .await
        .problem(403, "signup_disabled");
    // Even a well-formed invite code does not open it.
    signup(&t, with_code("a@example.org", &"x".repeat(43)))
        .await
        .problem(403, "signup_disabled");

    let root = t.admin("root@example.org").await;
    let created = send_as(
        &t,
        &root,
        Method::POST,
        "/api/v2/admin/users",
        json!({"email": "New@Example.org", "password": PASSWORD}),
    )
    .await
    .data(201);
    assert_eq!(created["user"]["email"], "new@example.org");
    assert_eq!(created["user"]["is_admin"], false);
    assert_eq!(created["user"]["disabled"], false);
    let res = t
        .post("/api/v2/auth/login")
        .json(account("new@example.org"))
        .send()
        .await;
    assert_eq!(res.data(200)["user"]["id"], created["user"]["id"]);
    send_as(
        &t,
        &root,
        Method::POST,
        "/api/v2/admin/users",
        json!({"email": "new@example.org", "password": PASSWORD}),
    )
    .await
    .problem(409, "email_taken");
    // Only admins create accounts.
    let new = client_from(&res);
    send_as(
        &t,
        &new,
        Method::POST,
        "/api/v2/admin/users",
        json!({"email": "x@example.org", "password": PASSWORD}),
    )
    .await
    .problem(403, "admin_required");
}

async fn domain_signup_admits_only_its_domains(env: TestEnv) {
    let mode = SignupMode::parse("domains", &["Example.org".into(), "@lab.test".into()]).unwrap();
    let t = app_with_signup(&env, mode).await;
    assert_eq!(signup(&t, account("a@example.org")).await.status, 201);
    assert_eq!(signup(&t, account("b@LAB.test")).await.status, 201);
    for refused in ["c@evil.org", "d@sub.example.org", "e@example.org.evil.org"] {
        signup(&t, account(refused))
            .await
            .problem(403, "signup_domain_not_allowed");
    }
}

async fn an_invite_works_once_for_its_address_until_revoked(env: TestEnv) {
    let t = app_with_signup(&env, SignupMode::Invite).await;
    signup(&t, account("a@example.org"))
        .await
        .problem(403, "invite_required");
    let root = t.admin("root@example.org").await;
    let new_invite = |body: Value| send_as(&t, &root, Method::POST, "/api/v2/admin/invites", body);

    let invite = new_invite(json!({})).await.data(201)["invite"].clone();
    let code = invite["code"].as_str().unwrap().to_owned();
    assert_eq!(invite["state"], "unused");
    // A guess of the right shape is not an invite.
    signup(&t, with_code("a@example.org", &"A".repeat(43)))
        .await
        .problem(403, "invite_invalid");
    // Used once, then never again.
    let first = signup(&t, with_code("a@example.org", &code)).await;
    let user_id = first.data(201)["user"]["id"].as_str().unwrap().to_owned();
    signup(&t, with_code("b@example.org", &code))
        .await
        .problem(403, "invite_invalid");

    // Two signups racing for one code: exactly one account.
    let race = new_invite(json!({})).await.data(201)["invite"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let (x, y) = tokio::join!(
        signup(&t, with_code("x@example.org", &race)),
        signup(&t, with_code("y@example.org", &race)),
    );
    let mut statuses = [x.status.as_u16(), y.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [201, 403]);

    // An invite for one address works only for it.
    let pinned = new_invite(json!({"email": "Pinned@example.org", "expires_in": 3600})).await;
    let pinned = pinned.data(201)["invite"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    signup(&t, with_code("other@example.org", &pinned))
        .await
        .problem(403, "invite_invalid");
    assert_eq!(
        signup(&t, with_code("pinned@example.org", &pinned))
            .await
            .status,
        201
    );

    // A revoked invite does not work; revoking twice is fine, a used one is a conflict.
    let revoked = new_invite(json!({})).await.data(201)["invite"].clone();
    let path = format!("/api/v2/admin/invites/{}", revoked["id"].as_str().unwrap());
    let res = t.req(Method::DELETE, &path).cookie(&root).send().await;
    assert_eq!(res.status, 204, "{}", res.text());
    let res = t.req(Method::DELETE, &path).cookie(&root).send().await;
    assert_eq!(res.status, 204, "{}", res.text());
    signup(
        &t,
        with_code("r@example.org", revoked["code"].as_str().unwrap()),
    )
    .await
    .problem(403, "invite_invalid");
    t.req(
        Method::DELETE,
        &format!("/api/v2/admin/invites/{}", invite["id"].as_str().unwrap()),
    )
    .cookie(&root)
    .send()
    .await
    .problem(409, "invite_used");

    // Bad lifetimes are named.
    assert_eq!(
        new_invite(json!({"expires_in": 30 * 24 * 3600 + 1}))
            .await
            .error_fields(),
        ["expires_in"]
    );

    // The list shows each invite's state, never its code.
    let list = t.get_as(&root, "/api/v2/admin/invites").await.data(200);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|i| i["code"].is_null()), "{list:?}");
    let first_made = list.last().unwrap();
    assert_eq!(first_made["id"], invite["id"]);
    assert_eq!(first_made["state"], "used");
    assert_eq!(first_made["used_by"], user_id.as_str());
    assert_eq!(list[0]["state"], "revoked");
    let page = t.get_as(&root, "/api/v2/admin/invites?limit=2").await;
    let meta = page.json()["meta"].clone();
    assert_eq!(meta["has_more"], true);
    let next = t
        .get_as(
            &root,
            &format!(
                "/api/v2/admin/invites?limit=2&cursor={}",
                meta["next_cursor"].as_str().unwrap()
            ),
        )
        .await
        .data(200);
    assert_eq!(next[0]["id"], list[2]["id"]);
}

async fn a_password_change_needs_the_current_one_and_ends_the_other_logins(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let other_login = t.log_in_again("ada@example.org").await;
    let change = |current: &str, new: &str| {
        send_as(
            &t,
            &ada,
            Method::PATCH,
            "/api/v2/me",
            json!({"current_password": current, "new_password": new}),
        )
    };
    change("wrong horse", "battery staple")
        .await
        .problem(403, "wrong_password");
    assert_eq!(
        change(PASSWORD, "short").await.error_fields(),
        ["new_password"]
    );
    assert_eq!(change(PASSWORD, "battery staple").await.status, 200);
    // This login goes on; the other one ended; the old password is gone.
    assert_eq!(t.get_as(&ada, "/api/v2/me").await.status, 200);
    t.get_as(&other_login, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");
    t.post("/api/v2/auth/login")
        .json(account("ada@example.org"))
        .send()
        .await
        .problem(401, "invalid_credentials");
    let res = t
        .post("/api/v2/auth/login")
        .json(json!({"email": "ada@example.org", "password": "battery staple"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

async fn a_disabled_account_cannot_log_in_and_its_sessions_stop(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let root = t.admin("root@example.org").await;
    let ada = t.user("ada@example.org").await;
    let session = t.session(&ada).await;
    let id = session["id"].as_str().unwrap().to_owned();
    t.wait_phase(&id, "running").await;
    let user_path = format!("/api/v2/admin/users/{}", ada.id);

    let res = send_as(
        &t,
        &root,
        Method::PATCH,
        &user_path,
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(res.data(200)["user"]["disabled"], true);
    // Her login ends at once (this replica), her session is asked to stop.
    t.get_as(&ada, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");
    assert_eq!(
        t.stored(&id).await.unwrap().spec.state,
        DesiredState::Stopped
    );
    // The agent stops it.
    t.wait_phase(&id, "stopped").await;
    // The right password no longer logs in, and says why.
    t.post("/api/v2/auth/login")
        .json(account("ada@example.org"))
        .send()
        .await
        .problem(403, "account_disabled");
    // An admin cannot disable themselves.
    send_as(
        &t,
        &root,
        Method::PATCH,
        &format!("/api/v2/admin/users/{}", root.id),
        json!({"disabled": true}),
    )
    .await
    .problem(409, "own_account");

    // Enabled again: she logs in; her session stays stopped.
    let res = send_as(
        &t,
        &root,
        Method::PATCH,
        &user_path,
        json!({"disabled": false}),
    )
    .await;
    assert_eq!(res.data(200)["user"]["disabled"], false);
    let res = t
        .post("/api/v2/auth/login")
        .json(account("ada@example.org"))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let stored = t.stored(&id).await.unwrap();
    assert_eq!(stored.spec.state, DesiredState::Stopped);
    assert_eq!(stored.phase(), SessionPhase::Stopped);
}

async fn an_admin_reset_sets_the_password_and_ends_every_login(env: TestEnv) {
    let t = env.app().await;
    let root = t.admin("root@example.org").await;
    let bob = t.user("bob@example.org").await;
    let reset = |id: &str, password: &str| {
        t.req(Method::POST, &format!("/api/v2/admin/users/{id}/password"))
            .cookie(&root)
            .json(json!({"password": password}))
            .send()
    };
    assert_eq!(reset(&bob.id, "new password").await.status, 200);
    t.get_as(&bob, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");
    t.post("/api/v2/auth/login")
        .json(account("bob@example.org"))
        .send()
        .await
        .problem(401, "invalid_credentials");
    let res = t
        .post("/api/v2/auth/login")
        .json(json!({"email": "bob@example.org", "password": "new password"}))
        .send()
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    reset(&root.id, "new password")
        .await
        .problem(409, "own_account");
    reset("00000000-0000-4000-8000-000000000000", "new password")
        .await
        .problem(404, "not_found");
    // Not for users.
    send_as(
        &t,
        &bob,
        Method::POST,
        &format!("/api/v2/admin/users/{}/password", root.id),
        json!({"password": "taken over"}),
    )
    .await
    .problem(401, "unauthenticated");
}

async fn the_audit_log_records_each_action_newest_first(env: TestEnv) {
    let t = app_with_signup(&env, SignupMode::Invite).await;
    let root = t.admin("root@example.org").await;
    let code = send_as(&t, &root, Method::POST, "/api/v2/admin/invites", json!({}))
        .await
        .data(201)["invite"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let ada = client_from(&signup(&t, with_code("ada@example.org", &code)).await);
    let ada_id = t.get_as(&ada, "/api/v2/me").await.data(200)["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let user_path = format!("/api/v2/admin/users/{ada_id}");
    for change in [
        json!({"can_use_internal": true}),
        json!({"disabled": true}),
        json!({"disabled": false}),
    ] {
        let res = send_as(&t, &root, Method::PATCH, &user_path, change).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    send_as(
        &t,
        &root,
        Method::POST,
        &format!("{user_path}/password"),
        json!({"password": "new password"}),
    )
    .await;

    let log = t.get_as(&root, "/api/v2/admin/audit").await.data(200);
    let actions: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "user.password_reset",
            "user.enabled",
            "user.disabled",
            "user.updated",
            "account.signed_up",
            "invite.created",
        ]
    );
    let signed_up = &log[4];
    assert_eq!(signed_up["actor"], ada_id.as_str());
    assert_eq!(signed_up["detail"]["mode"], "invite");
    assert_eq!(signed_up["detail"]["invite"], log[5]["target"]);
    assert_eq!(log[0]["actor"], root.id.as_str());
    assert_eq!(log[0]["target"], ada_id.as_str());

    // Filters and pages.
    let disabled = t
        .get_as(&root, "/api/v2/admin/audit?action=user.disabled")
        .await
        .data(200);
    assert_eq!(disabled.as_array().unwrap().len(), 1);
    let by_ada = t
        .get_as(&root, &format!("/api/v2/admin/audit?actor={ada_id}"))
        .await
        .data(200);
    assert_eq!(by_ada.as_array().unwrap().len(), 1);
    let page = t.get_as(&root, "/api/v2/admin/audit?limit=4").await;
    let cursor = page.json()["meta"]["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let rest = t
        .get_as(
            &root,
            &format!("/api/v2/admin/audit?limit=4&cursor={cursor}"),
        )
        .await
        .data(200);
    assert_eq!(rest.as_array().unwrap().len(), 2);
    assert_eq!(rest[0]["id"], log[4]["id"]);
    for bad in ["cursor=nope", "action=DROP%20TABLE", "actor=ada", "limit=0"] {
        t.get_as(&root, &format!("/api/v2/admin/audit?{bad}"))
            .await
            .problem(422, "validation_failed");
    }
    // Only admins read it.
    let res = t
        .post("/api/v2/auth/login")
        .json(json!({"email": "ada@example.org", "password": "new password"}))
        .send()
        .await;
    t.get_as(&client_from(&res), "/api/v2/admin/audit")
        .await
        .problem(403, "admin_required");
}

async fn an_accounts_own_snapshot_retention_reaches_its_sessions(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let root = t.admin("root@example.org").await;
    let ada = t.user("ada@example.org").await;
    let patch = |body: Value| {
        t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", ada.id))
            .cookie(&root)
            .json(body)
            .send()
    };
    let user =
        patch(json!({"session_policy": {"snapshot_retention": {"keep_last": 2, "keep_days": 0}}}))
            .await
            .data(200)["user"]
            .clone();
    assert_eq!(
        user["session_policy"]["snapshot_retention"],
        json!({"keep_last": 2, "keep_days": 0})
    );
    let created = t.create_session(&ada, json!({"gpus": 0})).await.data(201);
    let id = created["session"]["id"].as_str().unwrap();
    let annotations = t.stored(id).await.unwrap().metadata.annotations.unwrap();
    let carried =
        medforge_crds::RetentionOverride::parse(&annotations["medforge.dev/snapshot-retention"])
            .expect("the node agent reads it");
    assert_eq!((carried.keep_last, carried.keep_days), (Some(2), Some(0)));
    // And keeps to it: of three manual snapshots, the oldest goes once the
    // third is taken.
    t.wait_phase(id, "running").await;
    let mut taken = Vec::new();
    for _ in 0..3 {
        let sid = t
            .post_as(&ada, &format!("/api/v2/external/sessions/{id}/snapshots"))
            .await
            .data(202)["snapshot"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let index = t.state().snapshots().clone();
        eventually("taken", async || {
            index
                .get(&sid)
                .is_some_and(|e| e.record.is_ready())
                .then_some(())
        })
        .await;
        taken.push(sid);
    }
    let index = t.state().snapshots().clone();
    eventually("the oldest deleted by retention", async || {
        index.get(&taken[0]).is_none().then_some(())
    })
    .await;
    assert!(index.get(&taken[1]).is_some() && index.get(&taken[2]).is_some());
    // One value alone: the other stays the operator's.
    patch(json!({"session_policy": {"snapshot_retention": {"keep_days": 30}}}))
        .await
        .data(200);
    let created = t.create_session(&ada, json!({"gpus": 0})).await.data(201);
    let id = created["session"]["id"].as_str().unwrap();
    let annotations = t.stored(id).await.unwrap().metadata.annotations.unwrap();
    assert_eq!(
        annotations["medforge.dev/snapshot-retention"],
        r#"{"keepDays":30}"#
    );
    // Out of bounds, or malformed: named, and nothing changes.
    for bad in [
        json!({"keep_last": 0, "keep_days": 1}),
        json!({"keep_last": 2, "keep_days": 200000}),
        json!({"keep": 2}),
        json!({"keep_last": -1, "keep_days": 1}),
    ] {
        let problem = patch(json!({"session_policy": {"snapshot_retention": bad}}))
            .await
            .problem(422, "validation_failed");
        assert!(names_session_policy(&problem), "{bad}: {problem}");
    }
    let shown = policy_shown(&t, &root, &ada).await;
    assert_eq!(shown["snapshot_retention"], json!({"keep_days": 30}));
}

async fn an_accounts_own_session_policy_replaces_the_operators(env: TestEnv) {
    let t = env.on(Plane::agent()).await;
    let root = t.admin("root@example.org").await;
    let ada = t.user("ada@example.org").await;
    let bob = t.user("bob@example.org").await;
    let patch = |who: &Client, body: Value| {
        t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", who.id))
            .cookie(&root)
            .json(body)
            .send()
    };
    let big = json!({"resources": {"memory": "300Gi"}, "gpus": 0});

    let res = patch(
        &ada,
        json!({"session_policy": {"maxima": {"memory": "512Gi"}, "defaults": {"memory": "16Gi"}}}),
    )
    .await;
    let user = res.data(200)["user"].clone();
    assert_eq!(user["session_policy"]["maxima"]["memory"], "512Gi");
    // Above the operator's 256Gi, within Ada's own maximum.
    let created = t.create_session(&ada, big.clone()).await.data(201);
    let id = created["session"]["id"].as_str().unwrap();
    let annotations = t.stored(id).await.unwrap().metadata.annotations.unwrap();
    let carried: Value = serde_json::from_str(&annotations["medforge.dev/session-policy"]).unwrap();
    assert_eq!(
        carried["maxima"]["memory"], "512Gi",
        "the node agent gets it too"
    );
    // And holds to it: the session runs, its container with 300Gi.
    t.wait_phase(id, "running").await;
    let uid = t.stored(id).await.unwrap().metadata.uid.unwrap();
    let containers = t.cluster().docker.of_session(&uid);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let spec = t.cluster().docker.spec_of(&containers[0].id).unwrap();
    assert_eq!(spec.memory_bytes, Some(300 << 30));
    // Bob has the operator's.
    let problem = t
        .create_session(&bob, big.clone())
        .await
        .problem(422, "validation_failed");
    assert_eq!(
        problem["errors"][0]["message"],
        "300Gi is above the maximum 256Gi (the operator's policy)"
    );
    // A lower maximum of his own, and the error says whose it is.
    patch(&bob, json!({"session_policy": {"maxima": {"gpus": 1}}}))
        .await
        .data(200);
    let problem = t
        .create_session(&bob, json!({"gpus": 2}))
        .await
        .problem(422, "validation_failed");
    assert_eq!(
        problem["errors"][0]["message"],
        "2 is above the maximum 1 (this account's limit)"
    );
    // Bad values are named; unknown names are refused.
    let problem = patch(
        &bob,
        json!({"session_policy": {"maxima": {"memory": "lots", "cpu": "0"}, "defaults": {"gpus": 9}}}),
    )
    .await
    .problem(422, "validation_failed");
    let mut fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "session_policy.defaults.gpus",
            "session_policy.maxima.cpu",
            "session_policy.maxima.memory"
        ],
        "{problem}"
    );
    for unknown in [json!({"maxima": {"ram": "1Gi"}}), json!({"limits": {}})] {
        let problem = patch(&bob, json!({"session_policy": unknown}))
            .await
            .problem(422, "validation_failed");
        assert!(names_session_policy(&problem), "{problem}");
    }
    // The view shows it as it was set.
    assert_eq!(
        policy_shown(&t, &root, &bob).await,
        json!({"maxima": {"gpus": 1}})
    );
    // `null` clears it: the operator's policy again.
    let res = patch(&ada, json!({"session_policy": null})).await;
    assert!(res.data(200)["user"]["session_policy"].is_null());
    t.create_session(&ada, big)
        .await
        .problem(422, "validation_failed");
    // Not for one's own account, even an admin's.
    t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", root.id))
        .cookie(&root)
        .json(json!({"session_policy": {"maxima": {"gpus": 8}}}))
        .send()
        .await
        .problem(409, "own_account");
    // Not for users.
    t.req(Method::PATCH, &format!("/api/v2/admin/users/{}", bob.id))
        .cookie(&bob)
        .json(json!({"session_policy": {"maxima": {"gpus": 8}}}))
        .send()
        .await
        .problem(403, "admin_required");
}

/// Every route the document marks as an admin's, called by a logged-in
/// user with a body and path values that would be valid: 403
/// `admin_required` and nothing changes, whatever the route.
async fn every_admin_route_refuses_a_user(env: TestEnv) {
    let t = env.app().await;
    let root = t.admin("root@example.org").await;
    let mallory = t.user("mallory@example.org").await;
    let mut checked = 0;
    for op in medforge_api::openapi::operations() {
        if op.access != medforge_api::openapi::Access::Admin {
            continue;
        }
        let path = op
            .path
            .replace("{node}", "node-a")
            .replace("{gpu}", "0")
            .replace(
                "{id}",
                if op.path.contains("/invites/") {
                    "1764720000000-0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b"
                } else if op.path.contains("/users/") {
                    &root.id
                } else {
                    "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b"
                },
            );
        let body = json!({"email": "x@example.org", "password": "correct horse",
                          "is_admin": true, "disabled": true});
        let body = if op.body.is_some() { body } else { json!({}) };
        t.req(op.method.to_ascii_uppercase().parse().unwrap(), &path)
            .cookie(&mallory)
            .json(body)
            .send()
            .await
            .problem(403, "admin_required");
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} admin routes");
    // The admin the attempts named is untouched.
    let me = t.get_as(&root, "/api/v2/me").await.data(200);
    assert_eq!(me["user"]["disabled"], false);
    assert!(t.backend.sessions().is_empty());
}

crate::scenarios!(
    closed_signup_is_the_default_and_admins_create_accounts,
    domain_signup_admits_only_its_domains,
    an_invite_works_once_for_its_address_until_revoked,
    a_password_change_needs_the_current_one_and_ends_the_other_logins,
    a_disabled_account_cannot_log_in_and_its_sessions_stop,
    an_admin_reset_sets_the_password_and_ends_every_login,
    the_audit_log_records_each_action_newest_first,
    an_accounts_own_session_policy_replaces_the_operators,
    an_accounts_own_snapshot_retention_reaches_its_sessions,
    every_admin_route_refuses_a_user,
);
