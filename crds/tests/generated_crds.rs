//! The committed CRD YAML matches the types, and every CRD is well-formed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionVersion,
};
use medforge_crds::{all_crds, crd_file_name, crd_yaml};
use serde_json::Value;

fn committed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/medforge/crds")
}

#[test]
fn committed_crds_match_the_types() {
    let dir = committed_dir();
    let mut expected_files = BTreeSet::new();
    for crd in all_crds() {
        let name = crd_file_name(&crd);
        let path = dir.join(&name);
        let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{} is missing ({e}); run `cargo run -- crds --write charts/medforge/crds`",
                path.display()
            )
        });
        let generated = crd_yaml(&crd).unwrap();
        assert!(
            committed == generated,
            "{} drifted from the Rust types; run `cargo run -- crds --write charts/medforge/crds` and commit the result",
            path.display()
        );
        expected_files.insert(name);
    }
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        present,
        expected_files,
        "stale or unexpected files in {}",
        dir.display()
    );
}

/// Parses each committed file as a CustomResourceDefinition and checks that
/// nothing in it is unknown to the apiextensions/v1 type (a round trip through
/// the typed struct keeps every field) and that it has what the project needs.
#[test]
fn committed_crds_are_well_formed() {
    let dir = committed_dir();
    let mut kinds = Vec::new();
    for crd in all_crds() {
        let text = std::fs::read_to_string(dir.join(crd_file_name(&crd))).unwrap();
        let raw: Value = serde_saphyr::from_str(&text).unwrap();
        let typed: CustomResourceDefinition = serde_json::from_value(raw.clone()).unwrap();
        let round_trip = serde_json::to_value(&typed).unwrap();
        assert_eq!(
            normalise(raw),
            normalise(round_trip),
            "unknown fields in {}",
            crd_file_name(&crd)
        );

        assert_eq!(typed.spec.group, "medforge.dev");
        let names = &typed.spec.names;
        assert_eq!(
            typed.metadata.name.as_deref(),
            Some(format!("{}.medforge.dev", names.plural).as_str())
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["medforge".to_string()][..])
        );
        assert!(names.short_names.as_ref().is_some_and(|s| !s.is_empty()));
        assert_eq!(typed.spec.versions.len(), 1);
        let v = &typed.spec.versions[0];
        assert!(v.served && v.storage && v.name == "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "status subresource"
        );
        let schema = schema_of(v);
        let conditions = &schema["properties"]["status"]["properties"]["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{}: conditions list-map",
            names.kind
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert!(schema["properties"]["status"]["properties"]["observedGeneration"].is_object());
        kinds.push((names.kind.clone(), typed.spec.scope.clone()));
    }
    assert_eq!(
        kinds,
        vec![
            ("Session".to_string(), "Namespaced".to_string()),
            ("GpuNode".to_string(), "Cluster".to_string()),
            ("Pack".to_string(), "Cluster".to_string()),
            ("WorkspaceSnapshot".to_string(), "Namespaced".to_string()),
        ]
    );
}

#[test]
fn session_schema_guards_what_controllers_rely_on() {
    let crd = all_crds().into_iter().next().unwrap();
    let v = &crd.spec.versions[0];
    let schema = schema_of(v);
    let spec = &schema["properties"]["spec"]["properties"];
    assert_eq!(
        spec["owner"]["x-kubernetes-validations"][0]["rule"],
        "self == oldSelf"
    );
    assert_eq!(spec["gpus"]["minimum"], 0.0);
    assert_eq!(spec["gpus"]["maximum"], 8.0);
    assert_eq!(
        spec["exposure"]["enum"],
        serde_json::json!(["external", "internal"])
    );
    assert_eq!(
        spec["state"]["enum"],
        serde_json::json!(["Running", "Stopped"])
    );
    assert!(spec["resources"]["properties"]["memory"]["pattern"].is_string());
    assert!(spec["workspace"]["properties"]["quota"]["pattern"].is_string());
    let status = &schema["properties"]["status"]["properties"];
    assert_eq!(status["slug"]["pattern"], "^[a-z0-9]{8}$");
    let columns: Vec<&str> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    for wanted in ["Owner", "Phase", "Node", "GPUs", "Age"] {
        assert!(
            columns.contains(&wanted),
            "printer column {wanted} missing: {columns:?}"
        );
    }
    // Every property carries a description, which `kubectl explain` shows.
    assert_described(&schema, "Session");
}

fn assert_described(schema: &Value, path: &str) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let here = format!("{path}.{name}");
            if name != "metadata" && name != "apiVersion" && name != "kind" {
                assert!(
                    sub.get("description").is_some(),
                    "{here} has no description"
                );
            }
            assert_described(sub, &here);
        }
    }
    if let Some(items) = schema.get("items") {
        assert_described(items, &format!("{path}[]"));
    }
}

/// Drops nulls so that "absent" and "null" compare equal in the round trip.
fn normalise(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, normalise(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        other => other,
    }
}

/// A CRD version's OpenAPI v3 schema, as JSON.
fn schema_of(v: &CustomResourceDefinitionVersion) -> Value {
    let schema = v.schema.as_ref().unwrap().open_api_v3_schema.as_ref();
    serde_json::to_value(schema.unwrap()).unwrap()
}
