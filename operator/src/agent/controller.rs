//! The kube-runtime controller's entry points: [`reconcile`] (the finalizer
//! around the driver and the cleanup) and [`error_policy`] (count, report,
//! back off), with the reconcile [`Error`] and its categories.

use std::sync::Arc;
use std::time::Instant;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use medforge_crds::{EventAction, Session, SessionCondition, SessionReason};

use super::cleanup::cleanup;
use super::context::Context;
use super::driver::drive;
use super::runtime::{ContainerError, Containers, KubeCluster, WorkspaceError, Workspaces};

pub use medforge_crds::keys::AGENT_FINALIZER as FINALIZER;

/// Why a reconcile failed. Failures of the session itself (bad input, a dead
/// container) are not errors: they are written to its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The category used as metric label and Event reason.
    pub fn category(&self) -> SessionReason {
        match self {
            Error::Container(ContainerError::Unavailable { .. }) => {
                SessionReason::DockerUnavailable
            }
            Error::Container(_) => SessionReason::DockerError,
            Error::Workspace(WorkspaceError::Unavailable { .. }) => SessionReason::ZfsUnavailable,
            Error::Workspace(_) => SessionReason::ZfsError,
            Error::Kube(_) => SessionReason::KubernetesApiError,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => SessionReason::FinalizerError,
            },
        }
    }
}

/// The whole cause chain on one line, cut to Kubernetes' 1 KiB note limit.
pub fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    if out.len() > 1024 {
        let mut cut = 1021;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

impl Error {
    /// A runtime that does not answer, as the condition it concerns and the
    /// reason shown there; `None` for every other error.
    pub fn outage(&self) -> Option<(SessionCondition, SessionReason)> {
        match self {
            Error::Container(ContainerError::Unavailable { .. }) => Some((
                SessionCondition::ContainerReady,
                SessionReason::DockerUnavailable,
            )),
            Error::Workspace(WorkspaceError::Unavailable { .. }) => Some((
                SessionCondition::WorkspaceReady,
                SessionReason::ZfsUnavailable,
            )),
            _ => None,
        }
    }

    /// Someone else wrote the session since we read it (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}

/// Whether this agent is responsible for the session.
pub fn bound_here(s: &Session, node: &str) -> bool {
    s.bound_node() == Some(node)
}

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
