//! The control-plane side of the API behind one small trait, so that every route is
//! tested without a cluster: [`KubeBackend`] talks to the Kubernetes API (a real
//! cluster or the embedded control plane) with the kube client; [`MemoryBackend`]
//! (feature `testing`, for tests and benchmarks only) keeps the resources in memory
//! and decides placement with the scheduler's own pure code.

mod contract;
mod kube;
#[cfg(feature = "testing")]
mod memory;

pub use self::contract::{
    BackendError, BackendResult, SessionBackend, SnapshotDeletion, WatchEvent,
};
pub use self::kube::KubeBackend;
#[cfg(feature = "testing")]
pub use self::memory::{
    MemoryBackend, MemoryBackendConfig, SchedulerMode, condition, set_condition,
};

pub use medforge_crds::keys::{MAX_SESSIONS_ANNOTATION, OWNER_LABEL, SLUG_KEY};
