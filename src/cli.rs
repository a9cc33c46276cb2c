//! The command line: every flag of every subcommand and how its value is
//! parsed and checked. Nothing here starts anything; `config` turns these
//! into the crates' configurations and `run` composes the commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use medforge_operator::scheduler::placement::Policy;

/// Where `medforge up` and `medforge down` keep everything on this host.
const DATA_DIR: &str = "/var/lib/medforge";
/// The api's own data directory when it runs alone.
const API_DIR: &str = "/var/lib/medforge/api";
/// Where the api listens by default.
const API_LISTEN: &str = "127.0.0.1:8000";
/// Docker's own socket: a daemon the quickstart starts for it gets Docker's
/// default paths.
pub const DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// The default dataset under which workspaces are created.
const ZFS_ROOT: &str = "tank/medforge/workspaces";

/// MedForge: interactive GPU sessions on shared GPU machines.
#[derive(Debug, Parser)]
#[command(name = "medforge", version, about, long_about = None)]
pub struct Cli {
    /// Log format: `text` (readable) or `json`.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"], env = "MEDFORGE_LOG_FORMAT")]
    pub log_format: String,

    /// The configuration file: every key is a flag's long name, its value
    /// that flag's default (an environment variable or the flag itself
    /// overrides it). Default: /etc/medforge/medforge.toml when it exists.
    #[arg(long, global = true, value_name = "FILE", env = "MEDFORGE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run everything on this host: the embedded control plane, the scheduler,
    /// a node agent for this host and the api, in one process.
    Up(Box<UpArgs>),
    /// Run only the embedded control plane (a Kubernetes-compatible API server).
    Apiserver(ApiserverArgs),
    /// Run the scheduler and/or the node agent against a control plane.
    Operator(OperatorArgs),
    /// Run only the HTTP api against a control plane.
    Api(ApiArgs),
    /// Create or promote an admin user in the api's database.
    CreateAdmin(CreateAdminArgs),
    /// Stop, by PID, what `medforge up --quickstart` started (MedForge,
    /// Caddy, and Docker and zfs-fuse when it started them).
    Down(DownArgs),
    /// Check the configuration file (and the environment) and print the
    /// configuration in effect, secrets redacted.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Check least privilege: from RBAC objects (the chart's rendering) and
    /// an audit log (the embedded control plane's `--audit-log-path`, or
    /// kube-apiserver's at level Metadata or above), list for each
    /// ServiceAccount the requests it was refused and the grants it never
    /// used. Exits 1 when there are any.
    RbacReport {
        /// The audit log: one JSON event per line.
        #[arg(long, value_name = "FILE")]
        audit_log: PathBuf,
        /// A YAML file of RBAC objects (`helm template …`); other kinds in it
        /// are skipped (repeatable).
        #[arg(long, value_name = "FILE", required = true)]
        rbac: Vec<PathBuf>,
    },
    /// Print every MedForge CustomResourceDefinition as YAML, or write one file per CRD.
    Crds {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        write: Option<PathBuf>,
    },
}

/// `medforge config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigAction {
    /// Validate the file and print the configuration a command would run
    /// with: each flag's value and where it came from (flag, environment,
    /// file, built in). Exits 1 with the file, key and reason when a value
    /// cannot be used.
    Check {
        /// The command whose configuration to print.
        #[arg(long = "for", default_value = "up", value_parser = ["up", "api", "operator"])]
        command: String,
    },
}

/// `medforge up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Holds everything MedForge keeps on this host: the control plane's
    /// database, CA, token and kubeconfig, and the api's database.
    #[arg(long, default_value = DATA_DIR, env = "MEDFORGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Where the control plane listens (loopback by default).
    #[arg(long, default_value = medforge_apiserver::DEFAULT_LISTEN)]
    pub apiserver_listen: SocketAddr,
    /// How long the control plane keeps an Event after its last write
    /// (`30m`, `1h`, `2h30m`), as kube-apiserver's `--event-ttl`.
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    pub event_ttl: Duration,
    /// Append one JSON line per authorization decision of the control plane
    /// to this file (kube-apiserver's `--audit-log-path`, level Metadata).
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
    /// Where the api listens (Caddy forwards to it).
    #[arg(long, default_value = API_LISTEN, env = "MEDFORGE_API_LISTEN")]
    pub api_listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiSettings,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Create or update the default Pack (`--default-pack`) with this image
    /// (pinned: `name@sha256:…` or a local image id `sha256:…`) at start;
    /// its port, display name and description come from the image's
    /// `dev.medforge.pack.*` labels when Docker has it.
    #[arg(long, env = "MEDFORGE_DEFAULT_PACK_IMAGE")]
    pub default_pack_image: Option<String>,
    #[command(flatten)]
    pub quickstart: QuickstartArgs,
}

/// `medforge apiserver`.
#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// Where the database, CA, token and kubeconfig live.
    #[arg(
        long,
        default_value = "/var/lib/medforge/apiserver",
        env = "MEDFORGE_APISERVER_DIR"
    )]
    pub data_dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = medforge_apiserver::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// How long an Event lives after its last write (`30m`, `1h`, `2h30m`).
    #[arg(long, default_value = "1h", value_parser = parse_duration_arg)]
    pub event_ttl: Duration,
    /// Append one JSON line per authorization decision to this file
    /// (kube-apiserver's `--audit-log-path`, level Metadata).
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
}

/// `medforge operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
    /// Do not run the scheduler here (another replica runs it).
    #[arg(long)]
    pub no_scheduler: bool,
    #[command(flatten)]
    pub scheduler: SchedulerArgs,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `medforge api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub control_plane: ControlPlaneArgs,
    /// Directory for the default SQLite database.
    #[arg(long, default_value = API_DIR, env = "MEDFORGE_API_DIR")]
    pub data_dir: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = API_LISTEN, env = "MEDFORGE_API_LISTEN")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub api: ApiSettings,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `medforge create-admin`.
#[derive(Debug, Args)]
pub struct CreateAdminArgs {
    /// The admin's email.
    #[arg(long)]
    pub email: String,
    /// Directory of the api's default SQLite database.
    #[arg(long, default_value = API_DIR, env = "MEDFORGE_API_DIR")]
    pub data_dir: PathBuf,
    /// SQL database URL, when not the default SQLite file.
    #[arg(long, env = "MEDFORGE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// When the account exists: set its password to the one given, end its
    /// logins and make it an admin. Without this, an existing account that is
    /// not an admin is refused (whoever signed up with it chose its password).
    #[arg(long)]
    pub reset_password: bool,
}

/// `medforge down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The data directory `medforge up --quickstart` used.
    #[arg(long, default_value = DATA_DIR, env = "MEDFORGE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Also destroy the trial pool and remove the data directory.
    #[arg(long)]
    pub purge: bool,
}

/// How `operator` and `api` reach a control plane they do not run.
#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Kubeconfig of the control plane; default: KUBECONFIG, ~/.kube/config or in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
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
    /// A Stopped or Failed session not asked to run again for this long is
    /// deleted; its workspace stays as snapshots (`720h`; `0s`: keep every session).
    #[arg(long, default_value = "720h", value_parser = parse_duration_arg)]
    pub session_history: Duration,
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
    /// The Pack a create that names none gets. `medforge up` also creates
    /// or updates it at start: from `--default-pack-image`, else, for a name
    /// other than `default`, from the newest image in Docker labelled
    /// `dev.medforge.pack=<name>` (`bash packs/<name>/build.sh` builds one;
    /// `--quickstart` runs it when there is none).
    #[arg(long, default_value = "default", env = "MEDFORGE_DEFAULT_PACK")]
    pub default_pack: String,
    /// Email of the admin to create or promote at start. Its password comes
    /// from MEDFORGE_ADMIN_PASSWORD (used only when the account is new).
    #[arg(long, env = "MEDFORGE_ADMIN_EMAIL")]
    pub admin_email: Option<String>,
    /// Who may create an account with POST /api/v2/auth/signup: `closed`
    /// (admins create accounts), `invite` (with a code an admin made),
    /// `domains` (addresses in --signup-domains) or `open` (anyone).
    #[arg(long, default_value = "closed", env = "MEDFORGE_SIGNUP_MODE")]
    pub signup_mode: String,
    /// The email domains that may sign up with `--signup-mode domains`
    /// (comma-separated: `example.org,lab.example.org`).
    #[arg(long, env = "MEDFORGE_SIGNUP_DOMAINS", value_delimiter = ',')]
    pub signup_domains: Vec<String>,
    /// A login unused for this long ends (`24h`).
    #[arg(long, default_value = "24h", value_parser = parse_positive_duration)]
    pub token_idle_ttl: Duration,
    /// A login ends this long after it began, however often it is used (`168h`).
    #[arg(long, default_value = "168h", value_parser = parse_positive_duration)]
    pub token_max_ttl: Duration,
    /// Signups and logins one client network (IPv4 address, IPv6 /64) may
    /// make at once…
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_burst: u32,
    /// …and regains per minute.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_per_minute: u32,
    /// A peer whose `X-Forwarded-For` is believed (the reverse proxy;
    /// repeatable). Default: loopback (Caddy on this host).
    #[arg(long = "trusted-proxy", value_name = "IP", value_delimiter = ',', default_values = ["127.0.0.1", "::1"])]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The login cookie's SameSite: `lax` (sent when a user opens a session
    /// link; sessions need it), `strict` or `none`.
    #[arg(long, default_value = "lax", value_parser = ["lax", "strict", "none"])]
    pub cookie_same_site: String,
    /// How long a create with `?wait=ready` waits for the session to be
    /// Ready before answering 202 (`30s`, `2m`).
    #[arg(long, default_value = "2m", value_parser = parse_duration_arg)]
    pub session_ready_timeout: Duration,
    /// How long before an idle or lifetime stop the owner's event stream
    /// gets a `session.expiring` event (`10m`; `0s`: no warning).
    #[arg(long, default_value = "10m", value_parser = parse_duration_arg)]
    pub expiry_warning: Duration,
}

/// The session policy, shared by `up`, `operator` (its node agent holds
/// Sessions to it) and `api` (it refuses a create above a maximum). Keys:
/// cpu, memory, shm, pids, gpus, workspace-quota, idle-timeout,
/// max-lifetime. The api and every node agent should be given the same.
#[derive(Debug, Args, Clone)]
pub struct PolicyArgs {
    /// What a session gets for a value neither it nor its Pack sets
    /// (`memory=8Gi`; repeatable, or comma-separated).
    #[arg(
        long = "session-default",
        value_name = "KEY=VALUE",
        env = "MEDFORGE_SESSION_DEFAULTS",
        value_delimiter = ',',
        value_parser = parse_policy_pair
    )]
    pub defaults: Vec<String>,
    /// The most any session may have (`memory=64Gi`; repeatable, or
    /// comma-separated). A Pack may lower it for its sessions.
    #[arg(
        long = "session-maximum",
        value_name = "KEY=VALUE",
        env = "MEDFORGE_SESSION_MAXIMA",
        value_delimiter = ',',
        value_parser = parse_policy_pair
    )]
    pub maxima: Vec<String>,
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
    #[arg(long, default_value = DOCKER_SOCKET, env = "MEDFORGE_DOCKER_SOCKET")]
    pub docker_socket: PathBuf,
    /// ZFS dataset under which workspaces are created (`<root>/<owner>/<uid>`).
    #[arg(long, default_value = ZFS_ROOT, env = "MEDFORGE_ZFS_ROOT")]
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
    /// Destroy a session's dataset and its snapshots when the Session is
    /// deleted (default: take a last snapshot and keep the snapshots, under retention).
    #[arg(long)]
    pub destroy_workspaces: bool,
    /// Snapshots kept per session: the newest this many (at least 1)…
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub snapshot_keep_last: u32,
    /// …and every one younger than this many days (an admin may set other
    /// values for a user).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub snapshot_keep_days: u32,
    /// Serve the node agent's /metrics, /healthz and /readyz here.
    #[arg(long, env = "MEDFORGE_AGENT_METRICS")]
    pub agent_metrics: Option<SocketAddr>,
    /// Do not run a node agent on this host.
    #[arg(long)]
    pub no_agent: bool,
    /// An extra `key=value` label on every session container (repeatable).
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub container_labels: Vec<(String, String)>,
    /// Registry credentials for image pulls: a Docker config file
    /// (`{"auths": {"host": {"auth": "<base64 user:password>"}}}`), read at
    /// every pull; in a cluster, a mounted `kubernetes.io/dockerconfigjson` Secret.
    #[arg(long, env = "MEDFORGE_REGISTRY_AUTH_FILE")]
    pub registry_auth_file: Option<PathBuf>,
    /// Image pulls one node runs at once (others wait for a slot).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub max_concurrent_pulls: u32,
    /// The wait before a failed pull is tried again; it doubles each time…
    #[arg(long, default_value = "10s", value_parser = parse_positive_duration)]
    pub pull_backoff: Duration,
    /// …up to this.
    #[arg(long, default_value = "5m", value_parser = parse_positive_duration)]
    pub pull_backoff_max: Duration,
}

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

/// Parses a duration flag with the same rules as a Session's durations.
fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    medforge_crds::quantity::parse_duration(s).map_err(|e| e.to_string())
}

/// A duration above zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_arg(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be longer than zero"));
    }
    Ok(d)
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

/// One `key=value` of the session policy, checked alone (whether a default
/// is within its maximum is checked once all are read).
fn parse_policy_pair(s: &str) -> Result<String, String> {
    medforge_crds::policy::SessionPolicy::default().set(false, s)?;
    Ok(s.to_string())
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    s.parse()
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
