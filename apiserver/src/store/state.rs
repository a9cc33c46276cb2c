//! The in-memory state behind the store's lock, shared by the readers and the
//! writer task, and its loading from the database at start.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use serde_json::Value;

use super::object::{Event, EventType, ObjectKey, StoredObject};
use crate::db::Loaded;
use crate::registry::{Registry, ResourceId};

/// The objects and the watch history, as readers see them.
pub struct State {
    pub objects: Vec<BTreeMap<ObjectKey, Arc<StoredObject>>>,
    pub history: VecDeque<Arc<Event>>,
    /// Every event with a resource version above this is in `history`.
    pub history_floor: u64,
    /// The newest resource version given out and published.
    pub rv: u64,
}

/// The state and the registry it is organised by.
pub struct Shared {
    pub registry: Arc<Registry>,
    state: RwLock<State>,
}

impl Shared {
    pub fn new(registry: Arc<Registry>, state: State) -> Shared {
        Shared {
            registry,
            state: RwLock::new(state),
        }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// The state loaded from the database: the objects and the retained history.
pub fn build_state(registry: &Registry, loaded: Loaded) -> State {
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
