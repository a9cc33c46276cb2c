//! A snapshot as the API shows it: whole (its own routes, the event
//! stream) and brief (in a session's view).

use medforge_crds::{
    SnapshotCondition, SnapshotReason, SnapshotStatusReason, WorkspaceSnapshot, conditions,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many snapshots a session's view lists (its newest), besides their count.
pub const SESSION_VIEW_SNAPSHOTS: usize = 20;

/// Where a snapshot is in its life, as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotState {
    /// A manual snapshot the node agent has not taken yet.
    Pending,
    /// It exists on its node; a session may be restored from it.
    Ready,
    /// Being deleted: the node agent destroys the ZFS snapshot (or waits
    /// for a clone that depends on it).
    Deleting,
    /// The node agent could not take it, or it is gone from its node.
    Failed,
}

impl SnapshotState {
    /// The word the API writes.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotState::Pending => "pending",
            SnapshotState::Ready => "ready",
            SnapshotState::Deleting => "deleting",
            SnapshotState::Failed => "failed",
        }
    }
}

/// The state of a record and the message that says why, from its
/// conditions: `Deleting` while it is being deleted, else `ReadyToUse`
/// (`True`: ready; `False` for a reason other than `Pending`: failed;
/// otherwise, or without the condition: pending).
pub fn snapshot_state(record: &WorkspaceSnapshot) -> (SnapshotState, Option<String>) {
    let message = |c: Option<&medforge_crds::Condition>| {
        c.map(|c| c.message.clone()).filter(|m| !m.is_empty())
    };
    if record.metadata.deletion_timestamp.is_some() {
        return (
            SnapshotState::Deleting,
            message(record.condition(SnapshotCondition::Deleting)),
        );
    }
    let ready = record.condition(SnapshotCondition::ReadyToUse);
    let state = match ready {
        Some(c) if c.status == conditions::status_str(Some(true)) => SnapshotState::Ready,
        Some(c)
            if c.status == conditions::status_str(Some(false))
                && c.reason != SnapshotStatusReason::Pending =>
        {
            SnapshotState::Failed
        }
        _ => SnapshotState::Pending,
    };
    (state, message(ready))
}

/// Why it was taken, as the API writes it.
pub fn reason_name(reason: SnapshotReason) -> &'static str {
    match reason {
        SnapshotReason::Stop => "stop",
        SnapshotReason::Death => "death",
        SnapshotReason::Manual => "manual",
        SnapshotReason::BeforeDelete => "before_delete",
    }
}

/// The session a snapshot was taken of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "SnapshotSession")]
pub struct SnapshotSessionView {
    /// The session's id (it may have been deleted since).
    pub id: String,
    /// The session's uid: its workspace is named after it.
    pub uid: String,
}

/// A snapshot of a session's workspace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Snapshot")]
pub struct SnapshotView {
    /// The snapshot's id (the WorkspaceSnapshot resource's name); what
    /// `restore_from` of a create names.
    #[schemars(schema_with = "crate::validate::schema::kube_name")]
    pub id: String,
    /// The ZFS snapshot's own name: `stop-<unix ms>`, `death-<unix ms>`,
    /// `manual-<unix ms>`, `predelete-<unix ms>`.
    pub name: String,
    /// The session it was taken of.
    pub session: SnapshotSessionView,
    /// The owner's user id.
    pub owner: String,
    /// Why it was taken: `stop`, `death`, `manual` or `before_delete`.
    #[schemars(extend("enum" = ["stop", "death", "manual", "before_delete"]))]
    pub reason: String,
    /// The node whose pool holds it (a session restored from it runs there).
    pub node: String,
    /// `pending` (a manual one not taken yet), `ready`, `deleting` or `failed`.
    #[schemars(extend("enum" = ["pending", "ready", "deleting", "failed"]))]
    pub state: String,
    /// What the node agent says of it (why it failed, what holds its deletion).
    pub message: Option<String>,
    /// When it was taken (RFC 3339); none while pending.
    #[schemars(extend("format" = "date-time"))]
    pub taken_at: Option<String>,
    /// Bytes it holds on its own (ZFS `used`), when measured.
    pub size_bytes: Option<i64>,
    /// When the record was made (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: Option<String>,
}

/// A snapshot as a session's view lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "SessionSnapshot")]
pub struct SnapshotBrief {
    /// The snapshot's id (`GET /api/v2/snapshots/{id}`).
    pub id: String,
    /// Why it was taken: `stop`, `death`, `manual` or `before_delete`.
    #[schemars(extend("enum" = ["stop", "death", "manual", "before_delete"]))]
    pub reason: String,
    /// When it was taken (RFC 3339); none while pending.
    #[schemars(extend("format" = "date-time"))]
    pub taken_at: Option<String>,
    /// `pending`, `ready`, `deleting` or `failed`.
    #[schemars(extend("enum" = ["pending", "ready", "deleting", "failed"]))]
    pub state: String,
}

/// Renders a record.
pub fn view(record: &WorkspaceSnapshot) -> SnapshotView {
    let (state, message) = snapshot_state(record);
    let status = record.status.as_ref();
    SnapshotView {
        id: record.metadata.name.clone().unwrap_or_default(),
        name: record.dataset_and_name().1.to_owned(),
        session: SnapshotSessionView {
            id: record.spec.session.name.clone(),
            uid: record.spec.session.uid.clone(),
        },
        owner: record.spec.owner.clone(),
        reason: reason_name(record.spec.reason).to_owned(),
        node: record.spec.node.clone(),
        state: state.as_str().to_owned(),
        message,
        taken_at: record.taken_at().map(|t| t.to_string()),
        size_bytes: status.and_then(|s| s.size_bytes),
        created_at: record
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
    }
}

/// Renders a record briefly.
pub fn brief(record: &WorkspaceSnapshot) -> SnapshotBrief {
    SnapshotBrief {
        id: record.metadata.name.clone().unwrap_or_default(),
        reason: reason_name(record.spec.reason).to_owned(),
        taken_at: record.taken_at().map(|t| t.to_string()),
        state: snapshot_state(record).0.as_str().to_owned(),
    }
}

/// Body of a manual snapshot and of a delete.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SnapshotReply {
    /// What happened.
    pub message: String,
    /// The snapshot.
    pub snapshot: SnapshotView,
}
