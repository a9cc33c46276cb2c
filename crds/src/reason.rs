//! The words MedForge writes into statuses, conditions and Events: condition
//! types, reasons and Event actions, as enums.
//!
//! Each variant serialises to exactly its name (`SessionReason::NoGpuAvailable`
//! is `"NoGpuAvailable"`), which is what kubectl, the api and every earlier
//! release read and wrote. The enums implement `AsRef<str>`, `Display` and
//! `FromStr`, so [`crate::conditions::set_condition`] takes them directly and a
//! reason read back from a status parses into one. No other crate spells one
//! of these words as a string literal.

use serde::{Deserialize, Serialize};
use strum::{AsRefStr, Display, EnumIter, EnumString, IntoStaticStr};

/// Derives shared by every vocabulary enum.
macro_rules! vocabulary {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident,)* }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, AsRefStr, Display, EnumIter, EnumString, IntoStaticStr,
        )]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// The word as it is written in a status.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }
    };
}

vocabulary! {
    /// Condition types a Session's status carries.
    pub enum SessionCondition {
        /// The scheduler bound the session to a node and GPUs (or says why not).
        Scheduled,
        /// The workspace dataset exists and is mounted.
        WorkspaceReady,
        /// The container runs.
        ContainerReady,
        /// The session answers on its port and may be routed to.
        Ready,
        /// The node agent is pulling the Pack's image (`True`, with bytes
        /// done and total in the message), could not (`False` with
        /// `ImagePullFailed`, `ImageNotFound` or `Unauthorized`; it retries
        /// with backoff), or pulled it (`False`, `Pulled`).
        ImagePulling,
    }
}

vocabulary! {
    /// Every `reason` a Session's status, its conditions and its Events carry.
    pub enum SessionReason {
        // The scheduler's.
        /// Bound to a node and GPUs.
        Bound,
        /// No Ready, schedulable node has enough free healthy GPUs.
        NoGpuAvailable,
        /// The owner is at their session or GPU limit.
        UserLimitReached,
        /// The session asks for no GPU and the installation does not allow that.
        CpuOnlyNotAllowed,
        /// A resumed session's workspace lives on a node that is gone, not
        /// Ready or cordoned.
        WorkspaceNodeUnavailable,
        /// The session's node was gone for longer than the grace period.
        NodeLost,
        // The node agent's.
        Creating,
        Starting,
        WaitingForPort,
        Running,
        Stopping,
        /// The owner set `spec.state: Stopped`.
        StopRequested,
        /// No request through the proxy for `idleTimeout`.
        Idle,
        /// Running for longer than `maxLifetime`.
        Expired,
        /// The container exited (or was killed) while the session ran.
        ContainerExited,
        /// The container disappeared while the session ran.
        ContainerMissing,
        /// The workload did not accept connections within the start timeout.
        StartTimeout,
        PackNotFound,
        /// The Pack's image is not on the node and cannot be pulled (a local
        /// image id, which no registry serves).
        ImageNotPresent,
        /// The Pack names its image by a tag that no node agent has resolved
        /// to a digest yet (or could not: the message says why).
        ImageUnresolved,
        /// The node agent is pulling the Pack's image.
        Pulling,
        /// The Pack's image was pulled onto the node.
        Pulled,
        /// The Pack's tag named this digest when a node agent asked the
        /// registry (Pack condition `Resolved`).
        TagResolved,
        /// A pull failed for another reason than the two below (the registry
        /// cannot be reached, answered with an error, the pull was cut off);
        /// the agent retries with backoff.
        ImagePullFailed,
        /// The registry has no such image (a wrong name or digest).
        ImageNotFound,
        /// The registry refused the node's credentials (or asked for some and
        /// the node has none for it).
        Unauthorized,
        /// `workspace.restoreFrom` names no WorkspaceSnapshot (or one not
        /// ready to use).
        SnapshotNotFound,
        /// `workspace.restoreFrom` names another owner's WorkspaceSnapshot.
        SnapshotNotOwned,
        /// A resumed session's workspace dataset is gone from its node.
        WorkspaceMissing,
        InvalidSpec,
        /// The spec asks for more than the operator's policy, its Pack or its node allows.
        PolicyViolation,
        /// ZFS refused to create the workspace (a quota it cannot set, …).
        WorkspaceFailed,
        /// Docker refused to create or start the container.
        ContainerFailed,
        /// The container name is held by a container of another Session.
        NameConflict,
        /// One of the session's GPUs is held by another session on this node
        /// (the scheduler should never allow it; the agent does not start it).
        GpuInUse,
        DockerUnavailable,
        ZfsUnavailable,
        /// The node's east-west isolation rules are not in place: the
        /// container is not started until they are.
        IsolationUnavailable,
        WorkspaceReady,
        ContainerRunning,
        /// The container is stopped (the session stopped, not failed).
        ContainerStopped,
        /// The session's container and (per policy) dataset were removed on delete.
        CleanedUp,
        // Categories of a failed reconcile pass (Event reason and metric label).
        /// Docker answered with an error.
        DockerError,
        /// ZFS answered with an error.
        ZfsError,
        /// A read or write to the control plane failed.
        KubernetesApiError,
        /// Adding or removing the finalizer failed.
        FinalizerError,
    }
}

impl SessionReason {
    /// The reasons the scheduler gives for not binding a session: the ones
    /// the api turns into a refused create.
    pub const REFUSALS: [SessionReason; 4] = [
        SessionReason::NoGpuAvailable,
        SessionReason::UserLimitReached,
        SessionReason::CpuOnlyNotAllowed,
        SessionReason::SnapshotNotFound,
    ];

    /// Whether this is one of [`SessionReason::REFUSALS`].
    pub fn is_refusal(self) -> bool {
        Self::REFUSALS.contains(&self)
    }
}

vocabulary! {
    /// Condition types a Pack's status carries.
    pub enum PackCondition {
        /// Its tag is resolved to a digest (`TagResolved`), or why not
        /// (`ImageNotFound`, `Unauthorized`, `ImagePullFailed`).
        Resolved,
    }
}

vocabulary! {
    /// Condition types a GpuNode's status carries.
    pub enum NodeCondition {
        /// The node agent runs and Docker and ZFS answer.
        Ready,
        /// The workspaces live on a file-backed trial pool (`medforge up --quickstart`).
        TrialStorage,
        /// The east-west isolation rules of the sessions' network are in
        /// place: no session container starts while this is not True.
        Isolated,
    }
}

vocabulary! {
    /// Every `reason` a GpuNode's conditions and Events carry.
    pub enum NodeReason {
        AgentReady,
        RuntimeUnavailable,
        /// The node agent stopped sending heartbeats.
        NodeStatusUnknown,
        /// The pool is backed by a file, not by disks.
        FileBackedPool,
        /// The isolation rules are in place.
        IsolationApplied,
        /// The isolation rules could not be put in place (the message says why).
        IsolationUnavailable,
        /// The node agent runs without isolation (configured so; tests only).
        IsolationDisabled,
        /// A container labelled as this node's belonged to no Session and was removed.
        OrphanContainerRemoved,
    }
}

vocabulary! {
    /// Condition types a WorkspaceSnapshot's status carries.
    pub enum SnapshotCondition {
        /// The ZFS snapshot exists on its node; a session may be restored from it.
        ReadyToUse,
        /// The record is being deleted; False says what holds the ZFS
        /// snapshot (a clone made from it).
        Deleting,
    }
}

vocabulary! {
    /// Every `reason` a WorkspaceSnapshot's conditions and Events carry.
    pub enum SnapshotStatusReason {
        /// The node agent took the snapshot.
        Taken,
        /// The snapshot was on the pool before its record: the agent recorded it.
        Adopted,
        /// A manual snapshot not taken yet.
        Pending,
        /// The record names a dataset that is not its session's workspace.
        DatasetMismatch,
        /// The session's workspace does not exist (yet) on the node.
        WorkspaceNotFound,
        /// The ZFS snapshot is gone from the pool.
        SnapshotMissing,
        /// A session's workspace was cloned from the snapshot: it is
        /// destroyed once that workspace is.
        CloneDependsOnIt,
        /// Retention deleted it (older than the kept ones).
        RetentionExpired,
        /// The ZFS snapshot was destroyed and the record released.
        Destroyed,
    }
}

vocabulary! {
    /// The `action` of the Events MedForge's controllers publish.
    pub enum EventAction {
        Reconcile,
        Start,
        Stop,
        Delete,
        Sweep,
        /// A snapshot taken (or found) and recorded.
        Snapshot,
        /// A snapshot deleted by retention.
        Retain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use strum::IntoEnumIterator;

    fn round_trips<T>()
    where
        T: IntoEnumIterator + Copy + AsRef<str> + std::str::FromStr + PartialEq + std::fmt::Debug,
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let mut seen = BTreeSet::new();
        for v in T::iter() {
            let word = v.as_ref().to_string();
            assert!(seen.insert(word.clone()), "{word} twice");
            assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(word));
            assert_eq!(
                serde_json::from_value::<T>(serde_json::json!(word)).unwrap(),
                v
            );
            assert!(
                word.parse::<T>().is_ok_and(|p| p == v),
                "{word} does not parse"
            );
            assert!(word.chars().next().unwrap().is_ascii_uppercase());
        }
    }

    #[test]
    fn every_word_serialises_as_its_name_and_parses_back() {
        round_trips::<SessionCondition>();
        round_trips::<SessionReason>();
        round_trips::<NodeCondition>();
        round_trips::<NodeReason>();
        round_trips::<EventAction>();
        round_trips::<SnapshotCondition>();
        round_trips::<SnapshotStatusReason>();
    }

    #[test]
    fn the_words_are_the_ones_earlier_releases_wrote() {
        assert_eq!(SessionReason::NoGpuAvailable.as_str(), "NoGpuAvailable");
        assert_eq!(SessionReason::StopRequested.to_string(), "StopRequested");
        assert_eq!(SessionCondition::Ready.as_ref(), "Ready");
        assert_eq!(NodeCondition::TrialStorage.as_str(), "TrialStorage");
        assert!("Idle".parse::<SessionReason>().is_ok());
        assert!("idle".parse::<SessionReason>().is_err());
        assert!(*"Running" == SessionReason::Running);
        assert!(SessionReason::UserLimitReached.is_refusal());
        assert!(!SessionReason::Idle.is_refusal());
    }
}
