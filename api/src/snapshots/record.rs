//! The record a manual snapshot request writes, and the rules around it.
//! Pure: no I/O.

use std::collections::BTreeMap;

use medforge_crds::keys::{OWNER_LABEL, SNAPSHOT_RETENTION_ANNOTATION, container::SESSION_UID};
use medforge_crds::snapshot::snapshot_object_name;
use medforge_crds::{
    DesiredState, Session, SessionPhase, SnapshotReason, SnapshotSource, WorkspaceSnapshot,
    WorkspaceSnapshotSpec,
};

use super::view::{SnapshotState, snapshot_state};

/// The most manual snapshots of one session that may wait to be taken at
/// once; more are refused until the node agent has taken some.
pub const MAX_PENDING_MANUAL: usize = 3;

/// The workspace a manual snapshot of `session` is taken of: its dataset and
/// node, while the session runs (phase `Running`, wanted running, the
/// dataset named by its node agent); `None` otherwise.
pub fn running_workspace(session: &Session) -> Option<(&str, &str)> {
    if session.phase() != SessionPhase::Running || session.spec.state != DesiredState::Running {
        return None;
    }
    let status = session.status.as_ref()?;
    let dataset = status.workspace.as_ref()?.dataset.as_deref()?;
    Some((dataset, status.node_name.as_deref()?))
}

/// The snapshot's own name for a manual snapshot asked for at `at_ms`
/// (Unix milliseconds).
pub fn manual_name(at_ms: i64) -> String {
    format!("manual-{at_ms}")
}

/// The record asking the node agent on `node` to take `<dataset>@manual-<at_ms>`
/// of `session`: reason `Manual`, no status, no finalizer (the agent adds
/// its own), labelled like the agent's records, with the Session's snapshot
/// retention when it has one.
pub fn manual_record(
    session: &Session,
    dataset: &str,
    node: &str,
    at_ms: i64,
) -> WorkspaceSnapshot {
    snapshot_record(
        session,
        dataset,
        node,
        &manual_name(at_ms),
        SnapshotReason::Manual,
    )
}

/// The record of the snapshot `<dataset>@<name>` of `session` on `node`,
/// taken for `reason`, as the node agent labels its own: no status, no
/// finalizer, with the Session's snapshot retention when it has one.
pub fn snapshot_record(
    session: &Session,
    dataset: &str,
    node: &str,
    name: &str,
    reason: SnapshotReason,
) -> WorkspaceSnapshot {
    let session_name = session.metadata.name.clone().unwrap_or_default();
    let uid = session.metadata.uid.clone().unwrap_or_default();
    let mut record = WorkspaceSnapshot::new(
        &snapshot_object_name(&session_name, &uid, name),
        WorkspaceSnapshotSpec {
            owner: session.spec.owner.clone(),
            session: SnapshotSource {
                name: session_name,
                uid: uid.clone(),
            },
            node: node.to_owned(),
            snapshot: format!("{dataset}@{name}"),
            reason,
        },
    );
    record.metadata.labels = Some(BTreeMap::from([
        (OWNER_LABEL.to_owned(), session.spec.owner.clone()),
        (SESSION_UID.to_owned(), uid),
    ]));
    if let Some(retention) = session
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SNAPSHOT_RETENTION_ANNOTATION))
    {
        record.metadata.annotations = Some(BTreeMap::from([(
            SNAPSHOT_RETENTION_ANNOTATION.to_owned(),
            retention.clone(),
        )]));
    }
    record
}

/// Whether a record is a manual snapshot still waiting for the node agent.
pub fn is_pending_manual(record: &WorkspaceSnapshot) -> bool {
    record.spec.reason == SnapshotReason::Manual
        && snapshot_state(record).0 == SnapshotState::Pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use medforge_crds::{SessionSpec, SessionStatus, WorkspaceStatus};

    fn session(phase: SessionPhase, dataset: Option<&str>) -> Session {
        let mut s = Session::new(
            "web",
            SessionSpec {
                owner: "ada".into(),
                pack: "p".into(),
                exposure: Default::default(),
                gpus: 1,
                state: DesiredState::Running,
                resources: None,
                workspace: None,
                idle_timeout: None,
                max_lifetime: None,
                resume_requested_at: None,
            },
        );
        s.metadata.uid = Some("u-1".into());
        s.metadata.annotations = Some(BTreeMap::from([(
            SNAPSHOT_RETENTION_ANNOTATION.to_owned(),
            r#"{"keepLast": 2, "keepDays": 1}"#.to_owned(),
        )]));
        s.status = Some(SessionStatus {
            phase: Some(phase),
            node_name: Some("node-a".into()),
            workspace: Some(WorkspaceStatus {
                dataset: dataset.map(str::to_owned),
                snapshots: vec![],
            }),
            ..SessionStatus::default()
        });
        s
    }

    #[test]
    fn only_a_running_session_with_a_dataset_has_a_workspace_to_snapshot() {
        let running = session(SessionPhase::Running, Some("pool/ada/u-1"));
        assert_eq!(
            running_workspace(&running),
            Some(("pool/ada/u-1", "node-a"))
        );
        assert_eq!(
            running_workspace(&session(SessionPhase::Running, None)),
            None
        );
        assert_eq!(
            running_workspace(&session(SessionPhase::Stopped, Some("pool/ada/u-1"))),
            None
        );
        let mut stopping = running.clone();
        stopping.spec.state = DesiredState::Stopped;
        assert_eq!(running_workspace(&stopping), None);
    }

    #[test]
    fn a_manual_record_names_the_session_its_workspace_and_the_agents_labels() {
        let s = session(SessionPhase::Running, Some("pool/ada/u-1"));
        let r = manual_record(&s, "pool/ada/u-1", "node-a", 1_700_000_000_123);
        assert_eq!(r.metadata.name.as_deref(), Some("web-manual-1700000000123"));
        assert_eq!(
            r.spec,
            WorkspaceSnapshotSpec {
                owner: "ada".into(),
                session: SnapshotSource {
                    name: "web".into(),
                    uid: "u-1".into()
                },
                node: "node-a".into(),
                snapshot: "pool/ada/u-1@manual-1700000000123".into(),
                reason: SnapshotReason::Manual,
            }
        );
        let labels = r.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[OWNER_LABEL], "ada");
        assert_eq!(labels[SESSION_UID], "u-1");
        assert_eq!(
            r.metadata.annotations.as_ref().unwrap()[SNAPSHOT_RETENTION_ANNOTATION],
            r#"{"keepLast": 2, "keepDays": 1}"#
        );
        assert!(r.status.is_none() && r.metadata.finalizers.is_none());
        assert!(is_pending_manual(&r));
        assert_eq!(
            SnapshotReason::of_name(&manual_name(5)),
            Some(SnapshotReason::Manual)
        );
    }
}
