//! The network namespace dockerd and every container live in: `lo` only, no
//! route out. The test process stays in the host's namespace and opens its
//! sockets from a short-lived thread that entered this one.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use tokio::net::TcpStream;

use crate::error::Result;
use crate::layout::{self, Layout};
use crate::process::{self, Binaries};

const COMPONENT: &str = "netns";

/// Whether the namespace exists (its file is a live nsfs mount).
pub fn exists(layout: &Layout) -> bool {
    // `/var/run` is usually a link to `/run`; mountinfo has the real path.
    std::fs::canonicalize(&layout.netns_path)
        .map(|p| layout::is_mount_point(&p))
        .unwrap_or(false)
}

/// Creates the namespace unless it exists, and brings `lo` up.
pub fn ensure(bins: &Binaries, layout: &Layout) -> Result<()> {
    if !exists(layout) {
        if layout.netns_path.exists() {
            // A stale file (not a mount) would make `ip netns add` fail.
            let _ = process::run(COMPONENT, &bins.ip, ["netns", "del", layout.netns.as_str()]);
            let _ = std::fs::remove_file(&layout.netns_path);
        }
        process::run(COMPONENT, &bins.ip, ["netns", "add", layout.netns.as_str()])?;
    }
    process::run(
        COMPONENT,
        &bins.ip,
        ["-n", layout.netns.as_str(), "link", "set", "lo", "up"],
    )?;
    Ok(())
}

/// Deletes the namespace (if it exists).
pub fn remove(bins: &Binaries, layout: &Layout) -> Result<()> {
    if exists(layout) || layout.netns_path.exists() {
        process::run(COMPONENT, &bins.ip, ["netns", "del", layout.netns.as_str()])?;
    }
    Ok(())
}

/// Opens a TCP connection from inside the network namespace at `netns_path`.
///
/// A socket keeps the namespace it was created in, so the connection is made
/// on a dedicated thread that entered the namespace with `setns` and exits
/// right after; the caller's threads never change namespace.
pub async fn connect(
    netns_path: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let path = netns_path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-connect".into())
        .spawn(move || {
            let result = (|| -> io::Result<std::net::TcpStream> {
                let ns = File::open(&path)?;
                setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
                let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
                stream.set_nodelay(true)?;
                stream.set_nonblocking(true)?;
                Ok(stream)
            })();
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the netns connect thread ended without an answer"))??;
    TcpStream::from_std(stream)
}
