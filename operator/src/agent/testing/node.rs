//! The agent's side of an integration test or benchmark: a control plane
//! (its client) with a namespace and the workload Pack, a node name, Docker,
//! and helpers that poll with deadlines (never sleep) for a state.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use medforge_crds::conditions::set_condition;
use medforge_crds::{
    AssignedGpu, EnvVar, Pack, PackSpec, Session, SessionCondition, SessionPhase, SessionReason,
    SessionSpec, SessionStatus,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::config::{AgentConfig, AgentState};
use crate::agent::dialer::NetnsDialer;
use crate::agent::runtime::labels;
use crate::agent::start::run;
use crate::gpu::StaticInventory;
use crate::leader::ensure_namespace;

/// GPUs of the static inventory each test node has.
pub const GPUS: u32 = 16;

/// The Pack every test node has, with the workload image.
pub const WORKLOAD_PACK: &str = "workload";

/// Where the agent under test finds its runtimes (the test harness's
/// dockerd and zfs-fuse) and what it names and labels.
#[derive(Debug, Clone)]
pub struct NodeRuntime {
    pub docker_socket: PathBuf,
    pub zfs_binary: PathBuf,
    /// The network namespace the readiness probe dials from.
    pub netns: PathBuf,
    /// Workspaces go under it.
    pub dataset_root: String,
    /// The sessions' network.
    pub network: String,
    /// Put before every container name.
    pub container_prefix: String,
    /// On every container.
    pub labels: BTreeMap<String, String>,
}

/// A running agent.
pub struct Agent {
    handle: JoinHandle<()>,
    pub state: watch::Receiver<AgentState>,
}

impl Agent {
    /// Aborts the agent's task, as a crash would, and waits until it is gone.
    pub async fn kill(self) {
        self.handle.abort();
        let _ = self.handle.await;
    }

    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    pub async fn wait_state(&self, what: &str, f: impl Fn(&AgentState) -> bool) -> AgentState {
        let mut rx = self.state.clone();
        match tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| f(s))).await {
            Ok(state) => state.expect("agent state channel closed").clone(),
            Err(_) => panic!(
                "agent never reached: {what}; state {:?}",
                *self.state.borrow()
            ),
        }
    }
}

/// One node under test.
pub struct TestNode {
    pub client: Client,
    /// The Kubernetes namespace of the test's Sessions.
    pub ns: String,
    /// The node name (unique per test, so agents never see each other's containers).
    pub node: String,
    /// `sha256:…` of the workload image.
    pub image: String,
    pub docker: Docker,
    pub runtime: NodeRuntime,
    next_gpu: AtomicU32,
}

impl TestNode {
    /// Prepares the control plane for a node: the namespace, and the Pack
    /// [`WORKLOAD_PACK`] with the image tagged `image_tag`.
    pub async fn start(
        client: Client,
        ns: String,
        node: String,
        docker: Docker,
        image_tag: &str,
        runtime: NodeRuntime,
    ) -> TestNode {
        ensure_namespace(&client, &ns).await.unwrap();
        let image = docker
            .inspect_image(image_tag)
            .await
            .expect("inspect the workload image")
            .id
            .expect("image id");
        let t = TestNode {
            client,
            ns,
            node,
            image,
            docker,
            runtime,
            next_gpu: AtomicU32::new(0),
        };
        t.put_pack(WORKLOAD_PACK, &t.image, Vec::new()).await;
        t
    }

    /// The agent configuration for the node: the runtime's dockerd,
    /// dataset, names and labels, probes from inside the namespace, and a
    /// resync so long that only the watch and Docker events drive it.
    pub fn config(&self) -> AgentConfig {
        let r = &self.runtime;
        let mut c = AgentConfig::new(&self.node, r.dataset_root.clone());
        c.docker_socket = r.docker_socket.clone();
        c.zfs_binary = r.zfs_binary.clone();
        c.network = r.network.clone();
        c.container_prefix = r.container_prefix.clone();
        c.extra_labels = r.labels.clone();
        c.inventory = Arc::new(StaticInventory::uniform(&self.node, GPUS));
        c.dialer = Arc::new(NetnsDialer::new(&r.netns).expect("netns"));
        c.resync = Duration::from_secs(3600);
        c.heartbeat = Duration::from_millis(300);
        c.probe_interval = Duration::from_millis(100);
        c.stop_timeout = Duration::from_secs(5);
        c.error_backoff_min = Duration::from_millis(100);
        c.error_backoff_max = Duration::from_secs(2);
        c.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
        c
    }

    pub fn spawn_agent(&self, mut config: AgentConfig) -> Agent {
        let (tx, rx) = watch::channel(AgentState::default());
        config.observer = Some(Arc::new(tx));
        let client = self.client.clone();
        let handle = tokio::spawn(async move {
            run(client, config, std::future::pending())
                .await
                .expect("the agent stopped with an error");
        });
        Agent { handle, state: rx }
    }

    pub async fn put_pack(&self, name: &str, image: &str, env: Vec<EnvVar>) {
        let api: Api<Pack> = Api::all(self.client.clone());
        let pack = Pack::new(
            name,
            PackSpec {
                env,
                ..PackSpec::of_image(image, 8080)
            },
        );
        api.create(&PostParams::default(), &pack).await.unwrap();
    }

    pub fn sessions(&self) -> Api<Session> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a Session and binds it to this node as the scheduler would
    /// (phase Scheduled, GPUs, a slug, Scheduled=True).
    pub async fn create_bound(&self, name: &str, spec: SessionSpec) -> Session {
        self.create_bound_with(name, spec, BTreeMap::new()).await
    }

    pub async fn create_bound_with(
        &self,
        name: &str,
        spec: SessionSpec,
        annotations: BTreeMap<String, String>,
    ) -> Session {
        let mut s = Session::new(name, spec);
        s.metadata.annotations = Some(annotations);
        let created = self
            .sessions()
            .create(&PostParams::default(), &s)
            .await
            .unwrap();
        let gpus = self.next_gpus(created.spec.gpus);
        let mut bound = created.clone();
        let mut st = SessionStatus {
            phase: Some(SessionPhase::Scheduled),
            node_name: Some(self.node.clone()),
            gpus,
            slug: Some(medforge_crds::slug::Slug::random().into_string()),
            ..Default::default()
        };
        set_condition(
            &mut st.conditions,
            SessionCondition::Scheduled,
            Some(true),
            SessionReason::Bound,
            "bound by the test",
            created.metadata.generation,
            Time(Timestamp::now()),
        );
        bound.status = Some(st);
        self.sessions()
            .replace_status(name, &PostParams::default(), &bound)
            .await
            .unwrap()
    }

    /// The next `n` GPUs of the node's inventory, round robin, as a
    /// binding written by the test gives them.
    fn next_gpus(&self, n: u32) -> Vec<AssignedGpu> {
        (0..n)
            .map(|_| {
                let i = self.next_gpu.fetch_add(1, Ordering::Relaxed) % GPUS;
                AssignedGpu {
                    index: i,
                    uuid: format!("GPU-static-{}-{i}", self.node),
                }
            })
            .collect()
    }

    /// Asks a Stopped or Failed session to run again as the api's start
    /// does (`state: Running`, `resumeRequestedAt: now`) and binds it again
    /// on this node, as the scheduler would for a resume.
    pub async fn resume_bound(&self, name: &str) -> Session {
        self.sessions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {
                    "state": "Running",
                    "resumeRequestedAt": Timestamp::now().to_string(),
                }})),
            )
            .await
            .unwrap();
        let mut s = self.get(name).await;
        let gpus = self.next_gpus(s.spec.gpus);
        let generation = s.metadata.generation;
        let st = s.status.get_or_insert_with(SessionStatus::default);
        st.phase = Some(SessionPhase::Scheduled);
        st.gpus = gpus;
        set_condition(
            &mut st.conditions,
            SessionCondition::Scheduled,
            Some(true),
            SessionReason::Bound,
            "bound again by the test",
            generation,
            Time(Timestamp::now()),
        );
        self.sessions()
            .replace_status(name, &PostParams::default(), &s)
            .await
            .unwrap()
    }

    pub async fn get(&self, name: &str) -> Session {
        self.sessions().get(name).await.unwrap()
    }

    /// Polls the Session every 20 ms until `pred` holds, up to `deadline`.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Session) -> bool,
    ) -> Session {
        let until = Instant::now() + deadline;
        loop {
            let s = self.sessions().get_opt(name).await.unwrap();
            if let Some(s) = &s
                && pred(s)
            {
                return s.clone();
            }
            if Instant::now() >= until {
                panic!(
                    "session {name} never became {what} within {deadline:?}; last seen: {}",
                    s.map(|s| serde_json::to_string_pretty(&s.status).unwrap())
                        .unwrap_or_else(|| "gone".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: SessionPhase, deadline: Duration) -> Session {
        self.wait_for(name, &format!("{phase:?}"), deadline, |s| {
            s.phase() == phase
        })
        .await
    }

    /// Waits until the Session is gone (its finalizer removed).
    pub async fn wait_gone(&self, name: &str, deadline: Duration) {
        let until = Instant::now() + deadline;
        while self.sessions().get_opt(name).await.unwrap().is_some() {
            assert!(Instant::now() < until, "session {name} was never deleted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn set_state(&self, name: &str, state: &str) {
        self.sessions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"state": state}})),
            )
            .await
            .unwrap();
    }

    pub async fn delete(&self, name: &str) {
        self.sessions()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Deletes the session and waits until its finalizer let it go.
    pub async fn delete_and_wait_gone(&self, name: &str, deadline: Duration) {
        self.delete(name).await;
        self.wait_gone(name, deadline).await;
    }

    /// Containers (any state) labelled with the session's uid.
    pub async fn containers_of(&self, s: &Session) -> Vec<ContainerSummary> {
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("{}={}", labels::SESSION_UID, s.uid().unwrap())],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap()
    }

    /// Removes a container behind the agent's back (forced).
    pub async fn remove_container(&self, id: &str) {
        self.docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
    }

    /// What Docker says of a container.
    pub async fn inspect(&self, id: &str) -> bollard::models::ContainerInspectResponse {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .unwrap()
    }

    /// The one container of a session, as Docker describes it.
    pub async fn only_container_of(
        &self,
        s: &Session,
    ) -> bollard::models::ContainerInspectResponse {
        let containers = self.containers_of(s).await;
        assert_eq!(containers.len(), 1, "{containers:?}");
        self.inspect(containers[0].id.as_deref().unwrap()).await
    }

    /// `(running, started at, restart count)` of a container.
    pub async fn container_facts(&self, id: &str) -> (bool, String, i64) {
        let info = self.inspect(id).await;
        let state = info.state.unwrap();
        (
            state.running.unwrap_or(false),
            state.started_at.unwrap_or_default(),
            info.restart_count.unwrap_or(0),
        )
    }

    /// The session's dataset.
    pub fn dataset_of(&self, s: &Session) -> String {
        format!(
            "{}/{}/{}",
            self.runtime.dataset_root,
            s.spec.owner,
            s.uid().unwrap()
        )
    }

    /// Where the session's workload answers.
    pub fn upstream(s: &Session) -> SocketAddr {
        s.status
            .as_ref()
            .and_then(|st| st.upstream.as_deref())
            .expect("an upstream")
            .parse()
            .unwrap()
    }

    /// Removes every network of the node's name (an agent may have raced
    /// to two).
    pub async fn remove_networks(&self) {
        remove_networks(&self.docker, &self.runtime.network).await
    }
}

/// Removes every network named `name`.
pub async fn remove_networks(docker: &Docker, name: &str) {
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(HashMap::from([(
                "name".to_string(),
                vec![name.to_string()],
            )])),
        }))
        .await
        .unwrap_or_default();
    for n in networks.iter().filter(|n| n.name.as_deref() == Some(name)) {
        let id = n.id.clone().unwrap_or_default();
        if let Err(e) = docker.remove_network(&id).await {
            eprintln!("cannot remove network {name} ({id}): {e}");
        }
    }
}

/// Whether the session is Running with `Ready=True`.
pub fn is_running_and_ready(s: &Session) -> bool {
    s.phase() == SessionPhase::Running
        && s.condition(SessionCondition::Ready)
            .is_some_and(|c| c.status == "True")
}
