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
