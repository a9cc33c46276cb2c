//! The harness's own dockerd, inside the harness network namespace.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use bollard::{ClientVersion, Docker};
use nix::sys::signal::Signal;

use crate::error::{HarnessError, Result};
use crate::layout::{self, Layout};
use crate::process::{self, Binaries};

const COMPONENT: &str = "dockerd";

/// Engine 20.10 speaks API 1.41 at most; bollard's default is newer.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// A bollard client for the dockerd listening on `socket`.
pub fn client(socket: &Path) -> Result<Docker> {
    Docker::connect_with_unix(&socket.to_string_lossy(), 120, &API_VERSION).map_err(
        HarnessError::docker(format!("cannot connect to {}", socket.display())),
    )
}

/// Whether the daemon at `socket` answers `GET /_ping` with `OK`.
pub fn ping(socket: &Path) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = UnixStream::connect(socket)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.") && answer.contains(" 200 ") && answer.ends_with("OK"))
    };
    attempt().unwrap_or(false)
}

/// The PID of this harness's dockerd, if it is running.
pub fn running_pid(layout: &Layout) -> Option<i32> {
    process::read_pidfile(&layout.docker_pidfile).filter(|&pid| process::pid_is(pid, "dockerd"))
}

fn command(bins: &Binaries, layout: &Layout) -> Command {
    let mut cmd = Command::new(&bins.nsenter);
    cmd.arg(format!("--net={}", layout.netns_path.display()))
        .arg(&bins.dockerd)
        .arg("--data-root")
        .arg(&layout.docker_data_root)
        .arg("--exec-root")
        .arg(&layout.docker_exec_root)
        .arg("--pidfile")
        .arg(&layout.docker_pidfile)
        .arg("-H")
        .arg(layout.docker_host())
        .arg("--cgroup-parent")
        .arg(&layout.cgroup_parent)
        // Nothing in the namespace routes anywhere; no registry mirrors, no pulls.
        .arg("--userland-proxy=false");
    cmd
}

/// Starts dockerd unless this harness's one is running and answering.
pub fn ensure(bins: &Binaries, layout: &Layout, timeout: Duration) -> Result<()> {
    if let Some(pid) = running_pid(layout) {
        // Running: it may still be starting.
        if process::poll(timeout, Duration::from_millis(50), || {
            ping(&layout.docker_socket).then_some(())
        })
        .is_some()
        {
            return Ok(());
        }
        // Alive but not answering: replace it.
        process::terminate(COMPONENT, pid, Duration::from_secs(15))?;
    }
    // Leftovers of a daemon that died (containerd, shims) hold the exec root,
    // and its stale pid files (a dead containerd's PID may still be a zombie)
    // make the next dockerd wait for a containerd that never answers: start
    // from an empty exec root.
    kill_leftovers(layout);
    unmount_all_under(&layout.docker_exec_root);
    if layout.docker_exec_root.exists() {
        std::fs::remove_dir_all(&layout.docker_exec_root).map_err(HarnessError::io(
            COMPONENT,
            format!("cannot clear {}", layout.docker_exec_root.display()),
        ))?;
    }
    start(bins, layout, timeout)
}

fn start(bins: &Binaries, layout: &Layout, timeout: Duration) -> Result<()> {
    for dir in [
        &layout.run_dir,
        &layout.docker_data_root,
        &layout.docker_exec_root,
    ] {
        std::fs::create_dir_all(dir).map_err(HarnessError::io(
            COMPONENT,
            format!("cannot create {}", dir.display()),
        ))?;
    }
    let _ = std::fs::remove_file(&layout.docker_socket);
    let _ = std::fs::remove_file(&layout.docker_pidfile);
    let mut cmd = command(bins, layout);
    let line = process::command_line(&cmd);
    process::prepare_daemon(COMPONENT, &mut cmd, &bins.search_path, &layout.docker_log)?;
    cmd.env("HOME", &layout.state_dir);
    let mut child = cmd.spawn().map_err(|e| HarnessError::StartFailed {
        component: COMPONENT,
        command: line.clone(),
        reason: format!("cannot spawn: {e}"),
        log: layout.docker_log.clone(),
        tail: String::new(),
    })?;
    let failed = process::start_failed(COMPONENT, &line, &layout.docker_log);
    let outcome = process::poll(timeout, Duration::from_millis(50), || {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(Err(format!("it exited with {status}")));
        }
        ping(&layout.docker_socket).then_some(Ok(()))
    });
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(reason)) => {
            kill_leftovers(layout);
            Err(failed(reason))
        }
        None => {
            process::signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
            kill_leftovers(layout);
            Err(failed(format!(
                "{} did not answer ping within {timeout:?}",
                layout.docker_socket.display()
            )))
        }
    }
}

/// Removes one container, running or not, with its anonymous volumes.
pub async fn force_remove(
    docker: &Docker,
    id: &str,
) -> std::result::Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    docker.remove_container(id, Some(options)).await
}

/// Removes every container of this dockerd (force, with anonymous volumes).
pub async fn remove_all_containers(docker: &Docker) -> Result<Vec<String>> {
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            ..Default::default()
        }))
        .await
        .map_err(HarnessError::docker("list containers"))?;
    let mut removed = Vec::new();
    for c in containers {
        let Some(id) = c.id else { continue };
        force_remove(docker, &id)
            .await
            .map_err(HarnessError::docker(format!("remove container {id}")))?;
        removed.push(id);
    }
    Ok(removed)
}

/// [`remove_all_containers`] from blocking code (on a thread with its own runtime).
pub fn remove_all_containers_blocking(socket: &Path) -> Result<Vec<String>> {
    let socket = socket.to_path_buf();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HarnessError::io(COMPONENT, "cannot build a tokio runtime"))?;
        rt.block_on(async {
            let docker = client(&socket)?;
            remove_all_containers(&docker).await
        })
    })
    .join()
    .map_err(|_| HarnessError::other(COMPONENT, "container removal thread panicked"))?
}

/// Stops this harness's dockerd: SIGTERM and wait (dockerd stops its
/// containers and containerd), SIGKILL after the grace period, then kills
/// whatever is left of it and unmounts its mounts.
pub fn stop(layout: &Layout) -> Result<()> {
    if let Some(pid) = running_pid(layout) {
        process::terminate(COMPONENT, pid, Duration::from_secs(30))?;
    }
    kill_leftovers(layout);
    for dir in [&layout.docker_exec_root, &layout.docker_data_root] {
        unmount_all_under(dir);
    }
    let _ = std::fs::remove_file(&layout.docker_pidfile);
    let _ = std::fs::remove_file(&layout.docker_socket);
    Ok(())
}

/// Kills, by PID, every process whose command line names this harness's
/// runtime directory (dockerd, its containerd, shims) and every process in its
/// cgroup parent (containers of a daemon that died), then removes those cgroups.
pub fn kill_leftovers(layout: &Layout) {
    let needle = layout.run_dir.to_string_lossy().into_owned();
    let pids: Vec<i32> = process::pids_mentioning(&needle)
        .into_iter()
        .filter(|&pid| {
            process::pid_comm(pid).is_some_and(|c| {
                c.starts_with("dockerd")
                    || c.starts_with("containerd")
                    || c.starts_with("docker-")
                    || c == "runc"
            })
        })
        .collect();
    for &pid in &pids {
        process::signal(pid, Signal::SIGKILL);
    }
    for &pid in &pids {
        process::poll(Duration::from_secs(5), Duration::from_millis(20), || {
            (!process::pid_alive(pid)).then_some(())
        });
    }
    let cgroups = cgroup_dirs(&layout.cgroup_parent);
    for dir in &cgroups {
        for pid in cgroup_pids(dir) {
            process::signal(pid, Signal::SIGKILL);
        }
    }
    for dir in &cgroups {
        remove_cgroup_tree(dir);
    }
}

/// The directories of a cgroup in every mounted hierarchy (v1 and v2).
fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let rel = parent.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = Vec::new();
    if root.join(rel).is_dir() {
        dirs.push(root.join(rel));
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let candidate = e.path().join(rel);
            if candidate.is_dir() {
                dirs.push(candidate);
            }
        }
    }
    dirs
}

fn cgroup_pids(dir: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                pids.extend(cgroup_pids(&e.path()));
            }
        }
    }
    pids
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    // A cgroup can be removed once its last process is gone, which takes a moment.
    process::poll(Duration::from_secs(5), Duration::from_millis(20), || {
        (std::fs::remove_dir(dir).is_ok() || !dir.exists()).then_some(())
    });
}

/// Detaches every mount at or below `dir` (deepest first).
pub fn unmount_all_under(dir: &Path) {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return;
    };
    let mut mounts = layout::mounts_under(&dir);
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
}
