//! The task that keeps a Docker network isolated while the node agent runs.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use tokio::sync::{Notify, watch};

use super::error::{IsolationError, Result};
use super::iptables::Isolation;
use super::rules::Bridge;

/// Looks up the bridge interface of a user-defined Docker bridge network
/// (by name or id).
pub async fn bridge_of_network(docker: &Docker, network: &str) -> Result<Bridge> {
    let info = docker
        .inspect_network(network, None)
        .await
        .map_err(|source| IsolationError::Docker {
            network: network.to_string(),
            source,
        })?;
    let driver = info.driver.unwrap_or_default();
    if driver != "bridge" {
        return Err(IsolationError::NotABridge {
            network: network.to_string(),
            driver,
        });
    }
    if info.enable_ipv6 == Some(true) {
        return Err(IsolationError::Ipv6Enabled {
            network: network.to_string(),
        });
    }
    Bridge::of_network(
        info.id.as_deref().unwrap_or_default(),
        info.options.as_ref(),
    )
}

/// Whether the sessions' network is isolated now: what the node agent
/// checks before it starts a session's container, and publishes on its
/// GpuNode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IsolationStatus {
    /// The agent runs without isolation (configured so; tests only).
    Disabled,
    /// Not known yet (the first pass has not run, or the network does not
    /// exist yet).
    Pending(String),
    /// The rules are in place for this bridge.
    Applied { bridge: String },
    /// The rules could not be put in place; why.
    Failed(String),
}

/// Shares [`IsolationStatus`] between the task that keeps the rules applied
/// and those who wait for it, and lets a waiter ask for a pass at once.
#[derive(Clone)]
pub struct IsolationGate {
    status: Arc<watch::Sender<IsolationStatus>>,
    wake: Arc<Notify>,
}

impl IsolationGate {
    /// A gate whose status is `initial`.
    pub fn new(initial: IsolationStatus) -> Self {
        IsolationGate {
            status: Arc::new(watch::channel(initial).0),
            wake: Arc::new(Notify::new()),
        }
    }

    /// The status now.
    pub fn status(&self) -> IsolationStatus {
        self.status.borrow().clone()
    }

    /// Follows the status.
    pub fn subscribe(&self) -> watch::Receiver<IsolationStatus> {
        self.status.subscribe()
    }

    /// Publishes a pass's outcome; waiters wake even when it is the same as before.
    fn set(&self, status: IsolationStatus) {
        self.status.send_replace(status);
    }

    /// `Ok` when the rules are in place (or isolation is disabled); else
    /// asks for a pass now, waits up to `within` for one to end, and says
    /// why not when they are still not in place.
    pub async fn ready(&self, within: Duration) -> std::result::Result<(), String> {
        if matches!(
            self.status(),
            IsolationStatus::Applied { .. } | IsolationStatus::Disabled
        ) {
            return Ok(());
        }
        let mut rx = self.status.subscribe();
        self.wake.notify_one();
        let _ = tokio::time::timeout(within, rx.changed()).await;
        match self.status() {
            IsolationStatus::Applied { .. } | IsolationStatus::Disabled => Ok(()),
            IsolationStatus::Pending(why) | IsolationStatus::Failed(why) => Err(why),
        }
    }
}

/// Keeps a network isolated for as long as the future runs: applies the
/// rules at start, every `period` after and whenever the gate asks
/// (idempotent: a pass that finds the rules in place changes nothing),
/// which also restores them after a dockerd restart, a flushed firewall or
/// a network re-creation. Every pass publishes its outcome on the gate; a
/// network that does not exist yet (the node agent creates it) is
/// `Pending`.
pub async fn keep_applied(
    docker: Docker,
    network: String,
    isolation: Isolation,
    allowed: Vec<Ipv4Addr>,
    period: std::time::Duration,
    gate: IsolationGate,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = gate.wake.notified() => {}
        }
        let result = match bridge_of_network(&docker, &network).await {
            Ok(bridge) => isolation
                .apply(&bridge, &allowed)
                .await
                .map(|a| (bridge, a)),
            Err(IsolationError::Docker { source, .. }) if is_not_found(&source) => {
                gate.set(IsolationStatus::Pending(format!(
                    "the sessions' network {network} does not exist yet"
                )));
                continue;
            }
            Err(e) => Err(e),
        };
        match result {
            Ok((bridge, applied)) => {
                if applied.changed() {
                    tracing::info!(%network, %bridge, ?applied, "east-west isolation applied");
                }
                last_error.clear();
                gate.set(IsolationStatus::Applied {
                    bridge: bridge.to_string(),
                });
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(%network, error = %msg, "east-west isolation not in place: no session container starts until it is; will try again");
                    last_error = msg.clone();
                }
                gate.set(IsolationStatus::Failed(msg));
            }
        }
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
