//! Starting servers for tests: each test gets its own data directory and port.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use kube::Client;
use medforge_apiserver::{Config, RunningServer};
use medforge_crds::{Session, SessionSpec};
use tempfile::TempDir;

pub struct TestServer {
    pub server: RunningServer,
    pub dir: TempDir,
    pub client: Client,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn config(dir: &Path) -> Config {
    Config::new(dir).with_listen("127.0.0.1:0".parse().unwrap())
}

pub async fn start() -> TestServer {
    start_with(|c| c).await
}

pub async fn start_with(f: impl FnOnce(Config) -> Config) -> TestServer {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let server = medforge_apiserver::start(f(config(dir.path())))
        .await
        .unwrap();
    let client = server.client().unwrap();
    TestServer {
        server,
        dir,
        client,
    }
}

/// Restarts a server on the same data directory and port.
pub async fn restart(ts: TestServer) -> TestServer {
    let addr: SocketAddr = ts.server.local_addr();
    let dir = ts.dir;
    ts.server.shutdown().await;
    let mut last_err = None;
    for _ in 0..50 {
        match medforge_apiserver::start(config(dir.path()).with_listen(addr)).await {
            Ok(server) => {
                let client = server.client().unwrap();
                return TestServer {
                    server,
                    dir,
                    client,
                };
            }
            Err(e) => {
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("restart failed: {last_err:?}");
}

pub fn session(name: &str, owner: &str) -> Session {
    Session::new(
        name,
        SessionSpec {
            owner: owner.into(),
            pack: "jupyter".into(),
            exposure: Default::default(),
            gpus: 1,
            state: Default::default(),
            resources: None,
            workspace: None,
            idle_timeout: None,
            max_lifetime: None,
        },
    )
}

/// The Status of a failed kube call.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
