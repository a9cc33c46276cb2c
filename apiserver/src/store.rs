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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::db::{Db, Loaded, Write};
use crate::events;
use crate::registry::{Builtin, Registry, ResourceId, ResourceType};

/// `(namespace, name)`; the namespace is `""` for cluster-scoped objects.
pub type ObjectKey = (String, String);

/// One stored object: its serialized JSON plus what lists and watches filter on.
#[derive(Debug)]
pub struct StoredObject {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub rv: u64,
    pub labels: BTreeMap<String, String>,
    /// Values of the kind's selectable fields, in registry order.
    pub fields: Vec<String>,
    pub deleting: bool,
    pub json: Bytes,
}

impl StoredObject {
    pub fn new(rt: &ResourceType, value: &Value, json: Bytes) -> StoredObject {
        let meta = value.get("metadata");
        let s = |k: &str| {
            meta.and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let fields = rt
            .selectable_fields
            .iter()
            .map(|(_, path)| path.find_text(value).unwrap_or_default())
            .collect();
        StoredObject {
            namespace: s("namespace"),
            name: s("name"),
            uid: s("uid"),
            rv: s("resourceVersion").parse().unwrap_or(0),
            labels,
            fields,
            deleting: meta.and_then(|m| m.get("deletionTimestamp")).is_some(),
            json,
        }
    }

    pub fn key(&self) -> ObjectKey {
        (self.namespace.clone(), self.name.clone())
    }

    /// The object as JSON.
    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }

    /// The value of a field-selector label, `None` for an unknown label.
    pub fn field(&self, rt: &ResourceType, label: &str) -> Option<String> {
        match label {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            _ => rt
                .selectable_fields
                .iter()
                .position(|(l, _)| l == label)
                .map(|i| self.fields[i].clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One entry of the watch history.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: ResourceId,
    pub kind: EventType,
    /// The object after the write (for `Deleted`, its last state at this rv).
    pub object: Arc<StoredObject>,
    /// The object before the write, `None` when it did not exist.
    pub prev: Option<Arc<StoredObject>>,
    /// False for history loaded at start whose previous state is unknown.
    pub prev_known: bool,
}

/// What must hold for a write to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    MustNotExist,
    /// The object exists at exactly this resource version.
    Rv(u64),
}

#[derive(Debug)]
pub enum WriteOp {
    /// Create or replace; `object` has its metadata (name, namespace) filled in.
    Put {
        resource: ResourceId,
        object: Value,
        precondition: Precondition,
    },
    /// Remove; `last_state` is what the DELETED event shows (the stored
    /// object when `None`), for a delete that an update's last finalizer removal causes.
    Delete {
        resource: ResourceId,
        key: ObjectKey,
        precondition: Precondition,
        last_state: Option<Value>,
    },
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("already exists")]
    AlreadyExists,
    #[error("not found")]
    NotFound,
    #[error("resource version conflict")]
    Conflict,
    #[error("storage error: {0}")]
    Storage(String),
    #[error("the server is shutting down")]
    Closed,
}

/// A list read, possibly one page of it.
pub struct ListResult {
    pub items: Vec<Arc<StoredObject>>,
    /// The resource version the list is consistent at.
    pub rv: u64,
    /// The key after which the next page starts, when there is one.
    pub next: Option<ObjectKey>,
    pub remaining: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// The requested resource version is older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    /// The requested resource version is newer than the store.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge { requested: u64, current: u64 },
}

struct State {
    objects: Vec<BTreeMap<ObjectKey, Arc<StoredObject>>>,
    history: VecDeque<Arc<Event>>,
    /// Every event with a resource version above this is in `history`.
    history_floor: u64,
    /// The newest resource version given out and published.
    rv: u64,
}

type Reply = oneshot::Sender<Result<Arc<StoredObject>, WriteError>>;

/// The store; cheap to share behind an `Arc`.
pub struct Store {
    registry: Arc<Registry>,
    state: RwLock<State>,
    writes: mpsc::Sender<(WriteOp, Reply)>,
    published: watch::Receiver<u64>,
}

/// The most writes committed in one transaction.
const MAX_BATCH: usize = 512;

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
            registry,
            state: RwLock::new(state),
            writes: tx,
            published: pub_rx,
        });
        let writer = Writer {
            store: Arc::downgrade(&store),
            db,
            history_cap: history_cap.max(1),
            published: pub_tx,
        };
        let handle = tokio::spawn(writer.run(rx));
        Ok((store, handle))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest published resource version.
    pub fn current_rv(&self) -> u64 {
        self.read().rv
    }

    /// A receiver that changes whenever a batch of writes is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.clone()
    }

    /// The kind whose objects a view kind shows (core `v1` Events show the
    /// stored `events.k8s.io/v1` ones); `None` for a stored kind.
    fn stored_kind(&self, rid: ResourceId) -> Option<ResourceId> {
        self.registry.get(rid).alias_of
    }

    /// A stored object as the view kind `rid` shows it.
    fn view(&self, rid: ResourceId, o: &StoredObject) -> Arc<StoredObject> {
        let rt = self.registry.get(rid);
        let v = match rt.builtin {
            Some(Builtin::CoreEvent) => events::to_core(&o.value()),
            _ => o.value(),
        };
        let json = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        Arc::new(StoredObject::new(rt, &v, json))
    }

    /// An object written through the view kind `rid`, as it is stored.
    fn unview(&self, rid: ResourceId, v: Value) -> Value {
        match self.registry.get(rid).builtin {
            Some(Builtin::CoreEvent) => events::from_core(&v),
            _ => v,
        }
    }

    pub fn get(&self, rid: ResourceId, namespace: &str, name: &str) -> Option<Arc<StoredObject>> {
        if let Some(stored) = self.stored_kind(rid) {
            return self
                .get(stored, namespace, name)
                .map(|o| self.view(rid, &o));
        }
        self.read().objects[rid]
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
        let state = self.read();
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
        let state = self.read();
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
        let (op, view_as) = match op {
            WriteOp::Put {
                resource,
                object,
                precondition,
            } if self.stored_kind(resource).is_some() => (
                WriteOp::Put {
                    resource: self.stored_kind(resource).expect("checked"),
                    object: self.unview(resource, object),
                    precondition,
                },
                Some(resource),
            ),
            WriteOp::Delete {
                resource,
                key,
                precondition,
                last_state,
            } if self.stored_kind(resource).is_some() => (
                WriteOp::Delete {
                    resource: self.stored_kind(resource).expect("checked"),
                    key,
                    precondition,
                    last_state: last_state.map(|v| self.unview(resource, v)),
                },
                Some(resource),
            ),
            op => (op, None),
        };
        let (tx, rx) = oneshot::channel();
        self.writes
            .send((op, tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        let written = rx.await.map_err(|_| WriteError::Closed)??;
        Ok(match view_as {
            Some(rid) => self.view(rid, &written),
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

fn build_state(registry: &Registry, loaded: Loaded) -> State {
    let mut objects: Vec<BTreeMap<ObjectKey, Arc<StoredObject>>> =
        registry.types.iter().map(|_| BTreeMap::new()).collect();
    for (resource, body) in loaded.objects {
        let Some(rt) = registry.by_storage_key(&resource) else {
            tracing::warn!(%resource, "stored object of a kind no longer served; kept in the database, not served");
            continue;
        };
        let Ok(value) = serde_json::from_slice::<Value>(&body) else {
            tracing::error!(%resource, "stored object is not JSON; skipped");
            continue;
        };
        let so = Arc::new(StoredObject::new(rt, &value, Bytes::from(body)));
        objects[rt.id].insert(so.key(), so);
    }
    let mut history = VecDeque::with_capacity(loaded.events.len());
    let mut last: HashMap<(ResourceId, ObjectKey), Arc<StoredObject>> = HashMap::new();
    let floor = loaded.history_floor;
    for (rv, resource, typ, body) in loaded.events {
        let (Some(rt), Ok(value)) = (
            registry.by_storage_key(&resource),
            serde_json::from_slice::<Value>(&body),
        ) else {
            continue;
        };
        let kind = match typ.as_str() {
            "ADDED" => EventType::Added,
            "DELETED" => EventType::Deleted,
            _ => EventType::Modified,
        };
        let mut so = Arc::new(StoredObject::new(rt, &value, Bytes::from(body)));
        let key = so.key();
        // Share the allocation with the live object when this is its latest write.
        if let Some(live) = objects[rt.id].get(&key)
            && live.rv == so.rv
        {
            so = live.clone();
        }
        let prev = last.get(&(rt.id, key.clone())).cloned();
        let prev_known = prev.is_some() || kind == EventType::Added;
        let prev = if kind == EventType::Added { None } else { prev };
        if kind == EventType::Deleted {
            last.remove(&(rt.id, key));
        } else {
            last.insert((rt.id, key), so.clone());
        }
        history.push_back(Arc::new(Event {
            rv,
            resource: rt.id,
            kind,
            object: so,
            prev,
            prev_known,
        }));
    }
    State {
        objects,
        history,
        history_floor: floor,
        rv: loaded.rv,
    }
}

struct Writer {
    store: std::sync::Weak<Store>,
    db: Db,
    history_cap: usize,
    published: watch::Sender<u64>,
}

struct Staged {
    event: Arc<Event>,
    reply: Option<Reply>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<(WriteOp, Reply)>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let Some(store) = self.store.upgrade() else {
                break;
            };
            self.process(&store, std::mem::take(&mut batch)).await;
        }
        self.db.close().await;
    }

    async fn process(&mut self, store: &Store, batch: Vec<(WriteOp, Reply)>) {
        let mut overlay: HashMap<(ResourceId, ObjectKey), Option<Arc<StoredObject>>> =
            HashMap::new();
        let mut staged: Vec<Staged> = Vec::new();
        let mut rejected: Vec<(Reply, WriteError)> = Vec::new();
        let mut rv = store.read().rv;
        for (op, reply) in batch {
            let (rid, key) = match &op {
                WriteOp::Put {
                    resource, object, ..
                } => (
                    *resource,
                    (
                        object
                            .pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        object
                            .pointer("/metadata/name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ),
                ),
                WriteOp::Delete { resource, key, .. } => (*resource, key.clone()),
            };
            let current = match overlay.get(&(rid, key.clone())) {
                Some(c) => c.clone(),
                None => store.read().objects[rid].get(&key).cloned(),
            };
            let precondition = match &op {
                WriteOp::Put { precondition, .. } | WriteOp::Delete { precondition, .. } => {
                    *precondition
                }
            };
            let check = match (precondition, &current) {
                (Precondition::MustNotExist, Some(_)) => Err(WriteError::AlreadyExists),
                (Precondition::MustNotExist, None) => Ok(()),
                (Precondition::Rv(_), None) => Err(WriteError::NotFound),
                (Precondition::Rv(want), Some(c)) if c.rv != want => Err(WriteError::Conflict),
                (Precondition::Rv(_), Some(_)) => Ok(()),
            };
            if let Err(e) = check {
                rejected.push((reply, e));
                continue;
            }
            rv += 1;
            let rt = store.registry.get(rid);
            let (mut value, kind) = match op {
                WriteOp::Put { object, .. } => (
                    object,
                    if current.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                ),
                WriteOp::Delete { last_state, .. } => (
                    last_state
                        .or_else(|| current.as_ref().map(|c| c.value()))
                        .unwrap_or(Value::Null),
                    EventType::Deleted,
                ),
            };
            if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
            }
            let json = match serde_json::to_vec(&value) {
                Ok(j) => Bytes::from(j),
                Err(e) => {
                    rejected.push((reply, WriteError::Storage(e.to_string())));
                    continue;
                }
            };
            let object = Arc::new(StoredObject::new(rt, &value, json));
            overlay.insert(
                (rid, key),
                if kind == EventType::Deleted {
                    None
                } else {
                    Some(object.clone())
                },
            );
            staged.push(Staged {
                event: Arc::new(Event {
                    rv,
                    resource: rid,
                    kind,
                    object,
                    prev: current,
                    prev_known: true,
                }),
                reply: Some(reply),
            });
        }
        for (reply, e) in rejected {
            let _ = reply.send(Err(e));
        }
        if staged.is_empty() {
            return;
        }
        // What the history will drop once this batch is in.
        let new_floor = {
            let state = store.read();
            let len_after = state.history.len() + staged.len();
            let drop = len_after.saturating_sub(self.history_cap);
            if drop == 0 {
                state.history_floor
            } else if drop <= state.history.len() {
                state.history[drop - 1].rv
            } else {
                staged[drop - state.history.len() - 1].event.rv
            }
        };
        let writes: Vec<Write<'_>> = staged
            .iter()
            .map(|s| Write {
                resource: &store.registry.get(s.event.resource).storage_key,
                namespace: &s.event.object.namespace,
                name: &s.event.object.name,
                rv: s.event.rv,
                event_type: s.event.kind.as_str(),
                body: &s.event.object.json,
            })
            .collect();
        let result = self.db.commit(&writes).await;
        drop(writes);
        if let Err(e) = result {
            tracing::error!(error = %e, "could not commit a batch of writes");
            for s in staged {
                if let Some(r) = s.reply {
                    let _ = r.send(Err(WriteError::Storage(e.to_string())));
                }
            }
            return;
        }
        {
            let mut state = store.write_state();
            for s in &staged {
                let ev = &s.event;
                let map = &mut state.objects[ev.resource];
                if ev.kind == EventType::Deleted {
                    map.remove(&ev.object.key());
                } else {
                    map.insert(ev.object.key(), ev.object.clone());
                }
                state.history.push_back(ev.clone());
            }
            while state.history.len() > self.history_cap {
                state.history.pop_front();
            }
            state.history_floor = new_floor;
            state.rv = rv;
        }
        self.published.send_replace(rv);
        for s in staged {
            if let Some(r) = s.reply {
                let _ = r.send(Ok(s.event.object.clone()));
            }
        }
    }
}
