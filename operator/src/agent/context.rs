//! What the reconciler works with: the configuration, the runtimes, the
//! metrics and Event recorder, and the agent's small typed states
//! ([`super::state`]); and [`write_status`], how every layer writes a
//! session's status.

use std::sync::Arc;

use crate::isolation::{IsolationGate, IsolationStatus};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::{Resource, ResourceExt};
use medforge_crds::{EventAction, Session, SessionReason, SessionStatus};

use super::config::AgentConfig;
use super::error::Error;
use super::metrics::Metrics;
use super::plan::Policy;
use super::pulls::Pulls;
use super::runtime::Cluster;
use super::state::{Backoff, GpuClaims, NetworkReady, Peers, Reconciled, Written};

/// What the reconciler works with.
pub struct Context<C, W, K> {
    pub config: AgentConfig,
    pub containers: C,
    pub workspaces: W,
    pub cluster: K,
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events (none in unit tests).
    pub recorder: Option<Recorder>,
    /// Whether the sessions' network is known to exist.
    pub(super) network: NetworkReady,
    /// Consecutive failures per session, for the error backoff.
    pub(super) backoff: Backoff,
    /// Sessions reconciled without error since the agent started.
    pub(super) reconciled: Reconciled,
    /// The GPUs this agent let a session start with.
    pub(super) gpus: GpuClaims,
    /// Our last status write per session (read your writes).
    pub(super) written: Written,
    /// This node's other sessions, for the GPU check (the watch cache).
    peers: Option<Peers>,
    /// Whether the sessions' network is isolated: no container starts
    /// until it is.
    pub(super) isolation: IsolationGate,
    /// The node's image pulls.
    pub(super) pulls: Pulls,
}

impl<C, W, K> Context<C, W, K> {
    pub fn new(
        config: AgentConfig,
        containers: C,
        workspaces: W,
        cluster: K,
        metrics: Arc<Metrics>,
        recorder: Option<Recorder>,
    ) -> Self {
        let backoff = Backoff::new(config.error_backoff_min, config.error_backoff_max);
        let pulls = Pulls::new(config.pulls.clone());
        Context {
            config,
            containers,
            workspaces,
            cluster,
            metrics,
            recorder,
            network: NetworkReady::default(),
            backoff,
            reconciled: Reconciled::default(),
            gpus: GpuClaims::default(),
            written: Written::default(),
            peers: None,
            isolation: IsolationGate::new(IsolationStatus::Disabled),
            pulls,
        }
    }

    /// Sets the gate a container start waits on (disabled by default).
    pub fn with_isolation(mut self, gate: IsolationGate) -> Self {
        self.isolation = gate;
        self
    }

    /// Sets where the GPU check looks for this node's other sessions.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// A GPU of this session that another session on this node may be
    /// running with, as (UUID, holder). `None` claims the session's GPUs.
    pub(super) fn gpu_conflict(&self, s: &Session) -> Option<(String, String)> {
        let peers = self.peers.as_ref().map(|p| p());
        self.gpus.claim(s, peers.as_deref(), &self.config.node_name)
    }

    pub(super) fn policy(&self) -> Policy {
        Policy {
            container_owner: (self.config.container_uid, self.config.container_gid),
            start_timeout: self.config.start_timeout,
            resync: self.config.resync,
            probe_interval: self.config.probe_interval,
            activity_lead: self.config.activity_lead,
        }
    }

    /// Publishes an Event about the session, off the reconcile's path.
    pub(super) fn publish(
        &self,
        s: &Session,
        type_: EventType,
        reason: SessionReason,
        action: EventAction,
        note: String,
    ) {
        publish(
            self.recorder.as_ref(),
            s.object_ref(&()),
            type_,
            reason.as_str(),
            action,
            note,
        );
    }

    /// The session was reconciled without error.
    pub(super) fn succeeded(&self, uid: &str) {
        self.backoff.reset(uid);
        let count = self.reconciled.record(uid);
        if let Some(observer) = &self.config.observer {
            observer.send_if_modified(|st| {
                let changed = st.sessions_reconciled != count;
                st.sessions_reconciled = count;
                changed
            });
        }
    }
}

/// Writes the session's status; the session as stored.
pub(super) async fn write_status<C, W, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    status: SessionStatus,
) -> Result<Session, Error> {
    let mut updated = s.clone();
    updated.status = Some(status);
    let written = ctx.cluster.replace_status(&updated).await?;
    if let (Some(uid), Some(rv)) = (written.uid(), written.resource_version()) {
        ctx.written.record(uid, rv);
    }
    Ok(written)
}

/// Publishes an Event about `reference` off the caller's path (a failure is
/// logged): Events are for people, never worth failing a reconcile.
pub(super) fn publish(
    recorder: Option<&Recorder>,
    reference: ObjectReference,
    type_: EventType,
    reason: &str,
    action: EventAction,
    note: String,
) {
    let Some(recorder) = recorder.cloned() else {
        return;
    };
    let event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "could not publish an event");
        }
    });
}
