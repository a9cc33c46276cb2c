//! How the agent checks that a session's workload accepts connections.
//!
//! The readiness probe is a TCP connect to the container's address on the
//! agent's Docker network. That address is reachable only from the network
//! namespace the Docker bridge lives in: the host's own in production, the
//! test namespace in tests (where dockerd runs). [`NetnsDialer`] opens the
//! socket from a short-lived thread that entered the namespace with `setns`,
//! so no thread of the agent ever changes namespace.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use nix::sched::{CloneFlags, setns};

/// Opens (and at once closes) a TCP connection to a session's workload.
pub trait Dialer: Send + Sync + 'static {
    /// Succeeds when `addr` accepted a connection within `timeout`.
    fn dial(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'static, io::Result<()>>;
    /// For logs and `Debug`.
    fn describe(&self) -> String;
}

/// Plain TCP from the agent's own network namespace.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'static, io::Result<()>> {
        async move {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(_stream)) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer from {addr} within {timeout:?}"),
                )),
            }
        }
        .boxed()
    }

    fn describe(&self) -> String {
        "tcp".to_string()
    }
}

/// TCP from inside the network namespace at `path` (`/var/run/netns/NAME`).
#[derive(Debug, Clone)]
pub struct NetnsDialer {
    path: PathBuf,
}

impl NetnsDialer {
    /// Fails when `path` cannot be opened (no such namespace).
    pub fn new(path: impl Into<PathBuf>) -> io::Result<NetnsDialer> {
        let path = path.into();
        File::open(&path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open network namespace {}: {e}", path.display()),
            )
        })?;
        Ok(NetnsDialer { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Dialer for NetnsDialer {
    fn dial(&self, addr: SocketAddr, timeout: Duration) -> BoxFuture<'static, io::Result<()>> {
        let path = self.path.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A socket keeps the namespace it was created in; the thread
            // that entered the namespace ends right after.
            std::thread::Builder::new()
                .name("netns-dial".into())
                .spawn(move || {
                    let result = (|| -> io::Result<()> {
                        let ns = File::open(&path)?;
                        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                        std::net::TcpStream::connect_timeout(&addr, timeout).map(drop)
                    })();
                    let _ = tx.send(result);
                })?;
            rx.await
                .map_err(|_| io::Error::other("the netns dial thread ended without an answer"))?
        }
        .boxed()
    }

    fn describe(&self) -> String {
        format!("tcp in netns {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tcp_dialer_reports_accepted_and_refused_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        TcpDialer
            .dial(addr, Duration::from_secs(2))
            .await
            .expect("a listening port accepts");
        drop(listener);
        let e = TcpDialer
            .dial(addr, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    #[tokio::test]
    async fn netns_dialer_in_our_own_namespace() {
        // Entering the namespace we are in is allowed for root only; the
        // real use is covered by the agent's tests against the harness.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dialer = NetnsDialer::new("/proc/self/ns/net").unwrap();
        dialer.dial(addr, Duration::from_secs(2)).await.unwrap();
        assert!(NetnsDialer::new("/var/run/netns/does-not-exist").is_err());
    }
}
