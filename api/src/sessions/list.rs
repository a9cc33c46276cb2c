//! The session lists: filters, pages and cursors.

use axum::Extension;
use axum::extract::State;
use medforge_crds::{Exposure, SessionPhase};
use serde::Deserialize;

use super::view::{SessionView, phase_name, view_indexed};
use crate::auth::Auth;
use crate::error::{ApiError, FieldError};
use crate::index::IndexedSession;
use crate::paging;
use crate::reply::Reply;
use crate::request::Query;
use crate::state::AppState;
use crate::validate;

/// Query of the list routes.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// A phase (`running`, `stopped`, …) or `active` (not stopped or failed).
    pub state: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `meta.next_cursor`.
    pub cursor: Option<String>,
    /// Admins only: one owner's sessions.
    pub owner: Option<String>,
}

const PHASES: [SessionPhase; 7] = [
    SessionPhase::Pending,
    SessionPhase::Scheduled,
    SessionPhase::Starting,
    SessionPhase::Running,
    SessionPhase::Stopping,
    SessionPhase::Stopped,
    SessionPhase::Failed,
];

/// Lists the sessions `filter` accepts, paginated per `query`.
pub fn list_sessions(
    state: &AppState,
    query: &ListQuery,
    filter: impl Fn(&IndexedSession) -> bool,
) -> Result<Reply<Vec<SessionView>>, ApiError> {
    let mut errors = Vec::new();
    let phase_filter: Option<Option<SessionPhase>> = match query.state.as_deref() {
        None => None,
        Some("active") => Some(None),
        Some(s) => match PHASES.iter().find(|p| phase_name(**p) == s) {
            Some(p) => Some(Some(*p)),
            None => {
                errors.push(FieldError::new(
                    "state",
                    format!("must be one of {}", validate::LIST_STATES.join(", ")),
                ));
                None
            }
        },
    };
    let limit = paging::limit_param(query.limit, &mut errors);
    if let Some(owner) = query.owner.as_deref()
        && let Err(e) = validate::USER_ID.check("owner", owner)
    {
        errors.push(e);
    }
    let cursor = paging::cursor_param(
        &validate::SESSION_CURSOR,
        query.cursor.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let all = state.index().list(|e| {
        !e.is_deleting()
            && filter(e)
            && match phase_filter {
                None => true,
                Some(None) => !e.phase().is_terminal(),
                Some(Some(p)) => e.phase() == p,
            }
    });
    let (page, meta) = paging::page(&all, cursor.as_ref(), limit);
    let data = page.iter().map(|e| view_indexed(state, e)).collect();
    Ok(Reply::ok(data).page(meta))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Reply<Vec<SessionView>>, ApiError> {
    if query.owner.is_some() && !principal.is_admin() {
        return Err(ApiError::invalid(
            "owner",
            "only admins may filter by owner",
        ));
    }
    let owner = query.owner.clone();
    list_sessions(&state, &query, |e| {
        e.exposure == exposure
            && (principal.is_admin() || e.owner == principal.user.id)
            && owner.as_deref().is_none_or(|o| e.owner == o)
    })
}
