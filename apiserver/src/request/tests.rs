//! Request parsing without a server: paths, query parameters, bodies, options.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::body::{check_kind, decode_body};
use super::continue_token;
use super::options::{DeleteOpts, ListParams, WatchParams, WatchStart, WriteOpts};
use super::query::Query;
use super::selectors::Selectors;
use super::target::{ResourceRequest, Target};
use crate::registry::{Registry, ResourceType};
use crate::status::ApiError;
use crate::validation::FieldValidation;

fn registry() -> Registry {
    Registry::new(&medforge_crds::all_crds()).unwrap()
}

fn sessions(reg: &Registry) -> &ResourceType {
    reg.lookup("medforge.dev", "v1alpha1", "sessions").unwrap()
}

fn leases(reg: &Registry) -> &ResourceType {
    reg.lookup("coordination.k8s.io", "v1", "leases").unwrap()
}

fn target(reg: &Registry, group: &str, version: &str, path: &str) -> Result<Target, u16> {
    let rest: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    Target::parse(reg, group, version, &rest).map_err(|e| e.code)
}

/// `e` is an error with this code whose message contains `text`.
fn refused(e: ApiError, code: u16, text: &str) {
    assert_eq!(e.code, code, "{}", e.message);
    assert!(
        e.message.contains(text),
        "{:?} not in {:?}",
        text,
        e.message
    );
}

fn request(query: &str) -> ResourceRequest {
    ResourceRequest {
        target: Target {
            rt_id: 0,
            namespace: None,
            name: None,
            status: false,
            watch: false,
        },
        query: Query::parse(Some(query)),
        body: Bytes::new(),
        content_type: String::new(),
        accept: None,
        user_agent: None,
        protobuf: false,
    }
}

#[test]
fn paths_name_the_kind_namespace_name_and_subresource() {
    let reg = registry();
    let s = sessions(&reg).id;
    let t = target(
        &reg,
        "medforge.dev",
        "v1alpha1",
        "namespaces/team-a/sessions/s1/status",
    )
    .unwrap();
    assert_eq!(
        t,
        Target {
            rt_id: s,
            namespace: Some("team-a".into()),
            name: Some("s1".into()),
            status: true,
            watch: false,
        }
    );
    // Every namespace: the collection without a namespace.
    let all = target(&reg, "medforge.dev", "v1alpha1", "sessions").unwrap();
    assert_eq!((all.namespace, all.name), (None, None));
    // The old watch prefix.
    let w = target(
        &reg,
        "medforge.dev",
        "v1alpha1",
        "watch/namespaces/a/sessions",
    )
    .unwrap();
    assert!(w.watch);
    assert_eq!(w.namespace.as_deref(), Some("a"));
    // A cluster-scoped kind has no namespace; `namespaces` is then its own kind.
    let node = target(&reg, "medforge.dev", "v1alpha1", "gpunodes/gpu-1").unwrap();
    assert_eq!(
        (node.namespace, node.name.as_deref()),
        (None, Some("gpu-1"))
    );
    let ns = target(&reg, "", "v1", "namespaces/demo/status").unwrap();
    assert_eq!(ns.rt_id, reg.namespace_type().id);
    assert_eq!((ns.name.as_deref(), ns.status), (Some("demo"), true));
}

#[test]
fn paths_the_server_does_not_serve_are_not_found() {
    let reg = registry();
    for (group, version, path) in [
        ("medforge.dev", "v1alpha1", ""),
        ("medforge.dev", "v1alpha1", "widgets"),
        ("medforge.dev", "v1alpha2", "sessions"),
        // A namespaced object needs its namespace.
        ("medforge.dev", "v1alpha1", "sessions/s1"),
        // Only `status`, and only where the kind has the subresource.
        ("medforge.dev", "v1alpha1", "namespaces/a/sessions/s1/scale"),
        ("coordination.k8s.io", "v1", "namespaces/a/leases/l/status"),
        (
            "medforge.dev",
            "v1alpha1",
            "namespaces/a/sessions/s1/status/x",
        ),
    ] {
        assert_eq!(
            target(&reg, group, version, path),
            Err(404),
            "{group}/{version} {path}"
        );
    }
}

#[test]
fn query_parameters_count_empty_as_absent() {
    let q = Query::parse(Some("limit=&watch=1&labelSelector=app%3Dx&dryRun=All"));
    assert_eq!(q.get("limit"), None);
    assert!(q.flag("watch"));
    assert!(!q.flag("dryRun"));
    assert_eq!(q.get("labelSelector"), Some("app=x"));
    assert_eq!(Query::parse(None).get("anything"), None);
}

#[test]
fn list_parameters() {
    let parse = |q: &str| ListParams::parse(&Query::parse(Some(q)));
    assert_eq!(parse("").unwrap(), ListParams::default());
    assert_eq!(parse("limit=-3").unwrap().limit, Some(0));
    assert_eq!(parse("limit=ten").unwrap_err().code, 400);
    let exact = parse("resourceVersion=12&resourceVersionMatch=Exact").unwrap();
    assert_eq!((exact.at, exact.not_older_than), (Some(12), None));
    let newer = parse("resourceVersion=12").unwrap();
    assert_eq!((newer.at, newer.not_older_than), (None, Some(12)));
    assert_eq!(parse("resourceVersion=0").unwrap(), ListParams::default());
    assert_eq!(parse("resourceVersion=x").unwrap_err().code, 400);
    // A continue token wins over resourceVersion.
    let token = continue_token::encode(41, &("ns".into(), "b".into()));
    let page = parse(&format!("limit=2&continue={token}&resourceVersion=7")).unwrap();
    assert_eq!(
        page,
        ListParams {
            limit: Some(2),
            after: Some(("ns".into(), "b".into())),
            at: Some(41),
            not_older_than: None,
        }
    );
}

#[test]
fn continue_tokens_round_trip_and_garbage_is_refused() {
    let key = ("team-a".to_string(), "s1".to_string());
    assert_eq!(
        continue_token::decode(&continue_token::encode(7, &key)).unwrap(),
        (7, key)
    );
    // Padding some clients add is ignored.
    let padded = format!("{}==", continue_token::encode(8, &("".into(), "n".into())));
    assert_eq!(continue_token::decode(&padded).unwrap().0, 8);
    for bad in ["!!!", "e30", "bm90IGpzb24"] {
        let e = continue_token::decode(bad).unwrap_err();
        assert_eq!(e.code, 400, "{bad}");
        assert!(e.message.starts_with("continue key is not valid"), "{bad}");
    }
}

#[test]
fn watch_parameters() {
    let reg = registry();
    let rt = sessions(&reg);
    let parse = |q: &str| WatchParams::parse(rt, &Query::parse(Some(q)));
    let plain = parse("").unwrap();
    assert_eq!(
        plain,
        WatchParams {
            start: WatchStart::Initial {
                end_bookmark: false
            },
            bookmarks: false,
            timeout: Duration::from_secs(1800),
        }
    );
    assert_eq!(parse("resourceVersion=0").unwrap().start, plain.start);
    let after = parse("resourceVersion=9&allowWatchBookmarks=true&timeoutSeconds=5").unwrap();
    assert_eq!(after.start, WatchStart::After(9));
    assert!(after.bookmarks);
    assert_eq!(after.timeout, Duration::from_secs(5));
    assert_eq!(
        parse("timeoutSeconds=0").unwrap().timeout,
        Duration::from_secs(1800)
    );
    let initial =
        parse("sendInitialEvents=true&resourceVersionMatch=NotOlderThan&resourceVersion=9");
    assert_eq!(
        initial.unwrap().start,
        WatchStart::Initial { end_bookmark: true }
    );
    let e = parse("sendInitialEvents=true").unwrap_err();
    assert_eq!(e.reason, "Invalid");
    refused(e, 422, "resourceVersionMatch");
    assert_eq!(parse("resourceVersion=nine").unwrap_err().code, 400);
}

#[test]
fn write_options() {
    let opts = WriteOpts::from_request(&request(""), "CreateOptions").unwrap();
    assert!(!opts.dry_run);
    assert_eq!(opts.manager, "unknown");
    assert_eq!(opts.validation, FieldValidation::Warn);
    let mut req = request("dryRun=All&fieldManager=me&fieldValidation=Strict");
    req.user_agent = Some("kubectl/v1.32".into());
    let opts = WriteOpts::from_request(&req, "UpdateOptions").unwrap();
    assert!(opts.dry_run);
    assert_eq!(opts.manager, "me");
    assert_eq!(opts.validation, FieldValidation::Strict);
    let mut req = request("");
    req.user_agent = Some("kubectl/v1.32 (linux/amd64)".into());
    assert_eq!(
        WriteOpts::from_request(&req, "PatchOptions")
            .unwrap()
            .manager,
        "kubectl"
    );
    let e = WriteOpts::from_request(&request("dryRun=Some"), "CreateOptions").unwrap_err();
    assert_eq!(e.code, 400);
    let long = format!("fieldManager={}", "m".repeat(129));
    let e = WriteOpts::from_request(&request(&long), "PatchOptions").unwrap_err();
    refused(
        e,
        422,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager",
    );
    let e = WriteOpts::from_request(&request("fieldValidation=Loud"), "CreateOptions");
    assert_eq!(e.unwrap_err().code, 400);
}

#[test]
fn delete_options_from_the_query_and_the_body() {
    let reg = registry();
    let rt = sessions(&reg);
    assert!(
        DeleteOpts::from_request(rt, &request("dryRun=All"))
            .unwrap()
            .dry_run
    );
    let mut req = request("");
    req.body = Bytes::from(
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"],
               "preconditions": {"uid": "u-1", "resourceVersion": "5"}})
        .to_string(),
    );
    let opts = DeleteOpts::from_request(rt, &req).unwrap();
    assert!(opts.dry_run);
    assert_eq!(opts.uid.as_deref(), Some("u-1"));
    assert_eq!(opts.rv.as_deref(), Some("5"));
    req.body = Bytes::from_static(b"{not json");
    assert_eq!(DeleteOpts::from_request(rt, &req).unwrap_err().code, 400);
    // Protobuf bodies are for the built-in kinds only.
    req.content_type = "application/vnd.kubernetes.protobuf".into();
    assert_eq!(DeleteOpts::from_request(rt, &req).unwrap_err().code, 415);
}

#[test]
fn bodies_are_parsed_by_content_type_and_checked_against_the_kind() {
    let reg = registry();
    let rt = sessions(&reg);
    let json =
        br#"{"apiVersion": "medforge.dev/v1alpha1", "kind": "Session", "metadata": {"name": "a"}}"#;
    let v = decode_body(rt, json, "application/json; charset=utf-8").unwrap();
    assert_eq!(v["metadata"]["name"], "a");
    let yaml = b"apiVersion: medforge.dev/v1alpha1\nkind: Session\nmetadata:\n  name: b\n";
    assert_eq!(
        decode_body(rt, yaml, "application/yaml").unwrap()["metadata"]["name"],
        "b"
    );
    assert_eq!(decode_body(rt, b"{", "").unwrap_err().code, 400);
    let e = decode_body(rt, json, "text/plain").unwrap_err();
    assert_eq!(e.code, 415);
    assert!(!e.message.contains("protobuf"), "{}", e.message);
    let e = decode_body(leases(&reg), b"{}", "text/plain").unwrap_err();
    refused(e, 415, "application/vnd.kubernetes.protobuf");

    let check = |v: serde_json::Value| check_kind(rt, &v, v.to_string().as_bytes()).unwrap_err();
    for (body, text) in [
        (
            json!({"apiVersion": "medforge.dev/v1alpha1"}),
            "Object 'Kind' is missing in '{\"apiVersion\"",
        ),
        (
            json!({"apiVersion": "medforge.dev/v1", "kind": "Session"}),
            "does not match the expected API version (medforge.dev/v1alpha1)",
        ),
        (
            json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Pack"}),
            "the kind in the data (Pack) does not match the expected kind (Session)",
        ),
        (json!([1]), "the body is a JSON array"),
    ] {
        refused(check(body), 400, text);
    }
}

#[test]
fn field_selectors_must_name_a_known_field() {
    let reg = registry();
    let rt = sessions(&reg);
    let q = |s: &str| Query::parse(Some(&format!("fieldSelector={s}&labelSelector=app%3Dx")));
    let sel = Selectors::from_query(rt, &q("spec.owner%3Dalice")).unwrap();
    assert_eq!(sel.fields.reqs.len(), 1);
    // The node agents' selector (decision 0019).
    let sel = Selectors::from_query(rt, &q("status.nodeName%3Dgpu-1")).unwrap();
    assert_eq!(sel.fields.reqs.len(), 1);
    let e = Selectors::from_query(rt, &q("spec.gpus%3D1"))
        .err()
        .unwrap();
    assert_eq!(e.code, 400);
    assert_eq!(
        e.message,
        "\"spec.gpus\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\", \"spec.owner\", \"status.nodeName\""
    );
    let e = Selectors::from_query(reg.namespace_type(), &q("spec.x%3D1"))
        .err()
        .unwrap();
    assert_eq!(e.message, "field label not supported: spec.x");
    let e = Selectors::from_query(rt, &Query::parse(Some("labelSelector=%3D%3D"))).err();
    assert_eq!(e.map(|e| e.code), Some(400));
}
