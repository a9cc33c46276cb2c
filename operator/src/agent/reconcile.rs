//! The reconciler: read the world, decide the next step ([`plan::decide`]),
//! apply it, write status; again until there is nothing to do now.
//!
//! Each pass re-reads the container and dataset and takes exactly one step,
//! so an agent killed anywhere resumes from what it finds. Cleanup on delete
//! runs through kube-runtime's finalizer helper.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use medforge_crds::{
    EventAction, Session, SessionCondition, SessionPhase, SessionReason, SessionStatus,
};

use super::AgentConfig;
use super::metrics::Metrics;
use super::plan::{self, Policy, Step, StepKind, StopCause, World};
use super::runtime::{
    Cluster, ContainerError, ContainerObs, Containers, Destroyed, KubeCluster, WorkspaceError,
    Workspaces, labels,
};
use super::spec::{self, container_name, session_dataset};

pub use medforge_crds::keys::{AGENT_FINALIZER as FINALIZER, WORKSPACE_ON_DELETE_ANNOTATION};

/// The longest one readiness probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// Steps one reconcile may take before yielding to other sessions.
const MAX_STEPS_PER_RECONCILE: usize = 32;

/// Why a reconcile failed. Failures of the session itself (bad input, a dead
/// container) are not errors: they are written to its status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The category used as metric label and Event reason.
    pub fn category(&self) -> SessionReason {
        match self {
            Error::Container(ContainerError::Unavailable { .. }) => {
                SessionReason::DockerUnavailable
            }
            Error::Container(_) => SessionReason::DockerError,
            Error::Workspace(WorkspaceError::Unavailable { .. }) => SessionReason::ZfsUnavailable,
            Error::Workspace(_) => SessionReason::ZfsError,
            Error::Kube(_) => SessionReason::KubernetesApiError,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => SessionReason::FinalizerError,
            },
        }
    }
}

/// The whole cause chain on one line, cut to Kubernetes' 1 KiB note limit.
pub fn cause_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    if out.len() > 1024 {
        let mut cut = 1021;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// What the reconciler works with.
pub struct Context<C, W, K> {
    pub config: AgentConfig,
    pub containers: C,
    pub workspaces: W,
    pub cluster: K,
    pub metrics: Arc<Metrics>,
    /// Publishes Kubernetes Events (none in unit tests).
    pub recorder: Option<Recorder>,
    /// Whether the network is known to exist; held while it is made, so
    /// concurrent starts create it once.
    network_ready: tokio::sync::Mutex<bool>,
    /// Consecutive failures per session uid, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Sessions reconciled without error since the agent started.
    reconciled: Mutex<HashSet<String>>,
    /// The GPUs this agent let a session start with (UUID → session uid).
    gpu_claims: Mutex<HashMap<String, String>>,
    /// This node's other sessions, for the GPU check (the watch cache).
    peers: Option<Peers>,
    /// The resourceVersion of our last status write per session uid: a
    /// watch cache that lags behind it is not trusted (read your writes).
    written: Mutex<HashMap<String, String>>,
}

/// Lists the sessions the agent knows (its watch cache).
pub type Peers = Arc<dyn Fn() -> Vec<Arc<Session>> + Send + Sync>;

/// Phases in which a session's container may run.
fn may_run(phase: SessionPhase) -> bool {
    matches!(
        phase,
        SessionPhase::Starting | SessionPhase::Running | SessionPhase::Stopping
    )
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
        Context {
            config,
            containers,
            workspaces,
            cluster,
            metrics,
            recorder,
            network_ready: tokio::sync::Mutex::new(false),
            failures: Mutex::new(HashMap::new()),
            reconciled: Mutex::new(HashSet::new()),
            gpu_claims: Mutex::new(HashMap::new()),
            peers: None,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Sets where the GPU check looks for this node's other sessions.
    pub fn with_peers(mut self, peers: Peers) -> Self {
        self.peers = Some(peers);
        self
    }

    /// Defence in depth behind the scheduler: a GPU of this session that
    /// another session on this node may be running with. `None` claims the
    /// session's GPUs for it.
    fn gpu_conflict(&self, s: &Session) -> Option<(String, String)> {
        let uid = s.uid().unwrap_or_default();
        let wanted: Vec<String> = s
            .status
            .as_ref()
            .map(|st| st.gpus.iter().map(|g| g.uuid.clone()).collect())
            .unwrap_or_default();
        let peers = self.peers.as_ref().map(|p| p()).unwrap_or_default();
        let node = &self.config.node_name;
        let active = |other_uid: &str| {
            peers.iter().any(|p| {
                p.uid().as_deref() == Some(other_uid)
                    && bound_here(p, node)
                    && !p.phase().is_terminal()
            })
        };
        let mut claims = self.gpu_claims.lock().expect("not poisoned");
        for uuid in &wanted {
            if let Some(holder) = claims.get(uuid)
                && *holder != uid
                && (self.peers.is_none() || active(holder))
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
    fn release_gpus(&self, uid: &str) {
        self.gpu_claims
            .lock()
            .expect("not poisoned")
            .retain(|_, holder| holder != uid);
    }

    fn policy(&self) -> Policy {
        Policy {
            container_owner: (self.config.container_uid, self.config.container_gid),
            start_timeout: self.config.start_timeout,
            resync: self.config.resync,
            probe_interval: self.config.probe_interval,
        }
    }

    /// Publishes an Event about the session, off the reconcile's path.
    fn publish(
        &self,
        s: &Session,
        type_: EventType,
        reason: SessionReason,
        action: EventAction,
        note: String,
    ) {
        let Some(recorder) = self.recorder.clone() else {
            return;
        };
        let reference = s.object_ref(&());
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

    fn succeeded(&self, uid: &str) {
        self.failures.lock().expect("not poisoned").remove(uid);
        let count = {
            let mut seen = self.reconciled.lock().expect("not poisoned");
            seen.insert(uid.to_string());
            seen.len()
        };
        if let Some(observer) = &self.config.observer {
            observer.send_if_modified(|st| {
                let changed = st.sessions_reconciled != count;
                st.sessions_reconciled = count;
                changed
            });
        }
    }

    /// The delay before the next try after a failure: doubling from the
    /// minimum to the maximum backoff.
    fn next_backoff(&self, uid: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(16));
        self.config
            .error_backoff_min
            .saturating_mul(factor)
            .min(self.config.error_backoff_max)
    }
}

/// Whether this agent is responsible for the session.
pub fn bound_here(s: &Session, node: &str) -> bool {
    s.status.as_ref().and_then(|st| st.node_name.as_deref()) == Some(node)
}

/// The controller's reconcile function.
pub async fn reconcile<C: Containers, W: Workspaces>(
    s: Arc<Session>,
    ctx: Arc<Context<C, W, KubeCluster>>,
) -> Result<Action, Error> {
    if !bound_here(&s, &ctx.config.node_name) {
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = s.namespace().unwrap_or_default();
    let api: Api<Session> = Api::namespaced(ctx.cluster.client.clone(), &ns);
    let uid = s.uid().unwrap_or_default();
    let result = finalizer(&api, FINALIZER, s, |event| async {
        match event {
            Finalizer::Apply(s) => drive(&ctx, (*s).clone()).await,
            Finalizer::Cleanup(s) => cleanup(&ctx, &s).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.succeeded(&uid);
    }
    result
}

/// The controller's error policy: count, report as a Warning Event (reason
/// = category, note = the cause chain), and back off per session.
pub fn error_policy<C: Containers, W: Workspaces>(
    s: Arc<Session>,
    err: &Error,
    ctx: Arc<Context<C, W, KubeCluster>>,
) -> Action {
    let category = err.category();
    ctx.metrics.failure(category.as_str());
    let note = cause_chain(err);
    let delay = ctx.next_backoff(&s.uid().unwrap_or_default());
    tracing::warn!(
        session = %s.name_any(),
        namespace = %s.namespace().unwrap_or_default(),
        uid = %s.uid().unwrap_or_default(),
        category = %category,
        error = %note,
        retry_in = ?delay,
        "reconcile failed"
    );
    ctx.publish(
        &s,
        EventType::Warning,
        category,
        EventAction::Reconcile,
        note,
    );
    Action::requeue(delay)
}

/// What applying a step leads to.
enum Next {
    /// Look again now, with the session as the step left it (when it wrote it).
    Again(Option<Box<Session>>),
    /// Look again after this long.
    Wait(Duration),
}

/// Runs passes for a live session until nothing is left to do now.
pub async fn drive<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: Session,
) -> Result<Action, Error> {
    let policy = ctx.policy();
    let Some(fresh) = latest(ctx, s).await? else {
        return Ok(Action::await_change());
    };
    if fresh.meta().deletion_timestamp.is_some() {
        // Deleted since the cache saw it: the next reconcile cleans up.
        return Ok(Action::requeue(Duration::ZERO));
    }
    let mut s = fresh;
    let mut previous: Option<(World, Touched)> = None;
    for _ in 0..MAX_STEPS_PER_RECONCILE {
        let world = match observe(ctx, &s, previous.take()).await {
            Ok(w) => w,
            Err(e) => return Err(report_runtime(ctx, &s, e).await),
        };
        let now = Timestamp::now();
        let step = plan::decide(&s, &world, &policy, now);
        let Some(kind) = step.kind() else {
            return Ok(match step {
                Step::Wait(Some(d)) => Action::requeue(d),
                _ => Action::await_change(),
            });
        };
        tracing::debug!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), step = kind.as_str(), "step");
        if let Some(hook) = &ctx.config.step_hook {
            hook(&s, kind).await;
        }
        ctx.metrics.step(kind.as_str());
        match apply(ctx, &s, &world, step, now).await {
            Ok(Next::Again(updated)) => {
                if let Some(updated) = updated {
                    s = *updated;
                }
                previous = Some((world, Touched::by(kind)));
            }
            Ok(Next::Wait(d)) => return Ok(Action::requeue(d)),
            Err(Error::Kube(kube::Error::Api(status))) if status.code == 409 => {
                // Someone else wrote the session since we read it: read it again.
                match ctx
                    .cluster
                    .get_session(&s.namespace().unwrap_or_default(), &s.name_any())
                    .await?
                {
                    Some(fresh) if fresh.uid() == s.uid() => {
                        if fresh.meta().deletion_timestamp.is_some() {
                            return Ok(Action::requeue(Duration::ZERO));
                        }
                        s = fresh;
                    }
                    _ => return Ok(Action::await_change()),
                }
            }
            Err(e) => return Err(report_runtime(ctx, &s, e).await),
        }
    }
    Ok(Action::requeue(Duration::ZERO))
}

/// Docker or ZFS not answering shows on the session as an `Unknown`
/// condition (written once), then the error goes to the error policy.
async fn report_runtime<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    e: Error,
) -> Error {
    let (condition, why) = match &e {
        Error::Container(ContainerError::Unavailable { .. }) => (
            SessionCondition::ContainerReady,
            SessionReason::DockerUnavailable,
        ),
        Error::Workspace(WorkspaceError::Unavailable { .. }) => (
            SessionCondition::WorkspaceReady,
            SessionReason::ZfsUnavailable,
        ),
        _ => return e,
    };
    if let Some(st) =
        plan::status_runtime_unavailable(s, condition, why, &e.to_string(), Timestamp::now())
        && let Err(write) = write_status(ctx, s, st).await
    {
        tracing::debug!(session = %s.name_any(), error = %write, "could not record the runtime outage");
    }
    e
}

/// What a step may have changed in the world, so the next pass of the same
/// reconcile reads only that again.
#[derive(Debug, Clone, Copy)]
struct Touched {
    container: bool,
    dataset: bool,
}

impl Touched {
    const ALL: Touched = Touched {
        container: true,
        dataset: true,
    };

    fn by(kind: StepKind) -> Touched {
        let (container, dataset) = match kind {
            StepKind::Begin | StepKind::AwaitPort | StepKind::BeginStop | StepKind::Finish => {
                (false, false)
            }
            StepKind::CreateDataset
            | StepKind::MountDataset
            | StepKind::ChownWorkspace
            | StepKind::Snapshot => (false, true),
            StepKind::CreateContainer
            | StepKind::StartContainer
            | StepKind::StopContainer
            | StepKind::StopStray => (true, false),
            StepKind::Fail => (true, true),
        };
        Touched { container, dataset }
    }
}

/// Reads what this pass needs: the container always, the dataset in the
/// phases that create or snapshot it. Each reconcile starts from a full
/// read; later passes of it read again what the last step touched.
async fn observe<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    previous: Option<(World, Touched)>,
) -> Result<World, Error> {
    let (prev, touched) = previous.unwrap_or((World::default(), Touched::ALL));
    let mut world = World::default();
    let st = s.status.clone().unwrap_or_default();
    let phase = s.phase();
    if plan::needs_dataset(s)
        && let Some(dataset) = session_dataset(&ctx.config, s)
    {
        world.dataset = if prev.dataset_observed && !touched.dataset {
            prev.dataset
        } else {
            ctx.workspaces.inspect(&dataset).await?
        };
        world.dataset_observed = true;
        if let Some(planned) = plan::planned_snapshot(s)
            && let Some(d) = &world.dataset
        {
            world.planned_snapshot_exists = Some(d.snapshots.contains(&planned));
        }
    }
    let Some(slug) = st.slug.as_deref() else {
        return Ok(world);
    };
    if !touched.container {
        world.container = prev.container;
        return Ok(world);
    }
    let name = container_name(&ctx.config.container_prefix, slug);
    world.container = ctx.containers.inspect(&name).await?;
    let about_to_create = phase == SessionPhase::Starting
        && world.dataset.as_ref().is_some_and(|d| {
            d.mounted && d.owner == Some((ctx.config.container_uid, ctx.config.container_gid))
        });
    let should_have_one = matches!(phase, SessionPhase::Running | SessionPhase::Stopping);
    if world.container.is_none()
        && (about_to_create || should_have_one)
        && let Some(uid) = s.uid()
    {
        // Never a second container: look for one of this session under
        // another name (created with another prefix) before creating.
        let found = ctx
            .containers
            .list(&[(labels::SESSION_UID.to_string(), uid)])
            .await?;
        if let Some(other) = found.first() {
            world.container = ctx.containers.inspect(&other.id).await?;
        }
    }
    Ok(world)
}

async fn write_status<C, W, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    status: SessionStatus,
) -> Result<Session, Error> {
    let mut updated = s.clone();
    updated.status = Some(status);
    let written = ctx.cluster.replace_status(&updated).await?;
    if let (Some(uid), Some(rv)) = (written.uid(), written.resource_version()) {
        ctx.written.lock().expect("not poisoned").insert(uid, rv);
    }
    Ok(written)
}

/// The session as the API has it now when the watch cache has not caught up
/// with our own last write yet (deciding on the older copy would redo a step).
async fn latest<C, W, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: Session,
) -> Result<Option<Session>, Error> {
    let Some(uid) = s.uid() else {
        return Ok(Some(s));
    };
    // Once seen again (from the cache or the API) the entry has served.
    let ours = ctx.written.lock().expect("not poisoned").remove(&uid);
    if ours.is_none() || ours == s.resource_version() {
        return Ok(Some(s));
    }
    match ctx
        .cluster
        .get_session(&s.namespace().unwrap_or_default(), &s.name_any())
        .await?
    {
        Some(fresh) if fresh.uid() == Some(uid) => Ok(Some(fresh)),
        _ => Ok(None),
    }
}

async fn apply<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    step: Step,
    now: Timestamp,
) -> Result<Next, Error> {
    let cfg = &ctx.config;
    let dataset = session_dataset(cfg, s).unwrap_or_default();
    match step {
        Step::Wait(_) => unreachable!("waits are not applied"),
        Step::Begin => begin(ctx, s, w, &dataset, now).await,
        Step::CreateDataset => create_dataset(ctx, s, w, &dataset, now).await,
        Step::MountDataset => {
            ctx.workspaces.mount(&dataset).await?;
            Ok(Next::Again(None))
        }
        Step::ChownWorkspace => {
            let Some(path) = w.dataset.as_ref().and_then(|d| d.mountpoint.clone()) else {
                return fail(
                    ctx,
                    s,
                    w,
                    SessionReason::WorkspaceFailed,
                    &format!("dataset {dataset} has no mountpoint"),
                    now,
                )
                .await;
            };
            ctx.workspaces
                .chown(&path, cfg.container_uid, cfg.container_gid)
                .await?;
            Ok(Next::Again(None))
        }
        Step::CreateContainer => create_container(ctx, s, w, now).await,
        Step::StartContainer => {
            let c = w.container.as_ref().expect("decided on a container");
            match ctx.containers.start(&c.id).await {
                Ok(()) | Err(ContainerError::NotFound { .. }) => Ok(Next::Again(None)),
                Err(ContainerError::NetworkMissing { .. }) => {
                    // Its network was removed since it was created: make
                    // the container again (it never ran).
                    *ctx.network_ready.lock().await = false;
                    ctx.containers.remove(&c.id).await?;
                    Ok(Next::Again(None))
                }
                Err(ContainerError::Rejected { message, .. }) => {
                    fail(
                        ctx,
                        s,
                        w,
                        SessionReason::ContainerFailed,
                        &format!("Docker could not start container {}: {message}", c.name),
                        now,
                    )
                    .await
                }
                Err(e) => Err(e.into()),
            }
        }
        Step::AwaitPort { addr } => await_port(ctx, s, w, addr, now).await,
        Step::BeginStop(cause) => {
            let updated = write_status(ctx, s, plan::status_stopping(s, &cause, now)).await?;
            let failed = StopCause::final_phase(cause.reason) == SessionPhase::Failed;
            tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), reason = %cause.reason, message = %cause.message, "stopping");
            ctx.publish(
                s,
                if failed {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                cause.reason,
                EventAction::Stop,
                cause.message.clone(),
            );
            Ok(Next::Again(Some(Box::new(updated))))
        }
        Step::StopContainer | Step::StopStray => {
            let c = w.container.as_ref().expect("decided on a container");
            ctx.containers.stop(&c.id, cfg.stop_timeout).await?;
            Ok(Next::Again(None))
        }
        Step::Snapshot { name } => {
            match ctx.workspaces.snapshot(&format!("{dataset}@{name}")).await {
                Ok(()) | Err(WorkspaceError::NotFound { .. }) => Ok(Next::Again(None)),
                Err(e) => Err(e.into()),
            }
        }
        Step::Finish => {
            let st = plan::status_finished(s, w, now);
            let phase = st.phase;
            let updated = write_status(ctx, s, st).await?;
            ctx.release_gpus(&s.uid().unwrap_or_default());
            tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), ?phase, "finished");
            Ok(Next::Again(Some(Box::new(updated))))
        }
        Step::Fail { reason, message } => fail(ctx, s, w, reason, &message, now).await,
    }
}

/// Checks the inputs before anything is made, then writes `Starting`.
async fn begin<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    dataset: &str,
    now: Timestamp,
) -> Result<Next, Error> {
    let cfg = &ctx.config;
    let Some(pack) = ctx.cluster.get_pack(&s.spec.pack).await? else {
        let msg = format!(
            "pack {:?} does not exist: create the Pack, or give the session an existing one",
            s.spec.pack
        );
        return fail(ctx, s, w, SessionReason::PackNotFound, &msg, now).await;
    };
    if let Err(e) = spec::validate(cfg, s, &pack) {
        return fail(ctx, s, w, SessionReason::InvalidSpec, &e.0, now).await;
    }
    if !ctx.containers.image_present(&pack.spec.image).await? {
        let msg = format!(
            "image {} of pack {:?} is not present on node {}; the node agent never pulls images: \
             load it on the node (docker load, or docker pull by digest) and create the session again",
            pack.spec.image, s.spec.pack, cfg.node_name
        );
        return fail(ctx, s, w, SessionReason::ImageNotPresent, &msg, now).await;
    }
    if let Some(src) = spec::restore_from(s)
        && !ctx.workspaces.snapshot_exists(src).await?
    {
        let msg = format!("workspace.restoreFrom: snapshot {src} does not exist");
        return fail(ctx, s, w, SessionReason::SnapshotNotFound, &msg, now).await;
    }
    if let Some((uuid, holder)) = ctx.gpu_conflict(s) {
        let msg = format!(
            "GPU {uuid} is in use by session {holder} on this node; waiting until it is free"
        );
        tracing::error!(session = %s.name_any(), %uuid, %holder, "a GPU bound to two sessions");
        if let Some(st) = plan::status_gpu_in_use(s, &msg, now) {
            write_status(ctx, s, st).await?;
            ctx.publish(
                s,
                EventType::Warning,
                SessionReason::GpuInUse,
                EventAction::Start,
                msg,
            );
        }
        return Ok(Next::Wait(Duration::from_secs(2)));
    }
    let updated = write_status(ctx, s, plan::status_starting(s, dataset, now)).await?;
    Ok(Next::Again(Some(Box::new(updated))))
}

async fn create_dataset<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    dataset: &str,
    now: Timestamp,
) -> Result<Next, Error> {
    let quota = match spec::quota_bytes(s) {
        Ok(q) => q,
        Err(e) => return fail(ctx, s, w, SessionReason::InvalidSpec, &e.0, now).await,
    };
    let mut properties = vec![
        (
            "medforge:session-uid".to_string(),
            s.uid().unwrap_or_default(),
        ),
        (
            "medforge:session".to_string(),
            format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()),
        ),
    ];
    if let Some(q) = quota {
        properties.push(("quota".to_string(), q.to_string()));
    }
    let made = match spec::restore_from(s) {
        Some(src) => ctx.workspaces.clone_from(src, dataset, &properties).await,
        None => ctx.workspaces.create(dataset, &properties).await,
    };
    match made {
        Ok(()) => Ok(Next::Again(None)),
        // Made by an earlier, interrupted pass: the next pass sees it.
        Err(WorkspaceError::Failed { stderr, .. }) if stderr.contains("already exists") => {
            Ok(Next::Again(None))
        }
        // Made, but not mounted (zfs-fuse hiccup): the next pass mounts it,
        // or this is tried again.
        Err(e @ WorkspaceError::Failed { .. }) if e.to_string().contains("cannot mount") => {
            Err(e.into())
        }
        Err(WorkspaceError::NotFound { what }) => {
            let msg = format!("workspace.restoreFrom: {what} does not exist");
            fail(ctx, s, w, SessionReason::SnapshotNotFound, &msg, now).await
        }
        Err(WorkspaceError::Failed { stderr, .. }) => {
            let quota_note = quota
                .map(|q| format!(" with quota {q} bytes"))
                .unwrap_or_default();
            let msg = format!("ZFS could not create the workspace {dataset}{quota_note}: {stderr}");
            fail(ctx, s, w, SessionReason::WorkspaceFailed, &msg, now).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn create_container<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    now: Timestamp,
) -> Result<Next, Error> {
    let cfg = &ctx.config;
    let Some(pack) = ctx.cluster.get_pack(&s.spec.pack).await? else {
        let msg = format!("pack {:?} does not exist any more", s.spec.pack);
        return fail(ctx, s, w, SessionReason::PackNotFound, &msg, now).await;
    };
    let mountpoint = w
        .dataset
        .as_ref()
        .and_then(|d| d.mountpoint.clone())
        .unwrap_or_default();
    let spec = match spec::container_spec(cfg, s, &pack, &mountpoint) {
        Ok(spec) => spec,
        Err(e) => return fail(ctx, s, w, SessionReason::InvalidSpec, &e.0, now).await,
    };
    {
        let mut ready = ctx.network_ready.lock().await;
        if !*ready {
            ctx.containers.ensure_network(&cfg.network).await?;
            *ready = true;
        }
    }
    match ctx.containers.create(&spec).await {
        // A taken name is looked at by the next pass: ours is adopted,
        // another session's is refused.
        Ok(_) | Err(ContainerError::Conflict { .. }) => Ok(Next::Again(None)),
        Err(ContainerError::NetworkMissing { .. }) => {
            *ctx.network_ready.lock().await = false;
            Ok(Next::Again(None))
        }
        Err(ContainerError::NotFound { what }) => {
            let msg = format!(
                "{what}: the image of pack {:?} is not present on node {}; the node agent never pulls images",
                s.spec.pack, cfg.node_name
            );
            fail(ctx, s, w, SessionReason::ImageNotPresent, &msg, now).await
        }
        Err(ContainerError::Rejected { message, .. }) => {
            let msg = format!(
                "Docker refused to create container {}: {message}",
                spec.name
            );
            fail(ctx, s, w, SessionReason::ContainerFailed, &msg, now).await
        }
        Err(e) => {
            // A network removed under us is created again on the next try.
            *ctx.network_ready.lock().await = false;
            Err(e.into())
        }
    }
}

/// Dials the workload for a short burst; `Running` as soon as it answers,
/// otherwise looks again after the probe interval.
async fn await_port<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    addr: SocketAddr,
    now: Timestamp,
) -> Result<Next, Error> {
    let cfg = &ctx.config;
    let c: &ContainerObs = w.container.as_ref().expect("decided on a container");
    let deadline = Instant::now() + cfg.probe_burst;
    loop {
        // A workload on the local bridge answers (or refuses) in
        // milliseconds; a dying container's address does not answer at all.
        let attempt = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(50), PROBE_TIMEOUT);
        match cfg.dialer.dial(addr, attempt).await {
            Ok(()) => {
                let updated = write_status(ctx, s, plan::status_running(s, c, addr, now)).await?;
                tracing::info!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), upstream = %addr, "running");
                return Ok(Next::Again(Some(Box::new(updated))));
            }
            Err(e) if Instant::now() >= deadline => {
                tracing::debug!(session = %s.name_any(), %addr, error = %e, "workload not answering yet");
                let waiting = s
                    .condition(SessionCondition::Ready)
                    .is_some_and(|c| c.reason == SessionReason::WaitingForPort);
                if !waiting && s.phase() == SessionPhase::Starting {
                    write_status(ctx, s, plan::status_waiting_for_port(s, addr, now)).await?;
                }
                return Ok(Next::Wait(cfg.probe_interval));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Fails the session at once. A container that never ran is removed, so a
/// refused start leaves nothing half-made behind.
async fn fail<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
    w: &World,
    why: SessionReason,
    message: &str,
    now: Timestamp,
) -> Result<Next, Error> {
    if let Some(c) = w.container.as_ref()
        && !c.ever_started()
        && c.session_uid() == s.uid().as_deref()
    {
        ctx.containers.remove(&c.id).await?;
    }
    let updated = write_status(ctx, s, plan::status_failed(s, why, message, now)).await?;
    ctx.release_gpus(&s.uid().unwrap_or_default());
    tracing::warn!(session = %s.name_any(), uid = %s.uid().unwrap_or_default(), reason = %why, %message, "failed");
    ctx.publish(
        s,
        EventType::Warning,
        why,
        EventAction::Start,
        message.to_string(),
    );
    Ok(Next::Again(Some(Box::new(updated))))
}

/// Whether the session's dataset goes with it.
pub fn destroys_workspace(config: &AgentConfig, s: &Session) -> bool {
    match s
        .annotations()
        .get(WORKSPACE_ON_DELETE_ANNOTATION)
        .map(String::as_str)
    {
        Some("destroy") => true,
        Some("keep") => false,
        _ => config.workspace_on_delete == super::WorkspaceOnDelete::Destroy,
    }
}

/// Finalizer cleanup: the session's containers go (whatever their name), the
/// dataset per policy. Things already gone are fine.
pub async fn cleanup<C: Containers, W: Workspaces, K: Cluster>(
    ctx: &Context<C, W, K>,
    s: &Session,
) -> Result<Action, Error> {
    let uid = s.uid().unwrap_or_default();
    let found = ctx
        .containers
        .list(&[(labels::SESSION_UID.to_string(), uid.clone())])
        .await?;
    for c in &found {
        ctx.containers.remove(&c.id).await?;
    }
    ctx.release_gpus(&uid);
    ctx.written.lock().expect("not poisoned").remove(&uid);
    let mut note = format!("removed {} container(s)", found.len());
    if let Some(dataset) = session_dataset(&ctx.config, s) {
        if destroys_workspace(&ctx.config, s) {
            match ctx.workspaces.destroy(&dataset).await? {
                Destroyed::Destroyed => note.push_str(&format!("; destroyed dataset {dataset}")),
                Destroyed::AlreadyGone => note.push_str(&format!("; dataset {dataset} was gone")),
                Destroyed::PromotedClones(clones) => note.push_str(&format!(
                    "; destroyed dataset {dataset} after promoting its clones {}",
                    clones.join(", ")
                )),
            }
        } else {
            note.push_str(&format!("; kept dataset {dataset}"));
        }
    }
    tracing::info!(session = %s.name_any(), %uid, %note, "cleaned up");
    ctx.publish(
        s,
        EventType::Normal,
        SessionReason::CleanedUp,
        EventAction::Delete,
        note,
    );
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::FutureExt;
    use medforge_crds::conditions;
    use medforge_crds::{DesiredState, WorkspaceSpec};

    use super::*;
    use crate::agent::fixtures::{self, FakeCluster, FakeContainers, FakeWorkspaces, IMAGE};

    type Ctx = Context<FakeContainers, FakeWorkspaces, FakeCluster>;

    fn ctx_with(
        config: AgentConfig,
        docker: &FakeContainers,
        zfs: &FakeWorkspaces,
        cluster: &FakeCluster,
    ) -> Ctx {
        Context::new(
            config,
            docker.clone(),
            zfs.clone(),
            cluster.clone(),
            Arc::new(Metrics::default()),
            None,
        )
    }

    struct World {
        docker: FakeContainers,
        zfs: FakeWorkspaces,
        cluster: FakeCluster,
    }

    impl World {
        fn new() -> World {
            World {
                docker: FakeContainers::with_image(IMAGE),
                zfs: FakeWorkspaces::default(),
                cluster: FakeCluster::with_pack(fixtures::pack("default")),
            }
        }
        fn ctx(&self) -> Ctx {
            ctx_with(fixtures::config(), &self.docker, &self.zfs, &self.cluster)
        }
        async fn drive(&self, name: &str) -> Result<Action, Error> {
            drive(&self.ctx(), self.cluster.session(name)).await
        }
        fn phase(&self, name: &str) -> SessionPhase {
            self.cluster.session(name).phase()
        }
    }

    #[tokio::test]
    async fn a_bound_session_runs_and_stops() {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("s1", 2));
        w.drive("s1").await.unwrap();
        let s = w.cluster.session("s1");
        let st = s.status.clone().unwrap();
        assert_eq!(s.phase(), SessionPhase::Running);
        assert!(conditions::is_true(&st.conditions, SessionCondition::Ready));
        assert!(conditions::is_true(
            &st.conditions,
            SessionCondition::WorkspaceReady
        ));
        assert_eq!(st.upstream.as_deref(), Some("10.0.0.3:8080"));
        assert_eq!(st.gpus.len(), 2);
        let dataset = "pool/mf/alice/uid-s1";
        assert_eq!(w.zfs.datasets(), vec![dataset]);
        assert_eq!(
            w.zfs.property(dataset, "medforge:session-uid").as_deref(),
            Some("uid-s1")
        );
        let containers = w.docker.of_session("uid-s1");
        assert_eq!(containers.len(), 1);
        let spec = w.docker.spec_of(&containers[0].id).unwrap();
        assert_eq!(
            spec.workspace,
            std::path::Path::new("/fake/pool/mf/alice/uid-s1")
        );
        // Starting, Running: two writes for a start.
        assert_eq!(w.cluster.status_writes(), 2);

        // A second reconcile of a running session changes nothing.
        let action = w.drive("s1").await.unwrap();
        assert_eq!(action, Action::requeue(fixtures::config().resync));
        assert_eq!(w.cluster.status_writes(), 2);

        let mut s = w.cluster.session("s1");
        s.spec.state = DesiredState::Stopped;
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        let s = w.cluster.session("s1");
        let st = s.status.clone().unwrap();
        assert_eq!(s.phase(), SessionPhase::Stopped);
        assert_eq!(
            st.reason.as_deref(),
            Some(SessionReason::StopRequested.as_str())
        );
        assert!(st.gpus.is_empty() && st.upstream.is_none() && st.stopped_at.is_some());
        let snap = st.workspace.unwrap().snapshots[0].clone();
        assert!(snap.starts_with("stop-"), "{snap}");
        assert_eq!(w.zfs.snapshots(), vec![format!("{dataset}@{snap}")]);
        assert_eq!(
            w.docker.of_session("uid-s1")[0].state,
            super::super::runtime::ContainerState::Exited
        );
    }

    /// Stops the driver before `at` (the first time it comes), as if the
    /// agent died there, then runs a fresh one to the end.
    async fn interrupted_at(w: &World, name: &str, at: StepKind) -> bool {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut config = fixtures::config();
        config.step_hook = Some(Arc::new(move |_s: &Session, kind: StepKind| {
            if kind == at {
                let _ = tx.send(());
                futures::future::pending::<()>().boxed()
            } else {
                async {}.boxed()
            }
        }));
        let ctx = ctx_with(config, &w.docker, &w.zfs, &w.cluster);
        let hit = tokio::select! {
            r = drive(&ctx, w.cluster.session(name)) => { r.unwrap(); false }
            _ = rx.recv() => true,
        };
        // A new agent, without the hook.
        for _ in 0..3 {
            w.drive(name).await.unwrap();
        }
        hit
    }

    #[tokio::test]
    async fn an_agent_killed_at_any_step_converges_with_one_of_everything() {
        let start_steps = [
            StepKind::Begin,
            StepKind::CreateDataset,
            StepKind::ChownWorkspace,
            StepKind::CreateContainer,
            StepKind::StartContainer,
            StepKind::AwaitPort,
        ];
        for at in start_steps {
            let w = World::new();
            w.cluster.put(fixtures::bound_session("s1", 1));
            assert!(
                interrupted_at(&w, "s1", at).await,
                "{at:?} was never reached"
            );
            assert_eq!(w.phase("s1"), SessionPhase::Running, "{at:?}");
            assert_eq!(w.docker.of_session("uid-s1").len(), 1, "{at:?}");
            assert_eq!(
                w.docker.counts(),
                (1, 1),
                "{at:?}: created and started once"
            );
            assert_eq!(w.zfs.datasets().len(), 1, "{at:?}");
        }
        for at in [
            StepKind::BeginStop,
            StepKind::StopContainer,
            StepKind::Snapshot,
            StepKind::Finish,
        ] {
            let w = World::new();
            w.cluster.put(fixtures::bound_session("s1", 1));
            w.drive("s1").await.unwrap();
            let mut s = w.cluster.session("s1");
            s.spec.state = DesiredState::Stopped;
            w.cluster.put(s);
            assert!(
                interrupted_at(&w, "s1", at).await,
                "{at:?} was never reached"
            );
            let s = w.cluster.session("s1");
            assert_eq!(s.phase(), SessionPhase::Stopped, "{at:?}");
            let snaps = s.status.unwrap().workspace.unwrap().snapshots;
            assert_eq!(snaps.len(), 1, "{at:?}: one snapshot recorded");
            assert_eq!(w.zfs.snapshots().len(), 1, "{at:?}: the same one taken");
            assert!(w.zfs.snapshots()[0].ends_with(&snaps[0]), "{at:?}");
        }
    }

    #[tokio::test]
    async fn a_dead_or_missing_container_fails_the_session_with_a_death_snapshot() {
        for missing in [false, true] {
            let w = World::new();
            w.cluster.put(fixtures::bound_session("s1", 1));
            w.drive("s1").await.unwrap();
            let id = w.docker.of_session("uid-s1")[0].id.clone();
            if missing {
                w.docker.delete(&id);
            } else {
                w.docker.kill(&id, 137);
            }
            w.drive("s1").await.unwrap();
            let s = w.cluster.session("s1");
            let st = s.status.clone().unwrap();
            assert_eq!(s.phase(), SessionPhase::Failed);
            let want = if missing {
                SessionReason::ContainerMissing
            } else {
                SessionReason::ContainerExited
            };
            assert_eq!(st.reason.as_deref(), Some(want.as_str()));
            if !missing {
                assert!(st.message.unwrap().contains("code 137"));
            }
            assert!(st.gpus.is_empty());
            let snaps = w.zfs.snapshots();
            assert_eq!(snaps.len(), 1);
            assert!(snaps[0].contains("@death-"), "{snaps:?}");
            // Failed is final: the container is never started again.
            w.drive("s1").await.unwrap();
            assert_eq!(w.docker.counts().1, 1);
        }
    }

    #[tokio::test]
    async fn bad_input_fails_with_its_cause_and_makes_nothing() {
        // No such pack.
        let w = World::new();
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.pack = "nope".into();
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        let st = w.cluster.session("s1").status.unwrap();
        assert_eq!(st.phase, Some(SessionPhase::Failed));
        assert_eq!(
            st.reason.as_deref(),
            Some(SessionReason::PackNotFound.as_str())
        );
        assert!(st.message.unwrap().contains("\"nope\""));

        // An image that is not on the node.
        let w = World {
            docker: FakeContainers::default(),
            ..World::new()
        };
        w.cluster.put(fixtures::bound_session("s1", 0));
        w.drive("s1").await.unwrap();
        let st = w.cluster.session("s1").status.unwrap();
        assert_eq!(
            st.reason.as_deref(),
            Some(SessionReason::ImageNotPresent.as_str())
        );
        assert!(st.message.unwrap().contains(IMAGE));
        assert!(w.zfs.datasets().is_empty(), "nothing made");

        // A restore snapshot that does not exist.
        let w = World::new();
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.workspace = Some(WorkspaceSpec {
            quota: None,
            restore_from: Some("pool/mf/alice/old@stop-1".into()),
        });
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        let st = w.cluster.session("s1").status.unwrap();
        assert_eq!(
            st.reason.as_deref(),
            Some(SessionReason::SnapshotNotFound.as_str())
        );
        assert!(st.message.unwrap().contains("pool/mf/alice/old@stop-1"));
        assert!(w.zfs.datasets().is_empty());

        // A quota ZFS refuses.
        let w = World::new();
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.workspace = Some(WorkspaceSpec {
            quota: Some("1Ki".into()),
            restore_from: None,
        });
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        let st = w.cluster.session("s1").status.unwrap();
        assert_eq!(
            st.reason.as_deref(),
            Some(SessionReason::WorkspaceFailed.as_str())
        );
        assert!(st.message.unwrap().contains("out of space"));
        assert!(w.zfs.datasets().is_empty());
        assert!(w.docker.of_session("uid-s1").is_empty());
    }

    #[tokio::test]
    async fn a_restore_clones_the_snapshot() {
        let w = World::new();
        w.zfs.add_snapshot("pool/mf/alice/old@stop-1");
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.workspace = Some(WorkspaceSpec {
            quota: Some("1Gi".into()),
            restore_from: Some("pool/mf/alice/old@stop-1".into()),
        });
        w.cluster.put(s);
        w.drive("s1").await.unwrap();
        assert_eq!(w.phase("s1"), SessionPhase::Running);
        assert_eq!(
            w.zfs.property("pool/mf/alice/uid-s1", "quota").as_deref(),
            Some("1073741824")
        );
    }

    #[tokio::test]
    async fn docker_down_shows_as_a_condition_and_an_error() {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("s1", 0));
        w.drive("s1").await.unwrap();
        w.docker.set_down(true);
        let err = w.drive("s1").await.unwrap_err();
        assert_eq!(err.category(), SessionReason::DockerUnavailable);
        let s = w.cluster.session("s1");
        let c = s.condition(SessionCondition::ContainerReady).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("Unknown", SessionReason::DockerUnavailable.as_str())
        );
        assert_eq!(
            s.phase(),
            SessionPhase::Running,
            "a Docker outage is not a death"
        );
        // Back up: the condition is corrected.
        w.docker.set_down(false);
        w.drive("s1").await.unwrap();
        let s = w.cluster.session("s1");
        assert!(conditions::is_true(
            &s.status.unwrap().conditions,
            SessionCondition::ContainerReady
        ));

        w.zfs.set_down(true);
        let w2 = World {
            docker: w.docker.clone(),
            zfs: w.zfs.clone(),
            cluster: w.cluster.clone(),
        };
        w2.cluster.put(fixtures::bound_session("s2", 0));
        let err = w2.drive("s2").await.unwrap_err();
        assert_eq!(err.category(), SessionReason::ZfsUnavailable);
    }

    #[tokio::test]
    async fn cleanup_removes_the_container_and_follows_the_dataset_policy() {
        for (policy, annotation, destroyed) in [
            (super::super::WorkspaceOnDelete::Keep, None, false),
            (super::super::WorkspaceOnDelete::Destroy, None, true),
            (super::super::WorkspaceOnDelete::Keep, Some("destroy"), true),
            (
                super::super::WorkspaceOnDelete::Destroy,
                Some("keep"),
                false,
            ),
        ] {
            let w = World::new();
            let mut s = fixtures::bound_session("s1", 0);
            if let Some(a) = annotation {
                s.metadata.annotations = Some(std::collections::BTreeMap::from([(
                    WORKSPACE_ON_DELETE_ANNOTATION.to_string(),
                    a.to_string(),
                )]));
            }
            w.cluster.put(s);
            w.drive("s1").await.unwrap();
            let mut config = fixtures::config();
            config.workspace_on_delete = policy;
            let ctx = ctx_with(config, &w.docker, &w.zfs, &w.cluster);
            let s = w.cluster.session("s1");
            cleanup(&ctx, &s).await.unwrap();
            assert!(w.docker.of_session("uid-s1").is_empty());
            assert_eq!(
                w.zfs.datasets().is_empty(),
                destroyed,
                "{policy:?} {annotation:?}"
            );
            // Again, with everything already gone: still fine.
            cleanup(&ctx, &s).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_gpu_bound_twice_is_never_started_twice() {
        let w = World::new();
        w.cluster.put(fixtures::bound_session("first", 1));
        w.cluster.put(fixtures::bound_session("second", 1)); // the same GPU-0
        let cluster = w.cluster.clone();
        let ctx = w.ctx().with_peers(Arc::new(move || {
            ["first", "second"]
                .iter()
                .map(|n| Arc::new(cluster.session(n)))
                .collect()
        }));
        drive(&ctx, w.cluster.session("first")).await.unwrap();
        assert_eq!(w.phase("first"), SessionPhase::Running);
        let action = drive(&ctx, w.cluster.session("second")).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(2)));
        let second = w.cluster.session("second");
        assert_eq!(second.phase(), SessionPhase::Scheduled);
        assert_eq!(
            second.condition(SessionCondition::Ready).unwrap().reason,
            SessionReason::GpuInUse
        );
        assert!(w.docker.of_session("uid-second").is_empty());

        // Once the first is stopped, the GPU is free.
        let mut first = w.cluster.session("first");
        first.spec.state = DesiredState::Stopped;
        w.cluster.put(first);
        drive(&ctx, w.cluster.session("first")).await.unwrap();
        drive(&ctx, w.cluster.session("second")).await.unwrap();
        assert_eq!(w.phase("second"), SessionPhase::Running);
    }

    #[test]
    fn errors_name_their_category_and_whole_cause() {
        let e = Error::Container(ContainerError::Unavailable {
            cause: "connection refused".into(),
        });
        assert_eq!(e.category(), SessionReason::DockerUnavailable);
        assert!(cause_chain(&e).contains("connection refused"));
        let long = Error::Workspace(WorkspaceError::Failed {
            command: "zfs".into(),
            stderr: "é".repeat(2000),
        });
        let chain = cause_chain(&long);
        assert!(chain.len() <= 1024 && chain.ends_with("..."));
    }
}
