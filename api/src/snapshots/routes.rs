//! The snapshot routes: list, read, delete.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::time::Instant;

use super::access::{WRITE_VISIBLE_WAIT, visible};
use super::list::{SnapshotListQuery, list_snapshots};
use super::view::{SnapshotReply, SnapshotView, view};
use crate::auth::Auth;
use crate::backend::SnapshotDeletion;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::request::{Param, Query, SnapshotId};
use crate::state::AppState;

/// `GET /api/v2/snapshots`: the caller's own snapshots (everyone's for
/// admins), newest first, optionally of one session.
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<SnapshotListQuery>,
) -> Result<Reply<Vec<SnapshotView>>, ApiError> {
    list_snapshots(&state, &query, |e| {
        principal.is_admin() || e.owner == principal.user.id
    })
}

/// `GET /api/v2/snapshots/{id}`.
pub(super) async fn get_one(
    State(state): State<AppState>,
    Auth(principal): Auth,
    id: Param<SnapshotId>,
) -> Result<Reply<SnapshotView>, ApiError> {
    let entry = visible(&state, &principal, id.as_str())?;
    Ok(Reply::ok(view(&entry.record)))
}

/// `DELETE /api/v2/snapshots/{id}`: 204 when the record went at once; 202
/// with the snapshot (`deleting`) while the node agent's finalizer destroys
/// the ZFS snapshot, or waits for a workspace cloned from it. Again: the same.
pub(super) async fn delete_one(
    State(state): State<AppState>,
    Auth(principal): Auth,
    id: Param<SnapshotId>,
) -> Result<Response, ApiError> {
    let id = id.value;
    visible(&state, &principal, &id)?;
    let deleted = state.backend().delete_snapshot(&id).await?;
    tracing::info!(snapshot = %id, user_id = %principal.user.id, "snapshot deletion requested");
    let deadline = Instant::now() + WRITE_VISIBLE_WAIT;
    match deleted {
        SnapshotDeletion::Missing => Err(ApiError::NotFound("Snapshot not found.".into())),
        SnapshotDeletion::Gone => {
            // The caller's next read misses it too.
            state
                .snapshots()
                .wait_for(&id, deadline, |e| e.is_none().then_some(()))
                .await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        SnapshotDeletion::Held(record) => {
            state
                .snapshots()
                .wait_for(&id, deadline, |e| {
                    e.is_none_or(|e| e.is_deleting()).then_some(())
                })
                .await;
            Ok(Reply::accepted(SnapshotReply {
                message: "Snapshot deletion requested; the node agent destroys it.".into(),
                snapshot: view(&record),
            })
            .into_response())
        }
    }
}
