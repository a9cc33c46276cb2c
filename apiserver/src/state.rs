//! What every request handler and background task shares: the store, the
//! registry of served kinds, the credentials and the server's settings.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::openapi::OpenApi;
use crate::registry::Registry;
use crate::store::Store;

/// Everything a request handler needs.
pub struct AppState {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    /// Authentication, RBAC and the audit log.
    pub auth: crate::auth::Auth,
    pub openapi: OpenApi,
    pub max_body: usize,
    pub bookmark_interval: Duration,
    pub shutdown: CancellationToken,
    pub server_address: String,
}
