//! What the api needs from the control plane: one small trait, its errors
//! and the watch events it streams.

use async_trait::async_trait;
use futures::stream::BoxStream;
use medforge_crds::{DesiredState, GpuNode, Pack, Session, WorkspaceSnapshot};

/// Errors of a backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The object does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The object exists already, or changed under us.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The control plane refused or failed the request.
    #[error("control plane error: {0}")]
    Api(String),
    /// The control plane could not be reached.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
}

/// A change seen by a watch (on Sessions unless said otherwise), in
/// kube-runtime's watcher vocabulary.
#[derive(Clone, Debug)]
pub enum WatchEvent<K = Session> {
    /// The watch (re)starts: a full listing follows as `InitApply`, closed by `InitDone`.
    Init,
    /// One object of the listing.
    InitApply(K),
    /// The listing is complete; the objects not listed are gone.
    InitDone,
    /// An object was created or changed.
    Apply(K),
    /// An object was deleted.
    Delete(K),
}

/// What deleting a `WorkspaceSnapshot` record did.
#[derive(Clone, Debug)]
pub enum SnapshotDeletion {
    /// There was no such record.
    Missing,
    /// The record is gone (it had no finalizer).
    Gone,
    /// The record is being deleted: a finalizer (the node agent's, which
    /// destroys the ZFS snapshot) holds it; as it is now.
    Held(Box<WorkspaceSnapshot>),
}

/// What a [`SessionBackend`] call returns.
pub type BackendResult<T> = Result<T, BackendError>;

/// What the api needs from the control plane.
#[async_trait]
pub trait SessionBackend: Send + Sync + 'static {
    /// Creates a Session (its `metadata.name` set by the caller).
    async fn create(&self, session: Session) -> BackendResult<Session>;
    /// A Session by name.
    async fn get(&self, name: &str) -> BackendResult<Option<Session>>;
    /// A Pack by name (its defaults and maxima hold for the sessions that name it).
    async fn get_pack(&self, name: &str) -> BackendResult<Option<Pack>>;
    /// Every Pack (the catalogue's source; packs are few, so a plain list).
    async fn list_packs(&self) -> BackendResult<Vec<Pack>>;
    /// Creates the Pack `pack.metadata.name`, or replaces the spec of the
    /// one of that name (keeping its metadata and status): the Pack as
    /// stored, and whether it was created.
    async fn replace_pack(&self, pack: Pack) -> BackendResult<(Pack, bool)>;
    /// Deletes a Pack; `false` when it did not exist.
    async fn delete_pack(&self, name: &str) -> BackendResult<bool>;
    /// Sessions, all or those of one owner.
    async fn list(&self, owner: Option<&str>) -> BackendResult<Vec<Session>>;
    /// Sets `spec.state`.
    async fn set_state(&self, name: &str, state: DesiredState) -> BackendResult<Session>;
    /// Asks a Stopped or Failed session to run again: `spec.state: Running`
    /// and `spec.resumeRequestedAt` now, so the spec changes (and its
    /// generation rises) even when `state` already says `Running`.
    async fn request_start(&self, name: &str) -> BackendResult<Session>;
    /// Sets one annotation of a Session (a merge patch of `metadata.annotations`).
    async fn annotate(&self, name: &str, key: &str, value: &str) -> BackendResult<()>;
    /// Deletes a Session; `false` when it did not exist.
    async fn delete(&self, name: &str) -> BackendResult<bool>;
    /// A never-ending stream of changes to Sessions, starting with a full listing.
    fn watch(&self) -> BoxStream<'static, Result<WatchEvent, BackendError>>;
    /// All GpuNodes.
    async fn list_nodes(&self) -> BackendResult<Vec<GpuNode>>;
    /// Cordons (`true`) or uncordons a whole node.
    async fn set_node_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
    ) -> BackendResult<GpuNode>;
    /// Cordons (`true`) or uncordons one GPU of a node, by UUID.
    async fn set_gpu_disabled(
        &self,
        node: &str,
        gpu_uuid: &str,
        disabled: bool,
    ) -> BackendResult<GpuNode>;
    /// Writes `status.lastActivityAt` of many Sessions (one batch per flush, never per request).
    async fn record_activity(&self, activity: &[(String, jiff::Timestamp)]) -> BackendResult<()>;
    /// One cheap round trip, for readiness.
    async fn ping(&self) -> BackendResult<()>;

    /// Creates a `WorkspaceSnapshot` record (in the Sessions' namespace; its
    /// `metadata.name` set by the caller). A record with reason `Manual` and
    /// no status asks the node agent of `spec.node` to take the snapshot.
    async fn create_snapshot(&self, record: WorkspaceSnapshot) -> BackendResult<WorkspaceSnapshot>;
    /// A `WorkspaceSnapshot` record by name.
    async fn get_snapshot(&self, name: &str) -> BackendResult<Option<WorkspaceSnapshot>>;
    /// `WorkspaceSnapshot` records, all or those of one owner.
    async fn list_snapshots(&self, owner: Option<&str>) -> BackendResult<Vec<WorkspaceSnapshot>>;
    /// Deletes a `WorkspaceSnapshot` record; the node agent's finalizer
    /// destroys the ZFS snapshot before the record goes.
    async fn delete_snapshot(&self, name: &str) -> BackendResult<SnapshotDeletion>;
    /// A never-ending stream of changes to `WorkspaceSnapshot` records,
    /// starting with a full listing.
    fn watch_snapshots(
        &self,
    ) -> BoxStream<'static, Result<WatchEvent<WorkspaceSnapshot>, BackendError>>;
}
