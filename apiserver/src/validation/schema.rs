//! The walk of a value against its structural schema: the checks on each
//! node ([`super::constraints`]), list types (`set`, `map`), required and
//! declared properties, and `allOf`/`anyOf`/`oneOf`, collecting every violation.

use serde_json::{Map, Value};

use super::constraints::{self, Report};
use crate::status::{Cause, show_value};

/// The path of a property: `spec.owner`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `value` against a structural schema, collecting every violation.
pub fn check_schema(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    if value.is_null() && (schema.get("nullable") == Some(&Value::Bool(true)) || path.is_empty()) {
        return;
    }
    let mut r = Report { path, causes };
    if !constraints::check_type(schema, value, &mut r) {
        return;
    }
    constraints::check_enum(schema, value, &mut r);
    match value {
        Value::Number(_) => constraints::check_number(schema, value, &mut r),
        Value::String(s) => constraints::check_string(schema, value, s, &mut r),
        Value::Array(items) => {
            constraints::check_item_count(schema, items.len(), &mut r);
            check_list_type(schema, items, path, causes);
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(is, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => check_object(schema, map, path, causes),
        _ => {}
    }
    check_combinations(schema, value, path, causes);
}

/// No duplicates in a `set` list, nor two items with the same keys in a `map` list.
fn check_list_type(schema: &Value, items: &[Value], path: &str, causes: &mut Vec<Cause>) {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {}", show_value(item)),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let k = key_of(item);
                if items[..i].iter().any(|o| key_of(o) == k) {
                    let shown: Map<String, Value> = keys
                        .iter()
                        .zip(k.iter())
                        .map(|(a, b)| (a.to_string(), b.clone()))
                        .collect();
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {}", Value::Object(shown)),
                    ));
                }
            }
        }
        _ => {}
    }
}

/// `required`, `maxProperties`, and each property against its schema
/// (declared, or `additionalProperties`).
fn check_object(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if !map.contains_key(req) {
            causes.push(Cause::new(
                "FieldValueRequired",
                join(path, req),
                "Required value",
            ));
        }
    }
    constraints::check_property_count(schema, map.len(), &mut Report { path, causes });
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    for (k, v) in map {
        if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "metadata") {
            continue;
        }
        if let Some(ps) = props.and_then(|p| p.get(k)) {
            check_schema(ps, v, &join(path, k), causes);
        } else if let Some(ap) = additional {
            check_schema(ap, v, &format!("{path}[{k}]"), causes);
        }
    }
}

/// `allOf` (every one applies), `anyOf` (at least one matches) and `oneOf`
/// (exactly one matches).
fn check_combinations(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    for sub in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        check_schema(sub, value, path, causes);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(subs) = schema.get(key).and_then(Value::as_array) {
            let matching = subs
                .iter()
                .filter(|s| {
                    let mut c = Vec::new();
                    check_schema(s, value, path, &mut c);
                    c.is_empty()
                })
                .count();
            constraints::check_alternatives(value, key, matching, &mut Report { path, causes });
        }
    }
}
