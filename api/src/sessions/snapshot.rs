//! `POST …/sessions/{id}/snapshots`: a manual snapshot of a running
//! session's workspace. The api writes a `WorkspaceSnapshot` record with
//! reason `Manual` and no status; the node agent of the session's node takes
//! the ZFS snapshot and marks the record `ReadyToUse`.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use medforge_crds::Exposure;
use tokio::time::Instant;

use super::lifecycle::visible;
use crate::auth::Auth;
use crate::backend::BackendError;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::request::{Param, SessionId};
use crate::snapshots::access::WRITE_VISIBLE_WAIT;
use crate::snapshots::record::{
    MAX_PENDING_MANUAL, is_pending_manual, manual_record, running_workspace,
};
use crate::snapshots::view::{SnapshotReply, view};
use crate::state::AppState;

/// Names tried when a record of the same millisecond exists already.
const NAME_ATTEMPTS: i64 = 3;

/// 202 with the snapshot (`pending`) and `Location: /api/v2/snapshots/{id}`;
/// 409 `session_not_running` unless the session runs on its workspace; 409
/// `too_many_pending_snapshots` while [`MAX_PENDING_MANUAL`] of its manual
/// snapshots wait to be taken.
pub(super) async fn take(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SnapshotReply>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    let session = &entry.session;
    let Some((dataset, node)) = running_workspace(session) else {
        return Err(ApiError::conflict(
            "session_not_running",
            "Only a running session's workspace can be snapshotted; start it first.",
        ));
    };
    let uid = session.metadata.uid.as_deref().unwrap_or_default();
    let pending = state
        .snapshots()
        .of_session(uid)
        .iter()
        .filter(|e| is_pending_manual(&e.record))
        .count();
    if pending >= MAX_PENDING_MANUAL {
        return Err(ApiError::conflict(
            "too_many_pending_snapshots",
            format!(
                "This session has {pending} manual snapshots waiting to be taken (at most \
                 {MAX_PENDING_MANUAL}); ask again once they are ready."
            ),
        ));
    }
    let now_ms = jiff::Timestamp::now().as_millisecond();
    let mut attempt = 0;
    let created = loop {
        let record = manual_record(session, dataset, node, now_ms + attempt);
        match state.backend().create_snapshot(record).await {
            Ok(created) => break created,
            Err(BackendError::Conflict(_)) if attempt + 1 < NAME_ATTEMPTS => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(session = %id, snapshot = %name, user_id = %principal.user.id, "manual snapshot requested");
    // The caller's next read (and the pending count of the next request) sees it.
    let deadline = Instant::now() + WRITE_VISIBLE_WAIT;
    state
        .snapshots()
        .wait_for(&name, deadline, |e| e.map(|_| ()))
        .await;
    let location =
        HeaderValue::from_str(&format!("/api/v2/snapshots/{name}")).map_err(ApiError::internal)?;
    Ok(Reply::accepted(SnapshotReply {
        message: "Snapshot requested; the node agent takes it.".into(),
        snapshot: view(&created),
    })
    .header(header::LOCATION, location))
}
