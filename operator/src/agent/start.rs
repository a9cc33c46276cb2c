//! Starting the node agent: its controller and side tasks, and its drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use medforge_crds::Session;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::context::Context;
use super::controller::error_policy;
use super::docker::DockerContainers;
use super::metrics::{Health, Metrics};
use super::runtime::KubeCluster;
use super::spec::{bound_here, node_selector};
use super::zfs::ZfsWorkspaces;
use crate::isolation::{IsolationGate, IsolationStatus};
use crate::node::{self, HealthCheck, NodeFacts};

use super::config::AgentConfig;
use super::{controller, events, metrics, runtime, tasks};

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid Docker configuration: {0}")]
    Docker(#[from] runtime::ContainerError),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the node agent until `shutdown` resolves (in-flight steps finish
/// first). Docker or ZFS being down does not end it: sessions and the
/// GpuNode show it, and the agent reconnects.
pub async fn run(
    client: Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    let containers = DockerContainers::connect(&config.docker_socket)?;
    let workspaces = ZfsWorkspaces::new(&config.zfs_binary);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let node = config.node_name.clone();
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "medforge-node-agent".to_string(),
            instance: Some(node.clone()),
        },
    );

    // One cache of this node's Sessions, and only those: the watch selects
    // `status.nodeName=<node>` on the control plane, so neither the cache
    // nor the watch traffic grows with the rest of the fleet. A Session
    // bound elsewhere later leaves it (the watch says DELETED). The
    // heartbeat counts this node's GPUs from it.
    let (store, writer) = reflector::store();
    let trigger_node = node.clone();
    let trigger = watcher(
        Api::<Session>::all(client.clone()),
        watcher::Config::default().fields(&node_selector(&node)),
    )
    .default_backoff()
    .reflect(writer)
    .applied_objects()
    .try_filter(move |s| futures::future::ready(bound_here(s, &trigger_node)));

    let metrics_server = match config.metrics_addr {
        Some(addr) => {
            let counter_store = store.clone();
            let counter_node = node.clone();
            let cached = metrics.cached_sessions.clone();
            let app = metrics::router(
                metrics.clone(),
                health.clone(),
                Arc::new(move || {
                    cached.set(counter_store.state().len() as i64);
                    tasks::sessions_by_phase(&counter_store, &counter_node)
                }),
            );
            let (bound, serve) = metrics::bind(addr, app)
                .await
                .map_err(|source| AgentError::Metrics { addr, source })?;
            tracing::info!(%bound, "serving metrics, /healthz and /readyz");
            config.observe(|st| st.metrics_addr = Some(bound));
            serve.boxed()
        }
        None => futures::future::pending().boxed(),
    };

    let docker_health: HealthCheck = {
        let c = containers.clone();
        Arc::new(move || {
            let c = c.clone();
            async move { c.health().await }.boxed()
        })
    };
    let zfs_health: HealthCheck = {
        let w = workspaces.clone();
        let root = config.dataset_root.clone();
        Arc::new(move || {
            let (w, root) = (w.clone(), root.clone());
            async move { w.health(&root).await }.boxed()
        })
    };
    // No session container starts until the isolation rules are in place
    // (when the agent manages them).
    let gate = IsolationGate::new(if config.isolation.is_some() {
        IsolationStatus::Pending("the first isolation pass has not run yet".into())
    } else {
        IsolationStatus::Disabled
    });
    let facts = NodeFacts {
        isolation: Some(gate.subscribe()),
        node_name: node.clone(),
        inventory: config.inventory.clone(),
        docker: docker_health,
        zfs: zfs_health,
        storage_note: config.storage_note.clone(),
    };
    let heartbeat_store = store.clone();
    let heartbeat = node::heartbeat_loop(
        client.clone(),
        facts,
        move || heartbeat_store.state(),
        config.heartbeat,
    );

    let (event_tx, event_rx) = mpsc::channel(1024);
    let (everyone_tx, everyone_rx) = mpsc::channel(1);
    let docker_events = events::watch(
        containers.client().clone(),
        node.clone(),
        event_tx,
        everyone_tx,
        health.clone(),
        metrics.clone(),
    );

    let sweeper = tasks::sweep_loop(
        config.clone(),
        containers.clone(),
        store.clone(),
        recorder.clone(),
        metrics.clone(),
    );
    let root = {
        let (workspaces, config) = (workspaces.clone(), config.clone());
        let cluster = KubeCluster {
            client: client.clone(),
        };
        async move {
            tasks::ensure_root(workspaces.clone(), config.dataset_root.clone()).await;
            tasks::adopt_snapshots(config, workspaces, cluster).await;
        }
    };
    let synced = tasks::synced(config.clone(), store.clone(), health.clone());
    let snapshots = super::snapshots::run(
        client.clone(),
        workspaces.clone(),
        config.clone(),
        Some(recorder.clone()),
    );
    let isolation = tasks::isolation(config.clone(), containers.clone(), gate.clone());

    let peers_store = store.clone();
    let ctx = Arc::new(
        Context::new(
            config.clone(),
            containers.clone(),
            workspaces.clone(),
            KubeCluster {
                client: client.clone(),
            },
            metrics.clone(),
            Some(recorder),
        )
        .with_peers(Arc::new(move || peers_store.state()))
        .with_isolation(gate),
    );
    let packs = super::packs::run(
        client.clone(),
        node.clone(),
        containers.clone(),
        ctx.pulls.clone(),
        metrics.clone(),
        config.packs_period,
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::for_stream(trigger, store.clone())
        .with_config(kube_controller::Config::default().concurrency(config.concurrency))
        .reconcile_on(ReceiverStream::new(event_rx))
        .reconcile_all_on(ReceiverStream::new(everyone_rx))
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(controller::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        });

    tracing::info!(node = %node, config = ?config, "node agent starting");
    tokio::pin!(controller);
    tokio::pin!(shutdown);
    let side = async {
        tokio::join!(
            metrics_server,
            heartbeat,
            docker_events,
            sweeper,
            root,
            synced,
            isolation,
            snapshots,
            packs
        );
    };
    tokio::pin!(side);
    tokio::select! {
        _ = &mut controller => {}
        _ = &mut side => {}
        _ = &mut shutdown => {
            tracing::info!("node agent stopping: finishing the steps in flight");
            let _ = stop_tx.send(());
            // The side tasks keep running (heartbeat, events) until the
            // controller has drained.
            tokio::select! {
                _ = &mut controller => {}
                _ = &mut side => {}
            }
        }
    }
    tracing::info!("node agent stopped");
    Ok(())
}
