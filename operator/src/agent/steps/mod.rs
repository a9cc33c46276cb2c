//! The step executors: one module per kind of work, each applying one
//! [`Step`] the plan decided. Every I/O goes through the runtime traits;
//! what a refusal means for the session is decided here from the typed
//! runtime errors, and the status written comes from [`super::plan`].
//! `pass` holds what they all work with ([`Pass`], [`Next`]); this module
//! only dispatches a step to its executor.

mod begin;
mod container;
mod dataset;
mod pass;
mod port;
mod stop;

use k8s_openapi::jiff::Timestamp;
use medforge_crds::Session;

use super::context::Context;
use super::error::Error;
use super::plan::{Step, World};
use super::runtime::{Cluster, Containers, Workspaces};
use super::spec::session_dataset;

pub(super) use pass::Next;
use pass::Pass;

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
        Step::RemoveContainer => stop::remove_container(ctx, w).await,
        Step::Snapshot { name } => stop::snapshot(ctx, &dataset, &name).await,
        Step::Finish => p.finish().await,
        Step::Fail { reason, message } => p.fail(reason, &message).await,
        Step::TouchActivity => p.touch_activity().await,
    }
}
