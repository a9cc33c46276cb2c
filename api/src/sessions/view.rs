//! A session as the API shows it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use medforge_crds::{
    AssignedGpu, DesiredState, Session, SessionCondition, SessionPhase, conditions,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::index::{IndexedSession, routable_upstream};
use crate::slug::session_slug;
use crate::snapshots::view::{SESSION_VIEW_SNAPSHOTS, SnapshotBrief, brief};
use crate::state::AppState;

/// A GPU of a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "SessionGpu")]
pub struct GpuView {
    /// Index on its node.
    pub index: u32,
    /// UUID.
    pub uuid: String,
}

impl From<&AssignedGpu> for GpuView {
    fn from(gpu: &AssignedGpu) -> Self {
        GpuView {
            index: gpu.index,
            uuid: gpu.uuid.clone(),
        }
    }
}

/// A session as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Session")]
pub struct SessionView {
    /// The session's id (the Session resource's name).
    #[schemars(schema_with = "crate::validate::schema::kube_name")]
    pub id: String,
    /// 8 characters of `[a-z0-9]`; the host is `s-<slug>.<domain>`.
    #[schemars(regex(pattern = medforge_crds::schema::SLUG_PATTERN))]
    pub slug: Option<String>,
    /// `external` or `internal`.
    #[schemars(extend("enum" = ["external", "internal"]))]
    pub exposure: String,
    /// The owner's user id.
    pub owner: String,
    /// The Pack the session runs.
    pub pack: String,
    /// Desired state: `running` or `stopped`.
    #[schemars(extend("enum" = ["running", "stopped"]))]
    pub state: String,
    /// Observed phase: `pending`, `scheduled`, `starting`, `running`, `stopping`, `stopped`, `failed`.
    #[schemars(extend("enum" = ["pending", "scheduled", "starting", "running", "stopping", "stopped", "failed"]))]
    pub phase: String,
    /// Whether the proxy routes to it now.
    pub ready: bool,
    /// GPUs requested.
    pub gpu_count: u32,
    /// GPUs given.
    pub gpus: Vec<GpuView>,
    /// The node it is bound to.
    pub node: Option<String>,
    /// Where to open it.
    pub url: Option<String>,
    /// CamelCase reason of the phase (`NoGpuAvailable`, `ContainerExited`, …).
    pub reason: Option<String>,
    /// What went wrong, when something did.
    pub error_message: Option<String>,
    /// Idle timeout (`30m`).
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`12h`).
    pub max_lifetime: Option<String>,
    /// Creation time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: Option<String>,
    /// When it last started running.
    #[schemars(extend("format" = "date-time"))]
    pub started_at: Option<String>,
    /// When it last stopped.
    #[schemars(extend("format" = "date-time"))]
    pub stopped_at: Option<String>,
    /// Last request through the proxy.
    #[schemars(extend("format" = "date-time"))]
    pub last_activity_at: Option<String>,
    /// While it runs: when it will be stopped for idleness or age, unless
    /// (for idleness) it is used or kept alive before then.
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: Option<String>,
    /// Why it will stop then: `idle` or `lifetime`.
    #[schemars(extend("enum" = ["idle", "lifetime"]))]
    pub expires_because: Option<String>,
    /// The snapshot it was restored from, if any (a snapshot id).
    pub restored_from: Option<String>,
    /// Its newest snapshots (at most 20), newest first.
    pub snapshots: Vec<SnapshotBrief>,
    /// How many snapshots it has in all.
    pub snapshot_count: u32,
}

/// When a running session will be stopped and why (`idle`, `lifetime`),
/// with the freshest activity the api knows (`activity`, Unix seconds).
pub fn expiry(session: &Session, activity: i64) -> Option<(jiff::Timestamp, &'static str)> {
    if session.phase() != SessionPhase::Running || session.spec.state != DesiredState::Running {
        return None;
    }
    let activity = (activity > 0)
        .then(|| jiff::Timestamp::from_second(activity).ok())
        .flatten();
    let (at, why) = session.expiry(activity)?;
    let why = if why == medforge_crds::SessionReason::Idle {
        "idle"
    } else {
        "lifetime"
    };
    Some((at, why))
}

fn time(t: Option<&Time>) -> Option<String> {
    t.map(|t| t.0.to_string())
}

pub(super) fn phase_name(phase: SessionPhase) -> String {
    format!("{phase:?}").to_ascii_lowercase()
}

/// Renders a session; `activity` is the index's in-memory last activity (Unix seconds).
pub fn view(state: &AppState, session: &Session, activity: i64) -> SessionView {
    let status = session.status.as_ref();
    let slug = session_slug(session);
    let phase = session.phase();
    let refused = session
        .condition(SessionCondition::Scheduled)
        .is_some_and(|c| c.status == conditions::status_str(Some(false)));
    let recorded = status
        .and_then(|s| s.last_activity_at.as_ref())
        .map_or(0, |t| t.0.as_second());
    let last_activity = recorded.max(activity);
    let expires = expiry(session, activity);
    let snapshots = match session.metadata.uid.as_deref() {
        Some(uid) => state.snapshots().of_session(uid),
        None => Vec::new(),
    };
    SessionView {
        restored_from: session
            .spec
            .workspace
            .as_ref()
            .and_then(|w| w.restore_from.clone()),
        snapshot_count: u32::try_from(snapshots.len()).unwrap_or(u32::MAX),
        snapshots: snapshots
            .iter()
            .take(SESSION_VIEW_SNAPSHOTS)
            .map(|e| brief(&e.record))
            .collect(),
        expires_at: expires.map(|(at, _)| at.to_string()),
        expires_because: expires.map(|(_, why)| why.to_owned()),
        id: session.metadata.name.clone().unwrap_or_default(),
        url: slug.as_ref().map(|slug| {
            format!(
                "{}://{}/",
                state.config().public_scheme,
                state.hosts().host_for(slug, session.spec.exposure)
            )
        }),
        slug,
        exposure: session.spec.exposure.as_str().to_owned(),
        owner: session.spec.owner.clone(),
        pack: session.spec.pack.clone(),
        state: match session.spec.state {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
        .to_owned(),
        phase: phase_name(phase),
        ready: routable_upstream(session).is_some(),
        gpu_count: session.spec.gpus,
        gpus: status
            .map(|s| s.gpus.iter().map(GpuView::from).collect())
            .unwrap_or_default(),
        node: status.and_then(|s| s.node_name.clone()),
        reason: status.and_then(|s| s.reason.clone()),
        error_message: (phase == SessionPhase::Failed || refused)
            .then(|| status.and_then(|s| s.message.clone()))
            .flatten(),
        idle_timeout: session.spec.idle_timeout.clone(),
        max_lifetime: session.spec.max_lifetime.clone(),
        created_at: time(session.metadata.creation_timestamp.as_ref()),
        started_at: time(status.and_then(|s| s.started_at.as_ref())),
        stopped_at: time(status.and_then(|s| s.stopped_at.as_ref())),
        last_activity_at: (last_activity > 0)
            .then(|| jiff::Timestamp::from_second(last_activity).ok())
            .flatten()
            .map(|t| t.to_string()),
    }
}

pub(super) fn view_indexed(state: &AppState, entry: &IndexedSession) -> SessionView {
    view(state, &entry.session, entry.last_activity())
}

/// Body of create and stop.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SessionReply {
    /// What happened.
    pub message: String,
    /// The session.
    pub session: SessionView,
}
