//! The response contract: envelopes, problems for every error (unknown routes, 405),
//! request ids, health and readiness, and the OpenAPI document against the router.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::http::Method;
use medforge_api::backend::MemoryBackend;
use medforge_api::{AppState, Db, app};
use tower::ServiceExt;

use crate::common::{TestEnv, memory_defaults, test_config};

async fn every_error_is_a_problem_with_a_request_id(env: TestEnv) {
    let t = env.app().await;
    let res = t.get("/api/v2/nothing-here").send().await;
    let body = res.problem(404, "route_not_found");
    assert_eq!(body["instance"], "/api/v2/nothing-here");
    assert_eq!(body["title"], "Not Found");
    t.get("/").send().await.problem(404, "route_not_found");
    t.post("/api/v2/external/nothing")
        .send()
        .await
        .problem(404, "route_not_found");

    let res = t.req(Method::PUT, "/api/v2/me").send().await;
    res.problem(405, "method_not_allowed");
    assert!(res.header("allow").unwrap().contains("GET"));
    for (method, path) in [
        (Method::DELETE, "/api/v2/auth/login"),
        (Method::GET, "/api/v2/auth/signup"),
    ] {
        t.req(method, path)
            .send()
            .await
            .problem(405, "method_not_allowed");
    }

    // A sane incoming request id is echoed; anything else is replaced.
    let with_request_id =
        async |id: &str| t.get("/healthz").header("x-request-id", id).send().await;
    let res = with_request_id("abc-123").await;
    assert_eq!(res.header("x-request-id"), Some("abc-123"));
    let res = with_request_id("bad id with spaces").await;
    assert_ne!(res.header("x-request-id"), Some("bad id with spaces"));
    assert_eq!(res.header("x-request-id").unwrap().len(), 36);
    // Success envelope.
    let res = t.get("/healthz").send().await;
    let body = res.json();
    assert_eq!(res.data(200)["status"], "ok");
    let meta = &body["meta"];
    for field in [
        "request_id",
        "api_version",
        "timestamp",
        "limit",
        "next_cursor",
        "has_more",
    ] {
        assert!(meta.get(field).is_some(), "meta.{field}");
    }
}

async fn readiness_follows_database_control_plane_and_watch(env: TestEnv) {
    let t = env.app().await;
    let ready = t.get("/readyz").send().await.data(200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["watch_synced"], true);
    assert_eq!(ready["snapshot_watch_synced"], true);
    t.backend.set_reachable(false);
    let res = t.get("/readyz").send().await;
    res.problem_mentioning(503, "not_ready", "control plane");
    t.get("/healthz").send().await.data(200);
    t.backend.set_reachable(true);
    t.get("/readyz").send().await.data(200);
}

#[tokio::test]
async fn not_ready_until_the_watch_has_synced() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path().to_path_buf());
    let db = Db::connect(None, dir.path()).await.unwrap();
    db.migrate().await.unwrap();
    // State without the watch task: never synced.
    let state = AppState::new(config, db, Arc::new(MemoryBackend::new(memory_defaults())));
    let request = axum::http::Request::get("/readyz")
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app(state).oneshot(request).await.unwrap();
    assert_eq!(res.status().as_u16(), 503);
}

async fn openapi_matches_the_routes(env: TestEnv) {
    let t = env.app().await;
    let admin = t.admin("root@example.org").await;
    let doc = t.get("/api/v2/openapi.json").send().await;
    assert_eq!(doc.status.as_u16(), 200);
    let doc = doc.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let all_methods = ["get", "post", "put", "patch", "delete"];
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        let concrete = path
            .replace("{id}", "x")
            .replace("{node}", "node-a")
            .replace("{gpu}", "0")
            .replace("{name}", "x");
        for method in all_methods {
            let mut req = t
                .req(method.to_ascii_uppercase().parse().unwrap(), &concrete)
                .header("host", "s-zzzzzzzz.external.medforge.test");
            if path != "/api/v2/auth/logout" {
                req = req.cookie(&admin);
            }
            if method == "get" && path == "/api/v2/events" {
                // An endless stream: the status is enough.
                assert_eq!(req.send_streaming().await.status().as_u16(), 200);
                documented.insert((method, path.clone()));
                continue;
            }
            let res = req.send().await;
            let code = res
                .json_opt()
                .and_then(|b| b["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if item.get(method).is_some() {
                documented.insert((method, path.clone()));
                assert_ne!(
                    code, "route_not_found",
                    "{method} {path} is documented but not routed"
                );
                assert_ne!(
                    res.status.as_u16(),
                    405,
                    "{method} {path} is documented but not routed"
                );
                // Every documented status of this operation's success or errors is declared.
                let responses = item[method]["responses"].as_object().unwrap();
                assert!(
                    responses.contains_key(&res.status.as_u16().to_string()),
                    "{method} {path} answered {} which is not documented",
                    res.status
                );
            } else {
                assert_eq!(
                    res.status.as_u16(),
                    405,
                    "{method} {path} is routed but not documented"
                );
            }
        }
    }
    assert_eq!(documented.len(), medforge_api::openapi::operations().len());
    // Every `$ref` resolves.
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = part.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "missing schema {name}"
        );
    }
}

impl crate::common::Res {
    fn json_opt(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

crate::scenarios!(
    every_error_is_a_problem_with_a_request_id,
    readiness_follows_database_control_plane_and_watch,
    openapi_matches_the_routes,
);

/// One request over a real socket (HTTP/1.1, `Connection: close`); returns the raw answer.
async fn raw_http(addr: std::net::SocketAddr, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_serve_and_shut_down_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_path_buf());
    config.bootstrap_admin = Some(medforge_api::AdminBootstrap {
        email: "root@example.org".into(),
        password: "from the config".into(),
    });
    let backend = Arc::new(MemoryBackend::new(memory_defaults()));
    let api = medforge_api::Api::start(config, backend).await.unwrap();
    assert!(
        dir.path().join(medforge_api::db::SQLITE_FILE).exists(),
        "SQLite file in the data directory"
    );
    assert!(api.wait_synced(std::time::Duration::from_secs(5)).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api.serve(listener, async {
        let _ = stopped.await;
    }));
    let body = r#"{"email":"root@example.org","password":"from the config"}"#;
    let answer = raw_http(
        addr,
        format!(
            "POST /api/v2/auth/login HTTP/1.1\r\nHost: api.medforge.test\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("x-request-id:"));
    assert!(lower.contains("set-cookie: medforge_session="));
    assert!(
        answer.contains(r#""is_admin":true"#),
        "the configured admin exists: {answer}"
    );
    let answer = raw_http(
        addr,
        "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("application/problem+json"));
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
}
