//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A pragmatic subset of Kubernetes' structured-merge-diff: field sets in the
//! `FieldsV1` encoding; lists merge by their `x-kubernetes-list-type` (atomic,
//! set, or map keyed by `x-kubernetes-list-map-keys`); an apply merges the
//! applied configuration into the live object, removes fields the manager
//! applied before and no longer applies (unless another manager owns them),
//! and reports conflicts with other managers that set a field to a different
//! value, unless forced. Non-apply writes take ownership of the fields they
//! change.

//!
//! [`fields`] holds field paths and sets and the merge; this module the
//! `managedFields` entries, updates and apply.

mod fields;

#[cfg(test)]
mod tests;

use serde_json::{Value, json};

use crate::json::str_or;
use crate::registry::ResourceType;
use crate::status::Cause;
use fields::{Element, merge, remove_at, value_at};
pub use fields::{FieldSet, Scope, fields_of};

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Manager {
    fn same(&self, name: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == name
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The entry of `manager`'s `operation` (on `subresource`), its time set to
/// `now`; a new entry with no fields when there was none.
fn touch<'m>(
    managers: &'m mut Vec<Manager>,
    rt: &ResourceType,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    now: &str,
) -> &'m mut Manager {
    let i = match managers
        .iter()
        .position(|m| m.same(manager, operation, subresource))
    {
        Some(i) => i,
        None => {
            managers.push(Manager {
                manager: manager.to_string(),
                operation: operation.to_string(),
                api_version: rt.api_version(),
                time: String::new(),
                subresource: subresource.map(str::to_string),
                fields: FieldSet::default(),
            });
            managers.len() - 1
        }
    };
    let m = &mut managers[i];
    m.time = now.to_string();
    m
}

/// The managers recorded on an object.
pub fn read_managers(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Manager {
            manager: str_or(e, "manager", ""),
            operation: str_or(e, "operation", "Update"),
            api_version: str_or(e, "apiVersion", ""),
            time: str_or(e, "time", ""),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: e
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
        })
        .collect()
}

/// Writes managers back into `metadata.managedFields` (dropping empty ones).
pub fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": m.fields.to_fields_v1(),
            });
            if let Some(s) = &m.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

fn subresource_name(scope: Scope) -> Option<&'static str> {
    match scope {
        Scope::Main => None,
        Scope::Status => Some("status"),
    }
}

/// Records a non-apply write by `manager`: it takes the fields it changed;
/// fields that disappeared leave every manager.
pub fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    now: &str,
) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let new_fields = fields_of(rt, new, scope);
    let mut changed = FieldSet::default();
    for p in new_fields.paths() {
        let before = old.and_then(|o| value_at(o, &p));
        if before != value_at(new, &p) {
            changed.insert(&p);
        }
    }
    let mut removed = FieldSet::default();
    if let Some(o) = old {
        for p in fields_of(rt, o, scope).paths() {
            if value_at(new, &p).is_none() {
                removed.insert(&p);
            }
        }
    }
    for m in managers.iter_mut() {
        m.fields.subtract(&removed);
        if !m.same(manager, "Update", subresource_name(scope)) {
            m.fields.subtract(&changed);
        }
    }
    if !changed.is_empty() {
        let sub = subresource_name(scope);
        touch(&mut managers, rt, manager, "Update", sub, now)
            .fields
            .union(&changed);
    }
    write_managers(new, &managers);
}

fn display_path(path: &[Element]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Server-side apply: the live object with `applied` merged in, or the
/// conflicts that stop it. `live` is `None` when the object does not exist.
pub fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, Vec<Cause>> {
    let mut managers = live.map(read_managers).unwrap_or_default();
    let new_set = fields_of(rt, applied, scope);
    let sub = subresource_name(scope);
    if let Some(live) = live {
        let mut conflicts = Vec::new();
        for m in managers.iter_mut() {
            if m.manager == manager {
                continue;
            }
            let mut lost = Vec::new();
            for p in new_set.paths() {
                if m.fields.contains(&p) && value_at(live, &p) != value_at(applied, &p) {
                    lost.push(p);
                }
            }
            if force {
                for p in &lost {
                    m.fields.remove(p);
                }
            } else {
                for p in lost {
                    conflicts.push(Cause::new(
                        "FieldManagerConflict",
                        display_path(&p),
                        format!(
                            "conflict with \"{}\"{}: {}",
                            m.manager,
                            if m.operation == "Apply" {
                                String::new()
                            } else {
                                format!(" using {}", m.api_version)
                            },
                            display_path(&p)
                        ),
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
    }
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let mut applied_body = applied.clone();
    if let Some(o) = applied_body.as_object_mut() {
        if scope == Scope::Status {
            o.retain(|k, _| k == "status");
        } else if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            // Only these metadata fields are the applier's to set.
            m.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels"
                        | "annotations"
                        | "finalizers"
                        | "ownerReferences"
                        | "name"
                        | "namespace"
                        | "generateName"
                )
            });
        }
    }
    merge(rt, &mut result, &applied_body, "");
    let previous = managers
        .iter()
        .find(|m| m.same(manager, "Apply", sub))
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let mut dropped = previous.clone();
    dropped.subtract(&new_set);
    for p in dropped.paths() {
        let owned_elsewhere = managers
            .iter()
            .any(|m| !m.same(manager, "Apply", sub) && m.fields.contains(&p));
        if !owned_elsewhere {
            remove_at(&mut result, &p);
        }
    }
    touch(&mut managers, rt, manager, "Apply", sub, now).fields = new_set;
    write_managers(&mut result, &managers);
    Ok(result)
}

/// The manager name kube-apiserver derives from a User-Agent when a request
/// names none: the part before the first `/`.
pub fn manager_from_user_agent(ua: Option<&str>) -> String {
    let ua = ua.unwrap_or("");
    let name: String = ua
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}
