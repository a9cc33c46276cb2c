use serde_json::json;

use super::{FieldSet, Scope, apply, fields_of, read_managers};
use crate::registry::Registry;

fn rt() -> Registry {
    Registry::new(&medforge_crds::all_crds()).unwrap()
}

#[test]
fn fields_v1_round_trip() {
    let reg = rt();
    let s = reg.lookup("medforge.dev", "v1alpha1", "sessions").unwrap();
    let v = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a", "labels": {"x": "1"}, "finalizers": ["a/b"]},
            "spec": {"owner": "u", "gpus": 1}});
    let set = fields_of(s, &v, Scope::Main);
    let enc = set.to_fields_v1();
    assert_eq!(
        enc,
        json!({"f:metadata": {"f:labels": {"f:x": {}}, "f:finalizers": {"v:\"a/b\"": {}}},
            "f:spec": {"f:gpus": {}, "f:owner": {}}})
    );
    assert_eq!(FieldSet::from_fields_v1(&enc), set);
}

#[test]
fn apply_conflicts_merges_and_removes() {
    let reg = rt();
    let s = reg.lookup("medforge.dev", "v1alpha1", "sessions").unwrap();
    let base = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"owner": "u", "pack": "p", "gpus": 1}});
    let created = apply(s, None, &base, "one", false, Scope::Main, "t").unwrap();
    // Another applier changing gpus conflicts, unless forced.
    let other = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"gpus": 2}});
    let err = apply(s, Some(&created), &other, "two", false, Scope::Main, "t").unwrap_err();
    assert_eq!(err[0].field, ".spec.gpus");
    let forced = apply(s, Some(&created), &other, "two", true, Scope::Main, "t").unwrap();
    assert_eq!(forced["spec"]["gpus"], json!(2));
    // "one" stops applying pack: it goes; owner stays with "one".
    let less = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"owner": "u"}});
    let after = apply(s, Some(&forced), &less, "one", false, Scope::Main, "t").unwrap();
    assert_eq!(after["spec"].get("pack"), None);
    assert_eq!(after["spec"]["gpus"], json!(2));
    assert_eq!(read_managers(&after).len(), 2);
}
