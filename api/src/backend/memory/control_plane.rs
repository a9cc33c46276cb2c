//! The in-memory control plane behind the api's [`SessionBackend`] trait.

use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_crds::{
    DesiredState, GpuNode, GpuNodeSpec, Pack, Session, SessionStatus, WorkspaceSnapshot,
};
use tokio::sync::broadcast;

use super::{MemoryBackend, SchedulerMode, fill_metadata};
use crate::backend::contract::{
    BackendError, BackendResult, SessionBackend, SnapshotDeletion, WatchEvent,
};

impl MemoryBackend {
    /// Changes a stored Session; when `change` says it changed, under a new
    /// resource version, and the watch sees it.
    fn edit_session(
        &self,
        name: &str,
        change: impl FnOnce(&mut Session) -> bool,
    ) -> BackendResult<Session> {
        self.check_reachable()?;
        let mut st = self.lock();
        let rv = st.bump();
        let session = st
            .sessions
            .get_mut(name)
            .ok_or_else(|| BackendError::NotFound(format!("session {name}")))?;
        if change(session) {
            session.metadata.resource_version = Some(rv);
            self.emit(WatchEvent::Apply(session.clone()));
        }
        Ok(session.clone())
    }

    /// Changes a node's spec (an admin's cordon), as the control plane stores it.
    fn edit_node(
        &self,
        node: &str,
        change: impl FnOnce(&mut GpuNodeSpec),
    ) -> BackendResult<GpuNode> {
        self.check_reachable()?;
        let mut st = self.lock();
        let n = st
            .nodes
            .get_mut(node)
            .ok_or_else(|| BackendError::NotFound(format!("node {node}")))?;
        change(&mut n.spec);
        Ok(n.clone())
    }
}

#[async_trait]
impl SessionBackend for MemoryBackend {
    async fn create(&self, mut session: Session) -> BackendResult<Session> {
        self.check_reachable()?;
        let name = session.metadata.name.clone().unwrap_or_default();
        {
            let mut st = self.lock();
            if st.sessions.contains_key(&name) {
                return Err(BackendError::Conflict(format!("session {name} exists")));
            }
            fill_metadata(&mut st, &mut session, &self.inner.config.namespace);
            st.sessions.insert(name.clone(), session.clone());
            self.emit(WatchEvent::Apply(session.clone()));
        }
        if self.inner.config.scheduler == SchedulerMode::Automatic {
            self.after(Duration::ZERO, move |b| b.schedule(&name));
        }
        Ok(session)
    }

    async fn get(&self, name: &str) -> BackendResult<Option<Session>> {
        self.check_reachable()?;
        Ok(self.session(name))
    }

    async fn get_pack(&self, name: &str) -> BackendResult<Option<Pack>> {
        self.check_reachable()?;
        Ok(self.lock().packs.get(name).cloned())
    }

    async fn list_packs(&self) -> BackendResult<Vec<Pack>> {
        self.check_reachable()?;
        Ok(self.lock().packs.values().cloned().collect())
    }

    async fn replace_pack(&self, pack: Pack) -> BackendResult<(Pack, bool)> {
        self.check_reachable()?;
        let name = pack.metadata.name.clone().unwrap_or_default();
        let mut guard = self.lock();
        let st = &mut *guard;
        if let Some(current) = st.packs.get_mut(&name) {
            if current.spec != pack.spec {
                current.spec = pack.spec;
                current.metadata.generation = Some(current.metadata.generation.unwrap_or(1) + 1);
            }
            st.resource_version += 1;
            current.metadata.resource_version = Some(st.resource_version.to_string());
            return Ok((current.clone(), false));
        }
        let mut pack = pack;
        super::fill_object_metadata(st, &mut pack.metadata, "");
        pack.metadata.namespace = None;
        st.packs.insert(name, pack.clone());
        Ok((pack, true))
    }

    async fn delete_pack(&self, name: &str) -> BackendResult<bool> {
        self.check_reachable()?;
        Ok(self.lock().packs.remove(name).is_some())
    }

    async fn list(&self, owner: Option<&str>) -> BackendResult<Vec<Session>> {
        self.check_reachable()?;
        Ok(self
            .sessions()
            .into_iter()
            .filter(|s| owner.is_none_or(|o| s.spec.owner == o))
            .collect())
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) -> BackendResult<()> {
        self.edit_session(name, |session| {
            session
                .metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(key.to_owned(), value.to_owned());
            true
        })
        .map(drop)
    }

    async fn set_state(&self, name: &str, state: DesiredState) -> BackendResult<Session> {
        let updated = self.edit_session(name, |session| {
            if session.spec.state == state {
                return false;
            }
            session.spec.state = state;
            session.metadata.generation = Some(session.metadata.generation.unwrap_or(1) + 1);
            true
        })?;
        if state == DesiredState::Stopped && self.inner.config.scheduler == SchedulerMode::Automatic
        {
            self.finish_stop(name);
        }
        Ok(updated)
    }

    async fn request_start(&self, name: &str) -> BackendResult<Session> {
        let stamp: Time =
            serde_json::from_value(serde_json::json!(crate::backend::kube::resume_stamp()))
                .map_err(|e| BackendError::Api(e.to_string()))?;
        let updated = self.edit_session(name, |session| {
            session.spec.state = DesiredState::Running;
            session.spec.resume_requested_at = Some(stamp);
            session.metadata.generation = Some(session.metadata.generation.unwrap_or(1) + 1);
            true
        })?;
        if self.inner.config.scheduler == SchedulerMode::Automatic {
            let name = name.to_owned();
            self.after(Duration::ZERO, move |b| b.schedule(&name));
        }
        Ok(updated)
    }

    async fn delete(&self, name: &str) -> BackendResult<bool> {
        self.check_reachable()?;
        let removed = {
            let mut st = self.lock();
            let removed = st.sessions.remove(name);
            if let Some(session) = &removed {
                self.emit(WatchEvent::Delete(session.clone()));
            }
            removed
        };
        let Some(session) = removed else {
            return Ok(false);
        };
        if let Some(node) = session.status.as_ref().and_then(|s| s.node_name.clone()) {
            self.free_gpus(&node, session.metadata.uid.as_deref());
        }
        Ok(true)
    }

    fn watch(&self) -> BoxStream<'static, Result<WatchEvent, BackendError>> {
        let (rx, queue) = {
            let st = self.lock();
            // Subscribed under the lock: no change falls between the listing and the stream.
            (self.inner.events.subscribe(), Self::listing(&st))
        };
        let backend = self.clone();
        watch_stream(rx, queue, move || Self::listing(&backend.lock()))
    }

    async fn list_nodes(&self) -> BackendResult<Vec<GpuNode>> {
        self.check_reachable()?;
        Ok(self.lock().nodes.values().cloned().collect())
    }

    async fn set_node_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
    ) -> BackendResult<GpuNode> {
        self.edit_node(node, |spec| spec.unschedulable = unschedulable)
    }

    async fn set_gpu_disabled(
        &self,
        node: &str,
        gpu_uuid: &str,
        disabled: bool,
    ) -> BackendResult<GpuNode> {
        self.edit_node(node, |spec| {
            let list = &mut spec.disabled_gpus;
            list.retain(|u| u != gpu_uuid);
            if disabled {
                list.push(gpu_uuid.to_owned());
            }
        })
    }

    async fn record_activity(&self, activity: &[(String, jiff::Timestamp)]) -> BackendResult<()> {
        self.check_reachable()?;
        self.inner.activity_writes.fetch_add(1, Ordering::Relaxed);
        let mut guard = self.lock();
        let st = &mut *guard;
        for (name, at) in activity {
            if let Some(session) = st.sessions.get_mut(name) {
                session
                    .status
                    .get_or_insert_with(SessionStatus::default)
                    .last_activity_at = Some(Time(*at));
                st.activity.insert(name.clone(), *at);
            }
        }
        Ok(())
    }

    async fn ping(&self) -> BackendResult<()> {
        self.check_reachable()
    }

    async fn create_snapshot(&self, record: WorkspaceSnapshot) -> BackendResult<WorkspaceSnapshot> {
        self.check_reachable()?;
        self.add_snapshot(record)
    }

    async fn get_snapshot(&self, name: &str) -> BackendResult<Option<WorkspaceSnapshot>> {
        self.check_reachable()?;
        Ok(self.snapshot(name))
    }

    async fn list_snapshots(&self, owner: Option<&str>) -> BackendResult<Vec<WorkspaceSnapshot>> {
        self.check_reachable()?;
        Ok(self
            .snapshots()
            .into_iter()
            .filter(|s| owner.is_none_or(|o| s.spec.owner == o))
            .collect())
    }

    async fn delete_snapshot(&self, name: &str) -> BackendResult<SnapshotDeletion> {
        self.check_reachable()?;
        Ok(self.remove_snapshot(name))
    }

    fn watch_snapshots(
        &self,
    ) -> BoxStream<'static, Result<WatchEvent<WorkspaceSnapshot>, BackendError>> {
        let (rx, queue) = {
            let st = self.lock();
            (
                self.inner.snapshot_events.subscribe(),
                Self::snapshot_listing(&st),
            )
        };
        let backend = self.clone();
        watch_stream(rx, queue, move || Self::snapshot_listing(&backend.lock()))
    }
}

/// A watch over a broadcast of changes, after a listing; a receiver that
/// lagged starts over with a new listing, like a watch that expired.
fn watch_stream<K: Clone + Send + 'static>(
    rx: broadcast::Receiver<WatchEvent<K>>,
    queue: VecDeque<WatchEvent<K>>,
    relist: impl Fn() -> VecDeque<WatchEvent<K>> + Send + 'static,
) -> BoxStream<'static, Result<WatchEvent<K>, BackendError>> {
    futures::stream::unfold(
        (rx, queue, relist),
        |(mut rx, mut queue, relist)| async move {
            loop {
                if let Some(event) = queue.pop_front() {
                    return Some((Ok(event), (rx, queue, relist)));
                }
                match rx.recv().await {
                    Ok(event) => return Some((Ok(event), (rx, queue, relist))),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        rx = rx.resubscribe();
                        queue = relist();
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
    .boxed()
}
