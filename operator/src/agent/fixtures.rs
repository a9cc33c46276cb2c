//! Fakes of the agent's runtimes and builders of test objects, for unit
//! tests of the reconciler without I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::core::Status;
use medforge_crds::{
    AssignedGpu, Pack, PackSpec, Session, SessionPhase, SessionSpec, SessionStatus,
};

use super::AgentConfig;
use super::dialer::Dialer;
use super::runtime::{
    Cluster, ContainerError, ContainerObs, ContainerSpec, ContainerState, ContainerSummary,
    Containers, DatasetObs, Destroyed, Refusal, WorkspaceError, Workspaces, labels,
};
use super::spec::container_name;

pub const IMAGE: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// An agent configuration for node `node-a`, workspaces under `pool/mf`.
pub fn config() -> AgentConfig {
    let mut c = AgentConfig::new("node-a", "pool/mf");
    c.dialer = Arc::new(FakeDialer);
    c.probe_burst = Duration::from_millis(20);
    c
}

/// A Session the scheduler bound to `node-a` with `gpus` GPUs.
pub fn bound_session(name: &str, gpus: u32) -> Session {
    let mut s = Session::new(
        name,
        SessionSpec {
            owner: "alice".into(),
            pack: "default".into(),
            exposure: Default::default(),
            gpus,
            state: Default::default(),
            resources: None,
            workspace: None,
            idle_timeout: None,
            max_lifetime: None,
        },
    );
    s.metadata.namespace = Some("ns".into());
    s.metadata.uid = Some(format!("uid-{name}"));
    s.metadata.generation = Some(1);
    s.metadata.resource_version = Some("1".into());
    let slug = if name == "s1" {
        "abcd1234".to_string()
    } else {
        format!(
            "{:0<8}",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "")
        )
        .chars()
        .take(8)
        .collect()
    };
    s.status = Some(SessionStatus {
        phase: Some(SessionPhase::Scheduled),
        node_name: Some("node-a".into()),
        gpus: (0..gpus)
            .map(|i| AssignedGpu {
                index: i,
                uuid: format!("GPU-{i}"),
            })
            .collect(),
        slug: Some(slug),
        ..Default::default()
    });
    s
}

pub fn pack(name: &str) -> Pack {
    Pack::new(
        name,
        PackSpec {
            image: IMAGE.into(),
            port: 8080,
            command: None,
            env: Vec::new(),
            resources: None,
        },
    )
}

/// A running container of the session, as Docker would report it.
pub fn running_container(s: &Session, started: Timestamp) -> ContainerObs {
    let st = s.status.clone().unwrap_or_default();
    ContainerObs {
        id: format!("id-{}", s.name_any()),
        name: container_name("", st.slug.as_deref().unwrap_or("x")),
        labels: BTreeMap::from([
            (labels::SESSION_UID.to_string(), s.uid().unwrap_or_default()),
            (labels::PORT.to_string(), "8080".to_string()),
        ]),
        state: ContainerState::Running,
        started_at: Some(started),
        finished_at: None,
        exit_code: None,
        oom_killed: false,
        error: None,
        ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        restart_count: 0,
    }
}

/// Accepts every connection.
#[derive(Debug, Clone, Copy)]
pub struct FakeDialer;

impl Dialer for FakeDialer {
    fn dial(
        &self,
        _addr: SocketAddr,
        _timeout: Duration,
    ) -> BoxFuture<'static, std::io::Result<()>> {
        async { Ok(()) }.boxed()
    }
    fn describe(&self) -> String {
        "fake".into()
    }
}

#[derive(Debug, Default)]
struct DockerState {
    containers: BTreeMap<String, (ContainerObs, ContainerSpec)>,
    images: BTreeSet<String>,
    networks: BTreeSet<String>,
    next: u32,
    down: bool,
    created: u32,
    started: u32,
}

/// Docker in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeContainers {
    state: Arc<Mutex<DockerState>>,
}

impl FakeContainers {
    pub fn with_image(image: &str) -> FakeContainers {
        let f = FakeContainers::default();
        f.state.lock().unwrap().images.insert(image.to_string());
        f
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Containers labelled with this session uid.
    pub fn of_session(&self, uid: &str) -> Vec<ContainerObs> {
        self.state
            .lock()
            .unwrap()
            .containers
            .values()
            .filter(|(c, _)| c.session_uid() == Some(uid))
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.state
            .lock()
            .unwrap()
            .containers
            .get(id)
            .map(|(_, s)| s.clone())
    }

    /// How many creates and starts Docker was asked for.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock().unwrap();
        (st.created, st.started)
    }

    /// The container's process dies.
    pub fn kill(&self, id: &str, code: i64) {
        let mut st = self.state.lock().unwrap();
        if let Some((c, _)) = st.containers.get_mut(id) {
            c.state = ContainerState::Exited;
            c.exit_code = Some(code);
            c.finished_at = Some(Timestamp::now());
        }
    }

    pub fn delete(&self, id: &str) {
        self.state.lock().unwrap().containers.remove(id);
    }

    fn check(&self) -> Result<std::sync::MutexGuard<'_, DockerState>, ContainerError> {
        let st = self.state.lock().unwrap();
        if st.down {
            return Err(ContainerError::Unavailable {
                cause: "connection refused".into(),
            });
        }
        Ok(st)
    }
}

fn find<'a>(
    st: &'a mut DockerState,
    name_or_id: &str,
) -> Option<&'a mut (ContainerObs, ContainerSpec)> {
    st.containers
        .values_mut()
        .find(|(c, _)| c.id == name_or_id || c.name == name_or_id)
}

impl Containers for FakeContainers {
    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerObs>, ContainerError> {
        let mut st = self.check()?;
        Ok(find(&mut st, name_or_id).map(|(c, _)| c.clone()))
    }

    async fn list(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerSummary>, ContainerError> {
        let st = self.check()?;
        Ok(st
            .containers
            .values()
            .filter(|(c, _)| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .map(|(c, _)| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                created: Some(Timestamp::UNIX_EPOCH),
                running: c.state == ContainerState::Running,
            })
            .collect())
    }

    async fn image_present(&self, image: &str) -> Result<bool, ContainerError> {
        Ok(self.check()?.images.contains(image))
    }

    async fn ensure_network(&self, name: &str) -> Result<(), ContainerError> {
        self.check()?.networks.insert(name.to_string());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ContainerError> {
        let mut st = self.check()?;
        if !st.images.contains(&spec.image) {
            return Err(ContainerError::NotFound {
                what: format!("image {}", spec.image),
            });
        }
        if st.containers.values().any(|(c, _)| c.name == spec.name) {
            return Err(ContainerError::Conflict {
                name: spec.name.clone(),
            });
        }
        st.next += 1;
        st.created += 1;
        let id = format!("c{:04}", st.next);
        let obs = ContainerObs {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            ip: None,
            restart_count: 0,
        };
        st.containers.insert(id.clone(), (obs, spec.clone()));
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        let n = st.next;
        st.started += 1;
        let Some((c, _)) = find(&mut st, id) else {
            return Err(ContainerError::NotFound {
                what: format!("container {id}"),
            });
        };
        c.state = ContainerState::Running;
        c.started_at = Some(Timestamp::now());
        c.ip = Some(IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            (n / 250) as u8,
            (n % 250) as u8 + 2,
        )));
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        if let Some((c, _)) = find(&mut st, id)
            && c.state == ContainerState::Running
        {
            c.state = ContainerState::Exited;
            c.exit_code = Some(143);
            c.finished_at = Some(Timestamp::now());
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        let key = find(&mut st, id).map(|(c, _)| c.id.clone());
        if let Some(k) = key {
            st.containers.remove(&k);
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct FakeDataset {
    mounted: bool,
    owner: (u32, u32),
    properties: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct ZfsState {
    datasets: BTreeMap<String, FakeDataset>,
    snapshots: BTreeSet<String>,
    down: bool,
}

/// ZFS in memory; mountpoints are `/fake/<dataset>`.
#[derive(Debug, Clone, Default)]
pub struct FakeWorkspaces {
    state: Arc<Mutex<ZfsState>>,
}

fn mountpoint(dataset: &str) -> PathBuf {
    Path::new("/fake").join(dataset)
}

impl FakeWorkspaces {
    pub fn datasets(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .datasets
            .keys()
            .cloned()
            .collect()
    }
    pub fn snapshots(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .iter()
            .cloned()
            .collect()
    }
    pub fn add_snapshot(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .insert(name.to_string());
    }
    pub fn property(&self, dataset: &str, key: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .datasets
            .get(dataset)?
            .properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
    fn check(&self) -> Result<std::sync::MutexGuard<'_, ZfsState>, WorkspaceError> {
        let st = self.state.lock().unwrap();
        if st.down {
            return Err(WorkspaceError::Unavailable {
                cause: "zfs-fuse is not running".into(),
            });
        }
        Ok(st)
    }
}

fn add_dataset(
    st: &mut ZfsState,
    dataset: &str,
    properties: &[(String, String)],
) -> Result<(), WorkspaceError> {
    if st.datasets.contains_key(dataset) {
        return Err(WorkspaceError::Refused {
            command: format!("zfs create {dataset}"),
            stderr: format!("cannot create '{dataset}': dataset already exists"),
            why: Refusal::AlreadyExists,
        });
    }
    if let Some((_, q)) = properties.iter().find(|(k, _)| k == "quota")
        && q.parse::<u64>().unwrap_or(0) < 1 << 20
    {
        return Err(WorkspaceError::Refused {
            command: format!("zfs create {dataset}"),
            stderr: format!("cannot create '{dataset}': out of space"),
            why: Refusal::Other,
        });
    }
    st.datasets.insert(
        dataset.to_string(),
        FakeDataset {
            mounted: true,
            owner: (0, 0),
            properties: properties.to_vec(),
        },
    );
    Ok(())
}

impl Workspaces for FakeWorkspaces {
    async fn inspect(&self, dataset: &str) -> Result<Option<DatasetObs>, WorkspaceError> {
        let st = self.check()?;
        let prefix = format!("{dataset}@");
        Ok(st.datasets.get(dataset).map(|d| DatasetObs {
            name: dataset.to_string(),
            mountpoint: Some(mountpoint(dataset)),
            mounted: d.mounted,
            owner: d.mounted.then_some(d.owner),
            snapshots: st
                .snapshots
                .iter()
                .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
                .collect(),
        }))
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool, WorkspaceError> {
        Ok(self.check()?.snapshots.contains(snapshot))
    }

    async fn create(
        &self,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        add_dataset(&mut *self.check()?, dataset, properties)
    }

    async fn clone_from(
        &self,
        snapshot: &str,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        if !st.snapshots.contains(snapshot) {
            return Err(WorkspaceError::NotFound {
                what: format!("snapshot {snapshot}"),
            });
        }
        add_dataset(&mut st, dataset, properties)?;
        st.datasets.get_mut(dataset).unwrap().owner = (1000, 1000);
        Ok(())
    }

    async fn mount(&self, dataset: &str) -> Result<(), WorkspaceError> {
        if let Some(d) = self.check()?.datasets.get_mut(dataset) {
            d.mounted = true;
        }
        Ok(())
    }

    async fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let name = st
            .datasets
            .keys()
            .find(|d| mountpoint(d) == path)
            .cloned()
            .ok_or_else(|| WorkspaceError::Io {
                path: path.display().to_string(),
                cause: "no such directory".into(),
            })?;
        st.datasets.get_mut(&name).unwrap().owner = (uid, gid);
        Ok(())
    }

    async fn snapshot(&self, snapshot: &str) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let dataset = snapshot.split('@').next().unwrap_or("");
        if !st.datasets.contains_key(dataset) {
            return Err(WorkspaceError::NotFound {
                what: dataset.to_string(),
            });
        }
        st.snapshots.insert(snapshot.to_string());
        Ok(())
    }

    async fn destroy(&self, dataset: &str) -> Result<Destroyed, WorkspaceError> {
        let mut st = self.check()?;
        if st.datasets.remove(dataset).is_none() {
            return Ok(Destroyed::AlreadyGone);
        }
        let prefix = format!("{dataset}@");
        st.snapshots.retain(|s| !s.starts_with(&prefix));
        Ok(Destroyed::Destroyed)
    }
}

#[derive(Debug, Default)]
struct ClusterState {
    sessions: HashMap<(String, String), Session>,
    packs: HashMap<String, Pack>,
    version: u64,
    writes: u32,
}

/// The Kubernetes API in memory, with resourceVersion preconditions.
#[derive(Debug, Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<ClusterState>>,
}

impl FakeCluster {
    pub fn with_pack(pack: Pack) -> FakeCluster {
        let c = FakeCluster::default();
        c.state.lock().unwrap().packs.insert(pack.name_any(), pack);
        c
    }

    /// Stores a session (a new resourceVersion) and returns it as stored.
    pub fn put(&self, mut s: Session) -> Session {
        let mut st = self.state.lock().unwrap();
        st.version += 1;
        s.metadata.resource_version = Some(st.version.to_string());
        st.sessions
            .insert((s.namespace().unwrap_or_default(), s.name_any()), s.clone());
        s
    }

    pub fn session(&self, name: &str) -> Session {
        self.state.lock().unwrap().sessions[&("ns".to_string(), name.to_string())].clone()
    }

    pub fn status_writes(&self) -> u32 {
        self.state.lock().unwrap().writes
    }
}

impl Cluster for FakeCluster {
    async fn get_session(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Session>, kube::Error> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .sessions
            .get(&(namespace.to_string(), name.to_string()))
            .cloned())
    }

    async fn replace_status(&self, session: &Session) -> Result<Session, kube::Error> {
        let mut st = self.state.lock().unwrap();
        let key = (session.namespace().unwrap_or_default(), session.name_any());
        let current = st.sessions.get(&key).cloned().ok_or_else(|| {
            kube::Error::Api(
                Status::failure("not found", "NotFound")
                    .with_code(404)
                    .boxed(),
            )
        })?;
        if current.metadata.resource_version != session.metadata.resource_version {
            return Err(kube::Error::Api(
                Status::failure("the object has been modified", "Conflict")
                    .with_code(409)
                    .boxed(),
            ));
        }
        st.version += 1;
        st.writes += 1;
        let mut stored = current;
        stored.status = session.status.clone();
        stored.metadata.resource_version = Some(st.version.to_string());
        st.sessions.insert(key, stored.clone());
        Ok(stored)
    }

    async fn get_pack(&self, name: &str) -> Result<Option<Pack>, kube::Error> {
        Ok(self.state.lock().unwrap().packs.get(name).cloned())
    }
}
