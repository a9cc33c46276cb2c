//! API errors rendered as `meta/v1 Status` objects, with the reasons and codes
//! kube-apiserver gives for the same mistakes.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::registry::ResourceType;
use crate::store::{ReadError, WriteError};

/// One cause of an `Invalid` (422) or `Conflict` error: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`, …
    pub reason: String,
    /// The message without the field prefix (`Required value`).
    pub message: String,
    /// The field path (`spec.owner`).
    pub field: String,
}

impl Cause {
    pub fn new(reason: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            reason: reason.to_string(),
            message: message.into(),
            field: field.into(),
        }
    }

    /// `field: message`, as kube-apiserver joins them in the Status message.
    pub fn display(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// An error answered to a client as a `Status` object.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Headers such as `Retry-After`; rarely set.
    pub retry_after: Option<u32>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} {})", self.message, self.code, self.reason)
    }
}

impl std::error::Error for ApiError {}

pub type ApiResult<T> = Result<T, ApiError>;

fn details(rt: &ResourceType, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": rt.plural });
    if !rt.group.is_empty() {
        d["group"] = json!(rt.group);
    }
    d
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// An error about the object `name`, named in the message as
    /// kube-apiserver does (`sessions.medforge.dev "x" <what>`), with details
    /// pointing at it.
    fn about(rt: &ResourceType, name: &str, code: u16, reason: &'static str, what: &str) -> Self {
        let message = format!("{} \"{}\" {what}", rt.group_resource(), name);
        ApiError::new(code, reason, message).with_details(details(rt, name))
    }

    /// 404 for an object that does not exist: `sessions.medforge.dev "x" not found`.
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        Self::about(rt, name, 404, "NotFound", "not found")
    }

    /// 404 for a namespace that does not exist (creating into it).
    pub fn namespace_not_found(name: &str) -> Self {
        ApiError::new(404, "NotFound", format!("namespaces \"{name}\" not found"))
            .with_details(json!({ "name": name, "kind": "namespaces" }))
    }

    /// 404 for a path the server does not serve (unknown group, version or resource).
    pub fn path_not_found() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        Self::about(rt, name, 409, "AlreadyExists", "already exists")
    }

    /// 409 for a write with a stale `resourceVersion` (or a failed precondition).
    pub fn conflict(rt: &ResourceType, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rt.group_resource(),
                name,
                why
            ),
        )
        .with_details(details(rt, name))
    }

    /// 409 when every retry of a write lost to another writer.
    pub fn modified_too_often(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object is being modified too often; try again",
        )
    }

    pub fn stale(rt: &ResourceType, name: &str) -> Self {
        Self::conflict(
            rt,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for server-side apply conflicts, with one cause per conflicting field.
    pub fn apply_conflict(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        let n = causes.len();
        let list: Vec<String> = causes.iter().map(|c| c.message.clone()).collect();
        let message = if n == 1 {
            format!("Apply failed with 1 conflict: {}", list[0])
        } else {
            format!("Apply failed with {n} conflicts: {}", list.join("\n"))
        };
        let mut d = details(rt, name);
        d["causes"] = causes_json(&causes);
        ApiError::new(409, "Conflict", message).with_details(d)
    }

    /// 422 with causes: `Session.medforge.dev "x" is invalid: spec.gpus: Invalid value: …`.
    pub fn invalid(rt: &ResourceType, name: &str, causes: Vec<Cause>) -> Self {
        ApiError::invalid_kind(&rt.group, &rt.kind, name, causes)
    }

    /// `422 Invalid` for any group and kind, as kube-apiserver's
    /// `errors.NewInvalid`: also for option objects such as
    /// `PatchOptions.meta.k8s.io`, which are no served resource.
    pub fn invalid_kind(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let joined = if causes.len() == 1 {
            causes[0].display()
        } else {
            format!(
                "[{}]",
                causes
                    .iter()
                    .map(Cause::display)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let mut d = json!({ "name": name, "kind": kind });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        d["causes"] = causes_json(&causes);
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        ApiError::new(
            422,
            "Invalid",
            format!("{qualified} \"{name}\" is invalid: {joined}"),
        )
        .with_details(d)
    }

    /// `422 Invalid` for `PatchOptions.meta.k8s.io ""`: a bad option of a
    /// patch request (kube-apiserver's `ValidatePatchOptions`).
    pub fn invalid_patch_options(cause: Cause) -> Self {
        ApiError::invalid_kind("meta.k8s.io", "PatchOptions", "", vec![cause])
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        ApiError::new(401, "Unauthorized", "Unauthorized").with_details(json!({}))
    }

    pub fn forbidden(rt: &ResourceType, name: &str, why: &str) -> Self {
        Self::about(rt, name, 403, "Forbidden", &format!("is forbidden: {why}"))
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message).with_details(json!({}))
    }

    /// 405 for a verb the requested resource does not serve.
    pub fn method_not_allowed_here() -> Self {
        ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn not_acceptable(message: impl Into<String>) -> Self {
        ApiError::new(406, "NotAcceptable", message)
    }

    /// 410 `Expired`: a watch or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    pub fn unsupported_media_type(message: impl Into<String>) -> Self {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
        .with_details(json!({ "causes": [{ "message": message }] }))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

fn causes_json(causes: &[Cause]) -> Value {
    Value::Array(
        causes
            .iter()
            .map(|c| {
                let mut v = json!({ "reason": c.reason, "message": c.message });
                if !c.field.is_empty() {
                    v["field"] = json!(c.field);
                }
                v
            })
            .collect(),
    )
}

/// A failed read of the store (a list at an old or future resource version).
pub fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Expired { .. } => ApiError::expired(format!(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. ({e})"
        )),
        ReadError::TooLarge { .. } => {
            let mut err = ApiError::new(504, "Timeout", e.to_string());
            err.details = Some(
                json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": 1 }),
            );
            err
        }
    }
}

/// A failed write of the object `name`.
pub fn write_error(rt: &ResourceType, name: &str, e: WriteError) -> ApiError {
    match e {
        WriteError::AlreadyExists => ApiError::already_exists(rt, name),
        WriteError::NotFound => ApiError::not_found(rt, name),
        WriteError::Conflict => ApiError::stale(rt, name),
        WriteError::Storage(m) => ApiError::internal(m),
        WriteError::Closed => ApiError::unavailable("the server is shutting down"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = (
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON value shown in an error message the way kube-apiserver shows it:
/// strings quoted, numbers and booleans bare, anything else as JSON.
pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Null => "null".to_string(),
        other => other.to_string(),
    }
}
