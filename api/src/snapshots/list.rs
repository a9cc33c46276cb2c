//! The snapshot list: its filter, pages and cursors.

use serde::Deserialize;

use crate::error::ApiError;
use crate::paging;
use crate::reply::Reply;
use crate::snapshot_index::IndexedSnapshot;
use crate::state::AppState;
use crate::validate;

use super::view::{SnapshotView, view};

/// Query of `GET /api/v2/snapshots`.
#[derive(Debug, Default, Deserialize)]
pub struct SnapshotListQuery {
    /// One session's snapshots (its id).
    pub session: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `meta.next_cursor`.
    pub cursor: Option<String>,
}

/// Lists the snapshots `filter` accepts (and the query's session's), paginated.
pub(super) fn list_snapshots(
    state: &AppState,
    query: &SnapshotListQuery,
    filter: impl Fn(&IndexedSnapshot) -> bool,
) -> Result<Reply<Vec<SnapshotView>>, ApiError> {
    let mut errors = Vec::new();
    let limit = paging::limit_param(query.limit, &mut errors);
    if let Some(session) = query.session.as_deref()
        && let Err(e) = validate::KUBE_NAME.check("session", session)
    {
        errors.push(e);
    }
    let cursor = paging::cursor_param(
        &validate::SNAPSHOT_CURSOR,
        query.cursor.as_deref(),
        &mut errors,
    );
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let session = query.session.as_deref();
    let all = state
        .snapshots()
        .list(|e| filter(e) && session.is_none_or(|s| e.record.spec.session.name == s));
    let (page, meta) = paging::page(&all, cursor.as_ref(), limit);
    let data = page.iter().map(|e| view(&e.record)).collect();
    Ok(Reply::ok(data).page(meta))
}
