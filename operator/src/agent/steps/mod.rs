//! The step executors: one module per kind of work, each applying one
//! [`Step`] the plan decided. Every I/O goes through the runtime traits;
//! what a refusal means for the session is decided here from the typed
//! runtime errors, and the status written comes from [`super::plan`].

mod begin;
mod container;
mod dataset;
mod port;
mod stop;

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, Session, SessionReason};

use super::context::Context;
use super::controller::Error;
use super::driver::write_status;
use super::plan::{self, Step, World};
use super::runtime::{Cluster, Containers, Workspaces};
use super::spec::session_dataset;

/// What applying a step leads to.
pub(super) enum Next {
    /// Look again now, with the session as the step left it (when it wrote it).
    Again(Option<Box<Session>>),
    /// Look again after this long.
    Wait(Duration),
}

impl Next {
    /// Look again now; the step wrote nothing.
    const AGAIN: Next = Next::Again(None);

    /// Look again now with the session as the step wrote it.
    fn written(s: Session) -> Next {
        Next::Again(Some(Box::new(s)))
    }
}

/// One pass over a session: what a step executor works with.
pub(super) struct Pass<'a, C, W, K> {
    pub ctx: &'a Context<C, W, K>,
    /// The session as this pass read it.
    pub s: &'a Session,
    /// What this pass observed.
    pub w: &'a World,
    pub now: Timestamp,
}

impl<C, W, K> Clone for Pass<'_, C, W, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, W, K> Copy for Pass<'_, C, W, K> {}

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// Fails the session at once. A container that never ran is removed, so
    /// a refused start leaves nothing half-made behind.
    async fn fail(&self, why: SessionReason, message: &str) -> Result<Next, Error> {
        let Pass { ctx, s, w, now } = *self;
        if let Some(c) = w.container.as_ref()
            && !c.ever_started()
            && c.session_uid() == s.uid().as_deref()
        {
            ctx.containers.remove(&c.id).await?;
        }
        let updated = write_status(ctx, s, plan::status_failed(s, why, message, now)).await?;
        ctx.gpus.release(&s.uid().unwrap_or_default());
        tracing::warn!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), reason = %why, %message, "failed");
        ctx.publish(
            s,
            EventType::Warning,
            why,
            EventAction::Start,
            message.to_string(),
        );
        Ok(Next::written(updated))
    }
}

/// Applies one step.
pub(super) async fn apply<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    step: Step,
    now: Timestamp,
) -> Result<Next, Error> {
    let dataset = session_dataset(&ctx.config, s).unwrap_or_default();
    let p = &Pass { ctx, s, w, now };
    match step {
        Step::Wait(_) => unreachable!("waits are not applied"),
        Step::Begin => p.begin(&dataset).await,
        Step::CreateDataset => p.create_dataset(&dataset).await,
        Step::MountDataset => dataset::mount(ctx, &dataset).await,
        Step::ChownWorkspace => p.chown_workspace(&dataset).await,
        Step::CreateContainer => p.create_container().await,
        Step::StartContainer => p.start_container().await,
        Step::AwaitPort { addr } => p.await_port(addr).await,
        Step::BeginStop(cause) => p.begin_stop(&cause).await,
        Step::StopContainer | Step::StopStray => stop::stop_container(ctx, w).await,
        Step::Snapshot { name } => stop::snapshot(ctx, &dataset, &name).await,
        Step::Finish => p.finish().await,
        Step::Fail { reason, message } => p.fail(reason, &message).await,
    }
}
