//! The `WorkspaceSnapshot` record of a snapshot the agent took. Pure.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use medforge_crds::conditions::set_condition;
use medforge_crds::keys::{
    OWNER_LABEL, SNAPSHOT_FINALIZER, SNAPSHOT_RETENTION_ANNOTATION, container::SESSION_UID,
};
use medforge_crds::snapshot::snapshot_object_name;
use medforge_crds::{
    Session, SnapshotCondition, SnapshotReason, SnapshotSource, SnapshotStatusReason,
    WorkspaceSnapshot, WorkspaceSnapshotSpec, WorkspaceSnapshotStatus,
};

use super::model::{World, planned_snapshot};

/// Whose a snapshot is: the Session it was taken of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotOf {
    pub namespace: String,
    pub session: String,
    pub uid: String,
    pub owner: String,
    /// The owner's own retention (the Session's annotation), copied onto
    /// the record.
    pub retention: Option<String>,
}

impl SnapshotOf {
    pub fn session(s: &Session) -> SnapshotOf {
        SnapshotOf {
            namespace: s.namespace().unwrap_or_default(),
            session: s.name_any(),
            uid: s.uid().unwrap_or_default(),
            owner: s.spec.owner.clone(),
            retention: s.annotations().get(SNAPSHOT_RETENTION_ANNOTATION).cloned(),
        }
    }
}

/// A record's status: taken at `taken_at`, `ReadyToUse` as given.
pub fn snapshot_status(
    taken_at: Option<Timestamp>,
    size_bytes: Option<i64>,
    ready: bool,
    reason: SnapshotStatusReason,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> WorkspaceSnapshotStatus {
    let mut status = WorkspaceSnapshotStatus {
        taken_at: taken_at.map(Time),
        size_bytes,
        observed_generation: generation,
        ..Default::default()
    };
    set_condition(
        &mut status.conditions,
        SnapshotCondition::ReadyToUse,
        Some(ready),
        reason,
        message,
        generation,
        Time(now),
    );
    status
}

/// The name of the `BeforeDelete` snapshot of a dataset that has
/// `existing` snapshots: the one taken already, else `predelete-<ms>` at the
/// deletion time, or just after the newest snapshot when that is later (a
/// deletion time has whole seconds), so that it sorts last.
pub fn predelete_name(existing: &[String], deleted_at: Timestamp) -> String {
    if let Some(done) = existing
        .iter()
        .find(|n| SnapshotReason::of_name(n) == Some(SnapshotReason::BeforeDelete))
    {
        return done.clone();
    }
    let newest = existing
        .iter()
        .filter(|n| SnapshotReason::of_name(n).is_some())
        .filter_map(|n| taken_at_of_name(n))
        .map(|t| t.as_millisecond() + 1)
        .max()
        .unwrap_or(0);
    format!("predelete-{}", deleted_at.as_millisecond().max(newest))
}

/// When a snapshot named `<kind>-<unix ms>` was taken.
pub fn taken_at_of_name(name: &str) -> Option<Timestamp> {
    name.rsplit_once('-')
        .and_then(|(_, ms)| ms.parse::<i64>().ok())
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
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
    record.metadata.finalizers = Some(vec![SNAPSHOT_FINALIZER.to_string()]);
    if let Some(r) = &of.retention {
        record.metadata.annotations = Some(BTreeMap::from([(
            SNAPSHOT_RETENTION_ANNOTATION.to_string(),
            r.clone(),
        )]));
    }
    record.status = Some(snapshot_status(
        Some(taken_at_of_name(name).unwrap_or(now)),
        size_bytes,
        true,
        SnapshotStatusReason::Taken,
        &format!("snapshot {dataset}@{name} exists on node {node}"),
        None,
        now,
    ));
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
            retention: None,
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
    size_bytes: Option<i64>,
    now: Timestamp,
) -> Option<WorkspaceSnapshot> {
    let name = planned_snapshot(s)?;
    if w.dataset.is_none() || w.planned_snapshot_exists != Some(true) {
        return None;
    }
    snapshot_record(
        &SnapshotOf::session(s),
        dataset,
        &name,
        node,
        size_bytes,
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_before_delete_snapshot_sorts_last_and_is_taken_once() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        assert_eq!(predelete_name(&[], at), "predelete-1800000000000");
        let earlier = vec!["stop-1700000000000".to_string(), "backup".to_string()];
        assert_eq!(predelete_name(&earlier, at), "predelete-1800000000000");
        // A stop in the same second as the deletion.
        let same_second = vec!["stop-1800000000123".to_string()];
        assert_eq!(predelete_name(&same_second, at), "predelete-1800000000124");
        let taken = vec!["stop-1".to_string(), "predelete-5".to_string()];
        assert_eq!(predelete_name(&taken, at), "predelete-5");
    }

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
                owner: "alice".into(),
                retention: None,
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
