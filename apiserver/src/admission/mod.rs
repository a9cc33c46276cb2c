//! Admission: what a write must satisfy and what the server sets before an
//! object is stored. The namespace must accept new objects; system metadata
//! is set on create and kept on update (`uid`, `creationTimestamp`,
//! `generation` that moves only with the spec, the status subresource split,
//! no new finalizers once deletion started); then the kind's validation
//! ([`crate::validation::validate`]) runs.

use serde_json::{Value, json};

use crate::managed::Scope;
use crate::object_meta::{finalizers, generated_name, meta_mut, meta_str, now};
use crate::registry::{Builtin, ResourceType};
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::StoredObject;

/// Whether the namespace of a new object exists and accepts new objects.
pub fn admit_namespace(st: &AppState, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
    if !rt.namespaced {
        return Ok(());
    }
    let ns_rt = st.registry.namespace_type();
    namespace_accepts(rt, ns, name, st.store.get(ns_rt.id, "", ns).as_deref())
}

/// Whether `namespace` (the stored Namespace `ns`, if any) accepts a new
/// object `name` of kind `rt`.
pub fn namespace_accepts(
    rt: &ResourceType,
    ns: &str,
    name: &str,
    namespace: Option<&StoredObject>,
) -> ApiResult<()> {
    match namespace {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if n.deleting => Err(ApiError::forbidden(
            rt,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Sets the system fields of a new object (`uid`, `creationTimestamp`,
/// `generation`, a generated name); clears what a client may not set. Returns
/// whether the name was generated.
pub fn prepare_create(rt: &ResourceType, v: &mut Value, ns: &str) -> ApiResult<bool> {
    let meta = meta_mut(v)?;
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut generated = false;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty()
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    {
        meta.insert("name".into(), json!(generated_name(prefix)));
        generated = true;
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "resourceVersion",
        "managedFields",
    ] {
        meta.remove(k);
    }
    if rt.builtin.is_none() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let obj = v.as_object_mut().expect("checked above");
    if rt.status_subresource && rt.builtin.is_none() {
        obj.remove("status");
    }
    if rt.builtin == Some(Builtin::Namespace) {
        obj.insert("spec".into(), json!({ "finalizers": ["kubernetes"] }));
        obj.insert("status".into(), json!({ "phase": "Active" }));
    }
    Ok(generated)
}

/// Copies what a client may not change from the stored object into the new one.
pub fn prepare_update(
    rt: &ResourceType,
    old: &Value,
    new: Value,
    scope: Scope,
) -> ApiResult<Value> {
    let managed = new.pointer("/metadata/managedFields").cloned();
    let mut out = match scope {
        Scope::Status => {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) => {
                    out["status"] = s.clone();
                }
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            out
        }
        Scope::Main => {
            let mut out = new;
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut out)?;
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_meta.get(k) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
            meta.remove("selfLink");
            // A binding's role is fixed at creation, as on kube-apiserver: a
            // write may not turn a binding into a grant of another role.
            if matches!(
                rt.builtin,
                Some(Builtin::RoleBinding | Builtin::ClusterRoleBinding)
            ) && old.get("roleRef") != out.get("roleRef")
            {
                return Err(ApiError::invalid(
                    rt,
                    meta_str(old, "name").unwrap_or(""),
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "roleRef",
                        format!(
                            "Invalid value: {}: cannot change roleRef",
                            out.get("roleRef")
                                .map(|v| v.to_string())
                                .unwrap_or_default()
                        ),
                    )],
                ));
            }
            if old_meta.get("deletionTimestamp").is_some() {
                let before = finalizers(old);
                let added: Vec<String> = finalizers(&out)
                    .into_iter()
                    .filter(|f| !before.contains(f))
                    .collect();
                if !added.is_empty() {
                    return Err(ApiError::invalid(
                        rt,
                        meta_str(old, "name").unwrap_or(""),
                        vec![Cause::new(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            format!(
                                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                                added
                                    .iter()
                                    .map(|f| format!("{f:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )],
                    ));
                }
            }
            let o = out.as_object_mut().expect("meta_mut checked");
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            if rt.builtin == Some(Builtin::Namespace)
                && let Some(f) = old.pointer("/spec/finalizers")
            {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert("finalizers".into(), f.clone());
                }
            }
            if rt.builtin.is_none() {
                let differs = |a: &Value, b: &Value| {
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("metadata");
                            if rt.status_subresource {
                                o.remove("status");
                            }
                        }
                        v
                    };
                    strip(a) != strip(b)
                };
                if differs(old, &out) {
                    let g = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    meta_mut(&mut out)?.insert("generation".into(), json!(g + 1));
                }
            }
            out
        }
    };
    let meta = meta_mut(&mut out)?;
    match managed {
        Some(m) => meta.insert("managedFields".into(), m),
        None => meta.remove("managedFields"),
    };
    if let Some(rv) = meta_str(old, "resourceVersion") {
        meta_mut(&mut out)?.insert("resourceVersion".into(), json!(rv));
    }
    Ok(out)
}

/// Equality that ignores `managedFields` timestamps, to skip no-op writes.
pub fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(entries) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in entries {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests;
