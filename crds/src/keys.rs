//! Every label, annotation and finalizer key MedForge uses, on its resources
//! and on the Docker objects the node agent makes. No other crate spells one.

/// Label naming the owner (user id) of a Session.
pub const OWNER_LABEL: &str = "medforge.dev/owner";
/// Label and annotation carrying the slug the api chose, until the scheduler
/// copies it to `status.slug`.
pub const SLUG_KEY: &str = "medforge.dev/slug";
/// Annotation carrying the owner's per-user session limit override, for the scheduler.
pub const MAX_SESSIONS_ANNOTATION: &str = "medforge.dev/max-sessions";
/// Annotation carrying the owner's own session policy (defaults and maxima
/// an admin set for the account, JSON: `{"defaults": {"memory": "16Gi"},
/// "maxima": {"gpus": "4"}}`), written by the api; the node agent applies it
/// over the operator's policy.
pub const SESSION_POLICY_ANNOTATION: &str = "medforge.dev/session-policy";
/// Annotation with the owner's email, written by the api when it creates a
/// Session, so that `kubectl get sessions` shows a person rather than a user
/// id. Emails cannot change in MedForge, so the copy stays correct.
pub const OWNER_EMAIL_ANNOTATION: &str = "medforge.dev/owner-email";
/// Annotation with the URL the api serves the Session at
/// (`https://s-<slug>.<exposure>.<domain>/`), written when it creates the Session.
pub const URL_ANNOTATION: &str = "medforge.dev/url";

/// The node agent's finalizer: it holds a Session until its container (and,
/// per policy, its dataset) is gone.
pub const AGENT_FINALIZER: &str = "medforge.dev/node-agent";
/// The node agent's finalizer on a `WorkspaceSnapshot`: it holds the record
/// until the ZFS snapshot is destroyed.
pub const SNAPSHOT_FINALIZER: &str = "medforge.dev/zfs-snapshot";
/// Annotation with the owner's own snapshot retention (JSON:
/// `{"keepLast": 2, "keepDays": 7}`), set by an admin on a Session (the api
/// writes it from the account's settings); the node agent copies it onto
/// the session's `WorkspaceSnapshot`s and applies it in place of its own.
pub const SNAPSHOT_RETENTION_ANNOTATION: &str = "medforge.dev/snapshot-retention";
/// Annotation that overrides the dataset policy on delete: `snapshot`,
/// `keep` or `destroy`.
pub const WORKSPACE_ON_DELETE_ANNOTATION: &str = "medforge.dev/workspace-on-delete";

/// User properties on the ZFS datasets the node agent makes (ZFS spells a
/// user property `module:name`).
pub mod dataset {
    /// The Session's uid: what a dataset is keyed by.
    pub const SESSION_UID: &str = "medforge:session-uid";
    /// `<namespace>/<name>` of the Session, for people reading `zfs get`.
    pub const SESSION: &str = "medforge:session";
    /// Set (to the unix time in ms) when the dataset's Session was deleted:
    /// the dataset is unmounted and only holds its snapshots; it is
    /// destroyed once the last of them is.
    pub const RETIRED: &str = "medforge:retired";
}

/// Labels on the Docker objects the node agent makes.
pub mod container {
    /// The Session's uid: what a container is keyed by.
    pub const SESSION_UID: &str = "medforge.dev/session-uid";
    pub const SESSION_NAMESPACE: &str = "medforge.dev/session-namespace";
    pub const SESSION_NAME: &str = "medforge.dev/session-name";
    /// The node agent that owns the container.
    pub const NODE: &str = "medforge.dev/node";
    /// The session's slug (the same key as on the Session).
    pub const SLUG: &str = super::SLUG_KEY;
    /// The port the workload listens on (the Pack's), for the upstream.
    pub const PORT: &str = "medforge.dev/port";
    /// On the sessions network the agent creates.
    pub const MANAGED: &str = "medforge.dev/managed";
}
