//! The driver: read the world, decide the next step ([`plan::decide`]),
//! apply it ([`super::steps::apply`]), again until there is nothing to do
//! now.
//!
//! Each pass re-reads the container and dataset and takes exactly one step,
//! so an agent killed anywhere resumes from what it finds.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use medforge_crds::{Session, SessionPhase};

use super::context::{Context, write_status};
use super::error::Error;
use super::plan::{self, Step, Touched, World};
use super::runtime::{Cluster, Containers, Workspaces, labels};
use super::spec::{container_name, session_dataset};
use super::steps::{Next, apply};

/// Steps one reconcile may take before yielding to other sessions.
const MAX_STEPS_PER_RECONCILE: usize = 32;

/// Runs passes for a live session until nothing is left to do now.
pub async fn drive<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: Session,
) -> Result<Action, Error> {
    let policy = ctx.policy();
    let Some(fresh) = latest(ctx, s).await? else {
        return Ok(Action::await_change());
    };
    if fresh.meta().deletion_timestamp.is_some() {
        // Deleted since the cache saw it: the next reconcile cleans up.
        return Ok(Action::requeue(Duration::ZERO));
    }
    let mut s = fresh;
    let mut previous: Option<(World, Touched)> = None;
    for _ in 0..MAX_STEPS_PER_RECONCILE {
        let world = match observe(ctx, &s, previous.take()).await {
            Ok(w) => w,
            Err(e) => return Err(report_runtime(ctx, &s, e).await),
        };
        let now = Timestamp::now();
        let step = plan::decide(&s, &world, &policy, now);
        let Some(kind) = step.kind() else {
            return Ok(match step {
                Step::Wait(Some(d)) => Action::requeue(d),
                _ => Action::await_change(),
            });
        };
        tracing::debug!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), step = kind.as_str(), "step");
        if let Some(hook) = &ctx.config.step_hook {
            hook(&s, kind).await;
        }
        ctx.metrics.step(kind.as_str());
        match apply(ctx, &s, &world, step, now).await {
            Ok(Next::Again(updated)) => {
                if let Some(updated) = updated {
                    s = *updated;
                }
                previous = Some((world, Touched::by(kind)));
            }
            Ok(Next::Wait(d)) => return Ok(Action::requeue(d)),
            Err(e) if e.is_conflict() => {
                // Someone else wrote the session since we read it: read it again.
                match ctx
                    .cluster
                    .get_session(&s.namespace().unwrap_or_default(), &s.name_any())
                    .await?
                {
                    Some(fresh) if fresh.uid() == s.uid() => {
                        if fresh.meta().deletion_timestamp.is_some() {
                            return Ok(Action::requeue(Duration::ZERO));
                        }
                        s = fresh;
                    }
                    _ => return Ok(Action::await_change()),
                }
            }
            Err(e) => return Err(report_runtime(ctx, &s, e).await),
        }
    }
    Ok(Action::requeue(Duration::ZERO))
}

/// Docker or ZFS not answering shows on the session as an `Unknown`
/// condition (written once), then the error goes to the error policy.
async fn report_runtime<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    e: Error,
) -> Error {
    let Some((condition, why)) = e.outage() else {
        return e;
    };
    if let Some(st) =
        plan::status_runtime_unavailable(s, condition, why, &e.to_string(), Timestamp::now())
        && let Err(write) = write_status(ctx, s, st).await
    {
        tracing::debug!(session = %s.name_any(), error = %write, "could not record the runtime outage");
    }
    e
}

/// Reads what this pass needs: the container always, the dataset in the
/// phases that create or snapshot it. Each reconcile starts from a full
/// read; later passes of it read again what the last step touched.
async fn observe<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    previous: Option<(World, Touched)>,
) -> Result<World, Error> {
    let (prev, touched) = previous.unwrap_or((World::default(), Touched::ALL));
    let mut world = World::default();
    let st = s.status.clone().unwrap_or_default();
    if plan::needs_dataset(s)
        && let Some(dataset) = session_dataset(&ctx.config, s)
    {
        world.dataset = if prev.dataset_observed && !touched.dataset {
            prev.dataset
        } else {
            ctx.workspaces.inspect(&dataset).await?
        };
        world.dataset_observed = true;
        if let Some(planned) = plan::planned_snapshot(s)
            && let Some(d) = &world.dataset
        {
            world.planned_snapshot_exists = Some(d.snapshots.contains(&planned));
        }
    }
    let Some(slug) = st.slug.as_deref() else {
        return Ok(world);
    };
    if !touched.container {
        world.container = prev.container;
        return Ok(world);
    }
    let name = container_name(&ctx.config.container_prefix, slug);
    world.container = ctx.containers.inspect(&name).await?;
    if s.phase() == SessionPhase::Running
        && plan::probes_activity(s, ctx.config.activity_lead, Timestamp::now())
        && let Some(c) = &world.container
        && let Some(port) = c.port()
    {
        world.open_connections = Some(ctx.containers.open_connections(c, port).await?);
    }
    if world.container.is_none()
        && plan::looks_for_other_container(s, &world, ctx.policy().container_owner)
        && let Some(uid) = s.uid()
    {
        // Never a second container: look for one of this session under
        // another name (created with another prefix) before creating.
        let found = ctx
            .containers
            .list(&[(labels::SESSION_UID.to_string(), uid)])
            .await?;
        if let Some(other) = found.first() {
            world.container = ctx.containers.inspect(&other.id).await?;
        }
    }
    Ok(world)
}

/// The session as the API has it now when the watch cache has not caught up
/// with our own last write yet (deciding on the older copy would redo a step).
async fn latest<C, W, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: Session,
) -> Result<Option<Session>, Error> {
    let Some(uid) = s.uid() else {
        return Ok(Some(s));
    };
    // Once seen again (from the cache or the API) the entry has served.
    let ours = ctx.written.take(&uid);
    if ours.is_none() || ours == s.resource_version() {
        return Ok(Some(s));
    }
    match ctx
        .cluster
        .get_session(&s.namespace().unwrap_or_default(), &s.name_any())
        .await?
    {
        Some(fresh) if fresh.uid() == Some(uid) => Ok(Some(fresh)),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests;
