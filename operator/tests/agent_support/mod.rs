//! What the node agent's tests share: an embedded control plane in a
//! temporary directory, the harness's dockerd and zfs-fuse through a
//! per-test scope, the workload image as a Pack, and helpers that poll with
//! deadlines (never sleep) for a state.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use medforge_crds::conditions::set_condition;
use medforge_crds::{
    AssignedGpu, EnvVar, Pack, PackSpec, Session, SessionPhase, SessionSpec, SessionStatus,
};
use medforge_operator::agent::dialer::NetnsDialer;
use medforge_operator::agent::{AgentConfig, AgentState, run};
use medforge_operator::gpu::StaticInventory;
use medforge_operator::leader::ensure_namespace;
use medforge_testkit::bollard::models::ContainerSummary;
use medforge_testkit::bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
};
use medforge_testkit::{Harness, TestScope};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// GPUs of the static inventory each test node has.
pub const GPUS: u32 = 16;

pub struct Env {
    pub harness: Harness,
    pub scope: TestScope,
    server: Option<medforge_apiserver::RunningServer>,
    _dir: tempfile::TempDir,
    pub client: Client,
    /// The Kubernetes namespace of the test's Sessions.
    pub ns: String,
    /// The node name (unique per test, so agents never see each other's containers).
    pub node: String,
    /// `sha256:…` of the workload image.
    pub image: String,
    next_gpu: std::sync::atomic::AtomicU32,
    cleaned: bool,
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

impl Env {
    pub async fn new() -> Env {
        Env::with_harness(Harness::get().await.expect("harness")).await
    }

    /// An environment on a given harness (a private one, for tests that
    /// restart its dockerd).
    pub async fn with_harness(harness: Harness) -> Env {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let scope = harness.scope().await.expect("scope");
        let dir = tempfile::tempdir().unwrap();
        let server = medforge_apiserver::start(
            medforge_apiserver::Config::new(dir.path()).with_listen("127.0.0.1:0".parse().unwrap()),
        )
        .await
        .unwrap();
        let client = server.client().unwrap();
        let ns = scope.namespace().to_string();
        ensure_namespace(&client, &ns).await.unwrap();
        let tag = harness.workload_image().await.expect("workload image");
        let image = harness
            .docker()
            .inspect_image(&tag)
            .await
            .expect("inspect the workload image")
            .id
            .expect("image id");
        let env = Env {
            node: format!("{}-node", scope.prefix()),
            harness,
            scope,
            server: Some(server),
            _dir: dir,
            client,
            ns,
            image,
            next_gpu: Default::default(),
            cleaned: false,
        };
        env.put_pack("workload", &env.image.clone(), Vec::new())
            .await;
        env
    }

    /// The agent configuration for this test: the harness's dockerd, the
    /// scope's dataset, names and labels, probes from inside the namespace,
    /// and a resync so long that only the watch and Docker events drive it.
    pub fn config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(&self.node, format!("{}/ws", self.scope.dataset()));
        c.docker_socket = self.harness.docker_socket().to_path_buf();
        c.zfs_binary = self.harness.zfs_binary().to_path_buf();
        c.network = self.scope.name("net");
        c.container_prefix = self.scope.name("");
        c.extra_labels = self.scope.labels().into_iter().collect();
        c.inventory = Arc::new(StaticInventory::uniform(&self.node, GPUS));
        c.dialer = Arc::new(NetnsDialer::new(self.harness.netns_path()).expect("netns"));
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
                image: image.to_string(),
                port: 8080,
                command: None,
                env,
                resources: None,
            },
        );
        api.create(&PostParams::default(), &pack).await.unwrap();
    }

    pub fn sessions(&self) -> Api<Session> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn spec(pack: &str, gpus: u32) -> SessionSpec {
        SessionSpec {
            owner: "alice".into(),
            pack: pack.into(),
            exposure: Default::default(),
            gpus,
            state: Default::default(),
            resources: None,
            workspace: None,
            idle_timeout: None,
            max_lifetime: None,
        }
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
        let gpus = (0..created.spec.gpus)
            .map(|_| {
                let i = self
                    .next_gpu
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    % GPUS;
                AssignedGpu {
                    index: i,
                    uuid: format!("GPU-static-{}-{i}", self.node),
                }
            })
            .collect();
        let mut bound = created.clone();
        let mut st = SessionStatus {
            phase: Some(SessionPhase::Scheduled),
            node_name: Some(self.node.clone()),
            gpus,
            slug: Some(random_slug()),
            ..Default::default()
        };
        set_condition(
            &mut st.conditions,
            "Scheduled",
            Some(true),
            "Bound",
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

    /// Containers (any state) labelled with the session's uid.
    pub async fn containers_of(&self, s: &Session) -> Vec<ContainerSummary> {
        self.harness
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("medforge.dev/session-uid={}", s.uid().unwrap())],
                )])),
                ..Default::default()
            }))
            .await
            .unwrap()
    }

    /// `(running, started at, restart count)` of a container.
    pub async fn container_facts(&self, id: &str) -> (bool, String, i64) {
        let info = self
            .harness
            .docker()
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .unwrap();
        let state = info.state.unwrap();
        (
            state.running.unwrap_or(false),
            state.started_at.unwrap_or_default(),
            info.restart_count.unwrap_or(0),
        )
    }

    pub fn dataset_of(&self, s: &Session) -> String {
        format!(
            "{}/ws/{}/{}",
            self.scope.dataset(),
            s.spec.owner,
            s.uid().unwrap()
        )
    }

    pub async fn dataset_exists(&self, dataset: &str) -> bool {
        self.scope.dataset_exists(dataset).await.unwrap()
    }

    /// Filesystem datasets under `<scope>/ws/<owner>`.
    pub async fn datasets_of_owner(&self, owner: &str) -> Vec<String> {
        let root = format!("{}/ws/{owner}", self.scope.dataset());
        match self
            .harness
            .zfs([
                "list",
                "-H",
                "-o",
                "name",
                "-t",
                "filesystem",
                "-r",
                root.as_str(),
            ])
            .await
        {
            Ok(out) => out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != root)
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Snapshots of a dataset, as `zfs list -t snapshot` shows them.
    pub async fn snapshots(&self, dataset: &str) -> Vec<String> {
        match self
            .harness
            .zfs(["list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset])
            .await
        {
            Ok(out) => out
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn upstream(s: &Session) -> SocketAddr {
        s.status
            .as_ref()
            .and_then(|st| st.upstream.as_deref())
            .expect("an upstream")
            .parse()
            .unwrap()
    }

    /// Removes what the test made: its containers and datasets (the
    /// scope), its network, its control plane.
    pub async fn cleanup(mut self) {
        self.scope.cleanup().await.expect("scope cleanup");
        remove_networks(self.harness.docker(), &self.scope.name("net")).await;
        self.cleaned = true;
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }
}

/// Removes every network of that name (an agent may have raced to two).
async fn remove_networks(docker: &medforge_testkit::bollard::Docker, name: &str) {
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

impl Drop for Env {
    /// A test that panicked: remove its containers (the scope's own drop
    /// does that too, but after this) so that its network can go.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let harness = self.harness.clone();
        let prefix = self.scope.prefix().to_string();
        let network = self.scope.name("net");
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async move {
                let harness = harness.with_fresh_client().ok()?;
                let docker = harness.docker();
                let list = docker
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(HashMap::from([(
                            "label".to_string(),
                            vec![format!("{}={prefix}", medforge_testkit::SCOPE_LABEL)],
                        )])),
                        ..Default::default()
                    }))
                    .await
                    .ok()?;
                for c in list {
                    let _ = docker
                        .remove_container(
                            c.id.as_deref().unwrap_or_default(),
                            Some(medforge_testkit::bollard::query_parameters::RemoveContainerOptions {
                                force: true,
                                ..Default::default()
                            }),
                        )
                        .await;
                }
                remove_networks(docker, &network).await;
                Some(())
            })
        })
        .join();
    }
}

fn random_slug() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn is_running_and_ready(s: &Session) -> bool {
    s.phase() == SessionPhase::Running
        && s.condition(medforge_crds::SessionCondition::Ready)
            .is_some_and(|c| c.status == "True")
}
