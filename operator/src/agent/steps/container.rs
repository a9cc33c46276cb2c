//! The container steps: create it (the network first), start it.

use std::time::Duration;

use kube::runtime::events::EventType;
use medforge_crds::{EventAction, SessionCondition, SessionReason};

/// How long a start waits for an isolation pass it asked for.
const ISOLATION_WAIT: Duration = Duration::from_secs(2);
/// When a start that found no isolation looks again.
const ISOLATION_RETRY: Duration = Duration::from_secs(2);

use super::pass::{Next, Pass};
use crate::agent::context::write_status;
use crate::agent::error::Error;
use crate::agent::plan;
use crate::agent::runtime::{Cluster, ContainerError, Containers, Workspaces};
use crate::agent::spec;

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// `CreateContainer`: the container the spec describes, on the sessions'
    /// network.
    pub(super) async fn create_container(&self) -> Result<Next, Error> {
        let Pass { ctx, s, w, .. } = *self;
        let cfg = &ctx.config;
        let Some(pack) = ctx.cluster.get_pack(&s.spec.pack).await? else {
            let msg = format!("pack {:?} does not exist any more", s.spec.pack);
            return self.fail(SessionReason::PackNotFound, &msg).await;
        };
        let mountpoint = w
            .dataset
            .as_ref()
            .and_then(|d| d.mountpoint.clone())
            .unwrap_or_default();
        let spec = match spec::container_spec(cfg, s, &pack, &mountpoint) {
            Ok(spec) => spec,
            Err(e) => return self.fail(e.reason, &e.message).await,
        };
        ctx.network
            .ensure(|| ctx.containers.ensure_network(&cfg.network))
            .await?;
        match ctx.containers.create(&spec).await {
            // A taken name is looked at by the next pass: ours is adopted,
            // another session's is refused.
            Ok(_) | Err(ContainerError::Conflict { .. }) => Ok(Next::AGAIN),
            Err(ContainerError::NetworkMissing { .. }) => {
                ctx.network.forget().await;
                Ok(Next::AGAIN)
            }
            Err(ContainerError::NotFound { what }) => {
                let msg = format!(
                    "{what}: the image of pack {:?} is not on node {} (removed, or the Pack changed, since the session began)",
                    s.spec.pack, cfg.node_name
                );
                self.fail(SessionReason::ImageNotPresent, &msg).await
            }
            Err(ContainerError::Rejected { message, .. }) => {
                let msg = format!(
                    "Docker refused to create container {}: {message}",
                    spec.name
                );
                self.fail(SessionReason::ContainerFailed, &msg).await
            }
            Err(e) => {
                // A network removed under us is created again on the next try.
                ctx.network.forget().await;
                Err(e.into())
            }
        }
    }
    /// `StartContainer`. A container whose network was removed since it was
    /// created is made again (it never ran).
    pub(super) async fn start_container(&self) -> Result<Next, Error> {
        let Pass { ctx, w, s, now } = *self;
        let c = w.container.as_ref().expect("decided on a container");
        // Fails closed: without the isolation rules, the container waits.
        if let Err(why) = ctx.isolation.ready(ISOLATION_WAIT).await {
            let msg = format!(
                "waiting for the node's east-west isolation before starting the container: {why}"
            );
            if let Some(st) = plan::status_runtime_unavailable(
                s,
                SessionCondition::ContainerReady,
                SessionReason::IsolationUnavailable,
                &msg,
                now,
            ) {
                write_status(ctx, s, st).await?;
                ctx.publish(
                    s,
                    EventType::Warning,
                    SessionReason::IsolationUnavailable,
                    EventAction::Start,
                    msg,
                );
            }
            return Ok(Next::Wait(ISOLATION_RETRY));
        }
        match ctx.containers.start(&c.id).await {
            Ok(()) | Err(ContainerError::NotFound { .. }) => Ok(Next::AGAIN),
            Err(ContainerError::NetworkMissing { .. }) => {
                ctx.network.forget().await;
                ctx.containers.remove(&c.id).await?;
                Ok(Next::AGAIN)
            }
            Err(ContainerError::Rejected { message, .. }) => {
                let msg = format!("Docker could not start container {}: {message}", c.name);
                self.fail(SessionReason::ContainerFailed, &msg).await
            }
            Err(e) => Err(e.into()),
        }
    }
}
