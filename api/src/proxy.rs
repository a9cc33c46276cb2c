//! `GET /api/v2/auth/session-proxy`: Caddy's `forward_auth` for session hosts.
//!
//! | status | when |
//! |---|---|
//! | 200 + `X-Upstream` | the cookie's user owns the session (or is an admin) and it is routable |
//! | 401 | no valid login cookie |
//! | 403 | authenticated, neither owner nor admin |
//! | 404 | not a session host, unknown slug, wrong domain for the session, stopped or being deleted (desired state), or not running |
//!
//! Everything comes from memory: the host parser, the token cache and the
//! watch-fed index; no database query and no write per request (activity is an
//! atomic store, written back in batches). `X-Upstream` comes only from the
//! Session's status: whatever the client sent under that name is never read.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::auth::{cookie_values, first_principal};
use crate::clock::now_secs;
use crate::error::{ApiError, Problem};
use crate::state::AppState;
use crate::tokens::Principal;

/// The header the answer names the upstream in (Caddy copies it).
pub static X_UPSTREAM: HeaderName = HeaderName::from_static("x-upstream");

/// The route of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v2/auth/session-proxy", get(session_proxy))
}

fn not_found(detail: &'static str) -> Response {
    Problem::new(StatusCode::NOT_FOUND, "not_found", detail).into_response()
}

async fn cookie_principal(
    state: &AppState,
    headers: &HeaderMap,
    now: i64,
) -> Result<Option<Arc<Principal>>, ApiError> {
    first_principal(
        state,
        cookie_values(headers, &state.config().cookie.name),
        now,
    )
    .await
}

async fn session_proxy(State(state): State<AppState>, request: Request) -> Response {
    // The request itself rather than a `HeaderMap` extractor, which would copy the headers.
    let headers = request.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let Some(target) = state.hosts().parse(host) else {
        return not_found("Not a session host.");
    };
    let now = now_secs();
    let principal = match cookie_principal(&state, headers, now).await {
        Ok(Some(p)) => p,
        Ok(None) => return ApiError::Unauthenticated.into_response(),
        Err(e) => return e.into_response(),
    };
    let Some(session) = state.index().by_slug(target.slug()) else {
        return not_found("Session not found.");
    };
    if session.exposure != target.exposure {
        return not_found("Session not found.");
    }
    if session.owner != principal.user.id && !principal.is_admin() {
        return ApiError::forbidden("session_access_denied", "Session access denied.")
            .into_response();
    }
    let Some(upstream) = &session.upstream else {
        return not_found("Session is not running.");
    };
    session.touch(now);
    let mut response = StatusCode::OK.into_response();
    let h = response.headers_mut();
    h.insert(X_UPSTREAM.clone(), upstream.clone());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
