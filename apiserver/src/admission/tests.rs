//! Admission without a server: namespaces that accept objects, the system
//! metadata of new and updated objects, and no-op detection.

use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::{Value, json};

use super::{namespace_accepts, prepare_create, prepare_update, same_object};
use crate::managed::Scope;
use crate::registry::{Registry, ResourceType};
use crate::store::StoredObject;
use crate::validation::{FieldValidation, validate};

/// The registry of MedForge's CRDs and the built-in kinds, built once.
fn registry() -> &'static Registry {
    static REGISTRY: LazyLock<Registry> =
        LazyLock::new(|| Registry::new(&medforge_crds::all_crds()).unwrap());
    &REGISTRY
}

fn sessions() -> &'static ResourceType {
    registry()
        .lookup("medforge.dev", "v1alpha1", "sessions")
        .unwrap()
}

fn session(name: &str) -> Value {
    json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
           "metadata": {"name": name}, "spec": {"owner": "alice", "pack": "jupyter", "gpus": 1}})
}

/// The Session `name` with `changes` merged in (a JSON merge patch).
fn session_with(name: &str, changes: Value) -> Value {
    let mut v = session(name);
    json_patch::merge(&mut v, &changes);
    v
}

fn stored(rt: &ResourceType, v: Value) -> StoredObject {
    let json = Bytes::from(v.to_string());
    StoredObject::new(rt, &v, json)
}

#[test]
fn only_an_existing_active_namespace_accepts_objects() {
    let rt = sessions();
    let e = namespace_accepts(rt, "team-a", "s1", None).unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"team-a\" not found")
    );
    let ns = registry().namespace_type();
    let active = stored(ns, json!({"metadata": {"name": "team-a"}}));
    assert!(namespace_accepts(rt, "team-a", "s1", Some(&active)).is_ok());
    let terminating = stored(
        ns,
        json!({"metadata": {"name": "team-a", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
    );
    let e = namespace_accepts(rt, "team-a", "s1", Some(&terminating)).unwrap_err();
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "sessions.medforge.dev \"s1\" is forbidden: unable to create new content in namespace team-a because it is being terminated"
    );
}

#[test]
fn create_sets_the_system_metadata() {
    let rt = sessions();
    let mut v = session_with(
        "s1",
        json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "uid": "mine", "generation": 7},
               "status": {"phase": "Running"}}),
    );
    assert!(!prepare_create(rt, &mut v, "team-a").unwrap());
    let meta = &v["metadata"];
    assert_eq!(meta["namespace"], "team-a");
    assert_eq!(meta["generation"], 1);
    assert_ne!(meta["uid"], "mine");
    assert_eq!(meta["uid"].as_str().unwrap().len(), 36);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert!(meta.get("deletionTimestamp").is_none());
    // The status subresource is written separately.
    assert!(v.get("status").is_none());
}

#[test]
fn create_generates_names_and_refuses_what_a_client_may_not_set() {
    let rt = sessions();
    let mut v = json!({"metadata": {"generateName": "s-"}, "spec": {}});
    assert!(prepare_create(rt, &mut v, "a").unwrap());
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("s-") && name.len() == 7, "{name}");

    let mut other_ns = session("s1");
    other_ns["metadata"]["namespace"] = json!("b");
    assert_eq!(
        prepare_create(rt, &mut other_ns, "a").unwrap_err().code,
        400
    );
    let mut with_rv = session("s1");
    with_rv["metadata"]["resourceVersion"] = json!("3");
    let e = prepare_create(rt, &mut with_rv, "a").unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (
            500,
            "Internal error occurred: resourceVersion should not be set on objects to be created"
        )
    );
    assert_eq!(
        prepare_create(rt, &mut json!([]), "a").unwrap_err().code,
        400
    );
}

#[test]
fn a_new_namespace_is_active_with_the_kubernetes_finalizer() {
    let ns = registry().namespace_type();
    let mut v = json!({"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": "demo", "namespace": "x", "generation": 3}});
    prepare_create(ns, &mut v, "").unwrap();
    assert!(v["metadata"].get("namespace").is_none());
    // Built-in kinds do not track generations here.
    assert!(v["metadata"].get("generation").is_none());
    assert_eq!(v["spec"], json!({"finalizers": ["kubernetes"]}));
    assert_eq!(v["status"], json!({"phase": "Active"}));
}

fn existing() -> Value {
    let mut v = session("s1");
    prepare_create(sessions(), &mut v, "team-a").unwrap();
    v["metadata"]["resourceVersion"] = json!("10");
    v["status"] = json!({"phase": "Running"});
    v
}

/// A Session update from `old` to `new` through `scope`, admitted.
fn update(old: &Value, new: Value, scope: Scope) -> Value {
    prepare_update(sessions(), old, new, scope).unwrap()
}

#[test]
fn update_keeps_system_metadata_and_the_status() {
    let old = existing();
    let new = session_with(
        "renamed",
        json!({"metadata": {"uid": "forged", "labels": {"x": "1"}}, "status": {"phase": "Stopped"}}),
    );
    let out = update(&old, new, Scope::Main);
    assert_eq!(out["metadata"]["uid"], old["metadata"]["uid"]);
    assert_eq!(out["metadata"]["name"], "s1");
    assert_eq!(out["metadata"]["namespace"], "team-a");
    assert_eq!(out["metadata"]["resourceVersion"], "10");
    assert_eq!(out["metadata"]["labels"], json!({"x": "1"}));
    assert_eq!(out["status"], json!({"phase": "Running"}));
    // Only labels changed: the generation stays.
    assert_eq!(out["metadata"]["generation"], 1);

    let spec_change = session_with("s1", json!({"spec": {"gpus": 2}}));
    let out = update(&old, spec_change, Scope::Main);
    assert_eq!(out["metadata"]["generation"], 2);
}

#[test]
fn a_status_update_changes_only_the_status() {
    let old = existing();
    let new = session_with(
        "s1",
        json!({"spec": {"gpus": 8}, "status": {"phase": "Stopped"}}),
    );
    let out = update(&old, new, Scope::Status);
    assert_eq!(out["status"], json!({"phase": "Stopped"}));
    assert_eq!(out["spec"]["gpus"], 1);
    assert_eq!(out["metadata"]["generation"], 1);
    let out = update(&old, session("s1"), Scope::Status);
    assert!(out.get("status").is_none());
}

#[test]
fn no_new_finalizers_once_deletion_started() {
    let rt = sessions();
    let mut old = existing();
    old["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    old["metadata"]["finalizers"] = json!(["medforge.dev/agent"]);
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!(["medforge.dev/agent", "a/b"]);
    let e = prepare_update(rt, &old, new, Scope::Main).unwrap_err();
    assert_eq!(e.code, 422);
    assert!(
        e.message.ends_with(
            "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{\"a/b\"}"
        ),
        "{}",
        e.message
    );
    // Removing one is what finishes a deletion.
    let mut fewer = old.clone();
    fewer["metadata"]["finalizers"] = json!([]);
    let out = update(&old, fewer, Scope::Main);
    assert_eq!(
        out["metadata"]["deletionTimestamp"],
        old["metadata"]["deletionTimestamp"]
    );
}

#[test]
fn a_namespace_keeps_its_spec_finalizers() {
    let ns = registry().namespace_type();
    let old = json!({"metadata": {"name": "demo"}, "spec": {"finalizers": ["kubernetes"]}});
    let new = json!({"metadata": {"name": "demo"}, "spec": {}});
    let out = prepare_update(ns, &old, new, Scope::Main).unwrap();
    assert_eq!(out["spec"]["finalizers"], json!(["kubernetes"]));
}

#[test]
fn managed_field_times_do_not_make_a_change() {
    let a = json!({"metadata": {"name": "a", "managedFields": [{"manager": "m", "time": "2026-01-01T00:00:00Z"}]}});
    let mut b = a.clone();
    b["metadata"]["managedFields"][0]["time"] = json!("2026-02-01T00:00:00Z");
    assert!(same_object(&a, &b));
    b["metadata"]["managedFields"][0]["manager"] = json!("other");
    assert!(!same_object(&a, &b));
}

#[test]
fn validation_runs_by_kind() {
    let rt = sessions();
    let mut bad = session_with("s1", json!({"spec": {"gpus": "two"}}));
    let e = validate(rt, &mut bad, None, FieldValidation::Warn).unwrap_err();
    assert_eq!((e.code, e.reason), (422, "Invalid"));
    assert!(e.message.contains("spec.gpus"), "{}", e.message);
    let mut unknown = session_with("s1", json!({"spec": {"colour": "red"}}));
    let warnings = validate(rt, &mut unknown, None, FieldValidation::Warn).unwrap();
    assert_eq!(warnings, vec!["unknown field \"spec.colour\"".to_string()]);
    assert!(unknown["spec"].get("colour").is_none());
    let mut unknown = session_with("s1", json!({"spec": {"colour": "red"}}));
    let e = validate(rt, &mut unknown, None, FieldValidation::Strict).unwrap_err();
    assert_eq!(e.code, 400);
    // Built-in kinds decode into their typed form.
    let lease = registry()
        .lookup("coordination.k8s.io", "v1", "leases")
        .unwrap();
    let mut v = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                       "metadata": {"name": "l"}, "spec": {"leaseDurationSeconds": "x"}});
    assert_eq!(
        validate(lease, &mut v, None, FieldValidation::Warn)
            .unwrap_err()
            .code,
        400
    );
}
