//! What the api needs from the control plane: one small trait, its errors
//! and the watch events it streams.

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use medforge_crds::{DesiredState, GpuNode, Session};

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

/// A change seen by the watch on Sessions, in kube-runtime's watcher vocabulary.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// The watch (re)starts: a full listing follows as `InitApply`, closed by `InitDone`.
    Init,
    /// One object of the listing.
    InitApply(Session),
    /// The listing is complete; the objects not listed are gone.
    InitDone,
    /// An object was created or changed.
    Apply(Session),
    /// An object was deleted.
    Delete(Session),
}

/// What the api needs from the control plane.
pub trait SessionBackend: Send + Sync + 'static {
    /// Creates a Session (its `metadata.name` set by the caller).
    fn create(&self, session: Session) -> BoxFuture<'_, Result<Session, BackendError>>;
    /// A Session by name.
    fn get<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<Session>, BackendError>>;
    /// Sessions, all or those of one owner.
    fn list<'a>(
        &'a self,
        owner: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Session>, BackendError>>;
    /// Sets `spec.state`.
    fn set_state<'a>(
        &'a self,
        name: &'a str,
        state: DesiredState,
    ) -> BoxFuture<'a, Result<Session, BackendError>>;
    /// Sets one annotation of a Session (a merge patch of `metadata.annotations`).
    fn annotate<'a>(
        &'a self,
        name: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// Deletes a Session; `false` when it did not exist.
    fn delete<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<bool, BackendError>>;
    /// A never-ending stream of changes to Sessions, starting with a full listing.
    fn watch(&self) -> BoxStream<'static, Result<WatchEvent, BackendError>>;
    /// All GpuNodes.
    fn list_nodes(&self) -> BoxFuture<'_, Result<Vec<GpuNode>, BackendError>>;
    /// Cordons (`true`) or uncordons a whole node.
    fn set_node_unschedulable<'a>(
        &'a self,
        node: &'a str,
        unschedulable: bool,
    ) -> BoxFuture<'a, Result<GpuNode, BackendError>>;
    /// Cordons (`true`) or uncordons one GPU of a node, by UUID.
    fn set_gpu_disabled<'a>(
        &'a self,
        node: &'a str,
        gpu_uuid: &'a str,
        disabled: bool,
    ) -> BoxFuture<'a, Result<GpuNode, BackendError>>;
    /// Writes `status.lastActivityAt` of many Sessions (one batch per flush, never per request).
    fn record_activity<'a>(
        &'a self,
        activity: &'a [(String, jiff::Timestamp)],
    ) -> BoxFuture<'a, Result<(), BackendError>>;
    /// One cheap round trip, for readiness.
    fn ping(&self) -> BoxFuture<'_, Result<(), BackendError>>;
}
