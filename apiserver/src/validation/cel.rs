//! The CEL rules of a CRD (`x-kubernetes-validations`), transition rules
//! (`oldSelf`) included, run by kube's CEL validator.

use serde_json::Value;

use crate::registry::ResourceType;
use crate::status::{Cause, show_value};

/// The schema node at a dotted path (`spec.owner`), for CEL error messages.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let part = part.split('[').next().unwrap_or(part);
        cur = cur
            .get("properties")
            .and_then(|p| p.get(part))
            .or_else(|| {
                cur.get("items")
                    .and_then(|i| i.get("properties")?.get(part))
            })?;
    }
    Some(cur)
}

thread_local! {
    static CEL: kube::core::cel::Validator = kube::core::cel::Validator::new();
}

/// Runs the kind's CEL rules; `old` enables transition rules (`oldSelf`).
pub fn check_cel(rt: &ResourceType, value: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let (Some(compiled), Some(schema)) = (&rt.cel, &rt.schema) else {
        return;
    };
    let result = CEL.with(|v| v.validate_compiled(compiled, value, old));
    if let Err(errors) = result {
        for e in errors {
            let ty = schema_at(schema, &e.field_path)
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("object")
                .to_string();
            causes.push(Cause::new(
                "FieldValueInvalid",
                e.field_path.clone(),
                format!(
                    "Invalid value: {}: {}",
                    show_value(&Value::String(ty)),
                    e.message
                ),
            ));
        }
    }
}
