//! [`Containers`] on Docker Engine through bollard (API 1.41, Engine 20.10
//! and later). Images are pulled by the reference their Pack names, with
//! the node's registry credentials, by [`super::pulls`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, DeviceRequest, EndpointSettings, HostConfig, Mount,
    MountBindOptions, MountType, NetworkCreateRequest, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    ListNetworksOptions, RemoveContainerOptions, StopContainerOptions,
};
use bollard::{ClientVersion, Docker};
use k8s_openapi::jiff::Timestamp;
use medforge_crds::ComponentHealth;

use futures::StreamExt;

use super::runtime::{
    ContainerError, ContainerObs, ContainerSpec, ContainerState, ContainerSummary, Containers,
    PullError, PullProgress, RegistryCredentials,
};

/// The longest one pull may take (Docker's client timeout otherwise ends a
/// large image's pull after two minutes).
const PULL_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Bytes per layer of a running pull, from Docker's progress messages.
#[derive(Debug, Default)]
struct Layers(BTreeMap<String, (u64, u64)>);

impl Layers {
    /// Takes one progress message in; whether the sums changed.
    fn update(&mut self, id: &str, status: &str, current: Option<i64>, total: Option<i64>) -> bool {
        let before = self.sums();
        let entry = self.0.entry(id.to_string()).or_default();
        let bytes = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
        match status {
            "Downloading" => {
                if let Some(t) = bytes(total).filter(|t| *t > 0) {
                    entry.1 = t;
                }
                if let Some(c) = bytes(current) {
                    entry.0 = c.min(entry.1.max(c));
                }
            }
            // Done with its download: every byte of it counts.
            "Download complete" | "Verifying Checksum" | "Pull complete" | "Already exists" => {
                entry.0 = entry.1;
            }
            _ => {}
        }
        self.sums() != before
    }

    fn sums(&self) -> (u64, u64) {
        self.0
            .values()
            .fold((0, 0), |(d, t), (ld, lt)| (d + ld, t + lt))
    }
}

/// The oldest API the agent speaks: Engine 20.10.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// The bridge driver's option for traffic between its containers.
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";

/// Docker through its Unix socket.
#[derive(Clone, Debug)]
pub struct DockerContainers {
    docker: Docker,
    socket: String,
}

impl DockerContainers {
    /// A client for the daemon at `socket` (nothing is sent yet).
    pub fn connect(socket: &Path) -> Result<DockerContainers, ContainerError> {
        let socket = socket.to_string_lossy().into_owned();
        let docker = Docker::connect_with_unix(&socket, 120, &API_VERSION).map_err(|e| {
            ContainerError::Unavailable {
                cause: format!("cannot use the Docker socket {socket}: {e}"),
            }
        })?;
        Ok(DockerContainers { docker, socket })
    }

    /// The bollard client (for the event watcher).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Whether the network exists; when several have its name (an earlier
    /// race), all but the oldest are removed, so every caller converges on
    /// the same one.
    /// Removes all but the oldest network named `name`; whether one exists.
    /// Warns when the one kept lets its containers talk to each other or has
    /// IPv6 (made before the agent created it closed, or by hand).
    async fn dedupe_network(&self, name: &str) -> Result<bool, ContainerError> {
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "name".to_string(),
                    vec![name.to_string()],
                )])),
            }))
            .await
            .map_err(|e| classify(Op::List, "networks", e))?;
        let mut same: Vec<_> = list
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .collect();
        same.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        for n in same.iter().skip(1) {
            let id = n.id.as_deref().unwrap_or_default();
            if let Err(e) = self.docker.remove_network(id).await {
                tracing::warn!(network = %name, %id, error = %error_text(&e), "cannot remove a duplicate network");
            }
        }
        if let Some(kept) = same.first() {
            let icc = kept.options.as_ref().and_then(|o| o.get(ENABLE_ICC));
            if icc.map(String::as_str) != Some("false") || kept.enable_ipv6 == Some(true) {
                tracing::warn!(
                    network = %name,
                    "the sessions' network lets containers reach each other or has IPv6: only the isolation rules hold them apart. Remove it while no session runs (docker network rm {name}); the agent recreates it closed"
                );
            }
        }
        Ok(!same.is_empty())
    }

    /// Docker's health for the GpuNode.
    pub async fn health(&self) -> ComponentHealth {
        match self.docker.version().await {
            Ok(v) => ComponentHealth {
                healthy: true,
                version: v.version,
                message: None,
            },
            Err(e) => ComponentHealth {
                healthy: false,
                version: None,
                message: Some(format!(
                    "cannot reach Docker at {}: {}",
                    self.socket,
                    error_text(&e)
                )),
            },
        }
    }
}

fn error_text(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// What the agent asked Docker to do, for its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    List,
    Inspect,
    Create,
    /// A container create: a 409 is a taken name, a 404 a missing image
    /// (or network).
    CreateContainer,
    Start,
    Stop,
    Remove,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::List => "list",
            Op::Inspect => "inspect",
            Op::Create => "create",
            Op::CreateContainer => "create a container",
            Op::Start => "start",
            Op::Stop => "stop",
            Op::Remove => "remove",
        }
    }
}

/// Whether a 404 is about the network (rather than the container or image).
fn names_the_network(message: &str) -> bool {
    message.contains("network")
}

/// Maps a bollard error: connection-level failures mean Docker is down.
/// The one place Docker's answers are read.
fn classify(op: Op, what: &str, e: BollardError) -> ContainerError {
    let action = op.verb();
    match e {
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } if names_the_network(&message) => ContainerError::NetworkMissing {
            what: what.to_string(),
            message,
        },
        BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        } => ContainerError::NotFound {
            what: format!("{what} ({message})"),
        },
        BollardError::DockerResponseServerError {
            status_code: 409,
            message,
        } if op == Op::CreateContainer => ContainerError::Conflict {
            name: format!("{what} ({message})"),
        },
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => ContainerError::Rejected {
            action: format!("{action} {what}"),
            status: status_code,
            message,
        },
        other => ContainerError::Unavailable {
            cause: format!("while trying to {action} {what}: {other}"),
        },
    }
}

/// Docker's zero time for a container that never ran.
fn docker_time(s: Option<&str>) -> Option<Timestamp> {
    let t: Timestamp = s?.parse().ok()?;
    (t.as_second() > 0).then_some(t)
}

fn state_of(s: Option<ContainerStateStatusEnum>) -> ContainerState {
    match s {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => ContainerState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => ContainerState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => ContainerState::Removing,
        Some(ContainerStateStatusEnum::DEAD) => ContainerState::Dead,
        _ => ContainerState::Exited,
    }
}

/// What the agent reads from an inspect answer.
pub fn observation(info: ContainerInspectResponse, network: &str) -> ContainerObs {
    let state = info.state.unwrap_or_default();
    let labels: BTreeMap<String, String> = info
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let ip = info
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|mut nets| nets.remove(network))
        .and_then(|ep| ep.ip_address)
        .and_then(|ip| ip.parse().ok());
    ContainerObs {
        id: info.id.unwrap_or_default(),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        labels,
        state: state_of(state.status),
        started_at: docker_time(state.started_at.as_deref()),
        finished_at: docker_time(state.finished_at.as_deref()),
        exit_code: state.exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        error: state.error.filter(|e| !e.is_empty()),
        ip,
        restart_count: info.restart_count.unwrap_or(0),
        pid: state.pid.filter(|p| *p > 0),
    }
}

/// The established TCP connections to local port `port` from outside the
/// container, in a `/proc/<pid>/net/tcp` or `tcp6` table. A connection
/// from the container to itself (over loopback, or to its own address)
/// does not count: a workload must not keep its own session from idling.
pub fn count_established(table: &str, port: u16) -> u32 {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() <= 3 || cols[3] != ESTABLISHED {
                return false;
            }
            let (Some((local, local_port)), Some((remote, _))) =
                (proc_endpoint(cols[1]), proc_endpoint(cols[2]))
            else {
                return false;
            };
            local_port == port && !from_itself(remote) && remote != local
        })
        .count() as u32
}

/// Whether an address is the container's own loopback (IPv4, IPv6 or
/// IPv4-mapped).
fn from_itself(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => v4.is_loopback(),
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// An `ADDR:PORT` of `/proc/net/tcp{,6}`: the address in hex as the kernel
/// stores it (each 32-bit word in host byte order, little-endian here), the
/// port in hex.
fn proc_endpoint(field: &str) -> Option<(std::net::IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::swap_bytes);
    let ip = match addr.len() {
        8 => std::net::IpAddr::V4(std::net::Ipv4Addr::from(word(addr)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4]
                    .copy_from_slice(&word(&addr[i * 8..i * 8 + 8])?.to_be_bytes());
            }
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The Docker create request for a [`ContainerSpec`]: uid 1000:1000, every
/// capability dropped, no new privileges, not privileged, an init process,
/// a read-only root file system with `/workspace` the only persistent
/// writable mount, the limits, and the GPUs by UUID.
pub fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let device_requests = spec.device_requests.then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_string()),
            device_ids: Some(spec.gpus.clone()),
            capabilities: Some(vec![vec!["gpu".to_string()]]),
            ..Default::default()
        }]
    });
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.cmd.clone(),
        env: Some(spec.env.clone()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        hostname: Some(spec.hostname.clone()),
        user: Some(spec.user.clone()),
        stop_timeout: Some(spec.stop_timeout.as_secs() as i64),
        host_config: Some(HostConfig {
            init: Some(true),
            privileged: Some(false),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                format!("rw,nosuid,nodev,size={}", spec.tmp_bytes),
            )])),
            mounts: Some(vec![Mount {
                target: Some("/workspace".to_string()),
                source: Some(spec.workspace.to_string_lossy().into_owned()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                bind_options: Some(MountBindOptions {
                    non_recursive: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            memory: spec.memory_bytes,
            // No swap beyond the memory limit.
            memory_swap: spec.memory_bytes,
            nano_cpus: spec.nano_cpus,
            pids_limit: spec.pids_limit,
            shm_size: spec.shm_bytes,
            network_mode: Some(spec.network.clone()),
            device_requests,
            cgroup_parent: spec.cgroup_parent.clone(),
            // A session that dies stays dead: the agent reports it.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                spec.network.clone(),
                EndpointSettings::default(),
            )])),
        }),
        ..Default::default()
    }
}

impl Containers for DockerContainers {
    async fn open_connections(&self, c: &ContainerObs, port: u16) -> Result<u32, ContainerError> {
        let Some(pid) = c.pid else {
            return Ok(0);
        };
        // The container's network namespace, seen through its process: a
        // process that is gone has no connections.
        let mut n = 0;
        for table in ["tcp", "tcp6"] {
            if let Ok(text) = tokio::fs::read_to_string(format!("/proc/{pid}/net/{table}")).await {
                n += count_established(&text, port);
            }
        }
        Ok(n)
    }

    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerObs>, ContainerError> {
        match self
            .docker
            .inspect_container(name_or_id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                // The network is read from the container's own settings.
                let network = info
                    .host_config
                    .as_ref()
                    .and_then(|h| h.network_mode.clone())
                    .unwrap_or_default();
                Ok(Some(observation(info, &network)))
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(classify(Op::Inspect, &format!("container {name_or_id}"), e)),
        }
    }

    async fn list(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerSummary>, ContainerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| classify(Op::List, "containers", e))?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                created: c.created.and_then(|s| Timestamp::from_second(s).ok()),
                running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
            })
            .collect())
    }

    async fn image_present(&self, image: &str) -> Result<bool, ContainerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(classify(Op::Inspect, &format!("image {image}"), e)),
        }
    }

    async fn pull(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
        progress: &tokio::sync::watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        let options = CreateImageOptions {
            from_image: Some(image.to_string()),
            ..Default::default()
        };
        let credentials = credentials.map(|c| DockerCredentials {
            username: c.username.clone(),
            password: c.password.clone(),
            identitytoken: c.identity_token.clone(),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let docker = self.docker.clone().with_timeout(PULL_TIMEOUT);
        let mut stream = docker.create_image(Some(options), None, credentials);
        let mut layers = Layers::default();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) => return Err(PullError::from_registry(image, Some(status_code), &message)),
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(PullError::from_registry(image, None, &error));
                }
                Err(e) => {
                    return Err(PullError::Failed {
                        image: image.to_string(),
                        message: format!("Docker: {e}"),
                    });
                }
            };
            if let Some(detail) = info.error_detail {
                let message = detail.message.unwrap_or_default();
                return Err(PullError::from_registry(image, None, &message));
            }
            if let (Some(id), Some(status)) = (info.id.as_deref(), info.status.as_deref()) {
                let (current, total) = info
                    .progress_detail
                    .map(|p| (p.current, p.total))
                    .unwrap_or_default();
                if layers.update(id, status, current, total) {
                    let (done, total) = layers.sums();
                    progress.send_replace(PullProgress {
                        queued: false,
                        done,
                        total,
                    });
                }
            }
        }
        // Docker ends the stream without an error only when the image is there.
        match self.image_present(image).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(PullError::Failed {
                image: image.to_string(),
                message: "Docker ended the pull but has no such image".to_string(),
            }),
            Err(e) => Err(PullError::Failed {
                image: image.to_string(),
                message: e.to_string(),
            }),
        }
    }

    async fn resolve(
        &self,
        image: &str,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<String, PullError> {
        let credentials = credentials.map(|c| DockerCredentials {
            username: c.username.clone(),
            password: c.password.clone(),
            identitytoken: c.identity_token.clone(),
            serveraddress: Some(c.server.clone()),
            ..Default::default()
        });
        let found = self
            .docker
            .inspect_registry_image(image, credentials)
            .await
            .map_err(|e| match e {
                BollardError::DockerResponseServerError {
                    status_code,
                    message,
                } => PullError::from_registry(image, Some(status_code), &message),
                other => PullError::Failed {
                    image: image.to_string(),
                    message: format!("Docker: {other}"),
                },
            })?;
        let digest = found
            .descriptor
            .digest
            .filter(|d| medforge_crds::is_pinned(d))
            .ok_or_else(|| PullError::Failed {
                image: image.to_string(),
                message: "the registry answered without a sha256 digest".to_string(),
            })?;
        Ok(format!("{}@{digest}", super::runtime::repository_of(image)))
    }

    async fn ensure_network(&self, name: &str) -> Result<(), ContainerError> {
        if self.dedupe_network(name).await? {
            return Ok(());
        }
        // Closed by Docker's own switch too: containers on it cannot reach
        // each other even before (or without) the agent's isolation rules,
        // and it has no IPv6, which those rules do not cover.
        let request = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".to_string()),
            enable_ipv6: Some(false),
            options: Some(HashMap::from([(
                ENABLE_ICC.to_string(),
                "false".to_string(),
            )])),
            labels: Some(HashMap::from([(
                medforge_crds::keys::container::MANAGED.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_)
            | Err(BollardError::DockerResponseServerError {
                status_code: 409, ..
            }) => {}
            Err(e) => return Err(classify(Op::Create, &format!("network {name}"), e)),
        }
        // Engine 20.10 lets two creates race to two networks of one name.
        self.dedupe_network(name).await.map(drop)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ContainerError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                create_body(spec),
            )
            .await
            .map_err(|e| match e {
                BollardError::DockerResponseServerError {
                    status_code: 404,
                    message,
                } if !names_the_network(&message) => ContainerError::NotFound {
                    what: format!("image {} ({message})", spec.image),
                },
                other => classify(Op::CreateContainer, &spec.name, other),
            })?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), ContainerError> {
        match self.docker.start_container(id, None).await {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(classify(Op::Start, &format!("container {id}"), e)),
        }
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), ContainerError> {
        let t = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304 | 404,
                ..
            }) => Ok(()),
            Err(e) => Err(classify(Op::Stop, &format!("container {id}"), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            // "removal of container … is already in progress"
            Err(BollardError::DockerResponseServerError {
                status_code: 409,
                message,
            }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(classify(Op::Remove, &format!("container {id}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "mf-session-abcd1234".into(),
            image: format!("sha256:{}", "a".repeat(64)),
            cmd: None,
            env: vec!["NVIDIA_VISIBLE_DEVICES=GPU-1".into()],
            labels: BTreeMap::from([(
                super::super::runtime::labels::SESSION_UID.into(),
                "u".into(),
            )]),
            hostname: "s-abcd1234".into(),
            user: "1000:1000".into(),
            workspace: PathBuf::from("/pool/mf/alice/u"),
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(2_000_000_000),
            pids_limit: Some(4096),
            shm_bytes: Some(64 << 20),
            tmp_bytes: 1 << 30,
            gpus: vec!["GPU-1".into()],
            device_requests: true,
            network: "medforge-sessions".into(),
            cgroup_parent: Some("/medforge".into()),
            stop_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn established_connections_to_the_port_are_counted() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0
   1: 0200110A:1F90 0100110A:A1B2 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0
   2: 0200110A:1F90 0100110A:A1B4 06 00000000:00000000 00:00000000 00000000  1000        0 3 1 0
   3: 0200110A:C350 0100110A:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4 1 0
";
        // 10.17.0.2:8080 from 10.17.0.1 counts; the listener (0A), a
        // TIME_WAIT (06) and an outgoing connection to port 8080 elsewhere
        // do not.
        assert_eq!(count_established(table, 8080), 1);
        assert_eq!(count_established(table, 9999), 0);
        assert_eq!(count_established("", 8080), 0);
        assert_eq!(
            proc_endpoint("0200110A:1F90"),
            Some(("10.17.0.2".parse().unwrap(), 8080))
        );
    }

    #[test]
    fn a_workload_connecting_to_itself_does_not_count_as_activity() {
        // What a hostile workload would hold open to keep its session from
        // idling: connections to its own port over 127.0.0.1, over ::1, over
        // ::ffff:127.0.0.1, and to its own address 10.17.0.2.
        let v4 = "  sl  local_address rem_address   st
   0: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000 0 1 1 0
   1: 0200110A:1F90 0200110A:D432 01 00000000:00000000 00:00000000 00000000  1000 0 2 1 0
";
        let v6 =
            "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:D433 01 0 0 0 1000 0 3
   1: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000100007F:D434 01 0 0 0 1000 0 4
   2: 0000000000000000FFFF00000200110A:1F90 0000000000000000FFFF00000100110A:D435 01 0 0 0 1000 0 5
";
        assert_eq!(count_established(v4, 8080), 0);
        // The last one, from 10.17.0.1 (the proxy's side), counts.
        assert_eq!(count_established(v6, 8080), 1);
        assert_eq!(
            proc_endpoint("00000000000000000000000001000000:1F90"),
            Some(("::1".parse().unwrap(), 8080))
        );
    }

    #[test]
    fn the_create_request_carries_the_hardening() {
        let body = create_body(&spec());
        let host = body.host_config.unwrap();
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        crate::agent::testing::assert_hardened(&host);
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(host.memory_swap, Some(1 << 30));
        assert_eq!(host.pids_limit, Some(4096));
        assert_eq!(host.cgroup_parent.as_deref(), Some("/medforge"));
        let mounts = host.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target.as_deref(), Some("/workspace"));
        assert_eq!(mounts[0].source.as_deref(), Some("/pool/mf/alice/u"));
        let req = &host.device_requests.unwrap()[0];
        assert_eq!(req.device_ids, Some(vec!["GPU-1".to_string()]));
        assert!(
            body.env
                .unwrap()
                .contains(&"NVIDIA_VISIBLE_DEVICES=GPU-1".to_string())
        );

        let mut s = spec();
        s.device_requests = false;
        assert!(
            create_body(&s)
                .host_config
                .unwrap()
                .device_requests
                .is_none()
        );
    }

    #[test]
    fn docker_times() {
        assert_eq!(docker_time(Some("0001-01-01T00:00:00Z")), None);
        assert_eq!(docker_time(None), None);
        assert_eq!(
            docker_time(Some("2026-11-22T07:16:06.123456789Z")).map(|t| t.as_second()),
            Some(1_795_331_766)
        );
    }
}
