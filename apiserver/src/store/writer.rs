//! The writer task: takes whatever writes are queued, checks each one's
//! precondition, gives it the next resource version, commits the batch in one
//! SQLite transaction and only then publishes it and answers the callers.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::object::{Event, EventType, ObjectKey, Precondition, StoredObject, WriteError, WriteOp};
use super::state::Shared;
use crate::db::{Db, Write};
use crate::registry::ResourceId;

/// Where a write's outcome is sent.
pub type Reply = oneshot::Sender<Result<Arc<StoredObject>, WriteError>>;

/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// The one task that applies writes, in batches.
pub struct Writer {
    pub shared: Weak<Shared>,
    pub db: Db,
    pub history_cap: usize,
    pub published: watch::Sender<u64>,
}

struct Staged {
    event: Arc<Event>,
    reply: Option<Reply>,
}

impl Writer {
    pub async fn run(mut self, mut rx: mpsc::Receiver<(WriteOp, Reply)>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let Some(store) = self.shared.upgrade() else {
                break;
            };
            self.process(&store, std::mem::take(&mut batch)).await;
        }
        self.db.close().await;
    }

    async fn process(&mut self, store: &Shared, batch: Vec<(WriteOp, Reply)>) {
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
            let precondition = op.precondition();
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
