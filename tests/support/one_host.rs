//! What the two one-host evidence runs share (`tests/e2e_one_host.rs` over
//! plain HTTP, `tests/e2e_one_host_https.rs` in the production Caddyfile
//! mode): `medforge up` and Caddy started inside the harness's namespace,
//! the record of every answer through the proxy (a 502 fails the run), a
//! websocket echo over any connection, and the evidence report both write
//! their part of. Included with `#[path]` next to `mod support;`.
#![allow(dead_code)]

use std::io::{Read, Seek, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use medforge_testkit::Harness;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::{Account, Proc};

pub const DOMAIN: &str = "medforge.test";
pub const ADMIN: Account = Account::new("admin@medforge.test", "admin-password-e2e");

/// The ports of `medforge up` on loopback inside the namespace.
pub struct Ports {
    pub apiserver: u16,
    pub api: u16,
}

/// Starts `program args` inside the harness's namespace, its output
/// appended to `dir/<name>.log`; with `clear_env` it sees only `env`.
pub fn spawn(
    harness: &Harness,
    name: &'static str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
    clear_env: bool,
    dir: &Path,
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut cmd: Command = harness.netns_command(program);
    if clear_env {
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    }
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc { name, child, log }
}

/// The login cookies `medforge up` sets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Cookies {
    /// `--insecure-cookies`: plain HTTP, `medforge_api` for the api.
    Insecure,
    /// The default: `Secure`, `__Host-medforge` for the api.
    Secure,
}

/// `medforge up` on this host: the harness's dockerd and zfs-fuse, two
/// static GPUs, open signup and the admin [`ADMIN`].
pub fn start_medforge(
    harness: &Harness,
    dir: &Path,
    ports: &Ports,
    zfs_root: &str,
    image: &str,
    scope_label: &str,
    cookies: Cookies,
) -> Proc {
    let mut args: Vec<String> = [
        "up",
        "--container-label",
        scope_label,
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--apiserver-listen",
        &format!("127.0.0.1:{}", ports.apiserver),
        "--api-listen",
        &format!("127.0.0.1:{}", ports.api),
        "--domain",
        DOMAIN,
        "--signup-mode",
        "open",
        "--node-name",
        "e2e-node",
        "--gpus",
        "static:2",
        "--docker-socket",
        harness.layout().docker_socket.to_str().unwrap(),
        "--zfs-root",
        zfs_root,
        "--zfs-binary",
        harness.zfs_binary().to_str().unwrap(),
        "--default-pack-image",
        image,
        "--audit-log-path",
        audit_log(dir).to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if cookies == Cookies::Insecure {
        args.push("--insecure-cookies".into());
    }
    spawn(
        harness,
        "medforge-up",
        Path::new(env!("CARGO_BIN_EXE_medforge")),
        &args,
        &[
            ("MEDFORGE_ADMIN_EMAIL", ADMIN.email.to_string()),
            ("MEDFORGE_ADMIN_PASSWORD", ADMIN.password.to_string()),
            ("RUST_LOG", "info".to_string()),
        ],
        false,
        dir,
    )
}

/// The control plane's audit log of a `medforge up` in `dir`.
pub fn audit_log(dir: &Path) -> PathBuf {
    dir.join("audit.log")
}

/// Checks the audit log of a `medforge up` in `dir`: the scheduler, the
/// node agent and the api each made requests as their own ServiceAccount
/// (the chart's), none of them was refused, and nothing else but the admin
/// (`medforge up`'s own setup, and the test's kubectl) made any. Returns a
/// line per user with its count of requests.
pub fn assert_parts_ran_as_their_service_accounts(dir: &Path) -> String {
    let text = std::fs::read_to_string(audit_log(dir)).expect("the audit log");
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut refused = Vec::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).expect("an audit event");
        let user = e["user"]["username"].as_str().unwrap_or("").to_string();
        if e["annotations"]["authorization.k8s.io/decision"] != "allow" {
            refused.push(line.to_string());
        }
        *counts.entry(user).or_default() += 1;
    }
    assert!(
        refused.is_empty(),
        "requests refused:\n{}",
        refused.join("\n")
    );
    for part in ["scheduler", "agent", "api"] {
        let user = format!("system:serviceaccount:medforge-system:medforge-{part}");
        assert!(
            counts.get(&user).is_some_and(|n| *n > 0),
            "no request as {user}: {counts:?}"
        );
    }
    let others: Vec<&String> = counts
        .keys()
        .filter(|u| {
            *u != "medforge-admin"
                && !u.starts_with("system:serviceaccount:medforge-system:medforge-")
        })
        .collect();
    assert!(others.is_empty(), "requests by {others:?}");
    counts
        .iter()
        .map(|(u, n)| format!("- `{u}`: {n} requests, none refused\n"))
        .collect()
}

/// How Caddy serves `deploy/caddy/Caddyfile`.
pub enum Proxy {
    /// Plain HTTP on `127.0.0.1:port` (`MEDFORGE_SCHEME=http`,
    /// `MEDFORGE_TLS=off`), its admin API on `127.0.0.1:admin`.
    Plain { port: u16, admin: u16 },
    /// The production mode: the Caddyfile's defaults (`https`, port 443
    /// and the redirect on port 80, the admin API on a Unix socket) with
    /// Caddy's internal CA (`MEDFORGE_TLS=internal`, as `medforge up
    /// --quickstart` runs it), listening on the loopback address `bind`.
    Https { bind: IpAddr },
}

/// Caddy's `HOME`; its data (certificates, the internal CA) under `data/`.
pub fn caddy_home(dir: &Path) -> PathBuf {
    dir.join("caddy-home")
}

/// The root certificate of Caddy's internal CA (`tls internal`).
pub fn caddy_root_cert(dir: &Path) -> PathBuf {
    caddy_home(dir).join("data/caddy/pki/authorities/local/root.crt")
}

/// Caddy with the shipped Caddyfile in front of the api on `api_port`.
pub fn start_caddy(harness: &Harness, dir: &Path, api_port: u16, proxy: &Proxy) -> Proc {
    start_caddy_for(harness, dir, DOMAIN, api_port, proxy)
}

/// [`start_caddy`] for the sessions and api of `domain`.
pub fn start_caddy_for(
    harness: &Harness,
    dir: &Path,
    domain: &str,
    api_port: u16,
    proxy: &Proxy,
) -> Proc {
    let home = caddy_home(dir);
    std::fs::create_dir_all(&home).unwrap();
    let caddyfile = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/caddy/Caddyfile");
    let args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        caddyfile.to_str().unwrap().into(),
        "--adapter".into(),
        "caddyfile".into(),
    ];
    let mut env: Vec<(&str, String)> = vec![
        ("MEDFORGE_DOMAIN", domain.into()),
        ("MEDFORGE_API", format!("127.0.0.1:{api_port}")),
        ("HOME", home.to_str().unwrap().into()),
        ("XDG_DATA_HOME", home.join("data").to_str().unwrap().into()),
        (
            "XDG_CONFIG_HOME",
            home.join("config").to_str().unwrap().into(),
        ),
    ];
    match proxy {
        Proxy::Plain { port, admin } => env.extend([
            ("MEDFORGE_SCHEME", "http".into()),
            ("MEDFORGE_TLS", "off".into()),
            ("MEDFORGE_BIND", "127.0.0.1".into()),
            ("MEDFORGE_HTTP_PORT", port.to_string()),
            ("MEDFORGE_CADDY_ADMIN", format!("127.0.0.1:{admin}")),
        ]),
        Proxy::Https { bind } => env.extend([
            ("MEDFORGE_TLS", "internal".into()),
            ("MEDFORGE_BIND", bind.to_string()),
            (
                "MEDFORGE_CADDY_ADMIN",
                format!("unix/{}", dir.join("caddy-admin.sock").display()),
            ),
        ]),
    }
    spawn(harness, "caddy", Path::new("caddy"), &args, &env, true, dir)
}

/// Every answer a run got through the proxy, in order. A 502 fails the run
/// at once: these runs never expect one (every session host they call was
/// reported Ready by the api first, and the api host is up before the first
/// request).
#[derive(Default)]
pub struct ProxyLog {
    seen: Mutex<Vec<(String, u16)>>,
}

impl ProxyLog {
    /// Records one answer (`what`: method, host and path); a 502 fails the
    /// run with every request so far.
    pub fn record(&self, what: String, status: u16) {
        let mut seen = self.seen.lock().unwrap();
        seen.push((what, status));
        assert_ne!(
            status, 502,
            "502 through the proxy; every request so far:\n{seen:#?}"
        );
    }

    pub fn all(&self) -> Vec<(String, u16)> {
        self.seen.lock().unwrap().clone()
    }

    /// The report's closing section: how many answers, none a 502, by status.
    pub fn summary(&self) -> String {
        let seen = self.all();
        assert!(seen.iter().all(|(_, s)| *s != 502));
        let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
        for (_, s) in &seen {
            *by_status.entry(*s).or_default() += 1;
        }
        format!(
            "\n## Every request through the proxy\n\n- {} requests, none answered 502; by status: `{by_status:?}`\n",
            seen.len()
        )
    }
}

/// Opens a websocket on `ws` (a connection to Caddy, plain or TLS) to
/// `host` with the `Cookie` header `cookie`, and echoes one text frame.
pub async fn websocket_echo<S>(mut ws: S, host: &str, cookie: &str, text: &str) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    ws.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        ws.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    // One masked text frame (client frames are masked).
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    ws.write_all(&frame).await.unwrap();
    let mut hdr = [0u8; 2];
    ws.read_exact(&mut hdr).await.unwrap();
    let len = (hdr[1] & 0x7f) as usize;
    let mut payload = vec![0u8; len];
    ws.read_exact(&mut payload).await.unwrap();
    String::from_utf8(payload).unwrap()
}

const SECTION: &str = "<!-- evidence run: ";
/// The runs that write a part of the report, in the report's order.
pub const RUNS: [&str; 2] = ["plain HTTP", "HTTPS"];

/// Writes `report` as the part `run` of `target/evidence/one-host-evidence.md`,
/// keeping the other runs' parts (each run replaces only its own; the file
/// is locked while it is rewritten). Returns the file's path.
pub fn write_evidence(run: &str, report: &str) -> PathBuf {
    assert!(RUNS.contains(&run), "{run:?} is not one of {RUNS:?}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/evidence");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("one-host-evidence.md");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    let mut file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .unwrap();
    let mut old = String::new();
    file.read_to_string(&mut old).unwrap();
    // The parts, each from its marker line to the next; text before the
    // first marker (a report of an older layout) is dropped.
    let mut parts: Vec<(String, String)> = Vec::new();
    for line in old.split_inclusive('\n') {
        if let Some(name) = line
            .strip_prefix(SECTION)
            .and_then(|l| l.trim_end().strip_suffix(" -->"))
        {
            parts.push((name.to_string(), String::new()));
        } else if let Some((_, text)) = parts.last_mut() {
            text.push_str(line);
        }
    }
    let mut mine = report.to_string();
    if !mine.ends_with('\n') {
        mine.push('\n');
    }
    match parts.iter_mut().find(|(name, _)| name == run) {
        Some((_, text)) => *text = mine,
        None => parts.push((run.to_string(), mine)),
    }
    // The runs in a fixed order, whichever wrote last.
    parts.sort_by_key(|(name, _)| RUNS.iter().position(|r| r == name).unwrap_or(RUNS.len()));
    let mut out = String::new();
    for (name, text) in &parts {
        out.push_str(&format!("{SECTION}{name} -->\n{text}"));
    }
    file.set_len(0).unwrap();
    file.rewind().unwrap();
    file.write_all(out.as_bytes()).unwrap();
    path
}
