//! Finding programs, running commands, watching and stopping processes by PID.

use std::ffi::{OsStr, OsString};
use std::fs::OpenOptions;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{HarnessError, Result};

/// A program the harness runs: which component needs it and which Debian
/// package provides it.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub component: &'static str,
    pub binary: &'static str,
    pub package: &'static str,
}

/// Everything the harness executes, checked before anything starts.
pub const REQUIREMENTS: &[Requirement] = &[
    Requirement {
        component: "netns",
        binary: "ip",
        package: "iproute2",
    },
    Requirement {
        component: "netns",
        binary: "nsenter",
        package: "util-linux",
    },
    Requirement {
        component: "dockerd",
        binary: "dockerd",
        package: "docker.io",
    },
    Requirement {
        component: "dockerd",
        binary: "containerd",
        package: "containerd",
    },
    Requirement {
        component: "dockerd",
        binary: "runc",
        package: "runc",
    },
    Requirement {
        component: "dockerd",
        binary: "docker-init",
        package: "docker.io",
    },
    Requirement {
        component: "zfs-fuse",
        binary: "zfs-fuse",
        package: "zfs-fuse",
    },
    Requirement {
        component: "zfs-fuse",
        binary: "zpool",
        package: "zfs-fuse",
    },
    Requirement {
        component: "zfs-fuse",
        binary: "zfs",
        package: "zfs-fuse",
    },
];

/// The default search path: `$PATH` plus the sbin directories (root's tools
/// live there and a test's `PATH` may lack them).
pub fn default_search_path() -> OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// Finds an executable file called `name` in `search_path`.
pub fn find_in_path(name: &str, search_path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Absolute paths of every program the harness runs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub ip: PathBuf,
    pub nsenter: PathBuf,
    pub dockerd: PathBuf,
    pub zfs_fuse: PathBuf,
    pub zpool: PathBuf,
    pub zfs: PathBuf,
    /// The `PATH` given to dockerd and zfs-fuse.
    pub search_path: OsString,
}

impl Binaries {
    /// Resolves all [`REQUIREMENTS`]; the first missing one is the error,
    /// naming its component and Debian package.
    pub fn resolve(search_path: &OsStr) -> Result<Binaries> {
        let mut found = std::collections::HashMap::new();
        for req in REQUIREMENTS {
            let path = find_in_path(req.binary, search_path).ok_or_else(|| {
                HarnessError::MissingBinary {
                    component: req.component,
                    binary: req.binary,
                    package: req.package,
                    searched: search_path.to_string_lossy().into_owned(),
                }
            })?;
            found.insert(req.binary, path);
        }
        let mut take = |name: &str| found.remove(name).unwrap_or_default();
        Ok(Binaries {
            ip: take("ip"),
            nsenter: take("nsenter"),
            dockerd: take("dockerd"),
            zfs_fuse: take("zfs-fuse"),
            zpool: take("zpool"),
            zfs: take("zfs"),
            search_path: search_path.to_os_string(),
        })
    }
}

/// A command line as text, for error messages.
pub fn command_line(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

fn check_output(component: &'static str, line: String, output: Output) -> Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if stderr.is_empty() {
            stderr = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        Err(HarnessError::CommandFailed {
            component,
            command: line,
            status: output.status.to_string(),
            stderr,
        })
    }
}

/// `program args…` with stdin closed, and its command line for messages.
fn command<I, S>(program: &Path, args: I) -> (Command, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    let line = command_line(&cmd);
    (cmd, line)
}

/// How long one command the harness runs ([`run`], [`run_async`]) may take
/// before it is killed and reported as [`HarnessError::Timeout`]. Every
/// one (`zfs`, `zpool`, `ip`, …) takes well under a second when its daemon
/// is healthy; a hung daemon must fail the test that met it, with the
/// command named, instead of hanging it and everything after it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

fn timed_out(component: &'static str, line: String, after: Duration) -> HarnessError {
    HarnessError::Timeout {
        component,
        what: format!("`{line}` did not finish and was killed"),
        waited: after,
    }
}

/// Runs a command to completion (stdin closed, output captured) and returns
/// its stdout; a command still running after [`COMMAND_TIMEOUT`] is killed.
pub fn run<I, S>(component: &'static str, program: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_within(component, program, args, COMMAND_TIMEOUT)
}

/// [`run`] with its own bound on the command's time.
pub fn run_within<I, S>(
    component: &'static str,
    program: &Path,
    args: I,
    timeout: Duration,
) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (mut cmd, line) = command(program, args);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(HarnessError::io(component, format!("cannot run `{line}`")))?;
    let pid = child.id() as i32;
    // The waiting thread owns the child; until it reaps it, `pid` is the
    // child's, so the kill below cannot reach another process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(output) => {
            let output =
                output.map_err(HarnessError::io(component, format!("cannot run `{line}`")))?;
            check_output(component, line, output)
        }
        Err(_) => {
            signal(pid, Signal::SIGKILL);
            // Reaped once its output is closed; a grandchild that holds it
            // open is not waited for.
            let _ = rx.recv_timeout(Duration::from_secs(5));
            Err(timed_out(component, line, timeout))
        }
    }
}

/// [`run`] on the tokio runtime.
pub async fn run_async<I, S>(component: &'static str, program: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_async_within(component, program, args, COMMAND_TIMEOUT).await
}

/// [`run_within`] on the tokio runtime.
pub async fn run_async_within<I, S>(
    component: &'static str,
    program: &Path,
    args: I,
    timeout: Duration,
) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let (cmd, line) = command(program, args);
    let output = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .output();
    // Dropping the unfinished output future kills the command.
    match tokio::time::timeout(timeout, output).await {
        Ok(output) => {
            let output =
                output.map_err(HarnessError::io(component, format!("cannot run `{line}`")))?;
            check_output(component, line, output)
        }
        Err(_) => Err(timed_out(component, line, timeout)),
    }
}

/// Makes `cmd` a daemon's command: run from `/` in its own process group,
/// with only `PATH` (`search_path`) in its environment, no stdin, and stdout
/// and stderr appended to `log`.
pub fn prepare_daemon(
    component: &'static str,
    cmd: &mut Command,
    search_path: &OsStr,
    log: &Path,
) -> Result<()> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(HarnessError::io(
            component,
            format!("cannot open {}", log.display()),
        ))?;
    let err = out.try_clone().map_err(HarnessError::io(
        component,
        "cannot duplicate the log handle",
    ))?;
    cmd.current_dir("/")
        .env_clear()
        .env("PATH", search_path)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    Ok(())
}

/// The `StartFailed` error, for a reason, of a daemon started with `command`
/// that logs to `log`; it carries the last 30 lines of the log.
pub fn start_failed<'a>(
    component: &'static str,
    command: &'a str,
    log: &'a Path,
) -> impl Fn(String) -> HarnessError + 'a {
    move |reason| HarnessError::StartFailed {
        component,
        command: command.to_string(),
        reason,
        log: log.to_path_buf(),
        tail: log_tail(log, 30),
    }
}

/// The last `lines` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(data) => {
            let text = String::from_utf8_lossy(&data);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..]
                .iter()
                .map(|l| format!("    | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        }
        Err(e) => format!("    (cannot read {}: {e})", path.display()),
    }
}

/// Calls `check` every `interval` until it returns `Some` or `timeout` passes.
pub fn poll<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(interval);
    }
}

/// Whether a process exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// The process's command name (`/proc/PID/comm`, at most 15 characters).
pub fn pid_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// Whether `pid` is alive and runs a program called `comm`.
pub fn pid_is(pid: i32, comm: &str) -> bool {
    pid_alive(pid) && pid_comm(pid).as_deref() == Some(comm)
}

/// Reads a PID file.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Sends a signal to one process.
pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// Writes `dir/name`, an executable `sh` script running `body`: a stand-in
/// for a program in tests.
pub fn fake_program(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write a fake program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make a fake program executable");
    path
}

/// Starts a process that runs as the program `name` and does nothing for a
/// minute (a copy of `sleep` called `dir/name`): how a daemon that runs and
/// never answers looks from outside. The caller kills it.
pub fn spawn_impostor(dir: &Path, name: &str) -> std::process::Child {
    let sleep = find_in_path("sleep", &default_search_path()).expect("sleep is installed");
    let impostor = dir.join(name);
    std::fs::copy(sleep, &impostor).expect("copy sleep");
    let child = Command::new(&impostor)
        .arg("60")
        .spawn()
        .expect("start the impostor");
    // Until its exec is done the child still runs as this test (a loaded
    // machine shows that for a while): return once it runs as `name`.
    let comm: String = name.chars().take(15).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
        .map_or(true, |c| c.trim() != comm)
    {
        assert!(
            Instant::now() < deadline,
            "the impostor {name} never ran as {comm}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Whether every thread of `pid` has ended (it is gone, or only its
/// zombie is left). A killed process's leader turns zombie while its
/// other threads are still exiting and holding its files and sockets.
pub fn fully_exited(pid: i32) -> bool {
    let threads = match std::fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(entries) => entries.count(),
        Err(_) => return true,
    };
    threads <= 1 && !pid_alive(pid)
}

/// Stops one process: SIGTERM, wait up to `grace`, then SIGKILL and wait,
/// each time until all its threads have ended ([`fully_exited`]).
/// Returns whether it had to be killed.
pub fn terminate(component: &'static str, pid: i32, grace: Duration) -> Result<bool> {
    if !pid_alive(pid) {
        return Ok(false);
    }
    signal(pid, Signal::SIGTERM);
    if poll(grace, Duration::from_millis(50), || {
        fully_exited(pid).then_some(())
    })
    .is_some()
    {
        return Ok(false);
    }
    signal(pid, Signal::SIGKILL);
    poll(Duration::from_secs(10), Duration::from_millis(20), || {
        fully_exited(pid).then_some(())
    })
    .ok_or_else(|| HarnessError::Timeout {
        component,
        what: format!("process {pid} survived SIGKILL"),
        waited: grace + Duration::from_secs(10),
    })?;
    Ok(true)
}

/// PIDs of processes whose command line mentions `needle` (used to find the
/// dockerd, containerd and shims of one harness by its unique runtime directory).
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    let c: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                    String::from_utf8_lossy(&c).contains(needle)
                })
                .unwrap_or(false)
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_names_component_and_package() {
        let empty = tempfile::tempdir().unwrap();
        let err = Binaries::resolve(empty.path().as_os_str()).unwrap_err();
        let msg = err.to_string();
        assert_eq!(err.component(), Some("netns"));
        assert!(msg.contains("`ip`"), "{msg}");
        assert!(msg.contains("iproute2"), "{msg}");
    }

    #[test]
    fn finds_executables_only() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("tool");
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        assert_eq!(find_in_path("tool", dir.path().as_os_str()), None);
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in_path("tool", dir.path().as_os_str()), Some(exe));
    }

    #[test]
    fn run_reports_the_command_and_stderr() {
        let sh = find_in_path("sh", &default_search_path()).unwrap();
        assert_eq!(run("test", &sh, ["-c", "echo hi"]).unwrap(), "hi\n");
        let err = run("test", &sh, ["-c", "echo oops >&2; exit 3"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("oops") && msg.contains("exit status: 3"),
            "{msg}"
        );
        assert!(msg.contains("-c 'echo oops >&2; exit 3'"), "{msg}");
    }

    /// `sh -c` that writes its PID to `pidfile` and then never finishes.
    fn hanging_shell(pidfile: &Path) -> (PathBuf, Vec<String>) {
        let sh = find_in_path("sh", &default_search_path()).unwrap();
        let script = format!("echo $$ > {}; exec sleep 600", pidfile.display());
        (sh, vec!["-c".to_string(), script])
    }

    fn assert_killed(pidfile: &Path) {
        let pid: i32 = std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = poll(Duration::from_secs(10), Duration::from_millis(20), || {
            (!pid_alive(pid)).then_some(())
        });
        assert!(gone.is_some(), "the hung command (pid {pid}) still runs");
    }

    #[test]
    fn a_command_that_hangs_is_killed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let (sh, args) = hanging_shell(&pidfile);
        let err = run_within("zfs-fuse", &sh, &args, Duration::from_millis(300)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HarnessError::Timeout { .. }), "{err:?}");
        assert!(
            msg.starts_with("zfs-fuse: ")
                && msg.contains("exec sleep 600'` did not finish and was killed"),
            "{msg}"
        );
        assert_killed(&pidfile);
    }

    #[tokio::test]
    async fn an_async_command_that_hangs_is_killed_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let (sh, args) = hanging_shell(&pidfile);
        let err = run_async_within("zfs-fuse", &sh, &args, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("exec sleep 600'` did not finish and was killed"),
            "{err}"
        );
        assert_killed(&pidfile);
    }

    #[test]
    fn process_liveness() {
        let me = std::process::id() as i32;
        assert!(pid_alive(me));
        assert!(!pid_alive(i32::MAX));
        assert!(pid_comm(me).is_some());
    }

    #[test]
    fn tails_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("x.log");
        std::fs::write(&log, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&log, 2), "    | b\n    | c");
        assert!(log_tail(&dir.path().join("none"), 2).contains("cannot read"));
    }
}
