//! Cursor pages of the newest-first lists of a [`crate::watch_index`]
//! index (sessions, snapshots): the `limit` and `cursor` parameters, and the
//! page after a cursor with its `meta`.

use std::sync::Arc;

use crate::error::FieldError;
use crate::reply::Page;
use crate::validate::{self, Rule};
use crate::watch_index::Entry;

/// A position in the newest-first order: an entry's sort key and name,
/// written `<sort key>_<name>`. Any string the list's cursor rule admits is
/// one, whether or not a page gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    key: i128,
    name: String,
}

/// The cursor of the position right after `entry`.
fn encode_cursor<E: Entry>(entry: &E) -> String {
    format!("{}_{}", entry.sort_key().max(0), entry.name())
}

impl Cursor {
    /// Whether `entry` comes after this position.
    fn precedes<E: Entry>(&self, entry: &E) -> bool {
        let key = entry.sort_key();
        key < self.key || (key == self.key && entry.name() > self.name.as_str())
    }
}

/// The cursor `cursor` when `rule` admits it.
pub fn decode_cursor(rule: &Rule, cursor: &str) -> Option<Cursor> {
    if !rule.matches(cursor) {
        return None;
    }
    let (key, name) = cursor.split_once('_')?;
    Some(Cursor {
        key: key.parse().ok()?,
        name: name.to_owned(),
    })
}

/// The page size asked for (or the default); out of bounds, an error in
/// `errors`.
pub fn limit_param(limit: Option<u32>, errors: &mut Vec<FieldError>) -> u32 {
    let limit = limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(validate::limit_error());
    }
    limit
}

/// The `cursor` parameter: `None` when absent or empty; one that `rule` does
/// not admit, an error in `errors`.
pub fn cursor_param(
    rule: &Rule,
    cursor: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<Cursor> {
    match cursor {
        None | Some("") => None,
        Some(c) => {
            let decoded = decode_cursor(rule, c);
            if decoded.is_none() {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returns (meta.next_cursor); start again without one",
                ));
            }
            decoded
        }
    }
}

/// The page of `all` (newest first) after `cursor`, at most `limit` long,
/// and its `meta`.
pub fn page<'a, E: Entry>(
    all: &'a [Arc<E>],
    cursor: Option<&Cursor>,
    limit: u32,
) -> (&'a [Arc<E>], Page) {
    let start = cursor.map_or(0, |c| {
        all.iter()
            .position(|e| c.precedes(e.as_ref()))
            .unwrap_or(all.len())
    });
    let rest = &all[start..];
    let page = &rest[..rest.len().min(limit as usize)];
    let has_more = page.len() < rest.len();
    let next_cursor = if has_more {
        page.last().map(|e| encode_cursor(e.as_ref()))
    } else {
        None
    };
    (
        page,
        Page {
            limit: Some(limit),
            next_cursor,
            has_more: Some(has_more),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cursor_the_patterns_admit_is_a_position() {
        use proptest::prelude::*;
        for rule in [validate::SESSION_CURSOR, validate::SNAPSHOT_CURSOR] {
            let inner = rule
                .pattern
                .unwrap()
                .strip_prefix('^')
                .unwrap()
                .strip_suffix('$')
                .unwrap();
            proptest!(|(c in proptest::string::string_regex(inner).unwrap())| {
                prop_assert!(c.is_empty() || decode_cursor(&rule, &c).is_some(), "{c}");
            });
            assert!(decode_cursor(&rule, "!!").is_none());
        }
        assert_eq!(
            decode_cursor(&validate::SNAPSHOT_CURSOR, "17_web-manual-1"),
            Some(Cursor {
                key: 17,
                name: "web-manual-1".to_owned()
            })
        );
    }
}
