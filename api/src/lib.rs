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

pub mod account_policy;
pub mod accounts;
mod activity;
pub mod admin;
mod app;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod clock;
pub mod config;
pub mod context;
pub mod db;
pub mod error;
pub mod events;
pub mod hash_slots;
pub mod health;
pub mod host;
pub mod index;
pub mod login_failures;
pub mod openapi;
pub mod origin;
pub mod packs;
pub mod paging;
pub mod proxy;
pub mod ratelimit;
pub mod reply;
pub mod request;
mod server;
pub mod sessions;
pub mod slug;
pub mod snapshot_index;
pub mod snapshots;
mod state;
pub mod tokens;
pub mod users;
pub mod validate;
pub mod watch_index;

pub use activity::flush_activity;
pub use app::{app, app_with};
pub use auth::{AdminOutcome, ExistingAccount, ensure_admin, ensure_admin_outcome};
pub use clock::{now_secs, rfc3339};
pub use config::{AdminBootstrap, ApiConfig, PasswordHashing, SignupMode};
pub use db::Db;
pub use error::ApiError;
pub use server::{Api, StartError, shutdown_signal};
pub use state::AppState;
