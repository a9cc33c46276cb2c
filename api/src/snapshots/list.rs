//! The snapshot list: its filter, pages and cursors.

use std::sync::Arc;

use serde::Deserialize;

use crate::error::{ApiError, FieldError};
use crate::reply::{Page, Reply};
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

/// A position in the newest-first order: `<time taken (or made) in ns>_<id>`.
fn encode_cursor(entry: &IndexedSnapshot) -> String {
    format!("{}_{}", entry.sort_key, entry.name)
}

pub(super) fn decode_cursor(cursor: &str) -> Option<(i128, String)> {
    if !validate::SNAPSHOT_CURSOR.matches(cursor) {
        return None;
    }
    let (ts, name) = cursor.split_once('_')?;
    Some((ts.parse().ok()?, name.to_owned()))
}

/// Lists the snapshots `filter` accepts (and the query's session's), paginated.
pub(super) fn list_snapshots(
    state: &AppState,
    query: &SnapshotListQuery,
    filter: impl Fn(&IndexedSnapshot) -> bool,
) -> Result<Reply<Vec<SnapshotView>>, ApiError> {
    let mut errors = Vec::new();
    let limit = query.limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(validate::limit_error());
    }
    if let Some(session) = query.session.as_deref()
        && let Err(e) = validate::KUBE_NAME.check("session", session)
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
    let session = query.session.as_deref();
    let all = state
        .snapshots()
        .list(|e| filter(e) && session.is_none_or(|s| e.record.spec.session.name == s));
    let start = match &cursor {
        None => 0,
        Some((ts, name)) => all
            .iter()
            .position(|e| {
                e.sort_key < *ts || (e.sort_key == *ts && e.name.as_str() > name.as_str())
            })
            .unwrap_or(all.len()),
    };
    let page: Vec<&Arc<IndexedSnapshot>> = all.iter().skip(start).take(limit as usize).collect();
    let has_more = start + page.len() < all.len();
    let next_cursor = if has_more {
        page.last().map(|e| encode_cursor(e))
    } else {
        None
    };
    let data = page.iter().map(|e| view(&e.record)).collect();
    Ok(Reply::ok(data).page(Page {
        limit: Some(limit),
        next_cursor,
        has_more: Some(has_more),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cursor_the_pattern_admits_is_a_position() {
        use proptest::prelude::*;
        let inner = validate::SNAPSHOT_CURSOR
            .pattern
            .unwrap()
            .strip_prefix('^')
            .unwrap()
            .strip_suffix('$')
            .unwrap();
        proptest!(|(c in proptest::string::string_regex(inner).unwrap())| {
            prop_assert!(c.is_empty() || decode_cursor(&c).is_some(), "{c}");
        });
        assert!(decode_cursor("!!").is_none());
        assert_eq!(
            decode_cursor("17_web-manual-1"),
            Some((17, "web-manual-1".to_owned()))
        );
    }
}
