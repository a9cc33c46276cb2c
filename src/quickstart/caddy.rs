//! Caddy in front of the api, with its internal CA, started with the
//! Caddyfile MedForge ships and kept when its settings did not change.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use super::dir::{QuickstartDir, Report};
use super::host::{find_program, tail};
use super::process::{live_pid, spawn_daemon, stop_pid};
use crate::cli::QuickstartArgs;

/// The Caddyfile MedForge ships, configured through its environment.
const CADDYFILE: &str = include_str!("../../deploy/caddy/Caddyfile");

/// The environment Caddy runs the shipped Caddyfile with.
fn caddy_env(
    qs: &QuickstartDir,
    args: &QuickstartArgs,
    domain: &str,
    api: &str,
) -> Vec<(String, String)> {
    let home = qs.caddy_home();
    [
        ("HOME", home.display().to_string()),
        ("XDG_DATA_HOME", home.join("data").display().to_string()),
        ("XDG_CONFIG_HOME", home.join("config").display().to_string()),
        ("MEDFORGE_DOMAIN", domain.to_string()),
        ("MEDFORGE_API", api.to_string()),
        ("MEDFORGE_SCHEME", "https".to_string()),
        ("MEDFORGE_TLS", "internal".to_string()),
        ("MEDFORGE_BIND", args.caddy_bind.clone()),
        ("MEDFORGE_HTTP_PORT", args.http_port.to_string()),
        ("MEDFORGE_HTTPS_PORT", args.https_port.to_string()),
        // Caddy's admin endpoint on a socket only root can reach, not TCP.
        (
            "MEDFORGE_CADDY_ADMIN",
            format!("unix/{}", qs.dir.join("caddy-admin.sock").display()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn port_accepts(bind: &str, port: u16) -> bool {
    let host = if bind == "::" || bind == "[::]" || bind == "0.0.0.0" {
        "127.0.0.1"
    } else {
        bind.trim_matches(['[', ']'])
    };
    tokio::net::TcpStream::connect((host, port)).await.is_ok()
}

/// Starts Caddy in front of the api (or keeps the one an earlier run
/// started with the same settings).
pub async fn ensure_caddy(
    data_dir: &Path,
    args: &QuickstartArgs,
    domain: &str,
    api: &str,
    report: &mut Report,
) -> Result<()> {
    let qs = QuickstartDir::new(data_dir);
    let env = caddy_env(&qs, args, domain, api);
    let stamp: String = env.iter().fold(String::new(), |mut s, (k, v)| {
        let _ = writeln!(s, "{k}={v}");
        s
    });
    let stamp_file = qs.dir.join("caddy.env");
    let pidfile = qs.pidfile("caddy");
    if let Some(pid) = live_pid(&pidfile, "caddy") {
        if std::fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
            report.note(format!(
                "Caddy runs (pid {pid}) with these settings: reusing it"
            ));
            return Ok(());
        }
        stop_pid(pid, "caddy", Duration::from_secs(10)).await;
        report.note(format!(
            "Caddy (pid {pid}) ran with other settings: stopped it"
        ));
    }
    let caddy = find_program("caddy")
        .ok_or_else(|| anyhow!("Caddy is not installed: `apt-get install caddy`"))?;
    let caddyfile = qs.dir.join("Caddyfile");
    std::fs::write(&caddyfile, CADDYFILE)
        .with_context(|| format!("writing {}", caddyfile.display()))?;
    std::fs::create_dir_all(qs.caddy_home())
        .with_context(|| format!("creating {}", qs.caddy_home().display()))?;
    let mut cmd = tokio::process::Command::new(&caddy);
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&caddyfile)
        .current_dir(&qs.dir)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let log = qs.log("caddy");
    let mut child = spawn_daemon(cmd, &log, &pidfile).context("starting Caddy")?;
    let pid = child.id().unwrap_or_default();
    let root = qs.caddy_root_cert();
    let end = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut ready = false;
    while tokio::time::Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if root.exists() && port_accepts(&args.caddy_bind, args.https_port).await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Ok(Some(status)) = child.try_wait() {
        bail!(
            "Caddy exited ({status}) at start; if a port is in use, pick others with --https-port/--http-port. Its log {} ends with:\n{}",
            log.display(),
            tail(&log, 20)
        );
    }
    if !ready {
        bail!(
            "Caddy (pid {pid}) did not serve HTTPS on port {} within 30 s; its log {} ends with:\n{}",
            args.https_port,
            log.display(),
            tail(&log, 20)
        );
    }
    std::fs::write(&stamp_file, stamp)
        .with_context(|| format!("writing {}", stamp_file.display()))?;
    report.note(format!(
        "started Caddy (pid {pid}, log {}) with its internal CA {}",
        log.display(),
        root.display()
    ));
    Ok(())
}
