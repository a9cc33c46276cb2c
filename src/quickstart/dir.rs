//! What the quickstart keeps (its folder under the data directory) and
//! what it tells (the report behind the closing summary).

use std::path::{Path, PathBuf};

use super::host::short_hash;

/// What the quickstart did, reused or found missing, for the closing summary.
#[derive(Debug, Default)]
pub struct Report {
    pub(super) lines: Vec<String>,
}

impl Report {
    pub(super) fn note(&mut self, line: String) {
        tracing::info!("quickstart: {line}");
        self.lines.push(line);
    }
}

/// Paths of the quickstart's own files.
#[derive(Debug, Clone)]
pub struct QuickstartDir {
    pub dir: PathBuf,
}

impl QuickstartDir {
    pub fn new(data_dir: &Path) -> QuickstartDir {
        QuickstartDir {
            dir: data_dir.join("quickstart"),
        }
    }
    pub fn pidfile(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pid"))
    }
    pub fn log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }
    pub fn pool_file(&self) -> PathBuf {
        self.dir.join("pool.img")
    }
    pub fn caddy_home(&self) -> PathBuf {
        self.dir.join("caddy")
    }
    /// The root certificate of Caddy's internal CA (what a browser or curl trusts).
    pub fn caddy_root_cert(&self) -> PathBuf {
        self.caddy_home()
            .join("data/caddy/pki/authorities/local/root.crt")
    }
    /// The trial pool's name, from this directory's hash.
    pub fn trial_pool(&self) -> String {
        format!("mftrial{}", self.hash())
    }
    /// The exec root of a dockerd the quickstart starts on a socket of its
    /// own (a short path: containerd's sockets live there).
    pub fn dockerd_exec_root(&self) -> PathBuf {
        PathBuf::from(format!("/run/medforge-qs-{}", self.hash()))
    }
    fn hash(&self) -> String {
        short_hash(&self.dir.display().to_string())
    }
}
