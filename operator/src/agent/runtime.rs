//! The node agent's runtimes behind small traits: containers (Docker),
//! workspaces (ZFS) and the cluster (the Kubernetes API). The reconciler is
//! written against these traits only, so its logic is tested with the fakes
//! of `testing`; `docker.rs`, `zfs.rs` and [`KubeCluster`] are the real
//! implementations, tested against the real things.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use medforge_crds::{Pack, Session, WorkspaceSnapshot};

/// Labels every session container carries (`medforge_crds::keys::container`).
pub use medforge_crds::keys::container as labels;

/// A container's lifecycle state as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
        }
    }
}

/// What the agent observed of one container.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerObs {
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// When it last started; `None` when it never ran.
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Docker's own error for the last start, if any.
    pub error: Option<String>,
    /// Its address on the agent's network.
    pub ip: Option<IpAddr>,
    pub restart_count: i64,
    /// Its main process on this host (`None` when it is not running).
    pub pid: Option<i64>,
}

impl ContainerObs {
    /// The uid of the Session the container belongs to (its label).
    pub fn session_uid(&self) -> Option<&str> {
        self.labels.get(labels::SESSION_UID).map(String::as_str)
    }

    /// The workload's port (its label).
    pub fn port(&self) -> Option<u16> {
        self.labels.get(labels::PORT).and_then(|p| p.parse().ok())
    }

    /// Whether it ran at some point (a `created` container never did).
    pub fn ever_started(&self) -> bool {
        self.started_at.is_some()
    }
}

/// One container of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSummary {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub created: Option<Timestamp>,
    pub running: bool,
}

impl ContainerSummary {
    pub fn session_uid(&self) -> Option<&str> {
        self.labels.get(labels::SESSION_UID).map(String::as_str)
    }
}

/// What the agent asks Docker to create: built without I/O by
/// [`super::spec::container_spec`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub hostname: String,
    /// `uid:gid`.
    pub user: String,
    /// Host path bind-mounted read-write at `/workspace`.
    pub workspace: PathBuf,
    pub memory_bytes: Option<i64>,
    pub nano_cpus: Option<i64>,
    pub pids_limit: Option<i64>,
    pub shm_bytes: Option<i64>,
    pub tmp_bytes: u64,
    /// GPU UUIDs, passed by device request when `device_requests`.
    pub gpus: Vec<String>,
    pub device_requests: bool,
    pub network: String,
    pub cgroup_parent: Option<String>,
    pub stop_timeout: Duration,
}

/// Why a container operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ContainerError {
    #[error("Docker is not answering ({cause})")]
    Unavailable { cause: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("the network of {what} does not exist ({message})")]
    NetworkMissing { what: String, message: String },
    #[error("the container name {name} is already in use")]
    Conflict { name: String },
    #[error("Docker refused to {action} (HTTP {status}): {message}")]
    Rejected {
        action: String,
        status: u16,
        message: String,
    },
}

/// Credentials for one registry, as a Docker config file's `auths` gives
/// them. `Debug` shows only the server and user.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RegistryCredentials {
    /// The registry host (`registry.example.org`, `127.0.0.1:5000`).
    pub server: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// An OAuth identity token instead of a password.
    pub identity_token: Option<String>,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How far an image pull has come: bytes of its layers downloaded so far,
/// and in all (of the layers Docker has announced).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Waiting for one of the node's pull slots.
    pub queued: bool,
    pub done: u64,
    pub total: u64,
}

/// Why a pull failed, with the registry's (or Docker's) own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The registry has no such image.
    #[error("the registry has no image {image}: {message}")]
    NotFound { image: String, message: String },
    /// The registry refused the credentials, or wants some the node lacks.
    #[error("the registry refused to serve {image} to this node: {message}")]
    Unauthorized { image: String, message: String },
    /// Anything else: the registry cannot be reached, the pull broke off.
    #[error("pulling {image} failed: {message}")]
    Failed { image: String, message: String },
}

impl PullError {
    /// The reason a session or Pack status gives for it.
    pub fn reason(&self) -> medforge_crds::SessionReason {
        use medforge_crds::SessionReason as R;
        match self {
            PullError::NotFound { .. } => R::ImageNotFound,
            PullError::Unauthorized { .. } => R::Unauthorized,
            PullError::Failed { .. } => R::ImagePullFailed,
        }
    }

    /// Sorts Docker's answer to a pull by what it means, from its status
    /// code and the registry's words that Docker passes on.
    pub fn from_registry(image: &str, status: Option<u16>, message: &str) -> PullError {
        let m = message.to_ascii_lowercase();
        let (image, message) = (image.to_string(), message.to_string());
        let unauthorized = [
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "denied",
            "incorrect username or password",
        ];
        let not_found = [
            "manifest unknown",
            "not found",
            "does not exist",
            "name unknown",
        ];
        if matches!(status, Some(401 | 403)) || unauthorized.iter().any(|w| m.contains(w)) {
            PullError::Unauthorized { image, message }
        } else if status == Some(404) || not_found.iter().any(|w| m.contains(w)) {
            PullError::NotFound { image, message }
        } else {
            PullError::Failed { image, message }
        }
    }
}

/// The repository of an image reference, without its tag or digest
/// (`host:5000/a/b:1.0` is `host:5000/a/b`).
pub fn repository_of(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.rsplit_once(':') {
        // A colon after the last slash starts a tag; before it, a port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => name,
    }
}

/// Containers on this node.
pub trait Containers: Send + Sync + Clone + 'static {
    /// The container with this name or id, `None` when there is none.
    fn inspect(
        &self,
        name_or_id: &str,
    ) -> impl Future<Output = Result<Option<ContainerObs>, ContainerError>> + Send;
    /// Every container (running or not) carrying all these labels.
    fn list(
        &self,
        labels: &[(String, String)],
    ) -> impl Future<Output = Result<Vec<ContainerSummary>, ContainerError>> + Send;
    /// Whether the image is on the node (never pulls).
    fn image_present(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<bool, ContainerError>> + Send;
    /// Pulls an image by the reference the Pack names (`name@sha256:…`),
    /// reporting progress into `progress` while it runs.
    fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        progress: &tokio::sync::watch::Sender<PullProgress>,
    ) -> impl Future<Output = Result<(), PullError>> + Send;
    /// Asks the image's registry which digest a tag names now; the image
    /// pinned to it (`name@sha256:…`). Nothing is pulled.
    fn resolve(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> impl Future<Output = Result<String, PullError>> + Send;
    /// Creates the network sessions are attached to, unless it exists.
    fn ensure_network(&self, name: &str)
    -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Creates a container; its id. A taken name is [`ContainerError::Conflict`].
    fn create(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, ContainerError>> + Send;
    /// Starts it (a running container is fine).
    fn start(&self, id: &str) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Stops it: SIGTERM, SIGKILL after `timeout` (a stopped one is fine).
    fn stop(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// Removes it, forced (an absent one is fine).
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), ContainerError>> + Send;
    /// The established TCP connections to `port` inside the container (the
    /// proxy's requests and websockets to the workload): 0 when it does
    /// not run.
    fn open_connections(
        &self,
        c: &ContainerObs,
        port: u16,
    ) -> impl Future<Output = Result<u32, ContainerError>> + Send;
}

/// What the agent observed of a workspace dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetObs {
    pub name: String,
    pub mountpoint: Option<PathBuf>,
    pub mounted: bool,
    /// Owner of the mounted root directory.
    pub owner: Option<(u32, u32)>,
    /// Its snapshots' short names (after the `@`).
    pub snapshots: Vec<String>,
}

/// What destroying a dataset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destroyed {
    Destroyed,
    AlreadyGone,
    /// Other datasets were cloned from its snapshots; they were promoted
    /// (they now hold those snapshots) and the dataset destroyed.
    PromotedClones(Vec<String>),
}

/// Why a workspace operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WorkspaceError {
    #[error("ZFS is not answering ({cause})")]
    Unavailable { cause: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// ZFS refused the command; `why` says what about, `stderr` is its own
    /// words (shown to users).
    #[error("`{command}` failed: {stderr}")]
    Refused {
        command: String,
        stderr: String,
        why: Refusal,
    },
    #[error("{path}: {cause}")]
    Io { path: String, cause: String },
}

impl WorkspaceError {
    /// A file system operation on `path` failed.
    pub fn io(path: &Path, cause: impl std::fmt::Display) -> WorkspaceError {
        WorkspaceError::Io {
            path: path.display().to_string(),
            cause: cause.to_string(),
        }
    }

    /// Whether ZFS refused the command for that reason.
    pub fn is_refusal(&self, reason: &Refusal) -> bool {
        matches!(self, WorkspaceError::Refused { why, .. } if why == reason)
    }
}

/// What a refused workspace command was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The dataset or snapshot to make already exists.
    AlreadyExists,
    AlreadyMounted,
    NotMounted,
    /// The dataset is in use; trying again shortly may work.
    Busy,
    /// Other datasets were cloned from the dataset's snapshots (named here).
    DependentClones(Vec<String>),
    /// The dataset was made but could not be mounted.
    CannotMount,
    /// Anything else (out of space, a property ZFS does not take, …).
    Other,
}

/// Workspace datasets and snapshots on this node.
pub trait Workspaces: Send + Sync + 'static {
    fn inspect(
        &self,
        dataset: &str,
    ) -> impl Future<Output = Result<Option<DatasetObs>, WorkspaceError>> + Send;
    fn snapshot_exists(
        &self,
        snapshot: &str,
    ) -> impl Future<Output = Result<bool, WorkspaceError>> + Send;
    /// Creates the dataset (and its parents) with these properties at once,
    /// so a refused property leaves nothing behind.
    fn create(
        &self,
        dataset: &str,
        properties: &[(String, String)],
    ) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// Clones a snapshot into a new dataset with these properties.
    fn clone_from(
        &self,
        snapshot: &str,
        dataset: &str,
        properties: &[(String, String)],
    ) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    fn mount(&self, dataset: &str) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// Gives the dataset's root directory to `uid:gid` (not recursive).
    fn chown(
        &self,
        path: &Path,
        uid: u32,
        gid: u32,
    ) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// Takes `dataset@name` (an existing one is fine).
    fn snapshot(&self, snapshot: &str) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// Unmounts and destroys the dataset with its snapshots (an absent one is fine).
    fn destroy(
        &self,
        dataset: &str,
    ) -> impl Future<Output = Result<Destroyed, WorkspaceError>> + Send;
    /// Destroys one snapshot (an absent one is fine). One that a dataset
    /// was cloned from is refused with [`Refusal::DependentClones`].
    fn destroy_snapshot(
        &self,
        snapshot: &str,
    ) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// A user property (`module:name`) of a dataset; `None` when unset.
    fn user_property(
        &self,
        dataset: &str,
        key: &str,
    ) -> impl Future<Output = Result<Option<String>, WorkspaceError>> + Send;
    /// Retires a deleted session's dataset: unmounted, never mounted again
    /// on its own, marked [`medforge_crds::keys::dataset::RETIRED`] with
    /// `stamp`. Its snapshots stay. Retiring twice is fine.
    fn retire(
        &self,
        dataset: &str,
        stamp: &str,
    ) -> impl Future<Output = Result<(), WorkspaceError>> + Send;
    /// The snapshots under `root` that a dataset was cloned from.
    fn origins(
        &self,
        root: &str,
    ) -> impl Future<Output = Result<std::collections::BTreeSet<String>, WorkspaceError>> + Send;
    /// The bytes a snapshot holds on its own (ZFS `used`).
    fn snapshot_size(
        &self,
        snapshot: &str,
    ) -> impl Future<Output = Result<Option<i64>, WorkspaceError>> + Send;
}

/// The Kubernetes API as the reconciler uses it.
pub trait Cluster: Send + Sync + 'static {
    fn get_session(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Session>, kube::Error>> + Send;
    /// Writes the status with the resourceVersion it carries (409 when stale).
    fn replace_status(
        &self,
        session: &Session,
    ) -> impl Future<Output = Result<Session, kube::Error>> + Send;
    fn get_pack(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Pack>, kube::Error>> + Send;
    /// Creates the record of a snapshot; one that exists already is fine.
    fn record_snapshot(
        &self,
        record: &WorkspaceSnapshot,
    ) -> impl Future<Output = Result<(), kube::Error>> + Send;
    fn get_snapshot(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<WorkspaceSnapshot>, kube::Error>> + Send;
    /// Deletes the records of a session's snapshots (by its uid label);
    /// how many it deleted.
    fn delete_snapshots_of(
        &self,
        namespace: &str,
        session_uid: &str,
    ) -> impl Future<Output = Result<usize, kube::Error>> + Send;
}

/// [`Cluster`] on a kube client.
#[derive(Clone)]
pub struct KubeCluster {
    pub client: Client,
}

impl Cluster for KubeCluster {
    async fn get_session(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Session>, kube::Error> {
        Api::<Session>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
    }

    async fn replace_status(&self, session: &Session) -> Result<Session, kube::Error> {
        let ns = session.namespace().unwrap_or_default();
        Api::<Session>::namespaced(self.client.clone(), &ns)
            .replace_status(&session.name_any(), &PostParams::default(), session)
            .await
    }

    async fn get_pack(&self, name: &str) -> Result<Option<Pack>, kube::Error> {
        Api::<Pack>::all(self.client.clone()).get_opt(name).await
    }

    async fn record_snapshot(&self, record: &WorkspaceSnapshot) -> Result<(), kube::Error> {
        let ns = record.namespace().unwrap_or_default();
        let api = Api::<WorkspaceSnapshot>::namespaced(self.client.clone(), &ns);
        let created = match api.create(&PostParams::default(), record).await {
            Ok(created) => created,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Made before; its status too, unless that write was cut off.
                match api.get_opt(&record.name_any()).await? {
                    Some(existing) if existing.status.is_none() => existing,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        };
        // The status is a subresource: written after the create. A merge
        // patch, not a replace: the snapshot controller may have written
        // the same status (it finds the snapshot) in between.
        let Some(status) = &record.status else {
            return Ok(());
        };
        api.patch_status(
            &created.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map(drop)
    }

    async fn get_snapshot(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<WorkspaceSnapshot>, kube::Error> {
        Api::<WorkspaceSnapshot>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
    }

    async fn delete_snapshots_of(
        &self,
        namespace: &str,
        session_uid: &str,
    ) -> Result<usize, kube::Error> {
        let api = Api::<WorkspaceSnapshot>::namespaced(self.client.clone(), namespace);
        let selector = format!("{}={session_uid}", labels::SESSION_UID);
        let found = api
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?;
        let mut deleted = 0;
        for r in found.items {
            if r.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api
                .delete(&r.name_any(), &kube::api::DeleteParams::default())
                .await
            {
                Ok(_) => deleted += 1,
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }
}
