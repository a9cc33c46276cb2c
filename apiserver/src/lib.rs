//! MedForge's embedded control plane: a Kubernetes-compatible API server for
//! the `medforge.dev` resources (registered from the CRDs of `medforge-crds`)
//! and the core kinds the controllers use (`v1` Namespace,
//! `events.k8s.io/v1` Event, `coordination.k8s.io/v1` Lease, and RBAC with
//! ServiceAccounts and their tokens), stored in SQLite. The kube client, kube-runtime controllers and `kubectl` work
//! against it as against kube-apiserver.
//!
//! ```no_run
//! # async fn run() -> Result<(), medforge_apiserver::Error> {
//! let server = medforge_apiserver::start(medforge_apiserver::Config::new("/var/lib/medforge/apiserver")).await?;
//! let client = server.client()?; // a kube::Client with the server's CA and token
//! println!("kubectl --kubeconfig {}", server.kubeconfig_path().display());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Deviations from kube-apiserver are listed in
//! `docs/decisions/0002-embedded-control-plane.md`.
#![forbid(unsafe_code)]

// The composition (this file) and the background tasks.
mod error;
mod event_expiry;
mod listener;
mod namespaces;
mod server;
mod state;

// The request path: parsing, admission, the verbs, the shared writes, answers.
mod admission;
mod handlers;
mod request;
mod response;
mod write;

// What the request path is built on.
mod auth;
mod db;
mod discovery;
mod events;
mod json;
mod jsonpath;
mod managed;
mod object_meta;
mod openapi;
mod pki;
mod protobuf;
pub mod rbac_report;
mod registry;
mod selector;
mod status;
mod store;
mod table;
#[cfg(feature = "testing")]
pub mod testing;
mod validation;

pub use error::Error;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The default address: loopback only, kube-apiserver's port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:6443";

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds the SQLite database, the CA, the token and (by default) the kubeconfig.
    pub data_dir: PathBuf,
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:6443`.
    pub listen: SocketAddr,
    /// Extra DNS names or IP addresses for the serving certificate, besides
    /// `127.0.0.1`, `::1` and `localhost`.
    pub extra_sans: Vec<String>,
    /// The CRDs to serve. Default: `medforge_crds::all_crds()`.
    pub crds: Vec<CustomResourceDefinition>,
    /// How many writes the watch history keeps (for resuming watches and
    /// paginated lists). Older versions get `410 Expired`. Default 10,000.
    pub watch_history: usize,
    /// How often a watch that allows bookmarks gets one. Default 60 s.
    pub bookmark_interval: Duration,
    /// The largest request body accepted; kube-apiserver's 3 MiB by default.
    pub max_body_bytes: usize,
    /// Where to write the kubeconfig. Default `<data_dir>/kubeconfig`.
    pub kubeconfig_path: Option<PathBuf>,
    /// How long an Event lives after its last write before it is deleted;
    /// kube-apiserver's `--event-ttl`, one hour by default.
    pub event_ttl: Duration,
    /// Where to append one JSON line per authorization decision
    /// (kube-apiserver's `--audit-log-path`, at level Metadata). Default: none.
    pub audit_log: Option<PathBuf>,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.into(),
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            extra_sans: Vec::new(),
            crds: medforge_crds::all_crds(),
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(60),
            max_body_bytes: 3 * 1024 * 1024,
            kubeconfig_path: None,
            event_ttl: DEFAULT_EVENT_TTL,
            audit_log: None,
        }
    }

    /// The same configuration listening on `addr`.
    pub fn with_listen(mut self, addr: SocketAddr) -> Config {
        self.listen = addr;
        self
    }
}

/// A running server. Dropping it does not stop it; call [`RunningServer::shutdown`].
pub struct RunningServer {
    addr: SocketAddr,
    url: String,
    token: String,
    ca_pem: String,
    ca_der: Vec<u8>,
    kubeconfig_path: PathBuf,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    writer: JoinHandle<()>,
    state: Arc<state::AppState>,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("addr", &self.addr)
            .field("token", &"***")
            .field("kubeconfig_path", &self.kubeconfig_path)
            .finish()
    }
}

impl RunningServer {
    /// The address the server listens on (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bearer token clients must present.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The CA that signed the serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The kubeconfig written for `kubectl` and the other components.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The kubeconfig's contents.
    pub fn kubeconfig(&self) -> String {
        pki::kubeconfig(&self.url, &self.ca_pem, &self.token)
    }

    /// A kube client configuration for this server (default namespace `default`).
    pub fn kube_config(&self) -> kube::Config {
        let mut c = kube::Config::new(self.url.parse().expect("the server URL is a valid URI"));
        c.root_cert = Some(vec![self.ca_der.clone()]);
        c.auth_info.token = Some(self.token.clone().into());
        c.default_namespace = "default".into();
        c
    }

    /// A kube client for this server.
    pub fn client(&self) -> Result<kube::Client, Error> {
        Ok(kube::Client::try_from(self.kube_config())?)
    }

    /// A handle that mints ServiceAccount tokens while the server runs.
    pub fn token_issuer(&self) -> TokenIssuer {
        TokenIssuer {
            state: self.state.clone(),
        }
    }

    /// A kube client configuration for this server, as the ServiceAccount
    /// `namespace/name`, that reads its token from `token_file` (re-read
    /// when it changes, as a projected token in a Pod is).
    pub fn kube_config_with_token_file(&self, token_file: &Path) -> kube::Config {
        let mut c = self.kube_config();
        c.auth_info.token = None;
        c.auth_info.token_file = Some(token_file.display().to_string());
        c
    }

    /// The newest resourceVersion the server has given out.
    pub fn resource_version(&self) -> u64 {
        self.state.store.current_rv()
    }

    /// Stops listening, ends watches and waits for in-flight writes to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        // Dropping the last reference to the store closes the write queue; the
        // writer finishes what it has queued and closes the database, which
        // releases the data directory for the next server.
        drop(self.state);
        if tokio::time::timeout(Duration::from_secs(10), self.writer)
            .await
            .is_err()
        {
            tracing::warn!("the store did not close within 10 s (a request still holds it)");
        }
    }
}

/// Mints ServiceAccount tokens for a process that runs the server (see
/// [`RunningServer::token_issuer`]). Drop it before [`RunningServer::shutdown`]:
/// it keeps the store open.
#[derive(Clone)]
pub struct TokenIssuer {
    state: Arc<state::AppState>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenIssuer")
    }
}

impl TokenIssuer {
    /// A token for the ServiceAccount `namespace/name` (which must exist),
    /// valid for `lifetime` (at most 48 hours): what a TokenRequest gives,
    /// for a process that holds the server.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        lifetime: Duration,
    ) -> Result<String, Error> {
        let secs = i64::try_from(lifetime.as_secs())
            .unwrap_or(i64::MAX)
            .clamp(1, auth::token::MAX_EXPIRATION_SECS);
        auth::review::mint(
            &self.state.auth,
            &self.state.store,
            &self.state.registry,
            namespace,
            name,
            secs,
        )
        .map(|(token, _)| token)
        .map_err(|e| Error::Config(e.message))
    }
}

/// Starts the server: opens (or creates) the data directory, loads the store,
/// creates credentials on first start, writes the kubeconfig and listens.
pub async fn start(config: Config) -> Result<RunningServer, Error> {
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
        path: config.data_dir.clone(),
        source: e,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let registry = Arc::new(registry::Registry::new(&config.crds)?);
    let creds = pki::load_or_create(&config.data_dir, &config.extra_sans)?;
    let db = db::Db::open(
        &config.data_dir.join("store.db"),
        config.watch_history.max(1) as u64,
    )
    .await?;
    let (store, writer) = store::Store::open(registry.clone(), db, config.watch_history).await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Listen {
            addr: config.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| Error::Listen {
        addr: config.listen,
        source: e,
    })?;
    let url = pki::server_url(addr);
    let shutdown = CancellationToken::new();
    let audit = match &config.audit_log {
        Some(path) => Some(auth::audit::AuditLog::open(path)?),
        None => None,
    };
    let state = Arc::new(state::AppState {
        store,
        auth: auth::Auth {
            admin_token: creds.token.clone(),
            authz: auth::rbac::Authorizer::new(&registry),
            signer: auth::token::Signer::load_or_create(&config.data_dir)?,
            audit,
        },
        registry: registry.clone(),
        openapi: openapi::OpenApi::build(&registry),
        max_body: config.max_body_bytes,
        bookmark_interval: config.bookmark_interval,
        shutdown: shutdown.clone(),
        server_address: url.trim_start_matches("https://").to_string(),
    });
    namespaces::ensure_initial(&state)
        .await
        .map_err(|e| Error::Bootstrap(e.to_string()))?;

    let kubeconfig_path = config
        .kubeconfig_path
        .clone()
        .unwrap_or_else(|| pki::default_kubeconfig_path(&config.data_dir));
    if let Some(parent) = kubeconfig_path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::Io {
            path: parent.to_path_buf(),
            source: e,
        })?;
    }
    pki::write_private(
        &kubeconfig_path,
        pki::kubeconfig(&url, &creds.ca_pem, &creds.token).as_bytes(),
    )?;

    let app = server::app(state.clone());
    let tasks = vec![
        tokio::spawn(listener::serve(
            listener,
            creds.tls.clone(),
            app,
            shutdown.clone(),
        )),
        tokio::spawn(namespaces::run(state.clone())),
        tokio::spawn(event_expiry::expire(state.clone(), config.event_ttl)),
    ];
    tracing::info!(%url, data_dir = %config.data_dir.display(), kubeconfig = %kubeconfig_path.display(), token = "***", "embedded control plane listening");
    Ok(RunningServer {
        addr,
        url,
        token: creds.token,
        ca_pem: creds.ca_pem,
        ca_der: creds.ca_der,
        kubeconfig_path,
        shutdown,
        tasks,
        writer,
        state,
    })
}
