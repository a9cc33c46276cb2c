//! Where the harness keeps its things: every name and path derives from the
//! state directory, so two state directories never share anything.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{HarnessError, Result};
use crate::process;

/// Environment variable naming the state directory.
pub const ENV_HARNESS_DIR: &str = "MEDFORGE_HARNESS_DIR";

/// Where `/var/run/netns` files live (`ip netns add` puts them there).
const NETNS_DIR: &str = "/var/run/netns";
/// Short runtime paths (Unix socket paths are limited to 107 bytes).
const RUN_ROOT: &str = "/run/medforge-harness";

/// The Cargo workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// How to bring the harness up.
#[derive(Debug, Clone)]
pub struct HarnessConfig {
    /// Default `<workspace>/target/harness`, or `$MEDFORGE_HARNESS_DIR`.
    pub state_dir: PathBuf,
    /// Where programs are looked up; default `$PATH` plus the sbin directories.
    pub search_path: OsString,
    /// Size of the pool's backing file.
    pub pool_size_bytes: u64,
    /// Deadline for each component to come up.
    pub start_timeout: Duration,
}

impl HarnessConfig {
    /// The configuration from the environment (`MEDFORGE_HARNESS_DIR`, `PATH`).
    pub fn from_env() -> HarnessConfig {
        let state_dir = std::env::var_os(ENV_HARNESS_DIR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target").join("harness"));
        HarnessConfig {
            state_dir,
            search_path: process::default_search_path(),
            pool_size_bytes: 1 << 30,
            start_timeout: Duration::from_secs(60),
        }
    }

    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> HarnessConfig {
        self.state_dir = dir.into();
        self
    }

    pub fn with_search_path(mut self, path: impl Into<OsString>) -> HarnessConfig {
        self.search_path = path.into();
        self
    }

    /// Creates the state directory and derives the layout from it.
    pub fn layout(&self) -> Result<Layout> {
        std::fs::create_dir_all(&self.state_dir).map_err(HarnessError::io(
            "harness",
            format!("cannot create state dir {}", self.state_dir.display()),
        ))?;
        let state_dir = self.state_dir.canonicalize().map_err(HarnessError::io(
            "harness",
            format!("cannot resolve state dir {}", self.state_dir.display()),
        ))?;
        Ok(Layout::for_state_dir(&state_dir))
    }
}

/// Names and paths of one harness instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub state_dir: PathBuf,
    /// 8 hex digits derived from the state directory's path.
    pub id: String,
    /// `mf-test-<id>`.
    pub netns: String,
    /// `/var/run/netns/mf-test-<id>`.
    pub netns_path: PathBuf,
    /// `/run/medforge-harness/<id>`: sockets, dockerd's exec root, the pool mountpoint.
    pub run_dir: PathBuf,
    pub docker_socket: PathBuf,
    pub docker_exec_root: PathBuf,
    pub docker_data_root: PathBuf,
    pub docker_pidfile: PathBuf,
    pub docker_log: PathBuf,
    /// dockerd's `--cgroup-parent`, so a dead daemon's containers can be found.
    pub cgroup_parent: String,
    /// Written only when a harness started zfs-fuse; machine-wide (there is
    /// one daemon per machine), so whichever harness goes down last stops it.
    pub zfs_fuse_pidfile: PathBuf,
    /// Machine-wide lock around starting/stopping zfs-fuse and pool bring-up,
    /// so one harness's `down` never stops the daemon under another's `up`.
    pub zfs_lock_file: PathBuf,
    pub zfs_fuse_log: PathBuf,
    /// `mfh<id>`.
    pub pool: String,
    pub pool_file: PathBuf,
    pub pool_mountpoint: PathBuf,
    pub lock_file: PathBuf,
    pub in_use_file: PathBuf,
    /// `harness.json`: this layout, for humans and scripts.
    pub info_file: PathBuf,
}

impl Layout {
    /// The layout for an (absolute, canonical) state directory.
    pub fn for_state_dir(state_dir: &Path) -> Layout {
        let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
        let id = hex::encode(&digest[..4]);
        let netns = format!("mf-test-{id}");
        let run_dir = Path::new(RUN_ROOT).join(&id);
        Layout {
            state_dir: state_dir.to_path_buf(),
            netns_path: Path::new(NETNS_DIR).join(&netns),
            netns,
            docker_socket: run_dir.join("docker.sock"),
            docker_exec_root: run_dir.join("exec"),
            docker_data_root: state_dir.join("docker"),
            docker_pidfile: state_dir.join("dockerd.pid"),
            docker_log: state_dir.join("dockerd.log"),
            cgroup_parent: format!("/medforge-harness-{id}"),
            zfs_fuse_pidfile: Path::new(RUN_ROOT).join("zfs-fuse.pid"),
            zfs_lock_file: Path::new(RUN_ROOT).join("zfs.lock"),
            zfs_fuse_log: state_dir.join("zfs-fuse.log"),
            pool: format!("mfh{id}"),
            pool_file: state_dir.join("pool.img"),
            pool_mountpoint: run_dir.join("pool"),
            lock_file: state_dir.join("lock"),
            in_use_file: state_dir.join("in-use.lock"),
            info_file: state_dir.join("harness.json"),
            run_dir,
            id,
        }
    }

    /// `DOCKER_HOST` for this harness's dockerd.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket.display())
    }
}

/// Decodes the octal escapes (`\040`) of `/proc/self/mountinfo`.
fn unescape_mount_path(s: &str) -> PathBuf {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 4 <= bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    PathBuf::from(<OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Mount points at or below `dir` (deepest last, in mount order).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// One line of `/proc/self/mountinfo`: mount point, file system type, source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

fn parse_mountinfo_line(line: &str) -> Option<MountEntry> {
    let mount_point = unescape_mount_path(line.split(' ').nth(4)?);
    let (_, after) = line.split_once(" - ")?;
    let mut rest = after.split(' ');
    let fs_type = rest.next()?.to_string();
    let source = unescape_mount_path(rest.next()?)
        .to_string_lossy()
        .into_owned();
    Some(MountEntry {
        mount_point,
        fs_type,
        source,
    })
}

/// All mounts of this process's mount namespace.
pub fn mount_entries() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| info.lines().filter_map(parse_mountinfo_line).collect())
        .unwrap_or_default()
}

/// Whether `path` is itself a mount point.
pub fn is_mount_point(path: &Path) -> bool {
    mounts_under(path).iter().any(|p| p == path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names_derive_from_the_state_dir() {
        let a = Layout::for_state_dir(Path::new("/work/main/target/harness"));
        let b = Layout::for_state_dir(Path::new("/tmp/other"));
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 8);
        assert_eq!(a.netns, format!("mf-test-{}", a.id));
        assert_eq!(a.pool, format!("mfh{}", a.id));
        assert!(a.docker_socket.as_os_str().len() < 100);
        assert_eq!(
            a,
            Layout::for_state_dir(Path::new("/work/main/target/harness"))
        );
        assert!(a.docker_host().starts_with("unix:///run/medforge-harness/"));
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mount_path("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mount_path("/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape_mount_path("/x\\"), PathBuf::from("/x\\"));
    }

    #[test]
    fn parses_mountinfo_lines() {
        let line = "45 27 0:39 / /run/x\\040y rw,relatime - fuse.zfs pool/a rw,allow_other";
        assert_eq!(
            parse_mountinfo_line(line),
            Some(MountEntry {
                mount_point: PathBuf::from("/run/x y"),
                fs_type: "fuse.zfs".into(),
                source: "pool/a".into(),
            })
        );
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mount_point(Path::new("/")));
        assert!(mounts_under(Path::new("/")).len() > 1);
    }

    #[test]
    fn config_from_env_defaults_under_target() {
        // Only checks the default when the variable is not set by the caller.
        if std::env::var_os(ENV_HARNESS_DIR).is_none() {
            let c = HarnessConfig::from_env();
            assert!(c.state_dir.ends_with("target/harness"));
        }
    }
}
