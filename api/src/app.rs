//! The whole service as one router: every route behind the same middleware.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use medforge_crds::Exposure;

use crate::error::ApiError;
use crate::state::AppState;
use crate::{
    accounts, admin, auth, events, health, openapi, origin, packs, proxy, request, sessions,
    snapshots,
};

/// The whole service as a router: every route, the origin check, the body limit,
/// request ids, the request log and problem rendering.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// [`app`] with extra routes behind the same middleware (benchmarks compare a
/// trivial handler with `session-proxy` this way).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(extra)
        .merge(health::router())
        .merge(openapi::router())
        .merge(auth::router())
        .merge(proxy::router())
        .merge(events::router())
        .merge(admin::router())
        .merge(accounts::router())
        .merge(snapshots::router())
        .merge(packs::router())
        .nest("/api/v2/external", sessions::router(Exposure::External))
        .nest("/api/v2/internal", sessions::router(Exposure::Internal))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(state.config().body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            Arc::new(state.origins().clone()),
            origin::check_origin,
        ))
        .layer(middleware::from_fn(request::request_context))
        .with_state(state)
}
