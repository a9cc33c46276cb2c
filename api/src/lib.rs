//! MedForge's HTTP API: users and login tokens (SQL), sessions (Session resources
//! on the control plane), Caddy's `forward_auth` for session hosts, live events,
//! and admin routes.
//!
//! Wiring, for the CLI:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use medforge_api::{Api, ApiConfig, backend::KubeBackend};
//! let config = ApiConfig::new("medforge.example.org", "/var/lib/medforge");
//! let client = kube::Client::try_default().await?;
//! let backend = Arc::new(KubeBackend::new(client, &config.sessions.namespace));
//! let api = Api::start(config, backend).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! api.serve(listener, medforge_api::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod backend;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod health;
pub mod host;
pub mod index;
pub mod openapi;
pub mod origin;
pub mod proxy;
pub mod ratelimit;
pub mod reply;
pub mod request;
mod server;
pub mod sessions;
pub mod slug;
pub mod tokens;
pub mod users;
pub mod validate;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use medforge_crds::Exposure;

pub use auth::ensure_admin;
pub use config::{AdminBootstrap, ApiConfig, PasswordHashing};
pub use db::Db;
pub use error::ApiError;
pub use server::{Api, StartError, flush_activity, shutdown_signal};

use crate::backend::SessionBackend;
use crate::host::HostParser;
use crate::index::SessionIndex;
use crate::origin::OriginAllowlist;
use crate::ratelimit::RateLimiter;
use crate::tokens::TokenCache;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    config: ApiConfig,
    db: Db,
    backend: Arc<dyn SessionBackend>,
    index: Arc<SessionIndex>,
    tokens: TokenCache,
    auth_limiter: RateLimiter,
    origins: OriginAllowlist,
    hosts: HostParser,
}

impl AppState {
    /// State over a migrated database and a backend. The index starts empty: the
    /// watch that feeds it runs in [`Api`] (or a test drives it).
    pub fn new(config: ApiConfig, db: Db, backend: Arc<dyn SessionBackend>) -> Self {
        Self(Arc::new(StateInner {
            tokens: TokenCache::new(
                config.auth.token_cache_ttl.as_secs().max(1) as i64,
                config.auth.idle_ttl.as_secs().max(1) as i64,
            ),
            auth_limiter: RateLimiter::new(config.rate_limit),
            origins: OriginAllowlist::new(config.allowed_origins()),
            hosts: HostParser::new(&config),
            index: Arc::new(SessionIndex::new()),
            config,
            db,
            backend,
        }))
    }

    /// The configuration.
    pub fn config(&self) -> &ApiConfig {
        &self.0.config
    }
    /// The user database.
    pub fn db(&self) -> &Db {
        &self.0.db
    }
    /// The control plane.
    pub fn backend(&self) -> &Arc<dyn SessionBackend> {
        &self.0.backend
    }
    /// The session index.
    pub fn index(&self) -> &Arc<SessionIndex> {
        &self.0.index
    }
    /// The login token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.0.tokens
    }
    /// The signup/login rate limiter.
    pub fn auth_limiter(&self) -> &RateLimiter {
        &self.0.auth_limiter
    }
    /// The allowed origins.
    pub fn origins(&self) -> &OriginAllowlist {
        &self.0.origins
    }
    /// The session host parser.
    pub fn hosts(&self) -> &HostParser {
        &self.0.hosts
    }
}

/// The whole service as a router: every route, the origin check, the body limit,
/// request ids, the request log and problem rendering.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// [`app`] with extra routes behind the same middleware (benchmarks compare a
/// trivial handler with `session-proxy` this way).
pub fn app_with(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(extra)
        .merge(health::router())
        .merge(openapi::router())
        .merge(auth::router())
        .merge(proxy::router())
        .merge(events::router())
        .merge(admin::router())
        .nest("/api/v2/external", sessions::router(Exposure::External))
        .nest("/api/v2/internal", sessions::router(Exposure::Internal))
        .fallback(|| async { ApiError::RouteNotFound })
        .layer(DefaultBodyLimit::max(state.config().body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            origin::check_origin,
        ))
        .layer(middleware::from_fn(request::request_context))
        .with_state(state)
}

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
