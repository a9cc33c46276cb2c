//! The daemons the quickstart starts: in their own process group, their
//! output in a log, their PID recorded; found again and stopped by PID.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::host::wait_until;

/// Starts `cmd` in its own process group with its output in `log`, records
/// its PID, and returns the child (never killed on drop: it outlives
/// `medforge up`, as Docker and Caddy must).
pub fn spawn_daemon(
    mut cmd: tokio::process::Command,
    log: &Path,
    pidfile: &Path,
) -> Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().context("duplicating a log handle")?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    let child = cmd.spawn().context("spawning")?;
    if let Some(pid) = child.id() {
        write_pid(pidfile, pid)?;
    }
    Ok(child)
}

fn write_pid(file: &Path, pid: u32) -> Result<()> {
    std::fs::write(file, format!("{pid}\n"))
        .with_context(|| format!("recording the PID in {}", file.display()))
}

/// The PID recorded in `file`, when that process still runs as `comm`.
pub fn live_pid(file: &Path, comm: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    runs_as(pid, comm).then_some(pid)
}

/// Every live process that runs the program `comm`, whoever started it.
pub fn pids_running_as(comm: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&pid| runs_as(pid, comm))
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether `pid` is a live (not zombie) process running the program `comm`.
fn runs_as(pid: i32, comm: &str) -> bool {
    // `comm` is cut to 15 bytes.
    let want: String = comm.chars().take(15).collect();
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == want)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// SIGTERM, then SIGKILL after `grace`; only a process that still runs as `comm`.
pub async fn stop_pid(pid: i32, comm: &str, grace: Duration) -> bool {
    let alive = || runs_as(pid, comm);
    if !alive() {
        return false;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    if wait_until(grace, || async { !alive() }).await {
        return true;
    }
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    wait_until(Duration::from_secs(5), || async { !alive() }).await;
    true
}
