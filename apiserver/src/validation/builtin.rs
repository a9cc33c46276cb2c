//! Validation of the built-in kinds: decoding into their typed form (which
//! drops unknown fields), plus the few rules the controllers rely on.

use serde_json::Value;

use super::metadata::check_metadata;
use crate::registry::{Builtin, ResourceType};
use crate::status::{ApiError, ApiResult, Cause};

fn decode_typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    rt: &ResourceType,
    value: &Value,
) -> ApiResult<Value> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version {ver:?} cannot be handled as a {kind}: {e}",
            kind = rt.kind,
            ver = rt.version
        ))
    })?;
    serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))
}

/// An Event's `type` is `Normal` or `Warning` when set.
fn check_event_type(v: &Value, causes: &mut Vec<Cause>) {
    if let Some(t) = v.get("type").and_then(Value::as_str)
        && t != "Normal"
        && t != "Warning"
    {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "type",
            format!("Unsupported value: {t:?}: supported values: \"Normal\", \"Warning\""),
        ));
    }
}

/// kube-apiserver's rule checks: every rule names verbs, and either resources
/// (with API groups) or non-resource URLs, not both.
fn check_rules(v: &Value, causes: &mut Vec<Cause>) {
    let empty = |r: &Value, k: &str| r.get(k).and_then(Value::as_array).is_none_or(Vec::is_empty);
    for (i, rule) in v
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let field = |f: &str| format!("rules[{i}].{f}");
        if empty(rule, "verbs") {
            causes.push(Cause::new(
                "FieldValueRequired",
                field("verbs"),
                "Required value: verbs must contain at least one value",
            ));
        }
        let urls = !empty(rule, "nonResourceURLs");
        if urls && !empty(rule, "resources") {
            causes.push(Cause::new(
                "FieldValueInvalid",
                field("nonResourceURLs"),
                "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        if !urls && empty(rule, "apiGroups") {
            causes.push(Cause::new(
                "FieldValueRequired",
                field("apiGroups"),
                "Required value: resource rules must supply at least one api group",
            ));
        }
    }
}

/// A binding's `roleRef` (a Role only in a RoleBinding) and its subjects.
fn check_binding(v: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let role_kind = v
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let allowed: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !allowed.contains(&role_kind) {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "roleRef.kind",
            format!(
                "Unsupported value: {role_kind:?}: supported values: {}",
                allowed
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if v.pointer("/roleRef/apiGroup").and_then(Value::as_str) != Some(crate::registry::RBAC) {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "roleRef.apiGroup",
            format!(
                "Unsupported value: {:?}: supported values: \"{}\"",
                v.pointer("/roleRef/apiGroup")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                crate::registry::RBAC
            ),
        ));
    }
    if v.pointer("/roleRef/name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        causes.push(Cause::new(
            "FieldValueRequired",
            "roleRef.name",
            "Required value",
        ));
    }
    for (i, subject) in v
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                format!("subjects[{i}].name"),
                "Required value",
            ));
        }
        match kind {
            "User" | "Group" => {}
            "ServiceAccount" => {
                let ns = subject.get("namespace").and_then(Value::as_str).unwrap_or("");
                if ns.is_empty() && !namespaced {
                    causes.push(Cause::new(
                        "FieldValueRequired",
                        format!("subjects[{i}].namespace"),
                        "Required value",
                    ));
                }
            }
            other => causes.push(Cause::new(
                "FieldValueNotSupported",
                format!("subjects[{i}].kind"),
                format!(
                    "Unsupported value: {other:?}: supported values: \"ServiceAccount\", \"User\", \"Group\""
                ),
            )),
        }
    }
}

/// Validates a built-in kind by decoding it into its typed form, which also
/// drops unknown fields, plus the few rules the controllers rely on.
pub fn validate_builtin(rt: &ResourceType, value: &mut Value) -> ApiResult<Vec<String>> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::events::v1::Event;
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut causes = Vec::new();
    check_metadata(rt, value, &mut causes);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    let normal = match rt.builtin {
        Some(Builtin::Namespace) => decode_typed::<Namespace>(rt, value)?,
        Some(Builtin::Lease) => decode_typed::<Lease>(rt, value)?,
        Some(Builtin::ServiceAccount) => {
            decode_typed::<k8s_openapi::api::core::v1::ServiceAccount>(rt, value)?
        }
        Some(Builtin::Role) => {
            let v = decode_typed::<k8s_openapi::api::rbac::v1::Role>(rt, value)?;
            check_rules(&v, &mut causes);
            v
        }
        Some(Builtin::ClusterRole) => {
            let v = decode_typed::<k8s_openapi::api::rbac::v1::ClusterRole>(rt, value)?;
            check_rules(&v, &mut causes);
            // Refused, not ignored: this server does not aggregate roles,
            // so an aggregated role would silently grant nothing.
            if v.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                causes.push(Cause::new(
                    "FieldValueForbidden",
                    "aggregationRule",
                    "Forbidden: aggregated ClusterRoles are not supported by this server (docs/decisions/0021); list the rules in `rules`",
                ));
            }
            v
        }
        Some(Builtin::RoleBinding) => {
            let v = decode_typed::<k8s_openapi::api::rbac::v1::RoleBinding>(rt, value)?;
            check_binding(&v, true, &mut causes);
            v
        }
        Some(Builtin::ClusterRoleBinding) => {
            let v = decode_typed::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(rt, value)?;
            check_binding(&v, false, &mut causes);
            v
        }
        // Answered by `crate::auth::review`, never stored.
        Some(Builtin::SelfSubjectAccessReview | Builtin::SelfSubjectRulesReview) => value.clone(),
        Some(Builtin::Event) => {
            let v = decode_typed::<Event>(rt, value)?;
            if v.get("eventTime").is_none_or(Value::is_null) {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    "eventTime",
                    "Required value",
                ));
            }
            check_event_type(&v, &mut causes);
            v
        }
        // Core v1 Events (written by older recorders): eventTime is
        // optional there, as on kube-apiserver.
        Some(Builtin::CoreEvent) => {
            let v = decode_typed::<k8s_openapi::api::core::v1::Event>(rt, value)?;
            check_event_type(&v, &mut causes);
            v
        }
        None => value.clone(),
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    // The typed round trip drops unknown fields but keeps what the client sent.
    *value = normal;
    Ok(Vec::new())
}
