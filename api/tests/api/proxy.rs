//! `session-proxy`, Caddy's forward_auth, row by row.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_api::{tokens, users};
use medforge_crds::{DesiredState, SessionPhase};
use serde_json::json;

use crate::common::{Client, OneSession, TestApp, TestEnv};

/// One session, Running.
async fn fixture(env: TestEnv) -> OneSession {
    let f = env.one_session().await;
    f.t.wait_phase(&f.id, "running").await;
    f
}

fn host(slug: &str) -> String {
    format!("s-{slug}.external.medforge.test")
}

async fn owner_and_admin_get_the_upstream(env: TestEnv) {
    let f = fixture(env).await;
    let expected = format!("mf-session-{}:8080", f.slug);
    for who in [&f.owner, &f.admin] {
        let res = f.t.proxy(&host(&f.slug), Some(who)).await;
        assert_eq!(res.status.as_u16(), 200, "{}", res.text());
        assert_eq!(res.header("x-upstream"), Some(expected.as_str()));
        assert!(res.header("x-request-id").is_some());
    }
    // Host variants: case, port, trailing dot, the base domain alias.
    for h in [
        format!("S-{}.EXTERNAL.MEDFORGE.TEST", f.slug.to_uppercase()),
        format!("s-{}.external.medforge.test:443", f.slug),
        format!("s-{}.external.medforge.test.", f.slug),
        format!("s-{}.medforge.test:8443", f.slug),
    ] {
        let res = f.t.proxy(&h, Some(&f.owner)).await;
        assert_eq!(res.header("x-upstream"), Some(expected.as_str()), "{h}");
    }
}

async fn a_spoofed_upstream_never_matters(env: TestEnv) {
    let f = fixture(env).await;
    let res =
        f.t.get("/api/v2/auth/session-proxy")
            .header("host", &host(&f.slug))
            .header("x-upstream", "evil.example.org:22")
            .cookie(&f.owner)
            .send()
            .await;
    assert_eq!(res.status.as_u16(), 200);
    let values: Vec<_> = res.headers.get_all("x-upstream").iter().collect();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0], format!("mf-session-{}:8080", f.slug).as_str());
    // Without a cookie, the spoof gets nothing.
    let res =
        f.t.get("/api/v2/auth/session-proxy")
            .header("host", &host(&f.slug))
            .header("x-upstream", "evil.example.org:22")
            .send()
            .await;
    res.problem(401, "unauthenticated");
    assert!(res.header("x-upstream").is_none());
}

async fn unauthenticated_forged_and_expired_cookies_get_401(env: TestEnv) {
    let f = fixture(env).await;
    let h = host(&f.slug);
    f.t.proxy(&h, None).await.problem(401, "unauthenticated");
    let forged = Client {
        token: tokens::new_token(),
        ..f.owner.clone()
    };
    f.t.proxy(&h, Some(&forged))
        .await
        .problem(401, "unauthenticated");
    let garbage = Client {
        token: "x".repeat(5000),
        ..f.owner.clone()
    };
    f.t.proxy(&h, Some(&garbage))
        .await
        .problem(401, "unauthenticated");
    // Expired: a fresh login whose token is past its absolute expiry.
    let expired = crate::common::client_from(
        &f.t.post("/api/v2/auth/login")
            .json(json!({"email": "owner@example.org", "password": "correct horse"}))
            .send()
            .await,
    );
    let now = medforge_api::now_secs();
    let hash = tokens::hash_hex(&tokens::hash_token(&expired.token));
    users::set_token_times(f.t.state().db(), &hash, now, now - 1)
        .await
        .unwrap();
    f.t.proxy(&h, Some(&expired))
        .await
        .problem(401, "unauthenticated");
    // Logged out: revoked.
    f.t.post("/api/v2/auth/logout")
        .cookie(&f.owner)
        .send()
        .await
        .data(200);
    f.t.proxy(&h, Some(&f.owner))
        .await
        .problem(401, "unauthenticated");
    // The bearer header is not a way in for session hosts.
    let res =
        f.t.get("/api/v2/auth/session-proxy")
            .header("host", &h)
            .header("authorization", &format!("Bearer {}", f.admin.token))
            .send()
            .await;
    res.problem(401, "unauthenticated");
}

async fn another_users_cookie_gets_403(env: TestEnv) {
    let f = fixture(env).await;
    let res = f.t.proxy(&host(&f.slug), Some(&f.other)).await;
    res.problem(403, "session_access_denied");
    assert!(res.header("x-upstream").is_none());
}

async fn bad_hosts_unknown_slugs_and_stopped_sessions_get_404(env: TestEnv) {
    let f = fixture(env).await;
    for h in [
        "medforge.test".to_owned(),
        "api.medforge.test".to_owned(),
        format!("s-{}.evil.test", f.slug),
        format!("x.s-{}.external.medforge.test", f.slug),
        format!("s-{}x.external.medforge.test", f.slug),
        "s-zzzzzzzz.external.medforge.test".to_owned(),
        // An external session on the internal domain.
        format!("s-{}.internal.medforge.test", f.slug),
    ] {
        f.t.proxy(&h, Some(&f.owner))
            .await
            .problem(404, "not_found");
    }
    // Not running yet (scheduled, not ready): 404.
    f.t.backend.update_status(&f.id, |s| {
        s.phase = Some(SessionPhase::Starting);
    });
    wait_routable(&f.t, &f.id, false).await;
    f.t.proxy(&host(&f.slug), Some(&f.owner))
        .await
        .problem(404, "not_found");
    f.t.backend
        .update_status(&f.id, |s| s.phase = Some(SessionPhase::Running));
    wait_routable(&f.t, &f.id, true).await;
    f.t.proxy(&host(&f.slug), Some(&f.owner)).await;
    // Stopped: 404.
    f.t.post(&format!("/api/v2/external/sessions/{}/stop", f.id))
        .cookie(&f.owner)
        .send()
        .await
        .data(202);
    f.t.wait_phase(&f.id, "stopped").await;
    f.t.proxy(&host(&f.slug), Some(&f.owner))
        .await
        .problem(404, "not_found");
    f.t.proxy(&host(&f.slug), Some(&f.admin))
        .await
        .problem(404, "not_found");
}

/// The agent has not acted yet (or is down): the status still says Running
/// and Ready, but the owner stopped the session, or it is being deleted.
/// Routing follows the desired state at once.
async fn stopped_or_deleting_sessions_get_404_before_the_agent_acts(env: TestEnv) {
    let f = fixture(env).await;
    let h = host(&f.slug);
    assert_eq!(f.t.proxy(&h, Some(&f.owner)).await.status.as_u16(), 200);
    let running = f.t.backend.session(&f.id).unwrap();

    let mut stopped = running.clone();
    stopped.spec.state = DesiredState::Stopped;
    f.t.backend.insert(stopped);
    wait_routable(&f.t, &f.id, false).await;
    for who in [&f.owner, &f.admin] {
        f.t.proxy(&h, Some(who)).await.problem(404, "not_found");
    }

    f.t.backend.insert(running.clone());
    wait_routable(&f.t, &f.id, true).await;
    assert_eq!(f.t.proxy(&h, Some(&f.owner)).await.status.as_u16(), 200);

    // Stopped through the api while its watch lags behind: this replica
    // answers 404 from the stop's own write, not once the watch has it.
    f.t.backend.hold_watch(true);
    let stop = format!("/api/v2/external/sessions/{}/stop", f.id);
    f.t.post_as(&f.owner, &stop).await.data(202);
    f.t.proxy(&h, Some(&f.owner))
        .await
        .problem(404, "not_found");
    f.t.backend.hold_watch(false);
    f.t.backend.insert(running.clone());
    wait_routable(&f.t, &f.id, true).await;

    let mut deleting = running;
    deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
    f.t.backend.insert(deleting);
    wait_routable(&f.t, &f.id, false).await;
    f.t.proxy(&h, Some(&f.owner))
        .await
        .problem(404, "not_found");
}

async fn wait_routable(t: &TestApp, id: &str, routable: bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while t.state().index().get(id).map(|e| e.upstream.is_some()) != Some(routable) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

async fn activity_is_batched_and_costs_no_query(env: TestEnv) {
    let f = fixture(env).await;
    let h = host(&f.slug);
    // Warm the token cache.
    assert_eq!(f.t.proxy(&h, Some(&f.owner)).await.status.as_u16(), 200);
    let db = f.t.state().db();
    let queries = db.query_count();
    for _ in 0..50 {
        assert_eq!(f.t.proxy(&h, Some(&f.owner)).await.status.as_u16(), 200);
    }
    assert_eq!(db.query_count(), queries, "no database query per request");
    assert_eq!(f.t.backend.activity_writes(), 0, "no write per request");
    assert!(f.t.backend.activity(&f.id).is_none());
    medforge_api::flush_activity(f.t.state()).await;
    assert_eq!(f.t.backend.activity_writes(), 1, "one batch");
    let at = f.t.backend.activity(&f.id).expect("activity recorded");
    assert!((jiff::Timestamp::now().as_second() - at.as_second()).abs() < 60);
    // Nothing new: nothing written.
    medforge_api::flush_activity(f.t.state()).await;
    assert_eq!(f.t.backend.activity_writes(), 1);
    let shown =
        f.t.get(&format!("/api/v2/external/sessions/{}", f.id))
            .cookie(&f.owner)
            .send()
            .await
            .data(200);
    assert!(shown["last_activity_at"].as_str().is_some());
}

crate::scenarios!(
    owner_and_admin_get_the_upstream,
    a_spoofed_upstream_never_matters,
    unauthenticated_forged_and_expired_cookies_get_401,
    another_users_cookie_gets_403,
    bad_hosts_unknown_slugs_and_stopped_sessions_get_404,
    stopped_or_deleting_sessions_get_404_before_the_agent_acts,
    activity_is_batched_and_costs_no_query,
);
