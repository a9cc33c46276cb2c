//! What the watch-fed, in-memory indexes share: the Sessions of
//! [`crate::index`] and the `WorkspaceSnapshot` records of
//! [`crate::snapshot_index`]. A [`WatchIndex`] holds its entries by name
//! (and, in its [`Secondary`] maps, however else its kind looks them up),
//! feeds itself from the backend's watch, counts its changes for
//! [`WatchIndex::wait_for`], and broadcasts them to the live event streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Resource;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::backend::{BackendError, SessionBackend, WatchEvent};

/// What an index holds: one object as indexed, with what its reads need
/// precomputed.
pub trait Entry: Send + Sync + Sized + 'static {
    /// The watched object.
    type Object: Resource + Send + 'static;
    /// The object's kind as the logs name it (`session`, `snapshot`).
    const KIND: &'static str;

    /// The backend's watch of the objects.
    fn watch(
        backend: &dyn SessionBackend,
    ) -> BoxStream<'static, Result<WatchEvent<Self::Object>, BackendError>>;

    /// The object as indexed.
    fn new(object: Self::Object) -> Self;

    /// `metadata.name`: the api's id.
    fn name(&self) -> &str;

    /// The lists' order, newest first (then by name).
    fn sort_key(&self) -> i128;

    /// Takes over what is the index's own, not the object's, from the
    /// entry of the same name it replaces.
    fn succeed(&self, _before: &Self) {}
}

/// The maps an index keeps beside the one by name, kept in step with it.
pub trait Secondary<E>: Default + Send + Sync {
    /// `entry` is now held under its name, in place of `before`.
    fn link(&mut self, entry: &Arc<E>, before: Option<&Arc<E>>);

    /// `entry` is no longer held.
    fn unlink(&mut self, entry: &E);
}

/// A change of an index, for live event streams.
#[derive(Debug)]
pub enum Change<E> {
    /// An object was created (`before` is `None`) or changed.
    Applied {
        /// The entry the index held before, if it did.
        before: Option<Arc<E>>,
        /// The entry now.
        after: Arc<E>,
    },
    /// An object was deleted.
    Deleted(Arc<E>),
    /// The whole index was relisted; streams should resend their snapshot.
    Reset,
}

impl<E> Clone for Change<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Applied { before, after } => Self::Applied {
                before: before.clone(),
                after: after.clone(),
            },
            Self::Deleted(entry) => Self::Deleted(entry.clone()),
            Self::Reset => Self::Reset,
        }
    }
}

/// What an index holds, behind its lock.
pub struct Tables<E, S> {
    /// The entries by name.
    pub by_name: HashMap<String, Arc<E>>,
    /// The index's own maps.
    pub secondary: S,
}

impl<E, S: Default> Default for Tables<E, S> {
    fn default() -> Self {
        Self {
            by_name: HashMap::new(),
            secondary: S::default(),
        }
    }
}

impl<E: Entry, S: Secondary<E>> Tables<E, S> {
    fn insert(&mut self, entry: Arc<E>) -> Option<Arc<E>> {
        let before = self.by_name.insert(entry.name().to_owned(), entry.clone());
        if let Some(prev) = &before {
            entry.succeed(prev);
        }
        self.secondary.link(&entry, before.as_ref());
        before
    }

    fn remove(&mut self, name: &str) -> Option<Arc<E>> {
        let removed = self.by_name.remove(name)?;
        self.secondary.unlink(&removed);
        Some(removed)
    }
}

/// An index. Shared behind an `Arc`.
pub struct WatchIndex<E, S> {
    tables: RwLock<Tables<E, S>>,
    version: watch::Sender<u64>,
    changes: broadcast::Sender<Change<E>>,
    synced: AtomicBool,
}

impl<E: Entry, S: Secondary<E>> Default for WatchIndex<E, S> {
    fn default() -> Self {
        Self::new()
    }
}

/// Newest first, then by name.
pub fn newest_first<E: Entry>(entries: &mut [Arc<E>]) {
    entries.sort_by(|a, b| {
        b.sort_key()
            .cmp(&a.sort_key())
            .then_with(|| a.name().cmp(b.name()))
    });
}

impl<E: Entry, S: Secondary<E>> WatchIndex<E, S> {
    /// An empty, unsynced index.
    pub fn new() -> Self {
        Self {
            tables: RwLock::new(Tables::default()),
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
        let mut stream = E::watch(backend.as_ref());
        let mut listing: Option<Vec<E::Object>> = None;
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Init) => listing = Some(Vec::new()),
                Ok(WatchEvent::InitApply(o)) => listing.get_or_insert_with(Vec::new).push(o),
                Ok(WatchEvent::InitDone) => {
                    self.reset(listing.take().unwrap_or_default());
                    self.synced.store(true, Ordering::Release);
                }
                Ok(WatchEvent::Apply(o)) => self.apply(o),
                Ok(WatchEvent::Delete(o)) => {
                    self.remove(o.meta().name.as_deref().unwrap_or_default());
                }
                Err(err) => tracing::warn!(error = %err, "{} watch failed; it retries", E::KIND),
            }
        }
        self.synced.store(false, Ordering::Release);
        tracing::error!("{} watch ended", E::KIND);
    }

    /// The tables, for the reads of one kind of index.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Tables<E, S>> {
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables<E, S>> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a change (for `wait_for`) and sends it to the streams.
    fn changed(&self, change: Option<Change<E>>) {
        self.version.send_modify(|v| *v += 1);
        if let Some(change) = change {
            let _ = self.changes.send(change);
        }
    }

    /// Replaces the whole content (a relist); entries still listed
    /// succeed their former selves.
    pub fn reset(&self, objects: Vec<E::Object>) {
        {
            let mut tables = self.write();
            let old = std::mem::take(&mut *tables);
            for object in objects {
                let entry = Arc::new(E::new(object));
                if let Some(prev) = old.by_name.get(entry.name()) {
                    entry.succeed(prev);
                }
                tables.insert(entry);
            }
        }
        self.changed(Some(Change::Reset));
    }

    /// Adds or replaces one object.
    pub fn apply(&self, object: E::Object) {
        let after = Arc::new(E::new(object));
        let before = self.write().insert(after.clone());
        self.changed(Some(Change::Applied { before, after }));
    }

    /// Removes one object by name.
    pub fn remove(&self, name: &str) {
        let removed = self.write().remove(name);
        self.changed(removed.map(Change::Deleted));
    }

    /// An entry by name (id).
    pub fn get(&self, name: &str) -> Option<Arc<E>> {
        self.read().by_name.get(name).cloned()
    }

    /// The entries a filter accepts, newest first (then by name).
    pub fn list(&self, filter: impl Fn(&E) -> bool) -> Vec<Arc<E>> {
        let mut out: Vec<Arc<E>> = self
            .read()
            .by_name
            .values()
            .filter(|e| filter(e))
            .cloned()
            .collect();
        newest_first(&mut out);
        out
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.read().by_name.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes to changes (for live events).
    pub fn subscribe(&self) -> broadcast::Receiver<Change<E>> {
        self.changes.subscribe()
    }

    /// Waits until `check` returns `Some` for the entry `name` (which may be
    /// absent), or the deadline.
    pub async fn wait_for<T>(
        &self,
        name: &str,
        deadline: Instant,
        mut check: impl FnMut(Option<&Arc<E>>) -> Option<T>,
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
