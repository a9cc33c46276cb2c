//! What every step executor works with: one [`Pass`] over a session, and
//! the [`Next`] thing to do after a step.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, Session, SessionReason};

use crate::agent::context::{Context, write_status};
use crate::agent::error::Error;
use crate::agent::plan::{self, World};
use crate::agent::runtime::{Cluster, Containers, Workspaces};

/// What applying a step leads to.
pub(crate) enum Next {
    /// Look again now, with the session as the step left it (when it wrote it).
    Again(Option<Box<Session>>),
    /// Look again after this long.
    Wait(Duration),
}

impl Next {
    /// Look again now; the step wrote nothing.
    pub(super) const AGAIN: Next = Next::Again(None);

    /// Look again now with the session as the step wrote it.
    pub(super) fn written(s: Session) -> Next {
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
    pub(super) async fn fail(&self, why: SessionReason, message: &str) -> Result<Next, Error> {
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
