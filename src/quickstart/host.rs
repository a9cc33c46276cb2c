//! The host the quickstart runs on: root, programs on the PATH or in the
//! sbin directories, a usable iptables, and running a program to its end.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A program on `PATH` or in the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.exists().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Session isolation needs iptables, and one that this process may use.
pub async fn iptables_usable() -> Result<()> {
    let iptables = find_program("iptables").ok_or_else(|| {
        anyhow!("iptables is missing (session isolation needs it): `apt-get install iptables`")
    })?;
    run(&iptables, &["-w", "-S", "FORWARD"])
        .await
        .map(|_| ())
        .context("iptables is unusable, and session isolation needs it (is this a container without NET_ADMIN?)")
}

/// How long one helper command ([`run`]) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `program` to its end; its standard output, or an error with its
/// standard error.
pub async fn run(program: &Path, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    // A daemon that hangs (zfs-fuse, dockerd) must not hang `medforge up`:
    // the unfinished command is killed when its future is dropped.
    let out = tokio::time::timeout(COMMAND_TIMEOUT, output)
        .await
        .map_err(|_| {
            anyhow!(
                "`{} {}` did not finish within {COMMAND_TIMEOUT:?} and was killed",
                program.display(),
                args.join(" ")
            )
        })?
        .with_context(|| format!("running {}", program.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(anyhow!(
            "`{} {}` failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls `check` every 100 ms until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last lines of a log, for an error message.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Eight hex digits of `s`'s SHA-256: names derived from the data directory.
pub fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..8].to_string()
}
