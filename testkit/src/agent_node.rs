//! The node agent under test on the harness: [`TestNode`] (from
//! `medforge_operator::agent::testing`) with the harness's dockerd and
//! zfs-fuse, confined to a test's scope (its datasets, network, container
//! names and labels).

use medforge_operator::agent::testing::{NodeRuntime, TestNode};

use crate::harness::Harness;
use crate::scope::TestScope;

/// Where a scoped node agent keeps its datasets, network and containers.
pub fn node_runtime(harness: &Harness, scope: &TestScope) -> NodeRuntime {
    NodeRuntime {
        docker_socket: harness.layout().docker_socket.clone(),
        zfs_binary: harness.zfs_binary().to_path_buf(),
        netns: harness.layout().netns_path.clone(),
        dataset_root: format!("{}/ws", scope.dataset()),
        network: scope.name("net"),
        container_prefix: scope.name(""),
        labels: scope.labels().into_iter().collect(),
    }
}

/// Starts a node agent named `<prefix>-node` in the scope's namespace, with
/// the workload image as its Pack, against `client`'s control plane.
pub async fn start_agent_node(
    harness: &Harness,
    scope: &TestScope,
    client: kube::Client,
) -> TestNode {
    let tag = harness.workload_image().await.expect("workload image");
    TestNode::start(
        client,
        scope.namespace().to_string(),
        format!("{}-node", scope.prefix()),
        harness.docker().clone(),
        &tag,
        node_runtime(harness, scope),
    )
    .await
}
