//! The long-running commands: `up`, `operator`, `api`, and `create-admin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use medforge_operator::scheduler::controller::SchedulerConfig;
use medforge_operator::scheduler::placement::{Limits, Policy};
use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or Ctrl-C (one definition, the api's).
pub use medforge_api::shutdown_signal;

/// A token cancelled on SIGTERM or Ctrl-C: every long-running part of a
/// command watches it, drains, and is awaited before the process exits.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        t.cancel();
    });
    token
}

/// Waits (at most `within` each) for the tasks to finish after shutdown.
async fn await_drained(tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>, within: Duration) {
    for (name, task) in tasks {
        match tokio::time::timeout(within, task).await {
            Ok(_) => tracing::info!(part = name, "drained"),
            Err(_) => tracing::warn!(part = name, "did not drain within {within:?}; leaving it"),
        }
    }
}

/// Scheduler settings shared by `up` and `operator`.
#[derive(Debug, Args, Clone)]
pub struct SchedulerArgs {
    /// Active sessions one user may hold (the api may override it per user).
    #[arg(long, default_value_t = 1)]
    pub max_sessions_per_user: u32,
    /// GPUs one user may hold over all sessions.
    #[arg(long, default_value_t = 8)]
    pub max_gpus_per_user: u32,
    /// Placement policy: `pack` (fewest nodes, lowest GPU index first) or `spread`.
    #[arg(long, default_value = "pack", value_parser = parse_policy)]
    pub placement: Policy,
    /// A node whose heartbeat is older than this many seconds gets no new sessions.
    #[arg(long, default_value_t = 40)]
    pub heartbeat_timeout_secs: u64,
    /// Allow sessions without GPUs (`gpus: 0`). Off by default: a GPU host
    /// is for GPU work. `--quickstart` turns it on.
    #[arg(long, env = "MEDFORGE_ALLOW_CPU_ONLY")]
    pub allow_cpu_only: bool,
    /// How long the scheduler's Lease (`medforge-system/medforge-scheduler`)
    /// stays valid without renewal, in whole seconds (`15s`, `1m`). The
    /// leader renews it every third of this; when the leader dies, another
    /// replica takes over once it has expired. Every replica should use the
    /// same value.
    #[arg(long, default_value = "15s", value_parser = parse_lease_duration)]
    pub lease_duration: Duration,
}

/// A Lease duration: whole seconds (a Lease stores seconds), at least one.
fn parse_lease_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_arg(s)?;
    if d.as_secs() < 1 || d.subsec_nanos() != 0 || i32::try_from(d.as_secs()).is_err() {
        return Err(format!(
            "{s:?}: a lease duration is a whole number of seconds, at least 1s"
        ));
    }
    Ok(d)
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

impl SchedulerArgs {
    fn config(&self, identity: &str) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(identity);
        c.limits = Limits {
            max_sessions_per_user: self.max_sessions_per_user,
            max_gpus_per_user: self.max_gpus_per_user,
            allow_cpu_only: self.allow_cpu_only,
        };
        c.policy = self.placement;
        c.heartbeat_timeout = Duration::from_secs(self.heartbeat_timeout_secs);
        c.lease.duration = self.lease_duration;
        c
    }
}

/// Api settings shared by `up` and `api`.
#[derive(Debug, Args, Clone)]
pub struct ApiSettings {
    /// The MedForge base domain: sessions are served at
    /// `s-<slug>.external.<domain>`, the api at `api.<domain>`.
    /// The default, `medforge.localhost`, reaches this machine from a browser
    /// or curl on it without any DNS.
    #[arg(long, default_value = "medforge.localhost", env = "MEDFORGE_DOMAIN")]
    pub domain: String,
    /// SQL database for users and login tokens: `postgres://…` or `sqlite:…`.
    /// Default: a SQLite file in the data directory.
    #[arg(long, env = "MEDFORGE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Send the login cookie over plain HTTP too (only for local testing).
    #[arg(long)]
    pub insecure_cookies: bool,
    /// Namespace the Session resources live in.
    #[arg(long, default_value = "medforge")]
    pub namespace: String,
    /// Email of the admin to create or promote at start. Its password comes
    /// from MEDFORGE_ADMIN_PASSWORD (used only when the account is new).
    #[arg(long, env = "MEDFORGE_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// How long a create with `?wait=ready` waits for the session to be
    /// Ready before answering 202 (`30s`, `2m`).
    #[arg(long, default_value = "2m", value_parser = parse_duration_arg)]
    pub session_ready_timeout: std::time::Duration,
}

impl ApiSettings {
    fn config(&self, data_dir: &Path) -> anyhow::Result<medforge_api::ApiConfig> {
        let mut c = medforge_api::ApiConfig::new(&self.domain, data_dir);
        c.database_url = self.database_url.clone();
        c.sessions.namespace = self.namespace.clone();
        c.sessions.ready_timeout = self.session_ready_timeout;
        if self.insecure_cookies {
            c.cookie.secure = false;
            c.public_scheme = "http".into();
        }
        if let Some(email) = &self.admin_email {
            let password = std::env::var("MEDFORGE_ADMIN_PASSWORD")
                .context("--admin-email needs the admin's password in MEDFORGE_ADMIN_PASSWORD")?;
            c.bootstrap_admin = Some(medforge_api::AdminBootstrap {
                email: email.clone(),
                password,
            });
        }
        Ok(c)
    }
}

/// Node agent settings shared by `up` and `operator`.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// This node's name (its GpuNode). Default: the host name.
    #[arg(long, env = "MEDFORGE_NODE_NAME")]
    pub node_name: Option<String>,
    /// GPUs of this node: `auto` (NVML when an NVIDIA driver is present, else
    /// none), `none`, `static:N` (N simulated GPUs) or a JSON list.
    #[arg(long, default_value = "auto", env = "MEDFORGE_GPUS")]
    pub gpus: String,
    /// Docker's Unix socket.
    #[arg(
        long,
        default_value = "/var/run/docker.sock",
        env = "MEDFORGE_DOCKER_SOCKET"
    )]
    pub docker_socket: PathBuf,
    /// ZFS dataset under which workspaces are created (`<root>/<owner>/<uid>`).
    #[arg(
        long,
        default_value = "tank/medforge/workspaces",
        env = "MEDFORGE_ZFS_ROOT"
    )]
    pub zfs_root: String,
    /// The `zfs` program.
    #[arg(long, default_value = "zfs")]
    pub zfs_binary: PathBuf,
    /// Docker network the sessions join.
    #[arg(long, default_value = "medforge-sessions")]
    pub network: String,
    /// Network namespace (`/var/run/netns/NAME`) where session containers are
    /// reachable, when it is not this process's own.
    #[arg(long)]
    pub netns: Option<PathBuf>,
    /// Destroy a session's dataset when the Session is deleted (default: keep it).
    #[arg(long)]
    pub destroy_workspaces: bool,
    /// Serve the node agent's /metrics, /healthz and /readyz here.
    #[arg(long, env = "MEDFORGE_AGENT_METRICS")]
    pub agent_metrics: Option<SocketAddr>,
    /// Do not run a node agent on this host.
    #[arg(long)]
    pub no_agent: bool,
    /// An extra `key=value` label on every session container (repeatable).
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl AgentArgs {
    fn config(&self) -> anyhow::Result<medforge_operator::agent::AgentConfig> {
        use medforge_operator::agent::dialer::NetnsDialer;
        use medforge_operator::agent::{AgentConfig, WorkspaceOnDelete};
        use medforge_operator::gpu::{GpuInventory, NvmlInventory, StaticInventory};
        let node = self.node_name.clone().unwrap_or_else(hostname);
        let mut c = AgentConfig::new(&node, &self.zfs_root);
        c.docker_socket = self.docker_socket.clone();
        c.zfs_binary = self.zfs_binary.clone();
        c.network = self.network.clone();
        c.metrics_addr = self.agent_metrics;
        c.extra_labels.extend(self.container_labels.iter().cloned());
        if self.destroy_workspaces {
            c.workspace_on_delete = WorkspaceOnDelete::Destroy;
        }
        if let Some(path) = &self.netns {
            c.dialer =
                Arc::new(NetnsDialer::new(path).with_context(|| {
                    format!("opening the network namespace {}", path.display())
                })?);
        }
        let inventory: Arc<dyn GpuInventory> = match self.gpus.as_str() {
            "auto" => match NvmlInventory::init() {
                Ok(nvml) => {
                    c.gpu_device_requests = true;
                    Arc::new(nvml)
                }
                Err(e) => {
                    tracing::warn!(
                        "no NVIDIA GPUs: {e}. The node runs sessions without GPUs; pass --gpus static:N to simulate N GPUs"
                    );
                    Arc::new(StaticInventory::new(Vec::new()))
                }
            },
            spec => Arc::new(StaticInventory::parse(&node, spec)?),
        };
        c.inventory = inventory;
        Ok(c)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// East-west isolation of the sessions' network, kept in place next to the
/// node agent (iptables in this process's network namespace, where dockerd's
/// bridge is). Waits for Docker when it does not answer yet, instead of
/// ending `medforge up`.
fn isolation_task(args: &AgentArgs) -> tokio::task::JoinHandle<()> {
    use medforge_operator::isolation::{CommandPrefix, Isolation, keep_applied};
    let socket = args.docker_socket.clone();
    let prefix = match &args.netns {
        Some(path) => CommandPrefix::nsenter_net(path),
        None => CommandPrefix::host(),
    };
    let network = args.network.clone();
    tokio::spawn(async move {
        let mut warned = false;
        let docker = loop {
            match socket.to_str().map(|s| {
                bollard::Docker::connect_with_unix(
                    s,
                    120,
                    &medforge_operator::agent::docker::API_VERSION,
                )
            }) {
                Some(Ok(d)) => break d,
                Some(Err(e)) => {
                    if !warned {
                        tracing::warn!(socket = %socket.display(), error = %e, "isolation waits for Docker (start it: `systemctl start docker`, or `medforge up --quickstart`)");
                        warned = true;
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                None => {
                    tracing::error!(socket = %socket.display(), "the Docker socket path is not UTF-8; no isolation");
                    return;
                }
            }
        };
        keep_applied(
            docker,
            network,
            Isolation::new(prefix),
            Vec::new(),
            Duration::from_secs(2),
        )
        .await
    })
}

/// Runs the node agent; when it cannot start (Docker not answering, say),
/// says why and how to fix it, and tries again rather than ending `medforge up`.
async fn agent_task(
    client: kube::Client,
    config: medforge_operator::agent::AgentConfig,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        tracing::info!(node = %config.node_name, "node agent starting");
        match medforge_operator::agent::run(
            client.clone(),
            config.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::error!(error = %e, socket = %config.docker_socket.display(), "the node agent stopped; is Docker running (`systemctl start docker`, or `medforge up --quickstart`)? Retrying in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Parses a duration flag with the same rules as a Session's durations.
pub fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    medforge_crds::quantity::parse_duration(s).map_err(|e| e.to_string())
}

/// `medforge up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Holds everything MedForge keeps on this host: the control plane's
    /// database, CA, token and kubeconfig, and the api's database.
    #[arg(long, default_value = "/var/lib/medforge", env = "MEDFORGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where the control plane listens (loopback by default).
    #[arg(long, default_value = medforge_apiserver::DEFAULT_LISTEN)]
    pub apiserver_listen: SocketAddr,
    /// How long the control plane keeps an Event after its last write
    /// (`30m`, `1h`, `2h30m`), as kube-apiserver's `--event-ttl`.
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    pub event_ttl: std::time::Duration,
    /// Where the api listens (Caddy forwards to it).
    #[arg(long, default_value = "127.0.0.1:8000", env = "MEDFORGE_API_LISTEN")]
    pub api_listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiSettings,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Create or update the Pack `default` with this image (pinned:
    /// `name@sha256:…` or a local image id `sha256:…`) at start.
    #[arg(long, env = "MEDFORGE_DEFAULT_PACK_IMAGE")]
    pub default_pack_image: Option<String>,
    #[command(flatten)]
    pub quickstart: crate::quickstart::QuickstartArgs,
}

/// `medforge down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory `medforge up --quickstart` used.
    #[arg(long, default_value = "/var/lib/medforge", env = "MEDFORGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Also destroy the trial pool and remove the data directory.
    #[arg(long)]
    pub purge: bool,
}

/// `medforge down`: stops, by PID, what `medforge up --quickstart` started.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let out = crate::quickstart::down(&args.data_dir, args.purge).await?;
    print!("{out}");
    Ok(())
}

/// Creates or updates the `default` Pack. The control plane validates the
/// image reference, so a bad one fails the start with a clear message.
async fn apply_default_pack(client: &kube::Client, image: &str) -> anyhow::Result<()> {
    use kube::api::{Patch, PatchParams};
    let packs: kube::Api<medforge_crds::Pack> = kube::Api::all(client.clone());
    let pack = serde_json::json!({
        "apiVersion": medforge_crds::API_VERSION,
        "kind": "Pack",
        "metadata": {"name": "default"},
        "spec": {"image": image, "port": 8080},
    });
    packs
        .patch(
            "default",
            &PatchParams::apply("medforge-up").force(),
            &Patch::Apply(&pack),
        )
        .await
        .with_context(|| format!("applying the default Pack with image {image}"))?;
    tracing::info!(%image, "default Pack applied");
    Ok(())
}

/// `medforge operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Kubeconfig of the control plane; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Do not run the scheduler here (another replica runs it).
    #[arg(long)]
    pub no_scheduler: bool,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// `medforge api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Kubeconfig of the control plane; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Directory for the default SQLite database.
    #[arg(
        long,
        default_value = "/var/lib/medforge/api",
        env = "MEDFORGE_API_DIR"
    )]
    pub data_dir: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8000", env = "MEDFORGE_API_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiSettings,
}

/// `medforge create-admin`.
#[derive(Debug, Args)]
pub struct CreateAdminArgs {
    /// The admin's email.
    #[arg(long)]
    pub email: String,
    /// Directory of the api's default SQLite database.
    #[arg(
        long,
        default_value = "/var/lib/medforge/api",
        env = "MEDFORGE_API_DIR"
    )]
    pub data_dir: PathBuf,
    /// SQL database URL, when not the default SQLite file.
    #[arg(long, env = "MEDFORGE_DATABASE_URL")]
    pub database_url: Option<String>,
}

async fn client_from(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no kubeconfig given and none found (KUBECONFIG, ~/.kube/config, in-cluster)",
        )?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

fn identity() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

/// Runs the scheduler, stepping back into the election whenever leadership is
/// lost, until `shutdown` is cancelled; then it drains (see the scheduler).
async fn scheduler_loop(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: CancellationToken,
) {
    loop {
        let outcome = medforge_operator::scheduler::controller::run(
            client.clone(),
            config.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await;
        match outcome {
            Ok(()) => return,
            Err(e) => {
                if shutdown.is_cancelled() {
                    return;
                }
                tracing::warn!(error = %e, "scheduler stopped; rejoining the election");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// Ensures an admin exists. With none configured and none in the database,
/// creates `admin@<domain>` with a random password, written to
/// `<data_dir>/admin-password` (mode 0600); the log names the file, never the
/// password. Returns how to sign in as the first admin.
async fn first_admin(config: &medforge_api::ApiConfig, data_dir: &Path) -> anyhow::Result<String> {
    if let Some(b) = &config.bootstrap_admin {
        return Ok(format!(
            "{} with the password you gave in MEDFORGE_ADMIN_PASSWORD",
            b.email
        )); // Api::start ensures it.
    }
    let db = medforge_api::Db::connect(config.database_url.as_deref(), &config.data_dir)
        .await
        .context("opening the api database")?;
    db.migrate().await.context("migrating the api database")?;
    let email = format!("admin@{}", config.domain);
    let file = data_dir.join("admin-password");
    if medforge_api::users::count_admins(&db).await? > 0 {
        return Ok(if file.exists() {
            format!(
                "{email}, password in {} (unless changed since)",
                file.display()
            )
        } else {
            "an existing admin (`medforge create-admin` makes another)".to_string()
        });
    }
    let password = random_password();
    write_secret(&file, &password)?;
    medforge_api::ensure_admin(&db, config.auth.password_hashing, &email, Some(&password))
        .await
        .context("creating the first admin")?;
    tracing::info!(%email, password_file = %file.display(), "created the first admin; the password is in the file (mode 0600)");
    Ok(format!("{email}, password in {}", file.display()))
}

/// Writes a secret to a new file only its owner can read.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    writeln!(f, "{secret}").with_context(|| format!("writing {}", path.display()))
}

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Starts the api, waits until its session index has synced (so that no
/// request sees an empty index and answers 404 for a live session), then
/// listens on `listen` and serves until shutdown.
async fn serve_api(
    config: medforge_api::ApiConfig,
    client: kube::Client,
    listen: SocketAddr,
    listen_flag: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let backend = Arc::new(medforge_api::backend::KubeBackend::new(
        client,
        &config.sessions.namespace,
    ));
    let api = medforge_api::Api::start(config, backend)
        .await
        .context("starting the api")?;
    if !api.wait_synced(Duration::from_secs(30)).await {
        tracing::warn!("the api's session watch has not synced within 30 s; serving anyway");
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("the api cannot listen on {listen}: is the port in use? Pick another with {listen_flag}")
        })?;
    api.serve(listener, shutdown.cancelled_owned())
        .await
        .context("serving the api")
}

/// `medforge up`: everything in one process.
pub async fn up(mut args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let mut quickstart = None;
    if args.quickstart.quickstart {
        let qs = crate::quickstart::QuickstartDir::new(&args.data_dir);
        let prepared = crate::quickstart::prepare(
            &args.data_dir,
            &args.quickstart,
            &args.agent.docker_socket,
            &args.agent.zfs_binary,
            &args.agent.zfs_root,
            args.default_pack_image.as_deref(),
        )
        .await?;
        std::fs::write(qs.pidfile("medforge"), format!("{}\n", std::process::id()))
            .context("recording medforge up's PID")?;
        args.agent.zfs_root = prepared.zfs_root.clone();
        args.default_pack_image = prepared.pack_image.clone();
        args.scheduler.allow_cpu_only = true;
        quickstart = Some(prepared);
    }
    let apiserver_dir = args.data_dir.join("apiserver");
    let mut apiserver_config =
        medforge_apiserver::Config::new(&apiserver_dir).with_listen(args.apiserver_listen);
    apiserver_config.event_ttl = args.event_ttl;
    let server = medforge_apiserver::start(apiserver_config)
        .await
        .with_context(|| {
            format!(
                "starting the control plane in {} (if its port is in use, pick another with --apiserver-listen)",
                apiserver_dir.display()
            )
        })?;
    tracing::info!(
        url = server.url(),
        kubeconfig = %server.kubeconfig_path().display(),
        "control plane ready; use it with: kubectl --kubeconfig {}",
        server.kubeconfig_path().display()
    );
    let client = server.client().context("connecting to the control plane")?;
    medforge_operator::leader::ensure_namespace(&client, &args.api.namespace)
        .await
        .context("creating the sessions namespace")?;
    if let Some(image) = &args.default_pack_image {
        apply_default_pack(&client, image).await?;
    }

    let shutdown = shutdown_token();
    let mut drain = vec![(
        "scheduler",
        tokio::spawn(scheduler_loop(
            client.clone(),
            args.scheduler.config(&identity()),
            shutdown.clone(),
        )),
    )];
    let mut isolation = None;
    if !args.agent.no_agent {
        let mut agent_config = args.agent.config()?;
        agent_config.storage_note = quickstart.as_ref().and_then(|q| q.storage_note.clone());
        drain.push((
            "node agent",
            tokio::spawn(agent_task(client.clone(), agent_config, shutdown.clone())),
        ));
        isolation = Some(isolation_task(&args.agent));
    }

    let api_config = args.api.config(&args.data_dir.join("api"))?;
    let admin = first_admin(&api_config, &args.data_dir).await?;
    let domain = api_config.domain.clone();
    if let Some(prepared) = &mut quickstart {
        crate::quickstart::ensure_caddy(
            &args.data_dir,
            &args.quickstart,
            &domain,
            &args.api_listen.to_string(),
            &mut prepared.report,
        )
        .await?;
        println!(
            "{}",
            crate::quickstart::summary(
                &args.data_dir,
                &args.quickstart,
                &domain,
                &admin,
                &prepared.report
            )
        );
    } else {
        tracing::info!(%admin, "first admin");
    }
    let result = serve_api(
        api_config,
        client,
        args.api_listen,
        "--api-listen",
        shutdown.clone(),
    )
    .await;

    // SIGTERM (or the api failing): the scheduler and the node agent finish
    // what they have in flight, then the control plane closes. Containers
    // keep running and are adopted at the next start.
    shutdown.cancel();
    await_drained(drain, Duration::from_secs(30)).await;
    if let Some(isolation) = isolation {
        isolation.abort();
    }
    server.shutdown().await;
    tracing::info!("stopped; running sessions keep running and are adopted at the next start");
    result
}

/// `medforge operator`.
pub async fn operator(args: OperatorArgs) -> anyhow::Result<()> {
    if args.no_scheduler && args.agent.no_agent {
        bail!("nothing to run: both --no-scheduler and --no-agent were given");
    }
    let client = client_from(args.kubeconfig.as_deref()).await?;
    let shutdown = shutdown_token();
    let mut drain = Vec::new();
    let mut isolation = None;
    if !args.no_scheduler {
        drain.push((
            "scheduler",
            tokio::spawn(scheduler_loop(
                client.clone(),
                args.scheduler.config(&identity()),
                shutdown.clone(),
            )),
        ));
    }
    if !args.agent.no_agent {
        drain.push((
            "node agent",
            tokio::spawn(agent_task(client, args.agent.config()?, shutdown.clone())),
        ));
        isolation = Some(isolation_task(&args.agent));
    }
    shutdown.cancelled().await;
    await_drained(drain, Duration::from_secs(30)).await;
    if let Some(isolation) = isolation {
        isolation.abort();
    }
    Ok(())
}

/// `medforge api`.
pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let client = client_from(args.kubeconfig.as_deref()).await?;
    let config = args.api.config(&args.data_dir)?;
    let admin = first_admin(&config, &args.data_dir).await?;
    tracing::info!(%admin, "first admin");
    serve_api(config, client, args.listen, "--listen", shutdown_token()).await
}

/// `medforge create-admin`: reads the password from standard input.
pub async fn create_admin(args: CreateAdminArgs) -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        bail!("the password (read from standard input) must have at least 8 characters");
    }
    let mut config = medforge_api::ApiConfig::new("localhost", &args.data_dir);
    config.database_url = args.database_url;
    let db = medforge_api::Db::connect(config.database_url.as_deref(), &config.data_dir)
        .await
        .context("opening the api database")?;
    db.migrate().await.context("migrating the api database")?;
    let user = medforge_api::ensure_admin(
        &db,
        config.auth.password_hashing,
        &args.email,
        Some(password),
    )
    .await
    .context("creating the admin")?;
    println!("admin {} ready (id {})", args.email, user.id);
    Ok(())
}
