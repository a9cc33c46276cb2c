//! The watch-fed, in-memory index of `WorkspaceSnapshot` records: every read
//! of the snapshot routes, the snapshots a session view lists, and the
//! snapshot events of the live streams come from here, as the session
//! routes' come from [`crate::index`].

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use medforge_crds::WorkspaceSnapshot;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::backend::{SessionBackend, WatchEvent};

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

impl IndexedSnapshot {
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

    /// Whether the record is being deleted (a finalizer still holds it).
    pub fn is_deleting(&self) -> bool {
        self.record.metadata.deletion_timestamp.is_some()
    }
}

/// A change of the index, for live event streams.
#[derive(Clone, Debug)]
pub enum SnapshotChange {
    /// A record was created (`before` is `None`) or changed.
    Applied {
        /// The record as the index held it before, if it did.
        before: Option<Arc<IndexedSnapshot>>,
        /// The record now.
        after: Arc<IndexedSnapshot>,
    },
    /// A record was deleted.
    Deleted(Arc<IndexedSnapshot>),
    /// The whole index was relisted.
    Reset,
}

#[derive(Default)]
struct Maps {
    by_name: HashMap<String, Arc<IndexedSnapshot>>,
    /// Session uid → the names of its records.
    by_session: HashMap<String, BTreeSet<String>>,
}

impl Maps {
    fn insert(&mut self, entry: Arc<IndexedSnapshot>) -> Option<Arc<IndexedSnapshot>> {
        self.by_session
            .entry(entry.session_uid.clone())
            .or_default()
            .insert(entry.name.clone());
        let before = self.by_name.insert(entry.name.clone(), entry.clone());
        if let Some(prev) = &before
            && prev.session_uid != entry.session_uid
        {
            self.unlink(&prev.session_uid, &prev.name);
        }
        before
    }

    fn remove(&mut self, name: &str) -> Option<Arc<IndexedSnapshot>> {
        let removed = self.by_name.remove(name)?;
        self.unlink(&removed.session_uid, name);
        Some(removed)
    }

    fn unlink(&mut self, session_uid: &str, name: &str) {
        if let Some(names) = self.by_session.get_mut(session_uid) {
            names.remove(name);
            if names.is_empty() {
                self.by_session.remove(session_uid);
            }
        }
    }
}

/// The index. Shared behind an `Arc`.
pub struct SnapshotIndex {
    maps: RwLock<Maps>,
    version: watch::Sender<u64>,
    changes: broadcast::Sender<SnapshotChange>,
    synced: AtomicBool,
}

impl Default for SnapshotIndex {
    fn default() -> Self {
        Self::new()
    }
}

/// Newest first, then by name.
fn newest_first(out: &mut [Arc<IndexedSnapshot>]) {
    out.sort_by(|a, b| {
        b.sort_key
            .cmp(&a.sort_key)
            .then_with(|| a.name.cmp(&b.name))
    });
}

impl SnapshotIndex {
    /// An empty, unsynced index.
    pub fn new() -> Self {
        Self {
            maps: RwLock::new(Maps::default()),
            version: watch::channel(0).0,
            changes: broadcast::channel(1024).0,
            synced: AtomicBool::new(false),
        }
    }

    /// Whether the first full listing has arrived.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Feeds the index from the backend's watch until the stream ends.
    pub async fn run(self: Arc<Self>, backend: Arc<dyn SessionBackend>) {
        let mut stream = backend.watch_snapshots();
        let mut listing: Option<Vec<WorkspaceSnapshot>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Init) => listing = Some(Vec::new()),
                Ok(WatchEvent::InitApply(s)) => listing.get_or_insert_with(Vec::new).push(s),
                Ok(WatchEvent::InitDone) => {
                    self.reset(listing.take().unwrap_or_default());
                    self.synced.store(true, Ordering::Release);
                }
                Ok(WatchEvent::Apply(s)) => self.apply(s),
                Ok(WatchEvent::Delete(s)) => self.remove(s.metadata.name.as_deref().unwrap_or("")),
                Err(err) => tracing::warn!(error = %err, "snapshot watch failed; it retries"),
            }
        }
        self.synced.store(false, Ordering::Release);
        tracing::error!("snapshot watch ended");
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.maps.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Replaces the whole content (a relist).
    pub fn reset(&self, records: Vec<WorkspaceSnapshot>) {
        {
            let mut maps = self.write();
            *maps = Maps::default();
            for record in records {
                maps.insert(Arc::new(IndexedSnapshot::new(record)));
            }
        }
        self.bump();
        let _ = self.changes.send(SnapshotChange::Reset);
    }

    /// Adds or replaces one record.
    pub fn apply(&self, record: WorkspaceSnapshot) {
        let after = Arc::new(IndexedSnapshot::new(record));
        let before = self.write().insert(after.clone());
        self.bump();
        let _ = self.changes.send(SnapshotChange::Applied { before, after });
    }

    /// Removes one record.
    pub fn remove(&self, name: &str) {
        let removed = self.write().remove(name);
        self.bump();
        if let Some(entry) = removed {
            let _ = self.changes.send(SnapshotChange::Deleted(entry));
        }
    }

    /// A record by name (id).
    pub fn get(&self, name: &str) -> Option<Arc<IndexedSnapshot>> {
        self.read().by_name.get(name).cloned()
    }

    /// The records a filter accepts, newest first (then by name).
    pub fn list(&self, filter: impl Fn(&IndexedSnapshot) -> bool) -> Vec<Arc<IndexedSnapshot>> {
        let mut out: Vec<Arc<IndexedSnapshot>> = self
            .read()
            .by_name
            .values()
            .filter(|e| filter(e))
            .cloned()
            .collect();
        newest_first(&mut out);
        out
    }

    /// The records of one Session (by uid), newest first.
    pub fn of_session(&self, session_uid: &str) -> Vec<Arc<IndexedSnapshot>> {
        let maps = self.read();
        let mut out: Vec<Arc<IndexedSnapshot>> = maps
            .by_session
            .get(session_uid)
            .into_iter()
            .flatten()
            .filter_map(|name| maps.by_name.get(name).cloned())
            .collect();
        drop(maps);
        newest_first(&mut out);
        out
    }

    /// Number of indexed records.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes to changes (for live events).
    pub fn subscribe(&self) -> broadcast::Receiver<SnapshotChange> {
        self.changes.subscribe()
    }

    /// Waits until `check` returns `Some` for the record `name` (which may
    /// be absent), or the deadline.
    pub async fn wait_for<T>(
        &self,
        name: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Arc<IndexedSnapshot>>) -> Option<T>,
    ) -> Option<T> {
        let mut rx = self.version.subscribe();
        loop {
            if let Some(done) = check(self.get(name).as_ref()) {
                return Some(done);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return None,
            }
        }
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
            !index.read().by_session.contains_key("s1"),
            "no empty sets kept"
        );
        assert_eq!(index.len(), 1);
    }
}
