//! The object store: every object in memory (one ordered map per kind), a
//! bounded watch history, one global `resourceVersion` counter, and SQLite as
//! the durable write-through copy.
//!
//! All writes go through one writer task that takes whatever is queued, checks
//! each write's precondition against the current state, gives it the next
//! resource version, commits the whole batch in one SQLite transaction (group
//! commit: one fsync for many writes) and only then publishes it to readers and
//! watchers and answers the callers. Readers never see a write that is not on
//! disk, so a resource version a client has seen survives a crash.

//!
//! [`object`] holds the types the store answers with, [`state`] the state
//! behind the lock, [`writer`] the writer task; this module the reads and
//! the write queue.

mod object;
mod state;
mod writer;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::Db;
use crate::events;
use crate::registry::{Builtin, Registry, ResourceId};
use state::{Shared, build_state};
use writer::{Reply, Writer};

pub use object::{
    Event, EventType, ListResult, ObjectKey, Precondition, ReadError, StoredObject, WriteError,
    WriteOp,
};

/// The store; cheap to share behind an `Arc`.
pub struct Store {
    shared: Arc<Shared>,
    writes: mpsc::Sender<(WriteOp, Reply)>,
    published: watch::Receiver<u64>,
}

impl Store {
    /// Loads the database and starts the writer task.
    pub async fn open(
        registry: Arc<Registry>,
        db: Db,
        history_cap: usize,
    ) -> Result<(Arc<Store>, tokio::task::JoinHandle<()>), sqlx::Error> {
        let loaded = db.load().await?;
        let state = build_state(&registry, loaded);
        let (tx, rx) = mpsc::channel(4096);
        let (pub_tx, pub_rx) = watch::channel(state.rv);
        let store = Arc::new(Store {
            shared: Arc::new(Shared::new(registry, state)),
            writes: tx,
            published: pub_rx,
        });
        let writer = Writer {
            shared: Arc::downgrade(&store.shared),
            db,
            history_cap: history_cap.max(1),
            published: pub_tx,
        };
        let handle = tokio::spawn(writer.run(rx));
        Ok((store, handle))
    }

    /// The newest published resource version.
    pub fn current_rv(&self) -> u64 {
        self.shared.read().rv
    }

    /// A receiver that changes whenever a batch of writes is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.clone()
    }

    /// The kind whose objects a view kind shows (core `v1` Events show the
    /// stored `events.k8s.io/v1` ones); `None` for a stored kind.
    fn stored_kind(&self, rid: ResourceId) -> Option<ResourceId> {
        self.shared.registry.get(rid).alias_of
    }

    /// A stored object as the view kind `rid` shows it.
    fn view(&self, rid: ResourceId, o: &StoredObject) -> Arc<StoredObject> {
        let rt = self.shared.registry.get(rid);
        let v = match rt.builtin {
            Some(Builtin::CoreEvent) => events::to_core(&o.value()),
            _ => o.value(),
        };
        let json = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        Arc::new(StoredObject::new(rt, &v, json))
    }

    /// An object written through the view kind `rid`, as it is stored.
    fn unview(&self, rid: ResourceId, v: Value) -> Value {
        match self.shared.registry.get(rid).builtin {
            Some(Builtin::CoreEvent) => events::from_core(&v),
            _ => v,
        }
    }

    /// How many objects of a stored kind there are and the newest
    /// resourceVersion among them: every write of the kind changes one or
    /// the other (a create or update brings a newer version, a delete one
    /// object fewer), so a cache of the kind built at one fingerprint is
    /// current while the fingerprint stays the same.
    pub fn fingerprint(&self, rid: ResourceId) -> (usize, u64) {
        let state = self.shared.read();
        let map = &state.objects[rid];
        (map.len(), map.values().map(|o| o.rv).max().unwrap_or(0))
    }

    pub fn get(&self, rid: ResourceId, namespace: &str, name: &str) -> Option<Arc<StoredObject>> {
        if let Some(stored) = self.stored_kind(rid) {
            return self
                .get(stored, namespace, name)
                .map(|o| self.view(rid, &o));
        }
        self.shared.read().objects[rid]
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Lists a kind, optionally within one namespace, one page at a time.
    ///
    /// `at` asks for the state at an older resource version (a continue
    /// token's, or `resourceVersionMatch=Exact`); it is rebuilt from the watch
    /// history and fails with `Expired` when the history no longer reaches it.
    pub fn list(
        &self,
        rid: ResourceId,
        namespace: Option<&str>,
        filter: &dyn Fn(&StoredObject) -> bool,
        limit: Option<usize>,
        after: Option<&ObjectKey>,
        at: Option<u64>,
    ) -> Result<ListResult, ReadError> {
        if let Some(stored) = self.stored_kind(rid) {
            let mut r = self.list(
                stored,
                namespace,
                &|o| filter(&self.view(rid, o)),
                limit,
                after,
                at,
            )?;
            r.items = r.items.iter().map(|o| self.view(rid, o)).collect();
            return Ok(r);
        }
        let state = self.shared.read();
        let map = &state.objects[rid];
        let lower: Bound<ObjectKey> = match (after, namespace) {
            (Some(k), _) => Bound::Excluded(k.clone()),
            (None, Some(ns)) => Bound::Included((ns.to_string(), String::new())),
            (None, None) => Bound::Unbounded,
        };
        let in_scope = |k: &ObjectKey| namespace.is_none_or(|ns| k.0 == ns);
        let limit = limit.filter(|l| *l > 0);
        match at {
            Some(at_rv) if at_rv < state.rv => {
                if at_rv < state.history_floor {
                    return Err(ReadError::Expired {
                        requested: at_rv,
                        oldest: state.history_floor,
                    });
                }
                // Rebuild the state at `at_rv`: current objects, with every newer
                // write of this kind undone, newest first.
                let mut snap: BTreeMap<ObjectKey, Arc<StoredObject>> = map
                    .range((lower.clone(), Bound::Unbounded))
                    .take_while(|(k, _)| in_scope(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let start = state.history.partition_point(|e| e.rv <= at_rv);
                for ev in state.history.range(start..).rev() {
                    if ev.resource != rid {
                        continue;
                    }
                    let key = ev.object.key();
                    let past_lower = match &lower {
                        Bound::Excluded(l) => key > *l,
                        Bound::Included(l) => key >= *l,
                        Bound::Unbounded => true,
                    };
                    if !past_lower || !in_scope(&key) {
                        continue;
                    }
                    if !ev.prev_known {
                        return Err(ReadError::Expired {
                            requested: at_rv,
                            oldest: ev.rv,
                        });
                    }
                    match &ev.prev {
                        Some(p) => snap.insert(key, p.clone()),
                        None => snap.remove(&key),
                    };
                }
                Ok(page(snap.into_values(), filter, limit, at_rv))
            }
            Some(at_rv) if at_rv > state.rv => Err(ReadError::TooLarge {
                requested: at_rv,
                current: state.rv,
            }),
            _ => {
                let iter = map
                    .range((lower, Bound::Unbounded))
                    .take_while(|(k, _)| in_scope(k))
                    .map(|(_, v)| v.clone());
                Ok(page(iter, filter, limit, state.rv))
            }
        }
    }

    /// Every object of a kind (in a namespace) and the resource version of that state.
    pub fn snapshot(
        &self,
        rid: ResourceId,
        namespace: Option<&str>,
    ) -> (Vec<Arc<StoredObject>>, u64) {
        let r = self
            .list(rid, namespace, &|_| true, None, None, None)
            .unwrap_or(ListResult {
                items: vec![],
                rv: 0,
                next: None,
                remaining: 0,
            });
        (r.items, r.rv)
    }

    /// The history entries of a kind newer than `after`, and the resource
    /// version up to which the history was read.
    pub fn events_since(
        &self,
        rid: ResourceId,
        after: u64,
    ) -> Result<(Vec<Arc<Event>>, u64), ReadError> {
        if let Some(stored) = self.stored_kind(rid) {
            let (events, rv) = self.events_since(stored, after)?;
            let shown = events
                .iter()
                .map(|e| {
                    Arc::new(Event {
                        rv: e.rv,
                        resource: rid,
                        kind: e.kind,
                        object: self.view(rid, &e.object),
                        prev: e.prev.as_ref().map(|p| self.view(rid, p)),
                        prev_known: e.prev_known,
                    })
                })
                .collect();
            return Ok((shown, rv));
        }
        let state = self.shared.read();
        if after > state.rv {
            return Err(ReadError::TooLarge {
                requested: after,
                current: state.rv,
            });
        }
        if after < state.history_floor {
            return Err(ReadError::Expired {
                requested: after,
                oldest: state.history_floor,
            });
        }
        let start = state.history.partition_point(|e| e.rv <= after);
        let events = state
            .history
            .range(start..)
            .filter(|e| e.resource == rid)
            .cloned()
            .collect();
        Ok((events, state.rv))
    }

    /// Queues a write and waits until it is durable and published.
    /// A write through a view kind is stored under the stored kind and
    /// answered as the view shows it.
    pub async fn write(&self, op: WriteOp) -> Result<Arc<StoredObject>, WriteError> {
        let view_as = op.resource();
        let stored = self.stored_kind(view_as);
        let op = match stored {
            Some(stored) => op.redirect(stored, |v| self.unview(view_as, v)),
            None => op,
        };
        let (tx, rx) = oneshot::channel();
        self.writes
            .send((op, tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        let written = rx.await.map_err(|_| WriteError::Closed)??;
        Ok(match stored {
            Some(_) => self.view(view_as, &written),
            None => written,
        })
    }
}

fn page(
    iter: impl Iterator<Item = Arc<StoredObject>>,
    filter: &dyn Fn(&StoredObject) -> bool,
    limit: Option<usize>,
    rv: u64,
) -> ListResult {
    let mut items = Vec::new();
    let mut next = None;
    let mut remaining = 0;
    for o in iter.filter(|o| filter(o)) {
        match limit {
            Some(l) if items.len() >= l => {
                if next.is_none() {
                    next = items.last().map(|x: &Arc<StoredObject>| x.key());
                }
                remaining += 1;
            }
            _ => items.push(o),
        }
    }
    ListResult {
        items,
        rv,
        next,
        remaining,
    }
}
