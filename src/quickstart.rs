//! `medforge up --quickstart`: takes a fresh machine to a working MedForge.
//!
//! Each step first looks for what is already there and uses it, so a second
//! run starts nothing twice: Docker (started through systemd when it runs,
//! else as a supervised `dockerd`), ZFS (zfs-fuse started when no ZFS
//! answers; a file-backed *trial* pool under the data directory when the
//! configured pool does not exist), the default Pack (the test workload image,
//! built from the static workload binary), and Caddy with its internal CA in
//! front of the api. Whatever it starts, it records by PID under
//! `<data-dir>/quickstart/`, where `medforge down` finds it.
//!
//! A host with its own pool, Docker and TLS never needs this: without
//! `--quickstart`, `medforge up` starts nothing of its own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The Caddyfile MedForge ships, configured through its environment.
const CADDYFILE: &str = include_str!("../deploy/caddy/Caddyfile");
/// Docker's own socket: a daemon started for it gets Docker's default paths.
const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// The quickstart's options (part of `medforge up`).
#[derive(Debug, Args, Clone)]
pub struct QuickstartArgs {
    /// Set up what this machine lacks, for trying MedForge out: start Docker,
    /// create a file-backed ZFS pool when none is configured, build the
    /// default Pack, allow CPU-only sessions and start Caddy with its
    /// internal CA. Everything already there is reused.
    #[arg(long)]
    pub quickstart: bool,
    /// Size of the file-backed trial pool (`8Gi`, `512Mi`; sparse).
    #[arg(long, default_value = "8Gi")]
    pub trial_pool_size: String,
    /// Port of Caddy's HTTPS sites.
    #[arg(long, default_value_t = 443)]
    pub https_port: u16,
    /// Port of Caddy's HTTP redirect to HTTPS.
    #[arg(long, default_value_t = 80)]
    pub http_port: u16,
    /// Address Caddy listens on; `::` for other machines too.
    #[arg(long, default_value = "127.0.0.1")]
    pub caddy_bind: String,
    /// The statically linked workload binary the default Pack's image is
    /// built from (default: the one `scripts/up.sh` builds next to this binary).
    #[arg(long)]
    pub workload_binary: Option<PathBuf>,
}

/// What the quickstart did, reused or found missing, for the closing summary.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<String>,
}

impl Report {
    fn note(&mut self, line: String) {
        tracing::info!("quickstart: {line}");
        self.lines.push(line);
    }
}

/// What `prepare` settled that `medforge up` uses.
#[derive(Debug)]
pub struct Prepared {
    pub report: Report,
    /// Set when workspaces live on the trial pool.
    pub storage_note: Option<String>,
    /// The ZFS dataset under which workspaces go.
    pub zfs_root: String,
    /// The default Pack's image, when the quickstart provided it.
    pub pack_image: Option<String>,
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
}

/// The processes the quickstart may start, by the name their PID file has.
pub const MANAGED: &[(&str, &str)] = &[
    ("medforge", "medforge"),
    ("caddy", "caddy"),
    ("dockerd", "dockerd"),
    ("zfs-fuse", "zfs-fuse"),
];

fn is_root() -> bool {
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

/// The PID recorded in `file`, when that process still runs as `comm`.
pub fn live_pid(file: &Path, comm: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
    runs_as(pid, comm).then_some(pid)
}

/// Whether `pid` is a live (not zombie) process running the program `comm`.
fn runs_as(pid: i32, comm: &str) -> bool {
    // `comm` is cut to 15 bytes.
    let want: String = comm.chars().take(15).collect();
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == want)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

fn write_pid(file: &Path, pid: u32) -> Result<()> {
    std::fs::write(file, format!("{pid}\n"))
        .with_context(|| format!("recording the PID in {}", file.display()))
}

/// The last lines of a log, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `check` every 100 ms until it holds or `within` passes.
async fn wait_until<F, Fut>(within: Duration, mut check: F) -> bool
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

async fn run(program: &Path, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
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

/// Starts `cmd` in its own process group with its output in `log`, records
/// its PID, and returns the child (never killed on drop: it outlives
/// `medforge up`, as Docker and Caddy must).
fn spawn_daemon(
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

async fn ensure_docker(socket: &Path, qs: &QuickstartDir, report: &mut Report) -> Result<()> {
    if docker_answers(socket).await {
        report.note(format!("Docker answers at {}: using it", socket.display()));
        return Ok(());
    }
    let Some(dockerd) = find_program("dockerd") else {
        bail!(
            "Docker is not installed (no dockerd): install it with `apt-get install docker.io`, then run this again"
        );
    };
    let default_socket = socket == Path::new(DEFAULT_DOCKER_SOCKET);
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
        let id = short_hash(&qs.dir.display().to_string());
        args.extend([
            "--data-root".to_string(),
            qs.dir.join("docker").display().to_string(),
            // A short path: containerd's sockets live here.
            "--exec-root".to_string(),
            format!("/run/medforge-qs-{id}"),
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

fn short_hash(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))[..8].to_string()
}

async fn zfs_answers(zpool: &Path) -> bool {
    run(zpool, &["list", "-H", "-o", "name"]).await.is_ok()
}

async fn pools(zpool: &Path) -> Result<Vec<String>> {
    Ok(run(zpool, &["list", "-H", "-o", "name"])
        .await?
        .lines()
        .map(str::to_string)
        .collect())
}

/// Makes ZFS answer and the workspace root exist; returns the root and, for
/// a trial pool, the note the node publishes.
async fn ensure_zfs(
    zfs: &Path,
    configured_root: &str,
    pool_size: &str,
    qs: &QuickstartDir,
    report: &mut Report,
) -> Result<(String, Option<String>)> {
    let zfs = find_program(&zfs.display().to_string()).ok_or_else(|| {
        anyhow!(
            "the ZFS tools are missing (no `{}`): install them with `apt-get install zfs-fuse` (or zfsutils-linux where kernel ZFS is available)",
            zfs.display()
        )
    })?;
    let zpool = find_program("zpool")
        .ok_or_else(|| anyhow!("`zpool` is missing: install it with `apt-get install zfs-fuse`"))?;
    if !zfs_answers(&zpool).await {
        if Path::new("/sys/module/zfs").exists() {
            bail!(
                "kernel ZFS is loaded but `zpool list` fails: {}",
                run(&zpool, &["list"])
                    .await
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            );
        }
        let daemon = find_program("zfs-fuse").ok_or_else(|| {
            anyhow!("ZFS does not answer and zfs-fuse is not installed: `apt-get install zfs-fuse`")
        })?;
        let mut cmd = tokio::process::Command::new(&daemon);
        cmd.args(["--no-daemon", "--no-kstat-mount"])
            .current_dir("/");
        let child = spawn_daemon(cmd, &qs.log("zfs-fuse"), &qs.pidfile("zfs-fuse"))
            .context("starting zfs-fuse")?;
        let pid = child.id().unwrap_or_default();
        drop(child);
        if !wait_until(Duration::from_secs(30), || zfs_answers(&zpool)).await {
            bail!(
                "zfs-fuse (pid {pid}) did not answer within 30 s; its log {} ends with:\n{}",
                qs.log("zfs-fuse").display(),
                tail(&qs.log("zfs-fuse"), 20)
            );
        }
        // A restarted zfs-fuse imports its pools unmounted.
        run(&zfs, &["mount", "-a"]).await?;
        report.note(format!(
            "ZFS did not answer: started zfs-fuse (pid {pid}, log {})",
            qs.log("zfs-fuse").display()
        ));
    }
    let wanted_pool = configured_root.split('/').next().unwrap_or_default();
    let existing = pools(&zpool).await?;
    if existing.iter().any(|p| p == wanted_pool) {
        report.note(format!(
            "ZFS pool {wanted_pool} exists: workspaces go under {configured_root}"
        ));
        run(&zfs, &["create", "-p", configured_root]).await?;
        return Ok((configured_root.to_string(), None));
    }
    let trial = format!("mftrial{}", short_hash(&qs.dir.display().to_string()));
    let file = qs.pool_file();
    if existing.contains(&trial) {
        report.note(format!("trial pool {trial} exists: reusing it"));
    } else if file.exists() {
        run(
            &zpool,
            &["import", "-d", &qs.dir.display().to_string(), &trial],
        )
        .await
        .with_context(|| format!("importing the trial pool {trial} from {}", file.display()))?;
        run(&zfs, &["mount", "-a"]).await?;
        report.note(format!(
            "trial pool {trial} imported again from {}",
            file.display()
        ));
    } else {
        let bytes = medforge_crds::quantity::parse_bytes(pool_size)
            .map_err(|e| anyhow!("--trial-pool-size: {e}"))?;
        if bytes < 64 << 20 {
            bail!("--trial-pool-size {pool_size} is too small: ZFS needs at least 64Mi");
        }
        let f =
            std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        f.set_len(bytes)
            .with_context(|| format!("sizing {}", file.display()))?;
        let mountpoint = qs.dir.join("pool");
        run(
            &zpool,
            &[
                "create",
                "-m",
                &mountpoint.display().to_string(),
                &trial,
                &file.display().to_string(),
            ],
        )
        .await
        .with_context(|| format!("creating the trial pool {trial} on {}", file.display()))?;
        report.note(format!(
            "no ZFS pool {wanted_pool}: created the TRIAL pool {trial} in the file {} ({pool_size}, sparse)",
            file.display()
        ));
    }
    let root = format!("{trial}/workspaces");
    run(&zfs, &["create", "-p", &root]).await?;
    let note = format!(
        "workspaces live in the file-backed trial pool {trial} ({}): for trying MedForge out, not for real data; configure a real pool with --zfs-root",
        file.display()
    );
    tracing::warn!("quickstart: TRIAL STORAGE: {note}");
    Ok((root, Some(note)))
}

fn default_workload_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let target = exe.parent()?.parent()?;
    let triple = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    [
        target
            .join("workload")
            .join(&triple)
            .join("release/medforge-workload"),
        exe.with_file_name("medforge-workload"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

async fn ensure_pack_image(
    socket: &Path,
    binary: Option<&Path>,
    report: &mut Report,
) -> Result<String> {
    let binary = match binary {
        Some(b) => b.to_path_buf(),
        None => default_workload_binary().ok_or_else(|| {
            anyhow!(
                "no image for the default Pack: pass --default-pack-image, or --workload-binary with the static workload (`scripts/up.sh` builds it)"
            )
        })?,
    };
    let docker = bollard::Docker::connect_with_unix(
        &socket.display().to_string(),
        120,
        &medforge_operator::agent::docker::API_VERSION,
    )
    .context("connecting to Docker")?;
    let existed = match tokio::fs::read(&binary).await {
        Ok(bytes) => docker
            .inspect_image(&medforge_operator::image::tag_for(&bytes))
            .await
            .is_ok(),
        Err(_) => false,
    };
    let tag = medforge_operator::image::ensure_image_from_binary(&docker, &binary)
        .await
        .context("building the default Pack's image")?;
    let id = docker
        .inspect_image(&tag)
        .await
        .with_context(|| format!("inspecting {tag}"))?
        .id
        .ok_or_else(|| anyhow!("{tag} has no id"))?;
    report.note(format!(
        "default Pack image {tag} ({id}) {} {}",
        if existed {
            "exists: reusing it, built from"
        } else {
            "built from"
        },
        binary.display()
    ));
    Ok(id)
}

async fn iptables_usable() -> Result<()> {
    let iptables = find_program("iptables").ok_or_else(|| {
        anyhow!("iptables is missing (session isolation needs it): `apt-get install iptables`")
    })?;
    run(&iptables, &["-w", "-S", "FORWARD"])
        .await
        .map(|_| ())
        .context("iptables is unusable, and session isolation needs it (is this a container without NET_ADMIN?)")
}

/// Everything before the control plane starts.
pub async fn prepare(
    data_dir: &Path,
    args: &QuickstartArgs,
    docker_socket: &Path,
    zfs_binary: &Path,
    zfs_root: &str,
    default_pack_image: Option<&str>,
) -> Result<Prepared> {
    if !is_root() {
        bail!(
            "medforge up --quickstart needs root: it starts Docker, ZFS and Caddy and writes iptables rules; run it as root (sudo)"
        );
    }
    let qs = QuickstartDir::new(data_dir);
    std::fs::create_dir_all(&qs.dir).with_context(|| format!("creating {}", qs.dir.display()))?;
    let mut report = Report::default();
    iptables_usable().await?;
    ensure_docker(docker_socket, &qs, &mut report).await?;
    let (zfs_root, storage_note) = ensure_zfs(
        zfs_binary,
        zfs_root,
        &args.trial_pool_size,
        &qs,
        &mut report,
    )
    .await?;
    let pack_image = match default_pack_image {
        Some(i) => {
            report.note(format!("default Pack image {i} (given)"));
            Some(i.to_string())
        }
        None => Some(
            ensure_pack_image(docker_socket, args.workload_binary.as_deref(), &mut report).await?,
        ),
    };
    Ok(Prepared {
        report,
        storage_note,
        zfs_root,
        pack_image,
    })
}

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

/// How a person reaches MedForge now, printed when `medforge up` is ready.
pub fn summary(
    data_dir: &Path,
    args: &QuickstartArgs,
    domain: &str,
    admin: &str,
    report: &Report,
) -> String {
    let qs = QuickstartDir::new(data_dir);
    let port = if args.https_port == 443 {
        String::new()
    } else {
        format!(":{}", args.https_port)
    };
    let ca = qs.caddy_root_cert();
    let mut s = String::new();
    let _ = writeln!(s, "\nMedForge is up (quickstart). What was done:");
    for l in &report.lines {
        let _ = writeln!(s, "  - {l}");
    }
    let _ = writeln!(
        s,
        "\n  Open        https://{domain}{port}/api/v2/openapi.json   (the api; sessions at https://s-<slug>.external.{domain}{port}/)"
    );
    let _ = writeln!(
        s,
        "  TLS         Caddy's internal CA: {} (trust it in the browser, or curl --cacert it)",
        ca.display()
    );
    let _ = writeln!(s, "  Sign in     {admin}");
    let _ = writeln!(
        s,
        "              curl --cacert {} -c jar -H 'content-type: application/json' -d '{{\"email\":\"…\",\"password\":\"…\"}}' https://{domain}{port}/api/v2/auth/login",
        ca.display()
    );
    let _ = writeln!(
        s,
        "  A session   curl --cacert {} -b jar -H 'content-type: application/json' -d '{{\"gpus\":0}}' 'https://{domain}{port}/api/v2/external/sessions?wait=ready'",
        ca.display()
    );
    let _ = writeln!(
        s,
        "              CPU-only sessions (gpus: 0) are allowed because this is a quickstart; a production configuration refuses them."
    );
    let _ = writeln!(
        s,
        "  kubectl     kubectl --kubeconfig {} get sessions,gpunodes -A",
        data_dir.join("apiserver/kubeconfig").display()
    );
    let _ = writeln!(
        s,
        "  Names       *.localhost resolves to this machine in browsers and curl without DNS. From another\n              machine: ssh -L 8443:127.0.0.1:{} <this host>, then open https://{domain}:8443/ there\n              (or start with --caddy-bind :: and a --domain whose names, wildcard included, resolve to this host).",
        args.https_port
    );
    let _ = writeln!(
        s,
        "  Stop        medforge down --data-dir {}   (keeps the data; --purge removes it)",
        data_dir.display()
    );
    s
}

/// `medforge down`: stops what `medforge up --quickstart` started, by PID.
pub async fn down(data_dir: &Path, purge: bool) -> Result<String> {
    let qs = QuickstartDir::new(data_dir);
    let mut out = String::new();
    if !qs.dir.is_dir() {
        bail!(
            "{} does not exist: nothing was started by `medforge up --quickstart` with --data-dir {}",
            qs.dir.display(),
            data_dir.display()
        );
    }
    for (name, comm) in MANAGED {
        if *name == "zfs-fuse" && purge {
            destroy_trial_pool(&qs, &mut out).await?;
        }
        let pidfile = qs.pidfile(name);
        match live_pid(&pidfile, comm) {
            Some(pid) => {
                let grace = if *name == "dockerd" {
                    Duration::from_secs(60)
                } else {
                    Duration::from_secs(20)
                };
                stop_pid(pid, comm, grace).await;
                let _ = writeln!(out, "stopped {name} (pid {pid})");
            }
            None => {
                if pidfile.exists() {
                    let _ = writeln!(out, "{name} was not running");
                }
            }
        }
        let _ = std::fs::remove_file(&pidfile);
    }
    if purge {
        // The exec root of a dockerd the quickstart started on its own socket.
        let exec_root = PathBuf::from(format!(
            "/run/medforge-qs-{}",
            short_hash(&qs.dir.display().to_string())
        ));
        if exec_root.is_dir() {
            let _ = std::fs::remove_dir_all(&exec_root);
        }
        std::fs::remove_dir_all(data_dir)
            .with_context(|| format!("removing {}", data_dir.display()))?;
        let _ = writeln!(out, "removed {}", data_dir.display());
    } else {
        let _ = writeln!(
            out,
            "data kept in {} (`medforge down --purge` removes it)",
            data_dir.display()
        );
    }
    Ok(out)
}

/// Destroys the trial pool: its datasets unmounted first, deepest first,
/// then the pool, retried for a while (zfs-fuse calls a pool busy for a
/// moment after its last user went away). Fails when it stays busy.
async fn destroy_trial_pool(qs: &QuickstartDir, out: &mut String) -> Result<()> {
    let trial = format!("mftrial{}", short_hash(&qs.dir.display().to_string()));
    let (Some(zpool), Some(zfs)) = (find_program("zpool"), find_program("zfs")) else {
        return Ok(());
    };
    if !pools(&zpool).await.is_ok_and(|p| p.contains(&trial)) {
        return Ok(());
    }
    let datasets = run(&zfs, &["list", "-H", "-o", "name", "-r", &trial])
        .await
        .unwrap_or_default();
    for ds in datasets.lines().rev() {
        let _ = run(&zfs, &["unmount", "-f", ds]).await;
    }
    let mut last = None;
    for _ in 0..20 {
        match run(&zpool, &["destroy", "-f", &trial]).await {
            Ok(_) => {
                let _ = writeln!(out, "destroyed the trial pool {trial}");
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(last
        .unwrap_or_else(|| anyhow!("unknown error"))
        .context(format!(
            "the trial pool {trial} could not be destroyed; the data directory is kept"
        )))
}
