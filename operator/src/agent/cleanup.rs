//! Finalizer cleanup: when a Session is deleted, its containers go
//! (whatever their name) and its dataset per the workspace policy. Things
//! already gone are fine.

use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, Session, SessionReason};

use super::context::Context;
use super::error::Error;
use super::plan;
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
        if plan::destroys_workspace(s, ctx.config.workspace_on_delete) {
            match ctx.workspaces.destroy(&dataset).await? {
                Destroyed::Destroyed => note.push_str(&format!("; destroyed dataset {dataset}")),
                Destroyed::AlreadyGone => note.push_str(&format!("; dataset {dataset} was gone")),
                Destroyed::PromotedClones(clones) => note.push_str(&format!(
                    "; destroyed dataset {dataset} after promoting its clones {}",
                    clones.join(", ")
                )),
            }
        } else {
            note.push_str(&format!("; kept dataset {dataset}"));
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
