//! The `continue` token of a paginated list: the resource version the list is
//! consistent at and the key the next page starts after, as URL-safe base64 JSON.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::status::{ApiError, ApiResult};
use crate::store::ObjectKey;

/// The token for the page after `key` of a list at resource version `rv`.
pub fn encode(rv: u64, key: &ObjectKey) -> String {
    let t = json!({ "v": "meta.k8s.io/v1", "rv": rv, "ns": key.0, "name": key.1 });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

/// The resource version and the last key of the page a token continues.
pub fn decode(token: &str) -> ApiResult<(u64, ObjectKey)> {
    let bad = || ApiError::bad_request("continue key is not valid: the token could not be decoded");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}
