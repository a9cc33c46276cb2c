//! The `WorkspaceSnapshot` controller of a node: the records whose
//! `spec.node` is this node.
//!
//! - A record with no status (a manual snapshot a client asked for) is
//!   checked against the pool (the dataset must be its session's workspace)
//!   and the ZFS snapshot taken; `ReadyToUse` says so, or why not.
//! - The finalizer [`SNAPSHOT_FINALIZER`] destroys the ZFS snapshot when the
//!   record is deleted. While a dataset was cloned from it, the record waits
//!   with `Deleting=False` (`CloneDependsOnIt`), looked at again every
//!   `held_retry` (a minute). A retired dataset (its Session deleted) whose last
//!   snapshot goes is destroyed with it.
//! - Retention: after a record becomes ready, and hourly, the session's
//!   snapshots beyond its retention are deleted (each with an Event).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use medforge_crds::conditions::set_condition;
use medforge_crds::keys::{SNAPSHOT_FINALIZER, SNAPSHOT_RETENTION_ANNOTATION, dataset as props};
use medforge_crds::{
    EventAction, RetentionOverride, SnapshotCondition, SnapshotReason, SnapshotStatusReason,
    WorkspaceSnapshot,
};

use super::config::AgentConfig;
use super::plan::{self, Kept};
use super::runtime::{Refusal, WorkspaceError, Workspaces};
use super::spec::dataset_name;

/// How often a session's snapshots are checked against retention.
pub const RETENTION_PERIOD: Duration = Duration::from_secs(3600);

/// Why a snapshot reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    /// A dataset was cloned from the snapshot: it cannot be destroyed yet.
    #[error("{0}")]
    Held(String),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<SnapshotError>>),
}

/// What the snapshot controller works with.
pub struct SnapshotContext<W: Workspaces> {
    pub client: Client,
    pub workspaces: W,
    pub config: AgentConfig,
    pub recorder: Option<Recorder>,
    /// This node's records (the controller's cache).
    pub store: Store<WorkspaceSnapshot>,
}

impl<W: Workspaces> SnapshotContext<W> {
    fn publish(
        &self,
        r: &WorkspaceSnapshot,
        type_: EventType,
        reason: SnapshotStatusReason,
        action: EventAction,
        note: String,
    ) {
        super::context::publish(
            self.recorder.as_ref(),
            r.object_ref(&()),
            type_,
            reason.as_str(),
            action,
            note,
        );
    }
}

/// Runs the controller over this node's records until the agent drops it.
pub async fn run<W: Workspaces + Clone>(
    client: Client,
    workspaces: W,
    config: AgentConfig,
    recorder: Option<Recorder>,
) {
    let api = Api::<WorkspaceSnapshot>::all(client.clone());
    let selector = format!("spec.node={}", config.node_name);
    let controller = Controller::new(api, watcher::Config::default().fields(&selector));
    let ctx = Arc::new(SnapshotContext {
        client,
        workspaces,
        config,
        recorder,
        store: controller.store(),
    });
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "snapshot controller");
            }
        })
        .await;
}

/// The controller's reconcile function: the finalizer around [`apply`] and
/// [`release`].
pub async fn reconcile<W: Workspaces>(
    r: Arc<WorkspaceSnapshot>,
    ctx: Arc<SnapshotContext<W>>,
) -> Result<Action, SnapshotError> {
    if r.spec.node != ctx.config.node_name {
        return Ok(Action::await_change());
    }
    let api: Api<WorkspaceSnapshot> =
        Api::namespaced(ctx.client.clone(), &r.namespace().unwrap_or_default());
    finalizer(&api, SNAPSHOT_FINALIZER, r, |event| async {
        match event {
            Finalizer::Apply(r) => apply(&ctx, &api, &r).await,
            Finalizer::Cleanup(r) => release(&ctx, &api, &r).await,
        }
    })
    .await
    .map_err(|e| SnapshotError::Finalizer(Box::new(e)))
}

fn error_policy<W: Workspaces>(
    r: Arc<WorkspaceSnapshot>,
    err: &SnapshotError,
    ctx: Arc<SnapshotContext<W>>,
) -> Action {
    let held = matches!(err, SnapshotError::Finalizer(e)
        if matches!(e.as_ref(), kube::runtime::finalizer::Error::CleanupFailed(SnapshotError::Held(_))));
    if held {
        tracing::info!(snapshot = %r.name_any(), reason = %err, "snapshot held by a clone");
        return Action::requeue(ctx.config.held_retry);
    }
    tracing::warn!(snapshot = %r.name_any(), error = %super::error::cause_chain(err), "snapshot reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// A record that is not being deleted: a pending one is taken (or refused),
/// a ready one is checked against retention.
async fn apply<W: Workspaces>(
    ctx: &SnapshotContext<W>,
    api: &Api<WorkspaceSnapshot>,
    r: &WorkspaceSnapshot,
) -> Result<Action, SnapshotError> {
    let decided = r.condition(SnapshotCondition::ReadyToUse).is_some();
    if !decided {
        let outcome = take(ctx, r).await?;
        let now = Timestamp::now();
        let st = plan::snapshot_status(
            outcome.taken_at,
            outcome.size_bytes,
            outcome.ready,
            outcome.reason,
            &outcome.message,
            r.metadata.generation,
            now,
        );
        api.patch_status(
            &r.name_any(),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": st })),
        )
        .await?;
        tracing::info!(snapshot = %r.spec.snapshot, ready = outcome.ready, message = %outcome.message, "snapshot asked for");
        ctx.publish(
            r,
            if outcome.ready {
                EventType::Normal
            } else {
                EventType::Warning
            },
            outcome.reason,
            EventAction::Snapshot,
            outcome.message,
        );
        // The status write brings the record back, ready: retention then.
        return Ok(Action::await_change());
    }
    if r.is_ready() {
        retain(ctx, api, r).await?;
    }
    Ok(Action::requeue(RETENTION_PERIOD))
}

/// What became of a record that asked for a snapshot.
struct Outcome {
    ready: bool,
    reason: SnapshotStatusReason,
    message: String,
    taken_at: Option<Timestamp>,
    size_bytes: Option<i64>,
}

impl Outcome {
    fn refused(reason: SnapshotStatusReason, message: String) -> Outcome {
        Outcome {
            ready: false,
            reason,
            message,
            taken_at: None,
            size_bytes: None,
        }
    }
}

/// Takes a manual snapshot (or, for a record of the agent's own kinds whose
/// status write was lost, finds it), or says why not.
async fn take<W: Workspaces>(
    ctx: &SnapshotContext<W>,
    r: &WorkspaceSnapshot,
) -> Result<Outcome, SnapshotError> {
    let (dataset, name) = r.dataset_and_name();
    let expected = dataset_name(&ctx.config.dataset_root, &r.spec.owner, &r.spec.session.uid);
    if dataset != expected || SnapshotReason::of_name(name) != Some(r.spec.reason) {
        return Ok(Outcome::refused(
            SnapshotStatusReason::DatasetMismatch,
            format!(
                "{} is not a {:?} snapshot of the workspace of session {} ({expected}@{}-<unix ms>)",
                r.spec.snapshot,
                r.spec.reason,
                r.spec.session.name,
                name.split('-').next().unwrap_or("manual")
            ),
        ));
    }
    let uid = match ctx
        .workspaces
        .user_property(dataset, props::SESSION_UID)
        .await
    {
        Ok(uid) => uid,
        Err(WorkspaceError::NotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    match uid {
        None => {
            return Ok(Outcome::refused(
                SnapshotStatusReason::WorkspaceNotFound,
                format!(
                    "the workspace {dataset} does not exist on node {}",
                    ctx.config.node_name
                ),
            ));
        }
        Some(uid) if uid != r.spec.session.uid => {
            return Ok(Outcome::refused(
                SnapshotStatusReason::DatasetMismatch,
                format!(
                    "the workspace {dataset} belongs to session uid {uid}, not {}",
                    r.spec.session.uid
                ),
            ));
        }
        Some(_) => {}
    }
    let reason = if r.spec.reason == SnapshotReason::Manual {
        let retired = ctx
            .workspaces
            .user_property(dataset, props::RETIRED)
            .await?;
        if retired.is_some() {
            return Ok(Outcome::refused(
                SnapshotStatusReason::WorkspaceNotFound,
                format!("the session of {dataset} was deleted: its workspace only holds snapshots"),
            ));
        }
        ctx.workspaces.snapshot(&r.spec.snapshot).await?;
        SnapshotStatusReason::Taken
    } else if ctx.workspaces.snapshot_exists(&r.spec.snapshot).await? {
        SnapshotStatusReason::Adopted
    } else {
        return Ok(Outcome::refused(
            SnapshotStatusReason::SnapshotMissing,
            format!(
                "{} is not on the pool of node {}",
                r.spec.snapshot, ctx.config.node_name
            ),
        ));
    };
    Ok(Outcome {
        ready: true,
        reason,
        message: format!(
            "snapshot {} exists on node {}",
            r.spec.snapshot, ctx.config.node_name
        ),
        taken_at: Some(plan::taken_at_of_name(name).unwrap_or_else(Timestamp::now)),
        size_bytes: ctx.workspaces.snapshot_size(&r.spec.snapshot).await?,
    })
}

/// The finalizer's work: the ZFS snapshot destroyed (and a retired dataset
/// with it once empty), or `Deleting=False` while a clone holds it.
async fn release<W: Workspaces>(
    ctx: &SnapshotContext<W>,
    api: &Api<WorkspaceSnapshot>,
    r: &WorkspaceSnapshot,
) -> Result<Action, SnapshotError> {
    match ctx.workspaces.destroy_snapshot(&r.spec.snapshot).await {
        Ok(()) => {}
        Err(WorkspaceError::Refused {
            why: Refusal::DependentClones(clones),
            ..
        }) => {
            let message = format!(
                "the workspace(s) {} were cloned from {}: it is destroyed once they are",
                clones.join(", "),
                r.spec.snapshot
            );
            let mut conditions = r
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            let changed = set_condition(
                &mut conditions,
                SnapshotCondition::Deleting,
                Some(false),
                SnapshotStatusReason::CloneDependsOnIt,
                &message,
                r.metadata.generation,
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
            );
            if changed {
                api.patch_status(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": { "conditions": conditions } })),
                )
                .await?;
                ctx.publish(
                    r,
                    EventType::Warning,
                    SnapshotStatusReason::CloneDependsOnIt,
                    EventAction::Delete,
                    message.clone(),
                );
            }
            return Err(SnapshotError::Held(message));
        }
        Err(e) => return Err(e.into()),
    }
    let (dataset, _) = r.dataset_and_name();
    let mut note = format!("destroyed snapshot {}", r.spec.snapshot);
    let retired = match ctx.workspaces.user_property(dataset, props::RETIRED).await {
        Ok(v) => v.is_some(),
        Err(WorkspaceError::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if retired
        && let Some(obs) = ctx.workspaces.inspect(dataset).await?
        && obs.snapshots.is_empty()
    {
        ctx.workspaces.destroy(dataset).await?;
        note.push_str(&format!(
            "; destroyed the retired dataset {dataset} (its last snapshot)"
        ));
    }
    tracing::info!(record = %r.name_any(), %note, "snapshot released");
    ctx.publish(
        r,
        EventType::Normal,
        SnapshotStatusReason::Destroyed,
        EventAction::Delete,
        note,
    );
    Ok(Action::await_change())
}

/// The session's ready snapshots beyond its retention are deleted.
async fn retain<W: Workspaces>(
    ctx: &SnapshotContext<W>,
    api: &Api<WorkspaceSnapshot>,
    r: &WorkspaceSnapshot,
) -> Result<(), SnapshotError> {
    let ns = r.namespace();
    let mut of_session: Vec<Arc<WorkspaceSnapshot>> = ctx
        .store
        .state()
        .into_iter()
        .filter(|o| o.namespace() == ns && o.spec.session.uid == r.spec.session.uid)
        .filter(|o| o.is_ready() && o.taken_at().is_some())
        .collect();
    of_session.sort_by_key(|o| o.taken_at());
    let Some(newest) = of_session.last() else {
        return Ok(());
    };
    let policy = newest
        .annotations()
        .get(SNAPSHOT_RETENTION_ANNOTATION)
        .and_then(|a| RetentionOverride::parse(a).ok())
        .map_or(ctx.config.retention, |o| o.over(ctx.config.retention));
    let kept: Vec<Kept> = of_session
        .iter()
        .map(|o| Kept {
            name: o.name_any(),
            snapshot: o.spec.snapshot.clone(),
            taken_at: o.taken_at().unwrap_or(Timestamp::UNIX_EPOCH),
        })
        .collect();
    let now = Timestamp::now();
    if plan::expired(&kept, &Default::default(), policy, now).is_empty() {
        return Ok(());
    }
    let origins = ctx.workspaces.origins(&ctx.config.dataset_root).await?;
    for k in plan::expired(&kept, &origins, policy, now) {
        match api.delete(&k.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e.into()),
        }
        let note = format!(
            "deleted by retention: the session keeps its newest {} snapshot(s) and those younger than {} day(s)",
            policy.keep_last, policy.keep_days
        );
        tracing::info!(record = %k.name, snapshot = %k.snapshot, %note, "retention");
        if let Some(o) = of_session.iter().find(|o| o.name_any() == k.name) {
            ctx.publish(
                o,
                EventType::Normal,
                SnapshotStatusReason::RetentionExpired,
                EventAction::Retain,
                note,
            );
        }
    }
    Ok(())
}
