//! The session lists: filters, pages and cursors.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use medforge_crds::{Exposure, SessionPhase};
use serde::Deserialize;

use super::view::{SessionView, phase_name, view_indexed};
use crate::auth::Auth;
use crate::error::{ApiError, FieldError};
use crate::index::IndexedSession;
use crate::reply::{Page, Reply};
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

/// A position in the newest-first order: `<creation time in ns>_<name>`.
/// Any string `SESSION_CURSOR` admits is one, whether or not a page gave it.
fn encode_cursor(entry: &IndexedSession) -> String {
    let ts = entry
        .session
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_nanosecond())
        .max(0);
    format!("{ts}_{}", entry.name)
}

pub(super) fn decode_cursor(cursor: &str) -> Option<(i128, String)> {
    if !validate::SESSION_CURSOR.matches(cursor) {
        return None;
    }
    let (ts, name) = cursor.split_once('_')?;
    Some((ts.parse().ok()?, name.to_owned()))
}

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
    let limit = query.limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(validate::limit_error());
    }
    if let Some(owner) = query.owner.as_deref()
        && let Err(e) = validate::USER_ID.check("owner", owner)
    {
        errors.push(e);
    }
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match decode_cursor(c) {
            Some(c) => Some(c),
            None => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returns (meta.next_cursor); start again without one",
                ));
                None
            }
        },
    };
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
    let start = match &cursor {
        None => 0,
        Some((ts, name)) => all
            .iter()
            .position(|e| {
                let ets = e
                    .session
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_nanosecond());
                ets < *ts || (ets == *ts && e.name.as_str() > name.as_str())
            })
            .unwrap_or(all.len()),
    };
    let page: Vec<&Arc<IndexedSession>> = all.iter().skip(start).take(limit as usize).collect();
    let has_more = start + page.len() < all.len();
    let next_cursor = if has_more {
        page.last().map(|e| encode_cursor(e))
    } else {
        None
    };
    let data = page.iter().map(|e| view_indexed(state, e)).collect();
    Ok(Reply::ok(data).page(Page {
        limit: Some(limit),
        next_cursor,
        has_more: Some(has_more),
    }))
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
