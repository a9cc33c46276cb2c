//! The embedded control plane for tests and benchmarks (feature `testing`):
//! a server on `127.0.0.1:<free port>` in a temporary data directory, serving
//! MedForge's CRDs, and a kube client for it.
//!
//! ```no_run
//! # async fn run() {
//! use medforge_apiserver::testing::TestControlPlane;
//! let cp = TestControlPlane::builder().namespace("team-a").start().await;
//! let sessions: kube::Api<medforge_crds::Session> = kube::Api::namespaced(cp.client.clone(), "team-a");
//! # let _ = sessions;
//! cp.shutdown().await;
//! # }
//! ```

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use tempfile::TempDir;

use crate::{Config, Error, RunningServer};

/// How long [`TestControlPlane::restart`] keeps trying to take the old port
/// and data directory back.
const RESTART_WITHIN: Duration = Duration::from_secs(5);

/// A running test control plane. Its data directory is removed when it is
/// dropped; call [`TestControlPlane::shutdown`] to stop the server first.
pub struct TestControlPlane {
    pub server: RunningServer,
    /// A client with the server's CA and token, default namespace `default`.
    pub client: kube::Client,
    /// The temporary directory; the server's data lives in [`Self::data_dir`].
    pub dir: TempDir,
    config: Config,
}

impl std::fmt::Debug for TestControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestControlPlane")
            .field("server", &self.server)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How to start a [`TestControlPlane`]; see [`TestControlPlane::builder`].
#[must_use]
#[derive(Debug)]
pub struct Builder {
    configure: Configure,
    subdir: Option<String>,
    namespaces: Vec<String>,
}

/// The changes [`Builder::configure`] collected, applied in order.
struct Configure(Box<dyn FnOnce(Config) -> Config + Send>);

impl std::fmt::Debug for Configure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Configure(..)")
    }
}

impl Builder {
    /// Changes the server's configuration (watch history, bookmark interval,
    /// event TTL, body limit…) before it starts. The data directory and the
    /// address are the test's; changing them is the caller's business.
    pub fn configure(mut self, f: impl FnOnce(Config) -> Config + Send + 'static) -> Self {
        let Configure(before) = self.configure;
        self.configure = Configure(Box::new(move |c| f(before(c))));
        self
    }

    /// Keeps the server's data in `<temporary directory>/<name>` rather than
    /// in the temporary directory itself (which the test then shares).
    pub fn data_subdir(mut self, name: impl Into<String>) -> Self {
        self.subdir = Some(name.into());
        self
    }

    /// Creates this namespace once the server is up (it may exist already).
    pub fn namespace(mut self, name: impl Into<String>) -> Self {
        self.namespaces.push(name.into());
        self
    }

    /// Starts the control plane; panics (naming the cause) when it cannot.
    pub async fn start(self) -> TestControlPlane {
        match self.try_start().await {
            Ok(cp) => cp,
            Err(e) => panic!("the test control plane did not start: {e}"),
        }
    }

    /// Starts the control plane.
    pub async fn try_start(self) -> Result<TestControlPlane, Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
        let data_dir = match &self.subdir {
            Some(sub) => dir.path().join(sub),
            None => dir.path().to_path_buf(),
        };
        let config = (self.configure.0)(Config::new(data_dir).with_listen(loopback(0)));
        let server = crate::start(config.clone()).await?;
        let client = server.client()?;
        for ns in &self.namespaces {
            create_namespace(&client, ns).await?;
        }
        Ok(TestControlPlane {
            server,
            client,
            dir,
            config,
        })
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Creates the namespace `name` unless it exists.
async fn create_namespace(client: &kube::Client, name: &str) -> Result<(), Error> {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_string());
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    match api.create(&PostParams::default(), &ns).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        created => created
            .map(drop)
            .map_err(|e| Error::Bootstrap(format!("namespace {name}: {e}"))),
    }
}

impl TestControlPlane {
    /// The default control plane: nothing configured, no extra namespace.
    pub async fn start() -> TestControlPlane {
        TestControlPlane::builder().start().await
    }

    /// A builder for the variations tests need.
    pub fn builder() -> Builder {
        Builder {
            configure: Configure(Box::new(|c| c)),
            subdir: None,
            namespaces: Vec::new(),
        }
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The configuration the server runs with (its address is the one it
    /// was started with, port 0 on the first start); for starting another
    /// server on the same data directory.
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// Stops the server and starts it again on the same data directory and
    /// port (retrying while the port or the directory is still held), with
    /// the default configuration, as a restarted `medforge apiserver` would
    /// start: what the builder configured does not carry over.
    pub async fn restart(self) -> TestControlPlane {
        let TestControlPlane {
            server,
            dir,
            config,
            ..
        } = self;
        let config = Config::new(config.data_dir).with_listen(server.local_addr());
        server.shutdown().await;
        let deadline = tokio::time::Instant::now() + RESTART_WITHIN;
        loop {
            match crate::start(config.clone()).await {
                Ok(server) => {
                    let client = server.client().expect("a client for the restarted server");
                    return TestControlPlane {
                        server,
                        client,
                        dir,
                        config,
                    };
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    panic!("the test control plane did not restart within {RESTART_WITHIN:?}: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops the server (the data directory goes when this is dropped).
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}
