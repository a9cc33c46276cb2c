//! The one error type of the API and its RFC 9457 `application/problem+json` rendering.
//!
//! Every error a handler returns, every extractor rejection and every bare error
//! response axum produces on its own (405, unknown routes) leaves the service as a
//! problem document with `type, title, status, detail, instance, code, request_id`
//! and, for validation errors, `errors[]` naming the fields.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::context::RequestContext;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid field of a request: `field` is a dotted path into the body or a query parameter name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct FieldError {
    /// The field, as a dotted path (`resources.cpu`) or a query parameter (`limit`).
    pub field: String,
    /// What is wrong with it, and what would be accepted.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Everything that can go wrong in a request, mapped to a status and a stable `code`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or the query failed validation (422).
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// The body is not JSON at all (400).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The body is not declared as JSON (415).
    #[error("the body must be sent as application/json")]
    UnsupportedMediaType,
    /// The body is larger than the configured limit (413).
    #[error("the body is too large")]
    PayloadTooLarge,
    /// No valid login token came with the request (401).
    #[error("authentication required")]
    Unauthenticated,
    /// Email or password is wrong (401).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Authenticated, but not allowed (403).
    #[error("{detail}")]
    Forbidden {
        /// Stable machine-readable code.
        code: &'static str,
        /// What was refused.
        detail: String,
    },
    /// A state-changing request came from an origin that is not allowed (403).
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The resource does not exist, or the caller may not know that it does (404).
    #[error("{0}")]
    NotFound(String),
    /// A thing a request names (not in its path) does not exist, or the
    /// caller may not know that it does (404 with its own `code`, such as
    /// `snapshot_not_found`).
    #[error("{detail}")]
    NotFoundAs {
        /// Stable machine-readable code.
        code: &'static str,
        /// What was not found, and what to do.
        detail: String,
    },
    /// No route matches the path (404).
    #[error("no such route")]
    RouteNotFound,
    /// A path parameter that cannot name anything (404 `not_found`, with
    /// `errors[]` naming the parameter and what it must look like).
    #[error("invalid path parameter {}", .0.field)]
    InvalidPathParam(FieldError),
    /// The request conflicts with the current state (409).
    #[error("{detail}")]
    Conflict {
        /// Stable machine-readable code (`no_gpu_available`, `user_limit_reached`, `email_taken`, …).
        code: String,
        /// What conflicted, and what to do.
        detail: String,
    },
    /// Too many attempts from this client (429).
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a new attempt is allowed.
        retry_after_secs: u64,
    },
    /// Too many wrong passwords for this account lately (429).
    #[error("too many failed logins for this account; retry in {retry_after_secs} s")]
    LoginDelayed {
        /// Seconds until a new attempt is allowed.
        retry_after_secs: u64,
    },
    /// A dependency (database, control plane, scheduler) did not answer (503).
    #[error("{detail}")]
    Unavailable {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is unavailable.
        detail: String,
        /// Seconds after which a retry makes sense.
        retry_after_secs: Option<u64>,
    },
    /// A request refused with a code of its own and `errors[]` naming what
    /// is at fault (400 `invalid_idempotency_key`: a header, not the body).
    #[error("{detail}")]
    Rejected {
        /// The status (400).
        status: StatusCode,
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong, and what to do.
        detail: String,
        /// The fields or headers at fault.
        errors: Vec<FieldError>,
    },
    /// A bug or an unexpected failure (500). The detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A 403 with a code and a detail.
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code,
            detail: detail.into(),
        }
    }

    /// A 409 with a code and a detail.
    pub fn conflict(code: impl Into<String>, detail: impl Into<String>) -> Self {
        ApiError::Conflict {
            code: code.into(),
            detail: detail.into(),
        }
    }

    /// A 422 naming one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }

    /// A 500 whose cause is logged (never sent to the client).
    pub fn internal(err: impl std::fmt::Display) -> Self {
        ApiError::Internal(err.to_string())
    }

    /// The problem document this error renders as.
    pub fn problem(&self) -> Problem {
        match self {
            ApiError::Validation(errors) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "The request is invalid; see errors[] for the fields to fix.",
            )
            .with_errors(errors.clone()),
            ApiError::MalformedJson(why) => Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("The body is not valid JSON: {why}"),
            ),
            ApiError::UnsupportedMediaType => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with `Content-Type: application/json`.",
            ),
            ApiError::PayloadTooLarge => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The body is larger than this API accepts.",
            ),
            ApiError::Unauthenticated => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required: log in first.",
            ),
            ApiError::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "The email or the password is wrong.",
            ),
            ApiError::Forbidden { code, detail } => {
                Problem::new(StatusCode::FORBIDDEN, *code, detail.clone())
            }
            ApiError::OriginNotAllowed => Problem::new(
                StatusCode::FORBIDDEN,
                "origin_not_allowed",
                "This request's Origin is not allowed to change state here.",
            ),
            ApiError::NotFound(detail) => {
                Problem::new(StatusCode::NOT_FOUND, "not_found", detail.clone())
            }
            ApiError::NotFoundAs { code, detail } => {
                Problem::new(StatusCode::NOT_FOUND, *code, detail.clone())
            }
            ApiError::InvalidPathParam(e) => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("Nothing exists at this path: `{}` {}.", e.field, e.message),
            )
            .with_errors(vec![e.clone()]),
            ApiError::RouteNotFound => Problem::new(
                StatusCode::NOT_FOUND,
                "route_not_found",
                "No route matches this path; see /api/v2/openapi.json.",
            ),
            ApiError::Conflict { code, detail } => {
                Problem::new(StatusCode::CONFLICT, code.clone(), detail.clone())
            }
            ApiError::RateLimited { retry_after_secs } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many attempts from this address; retry in {retry_after_secs} s."),
            )
            .with_retry_after(*retry_after_secs),
            ApiError::LoginDelayed { retry_after_secs } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "login_delayed",
                format!("Too many failed logins for this account; retry in {retry_after_secs} s."),
            )
            .with_retry_after(*retry_after_secs),
            ApiError::Unavailable {
                code,
                detail,
                retry_after_secs,
            } => {
                let p = Problem::new(StatusCode::SERVICE_UNAVAILABLE, *code, detail.clone());
                match retry_after_secs {
                    Some(s) => p.with_retry_after(*s),
                    None => p,
                }
            }
            ApiError::Rejected {
                status,
                code,
                detail,
                errors,
            } => Problem::new(*status, *code, detail.clone()).with_errors(errors.clone()),
            ApiError::Internal(_) => Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Something went wrong on our side; the request id identifies it in the logs.",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "internal error");
        }
        self.problem().into_response()
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(err: crate::db::DbError) -> Self {
        ApiError::Unavailable {
            code: "database_unavailable",
            detail: "The user database did not answer; retry shortly.".into(),
            retry_after_secs: Some(1),
        }
        .log_cause(&err)
    }
}

impl From<crate::backend::BackendError> for ApiError {
    fn from(err: crate::backend::BackendError) -> Self {
        use crate::backend::BackendError;
        match err {
            BackendError::NotFound(what) => ApiError::NotFound(format!("{what} not found.")),
            BackendError::Conflict(what) => ApiError::conflict("conflict", what),
            other => ApiError::Unavailable {
                code: "control_plane_unavailable",
                detail: "The control plane did not answer; retry shortly.".into(),
                retry_after_secs: Some(1),
            }
            .log_cause(&other),
        }
    }
}

impl ApiError {
    fn log_cause(self, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency failed");
        self
    }
}

/// An RFC 9457 problem document, before the request context fills in `instance` and `request_id`.
#[derive(Clone, Debug)]
pub struct Problem {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
    /// Invalid fields, for validation errors.
    pub errors: Vec<FieldError>,
    /// `Retry-After` in seconds, for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

/// An RFC 9457 problem document as sent.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(rename = "Problem")]
pub struct ProblemBody<'a> {
    /// `https://medforge.dev/problems/<code>`.
    #[serde(rename = "type")]
    #[schemars(extend("format" = "uri"))]
    pub type_: String,
    /// The status's reason phrase.
    pub title: &'a str,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong, for people.
    pub detail: &'a str,
    /// The request's path.
    pub instance: &'a str,
    /// What went wrong, for programs.
    pub code: &'a str,
    /// The request id (also in `X-Request-Id`).
    pub request_id: &'a str,
    /// The invalid fields (422), or the path parameter that cannot name anything (404).
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    pub errors: &'a [FieldError],
}

impl Problem {
    /// A problem with a status, a code and a detail.
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    /// The generic problem for a bare status (405 from the router, …).
    pub fn for_status(status: StatusCode) -> Self {
        let (code, detail) = match status {
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "This route does not accept this method; see the Allow header.",
            ),
            StatusCode::NOT_FOUND => ("route_not_found", "No route matches this path."),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload_too_large",
                "The body is larger than this API accepts.",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "Send the body as JSON with `Content-Type: application/json`.",
            ),
            s if s.is_server_error() => (
                "internal",
                "Something went wrong on our side; the request id identifies it in the logs.",
            ),
            _ => ("bad_request", "The request could not be handled as sent."),
        };
        Self::new(status, code, detail)
    }

    /// Adds invalid fields.
    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// Adds `Retry-After`.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The problem as JSON bytes for one request.
    pub fn to_json(&self, ctx: &RequestContext) -> Vec<u8> {
        let body = ProblemBody {
            type_: format!("https://medforge.dev/problems/{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            instance: &ctx.path,
            code: &self.code,
            request_id: &ctx.id,
            errors: &self.errors,
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// The response for one request.
    pub fn into_response_with(self, ctx: &RequestContext) -> Response {
        let mut response = (self.status, self.to_json(ctx)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let ctx = RequestContext::current();
        self.into_response_with(&ctx)
    }
}
