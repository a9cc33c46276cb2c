//! `metadata` as kube-apiserver validates it for every kind: the name,
//! labels, annotations and finalizers.

use serde_json::{Map, Value};

use crate::registry::{Builtin, ResourceType};
use crate::selector::{check_label_value, check_qualified_name, is_dns_label, is_dns_subdomain};
use crate::status::Cause;

/// Validates metadata as kube-apiserver does for every kind.
pub fn check_metadata(rt: &ResourceType, value: &Value, causes: &mut Vec<Cause>) {
    let Some(meta) = value.get("metadata").and_then(Value::as_object) else {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata",
            "Required value",
        ));
        return;
    };
    check_name(rt, meta, causes);
    check_labels(meta, causes);
    check_annotations(meta, causes);
    check_finalizers(meta, causes);
}

fn check_name(rt: &ResourceType, meta: &Map<String, Value>, causes: &mut Vec<Cause>) {
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    } else if rt.builtin == Some(Builtin::Namespace) {
        if !is_dns_label(name) {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            ));
        }
    } else if !is_dns_subdomain(name) {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
}

fn check_labels(meta: &Map<String, Value>, causes: &mut Vec<Cause>) {
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if let Err(e) = check_qualified_name(k) {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            "metadata.labels",
                            format!("Invalid value: {k:?}: {e}"),
                        ));
                    }
                    let item = format!("metadata.labels[{k}]");
                    check_string(v, "metadata.labels", &item, check_label_value, causes);
                }
            }
            None if labels.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueTypeInvalid",
                "metadata.labels",
                "Invalid value: must be a map of strings",
            )),
        }
    }
}

fn check_annotations(meta: &Map<String, Value>, causes: &mut Vec<Cause>) {
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            if let Err(e) = check_qualified_name(&k.to_lowercase()) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "metadata.annotations",
                    format!("Invalid value: {k:?}: {e}"),
                ));
            }
            if !v.is_string() {
                causes.push(Cause::new(
                    "FieldValueTypeInvalid",
                    format!("metadata.annotations[{k}]"),
                    "Invalid value: must be a string",
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
}

fn check_finalizers(meta: &Map<String, Value>, causes: &mut Vec<Cause>) {
    if let Some(fins) = meta.get("finalizers") {
        match fins.as_array() {
            Some(a) => {
                for (i, f) in a.iter().enumerate() {
                    let item = format!("metadata.finalizers[{i}]");
                    check_string(f, &item, &item, check_qualified_name, causes);
                }
            }
            None if fins.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueTypeInvalid",
                "metadata.finalizers",
                "Invalid value: must be a list of strings",
            )),
        }
    }
}

/// A label value or a finalizer: a string (else a type error at `item`) that
/// `check` accepts (else an invalid value at `field`).
fn check_string(
    v: &Value,
    field: &str,
    item: &str,
    check: fn(&str) -> Result<(), String>,
    causes: &mut Vec<Cause>,
) {
    match v.as_str() {
        Some(s) => {
            if let Err(e) = check(s) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    field,
                    format!("Invalid value: {s:?}: {e}"),
                ));
            }
        }
        None => causes.push(Cause::new(
            "FieldValueTypeInvalid",
            item,
            "Invalid value: must be a string",
        )),
    }
}
