//! One session's routes: read, stop, and delete (admins).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medforge_crds::{DesiredState, Exposure};

use super::view::{SessionReply, SessionView, view, view_indexed};
use crate::auth::{Admin, Auth};
use crate::error::ApiError;
use crate::index::IndexedSession;
use crate::reply::Reply;
use crate::request::{Param, SessionId};
use crate::state::AppState;
use crate::tokens::Principal;

/// The session `id` when the caller may see it on this exposure's routes; 404 otherwise
/// (another user's session is indistinguishable from a missing one, and a session
/// being deleted is gone as far as the api is concerned).
fn visible(
    state: &AppState,
    principal: &Principal,
    exposure: Option<Exposure>,
    id: &str,
) -> Result<Arc<IndexedSession>, ApiError> {
    state
        .index()
        .get(id)
        .filter(|e| !e.is_deleting())
        .filter(|e| exposure.is_none_or(|x| e.exposure == x))
        .filter(|e| principal.is_admin() || e.owner == principal.user.id)
        .ok_or_else(|| ApiError::NotFound("Session not found.".into()))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionView>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    Ok(Reply::ok(view_indexed(&state, &entry)))
}

pub(super) async fn stop(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionReply>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    let terminal = entry.phase().is_terminal();
    let session = if entry.session.spec.state == DesiredState::Stopped {
        entry.session.clone()
    } else {
        let written = state
            .backend()
            .set_state(&id, DesiredState::Stopped)
            .await?;
        // forward_auth answers 404 from now on, not once the watch has it.
        state.index().apply_written(written.clone());
        written
    };
    tracing::info!(session = %id, user_id = %principal.user.id, "stop requested");
    let message = if terminal {
        "Session is already terminal."
    } else {
        "Session stop requested."
    };
    Ok(Reply::accepted(SessionReply {
        message: message.into(),
        session: view(&state, &session, entry.last_activity()),
    }))
}

pub(super) async fn delete_one(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Admin(principal): Admin,
    id: Param<SessionId>,
) -> Result<Response, ApiError> {
    let id = id.value;
    visible(&state, &principal, Some(exposure), &id)?;
    if !state.backend().delete(&id).await? {
        return Err(ApiError::NotFound("Session not found.".into()));
    }
    tracing::info!(session = %id, admin = %principal.user.id, "session deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
