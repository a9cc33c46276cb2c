//! The node agent's `GpuNode`: it publishes its GPUs, Docker and ZFS health
//! and a heartbeat, so the scheduler knows what it may place here.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use medforge_crds::conditions::set_condition;
use medforge_crds::{
    ComponentHealth, GpuAllocation, GpuHealth, GpuInfo, GpuNode, GpuNodeSpec, GpuNodeStatus,
    NodeCondition, NodeReason, Session,
};

use tokio::sync::watch;

use crate::gpu::GpuInventory;
use crate::isolation::IsolationStatus;

/// Checks one runtime dependency (Docker, ZFS).
pub type HealthCheck = Arc<dyn Fn() -> BoxFuture<'static, ComponentHealth> + Send + Sync>;

/// What the publisher needs to describe its node.
#[derive(Clone)]
pub struct NodeFacts {
    pub node_name: String,
    pub inventory: Arc<dyn GpuInventory>,
    pub docker: HealthCheck,
    pub zfs: HealthCheck,
    /// Set when the workspaces live on storage meant only for trying
    /// MedForge out (the quickstart's file-backed pool): published as the
    /// condition `TrialStorage`, so nobody mistakes the node for production.
    pub storage_note: Option<String>,
    /// Whether the sessions' network is isolated (`None`: not reported).
    pub isolation: Option<watch::Receiver<IsolationStatus>>,
}

/// What a node agent observed on its node in one heartbeat.
pub struct Observed {
    pub gpus: Result<Vec<GpuInfo>, String>,
    pub docker: ComponentHealth,
    pub zfs: ComponentHealth,
    pub allocated: Vec<GpuAllocation>,
    pub now: Timestamp,
}

/// The status a node agent publishes, computed without I/O from what it
/// observed. `Ready` is True only when the GPUs could be listed and Docker
/// and ZFS both answer.
pub fn node_status(
    previous: Option<&GpuNodeStatus>,
    spec: &GpuNodeSpec,
    generation: Option<i64>,
    observed: Observed,
) -> GpuNodeStatus {
    let Observed {
        gpus,
        docker,
        zfs,
        allocated,
        now,
    } = observed;
    let mut status = previous.cloned().unwrap_or_default();
    let (gpus, gpu_error) = match gpus {
        Ok(g) => (g, None),
        // Keep the last known list; the node is not Ready until it reads again.
        Err(e) => (status.gpus.clone(), Some(e)),
    };
    let schedulable: Vec<&GpuInfo> = gpus
        .iter()
        .filter(|g| g.health == GpuHealth::Healthy)
        .filter(|g| {
            !spec
                .disabled_gpus
                .iter()
                .any(|d| d == &g.uuid || d == &g.index.to_string())
        })
        .collect();
    status.allocatable = schedulable.len() as u32;
    status.free = schedulable
        .iter()
        .filter(|g| !allocated.iter().any(|a| a.uuid == g.uuid))
        .count() as u32;
    status.capacity = gpus.len() as u32;
    status.gpus = gpus;
    status.allocated = allocated;
    status.agent_version = Some(env!("CARGO_PKG_VERSION").to_string());
    let mut problems = Vec::new();
    if !docker.healthy {
        problems.push(format!(
            "Docker: {}",
            docker.message.as_deref().unwrap_or("not answering")
        ));
    }
    if !zfs.healthy {
        problems.push(format!(
            "ZFS: {}",
            zfs.message.as_deref().unwrap_or("not answering")
        ));
    }
    if let Some(e) = gpu_error {
        problems.push(format!("GPUs: {e}"));
    }
    status.docker = Some(docker);
    status.zfs = Some(zfs);
    status.last_heartbeat_time = Some(Time(now));
    let (ready, reason, message) = if problems.is_empty() {
        (
            true,
            NodeReason::AgentReady,
            "the node agent runs and Docker and ZFS answer".to_string(),
        )
    } else {
        (false, NodeReason::RuntimeUnavailable, problems.join("; "))
    };
    set_condition(
        &mut status.conditions,
        NodeCondition::Ready,
        Some(ready),
        reason,
        &message,
        generation,
        Time(now),
    );
    status.observed_generation = generation;
    status
}

/// Which sessions hold which GPUs of this node.
pub fn allocations(node: &str, sessions: &[Arc<Session>]) -> Vec<GpuAllocation> {
    let mut out: Vec<GpuAllocation> = sessions
        .iter()
        .filter(|s| s.holds_binding())
        .filter(|s| s.status.as_ref().and_then(|st| st.node_name.as_deref()) == Some(node))
        .flat_map(|s| {
            let session = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            let uid = s.uid().unwrap_or_default();
            s.status
                .as_ref()
                .map(|st| st.gpus.clone())
                .unwrap_or_default()
                .into_iter()
                .map(move |g| GpuAllocation {
                    uuid: g.uuid,
                    session: session.clone(),
                    session_uid: uid.clone(),
                })
        })
        .collect();
    out.sort_by(|a, b| a.uuid.cmp(&b.uuid));
    out
}

/// Creates the GpuNode if needed and writes one heartbeat.
pub async fn publish(
    client: &Client,
    facts: &NodeFacts,
    sessions: &[Arc<Session>],
) -> Result<GpuNode, kube::Error> {
    let api: Api<GpuNode> = Api::all(client.clone());
    let node = match api.get_opt(&facts.node_name).await? {
        Some(n) => n,
        None => {
            let fresh = GpuNode {
                metadata: ObjectMeta {
                    name: Some(facts.node_name.clone()),
                    ..Default::default()
                },
                spec: GpuNodeSpec::default(),
                status: None,
            };
            match api.create(&PostParams::default(), &fresh).await {
                Ok(n) => n,
                Err(kube::Error::Api(s)) if s.code == 409 => api.get(&facts.node_name).await?,
                Err(e) => return Err(e),
            }
        }
    };
    let gpus = facts.inventory.gpus().map_err(|e| e.to_string());
    let (docker, zfs) = futures::join!((facts.docker)(), (facts.zfs)());
    let mut updated = node.clone();
    let now = Timestamp::now();
    let mut status = node_status(
        node.status.as_ref(),
        &node.spec,
        node.meta().generation,
        Observed {
            gpus,
            docker,
            zfs,
            allocated: allocations(&facts.node_name, sessions),
            now,
        },
    );
    match &facts.storage_note {
        Some(note) => {
            set_condition(
                &mut status.conditions,
                NodeCondition::TrialStorage,
                Some(true),
                NodeReason::FileBackedPool,
                note,
                node.meta().generation,
                Time(now),
            );
        }
        None => status
            .conditions
            .retain(|c| c.type_ != NodeCondition::TrialStorage),
    }
    if let Some(isolation) = &facts.isolation {
        let (ok, reason, message) = isolation_condition(&isolation.borrow());
        set_condition(
            &mut status.conditions,
            NodeCondition::Isolated,
            Some(ok),
            reason,
            &message,
            node.meta().generation,
            Time(now),
        );
    }
    updated.status = Some(status);
    api.replace_status(&facts.node_name, &PostParams::default(), &updated)
        .await
}

/// The `Isolated` condition for an isolation status.
pub fn isolation_condition(status: &IsolationStatus) -> (bool, NodeReason, String) {
    match status {
        IsolationStatus::Applied { bridge } => (
            true,
            NodeReason::IsolationApplied,
            format!("sessions on bridge {bridge} cannot reach each other"),
        ),
        IsolationStatus::Disabled => (
            false,
            NodeReason::IsolationDisabled,
            "the node agent runs without east-west isolation".into(),
        ),
        IsolationStatus::Pending(why) | IsolationStatus::Failed(why) => (
            false,
            NodeReason::IsolationUnavailable,
            format!("no session container starts until the isolation rules are in place: {why}"),
        ),
    }
}

/// How often the heartbeat loop looks for a change of this node's GPU
/// allocations between beats (a look at the in-memory cache, no I/O).
const ALLOCATION_CHECK: Duration = Duration::from_millis(250);

/// Publishes a heartbeat every `period` until the future is dropped, and
/// sooner when a session on this node binds or releases GPUs, so that
/// `status.allocated` and `status.free` follow the bindings within
/// [`ALLOCATION_CHECK`] rather than a whole period. A failed write is logged
/// and tried again at the next beat.
pub async fn heartbeat_loop(
    client: Client,
    facts: NodeFacts,
    sessions: impl Fn() -> Vec<Arc<Session>> + Send,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(ALLOCATION_CHECK.min(period));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published: Option<Vec<GpuAllocation>> = None;
    loop {
        let beat = tokio::select! {
            _ = tick.tick() => true,
            _ = check.tick() => false,
        };
        let current = sessions();
        let allocated = allocations(&facts.node_name, &current);
        if !beat && published.as_ref() == Some(&allocated) {
            continue;
        }
        match publish(&client, &facts, &current).await {
            Ok(_) => published = Some(allocated),
            Err(e) => {
                published = None;
                tracing::warn!(node = %facts.node_name, error = %e, "could not publish the GpuNode heartbeat");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medforge_testkit::assert_condition;

    fn gpu(i: u32, health: GpuHealth) -> GpuInfo {
        GpuInfo {
            index: i,
            uuid: format!("GPU-{i}"),
            model: "m".into(),
            memory_bytes: 1,
            health,
        }
    }

    fn observed(
        gpus: Result<Vec<GpuInfo>, String>,
        docker: ComponentHealth,
        now: Timestamp,
    ) -> Observed {
        Observed {
            gpus,
            docker,
            zfs: ok(),
            allocated: vec![],
            now,
        }
    }

    fn ok() -> ComponentHealth {
        ComponentHealth {
            healthy: true,
            version: Some("1".into()),
            message: None,
        }
    }

    #[test]
    fn ready_when_everything_answers_and_allocatable_skips_bad_gpus() {
        let spec = GpuNodeSpec {
            unschedulable: false,
            disabled_gpus: vec!["GPU-1".into()],
        };
        let now = Timestamp::from_second(100).unwrap();
        let s = node_status(
            None,
            &spec,
            Some(1),
            observed(
                Ok(vec![
                    gpu(0, GpuHealth::Healthy),
                    gpu(1, GpuHealth::Healthy),
                    gpu(2, GpuHealth::Unhealthy),
                ]),
                ok(),
                now,
            ),
        );
        assert_eq!(s.allocatable, 1);
        assert_eq!(s.capacity, 3);
        assert_eq!(s.free, 1);
        assert_eq!(s.gpus.len(), 3);
        assert_eq!(s.last_heartbeat_time, Some(Time(now)));
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
    }

    #[test]
    fn not_ready_says_which_component_failed_and_keeps_the_last_gpu_list() {
        let spec = GpuNodeSpec::default();
        let t1 = Timestamp::from_second(100).unwrap();
        let first = node_status(
            None,
            &spec,
            None,
            observed(Ok(vec![gpu(0, GpuHealth::Healthy)]), ok(), t1),
        );
        let docker_down = ComponentHealth {
            healthy: false,
            version: None,
            message: Some("cannot connect to /run/docker.sock".into()),
        };
        let t2 = Timestamp::from_second(110).unwrap();
        let s = node_status(
            Some(&first),
            &spec,
            None,
            observed(Err("NVML is not available".into()), docker_down, t2),
        );
        assert_eq!(s.gpus.len(), 1, "last known GPUs kept");
        let ready = &s.conditions[0];
        assert_condition(
            ready,
            "False",
            "RuntimeUnavailable",
            &["Docker: cannot connect", "GPUs: NVML is not available"],
        );
        assert_eq!(ready.last_transition_time, Time(t2));
    }

    #[test]
    fn free_counts_schedulable_gpus_that_no_session_holds() {
        let spec = GpuNodeSpec {
            unschedulable: false,
            disabled_gpus: vec!["GPU-3".into()],
        };
        let mut o = observed(
            Ok((0..4).map(|i| gpu(i, GpuHealth::Healthy)).collect()),
            ok(),
            Timestamp::from_second(100).unwrap(),
        );
        // GPU-0 held; GPU-3 cordoned but held by a session that kept it.
        o.allocated = ["GPU-0", "GPU-3"]
            .iter()
            .map(|u| GpuAllocation {
                uuid: u.to_string(),
                session: "ns/s".into(),
                session_uid: "uid".into(),
            })
            .collect();
        let s = node_status(None, &spec, Some(1), o);
        assert_eq!((s.capacity, s.allocatable, s.free), (4, 3, 2));
    }
}
