//! Kubernetes protobuf on the wire: a client that sends and accepts only
//! `application/vnd.kubernetes.protobuf` (built from k8s-pb and prost here,
//! independently of the server's code), and the real kubectl, which sends the
//! built-in kinds as protobuf.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, StatusCode, header};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_pb::api::coordination::v1 as pb_coordination;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube::Api;
use prost::Message;

use crate::common::{self, TestServer};
use crate::kubectl;

const PB: &str = "application/vnd.kubernetes.protobuf";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/proto/leases";

/// An object as a Kubernetes client writes it: `k8s\0`, then a
/// `runtime.Unknown` holding the type and the object's bytes.
fn envelope(api_version: &str, kind: &str, object: &impl Message) -> Vec<u8> {
    let mut out = b"k8s\0".to_vec();
    Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(object.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    }
    .encode(&mut out)
    .unwrap();
    out
}

/// Opens an envelope: its `apiVersion`, `kind`, and the object.
fn open<T: Message + Default>(bytes: &[u8]) -> (String, String, T) {
    let rest = bytes
        .strip_prefix(b"k8s\0")
        .unwrap_or_else(|| panic!("no protobuf magic in {:?}", String::from_utf8_lossy(bytes)));
    let unknown = Unknown::decode(rest).expect("a runtime.Unknown");
    let type_meta = unknown.type_meta.unwrap_or_default();
    let object = T::decode(unknown.raw.unwrap_or_default().as_slice()).expect("the object");
    (
        type_meta.api_version.unwrap_or_default(),
        type_meta.kind.unwrap_or_default(),
        object,
    )
}

struct Answer {
    code: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The answer as a protobuf object of the expected kind.
    fn object<T: Message + Default>(&self, api_version: &str, kind: &str) -> T {
        assert_eq!(self.content_type(), PB, "{:?}", self.body);
        let (v, k, object) = open::<T>(&self.body);
        assert_eq!((v.as_str(), k.as_str()), (api_version, kind));
        object
    }

    /// The answer as a protobuf `Status`.
    fn status(&self) -> pb_meta::Status {
        let s: pb_meta::Status = self.object("v1", "Status");
        assert_eq!(s.code, Some(i32::from(self.code.as_u16())), "{s:?}");
        s
    }
}

/// A request with the given `Accept` and, with a body, `Content-Type`.
async fn call(
    ts: &TestServer,
    method: &str,
    path: &str,
    accept: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Answer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(header::ACCEPT, accept);
    if !body.is_empty() {
        req = req.header(header::CONTENT_TYPE, content_type);
    }
    let req = req.body(kube::client::Body::from(body)).unwrap();
    let resp = ts.client.send(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    Answer {
        code: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A request in protobuf only, both ways.
async fn pb(ts: &TestServer, method: &str, path: &str, body: Vec<u8>) -> Answer {
    call(ts, method, path, PB, PB, body).await
}

/// An `apiVersion` and a `kind`.
type Kind = (&'static str, &'static str);
const NAMESPACE: Kind = ("v1", "Namespace");
const LEASE: Kind = ("coordination.k8s.io/v1", "Lease");

/// Writes `object` of `kind` in protobuf with `POST` (asserting `201
/// Created`) or `PUT` (asserting `200 OK`): the object as the server answers.
async fn write_object<T: Message + Default>(
    ts: &TestServer,
    method: &str,
    path: &str,
    (api_version, kind): Kind,
    object: &T,
) -> T {
    let answer = pb(ts, method, path, envelope(api_version, kind, object)).await;
    let expected = match method {
        "POST" => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    assert_eq!(answer.code, expected, "{method} {path}: {:?}", answer.body);
    answer.object(api_version, kind)
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn micro(seconds: i64, nanos: i32) -> pb_meta::MicroTime {
    pb_meta::MicroTime {
        seconds: Some(seconds),
        nanos: Some(nanos),
    }
}

fn lease(name: &str, holder: &str) -> pb_coordination::Lease {
    pb_coordination::Lease {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some(name.into()),
            labels: labels(&[("app", "operator")]),
            annotations: labels(&[("medforge.dev/purpose", "leader election")]),
            ..Default::default()
        }),
        spec: Some(pb_coordination::LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(micro(1_714_979_289, 123_456_000)),
            renew_time: Some(micro(1_714_979_300, 1_000)),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    }
}

/// The system fields the server sets on every object.
fn assert_system_metadata(meta: &pb_meta::ObjectMeta) {
    assert_eq!(meta.uid.as_deref().map(str::len), Some(36), "{meta:?}");
    assert!(
        meta.resource_version
            .as_deref()
            .is_some_and(|rv| rv.parse::<u64>().is_ok()),
        "{meta:?}"
    );
    let created = meta.creation_timestamp.unwrap_or_default();
    assert!(created.seconds.unwrap_or(0) > 1_700_000_000, "{meta:?}");
}

#[tokio::test]
async fn a_protobuf_only_client_creates_gets_lists_updates_and_deletes() {
    let ts = common::start().await;

    // A Namespace, created and read back in protobuf.
    let ns = pb_core::Namespace {
        metadata: Some(pb_meta::ObjectMeta {
            name: Some("proto".into()),
            labels: labels(&[("team", "radiology")]),
            annotations: labels(&[("medforge.dev/owner", "alice")]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = write_object(&ts, "POST", "/api/v1/namespaces", NAMESPACE, &ns).await;
    let meta = created.metadata.clone().unwrap();
    assert_eq!(meta.name.as_deref(), Some("proto"));
    assert_eq!(meta.labels, labels(&[("team", "radiology")]));
    assert_eq!(meta.annotations, labels(&[("medforge.dev/owner", "alice")]));
    assert_system_metadata(&meta);
    assert_eq!(created.spec.clone().unwrap().finalizers, ["kubernetes"]);
    assert_eq!(
        created.status.clone().unwrap().phase.as_deref(),
        Some("Active")
    );
    let got = pb(&ts, "GET", "/api/v1/namespaces/proto", vec![]).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(got.object::<pb_core::Namespace>("v1", "Namespace"), created);
    // The JSON view of the same object agrees.
    let json = Api::<Namespace>::all(ts.client.clone())
        .get("proto")
        .await
        .unwrap();
    assert_eq!(json.metadata.uid, meta.uid);
    assert_eq!(
        json.metadata.labels.unwrap()["team"],
        "radiology".to_string()
    );

    // A Lease with every spec field, MicroTime nanoseconds included.
    let sent = lease("leader", "operator-7d9f");
    let created = write_object(&ts, "POST", LEASES, LEASE, &sent).await;
    let meta = created.metadata.clone().unwrap();
    assert_eq!(meta.name.as_deref(), Some("leader"));
    assert_eq!(meta.namespace.as_deref(), Some("proto"));
    assert_eq!(meta.labels, labels(&[("app", "operator")]));
    assert_eq!(
        meta.annotations,
        labels(&[("medforge.dev/purpose", "leader election")])
    );
    assert_system_metadata(&meta);
    // The server records who wrote which fields.
    assert!(!meta.managed_fields.is_empty(), "{meta:?}");
    assert_eq!(created.spec, sent.spec);
    let got = pb(&ts, "GET", &format!("{LEASES}/leader"), vec![]).await;
    assert_eq!(got.code, StatusCode::OK);
    assert_eq!(
        got.object::<pb_coordination::Lease>("coordination.k8s.io/v1", "Lease"),
        created
    );
    // kube's JSON client reads the microseconds the protobuf client wrote.
    let json = Api::<Lease>::namespaced(ts.client.clone(), "proto")
        .get("leader")
        .await
        .unwrap();
    assert_eq!(
        json.spec.unwrap().acquire_time.unwrap().0.to_string(),
        "2024-05-06T07:08:09.123456Z"
    );

    // An update (PUT) in protobuf.
    let mut changed = created.clone();
    changed.spec.as_mut().unwrap().holder_identity = Some("operator-8a1b".into());
    changed.spec.as_mut().unwrap().lease_transitions = Some(3);
    let leader = format!("{LEASES}/leader");
    let updated = write_object(&ts, "PUT", &leader, LEASE, &changed).await;
    let spec = updated.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-8a1b"));
    assert_eq!(spec.lease_transitions, Some(3));
    assert_ne!(
        updated.metadata.as_ref().unwrap().resource_version,
        meta.resource_version
    );

    // Lists.
    pb(
        &ts,
        "POST",
        LEASES,
        envelope("coordination.k8s.io/v1", "Lease", &lease("second", "x")),
    )
    .await;
    let list = pb(&ts, "GET", LEASES, vec![]).await;
    assert_eq!(list.code, StatusCode::OK);
    let list: pb_coordination::LeaseList = list.object("coordination.k8s.io/v1", "LeaseList");
    let names: Vec<_> = list
        .items
        .iter()
        .map(|l| l.metadata.clone().unwrap().name.unwrap())
        .collect();
    assert_eq!(names, ["leader", "second"]);
    assert_eq!(list.items[0], updated);
    assert!(list.metadata.unwrap().resource_version.is_some());
    // A page of namespaces: the list metadata carries the continuation.
    let page = pb(&ts, "GET", "/api/v1/namespaces?limit=2", vec![]).await;
    let page: pb_core::NamespaceList = page.object("v1", "NamespaceList");
    assert_eq!(page.items.len(), 2);
    let list_meta = page.metadata.unwrap();
    assert!(list_meta.r#continue.is_some_and(|c| !c.is_empty()));
    // default, kube-node-lease, kube-public, kube-system, proto.
    assert_eq!(list_meta.remaining_item_count, Some(3));

    // An error is a protobuf Status.
    let missing = pb(&ts, "GET", &format!("{LEASES}/nope"), vec![]).await;
    assert_eq!(missing.code, StatusCode::NOT_FOUND);
    let status = missing.status();
    assert_eq!(status.status.as_deref(), Some("Failure"));
    assert_eq!(status.reason.as_deref(), Some("NotFound"));
    assert_eq!(
        status.message.as_deref(),
        Some("leases.coordination.k8s.io \"nope\" not found")
    );
    let details = status.details.unwrap();
    assert_eq!(
        (details.name.as_deref(), details.kind.as_deref()),
        (Some("nope"), Some("leases"))
    );

    // DELETE with protobuf DeleteOptions: a dry run, a failed precondition,
    // then the real thing.
    let uid = meta.uid.clone().unwrap();
    let options = |uid: &str, dry_run: bool| {
        envelope(
            "meta.k8s.io/v1",
            "DeleteOptions",
            &pb_meta::DeleteOptions {
                preconditions: Some(pb_meta::Preconditions {
                    uid: Some(uid.into()),
                    resource_version: None,
                }),
                dry_run: if dry_run { vec!["All".into()] } else { vec![] },
                ..Default::default()
            },
        )
    };
    let path = format!("{LEASES}/leader");
    let dry = pb(&ts, "DELETE", &path, options(&uid, true)).await;
    assert_eq!(dry.code, StatusCode::OK, "{:?}", dry.body);
    assert_eq!(pb(&ts, "GET", &path, vec![]).await.code, StatusCode::OK);
    let conflict = pb(&ts, "DELETE", &path, options("another-uid", false)).await;
    assert_eq!(conflict.code, StatusCode::CONFLICT);
    let status = conflict.status();
    assert!(
        status
            .message
            .unwrap()
            .contains("Precondition failed: UID in precondition: another-uid"),
    );
    let deleted = pb(&ts, "DELETE", &path, options(&uid, false)).await;
    assert_eq!(deleted.code, StatusCode::OK, "{:?}", deleted.body);
    let deleted: pb_coordination::Lease = deleted.object("coordination.k8s.io/v1", "Lease");
    assert_eq!(deleted.metadata.unwrap().uid, Some(uid));
    assert_eq!(
        pb(&ts, "GET", &path, vec![]).await.code,
        StatusCode::NOT_FOUND
    );
    // client-go labels DeleteOptions with the resource's group version.
    let in_group = envelope(
        "coordination.k8s.io/v1",
        "DeleteOptions",
        &pb_meta::DeleteOptions::default(),
    );
    let deleted = pb(&ts, "DELETE", &format!("{LEASES}/second"), in_group).await;
    assert_eq!(deleted.code, StatusCode::OK, "{:?}", deleted.body);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn a_protobuf_watch_streams_length_delimited_watch_events() {
    let ts = common::start().await;
    let path = "/apis/coordination.k8s.io/v1/namespaces/default/leases?watch=true";
    let req = http::Request::builder()
        .uri(path)
        .header(header::ACCEPT, PB)
        .body(kube::client::Body::empty())
        .unwrap();
    let resp = ts.client.send(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut body = resp.into_body().into_data_stream();
    let mut buf = BytesMut::new();
    // One frame: a 4-byte big-endian length, then a bare WatchEvent whose
    // object is an enveloped object.
    let mut frame = async || -> pb_meta::WatchEvent {
        loop {
            if buf.len() >= 4 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() >= 4 + len {
                    buf.advance(4);
                    let event = buf.split_to(len);
                    return pb_meta::WatchEvent::decode(event.freeze()).expect("a WatchEvent");
                }
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("a watch frame within 10 s")
                .expect("the watch is open")
                .expect("no transport error");
            buf.extend_from_slice(&chunk);
        }
    };

    // Created through kube's JSON client; seen in protobuf.
    let json: Lease = serde_json::from_value(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "watched", "labels": {"app": "operator"}},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10,
                 "renewTime": "2024-05-06T07:08:09.250000Z"}
    }))
    .unwrap();
    let leases: Api<Lease> = Api::default_namespaced(ts.client.clone());
    common::create(&leases, &json).await;
    let event = frame().await;
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let raw = event.object.unwrap().raw.unwrap();
    let (api_version, kind, lease) = open::<pb_coordination::Lease>(&raw);
    assert_eq!(
        (api_version.as_str(), kind.as_str()),
        ("coordination.k8s.io/v1", "Lease")
    );
    let meta = lease.metadata.unwrap();
    assert_eq!(meta.name.as_deref(), Some("watched"));
    assert_eq!(meta.labels, labels(&[("app", "operator")]));
    assert_system_metadata(&meta);
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("a"));
    assert_eq!(spec.renew_time, Some(micro(1_714_979_289, 250_000_000)));

    leases.delete("watched", &Default::default()).await.unwrap();
    let event = frame().await;
    assert_eq!(event.r#type.as_deref(), Some("DELETED"));
    let (_, _, lease) = open::<pb_coordination::Lease>(&event.object.unwrap().raw.unwrap());
    assert_eq!(lease.metadata.unwrap().name.as_deref(), Some("watched"));
    ts.server.shutdown().await;
}

#[tokio::test]
async fn bad_protobuf_is_a_400_and_custom_resources_stay_json() {
    let ts = common::start().await;
    // Garbage after the magic, a body without the magic, a truncated body:
    // 400 with the reason, not 500.
    let good = envelope("v1", "Namespace", &pb_core::Namespace::default());
    for body in [
        b"k8s\0\xff\xff\xff\xff\xff\xff\xff".to_vec(),
        b"{\"apiVersion\": \"v1\", \"kind\": \"Namespace\"}".to_vec(),
        good[..good.len() - 1].to_vec(),
    ] {
        let answer = pb(&ts, "POST", "/api/v1/namespaces", body).await;
        assert_eq!(answer.code, StatusCode::BAD_REQUEST);
        let status = answer.status();
        assert_eq!(status.reason.as_deref(), Some("BadRequest"));
        let message = status.message.unwrap();
        assert!(
            message.starts_with(
                "the body of the request could not be decoded as application/vnd.kubernetes.protobuf: "
            ),
            "{message}"
        );
    }
    // A kind this server does not speak protobuf for.
    let pod = envelope("v1", "Pod", &pb_core::Pod::default());
    let answer = pb(&ts, "POST", "/api/v1/namespaces", pod).await;
    assert_eq!(answer.code, StatusCode::BAD_REQUEST);
    assert!(answer.status().message.unwrap().contains("no kind \"Pod\""));
    // A Lease posted as a Namespace.
    let lease = envelope("coordination.k8s.io/v1", "Lease", &lease("l", "x"));
    let answer = pb(&ts, "POST", "/api/v1/namespaces", lease).await;
    assert_eq!(answer.code, StatusCode::BAD_REQUEST);

    // Custom resources: a protobuf body is 415, a protobuf-only Accept 406,
    // and JSON when the client accepts it too.
    let sessions = "/apis/medforge.dev/v1alpha1/namespaces/default/sessions";
    let body = envelope(
        "medforge.dev/v1alpha1",
        "Session",
        &pb_core::Namespace::default(),
    );
    let answer = call(&ts, "POST", sessions, "application/json", PB, body).await;
    assert_eq!(answer.code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let status: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(status["reason"], "UnsupportedMediaType");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("accepted media types include: application/json, application/yaml"),
        "{message}"
    );
    let answer = call(&ts, "GET", sessions, PB, "", vec![]).await;
    assert_eq!(answer.code, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(answer.content_type(), "application/json");
    let answer = call(
        &ts,
        "GET",
        sessions,
        &format!("{PB}, application/json"),
        "",
        vec![],
    )
    .await;
    assert_eq!(answer.code, StatusCode::OK);
    assert_eq!(answer.content_type(), "application/json");
    // A built-in kind honours the client's order and q-values.
    let answer = call(
        &ts,
        "GET",
        "/api/v1/namespaces/default",
        &format!("application/json;q=0.5, {PB}"),
        "",
        vec![],
    )
    .await;
    assert_eq!(answer.content_type(), PB);
    let answer = call(
        &ts,
        "GET",
        "/api/v1/namespaces/default",
        &format!("{PB};q=0, application/json"),
        "",
        vec![],
    )
    .await;
    assert_eq!(answer.content_type(), "application/json");
    ts.server.shutdown().await;
}

/// Asserts that `yaml` contains each of `wants`.
fn assert_contains_all(yaml: &str, wants: &[&str]) {
    for want in wants {
        assert!(yaml.contains(want), "{want:?} missing:\n{yaml}");
    }
}

/// kubectl sends the built-in kinds as protobuf; these must work.
#[tokio::test]
async fn kubectl_creates_labels_and_deletes_a_namespace() {
    // Fails, naming the package, when kubectl is missing.
    kubectl::kubectl_path();
    let ts = common::start().await;
    let out = kubectl::run(&ts, &["create", "namespace", "demo", "-v=8"]).await;
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/demo created"
    );
    // The request really was protobuf, and so was the answer.
    assert!(
        log.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "{log}"
    );
    assert!(
        log.contains("Accept: application/vnd.kubernetes.protobuf"),
        "{log}"
    );
    // kubectl decodes the protobuf answer: the server's fields come through.
    let yaml = kubectl::ok(&ts, &["create", "namespace", "other", "-o", "yaml"]).await;
    assert_contains_all(
        &yaml,
        &[
            "name: other",
            "uid: ",
            "resourceVersion: ",
            "creationTimestamp: ",
            "- kubernetes",
            "phase: Active",
        ],
    );
    // And a protobuf error Status.
    assert_eq!(
        kubectl::fails(&ts, &["create", "namespace", "demo"]).await,
        "Error from server (AlreadyExists): namespaces \"demo\" already exists"
    );

    let yaml = kubectl::ok(&ts, &["get", "namespace", "demo", "-o", "yaml"]).await;
    assert_contains_all(
        &yaml,
        &[
            "kind: Namespace",
            "name: demo",
            "uid: ",
            "phase: Active",
            "- kubernetes",
        ],
    );
    let out = kubectl::ok(&ts, &["label", "namespace", "demo", "a=b"]).await;
    assert_eq!(out.trim(), "namespace/demo labeled");
    let ns = Api::<Namespace>::all(ts.client.clone())
        .get("demo")
        .await
        .unwrap();
    assert_eq!(ns.metadata.labels.unwrap()["a"], "b");
    let out = kubectl::ok(&ts, &["delete", "namespace", "demo", "--timeout=30s"]).await;
    assert_eq!(out.trim(), "namespace \"demo\" deleted");
    assert!(
        Api::<Namespace>::all(ts.client.clone())
            .get_opt("demo")
            .await
            .unwrap()
            .is_none()
    );
    ts.server.shutdown().await;
}
