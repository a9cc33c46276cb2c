//! Snapshots of sessions' workspaces: `GET /api/v2/snapshots`,
//! `GET /api/v2/snapshots/{id}`, `DELETE /api/v2/snapshots/{id}`.
//!
//! A snapshot is a `WorkspaceSnapshot` record (its id is the record's name):
//! the node agent writes one for every snapshot it takes (stop, death,
//! before delete), and a client asks for a manual one by writing a record
//! without a status (`POST …/sessions/{id}/snapshots`, in
//! [`crate::sessions`]), which the agent on its node then takes. Reads come
//! from the watch-fed [`crate::snapshot_index`]. Another user's snapshot is
//! a 404, never a 403, so that ids cannot be probed. Deleting a record
//! lets the agent's finalizer destroy the ZFS snapshot: 202 while it works
//! (or while a workspace cloned from it holds it), 204 once gone.

pub mod access;
mod list;
pub mod record;
mod routes;
pub mod view;

use axum::Router;
use axum::routing::get;

pub use self::access::{WRITE_VISIBLE_WAIT, check_restore, visible};
pub use self::list::SnapshotListQuery;
pub use self::view::{SESSION_VIEW_SNAPSHOTS, SnapshotBrief, SnapshotReply, SnapshotView};
use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/snapshots", get(routes::list))
        .route(
            "/api/v2/snapshots/{id}",
            get(routes::get_one).delete(routes::delete_one),
        )
}
