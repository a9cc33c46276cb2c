//! The watch-fed, in-memory index of `WorkspaceSnapshot` records: every read
//! of the snapshot routes, the snapshots a session view lists, and the
//! snapshot events of the live streams come from here, as the session
//! routes' come from [`crate::index`]: a [`WatchIndex`] that also maps each
//! Session to its records.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::stream::BoxStream;
use medforge_crds::WorkspaceSnapshot;

use crate::backend::{BackendError, SessionBackend, WatchEvent};
use crate::watch_index::{Change, Entry, Secondary, WatchIndex, newest_first};

/// One record as indexed.
#[derive(Debug)]
pub struct IndexedSnapshot {
    /// The record as last seen.
    pub record: WorkspaceSnapshot,
    /// `metadata.name`: the api's snapshot id.
    pub name: String,
    /// `spec.owner`.
    pub owner: String,
    /// The uid of the Session it was taken of.
    pub session_uid: String,
    /// The order of the lists, newest first: when it was taken, or (while
    /// pending) when the record was made, in nanoseconds.
    pub sort_key: i128,
}

impl Entry for IndexedSnapshot {
    type Object = WorkspaceSnapshot;
    const KIND: &'static str = "snapshot";

    fn watch(
        backend: &dyn SessionBackend,
    ) -> BoxStream<'static, Result<WatchEvent<WorkspaceSnapshot>, BackendError>> {
        backend.watch_snapshots()
    }

    fn new(record: WorkspaceSnapshot) -> Self {
        let taken = record.taken_at().map(|t| t.as_nanosecond());
        let created = record
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_nanosecond());
        Self {
            name: record.metadata.name.clone().unwrap_or_default(),
            owner: record.spec.owner.clone(),
            session_uid: record.spec.session.uid.clone(),
            sort_key: taken.or(created).unwrap_or(0).max(0),
            record,
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn sort_key(&self) -> i128 {
        self.sort_key
    }
}

impl IndexedSnapshot {
    /// Whether the record is being deleted (a finalizer still holds it).
    pub fn is_deleting(&self) -> bool {
        self.record.metadata.deletion_timestamp.is_some()
    }
}

/// A change of the index, for live event streams.
pub type SnapshotChange = Change<IndexedSnapshot>;

/// The index: records by name and by Session. Shared behind an `Arc`.
pub type SnapshotIndex = WatchIndex<IndexedSnapshot, BySession>;

/// Session uid → the names of its records.
#[derive(Default)]
pub struct BySession(HashMap<String, BTreeSet<String>>);

impl BySession {
    fn unlink_name(&mut self, session_uid: &str, name: &str) {
        if let Some(names) = self.0.get_mut(session_uid) {
            names.remove(name);
            if names.is_empty() {
                self.0.remove(session_uid);
            }
        }
    }
}

impl Secondary<IndexedSnapshot> for BySession {
    fn link(&mut self, entry: &Arc<IndexedSnapshot>, before: Option<&Arc<IndexedSnapshot>>) {
        self.0
            .entry(entry.session_uid.clone())
            .or_default()
            .insert(entry.name.clone());
        if let Some(prev) = before
            && prev.session_uid != entry.session_uid
        {
            self.unlink_name(&prev.session_uid, &prev.name);
        }
    }

    fn unlink(&mut self, entry: &IndexedSnapshot) {
        self.unlink_name(&entry.session_uid, &entry.name);
    }
}

impl SnapshotIndex {
    /// The records of one Session (by uid), newest first.
    pub fn of_session(&self, session_uid: &str) -> Vec<Arc<IndexedSnapshot>> {
        let tables = self.read();
        let mut out: Vec<Arc<IndexedSnapshot>> = tables
            .secondary
            .0
            .get(session_uid)
            .into_iter()
            .flatten()
            .filter_map(|name| tables.by_name.get(name).cloned())
            .collect();
        drop(tables);
        newest_first(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use medforge_crds::{SnapshotReason, SnapshotSource, WorkspaceSnapshotSpec};

    fn record(name: &str, session_uid: &str, created_ns: i64) -> WorkspaceSnapshot {
        let mut r = WorkspaceSnapshot::new(
            name,
            WorkspaceSnapshotSpec {
                owner: "u".into(),
                session: SnapshotSource {
                    name: "s".into(),
                    uid: session_uid.into(),
                },
                node: "n".into(),
                snapshot: format!("pool/u/{session_uid}@{name}"),
                reason: SnapshotReason::Manual,
            },
        );
        r.metadata.creation_timestamp = Some(Time(
            jiff::Timestamp::from_nanosecond(created_ns.into()).unwrap(),
        ));
        r
    }

    #[test]
    fn records_are_found_by_session_newest_first_and_forgotten_when_deleted() {
        let index = SnapshotIndex::new();
        index.reset(vec![record("a", "s1", 1), record("b", "s1", 3)]);
        index.apply(record("c", "s2", 2));
        index.apply(record("d", "s1", 2));
        let names = |v: Vec<Arc<IndexedSnapshot>>| -> Vec<String> {
            v.iter().map(|e| e.name.clone()).collect()
        };
        assert_eq!(names(index.of_session("s1")), ["b", "d", "a"]);
        assert_eq!(names(index.list(|_| true)), ["b", "c", "d", "a"]);
        index.remove("b");
        assert_eq!(names(index.of_session("s1")), ["d", "a"]);
        index.remove("a");
        index.remove("d");
        assert!(index.of_session("s1").is_empty());
        assert!(
            !index.read().secondary.0.contains_key("s1"),
            "no empty sets kept"
        );
        assert_eq!(index.len(), 1);
    }
}
