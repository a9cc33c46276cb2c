//! Sessions: `POST/GET /api/v2/{external,internal}/sessions`, `GET …/{id}`,
//! `POST …/{id}/stop`, `POST …/{id}/start`, `POST …/{id}/keepalive`,
//! `POST …/{id}/snapshots` (a manual snapshot), `DELETE …/{id}` (admins).
//!
//! Create writes a `Session` resource and waits, bounded, for the scheduler's
//! decision as the watch reports it: bound → 201; refused (`Scheduled=False`) →
//! the resource is deleted and the caller gets 409 with the reason as `code`;
//! no decision in time → deleted, 503. Reads come from the watch-fed index.

mod body;
mod create;
pub mod idempotency;
mod lifecycle;
mod list;
mod snapshot;
#[cfg(test)]
mod tests;
mod view;

use axum::routing::{get, post};
use axum::{Extension, Router};
use medforge_crds::Exposure;

pub use self::body::{CreateSession, ResourcesBody};
pub use self::create::{
    CreateQuery, Created, OTHER_REFUSAL, SCHEDULER_REFUSALS, create_session, create_session_once,
    new_slug,
};
pub use self::list::{ListQuery, list_sessions};
pub use self::view::{GpuView, SessionReply, SessionView, expiry, view};
use crate::state::AppState;

/// The routes for one exposure, to be nested under `/api/v2/<exposure>`.
pub fn router(exposure: Exposure) -> Router<AppState> {
    Router::new()
        .route("/sessions", post(create::create).get(list::list))
        .route(
            "/sessions/{id}",
            get(lifecycle::get_one).delete(lifecycle::delete_one),
        )
        .route("/sessions/{id}/stop", post(lifecycle::stop))
        .route("/sessions/{id}/start", post(lifecycle::start))
        .route("/sessions/{id}/keepalive", post(lifecycle::keepalive))
        .route("/sessions/{id}/snapshots", post(snapshot::take))
        .layer(Extension(exposure))
}
