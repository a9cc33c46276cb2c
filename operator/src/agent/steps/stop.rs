//! The stop steps: record the cause and the snapshot to take (`Stopping`),
//! stop the container, take the snapshot, write the final phase.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, SessionPhase};

use super::pass::{Next, Pass};
use crate::agent::context::{Context, write_status};
use crate::agent::error::Error;
use crate::agent::plan::{self, StopCause, World};
use crate::agent::runtime::{Cluster, Containers, WorkspaceError, Workspaces};
use crate::agent::spec::session_dataset;

/// `StopContainer` and `StopStray`: SIGTERM, SIGKILL after the grace period.
pub(super) async fn stop_container<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    w: &World,
) -> Result<Next, Error> {
    let c = w.container.as_ref().expect("decided on a container");
    ctx.containers.stop(&c.id, ctx.config.stop_timeout).await?;
    Ok(Next::AGAIN)
}

/// `RemoveContainer`: the stopped container of an earlier run (gone already is fine).
pub(super) async fn remove_container<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    w: &World,
) -> Result<Next, Error> {
    let c = w.container.as_ref().expect("decided on a container");
    ctx.containers.remove(&c.id).await?;
    Ok(Next::AGAIN)
}

/// `Snapshot`: `dataset@name` (a dataset that is gone has nothing to keep).
pub(super) async fn snapshot<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    dataset: &str,
    name: &str,
) -> Result<Next, Error> {
    match ctx.workspaces.snapshot(&format!("{dataset}@{name}")).await {
        Ok(()) | Err(WorkspaceError::NotFound { .. }) => Ok(Next::AGAIN),
        Err(e) => Err(e.into()),
    }
}

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// `BeginStop`: write `Stopping` with the cause and the planned snapshot.
    pub(super) async fn begin_stop(&self, cause: &StopCause) -> Result<Next, Error> {
        let Pass { ctx, s, now, .. } = *self;
        let updated = write_status(ctx, s, plan::status_stopping(s, cause, now)).await?;
        let failed = StopCause::final_phase(cause.reason) == SessionPhase::Failed;
        tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), reason = %cause.reason, message = %cause.message, "stopping");
        ctx.publish(
            s,
            if failed {
                EventType::Warning
            } else {
                EventType::Normal
            },
            cause.reason,
            EventAction::Stop,
            cause.message.clone(),
        );
        Ok(Next::written(updated))
    }
    /// `Finish`: the final phase, the GPUs released.
    pub(super) async fn finish(&self) -> Result<Next, Error> {
        let Pass { ctx, s, w, now } = *self;
        // The snapshot's record first: a crash before the final write
        // repeats the Finish, and an existing record is fine.
        if let Some(dataset) = session_dataset(&ctx.config, s)
            && let Some(name) = plan::planned_snapshot(s)
            && w.planned_snapshot_exists == Some(true)
        {
            let size = ctx
                .workspaces
                .snapshot_size(&format!("{dataset}@{name}"))
                .await?;
            if let Some(record) =
                plan::stop_record(s, w, &dataset, &ctx.config.node_name, size, now)
            {
                ctx.cluster.record_snapshot(&record).await?;
            }
        }
        let st = plan::status_finished(s, w, now);
        let phase = st.phase;
        let updated = write_status(ctx, s, st).await?;
        ctx.gpus.release(&s.uid().unwrap_or_default());
        tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), ?phase, "finished");
        Ok(Next::written(updated))
    }
}
