//! The Pack catalogue: `GET /api/v2/packs` (the Packs the caller may use;
//! every Pack for admins, deprecated ones marked) and the admins' writes,
//! `PUT /api/v2/admin/packs/{name}` (create or replace) and
//! `DELETE /api/v2/admin/packs/{name}` (refused while a session that is
//! neither stopped nor failed uses it).
//!
//! A Pack is a cluster-wide `Pack` resource; reads and writes go straight to
//! the control plane (packs are few). Creates are held to the catalogue by
//! [`catalogue::may_start_new`] and [`catalogue::gpu_range`]: a Pack that
//! does not exist, is deprecated or does not offer the session's exposure,
//! and a GPU count outside its range, are 422s.

pub mod body;
pub mod catalogue;
mod routes;
pub mod view;

use axum::Router;
use axum::routing::{get, put};

use crate::state::AppState;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/packs", get(routes::list))
        .route(
            "/api/v2/admin/packs/{name}",
            put(routes::put).delete(routes::delete),
        )
}
