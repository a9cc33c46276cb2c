//! One session's routes: read, stop, start again, and delete (admins).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medforge_crds::{DesiredState, Exposure, SessionCondition, conditions};
use tokio::time::Instant;

use super::create::refusal;
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
pub(super) fn visible(
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

/// What the scheduler made of a request to start again.
enum Resumed {
    Bound(Arc<IndexedSession>),
    Refused { reason: String, message: String },
    Vanished,
}

/// `POST …/sessions/{id}/start`: runs a Stopped or Failed session again on
/// its own workspace, with the same URL. Waits (bounded) for the
/// scheduler, as a create does: bound → 202; refused → the request is
/// withdrawn (the session stays stopped, `state: Stopped`) and 409 says
/// why. A session that runs, or is about to, answers 202 as it is.
pub(super) async fn start(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionReply>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    let reply = |message: &str, entry: &IndexedSession| {
        Reply::accepted(SessionReply {
            message: message.into(),
            session: view_indexed(&state, entry),
        })
    };
    if !entry.phase().is_terminal() {
        if entry.session.spec.state == DesiredState::Running {
            return Ok(reply("Session is already running or starting.", &entry));
        }
        // Still stopping: it starts again once the stop is done.
        let written = state
            .backend()
            .set_state(&id, DesiredState::Running)
            .await?;
        state.index().apply_written(written);
        tracing::info!(session = %id, user_id = %principal.user.id, "start requested while stopping");
        let entry = state.index().get(&id).unwrap_or(entry);
        return Ok(reply(
            "Session is stopping; it starts again once the stop is done.",
            &entry,
        ));
    }
    let asked = if entry.session.wants_resume() {
        entry.session.metadata.generation // asked already: wait for that
    } else {
        let written = state.backend().request_start(&id).await?;
        let generation = written.metadata.generation;
        state.index().apply_written(written);
        generation
    };
    tracing::info!(session = %id, user_id = %principal.user.id, "start requested; waiting for the scheduler");
    let deadline = Instant::now() + state.config().sessions.schedule_timeout;
    let decided = state
        .index()
        .wait_for(&id, deadline, |entry| {
            let Some(entry) = entry else {
                return Some(Resumed::Vanished);
            };
            if !entry.phase().is_terminal() {
                return Some(Resumed::Bound(entry.clone()));
            }
            let refused = entry
                .session
                .condition(SessionCondition::Scheduled)
                .filter(|c| c.status == conditions::status_str(Some(false)))
                .filter(|c| c.observed_generation >= asked)?;
            Some(Resumed::Refused {
                reason: refused.reason.clone(),
                message: refused.message.clone(),
            })
        })
        .await;
    match decided {
        Some(Resumed::Bound(entry)) => Ok(reply("Session starting.", &entry)),
        Some(Resumed::Refused { reason, message }) => {
            withdraw(&state, &id).await;
            tracing::info!(session = %id, reason = %reason, "scheduler refused the start");
            Err(refusal(&reason, &message))
        }
        Some(Resumed::Vanished) => Err(ApiError::conflict(
            "session_deleted",
            "The session was deleted before the scheduler decided.",
        )),
        None => {
            withdraw(&state, &id).await;
            Err(ApiError::Unavailable {
                code: "scheduler_timeout",
                detail: format!(
                    "The scheduler did not decide within {} s; the session stays stopped. Retry shortly.",
                    state.config().sessions.schedule_timeout.as_secs_f64()
                ),
                retry_after_secs: Some(5),
            })
        }
    }
}

/// `POST …/sessions/{id}/keepalive`: counts as activity now, so the idle
/// stop moves to a full idle timeout from now; it is written through at
/// once, not with the next activity flush. The maximum lifetime is not
/// moved: `expires_at` in the answer says when the session stops.
pub(super) async fn keepalive(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionReply>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    if entry.phase() != medforge_crds::SessionPhase::Running
        || entry.session.spec.state != DesiredState::Running
    {
        return Err(ApiError::conflict(
            "session_not_running",
            "Only a running session can be kept alive; start it first.",
        ));
    }
    entry.touch(crate::clock::now_secs());
    crate::activity::flush_activity(&state).await;
    tracing::info!(session = %id, user_id = %principal.user.id, "keepalive");
    Ok(Reply::ok(SessionReply {
        message: "Idle clock reset.".into(),
        session: view_indexed(&state, &entry),
    }))
}

/// A start that could not be carried out is taken back (`state: Stopped`),
/// so the session does not start later by surprise.
async fn withdraw(state: &AppState, id: &str) {
    match state.backend().set_state(id, DesiredState::Stopped).await {
        Ok(written) => state.index().apply_written(written),
        Err(e) => {
            tracing::error!(session = %id, error = %e, "could not withdraw a refused start")
        }
    }
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
