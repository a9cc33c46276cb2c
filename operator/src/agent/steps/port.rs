//! `AwaitPort`: dial the workload until it answers, then write `Running`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use medforge_crds::{SessionCondition, SessionPhase, SessionReason};

use super::pass::{Next, Pass};
use crate::agent::context::write_status;
use crate::agent::error::Error;
use crate::agent::plan::{self};
use crate::agent::runtime::{Cluster, ContainerObs, Containers, Workspaces};

/// The longest one readiness probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

impl<C: Containers, W: Workspaces, K: Cluster> Pass<'_, C, W, K> {
    /// `TouchActivity`: connections to the workload were open as an idle
    /// stop came near: that is activity.
    pub(super) async fn touch_activity(&self) -> Result<Next, Error> {
        let Pass { ctx, s, w, now } = *self;
        let updated = write_status(ctx, s, plan::status_active(s, now)).await?;
        tracing::debug!(session = %s.name_any(), connections = ?w.open_connections, "open connections count as activity");
        Ok(Next::written(updated))
    }

    /// Dials the workload for a short burst; `Running` as soon as it answers,
    /// otherwise looks again after the probe interval.
    pub(super) async fn await_port(&self, addr: SocketAddr) -> Result<Next, Error> {
        let Pass { ctx, s, w, now } = *self;
        let cfg = &ctx.config;
        let c: &ContainerObs = w.container.as_ref().expect("decided on a container");
        let deadline = Instant::now() + cfg.probe_burst;
        loop {
            // A workload on the local bridge answers (or refuses) in
            // milliseconds; a dying container's address does not answer at all.
            let attempt = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(50), PROBE_TIMEOUT);
            match cfg.dialer.dial(addr, attempt).await {
                Ok(()) => {
                    let updated =
                        write_status(ctx, s, plan::status_running(s, c, addr, now)).await?;
                    tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), upstream = %addr, "running");
                    return Ok(Next::written(updated));
                }
                Err(e) if Instant::now() >= deadline => {
                    tracing::debug!(session = %s.name_any(), %addr, error = %e, "workload not answering yet");
                    let waiting = s
                        .condition(SessionCondition::Ready)
                        .is_some_and(|c| c.reason == SessionReason::WaitingForPort);
                    if !waiting && s.phase() == SessionPhase::Starting {
                        write_status(ctx, s, plan::status_waiting_for_port(s, addr, now)).await?;
                    }
                    return Ok(Next::Wait(cfg.probe_interval));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}
