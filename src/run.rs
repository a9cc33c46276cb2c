//! The long-running commands: `up`, `operator`, `api`, and `create-admin`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use medforge_operator::scheduler::controller::SchedulerConfig;
use medforge_operator::scheduler::placement::{Limits, Policy};

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
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
        };
        c.policy = self.placement;
        c.heartbeat_timeout = Duration::from_secs(self.heartbeat_timeout_secs);
        c
    }
}

/// Api settings shared by `up` and `api`.
#[derive(Debug, Args, Clone)]
pub struct ApiSettings {
    /// The MedForge base domain: sessions are served at
    /// `s-<slug>.external.<domain>`, the api at `api.<domain>`.
    #[arg(long, default_value = "medforge.localtest.me", env = "MEDFORGE_DOMAIN")]
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
/// bridge is).
fn isolation_task(args: &AgentArgs) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use medforge_operator::isolation::{CommandPrefix, Isolation, keep_applied};
    let docker = bollard::Docker::connect_with_unix(
        args.docker_socket
            .to_str()
            .context("the Docker socket path is not UTF-8")?,
        120,
        &medforge_operator::agent::docker::API_VERSION,
    )
    .with_context(|| format!("connecting to Docker at {}", args.docker_socket.display()))?;
    let prefix = match &args.netns {
        Some(path) => CommandPrefix::nsenter_net(path),
        None => CommandPrefix::host(),
    };
    Ok(tokio::spawn(keep_applied(
        docker,
        args.network.clone(),
        Isolation::new(prefix),
        Vec::new(),
        Duration::from_secs(2),
    )))
}

async fn agent_task(client: kube::Client, config: medforge_operator::agent::AgentConfig) {
    tracing::info!(node = %config.node_name, "node agent starting");
    if let Err(e) = medforge_operator::agent::run(client, config, std::future::pending()).await {
        tracing::error!(error = %e, "the node agent stopped");
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
/// lost, until the process shuts down.
async fn scheduler_loop(client: kube::Client, config: SchedulerConfig) {
    loop {
        match medforge_operator::scheduler::controller::run(
            client.clone(),
            config.clone(),
            std::future::pending(),
        )
        .await
        {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler stopped; rejoining the election");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Ensures an admin exists. With none configured and none in the database,
/// creates `admin@<domain>` with a random password and prints it once.
async fn first_admin(config: &medforge_api::ApiConfig) -> anyhow::Result<()> {
    if config.bootstrap_admin.is_some() {
        return Ok(()); // Api::start ensures it.
    }
    let db = medforge_api::Db::connect(config.database_url.as_deref(), &config.data_dir)
        .await
        .context("opening the api database")?;
    db.migrate().await.context("migrating the api database")?;
    if medforge_api::users::count_admins(&db).await? > 0 {
        return Ok(());
    }
    let email = format!("admin@{}", config.domain);
    let password = random_password();
    medforge_api::ensure_admin(&db, config.auth.password_hashing, &email, Some(&password))
        .await
        .context("creating the first admin")?;
    eprintln!(
        "\nmedforge: created the first admin {email} with password {password}\n\
         medforge: this password is shown once; change it or create another admin with `medforge create-admin`.\n"
    );
    Ok(())
}

fn random_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

async fn serve_api(
    config: medforge_api::ApiConfig,
    client: kube::Client,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let backend = Arc::new(medforge_api::backend::KubeBackend::new(
        client,
        &config.sessions.namespace,
    ));
    let api = medforge_api::Api::start(config, backend)
        .await
        .context("starting the api")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    api.serve(listener, shutdown_signal())
        .await
        .context("serving the api")
}

/// `medforge up`: everything in one process.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let apiserver_dir = args.data_dir.join("apiserver");
    let mut apiserver_config =
        medforge_apiserver::Config::new(&apiserver_dir).with_listen(args.apiserver_listen);
    apiserver_config.event_ttl = args.event_ttl;
    let server = medforge_apiserver::start(apiserver_config)
        .await
        .with_context(|| format!("starting the control plane in {}", apiserver_dir.display()))?;
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

    let scheduler = tokio::spawn(scheduler_loop(
        client.clone(),
        args.scheduler.config(&identity()),
    ));
    let agent = if args.agent.no_agent {
        None
    } else {
        Some((
            tokio::spawn(agent_task(client.clone(), args.agent.config()?)),
            isolation_task(&args.agent)?,
        ))
    };

    let api_config = args.api.config(&args.data_dir.join("api"))?;
    first_admin(&api_config).await?;
    let result = serve_api(api_config, client, args.api_listen).await;

    scheduler.abort();
    if let Some((agent, isolation)) = agent {
        agent.abort();
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
    let mut tasks = Vec::new();
    if !args.no_scheduler {
        tasks.push(tokio::spawn(scheduler_loop(
            client.clone(),
            args.scheduler.config(&identity()),
        )));
    }
    if !args.agent.no_agent {
        tasks.push(tokio::spawn(agent_task(client, args.agent.config()?)));
        tasks.push(isolation_task(&args.agent)?);
    }
    shutdown_signal().await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

/// `medforge api`.
pub async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let client = client_from(args.kubeconfig.as_deref()).await?;
    let config = args.api.config(&args.data_dir)?;
    first_admin(&config).await?;
    serve_api(config, client, args.listen).await
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
