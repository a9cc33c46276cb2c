//! The long-running parts a command starts (the scheduler, the node agent,
//! the api) and how they stop.
//!
//! Shutdown, in one place: SIGTERM or Ctrl-C cancels one token that every
//! part watches. [`Parts::stop`] then waits for the scheduler and the node
//! agent to drain what they have in flight (at most 30 s each). The agent
//! keeps its side tasks, the isolation of its sessions' network among them,
//! running until its steps in flight are done, and leaves the isolation rules
//! in place. Containers are never touched: they keep running and are adopted
//! at the next start.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medforge_operator::agent::AgentConfig;
use medforge_operator::scheduler::controller::SchedulerConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long each draining part may take before it is left behind.
const DRAIN_WITHIN: Duration = Duration::from_secs(30);

/// The parts a command runs in the background, and the token that stops them.
pub struct Parts {
    shutdown: CancellationToken,
    /// Awaited in this order on shutdown.
    draining: Vec<(&'static str, JoinHandle<()>)>,
}

impl Parts {
    /// Nothing running yet; the token is cancelled on SIGTERM or Ctrl-C.
    pub fn new() -> Parts {
        Parts {
            shutdown: shutdown_token(),
            draining: Vec::new(),
        }
    }

    /// The token every part watches: cancelled on SIGTERM, Ctrl-C or [`Parts::stop`].
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts the scheduler (it takes part in the leader election).
    pub fn start_scheduler(&mut self, client: kube::Client, config: SchedulerConfig) {
        let task = tokio::spawn(scheduler_loop(client, config, self.shutdown()));
        self.draining.push(("scheduler", task));
    }

    /// Starts the node agent (which keeps its sessions' network isolated).
    pub fn start_agent(&mut self, client: kube::Client, config: AgentConfig) {
        let task = tokio::spawn(agent_task(client, config, self.shutdown()));
        self.draining.push(("node agent", task));
    }

    /// Stops every part: cancels the token and waits for the scheduler and
    /// the node agent to drain.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for (name, task) in self.draining {
            match tokio::time::timeout(DRAIN_WITHIN, task).await {
                Ok(_) => tracing::info!(part = name, "drained"),
                Err(_) => {
                    tracing::warn!(
                        part = name,
                        "did not drain within {DRAIN_WITHIN:?}; leaving it"
                    )
                }
            }
        }
    }
}

/// A token cancelled on SIGTERM or Ctrl-C.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        medforge_api::shutdown_signal().await;
        t.cancel();
    });
    token
}

/// Runs the scheduler, stepping back into the election whenever leadership is
/// lost, until `shutdown` is cancelled; then it drains (see the scheduler).
async fn scheduler_loop(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) {
    loop {
        let outcome = medforge_operator::scheduler::controller::run(
            client.clone(),
            config.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await;
        let Err(e) = outcome else { return };
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!(error = %e, "scheduler stopped; rejoining the election");
        if !pause(Duration::from_secs(1), &shutdown).await {
            return;
        }
    }
}

/// Runs the node agent; when it cannot start (Docker not answering, say),
/// says why and how to fix it, and tries again rather than ending `medforge up`.
async fn agent_task(client: kube::Client, config: AgentConfig, shutdown: CancellationToken) {
    let mut delay = Duration::from_secs(1);
    loop {
        tracing::info!(node = %config.node_name, "node agent starting");
        let outcome = medforge_operator::agent::run(
            client.clone(),
            config.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await;
        let Err(e) = outcome else { return };
        tracing::error!(error = %e, socket = %config.docker_socket.display(), "the node agent stopped; is Docker running (`systemctl start docker`, or `medforge up --quickstart`)? Retrying in {delay:?}");
        if !pause(delay, &shutdown).await {
            return;
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Waits `delay`; false when `shutdown` was cancelled first.
async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Starts the api, waits until its session index has synced (so that no
/// request sees an empty index and answers 404 for a live session), then
/// listens on `listen` and serves until `shutdown` is cancelled.
pub async fn serve_api(
    config: medforge_api::ApiConfig,
    client: kube::Client,
    listen: SocketAddr,
    listen_flag: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Arc::new(medforge_api::backend::KubeBackend::new(
        client,
        &config.sessions.namespace,
    ));
    let api = medforge_api::Api::start(config, backend)
        .await
        .context("starting the api")?;
    if !api.wait_synced(Duration::from_secs(30)).await {
        tracing::warn!("the api's session watch has not synced within 30 s; serving anyway");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("the api cannot listen on {listen}: is the port in use? Pick another with {listen_flag}")
        })?;
    api.serve(listener, shutdown.cancelled_owned())
        .await
        .context("serving the api")
}
