//! The Kubernetes API in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use kube::core::Status;
use medforge_crds::{Pack, Session, WorkspaceSnapshot};

use crate::agent::runtime::Cluster;

#[derive(Debug, Default)]
struct ClusterState {
    sessions: HashMap<(String, String), Session>,
    packs: HashMap<String, Pack>,
    snapshots: HashMap<(String, String), WorkspaceSnapshot>,
    version: u64,
    writes: u32,
}

/// The Kubernetes API in memory, with resourceVersion preconditions.
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<ClusterState>>,
}

impl FakeCluster {
    pub fn with_pack(pack: Pack) -> FakeCluster {
        let c = FakeCluster::default();
        c.state.lock().unwrap().packs.insert(pack.name_any(), pack);
        c
    }

    /// Stores a session (a new resourceVersion) and returns it as stored.
    pub fn put(&self, mut s: Session) -> Session {
        let mut st = self.state.lock().unwrap();
        st.version += 1;
        s.metadata.resource_version = Some(st.version.to_string());
        st.sessions
            .insert((s.namespace().unwrap_or_default(), s.name_any()), s.clone());
        s
    }

    pub fn session(&self, name: &str) -> Session {
        self.state.lock().unwrap().sessions[&("ns".to_string(), name.to_string())].clone()
    }

    pub fn status_writes(&self) -> u32 {
        self.state.lock().unwrap().writes
    }
}

impl Cluster for FakeCluster {
    async fn get_session(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Session>, kube::Error> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .sessions
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn replace_status(&self, session: &Session) -> Result<Session, kube::Error> {
        let mut st = self.state.lock().unwrap();
        let key = (session.namespace().unwrap_or_default(), session.name_any());
        let current = st.sessions.get(&key).cloned().ok_or_else(|| {
            kube::Error::Api(
                Status::failure("not found", "NotFound")
                    .with_code(404)
                    .boxed(),
            )
        })?;
        if current.metadata.resource_version != session.metadata.resource_version {
            return Err(kube::Error::Api(
                Status::failure("the object has been modified", "Conflict")
                    .with_code(409)
                    .boxed(),
            ));
        }
        st.version += 1;
        st.writes += 1;
        let mut stored = current;
        stored.status = session.status.clone();
        stored.metadata.resource_version = Some(st.version.to_string());
        st.sessions.insert(key, stored.clone());
        Ok(stored)
    }

    async fn get_pack(&self, name: &str) -> Result<Option<Pack>, kube::Error> {
        Ok(self.state.lock().unwrap().packs.get(name).cloned())
    }

    async fn record_snapshot(&self, record: &WorkspaceSnapshot) -> Result<(), kube::Error> {
        let key = (record.namespace().unwrap_or_default(), record.name_any());
        self.state
            .lock()
            .unwrap()
            .snapshots
            .entry(key)
            .or_insert_with(|| record.clone());
        Ok(())
    }

    async fn get_snapshot(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<WorkspaceSnapshot>, kube::Error> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .snapshots
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn delete_snapshots_of(
        &self,
        namespace: &str,
        session_uid: &str,
    ) -> Result<usize, kube::Error> {
        let mut st = self.state.lock().unwrap();
        let before = st.snapshots.len();
        st.snapshots
            .retain(|(ns, _), r| ns != namespace || r.spec.session.uid != session_uid);
        Ok(before - st.snapshots.len())
    }
}

impl FakeCluster {
    /// Stores a snapshot record as a client would create it.
    pub fn put_snapshot(&self, record: WorkspaceSnapshot) {
        let key = (record.namespace().unwrap_or_default(), record.name_any());
        self.state.lock().unwrap().snapshots.insert(key, record);
    }
}

impl FakeCluster {
    /// The snapshot records written, by name.
    pub fn snapshot_records(&self) -> Vec<WorkspaceSnapshot> {
        let mut v: Vec<WorkspaceSnapshot> = self
            .state
            .lock()
            .unwrap()
            .snapshots
            .values()
            .cloned()
            .collect();
        v.sort_by_key(|r| r.name_any());
        v
    }
}
