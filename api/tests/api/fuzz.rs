//! Property tests through the router: arbitrary JSON and bytes on every body-taking
//! route, arbitrary hosts and cookies on session-proxy. No input may panic or give a
//! 5xx, and every error is a problem document. Bounded case counts keep this fast.

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::Value;
use tokio::runtime::Runtime;

use crate::common::{Client, Res, TestApp, TestEnv};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..Config::default()
    }
}

fn key() -> impl Strategy<Value = String> {
    const KNOWN: [&str; 13] = [
        "email",
        "password",
        "gpus",
        "pack",
        "idle_timeout",
        "max_lifetime",
        "resources",
        "cpu",
        "memory",
        "pids",
        "is_admin",
        "can_use_internal",
        "max_sessions",
    ];
    // Each known key as likely as the random one, as when each was an arm of its own.
    prop_oneof![
        13 => proptest::sample::select(&KNOWN[..]).prop_map(str::to_owned),
        1 => "\\PC{1,10}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..20).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[a-z0-9]{1,8}@[a-z]{1,5}\\.org".prop_map(Value::from),
        "[0-9]{1,3}(m|h|s|Gi|Mi)?".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[track_caller]
fn assert_sane(res: &Res) {
    assert!(
        res.status.as_u16() < 500,
        "server error {}: {}",
        res.status,
        res.text()
    );
    assert!(res.header("x-request-id").is_some());
    if res.status.as_u16() >= 400 {
        assert_eq!(
            res.header("content-type"),
            Some("application/problem+json"),
            "{}",
            res.text()
        );
        let body = res.json();
        assert!(body["code"].is_string());
    }
}

struct Fuzz {
    rt: Runtime,
    t: TestApp,
    user: Client,
    admin: Client,
}

fn setup() -> Fuzz {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (t, user, admin) = rt.block_on(async {
        let t = TestEnv::Sqlite.app().await;
        let user = t.user("fuzz@example.org").await;
        let admin = t.admin("root@example.org").await;
        (t, user, admin)
    });
    Fuzz { rt, t, user, admin }
}

const BODY_ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/v2/auth/signup"),
    ("POST", "/api/v2/auth/login"),
    ("POST", "/api/v2/external/sessions"),
    ("POST", "/api/v2/internal/sessions"),
    ("PATCH", "/api/v2/admin/users/USER"),
];

#[test]
fn arbitrary_json_bodies_never_break_a_route() {
    let f = setup();
    proptest!(config(160), |(route in 0..BODY_ROUTES.len(), body in json_value())| {
        let (method, path) = BODY_ROUTES[route];
        let path = path.replace("USER", &f.user.id);
        let who = if method == "PATCH" { &f.admin } else { &f.user };
        let res = f.rt.block_on(
            f.t.req(method.parse().unwrap(), &path).cookie(who).json(body).send(),
        );
        assert_sane(&res);
    });
}

#[test]
fn arbitrary_bytes_never_break_a_route() {
    let f = setup();
    let content_types = [
        None,
        Some("application/json"),
        Some("application/merge-patch+json"),
        Some("text/plain"),
        Some("application/json; charset=utf-8"),
    ];
    proptest!(config(120), |(
        route in 0..BODY_ROUTES.len(),
        ct in 0..content_types.len(),
        body in prop::collection::vec(any::<u8>(), 0..200),
    )| {
        let (method, path) = BODY_ROUTES[route];
        let path = path.replace("USER", &f.user.id);
        let res = f.rt.block_on(
            f.t.req(method.parse().unwrap(), &path)
                .cookie(&f.admin)
                .body(content_types[ct], body)
                .send(),
        );
        assert_sane(&res);
    });
}

#[test]
fn arbitrary_hosts_cookies_and_queries_never_break_session_proxy() {
    let f = setup();
    proptest!(config(200), |(
        host in prop_oneof!["[ -~]{0,80}", "[sS]-[a-zA-Z0-9]{6,10}\\.(external\\.|internal\\.)?medforge\\.test\\.?(:[0-9]{1,6})?"],
        cookie in prop_oneof![Just(None), Just(Some(f.user.cookie())), "[ -~]{0,60}".prop_map(Some)],
        query in "[ -~&&[^#%]]{0,30}",
    )| {
        let path = format!("/api/v2/auth/session-proxy?{}", query.replace(' ', "+"));
        let Ok(uri) = path.parse::<axum::http::Uri>() else { return Ok(()); };
        let mut req = f.t.get(&uri.to_string()).header("host", &host);
        if let Some(c) = &cookie {
            req = req.header("cookie", c);
        }
        let res = f.rt.block_on(req.send());
        assert_sane(&res);
        prop_assert!(matches!(res.status.as_u16(), 200 | 401 | 403 | 404), "{}", res.status);
        prop_assert_eq!(res.status.as_u16() == 200, res.header("x-upstream").is_some());
    });
}

#[test]
fn arbitrary_query_strings_never_break_lists() {
    let f = setup();
    proptest!(config(120), |(
        path in prop_oneof![
            Just("/api/v2/external/sessions"),
            Just("/api/v2/admin/sessions"),
            Just("/api/v2/admin/users"),
            Just("/api/v2/events/token"),
        ],
        query in "((state|limit|cursor|owner|wait|token|x)=[ -~&&[^#&%]]{0,12}&?){0,4}",
    )| {
        let uri = format!("{path}?{}", query.replace(' ', "+"));
        if uri.parse::<axum::http::Uri>().is_err() { return Ok(()); }
        let res = f.rt.block_on(f.t.get(&uri).cookie(&f.admin).send());
        assert_sane(&res);
    });
}
