//! Request bodies: JSON, YAML for `application/yaml`, or Kubernetes protobuf
//! for the built-in kinds, and the check that a body is of the kind the URL names.

use serde_json::Value;

use crate::protobuf;
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};

/// The media type of a `Content-Type` header, without parameters.
pub fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Decodes a protobuf request body: built-in kinds only, as on kube-apiserver,
/// where custom resources are JSON (or YAML) only.
pub fn decode_protobuf(rt: &ResourceType, body: &[u8]) -> ApiResult<Value> {
    if !rt.protobuf() {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {}: {} is served in JSON only)",
            protobuf::PROTOBUF,
            rt.group_resource()
        )));
    }
    protobuf::decode(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as {}: {e}",
            protobuf::PROTOBUF
        ))
    })
}

/// Parses a request body (JSON, YAML for `application/yaml`, or Kubernetes
/// protobuf for the built-in kinds) into an object and checks that it is of
/// this kind.
pub fn decode_body(rt: &ResourceType, body: &[u8], content_type: &str) -> ApiResult<Value> {
    let ct = media_type(content_type);
    let v: Value = match ct {
        protobuf::PROTOBUF => decode_protobuf(rt, body)?,
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
            })?
        }
        other => {
            let accepted = if rt.protobuf() {
                "application/json, application/yaml, application/vnd.kubernetes.protobuf"
            } else {
                "application/json, application/yaml"
            };
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted} (got {other})"
            )));
        }
    };
    check_kind(rt, &v, body)?;
    Ok(v)
}

/// Checks `apiVersion` and `kind` of a body against the kind the URL names.
pub fn check_kind(rt: &ResourceType, v: &Value, body: &[u8]) -> ApiResult<()> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: the body is a JSON {}, not an object",
            match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                _ => "null",
            }
        )));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{shown}'"
        )));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {}: the kind in the data ({kind}) does not match the expected kind ({})",
            rt.version, rt.kind, rt.kind
        )));
    }
    Ok(())
}
