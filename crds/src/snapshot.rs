//! `WorkspaceSnapshot`: one ZFS snapshot of a session's workspace, as a
//! resource that outlives its Session.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

/// A snapshot of a session's workspace, written by the node agent that took
/// it. Its spec says what and whose it is; it is never changed after.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "medforge.dev",
    version = "v1alpha1",
    kind = "WorkspaceSnapshot",
    plural = "workspacesnapshots",
    singular = "workspacesnapshot",
    namespaced,
    status = "WorkspaceSnapshotStatus",
    derive = "PartialEq",
    shortname = "wss",
    category = "medforge",
    doc = "A ZFS snapshot of a session's workspace. The node agent records every snapshot it takes (when the session stops, its container dies or it is deleted); creating one with reason Manual and no status asks the agent to take it now. It stays after its Session is deleted, under retention; deleting it destroys the ZFS snapshot.",
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".spec.owner",
        description = "The owner's user id"
    ),
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".spec.session.name",
        description = "The Session it was taken of"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".spec.reason",
        description = "Why it was taken"
    ),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.sizeBytes",
        description = "Bytes it holds on its own (ZFS `used`)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Snapshot",
        type_ = "string",
        json_path = ".spec.snapshot",
        description = "The ZFS snapshot (`<dataset>@<name>`)",
        priority = "1"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.node",
        description = "The node whose pool holds it",
        priority = "1"
    ),
    selectable = ".spec.owner",
    selectable = ".spec.node"
)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSnapshotSpec {
    /// The id of the user whose workspace it is.
    #[x_kube(validation = Rule::new("self == oldSelf").message("owner is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,
    /// The Session it was taken of (kept after that Session is gone).
    pub session: SnapshotSource,
    /// The node whose ZFS pool holds it.
    #[schemars(length(min = 1, max = 253))]
    pub node: String,
    /// The full ZFS snapshot name, `<dataset>@<name>`.
    #[x_kube(validation = Rule::new("self == oldSelf").message("snapshot is immutable"))]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.:/-]+@[A-Za-z0-9_.:-]+$"))]
    pub snapshot: String,
    /// Why it was taken.
    pub reason: SnapshotReason,
}

/// The Session a snapshot was taken of.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SnapshotSource {
    /// The Session's name.
    pub name: String,
    /// The Session's uid (its dataset is named after it).
    pub uid: String,
}

/// Why a snapshot was taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SnapshotReason {
    /// The session was stopped (by its owner, for idleness or for its lifetime).
    Stop,
    /// The session's container died.
    Death,
    /// Its owner asked for it while the session ran.
    Manual,
    /// The Session was being deleted.
    BeforeDelete,
}

impl SnapshotReason {
    /// The reason of a snapshot named `stop-<ms>`, `death-<ms>`, … by the
    /// node agent; `None` for a name it does not give.
    pub fn of_name(name: &str) -> Option<SnapshotReason> {
        let (prefix, ms) = name.split_once('-')?;
        ms.parse::<u64>().ok()?;
        match prefix {
            "stop" => Some(SnapshotReason::Stop),
            "death" => Some(SnapshotReason::Death),
            "manual" => Some(SnapshotReason::Manual),
            "predelete" => Some(SnapshotReason::BeforeDelete),
            _ => None,
        }
    }
}

/// What is known of a snapshot.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSnapshotStatus {
    /// When ZFS took it.
    pub taken_at: Option<Time>,
    /// Bytes it holds on its own (ZFS `used`), when measured.
    pub size_bytes: Option<i64>,
    /// `ReadyToUse`: it exists on its node and a session may be restored from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was written for.
    pub observed_generation: Option<i64>,
}

impl WorkspaceSnapshot {
    /// The condition of the given type, if the status has one.
    pub fn condition(&self, type_: crate::reason::SnapshotCondition) -> Option<&Condition> {
        crate::conditions::find(&self.status.as_ref()?.conditions, type_)
    }

    /// Whether the snapshot exists and a session may be restored from it.
    pub fn is_ready(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && self
                .condition(crate::reason::SnapshotCondition::ReadyToUse)
                .is_some_and(|c| c.status == "True")
    }

    /// When it was taken (`None` while a manual one is pending), to the
    /// millisecond its name (`<kind>-<unix ms>`) gives: `status.takenAt`
    /// has whole seconds, too coarse to order a stop and a delete.
    pub fn taken_at(&self) -> Option<k8s_openapi::jiff::Timestamp> {
        let recorded = self.status.as_ref()?.taken_at.as_ref()?.0;
        let (_, name) = self.dataset_and_name();
        let precise = SnapshotReason::of_name(name)
            .and(name.rsplit_once('-'))
            .and_then(|(_, ms)| ms.parse::<i64>().ok())
            .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok());
        Some(precise.unwrap_or(recorded))
    }

    /// The dataset and the snapshot's short name (`<dataset>`, `<name>`).
    pub fn dataset_and_name(&self) -> (&str, &str) {
        self.spec
            .snapshot
            .split_once('@')
            .unwrap_or((&self.spec.snapshot, ""))
    }
}

/// How many of a session's snapshots are kept: the newest `keep_last`, and
/// every one younger than `keep_days`. The newest of a session, and one a
/// workspace was cloned from, are kept whatever these say.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retention {
    /// The newest this many are kept (at least 1).
    pub keep_last: u32,
    /// Every one younger than this many days is kept (0: none for its age).
    pub keep_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 5,
            keep_days: 7,
        }
    }
}

impl Retention {
    /// The most either value may be.
    pub const MAX: u32 = 100_000;
}

/// An account's own retention, as an admin set it: each value set replaces
/// the node agent's, each unset one keeps it. The annotation
/// [`crate::keys::SNAPSHOT_RETENTION_ANNOTATION`] carries it as JSON
/// (`{"keepLast": 2, "keepDays": 0}`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionOverride {
    /// The newest this many are kept (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    /// Every one younger than this many days is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_days: Option<u32>,
}

impl RetentionOverride {
    /// Parses the annotation's JSON; the error says what is wrong.
    pub fn parse(text: &str) -> Result<RetentionOverride, String> {
        let r: RetentionOverride = serde_json::from_str(text).map_err(|e| {
            format!("snapshot retention {text:?} is not {{\"keepLast\": N, \"keepDays\": D}}: {e}")
        })?;
        r.check()
            .map_err(|(field, e)| format!("snapshot retention: {field} {e}"))?;
        Ok(r)
    }

    /// Whether the values set are within bounds; the error names the first
    /// that is not.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.keep_last == Some(0) {
            return Err((
                "keepLast",
                "must be at least 1 (the newest snapshot is always kept)".into(),
            ));
        }
        for (name, v) in [("keepLast", self.keep_last), ("keepDays", self.keep_days)] {
            if v.is_some_and(|v| v > Retention::MAX) {
                return Err((name, format!("must be at most {}", Retention::MAX)));
            }
        }
        Ok(())
    }

    /// `base` with the values this sets in place.
    pub fn over(self, base: Retention) -> Retention {
        Retention {
            keep_last: self.keep_last.unwrap_or(base.keep_last),
            keep_days: self.keep_days.unwrap_or(base.keep_days),
        }
    }
}

/// The resource name of a session's snapshot: `<session>-<name>`, or
/// `<session uid>-<name>` when that would be too long for a name.
pub fn snapshot_object_name(session: &str, uid: &str, name: &str) -> String {
    let readable = format!("{session}-{name}");
    if readable.len() <= 253 {
        readable
    } else {
        format!("{uid}-{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_the_agents_names() {
        assert_eq!(
            SnapshotReason::of_name("stop-1700000000000"),
            Some(SnapshotReason::Stop)
        );
        assert_eq!(
            SnapshotReason::of_name("death-1"),
            Some(SnapshotReason::Death)
        );
        assert_eq!(SnapshotReason::of_name("stop-x"), None);
        assert_eq!(SnapshotReason::of_name("backup-1"), None);
        assert_eq!(SnapshotReason::of_name("stop"), None);
        assert_eq!(snapshot_object_name("web", "u", "stop-1"), "web-stop-1");
        let long = "a".repeat(250);
        assert_eq!(snapshot_object_name(&long, "u", "stop-1"), "u-stop-1");
    }

    #[test]
    fn taken_at_has_the_milliseconds_of_the_name() {
        let mut r = WorkspaceSnapshot::new(
            "web-stop-1700000000123",
            WorkspaceSnapshotSpec {
                owner: "alice".into(),
                session: SnapshotSource {
                    name: "web".into(),
                    uid: "u".into(),
                },
                node: "n".into(),
                snapshot: "p/alice/u@stop-1700000000123".into(),
                reason: SnapshotReason::Stop,
            },
        );
        assert_eq!(r.taken_at(), None, "pending");
        let second = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap();
        r.status = Some(WorkspaceSnapshotStatus {
            taken_at: Some(Time(second)),
            ..Default::default()
        });
        assert_eq!(r.taken_at().unwrap().as_millisecond(), 1_700_000_000_123);
        r.spec.snapshot = "p/alice/u@backup".into();
        assert_eq!(r.taken_at(), Some(second));
    }

    #[test]
    fn retention_is_parsed_bounded_and_laid_over_the_agents() {
        let base = Retention {
            keep_last: 5,
            keep_days: 7,
        };
        let full = RetentionOverride::parse(r#"{"keepLast": 2, "keepDays": 0}"#).unwrap();
        assert_eq!(
            full.over(base),
            Retention {
                keep_last: 2,
                keep_days: 0
            }
        );
        let partial = RetentionOverride::parse(r#"{"keepLast": 2}"#).unwrap();
        assert_eq!(
            partial.over(base),
            Retention {
                keep_last: 2,
                keep_days: 7
            }
        );
        for bad in [
            r#"{"keepLast": 0, "keepDays": 1}"#,
            r#"{"keepLast": 2, "keepDays": 1, "extra": 1}"#,
            r#"{"keepLast": 200000, "keepDays": 1}"#,
            r#"{"keepDays": -1}"#,
            "2",
        ] {
            assert!(RetentionOverride::parse(bad).is_err(), "{bad}");
        }
    }
}
