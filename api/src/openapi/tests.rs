use super::*;
use std::collections::BTreeSet;

fn doc() -> Value {
    let config = ApiConfig::new("medforge.test", "/nonexistent");
    let doc = document(&config);
    if let Ok(path) = std::env::var("MEDFORGE_OPENAPI_OUT") {
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    }
    doc
}

#[test]
fn every_reference_resolves_and_every_link_names_a_real_parameter() {
    let doc = doc();
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/components/").skip(1) {
        let target = part.split('"').next().unwrap();
        let (kind, name) = target.split_once('/').unwrap();
        assert!(
            doc["components"][kind].get(name).is_some(),
            "missing {kind}/{name}"
        );
    }
    let ops = operations();
    let ids: BTreeSet<&str> = ops.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
    for o in &ops {
        assert!(!o.success.is_empty(), "{} has no success", o.id);
        for l in &o.links {
            let target = ops
                .iter()
                .find(|t| t.id == l.operation_id)
                .unwrap_or_else(|| panic!("{} links to no {}", o.id, l.operation_id));
            for (name, expr) in &l.parameters {
                assert!(
                    target.params.iter().any(|p| p.name == *name),
                    "{} → {}: no parameter {name}",
                    o.id,
                    target.id
                );
                assert!(expr.starts_with("$response.body#/") || expr.starts_with("$request.path."));
            }
        }
    }
}

#[test]
fn the_gpu_bound_comes_from_the_configuration() {
    let mut config = ApiConfig::new("medforge.test", "/nonexistent");
    config.sessions.policy.maxima.gpus = 3;
    let doc = document(&config);
    assert_eq!(
        doc["components"]["schemas"]["CreateSession"]["properties"]["gpus"]["maximum"],
        3
    );
}
