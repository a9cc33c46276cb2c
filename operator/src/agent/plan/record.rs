//! The `WorkspaceSnapshot` record of a snapshot the agent took. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use medforge_crds::conditions::set_condition;
use medforge_crds::keys::{OWNER_LABEL, container::SESSION_UID};
use medforge_crds::snapshot::snapshot_object_name;
use medforge_crds::{
    Session, SnapshotReason, SnapshotSource, WorkspaceSnapshot, WorkspaceSnapshotSpec,
    WorkspaceSnapshotStatus,
};

use super::model::{World, planned_snapshot};

/// The condition a snapshot record carries.
pub const READY_TO_USE: &str = "ReadyToUse";

/// Whose a snapshot is: the Session it was taken of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOf {
    pub namespace: String,
    pub session: String,
    pub uid: String,
    pub owner: String,
}

impl SnapshotOf {
    pub fn session(s: &Session) -> SnapshotOf {
        SnapshotOf {
            namespace: s.namespace().unwrap_or_default(),
            session: s.name_any(),
            uid: s.uid().unwrap_or_default(),
            owner: s.spec.owner.clone(),
        }
    }
}

/// The record of a snapshot `<dataset>@<name>` of `of` on `node`, taken at
/// the time its name says; `None` for a name the agent does not give.
pub fn snapshot_record(
    of: &SnapshotOf,
    dataset: &str,
    name: &str,
    node: &str,
    size_bytes: Option<i64>,
    now: Timestamp,
) -> Option<WorkspaceSnapshot> {
    let reason = SnapshotReason::of_name(name)?;
    let mut record = WorkspaceSnapshot::new(
        &snapshot_object_name(&of.session, &of.uid, name),
        WorkspaceSnapshotSpec {
            owner: of.owner.clone(),
            session: SnapshotSource {
                name: of.session.clone(),
                uid: of.uid.clone(),
            },
            node: node.to_string(),
            snapshot: format!("{dataset}@{name}"),
            reason,
        },
    );
    record.metadata.namespace = Some(of.namespace.clone());
    record.metadata.labels = Some(BTreeMap::from([
        (OWNER_LABEL.to_string(), of.owner.clone()),
        (SESSION_UID.to_string(), of.uid.clone()),
    ]));
    let taken_at = name
        .rsplit_once('-')
        .and_then(|(_, ms)| ms.parse::<i64>().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(now);
    let mut status = WorkspaceSnapshotStatus {
        taken_at: Some(Time(taken_at)),
        size_bytes,
        ..Default::default()
    };
    set_condition(
        &mut status.conditions,
        READY_TO_USE,
        Some(true),
        "Taken",
        &format!("snapshot {dataset}@{name} exists on node {node}"),
        None,
        Time(now),
    );
    record.status = Some(status);
    Some(record)
}

/// Whose a snapshot found on the pool is, from its place
/// `<root>/<owner>/<uid>@<name>` and its dataset's `medforge:session`
/// property (`<namespace>/<name>`): `None` for anything else.
pub fn found_snapshot(
    root: &str,
    snapshot: &str,
    session_property: Option<&str>,
) -> Option<(SnapshotOf, String, String)> {
    let (dataset, name) = snapshot.split_once('@')?;
    SnapshotReason::of_name(name)?;
    let rest = dataset.strip_prefix(root)?.strip_prefix('/')?;
    let (owner, uid) = rest.split_once('/')?;
    if uid.contains('/') || owner.is_empty() || uid.is_empty() {
        return None;
    }
    let (namespace, session) = session_property?.split_once('/')?;
    Some((
        SnapshotOf {
            namespace: namespace.to_string(),
            session: session.to_string(),
            uid: uid.to_string(),
            owner: owner.to_string(),
        },
        dataset.to_string(),
        name.to_string(),
    ))
}

/// The record of the snapshot a stop just took: the planned one, when it
/// exists on ZFS.
pub fn stop_record(
    s: &Session,
    w: &World,
    dataset: &str,
    node: &str,
    now: Timestamp,
) -> Option<WorkspaceSnapshot> {
    let name = planned_snapshot(s)?;
    if w.dataset.is_none() || w.planned_snapshot_exists != Some(true) {
        return None;
    }
    snapshot_record(&SnapshotOf::session(s), dataset, &name, node, None, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_on_the_pool_are_recognised_by_their_place_and_name() {
        let (of, dataset, name) = found_snapshot(
            "pool/ws",
            "pool/ws/alice/u1@stop-1700000000000",
            Some("team/web"),
        )
        .unwrap();
        assert_eq!(
            of,
            SnapshotOf {
                namespace: "team".into(),
                session: "web".into(),
                uid: "u1".into(),
                owner: "alice".into()
            }
        );
        assert_eq!(
            (dataset.as_str(), name.as_str()),
            ("pool/ws/alice/u1", "stop-1700000000000")
        );
        let r =
            snapshot_record(&of, &dataset, &name, "n1", Some(42), Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(r.metadata.name.as_deref(), Some("web-stop-1700000000000"));
        assert_eq!(r.spec.reason, SnapshotReason::Stop);
        let st = r.status.unwrap();
        assert_eq!(st.size_bytes, Some(42));
        assert_eq!(st.taken_at.unwrap().0.as_millisecond(), 1_700_000_000_000);
        // Not the agent's: another name, another place, no session property.
        for (snap, prop) in [
            ("pool/ws/alice/u1@backup", Some("team/web")),
            ("pool/other/alice/u1@stop-1", Some("team/web")),
            ("pool/ws/alice@stop-1", Some("team/web")),
            ("pool/ws/alice/u1/x@stop-1", Some("team/web")),
            ("pool/ws/alice/u1@stop-1", None),
        ] {
            assert!(found_snapshot("pool/ws", snap, prop).is_none(), "{snap}");
        }
    }
}
