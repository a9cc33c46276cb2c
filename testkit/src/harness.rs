//! A handle on the running harness for one test: its Docker client, names
//! and paths, commands in the namespace, the workload image and HTTP into
//! the namespace.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerCreateResponse};
use bollard::query_parameters::CreateContainerOptions;
use bytes::Bytes;
use hyper::Method;
use tokio::net::TcpStream;

use crate::dockerd;
use crate::error::{HarnessError, Result};
use crate::http::{self, HttpResponse};
use crate::image;
use crate::layout::{HarnessConfig, Layout};
use crate::lifecycle::{bring_up, check_root, open_lock};
use crate::netns;
use crate::process::{self, Binaries};
use crate::zfs;

struct Inner {
    layout: Layout,
    bins: Binaries,
    docker: Docker,
    /// Shared lock held while this handle lives, so `down` waits for us.
    _in_use: File,
}

/// A handle on the running harness, for one test.
///
/// Cheap to clone. Holds a shared lock on the state directory so that
/// `mf-harness down` waits until the test is done.
#[derive(Clone)]
pub struct Harness {
    inner: Arc<Inner>,
}

impl fmt::Debug for Harness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// The harness for the default configuration (`MEDFORGE_HARNESS_DIR` or
    /// `<workspace>/target/harness`), brought up if needed.
    pub async fn get() -> Result<Harness> {
        Harness::start(HarnessConfig::from_env()).await
    }

    /// The harness for `config`, brought up if needed (and reused if up).
    pub async fn start(config: HarnessConfig) -> Result<Harness> {
        let (layout, bins, in_use) = tokio::task::spawn_blocking(move || -> Result<_> {
            let bins = Binaries::resolve(&config.search_path)?;
            check_root()?;
            let layout = config.layout()?;
            // In-use first, then the state lock: the same order as `down`.
            let in_use = open_lock(&layout.in_use_file)?;
            in_use
                .lock_shared()
                .map_err(HarnessError::io("harness", "cannot lock the in-use file"))?;
            bring_up(&config, &layout, &bins)?;
            Ok((layout, bins, in_use))
        })
        .await
        .map_err(|e| HarnessError::other("harness", format!("bring-up task failed: {e}")))??;
        let docker = dockerd::client(&layout.docker_socket)?;
        Ok(Harness {
            inner: Arc::new(Inner {
                layout,
                bins,
                docker,
                _in_use: in_use,
            }),
        })
    }

    /// The same harness with a new Docker client (for use on another runtime:
    /// a client's pooled connections belong to the runtime that made them).
    pub fn with_fresh_client(&self) -> Result<Harness> {
        let docker = dockerd::client(&self.inner.layout.docker_socket)?;
        let in_use = self.inner._in_use.try_clone().map_err(HarnessError::io(
            "harness",
            "cannot duplicate the in-use lock",
        ))?;
        Ok(Harness {
            inner: Arc::new(Inner {
                layout: self.inner.layout.clone(),
                bins: self.inner.bins.clone(),
                docker,
                _in_use: in_use,
            }),
        })
    }

    /// A Docker client for the harness dockerd (API 1.41).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// All names and paths of this harness.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// `/var/run/netns/<name>` of the namespace dockerd and the containers live in.
    pub fn netns_path(&self) -> &Path {
        &self.inner.layout.netns_path
    }

    /// The `zfs` program.
    pub fn zfs_binary(&self) -> &Path {
        &self.inner.bins.zfs
    }

    /// Runs `zfs ARGS…` and returns its stdout.
    pub async fn zfs<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        process::run_async("zfs", &self.inner.bins.zfs, args).await
    }

    /// Unmounts and destroys a dataset tree with its snapshots, as a person
    /// would by hand, waiting out zfs-fuse's "dataset is busy" after an
    /// unmount. Returns the datasets that existed.
    pub async fn destroy_dataset(&self, dataset: &str) -> Result<Vec<String>> {
        zfs::destroy_tree(&self.inner.bins.zfs, dataset).await
    }

    /// A `std::process::Command` that runs `program` inside the namespace
    /// (through `nsenter --net=…`).
    pub fn netns_command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.inner.bins.nsenter);
        cmd.arg(format!("--net={}", self.netns_path().display()))
            .arg(program);
        cmd
    }

    /// Builds (or reuses) the `FROM scratch` workload image; returns its tag.
    /// Builds serialise on a lock file, so parallel tests build the image once.
    pub async fn workload_image(&self) -> Result<String> {
        let binary = tokio::task::spawn_blocking(image::build_workload_binary)
            .await
            .map_err(|e| {
                HarnessError::other("workload image", format!("build task failed: {e}"))
            })??;
        let lock_path = self.layout().state_dir.join("image.lock");
        let lock = tokio::task::spawn_blocking(move || -> Result<File> {
            let lock = open_lock(&lock_path)?;
            lock.lock()
                .map_err(HarnessError::io("workload image", "cannot lock image.lock"))?;
            Ok(lock)
        })
        .await
        .map_err(|e| HarnessError::other("workload image", format!("lock task failed: {e}")))??;
        let tag = image::ensure_image_from_binary(self.docker(), &binary).await;
        drop(lock);
        tag
    }

    /// Opens a TCP connection to `addr` from inside the namespace.
    pub async fn connect(&self, addr: SocketAddr) -> Result<TcpStream> {
        netns::connect(self.netns_path(), addr, http::DEFAULT_TIMEOUT)
            .await
            .map_err(HarnessError::io("netns", format!("connect to {addr}")))
    }

    /// One HTTP request to `addr` inside the namespace, with a deadline.
    pub async fn http(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        body: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        http::request(self.netns_path(), addr, method, path, body.into(), timeout).await
    }

    /// One request with extra headers (a `Host` header picks a virtual host).
    pub async fn http_with_headers(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        http::request_with_headers(
            self.netns_path(),
            addr,
            method,
            path,
            headers,
            body.into(),
            http::DEFAULT_TIMEOUT,
        )
        .await
    }

    /// `GET path` with the default deadline (10 s).
    pub async fn http_get(&self, addr: SocketAddr, path: &str) -> Result<HttpResponse> {
        self.http(Method::GET, addr, path, Bytes::new(), http::DEFAULT_TIMEOUT)
            .await
    }

    /// `PUT path` with a body and the default deadline (10 s).
    pub async fn http_put(
        &self,
        addr: SocketAddr,
        path: &str,
        body: impl Into<Bytes>,
    ) -> Result<HttpResponse> {
        self.http(Method::PUT, addr, path, body, http::DEFAULT_TIMEOUT)
            .await
    }

    /// Polls `GET path` until it answers 2xx, up to `timeout`.
    pub async fn wait_for_http(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Result<HttpResponse> {
        http::wait_for_http(self.netns_path(), addr, path, timeout).await
    }

    /// Polls until `addr` accepts a TCP connection, up to `timeout`.
    pub async fn wait_for_port(&self, addr: SocketAddr, timeout: Duration) -> Result<()> {
        http::wait_for_port(self.netns_path(), addr, timeout).await
    }

    /// Creates the container `name` from `config` and starts it.
    pub async fn create_and_start(
        &self,
        name: &str,
        config: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse> {
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let created = self
            .docker()
            .create_container(Some(options), config)
            .await
            .map_err(HarnessError::docker(format!("create container {name}")))?;
        self.docker()
            .start_container(name, None)
            .await
            .map_err(HarnessError::docker(format!("start container {name}")))?;
        Ok(created)
    }

    /// The IP address of a running container (first network with one).
    pub async fn container_ip(&self, container: &str) -> Result<IpAddr> {
        let info = self
            .docker()
            .inspect_container(container, None)
            .await
            .map_err(HarnessError::docker(format!("inspect {container}")))?;
        let settings = info.network_settings.unwrap_or_default();
        let ip = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .filter_map(|n| n.ip_address)
            .find(|ip| !ip.is_empty());
        let ip = ip.ok_or_else(|| {
            HarnessError::other("docker", format!("container {container} has no IP address"))
        })?;
        ip.parse().map_err(|e| {
            HarnessError::other(
                "docker",
                format!("container {container}: bad IP {ip:?}: {e}"),
            )
        })
    }
}
