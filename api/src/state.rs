//! The state every handler shares.

use std::sync::Arc;

use crate::backend::SessionBackend;
use crate::config::ApiConfig;
use crate::db::Db;
use crate::hash_slots::HashSlots;
use crate::host::HostParser;
use crate::index::SessionIndex;
use crate::login_failures::LoginFailures;
use crate::origin::OriginAllowlist;
use crate::ratelimit::RateLimiter;
use crate::snapshot_index::SnapshotIndex;
use crate::tokens::TokenCache;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

struct StateInner {
    config: ApiConfig,
    db: Db,
    backend: Arc<dyn SessionBackend>,
    index: Arc<SessionIndex>,
    snapshots: Arc<SnapshotIndex>,
    tokens: TokenCache,
    auth_limiter: RateLimiter,
    hash_slots: HashSlots,
    login_failures: LoginFailures,
    origins: OriginAllowlist,
    hosts: HostParser,
}

impl AppState {
    /// State over a migrated database and a backend. The indexes start
    /// empty: the watches that feed them run in [`crate::Api`] (or
    /// a test drives them).
    pub fn new(config: ApiConfig, db: Db, backend: Arc<dyn SessionBackend>) -> Self {
        Self(Arc::new(StateInner {
            tokens: TokenCache::new(
                config.auth.token_cache_ttl.as_secs().max(1) as i64,
                config.auth.idle_ttl.as_secs().max(1) as i64,
            ),
            auth_limiter: RateLimiter::new(config.rate_limit),
            hash_slots: HashSlots::new(config.auth.max_concurrent_hashes),
            login_failures: LoginFailures::default(),
            origins: OriginAllowlist::new(config.allowed_origins()),
            hosts: HostParser::new(&config),
            index: Arc::new(SessionIndex::new()),
            snapshots: Arc::new(SnapshotIndex::new()),
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
    /// The index of WorkspaceSnapshot records.
    pub fn snapshots(&self) -> &Arc<SnapshotIndex> {
        &self.0.snapshots
    }
    /// The login token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.0.tokens
    }
    /// The bound on password hashes computed at once.
    pub fn hash_slots(&self) -> &HashSlots {
        &self.0.hash_slots
    }
    /// Failed logins per account.
    pub fn login_failures(&self) -> &LoginFailures {
        &self.0.login_failures
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
