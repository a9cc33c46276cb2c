//! `/healthz` (the process answers) and `/readyz` (database and control plane
//! answer, the session and snapshot watches have synced). Both stay out of the request log.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::error::ApiError;
use crate::reply::Reply;
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The body of `/healthz`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Health {
    /// `ok`.
    #[schemars(extend("enum" = ["ok"]))]
    pub status: &'static str,
}

async fn healthz() -> Reply<Health> {
    Reply::ok(Health { status: "ok" })
}

/// The body of `/readyz` when ready.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Readiness {
    /// `ready`.
    #[schemars(extend("enum" = ["ready"]))]
    pub status: &'static str,
    /// The database answers.
    pub database: bool,
    /// The control plane answers.
    pub control_plane: bool,
    /// The session watch has listed every Session.
    pub watch_synced: bool,
    /// The snapshot watch has listed every WorkspaceSnapshot.
    pub snapshot_watch_synced: bool,
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

async fn readyz(State(state): State<AppState>) -> Response {
    let (database, control_plane) = tokio::join!(
        tokio::time::timeout(CHECK_TIMEOUT, state.db().ping()),
        tokio::time::timeout(CHECK_TIMEOUT, state.backend().ping()),
    );
    let database = matches!(database, Ok(Ok(())));
    let control_plane = matches!(control_plane, Ok(Ok(())));
    let watch_synced = state.index().is_synced();
    let snapshot_watch_synced = state.snapshots().is_synced();
    if database && control_plane && watch_synced && snapshot_watch_synced {
        return Reply::ok(Readiness {
            status: "ready",
            database,
            control_plane,
            watch_synced,
            snapshot_watch_synced,
        })
        .into_response();
    }
    let failing: Vec<&str> = [
        (!database).then_some("database"),
        (!control_plane).then_some("control plane"),
        (!watch_synced).then_some("session watch not synced"),
        (!snapshot_watch_synced).then_some("snapshot watch not synced"),
    ]
    .into_iter()
    .flatten()
    .collect();
    ApiError::Unavailable {
        code: "not_ready",
        detail: format!("Not ready: {}.", failing.join(", ")),
        retry_after_secs: Some(1),
    }
    .into_response()
}
