//! Running the service: open and migrate the database, ensure the configured
//! admin, start the session and snapshot watches and the activity flusher,
//! serve with graceful shutdown, flush once more on the way out.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::activity::flush_activity;
use crate::app::app;
use crate::auth::{BootstrapError, ExistingAccount, ensure_admin};
use crate::backend::SessionBackend;
use crate::clock::now_secs;
use crate::config::ApiConfig;
use crate::db::{Db, DbError};
use crate::state::AppState;
use crate::users;

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The configured admin could not be ensured.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// A started API: state plus its background tasks (stopped when dropped).
pub struct Api {
    state: AppState,
    tasks: Vec<JoinHandle<()>>,
}

/// How often expired tokens are deleted.
const TOKEN_CLEANUP_EVERY: Duration = Duration::from_secs(3600);

impl Api {
    /// Opens the configured database (migrating it), ensures the configured admin and
    /// starts the background tasks.
    pub async fn start(
        config: ApiConfig,
        backend: Arc<dyn SessionBackend>,
    ) -> Result<Api, StartError> {
        let db = Db::connect(config.database_url.as_deref(), &config.data_dir).await?;
        db.migrate().await?;
        if let Some(admin) = &config.bootstrap_admin {
            ensure_admin(
                &db,
                config.auth.password_hashing,
                &admin.email,
                Some(&admin.password),
                ExistingAccount::Refuse,
            )
            .await?;
        }
        Ok(Self::with_db(config, db, backend))
    }

    /// Starts the background tasks over an opened, migrated database.
    pub fn with_db(config: ApiConfig, db: Db, backend: Arc<dyn SessionBackend>) -> Api {
        let state = AppState::new(config, db, backend);
        let watch = tokio::spawn(state.index().clone().run(state.backend().clone()));
        let snapshot_watch = tokio::spawn(state.snapshots().clone().run(state.backend().clone()));
        let flusher = tokio::spawn(flush_loop(state.clone()));
        Api {
            state,
            tasks: vec![watch, snapshot_watch, flusher],
        }
    }

    /// The shared state.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The router ([`app`] over this state).
    pub fn router(&self) -> Router {
        app(self.state.clone())
    }

    /// Waits until the session and snapshot watches have synced, at most `timeout`.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !(self.state.index().is_synced() && self.state.snapshots().is_synced()) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// Serves on `listener` until `shutdown` resolves, then drains connections and
    /// writes back pending activity.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "api listening");
        }
        let service = self
            .router()
            .into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.shutdown().await;
        Ok(())
    }

    /// Stops the background tasks after a last flush.
    pub async fn shutdown(mut self) {
        flush_activity(&self.state).await;
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn flush_loop(state: AppState) {
    let mut tick = tokio::time::interval(state.config().activity_flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_cleanup = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        flush_activity(&state).await;
        if last_cleanup.elapsed() >= TOKEN_CLEANUP_EVERY {
            last_cleanup = tokio::time::Instant::now();
            let idle = state.config().auth.idle_ttl.as_secs() as i64;
            match users::delete_expired_tokens(state.db(), now_secs(), idle).await {
                Ok(n) if n > 0 => tracing::info!(removed = n, "expired login tokens removed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not remove expired tokens"),
            }
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
