//! `Session`: one user's interactive container with whole GPUs and a private workspace.

use crate::reason::SessionCondition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::schema::{DURATION_PATTERN, GPU_UUID_PATTERN, QUANTITY_PATTERN, SLUG_PATTERN};

/// The desired state of a Session: what its owner asked for.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "medforge.dev",
    version = "v1alpha1",
    kind = "Session",
    plural = "sessions",
    singular = "session",
    namespaced,
    status = "SessionStatus",
    derive = "PartialEq",
    shortname = "sess",
    category = "medforge",
    doc = "An interactive GPU session: a container with whole GPUs, a private ZFS workspace mounted at /workspace and a URL s-<slug>.<domain> that only its owner (and admins) can open.",
    printcolumn(
        name = "Slug",
        type_ = "string",
        json_path = ".status.slug",
        description = "The session's host is s-<slug>.<exposure>.<domain>"
    ),
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".metadata.annotations.medforge\\.dev/owner-email",
        description = "The owner's email, as the api recorded it at creation (annotation medforge.dev/owner-email)"
    ),
    printcolumn(
        name = "Pack",
        type_ = "string",
        json_path = ".spec.pack",
        description = "The Pack (image and defaults) the session runs"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where the session is in its lifecycle"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.nodeName",
        description = "The GPU node the session is bound to"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".spec.gpus",
        description = "Number of whole GPUs requested"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the session answers at its URL"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".metadata.annotations.medforge\\.dev/url",
        description = "Where the owner opens the session (annotation medforge.dev/url, written by the api)",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the session is in its phase",
        priority = "1"
    ),
    printcolumn(
        name = "Owner-ID",
        type_ = "string",
        json_path = ".spec.owner",
        description = "The owner's user id",
        priority = "1"
    ),
    selectable = ".spec.owner",
    // The node a session is bound to: each node agent watches only its own
    // (`fieldSelector=status.nodeName=<node>`), as a kubelet watches its Pods.
    selectable = ".status.nodeName"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "(has(self.workspace) && has(self.workspace.restoreFrom) ? self.workspace.restoreFrom : '') == (has(oldSelf.workspace) && has(oldSelf.workspace.restoreFrom) ? oldSelf.workspace.restoreFrom : '')"
).message("workspace.restoreFrom is fixed once the session exists: restore into a new session"))]
pub struct SessionSpec {
    /// The id of the user who owns this session. Only this user (and admins) may open it. Set at creation and immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("owner is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,

    /// The name of the cluster-scoped Pack (container image and defaults) the session runs.
    #[schemars(length(min = 1, max = 253))]
    pub pack: String,

    /// Which domain the session is reachable on: `external` (the public domain) or `internal` (the internal domain, for users allowed to use it).
    #[serde(default)]
    pub exposure: Exposure,

    /// Number of whole GPUs the session needs, 0 to 8. 0 runs without a GPU.
    #[serde(default)]
    #[schemars(range(min = 0, max = 8))]
    pub gpus: u32,

    /// Whether the session should be running. Set to `Stopped` to stop it: the container stops, the workspace is snapshotted and the GPUs are freed.
    #[serde(default)]
    pub state: DesiredState,

    /// Resource limits of the container. Unset values come from the Pack's defaults.
    pub resources: Option<SessionResources>,

    /// The session's private ZFS workspace, mounted at /workspace.
    pub workspace: Option<WorkspaceSpec>,

    /// Stop the session after this long without a request through the proxy (a duration such as `30m` or `2h`). Unset means never.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,

    /// Stop the session this long after it started running, whatever its activity (a duration such as `12h`). Unset means never.
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_lifetime: Option<String>,

    /// When the owner last asked a Stopped or Failed session to start again. Setting it (to the current time) resumes a session whose `state` is already `Running` (one stopped for idleness, for its lifetime, or after its container died); setting `state` from `Stopped` to `Running` does the same. A session resumes on its own workspace, on the node that holds it.
    pub resume_requested_at: Option<Time>,
}

/// Which domain a session is exposed on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Exposure {
    /// Reachable on the public domain.
    #[default]
    External,
    /// Reachable on the internal domain only.
    Internal,
}

impl Exposure {
    /// The value as it appears in manifests and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Exposure::External => "external",
            Exposure::Internal => "internal",
        }
    }
}

/// The state the owner wants a session in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum DesiredState {
    /// The session should run.
    #[default]
    Running,
    /// The session should be stopped (its workspace is kept).
    Stopped,
}

/// Container resource limits. Quantities use Kubernetes notation (`500m`, `2`, `16Gi`).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionResources {
    /// CPU limit in cores (`2`, `500m`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub cpu: Option<String>,
    /// Memory limit (`16Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub memory: Option<String>,
    /// Size of /dev/shm (`2Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub shm: Option<String>,
    /// Maximum number of processes in the container.
    #[schemars(range(min = 16, max = 1_000_000))]
    pub pids: Option<i64>,
}

/// The desired workspace of a session.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Quota of the workspace dataset (`50Gi`). Writes past it fail with "disk quota exceeded".
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub quota: Option<String>,
    /// Start from an earlier snapshot instead of an empty workspace: the name of a WorkspaceSnapshot in the session's namespace, of the same owner and ready to use. The session runs on that snapshot's node, on a clone of it.
    #[schemars(length(min = 1, max = 253))]
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub restore_from: Option<String>,
}

/// Where a session is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum SessionPhase {
    /// Waiting for the scheduler to bind it to a node and GPUs.
    Pending,
    /// Bound to a node and GPUs; the node agent has not started it yet.
    Scheduled,
    /// The node agent is creating the workspace and the container.
    Starting,
    /// The container runs and answers on its port; the proxy may route to it.
    Running,
    /// The node agent is stopping the container and snapshotting the workspace.
    Stopping,
    /// Stopped; the GPUs are free and the workspace is kept.
    Stopped,
    /// Could not start, or its container died; see `reason` and `message`.
    Failed,
}

impl SessionPhase {
    /// Whether the session holds nothing any more (GPUs free, no container running).
    pub fn is_terminal(self) -> bool {
        matches!(self, SessionPhase::Stopped | SessionPhase::Failed)
    }
}

/// A GPU given to a session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AssignedGpu {
    /// The GPU's index on its node.
    pub index: u32,
    /// The GPU's UUID (`GPU-…`), what the container sees in NVIDIA_VISIBLE_DEVICES.
    #[schemars(regex(pattern = GPU_UUID_PATTERN))]
    pub uuid: String,
}

/// The observed workspace of a session.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceStatus {
    /// The ZFS dataset (`<root>/<owner>/<session uid>`).
    pub dataset: Option<String>,
    /// Snapshots taken of the dataset, oldest first (`stop-<unix ms>`, `death-<unix ms>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
}

/// The observed state of a Session, written only by the scheduler and the node agent.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SessionStatus {
    /// Where the session is in its lifecycle.
    pub phase: Option<SessionPhase>,
    /// The node the scheduler bound the session to.
    pub node_name: Option<String>,
    /// The GPUs the scheduler gave the session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<AssignedGpu>,
    /// 8 characters of [a-z0-9], unique, fixed once set: names the container `mf-session-<slug>` and the host `s-<slug>.<domain>`.
    #[schemars(regex(pattern = SLUG_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("slug is fixed once set"))]
    pub slug: Option<String>,
    /// The Docker container id on the node.
    pub container_id: Option<String>,
    /// `host:port` the proxy may dial to reach the session, set only while it is Running and Ready.
    pub upstream: Option<String>,
    /// The session's workspace dataset and snapshots.
    pub workspace: Option<WorkspaceStatus>,
    /// When the container last started running.
    pub started_at: Option<Time>,
    /// When the session last stopped or failed.
    pub stopped_at: Option<Time>,
    /// The last request through the proxy, as reported by the api.
    pub last_activity_at: Option<Time>,
    /// What the node agent runs the session with: the spec's values, else the Pack's defaults, else the operator's, within every maximum. Written when it starts.
    pub limits: Option<SessionLimits>,
    /// A CamelCase reason for the current phase (`NoGpuAvailable`, `ContainerExited`, `Idle`, …).
    pub reason: Option<String>,
    /// A human-readable explanation of the current phase.
    pub message: Option<String>,
    /// Standard conditions: `Scheduled`, `WorkspaceReady`, `ContainerReady`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    pub observed_generation: Option<i64>,
    /// The `metadata.generation` at which the last stop (or failure) began. A Stopped or Failed session whose spec changed since (a higher generation) and asks for `Running` is started again.
    pub stopped_generation: Option<i64>,
}

/// The limits a session runs with, as the node agent resolved them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionLimits {
    /// CPU cores.
    pub cpu: String,
    /// Memory.
    pub memory: String,
    /// Size of /dev/shm.
    pub shm: String,
    /// Processes in the container.
    pub pids: i64,
    /// Workspace quota.
    pub workspace_quota: String,
    /// The idle timeout in effect.
    pub idle_timeout: String,
    /// The maximum lifetime in effect.
    pub max_lifetime: String,
}

impl Session {
    /// The session's phase, `Pending` when nothing has been observed yet.
    pub fn phase(&self) -> SessionPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(SessionPhase::Pending)
    }

    /// The condition of the given type, if the status has one.
    pub fn condition(&self, type_: SessionCondition) -> Option<&Condition> {
        crate::conditions::find(&self.status.as_ref()?.conditions, type_)
    }

    /// The node the session is bound to, if any.
    pub fn bound_node(&self) -> Option<&str> {
        self.status.as_ref()?.node_name.as_deref()
    }

    /// Whether the session holds its node and GPUs: bound and not yet
    /// Stopped or Failed. A session being deleted holds its GPUs until it is
    /// gone, since its container may run until the node agent's finalizer
    /// finishes. The one definition the scheduler and the node agent's GPU
    /// accounting share.
    pub fn holds_binding(&self) -> bool {
        self.bound_node().is_some() && !self.phase().is_terminal()
    }

    /// Whether the session waits for the scheduler: wanted Running, not
    /// being deleted, and either not bound yet (Pending) or asked to
    /// resume ([`Session::wants_resume`]).
    pub fn wants_binding(&self) -> bool {
        self.metadata.deletion_timestamp.is_none()
            && self.spec.state == DesiredState::Running
            && (self.status.as_ref().is_none_or(|st| {
                st.node_name.is_none() && matches!(st.phase, None | Some(SessionPhase::Pending))
            }) || self.wants_resume())
    }

    /// Whether a Stopped or Failed session is asked to run again: its spec
    /// says `Running` and changed since its last stop began (a higher
    /// generation than `status.stoppedGeneration`). A session that stopped
    /// on its own (idle, lifetime, death) keeps `state: Running` and stays
    /// stopped until its owner changes the spec (`resumeRequestedAt`).
    pub fn wants_resume(&self) -> bool {
        let Some(st) = self.status.as_ref() else {
            return false;
        };
        let stopped_at = st.stopped_generation.or(st.observed_generation);
        self.metadata.deletion_timestamp.is_none()
            && self.spec.state == DesiredState::Running
            && self.phase().is_terminal()
            && self
                .metadata
                .generation
                .is_some_and(|g| stopped_at.is_none_or(|s| g > s))
    }

    /// The idle timeout and maximum lifetime in effect, as written: those
    /// the node agent recorded when the session started (`status.limits`),
    /// else the spec's.
    pub fn time_limits(&self) -> (Option<&str>, Option<&str>) {
        match self.status.as_ref().and_then(|st| st.limits.as_ref()) {
            Some(l) => (Some(&l.idle_timeout), Some(&l.max_lifetime)),
            None => (
                self.spec.idle_timeout.as_deref(),
                self.spec.max_lifetime.as_deref(),
            ),
        }
    }

    /// When a started session must stop for idleness (`Idle`) or age
    /// (`Expired`), whichever comes first; `None` without a start time or
    /// such a limit. The last activity is `status.lastActivityAt` or
    /// `activity`, whichever is later, and never before the start. The one
    /// rule the node agent stops by and the api warns by.
    pub fn expiry(
        &self,
        activity: Option<k8s_openapi::jiff::Timestamp>,
    ) -> Option<(k8s_openapi::jiff::Timestamp, crate::reason::SessionReason)> {
        use crate::quantity::parse_duration;
        use crate::reason::SessionReason;
        let st = self.status.as_ref()?;
        let started = st.started_at.as_ref()?.0;
        let (idle_timeout, max_lifetime) = self.time_limits();
        let mut out: Option<(k8s_openapi::jiff::Timestamp, SessionReason)> = None;
        let mut consider = |at, why| {
            if out.is_none_or(|(t, _)| at < t) {
                out = Some((at, why));
            }
        };
        if let Some(life) = max_lifetime.and_then(|d| parse_duration(d).ok())
            && let Ok(at) = started.checked_add(life)
        {
            consider(at, SessionReason::Expired);
        }
        if let Some(idle) = idle_timeout.and_then(|d| parse_duration(d).ok()) {
            let active = st
                .last_activity_at
                .as_ref()
                .map(|t| t.0)
                .into_iter()
                .chain(activity)
                .max()
                .filter(|t| *t > started)
                .unwrap_or(started);
            if let Ok(at) = active.checked_add(idle) {
                consider(at, SessionReason::Idle);
            }
        }
        out
    }

    /// The node holding the session's workspace, when it has one there:
    /// the node it was bound to, once its agent got as far as naming the
    /// dataset. A resumed session must run there.
    pub fn workspace_node(&self) -> Option<&str> {
        let st = self.status.as_ref()?;
        st.workspace.as_ref()?.dataset.as_ref()?;
        st.node_name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_are_left_out_and_may_be_missing() {
        let spec = serde_json::to_value(session(DesiredState::Running, None, None).spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "owner": "u", "pack": "p", "exposure": "external", "gpus": 1, "state": "Running"
            })
        );
        assert_eq!(
            serde_json::to_value(SessionStatus::default()).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(SessionResources::default()).unwrap(),
            serde_json::json!({})
        );
        let read: SessionSpec = serde_json::from_value(spec).unwrap();
        assert_eq!(read.resources, None);
        assert_eq!(read.idle_timeout, None);
        let read: SessionStatus = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(read, SessionStatus::default());
    }

    fn session(state: DesiredState, node: Option<&str>, phase: Option<SessionPhase>) -> Session {
        let mut s = Session::new(
            "s",
            SessionSpec {
                owner: "u".into(),
                pack: "p".into(),
                exposure: Exposure::default(),
                gpus: 1,
                state,
                resources: None,
                workspace: None,
                idle_timeout: None,
                max_lifetime: None,
                resume_requested_at: None,
            },
        );
        s.status = Some(SessionStatus {
            node_name: node.map(str::to_string),
            phase,
            ..Default::default()
        });
        s
    }

    #[test]
    fn binding_predicates() {
        use DesiredState::{Running, Stopped};
        use SessionPhase as P;
        let pending = session(Running, None, None);
        assert!(pending.wants_binding() && !pending.holds_binding());
        let bound = session(Running, Some("n"), Some(P::Scheduled));
        assert!(!bound.wants_binding() && bound.holds_binding());
        assert_eq!(bound.bound_node(), Some("n"));
        let stopping = session(Stopped, Some("n"), Some(P::Stopping));
        assert!(!stopping.wants_binding() && stopping.holds_binding());
        let stopped = session(Stopped, Some("n"), Some(P::Stopped));
        assert!(!stopped.wants_binding() && !stopped.holds_binding());
        let not_wanted = session(Stopped, None, None);
        assert!(!not_wanted.wants_binding());
        let mut deleting = session(Running, None, None);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!deleting.wants_binding());
    }

    #[test]
    fn a_terminal_session_resumes_only_when_its_spec_changed_since_it_stopped() {
        use DesiredState::{Running, Stopped};
        use SessionPhase as P;
        let at = |state, generation: i64, stopped: Option<i64>, phase| {
            let mut s = session(state, Some("n"), Some(phase));
            s.metadata.generation = Some(generation);
            s.status.as_mut().unwrap().stopped_generation = stopped;
            s
        };
        // Stopped by its owner (generation 2), then set Running (3).
        assert!(at(Running, 3, Some(2), P::Stopped).wants_resume());
        assert!(at(Running, 3, Some(2), P::Stopped).wants_binding());
        // Stopped for idleness at generation 1 with `state: Running`: stays.
        assert!(!at(Running, 1, Some(1), P::Stopped).wants_resume());
        assert!(!at(Running, 1, Some(1), P::Failed).wants_binding());
        // A failed one asked to resume (resumeRequestedAt changed: 2).
        assert!(at(Running, 2, Some(1), P::Failed).wants_resume());
        // Asked to stay stopped, or still running.
        assert!(!at(Stopped, 4, Some(2), P::Stopped).wants_resume());
        assert!(!at(Running, 4, Some(2), P::Running).wants_resume());
        // Older statuses without stoppedGeneration use observedGeneration.
        let mut old = at(Running, 2, None, P::Stopped);
        old.status.as_mut().unwrap().observed_generation = Some(2);
        assert!(!old.wants_resume());
        old.metadata.generation = Some(3);
        assert!(old.wants_resume());
        let mut deleting = at(Running, 3, Some(2), P::Stopped);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!deleting.wants_resume());
        // The workspace's node is known once the agent named the dataset.
        let mut ran = at(Running, 3, Some(2), P::Stopped);
        assert_eq!(ran.workspace_node(), None);
        ran.status.as_mut().unwrap().workspace = Some(WorkspaceStatus {
            dataset: Some("pool/u/x".into()),
            snapshots: vec![],
        });
        assert_eq!(ran.workspace_node(), Some("n"));
    }
}
