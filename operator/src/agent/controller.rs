//! The kube-runtime controller's entry points: [`reconcile`] (the finalizer
//! around the driver and the cleanup) and [`error_policy`] (count, report,
//! back off). The reconcile [`Error`] (from `super::error`) and
//! [`bound_here`] (from `super::spec`) are re-exported here, where they
//! have always been public.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use medforge_crds::{EventAction, Session};

use super::cleanup::cleanup;
use super::context::Context;
use super::driver::drive;
use super::runtime::{Containers, KubeCluster, Workspaces};

pub use super::error::{Error, cause_chain};
pub use super::spec::bound_here;
pub use medforge_crds::keys::AGENT_FINALIZER as FINALIZER;

/// The controller's reconcile function.
pub async fn reconcile<C: Containers, W: Workspaces>(
    s: Arc<Session>,
    ctx: Arc<Context<C, W, KubeCluster>>,
) -> Result<Action, Error> {
    if !bound_here(&s, &ctx.config.node_name) {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = s.namespace().unwrap_or_default();
    let api: Api<Session> = Api::namespaced(ctx.cluster.client.clone(), &ns);
    let uid = s.uid().unwrap_or_default();
    let result = finalizer(&api, FINALIZER, s, |event| async {
        match event {
            Finalizer::Apply(s) => drive(&ctx, (*s).clone()).await,
            Finalizer::Cleanup(s) => cleanup(&ctx, &s).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&uid);
    }
    result
}

/// The controller's error policy: count, report as a Warning Event (reason
/// = category, note = the cause chain), and back off per session.
pub fn error_policy<C: Containers, W: Workspaces>(
    s: Arc<Session>,
    err: &Error,
    ctx: Arc<Context<C, W, KubeCluster>>,
) -> Action {
    let category = err.category();
    ctx.metrics.failure(category.as_str());
    let note = cause_chain(err);
    let delay = ctx.backoff.next(&s.uid().unwrap_or_default());
    tracing::warn!(
        session = %s.name_any(),
        namespace = %s.namespace().unwrap_or_default(),
        uid = %s.uid().unwrap_or_default(),
        category = %category,
        error = %note,
        retry_in = ?delay,
        "reconcile failed"
    );
    ctx.publish(
        &s,
        EventType::Warning,
        category,
        EventAction::Reconcile,
        note,
    );
    Action::requeue(delay)
}
