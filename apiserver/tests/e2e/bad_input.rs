//! Bad requests get the Status error kube-apiserver gives, and store nothing.

use kube::Api;
use medforge_crds::Session;
use serde_json::json;

use crate::common;

const SESSIONS: &str = "/apis/medforge.dev/v1alpha1/namespaces/default/sessions";

async fn call(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> kube::core::Status {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(body)
        .unwrap();
    match client.request_text(req).await {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("{method} {path}: expected an API error, got {other:?}"),
    }
}

/// `POST path` with a JSON body; the Status of the error it gets.
async fn post(client: &kube::Client, path: &str, body: &serde_json::Value) -> kube::core::Status {
    let body = serde_json::to_vec(body).unwrap();
    call(client, "POST", path, "application/json", body).await
}

/// `GET path`; the Status of the error it gets.
async fn get(client: &kube::Client, path: &str) -> kube::core::Status {
    call(client, "GET", path, "application/json", vec![]).await
}

fn session_body() -> serde_json::Value {
    json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
           "metadata": {"name": "x"}, "spec": {"owner": "u", "pack": "p"}})
}

#[tokio::test]
async fn bad_requests_get_kube_apiserver_errors_and_store_nothing() {
    let ts = common::start().await;
    let c = ts.client.clone();
    let rv_before = ts.server.resource_version();

    let truncated = b"{\"apiVersion\": ".to_vec();
    let s = call(&c, "POST", SESSIONS, "application/json", truncated).await;
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("json parse error"), "{}", s.message);

    for path in [
        "/apis/medforge.dev/v1alpha1/namespaces/default/widgets",
        "/apis/medforge.io/v1alpha1/namespaces/default/sessions",
        "/apis/medforge.dev/v1/namespaces/default/sessions",
        "/api/v2/namespaces",
    ] {
        let s = post(&c, path, &session_body()).await;
        assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"), "{path}");
        assert_eq!(
            s.message,
            "the server could not find the requested resource"
        );
    }

    // Bodies refused: of another kind, or another version, than the URL;
    // over the 3 MiB body limit; with unknown fields under strict validation
    // (kubectl's default).
    let strict = format!("{SESSIONS}?fieldValidation=Strict");
    for (what, path, change, code, reason, message) in [
        (
            "another kind",
            SESSIONS,
            json!({"kind": "Pack"}),
            400,
            "BadRequest",
            "",
        ),
        (
            "another version",
            SESSIONS,
            json!({"apiVersion": "medforge.dev/v1"}),
            400,
            "BadRequest",
            "does not match the expected API version",
        ),
        (
            "too large",
            SESSIONS,
            json!({"metadata": {"annotations": {"big": "x".repeat(4 * 1024 * 1024)}}}),
            413,
            "RequestEntityTooLarge",
            "",
        ),
        (
            "an unknown field",
            &strict,
            json!({"spec": {"colour": "blue"}}),
            400,
            "BadRequest",
            "strict decoding error: unknown field \"spec.colour\"",
        ),
    ] {
        let mut body = session_body();
        json_patch::merge(&mut body, &change);
        let s = post(&c, path, &body).await;
        assert_eq!((s.code, s.reason.as_str()), (code, reason), "{what}");
        assert!(s.message.contains(message), "{what}: {}", s.message);
    }

    // Invalid selectors.
    for (query, message) in [
        ("labelSelector=a%20b", "unable to parse requirement"),
        ("fieldSelector=nonsense", ""),
    ] {
        let s = get(&c, &format!("{SESSIONS}?{query}")).await;
        assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"), "{query}");
        assert!(s.message.starts_with(message), "{query}: {}", s.message);
    }

    // Patch types a CRD does not take, and methods a path does not take.
    for (method, content_type, code, reason) in [
        (
            "PATCH",
            "application/strategic-merge-patch+json",
            415,
            "UnsupportedMediaType",
        ),
        ("POST", "application/json", 405, "MethodNotAllowed"),
    ] {
        let path = format!("{SESSIONS}/x");
        let s = call(&c, method, &path, content_type, b"{}".to_vec()).await;
        assert_eq!((s.code, s.reason.as_str()), (code, reason), "{method}");
    }

    assert_eq!(
        ts.server.resource_version(),
        rv_before,
        "nothing was written"
    );
    let api: Api<Session> = Api::namespaced(c.clone(), "default");
    assert!(common::count(&api).await == 0);

    // Without the token, or with a wrong one: 401, even for discovery.
    let mut anonymous = ts.server.kube_config();
    anonymous.auth_info.token = None;
    let anonymous = kube::Client::try_from(anonymous).unwrap();
    let s = post(&anonymous, SESSIONS, &session_body()).await;
    assert_eq!(
        (s.code, s.reason.as_str(), s.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );
    let s = get(&anonymous, "/apis").await;
    assert_eq!(s.code, 401);
    let mut wrong = ts.server.kube_config();
    wrong.auth_info.token = Some("not-the-token".to_string().into());
    let wrong = kube::Client::try_from(wrong).unwrap();
    let s = get(&wrong, SESSIONS).await;
    assert_eq!(s.code, 401);
    // Health and version stay open, as on kube-apiserver.
    let v = anonymous.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");

    assert_eq!(
        ts.server.resource_version(),
        rv_before,
        "nothing was written"
    );
    ts.server.shutdown().await;
}

#[tokio::test]
async fn unknown_fields_are_pruned_with_a_warning_by_default() {
    let ts = common::start().await;
    let mut extra = session_body();
    extra["spec"]["colour"] = json!("blue");
    let req = http::Request::builder()
        .method("POST")
        .uri(SESSIONS)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&extra).unwrap())
        .unwrap();
    let resp = ts
        .client
        .send(req.map(kube::client::Body::from))
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let warning = resp
        .headers()
        .get("warning")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(warning, "299 - \"unknown field \\\"spec.colour\\\"\"");
    let api = common::sessions(&ts);
    let stored = api.get("x").await.unwrap();
    assert_eq!(stored.spec.owner, "u");
    ts.server.shutdown().await;
}
