//! What the agent remembers between reconciles: one small typed state per
//! concern, each behind its own lock and used only through its methods.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::ResourceExt;
use medforge_crds::{Session, SessionPhase};

use super::spec::bound_here;

/// Lists the sessions the agent knows (its watch cache).
pub type Peers = Arc<dyn Fn() -> Vec<Arc<Session>> + Send + Sync>;

/// Whether the sessions' network is known to exist. Held while it is made,
/// so concurrent starts create it once.
#[derive(Debug, Default)]
pub struct NetworkReady(tokio::sync::Mutex<bool>);

impl NetworkReady {
    /// Runs `make` unless the network is known to exist.
    pub async fn ensure<E, F: Future<Output = Result<(), E>>>(
        &self,
        make: impl FnOnce() -> F,
    ) -> Result<(), E> {
        let mut ready = self.0.lock().await;
        if !*ready {
            make().await?;
            *ready = true;
        }
        Ok(())
    }

    /// The network went missing (or may have): make it again next time.
    pub async fn forget(&self) {
        *self.0.lock().await = false;
    }
}

/// Consecutive failures per session uid, for the error backoff: the delay
/// doubles from `min` to `max`.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure; the delay before the next try.
    pub fn next(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The session was reconciled without error: start over.
    pub fn reset(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
    }
}

/// The sessions reconciled without error since the agent started.
#[derive(Debug, Default)]
pub struct Reconciled(Mutex<HashSet<String>>);

impl Reconciled {
    /// Records one; how many distinct sessions that makes.
    pub fn record(&self, uid: &str) -> usize {
        let mut seen = self.0.lock().expect("not poisoned");
        seen.insert(uid.to_string());
        seen.len()
    }
}

/// The resourceVersion of our last status write per session uid: a watch
/// cache that lags behind it is not trusted (read your writes).
#[derive(Debug, Default)]
pub struct Written(Mutex<HashMap<String, String>>);

impl Written {
    pub fn record(&self, uid: String, resource_version: String) {
        self.0
            .lock()
            .expect("not poisoned")
            .insert(uid, resource_version);
    }

    /// The version last written for the session, forgotten once asked for
    /// (once seen again, from the cache or the API, it has served).
    pub fn take(&self, uid: &str) -> Option<String> {
        self.0.lock().expect("not poisoned").remove(uid)
    }
}

/// Phases in which a session's container may run.
fn may_run(phase: SessionPhase) -> bool {
    matches!(
        phase,
        SessionPhase::Starting | SessionPhase::Running | SessionPhase::Stopping
    )
}

/// The GPUs this agent let a session start with (UUID → session uid):
/// defence in depth behind the scheduler.
#[derive(Debug, Default)]
pub struct GpuClaims(Mutex<HashMap<String, String>>);

impl GpuClaims {
    /// A GPU of `s` that another session on `node` may be running with, as
    /// (UUID, holder); `None` claims the session's GPUs for it. `peers` are
    /// the sessions the agent knows (`None`: it knows none).
    pub fn claim(
        &self,
        s: &Session,
        peers: Option<&[Arc<Session>]>,
        node: &str,
    ) -> Option<(String, String)> {
        let uid = s.uid().unwrap_or_default();
        let wanted: Vec<String> = s
            .status
            .as_ref()
            .map(|st| st.gpus.iter().map(|g| g.uuid.clone()).collect())
            .unwrap_or_default();
        let known = peers.is_some();
        let peers = peers.unwrap_or_default();
        let active = |other_uid: &str| {
            peers.iter().any(|p| {
                p.uid().as_deref() == Some(other_uid)
                    && bound_here(p, node)
                    && !p.phase().is_terminal()
            })
        };
        let mut claims = self.0.lock().expect("not poisoned");
        for uuid in &wanted {
            if let Some(holder) = claims.get(uuid)
                && *holder != uid
                && (!known || active(holder))
            {
                let name = peers
                    .iter()
                    .find(|p| p.uid().as_deref() == Some(holder.as_str()))
                    .map(|p| p.name_any())
                    .unwrap_or_else(|| holder.clone());
                return Some((uuid.clone(), name));
            }
            if let Some(p) = peers.iter().find(|p| {
                p.uid() != Some(uid.clone())
                    && bound_here(p, node)
                    && may_run(p.phase())
                    && p.status
                        .as_ref()
                        .is_some_and(|st| st.gpus.iter().any(|g| &g.uuid == uuid))
            }) {
                return Some((uuid.clone(), p.name_any()));
            }
        }
        for uuid in wanted {
            claims.insert(uuid, uid.clone());
        }
        None
    }

    /// The session no longer holds its GPUs.
    pub fn release(&self, uid: &str) {
        self.0
            .lock()
            .expect("not poisoned")
            .retain(|_, holder| holder != uid);
    }
}
