//! Finalizer cleanup: when a Session is deleted, its containers go
//! (whatever their name) and its dataset per the workspace policy: by
//! default a `BeforeDelete` snapshot is taken and the dataset retired. Things
//! already gone are fine.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, Session, SessionReason};

use super::context::Context;
use super::error::Error;
use super::plan::{self, SnapshotOf, WorkspaceOnDelete};
use super::runtime::{Cluster, Containers, Destroyed, Workspaces, labels};
use super::spec::session_dataset;

/// Finalizer cleanup: the session's containers go (whatever their name), the
/// dataset per policy. Things already gone are fine.
pub async fn cleanup<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
) -> Result<Action, Error> {
    let uid = s.uid().unwrap_or_default();
    let found = ctx
        .containers
        .list(&[(labels::SESSION_UID.to_string(), uid.clone())])
        .await?;
    for c in &found {
        ctx.containers.remove(&c.id).await?;
    }
    ctx.gpus.release(&uid);
    ctx.written.take(&uid);
    let mut note = format!("removed {} container(s)", found.len());
    if let Some(dataset) = session_dataset(&ctx.config, s) {
        match plan::on_delete(s, ctx.config.workspace_on_delete) {
            WorkspaceOnDelete::Keep => note.push_str(&format!("; kept dataset {dataset}")),
            WorkspaceOnDelete::Destroy => {
                match ctx.workspaces.destroy(&dataset).await? {
                    Destroyed::Destroyed => {
                        note.push_str(&format!("; destroyed dataset {dataset}"))
                    }
                    Destroyed::AlreadyGone => {
                        note.push_str(&format!("; dataset {dataset} was gone"))
                    }
                    Destroyed::PromotedClones(clones) => note.push_str(&format!(
                        "; destroyed dataset {dataset} after promoting its clones {}",
                        clones.join(", ")
                    )),
                }
                let records = ctx
                    .cluster
                    .delete_snapshots_of(&s.namespace().unwrap_or_default(), &uid)
                    .await?;
                note.push_str(&format!("; deleted {records} snapshot record(s)"));
            }
            WorkspaceOnDelete::Snapshot => note.push_str(&retire(ctx, s, &dataset).await?),
        }
    }
    tracing::info!(session = %s.name_any(), %uid, %note, "cleaned up");
    ctx.publish(
        s,
        EventType::Normal,
        SessionReason::CleanedUp,
        EventAction::Delete,
        note,
    );
    Ok(Action::await_change())
}

/// The `BeforeDelete` snapshot and its record, then the dataset retired.
/// A repeated cleanup finds the snapshot and takes no second one.
async fn retire<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    dataset: &str,
) -> Result<String, Error> {
    let Some(obs) = ctx.workspaces.inspect(dataset).await? else {
        return Ok(format!("; dataset {dataset} was gone"));
    };
    let deleted_at = s
        .metadata
        .deletion_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let name = plan::predelete_name(&obs.snapshots, deleted_at);
    let snapshot = format!("{dataset}@{name}");
    if !obs.snapshots.contains(&name) {
        ctx.workspaces.snapshot(&snapshot).await?;
    }
    let size = ctx.workspaces.snapshot_size(&snapshot).await?;
    if let Some(record) = plan::snapshot_record(
        &SnapshotOf::session(s),
        dataset,
        &name,
        &ctx.config.node_name,
        size,
        Timestamp::now(),
    ) {
        ctx.cluster.record_snapshot(&record).await?;
    }
    ctx.workspaces
        .retire(dataset, &deleted_at.as_millisecond().to_string())
        .await?;
    Ok(format!(
        "; took snapshot {snapshot} and retired dataset {dataset} (it is destroyed with its last snapshot)"
    ))
}
