//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! kube-runtime has no leader election of its own. This follows what
//! client-go's leaderelection does: take the Lease when it is free or expired,
//! renew it well inside its duration, and stop leading the moment a renewal
//! fails, because another replica may take over once the Lease expires.
//! A renewal that does not answer (the leader cut off from the control plane)
//! counts as failed at the renew deadline, two thirds of the duration after
//! the last renewal that succeeded (measured from before it was sent), so the
//! leader stops before any other replica can see the Lease expired.
//! Every write carries the resourceVersion it was based on, so two candidates
//! can never both win the same term.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Which Lease to hold, as whom, for how long.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (host name plus a random suffix).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub duration: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            duration: Duration::from_secs(15),
        }
    }
}

/// Held leadership. Leadership is lost when `lost()` resolves; dropping the
/// guard stops renewing (and the Lease then expires).
pub struct Leadership {
    lost: watch::Receiver<bool>,
    renewer: JoinHandle<()>,
    api: Api<Lease>,
    cfg: LeaseConfig,
}

impl Leadership {
    /// Resolves when leadership was lost (a renewal failed or someone else
    /// holds the Lease).
    pub async fn lost(&mut self) {
        while !*self.lost.borrow() {
            if self.lost.changed().await.is_err() {
                return;
            }
        }
    }
}

impl Leadership {
    /// Stops renewing and hands the Lease back (holder cleared, compared on
    /// its resourceVersion), so that another replica takes over at once
    /// instead of after the Lease duration. A Lease someone else holds by
    /// now is left alone. Returns whether it was handed back.
    pub async fn release(self) -> bool {
        self.renewer.abort();
        let Ok(Some(mut lease)) = self.api.get_opt(&self.cfg.name).await else {
            return false;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return false;
        };
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return false;
        }
        spec.holder_identity = None;
        spec.renew_time = Some(now_micro());
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                tracing::info!(lease = %self.cfg.name, identity = %self.cfg.identity, "lease released");
                true
            }
            Err(e) => {
                tracing::warn!(lease = %self.cfg.name, error = %e, "could not release the lease; it expires on its own");
                false
            }
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a Lease may be taken by `identity` at `now`.
pub fn lease_is_takeable(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    renewed.0.as_second() + duration < now.as_second()
}

/// Ensures a namespace exists (an embedded control plane starts without ours).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<(), kube::Error> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// One attempt to take or renew the Lease. `Ok(true)` when we hold it now.
async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> Result<bool, kube::Error> {
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(15);
    match api.get_opt(&cfg.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if !lease_is_takeable(spec, &cfg.identity, Timestamp::now()) {
                return Ok(false);
            }
            let ours = spec.holder_identity.as_deref() == Some(cfg.identity.as_str());
            if !ours {
                spec.acquire_time = Some(now_micro());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.holder_identity = Some(cfg.identity.clone());
            }
            spec.renew_time = Some(now_micro());
            spec.lease_duration_seconds = Some(duration);
            // The resourceVersion from the read makes this a compare-and-swap.
            match api.replace(&cfg.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// How long after the last successful renewal (from before it was sent)
/// leadership ends when no renewal has succeeded since: two thirds of the
/// Lease's duration (client-go's defaults are 10 s of 15 s), which leaves a
/// third for clock skew and the request's own time before another replica
/// may take the Lease.
pub fn renew_deadline(duration: Duration) -> Duration {
    duration * 2 / 3
}

/// Waits until this replica holds the Lease, then keeps renewing it in the
/// background.
pub async fn acquire(client: Client, cfg: LeaseConfig) -> Result<Leadership, kube::Error> {
    ensure_namespace(&client, &cfg.namespace).await?;
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    // Candidates look again every few seconds whatever the Lease duration,
    // so a released Lease is taken at once (client-go retries every 2 s).
    let retry = (cfg.duration / 5).min(Duration::from_secs(2));
    let acquired_at = loop {
        let sent = Instant::now();
        match try_acquire(&api, &cfg).await {
            Ok(true) => break sent,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "could not read or take the lease; trying again")
            }
        }
        tokio::time::sleep(retry).await;
    };
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
    let (tx, rx) = watch::channel(false);
    let (renew_api, renew_cfg) = (api.clone(), cfg.clone());
    let renewer = tokio::spawn(async move {
        let (api, cfg) = (renew_api, renew_cfg);
        let period = cfg.duration / 3;
        let deadline = renew_deadline(cfg.duration);
        let mut renewed_at = acquired_at;
        loop {
            tokio::time::sleep(period).await;
            let sent = Instant::now();
            let left = (renewed_at + deadline).saturating_duration_since(sent);
            let Ok(renewal) = tokio::time::timeout(left, try_acquire(&api, &cfg)).await else {
                tracing::warn!(
                    lease = %cfg.name,
                    deadline_ms = deadline.as_millis() as u64,
                    "no renewal of the lease within its renew deadline; stepping down"
                );
                let _ = tx.send(true);
                return;
            };
            match renewal {
                Ok(true) => renewed_at = sent,
                Ok(false) => {
                    tracing::warn!(lease = %cfg.name, "another replica holds the lease; stepping down");
                    let _ = tx.send(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(lease = %cfg.name, error = %e, "could not renew the lease; stepping down");
                    let _ = tx.send(true);
                    return;
                }
            }
        }
    });
    Ok(Leadership {
        lost: rx,
        renewer,
        api,
        cfg,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(duration),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_takeable_when_free_ours_or_expired() {
        let now = Timestamp::from_second(1000).unwrap();
        assert!(lease_is_takeable(&LeaseSpec::default(), "me", now));
        assert!(lease_is_takeable(&spec("me", 999, 15), "me", now));
        assert!(!lease_is_takeable(&spec("other", 990, 15), "me", now));
        assert!(lease_is_takeable(&spec("other", 980, 15), "me", now));
        assert!(lease_is_takeable(&spec("", 999, 15), "me", now));
    }
}
