//! What every response of one request knows about it: its id and path,
//! available to the code that renders problems without being passed down.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName};

/// The `X-Request-Id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What every response of one request needs to know about it.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// The request id, echoed in `X-Request-Id` and in every body.
    pub id: Arc<str>,
    /// The request path without the query (the problem's `instance`; queries may hold tokens).
    pub path: Arc<str>,
}

tokio::task_local! {
    static CURRENT: RequestContext;
}

impl RequestContext {
    /// The context of a request with these headers and path: the caller's
    /// request id when it is short and plain, otherwise a new one.
    pub fn for_request(headers: &HeaderMap, path: &str) -> RequestContext {
        RequestContext {
            id: request_id(headers),
            path: Arc::from(path),
        }
    }

    /// Runs `fut` (the rest of the request) with this context as [`RequestContext::current`].
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The context of the request being handled (a placeholder outside of one).
    pub fn current() -> RequestContext {
        CURRENT
            .try_with(Clone::clone)
            .unwrap_or_else(|_| RequestContext {
                id: Arc::from("unknown"),
                path: Arc::from(""),
            })
    }
}

/// Accepts a caller's request id only when it is short and plain; otherwise makes one.
fn request_id(headers: &HeaderMap) -> Arc<str> {
    if let Some(given) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok())
        && !given.is_empty()
        && given.len() <= 64
        && given
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Arc::from(given);
    }
    // A v4 UUID from the thread-local generator: no system call per request.
    let bytes: [u8; 16] = rand::random();
    Arc::from(
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string(),
    )
}
