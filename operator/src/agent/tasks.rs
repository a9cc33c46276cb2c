//! The agent's long-running side tasks next to the controller: the orphan
//! sweep, the dataset root, the cache-synced mark, east-west isolation.
//! Each runs until the agent drops it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use medforge_crds::{EventAction, GpuNode, NodeReason, Session};

use super::config::AgentConfig;
use super::docker::DockerContainers;
use super::metrics::{Health, Metrics};
use super::recovery;
use super::spec::bound_here;
use super::zfs::ZfsWorkspaces;
use crate::isolation::{Isolation, IsolationGate, keep_applied};

/// This node's sessions by phase, for the metrics.
pub(super) fn sessions_by_phase(store: &Store<Session>, node: &str) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for s in store.state() {
        if bound_here(&s, node) {
            *out.entry(format!("{:?}", s.phase())).or_insert(0) += 1;
        }
    }
    out
}

fn gpunode_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some(medforge_crds::API_VERSION.to_string()),
        kind: Some(GpuNode::kind(&()).to_string()),
        name: Some(node.to_string()),
        ..Default::default()
    }
}

/// Removes orphan containers at start (once the cache is synced) and then
/// every `orphan_sweep`.
pub(super) async fn sweep_loop(
    config: AgentConfig,
    containers: DockerContainers,
    store: Store<Session>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
) {
    let _ = store.wait_until_ready().await;
    let node = config.node_name.clone();
    loop {
        let live: HashSet<String> = store
            .state()
            .iter()
            .filter(|s| bound_here(s, &node))
            .filter_map(|s| s.uid())
            .collect();
        match recovery::sweep(
            &containers,
            &node,
            &live,
            config.orphan_grace,
            Timestamp::now(),
        )
        .await
        {
            Ok(sweep) => {
                for c in &sweep.removed {
                    metrics.orphans_removed.inc();
                    let note = format!(
                        "removed container {} ({}): no Session with uid {} is bound to this node",
                        c.name,
                        c.id,
                        c.session_uid().unwrap_or("(none)")
                    );
                    tracing::warn!(container = %c.name, %note, "orphan container");
                    let event = KubeEvent {
                        type_: EventType::Warning,
                        reason: NodeReason::OrphanContainerRemoved.to_string(),
                        note: Some(note),
                        action: EventAction::Sweep.to_string(),
                        secondary: None,
                    };
                    if let Err(e) = recorder.publish(&event, &gpunode_ref(&node)).await {
                        tracing::debug!(error = %e, "could not publish an event");
                    }
                }
                config.observe(|st| {
                    st.adopted = sweep.adopted;
                    st.orphans_removed += sweep.removed.len();
                    st.sweeps += 1;
                });
            }
            Err(e) => tracing::warn!(error = %e, "could not look for orphan containers"),
        }
        tokio::time::sleep(config.orphan_sweep).await;
    }
}

/// Creates the dataset root, retrying while ZFS does not answer.
pub(super) async fn ensure_root(workspaces: ZfsWorkspaces, root: String) {
    let mut delay = Duration::from_millis(200);
    loop {
        match workspaces.ensure_root(&root).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(dataset = %root, error = %e, "cannot create the workspace root; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Gives every snapshot the agent took on this node's pool its
/// `WorkspaceSnapshot`, once at start (those taken before the records
/// existed, or whose record was lost): `<root>/<owner>/<uid>@stop-…` or
/// `@death-…`, whose dataset names its Session (`medforge:session`).
/// Retried with backoff until one pass went through.
pub(super) async fn adopt_snapshots(
    config: AgentConfig,
    workspaces: ZfsWorkspaces,
    cluster: super::runtime::KubeCluster,
) {
    let mut delay = Duration::from_millis(500);
    loop {
        match adopt_snapshots_once(&config, &workspaces, &cluster).await {
            Ok(adopted) => {
                tracing::info!(
                    adopted,
                    "snapshots on the pool have their WorkspaceSnapshot"
                );
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt the pool's snapshots; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

async fn adopt_snapshots_once(
    config: &AgentConfig,
    workspaces: &ZfsWorkspaces,
    cluster: &super::runtime::KubeCluster,
) -> Result<usize, super::error::Error> {
    use super::runtime::{Cluster, Workspaces};
    use kube::api::ListParams;
    let recorded: HashSet<String> =
        kube::Api::<medforge_crds::WorkspaceSnapshot>::all(cluster.client.clone())
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .map(|r| r.spec.snapshot)
            .collect();
    let root = &config.dataset_root;
    let mut adopted = 0;
    for (snapshot, used) in workspaces.snapshots_under(root).await? {
        if recorded.contains(&snapshot) {
            continue;
        }
        let Some((dataset, _)) = snapshot.split_once('@') else {
            continue;
        };
        let property = workspaces
            .user_property(dataset, medforge_crds::keys::dataset::SESSION)
            .await?;
        let Some((of, dataset, name)) =
            super::plan::found_snapshot(root, &snapshot, property.as_deref())
        else {
            continue;
        };
        if let Some(record) = super::plan::snapshot_record(
            &of,
            &dataset,
            &name,
            &config.node_name,
            Some(used),
            Timestamp::now(),
        ) {
            // One that cannot be recorded (its namespace gone, say) does
            // not hold up the others.
            match cluster.record_snapshot(&record).await {
                Ok(()) => adopted += 1,
                Err(e) => {
                    tracing::warn!(%snapshot, error = %e, "could not record a snapshot found on the pool")
                }
            }
        }
    }
    Ok(adopted)
}

/// Marks the agent ready once the Session cache has its first full list.
pub(super) async fn synced(config: AgentConfig, store: Store<Session>, health: Arc<Health>) {
    let _ = store.wait_until_ready().await;
    health.synced.store(true, Ordering::Relaxed);
    config.observe(|st| st.synced = true);
    tracing::info!(
        sessions = sessions_by_phase(&store, &config.node_name)
            .values()
            .sum::<i64>(),
        "session cache synced"
    );
    futures::future::pending::<()>().await
}

/// Keeps the sessions' network isolated ([`crate::isolation`]) while the
/// agent runs, when the configuration asks for it.
pub(super) async fn isolation(
    config: AgentConfig,
    containers: DockerContainers,
    gate: IsolationGate,
) {
    let Some(prefix) = config.isolation.clone() else {
        return futures::future::pending().await;
    };
    keep_applied(
        containers.client().clone(),
        config.network.clone(),
        Isolation::new(prefix),
        Vec::new(),
        config.isolation_period,
        gate,
    )
    .await
}
