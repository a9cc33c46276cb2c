//! Who may see a snapshot, and which snapshot a new session may be
//! restored from.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ApiError;
use crate::snapshot_index::IndexedSnapshot;
use crate::state::AppState;
use crate::tokens::Principal;

use super::view::snapshot_state;

/// How long a write waits for the snapshot watch to bring it back, so that
/// the caller's next read sees it.
pub const WRITE_VISIBLE_WAIT: Duration = Duration::from_secs(2);

/// The snapshot `id` when the caller may see it (its owner, or an admin);
/// 404 otherwise: another user's snapshot is indistinguishable from a
/// missing one.
pub fn visible(
    state: &AppState,
    principal: &Principal,
    id: &str,
) -> Result<Arc<IndexedSnapshot>, ApiError> {
    state
        .snapshots()
        .get(id)
        .filter(|e| principal.is_admin() || e.owner == principal.user.id)
        .ok_or_else(|| ApiError::NotFound("Snapshot not found.".into()))
}

/// Checks that a new session of `owner` may be restored from the snapshot
/// `id` that `principal` named as `restore_from`: it exists and the caller
/// may see it (else 404 `snapshot_not_found`), it is the new session's
/// owner's own (else 409 `snapshot_not_owned`: an admin sees every
/// snapshot, but the sessions an admin creates are the admin's, and a
/// session is restored only from its owner's snapshots) and ready (else 409
/// `snapshot_not_ready`).
pub fn check_restore(
    state: &AppState,
    principal: &Principal,
    owner: &str,
    id: &str,
) -> Result<Arc<IndexedSnapshot>, ApiError> {
    let entry = visible(state, principal, id).map_err(|_| ApiError::NotFoundAs {
        code: "snapshot_not_found",
        detail: format!(
            "restore_from: no snapshot `{id}` of yours exists; list yours with GET /api/v2/snapshots."
        ),
    })?;
    if entry.owner != owner {
        return Err(ApiError::conflict(
            "snapshot_not_owned",
            format!(
                "restore_from: snapshot `{id}` is another user's; a session is restored only from \
                 its owner's own snapshots, so its owner restores it."
            ),
        ));
    }
    if !entry.record.is_ready() {
        let (state, message) = snapshot_state(&entry.record);
        return Err(ApiError::conflict(
            "snapshot_not_ready",
            format!(
                "restore_from: snapshot `{id}` is {}{}; only a ready snapshot can be restored.",
                state.as_str(),
                message.map(|m| format!(" ({m})")).unwrap_or_default()
            ),
        ));
    }
    Ok(entry)
}
