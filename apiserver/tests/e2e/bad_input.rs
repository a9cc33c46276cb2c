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

    let s = call(
        &c,
        "POST",
        SESSIONS,
        "application/json",
        b"{\"apiVersion\": ".to_vec(),
    )
    .await;
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

    // A body of another kind, or another version, than the URL.
    let mut wrong = session_body();
    wrong["kind"] = json!("Pack");
    let s = post(&c, SESSIONS, &wrong).await;
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    let mut wrong = session_body();
    wrong["apiVersion"] = json!("medforge.dev/v1");
    let s = post(&c, SESSIONS, &wrong).await;
    assert_eq!(s.code, 400);
    assert!(
        s.message
            .contains("does not match the expected API version"),
        "{}",
        s.message
    );

    // Over the 3 MiB body limit.
    let mut huge = session_body();
    huge["metadata"]["annotations"] = json!({"big": "x".repeat(4 * 1024 * 1024)});
    let s = post(&c, SESSIONS, &huge).await;
    assert_eq!((s.code, s.reason.as_str()), (413, "RequestEntityTooLarge"));

    // Invalid selectors.
    let s = get(&c, &format!("{SESSIONS}?labelSelector=a%20b")).await;
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message.starts_with("unable to parse requirement"),
        "{}",
        s.message
    );
    let s = get(&c, &format!("{SESSIONS}?fieldSelector=nonsense")).await;
    assert_eq!(s.code, 400);

    // Unknown fields with strict validation (kubectl's default).
    let mut extra = session_body();
    extra["spec"]["colour"] = json!("blue");
    let s = post(&c, &format!("{SESSIONS}?fieldValidation=Strict"), &extra).await;
    assert_eq!(s.code, 400);
    assert!(
        s.message
            .contains("strict decoding error: unknown field \"spec.colour\""),
        "{}",
        s.message
    );

    // Patch types a CRD does not take, and methods a path does not take.
    let s = call(
        &c,
        "PATCH",
        &format!("{SESSIONS}/x"),
        "application/strategic-merge-patch+json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(s.code, 415);
    let s = call(
        &c,
        "POST",
        &format!("{SESSIONS}/x"),
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"));

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
