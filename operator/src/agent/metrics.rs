//! The agent's own HTTP port: Prometheus metrics at `/metrics`, liveness at
//! `/healthz` and readiness at `/readyz`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
}

/// Every metric the agent exports, prefixed `medforge_agent_`.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles that failed, by error category.
    pub failures: Family<ReasonLabels, Counter>,
    /// Reconcile duration in seconds.
    pub duration: Histogram,
    /// This node's sessions by phase (set at each scrape).
    pub sessions: Family<PhaseLabels, Gauge>,
    /// Sessions in the agent's cache (set at each scrape): this node's
    /// only, since the watch selects them.
    pub cached_sessions: Gauge,
    /// Steps taken, by kind.
    pub steps: Family<StepLabels, Counter>,
    /// Docker container events received.
    pub docker_events: Counter,
    /// Containers removed because no Session owns them.
    pub orphans_removed: Counter,
    /// Image pulls ended, by result (`Pulled`, or the failure's reason).
    pub pulls: Family<ResultLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("medforge_agent");
        let reconciles = Counter::default();
        let failures = Family::<ReasonLabels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let sessions = Family::<PhaseLabels, Gauge>::default();
        let cached_sessions = Gauge::default();
        let steps = Family::<StepLabels, Counter>::default();
        let docker_events = Counter::default();
        let orphans_removed = Counter::default();
        let pulls = Family::<ResultLabels, Counter>::default();
        registry.register(
            "image_pulls",
            "Image pulls ended, by result (Pulled, ImagePullFailed, ImageNotFound, Unauthorized)",
            pulls.clone(),
        );
        registry.register("reconciles", "Session reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Session reconciles that failed, by error category",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long one Session reconcile took",
            duration.clone(),
        );
        registry.register(
            "sessions",
            "Sessions bound to this node, by phase",
            sessions.clone(),
        );
        registry.register(
            "cached_sessions",
            "Sessions in the agent's cache (the watch selects this node's)",
            cached_sessions.clone(),
        );
        registry.register("steps", "Reconcile steps taken, by kind", steps.clone());
        registry.register(
            "docker_events",
            "Docker container events received",
            docker_events.clone(),
        );
        registry.register(
            "orphans_removed",
            "Containers removed because no Session owns them",
            orphans_removed.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            duration,
            sessions,
            cached_sessions,
            steps,
            docker_events,
            orphans_removed,
            pulls,
        }
    }
}

impl Metrics {
    /// A pull ended.
    pub fn pull_ended(&self, outcome: &Result<(), super::runtime::PullError>) {
        let result = match outcome {
            Ok(()) => medforge_crds::SessionReason::Pulled,
            Err(e) => e.reason(),
        };
        self.pulls
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }

    /// Pulls ended with `result` so far.
    pub fn pulls_ended(&self, result: medforge_crds::SessionReason) -> u64 {
        self.pulls
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .get()
    }

    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn step(&self, step: &str) {
        self.steps
            .get_or_create(&StepLabels {
                step: step.to_string(),
            })
            .inc();
    }

    /// Replaces the sessions-by-phase gauges.
    pub fn set_sessions(&self, by_phase: &BTreeMap<String, i64>) {
        self.sessions.clear();
        for (phase, n) in by_phase {
            self.sessions
                .get_or_create(&PhaseLabels {
                    phase: phase.clone(),
                })
                .set(*n);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What `/readyz` answers from.
#[derive(Debug, Default)]
pub struct Health {
    /// The Session cache has its first full list.
    pub synced: AtomicBool,
    /// The Docker event stream is connected.
    pub docker_connected: AtomicBool,
}

impl Health {
    pub fn ready(&self) -> bool {
        self.synced.load(Ordering::Relaxed) && self.docker_connected.load(Ordering::Relaxed)
    }
}

/// Counts this node's sessions by phase, at scrape time.
pub type SessionCounter = Arc<dyn Fn() -> BTreeMap<String, i64> + Send + Sync>;

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    sessions: SessionCounter,
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>, sessions: SessionCounter) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(AppState {
            metrics,
            health,
            sessions,
        })
}

async fn serve_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.set_sessions(&(state.sessions)());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn serve_ready(State(state): State<AppState>) -> impl IntoResponse {
    let synced = state.health.synced.load(Ordering::Relaxed);
    let docker = state.health.docker_connected.load(Ordering::Relaxed);
    if synced && docker {
        (StatusCode::OK, "ready".to_string())
    } else {
        let mut why = Vec::new();
        if !synced {
            why.push("the Session cache is not synced yet");
        }
        if !docker {
            why.push("Docker is not answering");
        }
        (StatusCode::SERVICE_UNAVAILABLE, why.join("; "))
    }
}

/// Serves the router on `addr` until the future is dropped; the bound address
/// is returned first (port 0 picks one).
pub async fn bind(
    addr: SocketAddr,
    app: Router,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((local, async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_render_as_prometheus_text() {
        let m = Metrics::default();
        m.reconciles.inc();
        m.failure("DockerUnavailable");
        m.duration.observe(0.02);
        m.step("Begin");
        m.set_sessions(&BTreeMap::from([
            ("Running".to_string(), 3),
            ("Stopped".to_string(), 1),
        ]));
        let text = m.render();
        assert!(text.contains("medforge_agent_reconciles_total 1"), "{text}");
        assert!(
            text.contains(
                "medforge_agent_reconcile_failures_total{reason=\"DockerUnavailable\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("medforge_agent_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("medforge_agent_sessions{phase=\"Running\"} 3"),
            "{text}"
        );
        m.set_sessions(&BTreeMap::from([("Running".to_string(), 2)]));
        assert!(!m.render().contains("phase=\"Stopped\""));
    }

    #[tokio::test]
    async fn health_and_readiness() {
        let health = Arc::new(Health::default());
        let app = router(
            Arc::new(Metrics::default()),
            health.clone(),
            Arc::new(BTreeMap::new),
        );
        let (addr, serve) = bind("127.0.0.1:0".parse().unwrap(), app).await.unwrap();
        let server = tokio::spawn(serve);
        let get = |path: &'static str| crate::agent::testing::http_get(addr, path);
        assert!(get("/healthz").await.starts_with("HTTP/1.0 200"));
        let r = get("/readyz").await;
        assert!(r.starts_with("HTTP/1.0 503"), "{r}");
        assert!(r.contains("not synced"), "{r}");
        health.synced.store(true, Ordering::Relaxed);
        health.docker_connected.store(true, Ordering::Relaxed);
        assert!(get("/readyz").await.starts_with("HTTP/1.0 200"));
        assert!(
            get("/metrics")
                .await
                .contains("medforge_agent_reconciles_total")
        );
        server.abort();
    }
}
