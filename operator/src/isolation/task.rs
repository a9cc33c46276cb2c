//! The task that keeps a Docker network isolated while the node agent runs.

use std::net::Ipv4Addr;

use bollard::Docker;

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
    Bridge::of_network(
        info.id.as_deref().unwrap_or_default(),
        info.options.as_ref(),
    )
}

/// Keeps a network isolated for as long as the future runs: applies the
/// rules at start and every `period` after (idempotent: a pass that finds
/// the rules in place changes nothing), which also restores them after a
/// dockerd restart or a network re-creation. A network that does not exist
/// yet (the node agent creates it) is waited for; a failure is logged and
/// tried again at the next pass.
pub async fn keep_applied(
    docker: Docker,
    network: String,
    isolation: Isolation,
    allowed: Vec<Ipv4Addr>,
    period: std::time::Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let result = match bridge_of_network(&docker, &network).await {
            Ok(bridge) => isolation
                .apply(&bridge, &allowed)
                .await
                .map(|a| (bridge, a)),
            Err(e) => Err(e),
        };
        match result {
            Ok((bridge, applied)) => {
                if applied.changed() {
                    tracing::info!(%network, %bridge, ?applied, "east-west isolation applied");
                }
                last_error.clear();
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(%network, error = %msg, "east-west isolation not applied yet; will try again");
                    last_error = msg;
                }
            }
        }
    }
}
