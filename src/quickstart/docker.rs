//! Docker: used when it answers, else started through systemd, or as a
//! `dockerd` of our own that is restarted while `medforge up` runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, run, tail, wait_until};
use super::process::spawn_daemon;
use crate::cli::DOCKER_SOCKET;

/// Makes Docker answer at `socket`: uses it when it does, else starts it
/// through systemd (on Docker's own socket, under systemd) or as a `dockerd`
/// of our own, supervised while `medforge up` runs.
pub async fn ensure_docker(socket: &Path, qs: &QuickstartDir, report: &mut Report) -> Result<()> {
    if docker_answers(socket).await {
        report.note(format!("Docker answers at {}: using it", socket.display()));
        return Ok(());
    }
    let Some(dockerd) = find_program("dockerd") else {
        bail!(
            "Docker is not installed (no dockerd): install it with `apt-get install docker.io`, then run this again"
        );
    };
    let default_socket = socket == Path::new(DOCKER_SOCKET);
    if default_socket && Path::new("/run/systemd/system").is_dir() {
        run(Path::new("systemctl"), &["start", "docker"])
            .await
            .context("Docker is installed but not running, and `systemctl start docker` failed (see `journalctl -u docker`)")?;
        if !wait_until(Duration::from_secs(60), || docker_answers(socket)).await {
            bail!(
                "`systemctl start docker` ran but Docker does not answer at {}; see `journalctl -u docker`",
                socket.display()
            );
        }
        report.note("Docker was not running: started it with `systemctl start docker`".into());
        return Ok(());
    }
    // No init system to ask: run dockerd ourselves. On Docker's own socket it
    // gets Docker's default paths; on another socket, paths of its own.
    let mut args = vec![
        "--pidfile".to_string(),
        qs.dir.join("dockerd.self.pid").display().to_string(),
        "-H".to_string(),
        format!("unix://{}", socket.display()),
    ];
    if !default_socket {
        args.extend([
            "--data-root".to_string(),
            qs.dir.join("docker").display().to_string(),
            // A short path: containerd's sockets live here.
            "--exec-root".to_string(),
            qs.dockerd_exec_root().display().to_string(),
        ]);
    }
    let cmd = DockerdCommand {
        program: dockerd,
        args,
        log: qs.log("dockerd"),
        pidfile: qs.pidfile("dockerd"),
    };
    let child = spawn_daemon(cmd.build(), &cmd.log, &cmd.pidfile).context("starting dockerd")?;
    let pid = child.id().unwrap_or_default();
    if !wait_until(Duration::from_secs(60), || docker_answers(socket)).await {
        bail!(
            "dockerd (pid {pid}) did not answer at {} within 60 s; its log {} ends with:\n{}",
            socket.display(),
            cmd.log.display(),
            tail(&cmd.log, 20)
        );
    }
    report.note(format!(
        "Docker was not running and there is no init system: started dockerd (pid {pid}, log {}), supervised while medforge up runs",
        cmd.log.display()
    ));
    supervise_dockerd(child, cmd);
    Ok(())
}

async fn docker_answers(socket: &Path) -> bool {
    let Some(s) = socket.to_str() else {
        return false;
    };
    let Ok(docker) =
        bollard::Docker::connect_with_unix(s, 5, &medforge_operator::agent::docker::API_VERSION)
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), docker.ping()).await,
        Ok(Ok(_))
    )
}

/// Restarts `dockerd` whenever it exits while `medforge up` runs. A daemon
/// left from an earlier run is not supervised here (it is not our child):
/// the next start finds Docker answering, or starts it again.
fn supervise_dockerd(mut child: tokio::process::Child, cmd: DockerdCommand) {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        loop {
            let status = child.wait().await;
            tracing::error!(?status, log = %cmd.log.display(), "dockerd (started by the quickstart) exited; starting it again in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
            match spawn_daemon(cmd.build(), &cmd.log, &cmd.pidfile) {
                Ok(c) => child = c,
                Err(e) => {
                    tracing::error!(error = %e, "could not start dockerd again; giving up supervising it");
                    return;
                }
            }
        }
    });
}

#[derive(Clone)]
struct DockerdCommand {
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    pidfile: PathBuf,
}

impl DockerdCommand {
    fn build(&self) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.program);
        c.args(&self.args).current_dir("/");
        c
    }
}
