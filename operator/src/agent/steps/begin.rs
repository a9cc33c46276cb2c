//! `Begin`: check the inputs (Pack, spec, image, restore snapshot, GPUs)
//! before anything is made, then write `Starting`. A missing image is
//! pulled first (`ImagePulling`).

use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::events::EventType;
use medforge_crds::{EventAction, SessionReason};

use super::pass::{Next, Pass};
use crate::agent::context::write_status;
use crate::agent::error::Error;
use crate::agent::plan::{self};
use crate::agent::pulls::{self, PullState};
use crate::agent::runtime::{Cluster, Containers, Workspaces};
use crate::agent::spec;

/// How often a session waiting for its image looks at the pull.
const PULL_POLL: Duration = Duration::from_secs(2);

/// Whether the session's `Ready` condition gives `reason` already.
fn has_reason(s: &medforge_crds::Session, reason: SessionReason) -> bool {
    s.status
        .as_ref()
        .and_then(|st| {
            medforge_crds::conditions::find(&st.conditions, medforge_crds::SessionCondition::Ready)
        })
        .is_some_and(|c| c.reason == reason.as_str())
}

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// The ZFS snapshot the session restores from, read from its record.
    pub(super) async fn restore_source(&self) -> Result<Result<String, spec::InvalidSpec>, Error> {
        let Pass { ctx, s, .. } = *self;
        let name = spec::restore_from(s).unwrap_or_default();
        let record = ctx
            .cluster
            .get_snapshot(&s.namespace().unwrap_or_default(), name)
            .await?;
        Ok(spec::restore_source(&ctx.config, s, record.as_ref()))
    }

    /// The Pack's image is not on the node: starts (or looks at) its pull,
    /// and says how far it is in the session's status. Nothing else is made
    /// until the image is there; a failed pull is tried again (with
    /// backoff) while the session waits, so it recovers on its own.
    async fn pull(&self, image: &str) -> Result<Next, Error> {
        let Pass { ctx, s, now, .. } = *self;
        let cfg = &ctx.config;
        if !pulls::pullable(image) {
            let msg = format!(
                "image {image} of pack {:?} is not present on node {}, and a local image id cannot be pulled: \
                 load it on the node (docker load), or name it as repository@sha256:… in the Pack so nodes pull it",
                s.spec.pack, cfg.node_name
            );
            return self.fail(SessionReason::ImageNotPresent, &msg).await;
        }
        match ctx.pulls.ensure(&ctx.containers, image, &ctx.metrics) {
            // The next pass finds the image on the node.
            PullState::Done => Ok(Next::Wait(Duration::from_millis(100))),
            PullState::Pulling(progress) => {
                if let Some(st) = plan::status_image_pulling(s, image, &progress, now) {
                    let first = !has_reason(s, SessionReason::Pulling);
                    write_status(ctx, s, st).await?;
                    if first {
                        let msg = plan::pull_message(image, &progress);
                        ctx.publish(
                            s,
                            EventType::Normal,
                            SessionReason::Pulling,
                            EventAction::Start,
                            msg,
                        );
                    }
                }
                Ok(Next::Wait(PULL_POLL))
            }
            PullState::Failed {
                error,
                attempts,
                retry_in,
            } => {
                if let Some(st) = plan::status_pull_failed(s, &error, attempts, retry_in, now) {
                    let first = !has_reason(s, error.reason());
                    write_status(ctx, s, st).await?;
                    if first {
                        ctx.publish(
                            s,
                            EventType::Warning,
                            error.reason(),
                            EventAction::Start,
                            error.to_string(),
                        );
                    }
                }
                Ok(Next::Wait(retry_in.max(PULL_POLL)))
            }
        }
    }

    /// The Pack names a tag no node agent has resolved for its current
    /// generation: the session waits (`Ready=False`, `ImageUnresolved`,
    /// with the Pack's own word on why when it has one).
    async fn unresolved(&self, pack: &medforge_crds::Pack) -> Result<Next, Error> {
        let Pass { ctx, s, now, .. } = *self;
        let why = pack
            .status
            .as_ref()
            .and_then(|st| {
                medforge_crds::conditions::find(
                    &st.conditions,
                    medforge_crds::PackCondition::Resolved,
                )
            })
            .filter(|c| c.status == "False")
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        let msg = format!(
            "pack {:?} names the tag {}, not resolved to a digest yet{why}",
            s.spec.pack, pack.spec.image
        );
        if let Some(st) = plan::status_waiting(s, SessionReason::ImageUnresolved, &msg, now) {
            write_status(ctx, s, st).await?;
        }
        Ok(Next::Wait(PULL_POLL))
    }

    /// Checks the inputs before anything is made, then writes `Starting`.
    pub(super) async fn begin(&self, dataset: &str) -> Result<Next, Error> {
        let Pass { ctx, s, now, .. } = *self;
        let cfg = &ctx.config;
        let Some(pack) = ctx.cluster.get_pack(&s.spec.pack).await? else {
            let msg = format!(
                "pack {:?} does not exist: create the Pack, or give the session an existing one",
                s.spec.pack
            );
            return self.fail(SessionReason::PackNotFound, &msg).await;
        };
        let amounts = match spec::validate(cfg, s, &pack) {
            Ok(amounts) => amounts,
            Err(e) => return self.fail(e.reason, &e.message).await,
        };
        let Some(image) = pack.pinned_image() else {
            return self.unresolved(&pack).await;
        };
        if !ctx.containers.image_present(image).await? {
            return self.pull(image).await;
        }
        // A resumed session has its dataset already: the snapshot it was
        // first cloned from may be long gone.
        if self.w.dataset.is_none() && spec::restore_from(s).is_some() {
            let src = match self.restore_source().await? {
                Ok(src) => src,
                Err(e) => return self.fail(e.reason, &e.message).await,
            };
            if !ctx.workspaces.snapshot_exists(&src).await? {
                let msg = format!("workspace.restoreFrom: snapshot {src} is gone from the pool");
                return self.fail(SessionReason::SnapshotNotFound, &msg).await;
            }
        }
        if let Some((uuid, holder)) = ctx.gpu_conflict(s) {
            let msg = format!(
                "GPU {uuid} is in use by session {holder} on this node; waiting until it is free"
            );
            tracing::error!(session = %s.name_any(), %uuid, %holder, "a GPU bound to two sessions");
            if let Some(st) = plan::status_gpu_in_use(s, &msg, now) {
                write_status(ctx, s, st).await?;
                ctx.publish(
                    s,
                    EventType::Warning,
                    SessionReason::GpuInUse,
                    EventAction::Start,
                    msg,
                );
            }
            return Ok(Next::Wait(Duration::from_secs(2)));
        }
        let updated = write_status(
            ctx,
            s,
            plan::status_starting(s, dataset, amounts.limits(), now),
        )
        .await?;
        Ok(Next::written(updated))
    }
}
