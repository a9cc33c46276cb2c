//! `WorkspaceSnapshot` records in the in-memory control plane, and the part
//! of the node agent that handles them: a manual record is taken (finalizer,
//! `takenAt`, `ReadyToUse=True`), a stop writes a `Stop` record, and a
//! record being deleted is released once its ZFS snapshot would be gone
//! (not while a clone depends on it: `Deleting=False`).

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_crds::keys::SNAPSHOT_FINALIZER;
use medforge_crds::{
    Session, SnapshotCondition, SnapshotReason, SnapshotStatusReason, WorkspaceSnapshot,
    WorkspaceSnapshotStatus,
};

use super::{MemoryBackend, SchedulerMode, State, fill_object_metadata, set_condition};
use crate::backend::contract::{BackendError, BackendResult, SnapshotDeletion, WatchEvent};
use crate::snapshots::record::snapshot_record;

/// What the simulated agent says a snapshot holds.
const SIMULATED_SIZE: i64 = 4096;

impl MemoryBackend {
    fn emit_snapshot(&self, event: WatchEvent<WorkspaceSnapshot>) {
        // No receiver is fine: the watch relists on start.
        let _ = self.inner.snapshot_events.send(event);
    }

    pub(super) fn snapshot_listing(st: &State) -> VecDeque<WatchEvent<WorkspaceSnapshot>> {
        let mut events = VecDeque::with_capacity(st.snapshots.len() + 2);
        events.push_back(WatchEvent::Init);
        events.extend(st.snapshots.values().cloned().map(WatchEvent::InitApply));
        events.push_back(WatchEvent::InitDone);
        events
    }

    /// Creates a record as a client does; a `Manual` one without a status
    /// is taken by the simulated agent (automatic mode, `snapshot_after`).
    pub(super) fn add_snapshot(
        &self,
        mut record: WorkspaceSnapshot,
    ) -> BackendResult<WorkspaceSnapshot> {
        let name = record.metadata.name.clone().unwrap_or_default();
        let to_take = record.spec.reason == SnapshotReason::Manual && record.status.is_none();
        {
            let mut st = self.lock();
            if st.snapshots.contains_key(&name) {
                return Err(BackendError::Conflict(format!(
                    "workspacesnapshot {name} exists"
                )));
            }
            fill_object_metadata(&mut st, &mut record.metadata, &self.inner.config.namespace);
            st.snapshots.insert(name.clone(), record.clone());
            self.emit_snapshot(WatchEvent::Apply(record.clone()));
        }
        if to_take
            && self.inner.config.scheduler == SchedulerMode::Automatic
            && let Some(delay) = self.inner.config.snapshot_after
        {
            self.after(delay, move |b| b.take_snapshot(&name));
        }
        Ok(record)
    }

    /// Stores a record as given, status included (metadata filled in,
    /// replacing one of the same name), without the simulated agent: what
    /// a test needs that no route makes.
    pub fn put_snapshot(&self, mut record: WorkspaceSnapshot) -> WorkspaceSnapshot {
        let mut st = self.lock();
        fill_object_metadata(&mut st, &mut record.metadata, &self.inner.config.namespace);
        let name = record.metadata.name.clone().unwrap_or_default();
        st.snapshots.insert(name, record.clone());
        self.emit_snapshot(WatchEvent::Apply(record.clone()));
        record
    }

    /// A record by name.
    pub fn snapshot(&self, name: &str) -> Option<WorkspaceSnapshot> {
        self.lock().snapshots.get(name).cloned()
    }

    /// All records.
    pub fn snapshots(&self) -> Vec<WorkspaceSnapshot> {
        self.lock().snapshots.values().cloned().collect()
    }

    /// Changes a record as the node agent would; `change` says whether it did.
    fn edit_snapshot(&self, name: &str, change: impl FnOnce(&mut WorkspaceSnapshot) -> bool) {
        let mut st = self.lock();
        let rv = st.bump();
        if let Some(record) = st.snapshots.get_mut(name)
            && change(record)
        {
            record.metadata.resource_version = Some(rv);
            let record = record.clone();
            self.emit_snapshot(WatchEvent::Apply(record));
        }
    }

    /// Changes a record's status as the node agent would.
    pub fn update_snapshot_status(
        &self,
        name: &str,
        change: impl FnOnce(&mut WorkspaceSnapshotStatus),
    ) {
        self.edit_snapshot(name, |record| {
            change(record.status.get_or_insert_with(Default::default));
            true
        });
    }

    /// The simulated agent takes a pending manual snapshot: its finalizer
    /// first, then `takenAt` now and `ReadyToUse=True`.
    pub fn take_snapshot(&self, name: &str) {
        self.edit_snapshot(name, |record| {
            if record.metadata.deletion_timestamp.is_some() || record.is_ready() {
                return false;
            }
            add_finalizer(record);
            let (dataset, short) = record.dataset_and_name();
            let message = format!(
                "snapshot {dataset}@{short} exists on node {}",
                record.spec.node
            );
            let status = record.status.get_or_insert_with(Default::default);
            status.taken_at = Some(Time(jiff::Timestamp::now()));
            status.size_bytes = Some(SIMULATED_SIZE);
            set_condition(
                &mut status.conditions,
                SnapshotCondition::ReadyToUse,
                true,
                SnapshotStatusReason::Taken,
                &message,
            );
            true
        });
    }

    /// Deletes a record: at once without finalizers; otherwise it is marked
    /// for deletion and (automatic mode) the simulated agent releases it,
    /// unless a clone depends on it (`Deleting=False`).
    pub(super) fn remove_snapshot(&self, name: &str) -> SnapshotDeletion {
        let mut st = self.lock();
        let rv = st.bump();
        let Some(record) = st.snapshots.get_mut(name) else {
            return SnapshotDeletion::Missing;
        };
        if record
            .metadata
            .finalizers
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            let record = st.snapshots.remove(name).expect("found above");
            self.emit_snapshot(WatchEvent::Delete(record));
            return SnapshotDeletion::Gone;
        }
        if record.metadata.deletion_timestamp.is_none() {
            record.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
            record.metadata.resource_version = Some(rv);
            self.emit_snapshot(WatchEvent::Apply(record.clone()));
        }
        let held = record.clone();
        drop(st);
        if self.inner.config.scheduler == SchedulerMode::Automatic {
            let name = name.to_owned();
            self.after(Duration::ZERO, move |b| b.release_snapshot(&name));
        }
        SnapshotDeletion::Held(Box::new(held))
    }

    /// The simulated agent's finalizer: a record being deleted goes, unless
    /// a clone depends on its snapshot (`Deleting=False`) or another
    /// finalizer than the agent's holds it.
    pub fn release_snapshot(&self, name: &str) {
        let mut st = self.lock();
        let Some(record) = st.snapshots.get(name) else {
            return;
        };
        let held_by_clone = record
            .condition(SnapshotCondition::Deleting)
            .is_some_and(|c| c.status == "False");
        let only_ours = record
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().all(|f| f == SNAPSHOT_FINALIZER));
        if record.metadata.deletion_timestamp.is_none() || held_by_clone || !only_ours {
            return;
        }
        let record = st.snapshots.remove(name).expect("found above");
        self.emit_snapshot(WatchEvent::Delete(record));
    }

    /// The simulated agent's record of a stop snapshot `name` of a session
    /// whose workspace is `dataset` on `node`: ready at once, as the agent
    /// writes it in the stop's last step.
    pub(super) fn record_stop_snapshot(
        &self,
        session: &Session,
        dataset: &str,
        node: &str,
        name: &str,
    ) {
        let mut record = snapshot_record(session, dataset, node, name, SnapshotReason::Stop);
        add_finalizer(&mut record);
        let mut status = WorkspaceSnapshotStatus {
            taken_at: Some(Time(jiff::Timestamp::now())),
            size_bytes: Some(SIMULATED_SIZE),
            ..WorkspaceSnapshotStatus::default()
        };
        set_condition(
            &mut status.conditions,
            SnapshotCondition::ReadyToUse,
            true,
            SnapshotStatusReason::Taken,
            &format!("snapshot {dataset}@{name} exists on node {node}"),
        );
        record.status = Some(status);
        let name = record.metadata.name.clone().unwrap_or_default();
        let mut st = self.lock();
        if st.snapshots.contains_key(&name) {
            return;
        }
        fill_object_metadata(&mut st, &mut record.metadata, &self.inner.config.namespace);
        st.snapshots.insert(name, record.clone());
        self.emit_snapshot(WatchEvent::Apply(record));
    }
}

fn add_finalizer(record: &mut WorkspaceSnapshot) {
    let finalizers = record.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == SNAPSHOT_FINALIZER) {
        finalizers.push(SNAPSHOT_FINALIZER.to_owned());
    }
}
