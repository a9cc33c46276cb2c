//! Test support for the node agent, behind the `testing` feature (and in
//! the crate's own unit tests): fakes of its runtimes ([`FakeContainers`],
//! [`FakeWorkspaces`], [`FakeCluster`], [`FakeDialer`]) for tests of the
//! reconciler without I/O, builders of test objects, and [`TestNode`], the
//! agent's side of an integration test or benchmark against a real control
//! plane and Docker.

mod cluster;
mod docker;
mod down;
mod node;
mod zfs;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use medforge_crds::{
    AssignedGpu, Pack, PackSpec, Session, SessionPhase, SessionSpec, SessionStatus,
};

use super::config::AgentConfig;
use super::dialer::Dialer;
use super::runtime::{ContainerObs, ContainerState, labels};
use super::spec::container_name;

/// `GET path` over HTTP/1.0 to `addr`: the whole answer, head and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

pub use cluster::FakeCluster;
pub use docker::FakeContainers;
pub use node::{
    Agent, GPUS, NodeRuntime, TestNode, WORKLOAD_PACK, is_running_and_ready, remove_networks,
};
pub use zfs::FakeWorkspaces;

pub const IMAGE: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// An agent configuration for node `node-a`, workspaces under `pool/mf`.
/// Asserts the hardening every session container gets: an init process, no
/// privileges, every capability dropped, `no-new-privileges`, a read-only
/// root filesystem and a process limit.
#[track_caller]
pub fn assert_hardened(host: &bollard::models::HostConfig) {
    assert_eq!(host.init, Some(true), "init");
    assert_ne!(host.privileged, Some(true), "privileged");
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]), "cap_drop");
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_string()]),
        "security_opt"
    );
    assert_eq!(host.readonly_rootfs, Some(true), "readonly_rootfs");
    assert!(
        host.pids_limit.unwrap_or(0) > 0,
        "pids_limit {:?}",
        host.pids_limit
    );
}

pub fn config() -> AgentConfig {
    let mut c = AgentConfig::new("node-a", "pool/mf");
    c.dialer = Arc::new(FakeDialer);
    c.probe_burst = Duration::from_millis(20);
    c
}

/// A Session the scheduler bound to `node-a` with `gpus` GPUs.
/// A session of `owner` alice with this Pack and GPU count, the rest
/// defaulted.
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
        resume_requested_at: None,
    }
}

pub fn bound_session(name: &str, gpus: u32) -> Session {
    let mut s = Session::new(name, spec("default", gpus));
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
    Pack::new(name, PackSpec::of_image(IMAGE, 8080))
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
        pid: Some(4242),
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

/// The limits the default policy gives a session that asks for nothing.
pub fn limits() -> medforge_crds::SessionLimits {
    medforge_crds::policy::SessionPolicy::default()
        .defaults
        .limits()
}
