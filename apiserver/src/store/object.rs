//! What the store holds and answers: stored objects, watch history entries,
//! writes with their preconditions, and the errors of reads and writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::registry::{ResourceId, ResourceType};

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

impl WriteOp {
    /// The kind written.
    pub fn resource(&self) -> ResourceId {
        match self {
            WriteOp::Put { resource, .. } | WriteOp::Delete { resource, .. } => *resource,
        }
    }

    pub fn precondition(&self) -> Precondition {
        match self {
            WriteOp::Put { precondition, .. } | WriteOp::Delete { precondition, .. } => {
                *precondition
            }
        }
    }

    /// The same write to the kind `resource`, with the objects it carries
    /// converted by `convert`.
    pub fn redirect(self, resource: ResourceId, convert: impl Fn(Value) -> Value) -> WriteOp {
        match self {
            WriteOp::Put {
                object,
                precondition,
                ..
            } => WriteOp::Put {
                resource,
                object: convert(object),
                precondition,
            },
            WriteOp::Delete {
                key,
                precondition,
                last_state,
                ..
            } => WriteOp::Delete {
                resource,
                key,
                precondition,
                last_state: last_state.map(convert),
            },
        }
    }
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
