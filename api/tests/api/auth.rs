//! Signup, login, logout, me: success, every documented error, cookie attributes,
//! token storage, expiry, rate limits and the Origin allowlist.

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use medforge_api::backend::MemoryBackendConfig;
use medforge_api::{AdminOutcome, ExistingAccount, tokens, users};
use serde_json::json;

use crate::common::{GOOD_ORIGIN, TestApp, TestEnv, client_from};

const JSON: &str = "application/json";

/// Posts each `(content type, body)` to `path` and checks the problem it gets.
async fn refuses_bodies<const N: usize>(
    t: &TestApp,
    path: &str,
    cases: [(Option<&str>, Bytes, u16, &str); N],
) {
    for (content_type, body, status, code) in cases {
        let case = format!("{path} with {content_type:?}, {} bytes", body.len());
        let res = t.post(path).body(content_type, body).send().await;
        assert_eq!(res.status.as_u16(), status, "{case}: {}", res.text());
        res.problem(status, code);
    }
}

async fn signup_sets_a_cookie_and_stores_only_a_hash(env: TestEnv) {
    let t = env.app().await;
    let res = t
        .post("/api/v2/auth/signup")
        .json(json!({"email": "  Ada@Example.ORG ", "password": "correct horse"}))
        .send()
        .await;
    let data = res.data(201);
    assert_eq!(data["user"]["email"], "ada@example.org");
    assert_eq!(data["user"]["is_admin"], false);
    assert_eq!(data["user"]["can_use_internal"], false);
    let cookies: Vec<&str> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies.len(), 2, "{cookies:?}");
    // The api's own cookie: host-only (no Domain), so that no session host
    // can set or shadow it; `__Host-` makes browsers enforce that.
    let (api, session) = (cookies[0], cookies[1]);
    assert!(api.starts_with("__Host-medforge="), "{api}");
    assert!(!api.contains("Domain"), "{api}");
    // The session hosts' cookie: the whole domain, for forward_auth.
    assert!(session.starts_with("medforge_session="), "{session}");
    assert!(session.contains("Domain=.medforge.test"), "{session}");
    for cookie in cookies {
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=604800",
        ] {
            assert!(
                cookie.contains(attribute),
                "{attribute} missing in {cookie}"
            );
        }
    }
    let client = client_from(&res);
    let db = t.state().db();
    let hashed = tokens::hash_hex(&tokens::hash_token(&client.token));
    assert!(users::find_token(db, &hashed).await.unwrap().is_some());
    assert!(
        users::find_token(db, &client.token)
            .await
            .unwrap()
            .is_none(),
        "the raw token is not stored"
    );
    // The cookie works.
    let me = t.get_as(&client, "/api/v2/me").await;
    assert_eq!(me.data(200)["user"]["id"], client.id.as_str());
}

async fn signup_rejects_bad_input(env: TestEnv) {
    let t = env.app().await;
    let post = |body: serde_json::Value| t.post("/api/v2/auth/signup").json(body).send();
    for (body, fields) in [
        (json!({"password": "correct horse"}), &["email"][..]),
        (
            json!({"email": "not-an-email", "password": "correct horse"}),
            &["email"][..],
        ),
        (
            json!({"email": "a@b.org", "password": "short"}),
            &["password"][..],
        ),
        (
            json!({"email": "x", "password": "short"}),
            &["email", "password"][..],
        ),
        (
            json!({"email": "a@b.org", "password": "correct horse", "admin": true}),
            &["admin"][..],
        ),
        (
            json!({"email": 42, "password": "correct horse"}),
            &["email"][..],
        ),
    ] {
        assert_eq!(post(body).await.error_fields(), fields);
    }
    let valid = r#"{"email":"a@b.org","password":"correct horse"}"#;
    let huge = format!(
        r#"{{"email":"a@b.org","password":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    refuses_bodies(
        &t,
        "/api/v2/auth/signup",
        [
            (Some(JSON), "{\"email\": ".into(), 400, "malformed_json"),
            (
                Some("text/plain"),
                valid.into(),
                415,
                "unsupported_media_type",
            ),
            (None, valid.into(), 415, "unsupported_media_type"),
            (Some(JSON), huge.into(), 413, "payload_too_large"),
        ],
    )
    .await;

    t.user("dup@example.org").await;
    post(json!({"email": "DUP@example.org", "password": "correct horse"}))
        .await
        .problem(409, "email_taken");
}

async fn login_success_and_failures(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let login = |email: &str, password: &str| {
        t.post("/api/v2/auth/login")
            .json(json!({"email": email, "password": password}))
            .send()
    };
    let res = login("ADA@example.org", "correct horse").await;
    assert_eq!(res.data(200)["user"]["id"], ada.id.as_str());
    let second = client_from(&res);
    assert_ne!(second.token, ada.token, "each login gets its own token");

    for (email, password) in [
        ("ada@example.org", "wrong horse"),
        ("nobody@example.org", "correct horse"),
    ] {
        login(email, password)
            .await
            .problem(401, "invalid_credentials");
    }
    let fields = login("ada@example.org", "").await.error_fields();
    assert_eq!(fields, ["password"]);
    refuses_bodies(
        &t,
        "/api/v2/auth/login",
        [
            (Some(JSON), "nope".into(), 400, "malformed_json"),
            (
                Some(JSON),
                vec![b' '; 100 * 1024].into(),
                413,
                "payload_too_large",
            ),
            (
                Some("text/html"),
                "{}".into(),
                415,
                "unsupported_media_type",
            ),
        ],
    )
    .await;
}

async fn login_and_signup_are_rate_limited_per_ip(env: TestEnv) {
    let t = env
        .app_with(
            |c| {
                c.rate_limit.burst = 2;
                c.rate_limit.per_minute = 1;
            },
            MemoryBackendConfig::default(),
        )
        .await;
    // Another account each time, so that only the per-network limit counts
    // (an account's own failures are limited too: see below).
    let attempts = std::sync::atomic::AtomicUsize::new(0);
    let attempt = |peer: &str, forwarded: Option<&str>| {
        let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut req = t
            .post("/api/v2/auth/login")
            .peer(peer)
            .json(json!({"email": format!("a{n}@b.org"), "password": "whatever1"}));
        if let Some(f) = forwarded {
            req = req.header("x-forwarded-for", f);
        }
        req.send()
    };
    for peer in ["198.51.100.1:5000", "198.51.100.1:5001"] {
        attempt(peer, None)
            .await
            .problem(401, "invalid_credentials");
    }
    let limited = attempt("198.51.100.1:5002", None).await;
    limited.problem(429, "rate_limited");
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    // Signup shares the bucket.
    t.post("/api/v2/auth/signup")
        .peer("198.51.100.1:5003")
        .json(json!({"email": "new@b.org", "password": "correct horse"}))
        .send()
        .await
        .problem(429, "rate_limited");
    let (refused, limited) = ((401, "invalid_credentials"), (429, "rate_limited"));
    for (peer, forwarded, (status, code)) in [
        // Another address has its own bucket.
        ("198.51.100.2:5000", None, refused),
        // Behind the trusted proxy (loopback), X-Forwarded-For names the client.
        ("127.0.0.1:4000", Some("203.0.113.5"), refused),
        ("127.0.0.1:4000", Some("203.0.113.5"), refused),
        ("127.0.0.1:4000", Some("203.0.113.5"), limited),
        ("127.0.0.1:4000", Some("203.0.113.6"), refused),
        // An IPv6 /64 is one client, whichever of its addresses it uses.
        ("127.0.0.1:4000", Some("2001:db8::1"), refused),
        ("127.0.0.1:4000", Some("2001:db8::2"), refused),
        ("127.0.0.1:4000", Some("2001:db8::ffff:1:2:3"), limited),
        ("127.0.0.1:4000", Some("2001:db8:0:1::1"), refused),
        // An untrusted peer cannot pick its bucket with X-Forwarded-For.
        ("198.51.100.1:5004", Some("203.0.113.99"), limited),
    ] {
        attempt(peer, forwarded).await.problem(status, code);
    }
}

/// Password hashes are bounded: with every slot taken, signup and login get
/// 503 `busy` with `Retry-After` at once (no queue), and work again as soon
/// as a slot is free.
async fn a_saturated_hasher_answers_busy_instead_of_queueing(env: TestEnv) {
    let t = env
        .app_with(
            |c| c.auth.max_concurrent_hashes = 2,
            MemoryBackendConfig::default(),
        )
        .await;
    t.user("ada@example.org").await;
    let slots = t.state().hash_slots();
    let held: Vec<_> = (0..2).map(|_| slots.take().expect("a free slot")).collect();
    assert_eq!(slots.free(), 0);
    let login = || {
        t.post("/api/v2/auth/login")
            .json(json!({"email": "ada@example.org", "password": "correct horse"}))
            .send()
    };
    let busy = login().await;
    busy.problem(503, "busy");
    assert_eq!(busy.header("retry-after"), Some("1"));
    t.post("/api/v2/auth/signup")
        .json(json!({"email": "bob@example.org", "password": "correct horse"}))
        .send()
        .await
        .problem(503, "busy");
    drop(held);
    login().await.data(200);
    assert_eq!(slots.free(), 2, "every slot is given back");
}

/// Guessing one account's password from many addresses: after 5 wrong
/// passwords its logins wait (429 `login_delayed`, the right password
/// included), other accounts do not; once the wait is over the right
/// password works and clears the count.
async fn failed_logins_delay_that_account_from_any_address(env: TestEnv) {
    let t = env
        .app_with(
            |c| c.rate_limit.burst = 1000,
            MemoryBackendConfig::default(),
        )
        .await;
    t.user("ada@example.org").await;
    t.user("bob@example.org").await;
    let login = |email: &'static str, password: &'static str, i: usize| {
        // Each guess from another address of another network.
        t.post("/api/v2/auth/login")
            .peer(&format!("198.51.{}.{}:5000", 100 + i / 200, 1 + i % 200))
            .json(json!({"email": email, "password": password}))
            .send()
    };
    for i in 0..6 {
        login("ada@example.org", "wrong guess", i)
            .await
            .problem(401, "invalid_credentials");
    }
    let delayed = login("ada@example.org", "correct horse", 6).await;
    delayed.problem(429, "login_delayed");
    assert_eq!(delayed.header("retry-after"), Some("1"));
    login("bob@example.org", "correct horse", 7).await.data(200);
    // The wait is one second; poll past it (the deadline is generous, for a
    // loaded machine). Attempts during the wait do not lengthen it.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut i = 8;
    loop {
        let res = login("ada@example.org", "correct horse", i).await;
        if res.status.as_u16() == 200 {
            break;
        }
        res.problem(429, "login_delayed");
        assert!(tokio::time::Instant::now() < deadline, "still delayed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        i += 1;
    }
    // Cleared: a wrong password is an ordinary 401 again, not a longer wait.
    login("ada@example.org", "wrong guess", 99)
        .await
        .problem(401, "invalid_credentials");
    login("ada@example.org", "correct horse", 100)
        .await
        .data(200);
}

async fn me_needs_a_valid_token(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    t.refuses_anonymous(Method::GET, "/api/v2/me").await;
    t.get("/api/v2/me")
        .header("cookie", "__Host-medforge=forged-token")
        .send()
        .await
        .problem(401, "unauthenticated");
    // The session hosts' cookie is not a login for the api's routes.
    t.get("/api/v2/me")
        .header("cookie", &ada.session_cookie())
        .send()
        .await
        .problem(401, "unauthenticated");
    let bearer = format!("Bearer {}", ada.token);
    let res = t
        .get("/api/v2/me")
        .header("authorization", &bearer)
        .send()
        .await;
    assert_eq!(res.data(200)["user"]["email"], "ada@example.org");
    // Other cookies alongside (a session hosts' cookie of anyone's among
    // them) do not matter.
    let cookies = format!(
        "theme=dark; medforge_session=bogus; {}; medforge_session={}",
        ada.api_cookie(),
        ada.token
    );
    let res = t.get("/api/v2/me").header("cookie", &cookies).send().await;
    assert_eq!(res.data(200)["user"]["id"], ada.id.as_str());
}

/// A page of a session host can set a cookie for the whole domain, on a
/// path more specific than `/`, which a browser then sends first: with the
/// same name as the api's cookie, the api would see two values. It counts
/// neither, so the request is nobody's rather than the planter's. (A
/// browser refuses such a cookie anyway: a `__Host-` cookie with a
/// `Domain` is never stored; `tests/e2e_one_host.rs` drives a browser-like
/// cookie jar through Caddy.)
async fn two_values_of_the_api_cookie_authenticate_nobody(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let mallory = t.user("mallory@example.org").await;
    let db = t.state().db();
    for cookies in [
        format!("{}; {}", mallory.api_cookie(), ada.api_cookie()),
        format!("{}; {}", ada.api_cookie(), mallory.api_cookie()),
        format!("{}; __Host-medforge=forged", ada.api_cookie()),
    ] {
        let before = db.query_count();
        t.get("/api/v2/me")
            .header("cookie", &cookies)
            .send()
            .await
            .problem(401, "unauthenticated");
        assert_eq!(db.query_count() - before, 0, "nothing looked up: {cookies}");
    }
    // One token twice (a bearer token and the cookie) is one login, and
    // leaves it valid for the next request.
    let fresh = t.log_in_again("ada@example.org").await;
    let res = t
        .get("/api/v2/me")
        .header("authorization", &format!("Bearer {}", fresh.token))
        .header("cookie", &fresh.api_cookie())
        .send()
        .await;
    assert_eq!(res.data(200)["user"]["id"], ada.id.as_str());
    t.get_as(&fresh, "/api/v2/me").await.data(200);
    // A bearer token still counts, whatever the cookies.
    let res = t
        .get("/api/v2/me")
        .header("authorization", &format!("Bearer {}", ada.token))
        .header(
            "cookie",
            &format!("{}; {}", mallory.api_cookie(), ada.api_cookie()),
        )
        .send()
        .await;
    assert_eq!(res.data(200)["user"]["id"], ada.id.as_str());
}

/// Thousands of values of the login cookie (a flood, or values a session
/// planted) cost one query on every route that reads them: an
/// authenticated route, forward_auth and logout.
async fn a_flood_of_cookie_values_costs_a_bounded_number_of_queries(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let flood = |prefix: &str| {
        (0..10_000)
            .map(|i| {
                let name = ["medforge_session", "__Host-medforge"][i % 2];
                format!("{name}={prefix}-{i}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let db = t.state().db();
    // The documented bound (docs/api.md): the values are looked up together.
    let bound = 1;

    let before = db.query_count();
    t.get("/api/v2/me")
        .header("cookie", &flood("me"))
        .send()
        .await
        .problem(401, "unauthenticated");
    let spent = db.query_count() - before;
    assert!(spent <= bound, "{spent} queries for one request");

    let before = db.query_count();
    t.get("/api/v2/auth/session-proxy")
        .header("host", "s-abcd1234.external.medforge.test")
        .header("cookie", &flood("proxy"))
        .send()
        .await
        .problem(401, "unauthenticated");
    let spent = db.query_count() - before;
    assert!(spent <= bound, "{spent} queries for one forward_auth");

    // The api's cookie once, a flood of the session hosts' cookie around
    // it: still the user (the api's routes read only their own cookie).
    let session_flood: String = (0..10_000)
        .map(|i| format!("medforge_session=after-{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    let first = format!("{}; {session_flood}", ada.api_cookie());
    let res = t.get("/api/v2/me").header("cookie", &first).send().await;
    assert_eq!(res.data(200)["user"]["id"], ada.id.as_str());

    let before = db.query_count();
    t.post("/api/v2/auth/logout")
        .header("cookie", &flood("logout"))
        .send()
        .await
        .data(200);
    let spent = db.query_count() - before;
    assert!(spent <= bound, "{spent} queries for one logout");
    t.get_as(&ada, "/api/v2/me").await.data(200);
}

async fn logout_revokes_the_token(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    let other_login = t.log_in_again("ada@example.org").await;
    t.get_as(&ada, "/api/v2/me").await.data(200);
    let res = t.post_as(&ada, "/api/v2/auth/logout").await;
    assert_eq!(res.data(200)["message"], "Logged out.");
    let cleared: Vec<&str> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(cleared[0].starts_with("__Host-medforge=;") && cleared[0].contains("Max-Age=0"));
    assert!(!cleared[0].contains("Domain="), "{cleared:?}");
    assert!(cleared[1].starts_with("medforge_session=;") && cleared[1].contains("Max-Age=0"));
    t.get_as(&ada, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");
    let hashed = tokens::hash_hex(&tokens::hash_token(&ada.token));
    assert!(
        users::find_token(t.state().db(), &hashed)
            .await
            .unwrap()
            .is_none()
    );
    // Only that token: the other login still works.
    t.get_as(&other_login, "/api/v2/me").await.data(200);
    // Logging out without a token is fine too.
    t.post("/api/v2/auth/logout").send().await.data(200);
}

async fn tokens_expire_when_idle_and_absolutely(env: TestEnv) {
    let t = env.app().await;
    let db = t.state().db();
    let now = medforge_api::now_secs();
    let idle = t.state().config().auth.idle_ttl.as_secs() as i64;

    let absolute = t.user("abs@example.org").await;
    let hash = tokens::hash_hex(&tokens::hash_token(&absolute.token));
    users::set_token_times(db, &hash, now, now - 1)
        .await
        .unwrap();
    t.state()
        .tokens()
        .forget(&tokens::hash_token(&absolute.token));
    t.get_as(&absolute, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");

    let idler = t.user("idle@example.org").await;
    let hash = tokens::hash_hex(&tokens::hash_token(&idler.token));
    users::set_token_times(db, &hash, now - idle - 1, now + 3600)
        .await
        .unwrap();
    t.state().tokens().forget(&tokens::hash_token(&idler.token));
    t.get_as(&idler, "/api/v2/me")
        .await
        .problem(401, "unauthenticated");

    // A cached token expires too, without asking the database.
    let cached = t.user("cached@example.org").await;
    let cache = t.state().tokens();
    assert!(
        cache
            .resolve(db, &cached.token, now)
            .await
            .unwrap()
            .is_some()
    );
    let queries = db.query_count();
    assert!(
        cache
            .resolve(db, &cached.token, now + 5)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(db.query_count(), queries, "answered from the cache");
    assert!(
        cache
            .resolve(db, &cached.token, now + 5 + idle)
            .await
            .unwrap()
            .is_none(),
        "idle expiry counts from the last use seen in memory"
    );

    // Token use is written back in batches: last_used_at moves on flush.
    let user = t.user("flush@example.org").await;
    let hash = tokens::hash_hex(&tokens::hash_token(&user.token));
    users::set_token_times(db, &hash, now - 100, now + 3600)
        .await
        .unwrap();
    t.state().tokens().forget(&tokens::hash_token(&user.token));
    t.get_as(&user, "/api/v2/me").await.data(200);
    assert_eq!(
        users::find_token(db, &hash)
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        now - 100
    );
    medforge_api::flush_activity(t.state()).await;
    assert!(
        users::find_token(db, &hash)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            >= now
    );
}

async fn origin_allowlist_guards_state_changing_routes(env: TestEnv) {
    let t = env.app().await;
    let ada = t.user("ada@example.org").await;
    for origin in [
        "https://evil.example.org",
        "null",
        "http://medforge.test",
        "https://s-abcd1234.external.medforge.test",
        "https://medforge.test.evil.org",
    ] {
        // Every documented state-changing route.
        for op in medforge_api::openapi::operations() {
            if op.method == "get" {
                continue;
            }
            let path = op
                .path
                .replace("{id}", "x")
                .replace("{node}", "node-a")
                .replace("{gpu}", "0");
            let method = op.method.to_ascii_uppercase().parse().unwrap();
            let res = t
                .req(method, &path)
                .cookie(&ada)
                .header("origin", origin)
                .json(json!({}))
                .send()
                .await;
            res.problem(403, "origin_not_allowed");
        }
    }
    for origin in [
        GOOD_ORIGIN,
        "https://api.medforge.test",
        "https://external.medforge.test",
        "https://internal.medforge.test:443",
    ] {
        let res = t
            .post("/api/v2/auth/login")
            .header("origin", origin)
            .json(json!({"email": "ada@example.org", "password": "correct horse"}))
            .send()
            .await;
        assert_eq!(res.status, StatusCode::OK, "{origin}: {}", res.text());
    }
    // Reads are not guarded.
    t.get("/api/v2/me")
        .cookie(&ada)
        .header("origin", "https://evil.example.org")
        .send()
        .await
        .data(200);
}

async fn admin_bootstrap_never_uses_a_default_password(env: TestEnv) {
    let t = env.app().await;
    let db = t.state().db();
    let fast = medforge_api::PasswordHashing::INSECURE_FAST;
    let refuse = ExistingAccount::Refuse;
    assert!(
        medforge_api::ensure_admin(db, fast, "root@example.org", None, refuse)
            .await
            .is_err(),
        "a missing account needs a password"
    );
    assert!(
        medforge_api::ensure_admin(db, fast, "root@example.org", Some("short"), refuse)
            .await
            .is_err()
    );
    let admin =
        medforge_api::ensure_admin(db, fast, "root@example.org", Some("long enough"), refuse)
            .await
            .unwrap();
    assert!(admin.is_admin && admin.can_use_internal);
    // An admin already: left as it is, its password too.
    let again =
        medforge_api::ensure_admin(db, fast, "root@example.org", Some("another one"), refuse)
            .await
            .unwrap();
    assert_eq!(again.id, admin.id);
    let login = |email: &'static str, password: &'static str| {
        t.post("/api/v2/auth/login")
            .json(json!({"email": email, "password": password}))
            .send()
    };
    login("root@example.org", "long enough").await.data(200);
    login("root@example.org", "another one")
        .await
        .problem(401, "invalid_credentials");
}

/// Someone signed up with the address meant for an admin: making that
/// account an admin is refused unless its password is reset, which also ends
/// the logins its registrant holds.
async fn a_self_registered_account_is_never_promoted_with_its_password(env: TestEnv) {
    let t = env.app().await;
    let db = t.state().db();
    let fast = medforge_api::PasswordHashing::INSECURE_FAST;
    let squatter = t.user("ops@example.org").await;
    let refused = medforge_api::ensure_admin(
        db,
        fast,
        "OPS@example.org",
        Some("the real admin's"),
        ExistingAccount::Refuse,
    )
    .await
    .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("ops@example.org exists and is not an admin")
            && message.contains("--reset-password"),
        "{message}"
    );
    let unchanged = users::get_user(db, &squatter.id).await.unwrap().unwrap();
    assert!(!unchanged.is_admin, "refused means not promoted");
    t.get_as(&squatter, "/api/v2/me").await.data(200);

    let promoted = medforge_api::ensure_admin(
        db,
        fast,
        "ops@example.org",
        Some("the real admin's"),
        ExistingAccount::ResetPassword,
    )
    .await
    .unwrap();
    assert_eq!(promoted.id, squatter.id);
    assert!(promoted.is_admin && promoted.can_use_internal);
    // The registrant's login and password no longer work; the new one does.
    let hashed = tokens::hash_hex(&tokens::hash_token(&squatter.token));
    assert!(users::find_token(db, &hashed).await.unwrap().is_none());
    let login = |password: &'static str| {
        t.post("/api/v2/auth/login")
            .json(json!({"email": "ops@example.org", "password": password}))
            .send()
    };
    login("correct horse")
        .await
        .problem(401, "invalid_credentials");
    let admin = client_from(&login("the real admin's").await);
    let me = t.get_as(&admin, "/api/v2/me").await.data(200);
    assert_eq!(me["user"]["is_admin"], true);
}

/// api replicas starting at once on an empty database each ensure the
/// admin (the configured one, or `medforge up`'s generated first admin):
/// every call succeeds, one account is made, and the password of exactly one
/// call is the account's (the others leave it as the winner made it).
async fn concurrent_admin_bootstraps_make_one_account(env: TestEnv) {
    const CALLS: usize = 8;
    let t = env.app().await;
    let fast = medforge_api::PasswordHashing::INSECURE_FAST;
    for (email, existing) in [
        ("race@example.org", ExistingAccount::Refuse),
        ("first@example.org", ExistingAccount::ResetUnlessAdmin),
    ] {
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(CALLS));
        let calls: Vec<_> = (0..CALLS)
            .map(|i| {
                let db = t.state().db().clone();
                let start = start.clone();
                tokio::spawn(async move {
                    let password = format!("password number {i}");
                    start.wait().await;
                    let ensured = medforge_api::ensure_admin_outcome(
                        &db,
                        fast,
                        email,
                        Some(&password),
                        existing,
                    )
                    .await;
                    ensured.map(|(user, outcome)| (user.id, outcome, password))
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        let mut created = Vec::new();
        for call in calls {
            let (id, outcome, password) = call
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{email}: a concurrent call failed: {e}"));
            ids.insert(id);
            match outcome {
                AdminOutcome::Created => created.push(password),
                AdminOutcome::LeftAsItIs => {}
                AdminOutcome::PasswordReset => panic!("{email}: a racing call reset the password"),
            }
        }
        assert_eq!(ids.len(), 1, "{email}: one account for every call: {ids:?}");
        assert_eq!(
            created.len(),
            1,
            "{email}: one call created it: {created:?}"
        );
        let user = users::get_user_by_email(t.state().db(), email)
            .await
            .unwrap()
            .expect("the account");
        assert!(user.is_admin && ids.contains(&user.id));
        t.post("/api/v2/auth/login")
            .json(json!({"email": email, "password": created[0]}))
            .send()
            .await
            .data(200);
    }
}

/// forward_auth reads the session hosts' cookie: its values are looked up
/// together, in one query, and the first valid one in the order sent
/// decides; a fifth value is never looked at.
async fn session_cookie_values_are_looked_up_together_and_the_first_valid_one_wins(env: TestEnv) {
    let one = env.one_session().await;
    let t = &one.t;
    let host = format!("s-{}.external.medforge.test", one.slug);
    let db = t.state().db();
    let proxy = |cookies: String| {
        let host = host.clone();
        async move {
            t.get("/api/v2/auth/session-proxy")
                .header("host", &host)
                .header("cookie", &cookies)
                .send()
                .await
        }
    };
    t.wait_phase(&one.id, "running").await;

    // Three unknown values, then the owner's: one query for all four.
    let before = db.query_count();
    let res = proxy(format!(
        "medforge_session=u1; medforge_session=u2; medforge_session=u3; {}",
        one.owner.session_cookie()
    ))
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
    let spent = db.query_count() - before;
    assert!(spent <= 1, "{spent} queries for four cookie values");

    // Four unknown values first: the owner's fifth is not looked at.
    proxy(format!(
        "medforge_session=v1; medforge_session=v2; medforge_session=v3; medforge_session=v4; {}",
        one.owner.session_cookie()
    ))
    .await
    .problem(401, "unauthenticated");

    // Two valid logins: the first sent decides.
    proxy(format!(
        "{}; {}",
        one.other.session_cookie(),
        one.owner.session_cookie()
    ))
    .await
    .problem(403, "session_access_denied");
    let res = proxy(format!(
        "{}; {}",
        one.owner.session_cookie(),
        one.other.session_cookie()
    ))
    .await;
    assert_eq!(res.status, 200, "{}", res.text());

    // A logged-out value first: the next valid one decides.
    let old = t.log_in_again("other@example.org").await;
    t.post("/api/v2/auth/logout")
        .cookie(&old)
        .send()
        .await
        .data(200);
    let res = proxy(format!(
        "{}; {}",
        old.session_cookie(),
        one.owner.session_cookie()
    ))
    .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

crate::scenarios!(
    signup_sets_a_cookie_and_stores_only_a_hash,
    signup_rejects_bad_input,
    login_success_and_failures,
    login_and_signup_are_rate_limited_per_ip,
    a_saturated_hasher_answers_busy_instead_of_queueing,
    failed_logins_delay_that_account_from_any_address,
    me_needs_a_valid_token,
    a_flood_of_cookie_values_costs_a_bounded_number_of_queries,
    session_cookie_values_are_looked_up_together_and_the_first_valid_one_wins,
    two_values_of_the_api_cookie_authenticate_nobody,
    logout_revokes_the_token,
    tokens_expire_when_idle_and_absolutely,
    origin_allowlist_guards_state_changing_routes,
    admin_bootstrap_never_uses_a_default_password,
    a_self_registered_account_is_never_promoted_with_its_password,
    concurrent_admin_bootstraps_make_one_account,
);
