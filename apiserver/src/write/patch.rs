//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386),
//! strategic merge patch for the built-in kinds (applied as a merge patch
//! after its directives are resolved), and server-side apply.

use serde_json::Value;

use super::update::Mutation;
use crate::managed::{self, Scope};
use crate::registry::ResourceType;
use crate::request::body::check_kind;
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(rt: &ResourceType, ct: &str) -> ApiResult<PatchKind> {
        let base = ct.split(';').next().unwrap_or("").trim();
        let accepted = if rt.builtin.is_some() {
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
        } else {
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        };
        match base {
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchKind::Apply),
            "application/strategic-merge-patch+json" if rt.builtin.is_some() => {
                Ok(PatchKind::Strategic)
            }
            _ => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ))),
        }
    }
}

/// A parsed patch body.
pub enum Parsed {
    Json(json_patch::Patch),
    Merge(Value),
    Apply(Value),
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Resolves strategic-merge-patch directives into a plain merge patch.
fn strip_directives(v: &mut Value) {
    if let Value::Object(m) = v {
        if m.get("$patch").and_then(Value::as_str) == Some("delete") {
            *v = Value::Null;
            return;
        }
        m.retain(|k, _| !k.starts_with('$'));
        for child in m.values_mut() {
            strip_directives(child);
        }
    }
}

pub fn parse(rt: &ResourceType, kind: PatchKind, body: &[u8]) -> ApiResult<Parsed> {
    match kind {
        PatchKind::Json => {
            let v = parse_json(body)?;
            let p: json_patch::Patch = serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            Ok(Parsed::Json(p))
        }
        PatchKind::Merge => {
            let v = parse_json(body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a merge patch must be a JSON object",
                ));
            }
            Ok(Parsed::Merge(v))
        }
        PatchKind::Strategic => {
            let mut v = parse_json(body)?;
            if !v.is_object() {
                return Err(ApiError::bad_request(
                    "error decoding patch: a strategic merge patch must be a JSON object",
                ));
            }
            strip_directives(&mut v);
            Ok(Parsed::Merge(v))
        }
        PatchKind::Apply => {
            let v: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    let text = std::str::from_utf8(body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                    serde_saphyr::from_str(text)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
                }
            };
            check_kind(rt, &v, body)?;
            Ok(Parsed::Apply(v))
        }
    }
}

fn touches_rv(p: &json_patch::Patch) -> bool {
    p.0.iter().any(|op| {
        let path = match op {
            json_patch::PatchOperation::Add(o) => o.path.to_string(),
            json_patch::PatchOperation::Replace(o) => o.path.to_string(),
            json_patch::PatchOperation::Test(o) => o.path.to_string(),
            _ => String::new(),
        };
        path == "/metadata/resourceVersion"
    })
}

fn rv_of(v: &Value) -> Option<String> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Applies a patch to the current object (`None` only for apply, which then creates).
#[allow(clippy::too_many_arguments)]
pub fn apply_patch(
    rt: &ResourceType,
    parsed: &Parsed,
    current: Option<&Value>,
    name: &str,
    manager: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> ApiResult<Mutation> {
    match parsed {
        Parsed::Json(p) => {
            let mut v = current
                .cloned()
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            apply_json_patch(&mut v, p)?;
            let required_rv = if touches_rv(p) { rv_of(&v) } else { None };
            Ok(Mutation {
                object: v,
                required_rv,
                managed_done: false,
            })
        }
        Parsed::Merge(patch) => {
            let mut v = current
                .cloned()
                .ok_or_else(|| ApiError::not_found(rt, name))?;
            json_patch::merge(&mut v, patch);
            let required_rv = patch
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            if !v.is_object() {
                return Err(ApiError::bad_request("the patch replaced the whole object"));
            }
            Ok(Mutation {
                object: v,
                required_rv,
                managed_done: false,
            })
        }
        Parsed::Apply(applied) => {
            if let Some(n) = applied.pointer("/metadata/name").and_then(Value::as_str)
                && n != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            let merged = managed::apply(rt, current, applied, manager, force, scope, now)
                .map_err(|causes| ApiError::apply_conflict(rt, name, causes))?;
            Ok(Mutation {
                object: merged,
                required_rv: rv_of(applied),
                managed_done: true,
            })
        }
    }
}

/// Applies a JSON patch operation by operation. A `test` of `null` passes on
/// a missing path, as in kube-apiserver's implementation (kube-runtime's
/// finalizer helper relies on it when it adds the first finalizer).
fn apply_json_patch(v: &mut Value, p: &json_patch::Patch) -> ApiResult<()> {
    let fail = |e: String| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    };
    for op in &p.0 {
        if let json_patch::PatchOperation::Test(t) = op {
            let found = v.pointer(t.path.as_str()).unwrap_or(&Value::Null);
            if *found != t.value {
                return Err(fail(format!("testing value {} failed", t.path.as_str())));
            }
            continue;
        }
        json_patch::patch(v, std::slice::from_ref(op)).map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}
