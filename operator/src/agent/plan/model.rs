//! What the plan works with: what was observed ([`World`]), the settings
//! the decisions depend on ([`Policy`], [`WorkspaceOnDelete`]), the steps
//! ([`Step`], [`StepKind`]) and the small pure questions about a session the
//! decisions and the driver share.

use std::net::SocketAddr;
use std::time::Duration;

use kube::ResourceExt;
use medforge_crds::keys::WORKSPACE_ON_DELETE_ANNOTATION;
use medforge_crds::{Session, SessionPhase, SessionReason};

use crate::agent::runtime::{ContainerObs, DatasetObs};

/// Why a session is being wound down, and where it ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopCause {
    pub reason: SessionReason,
    pub message: String,
}

impl StopCause {
    pub(super) fn new(reason: SessionReason, message: impl Into<String>) -> StopCause {
        StopCause {
            reason,
            message: message.into(),
        }
    }

    /// The phase the session ends in: `Failed` when its container died or
    /// never became ready, `Stopped` otherwise.
    pub fn final_phase(reason: SessionReason) -> SessionPhase {
        match reason {
            SessionReason::ContainerExited
            | SessionReason::ContainerMissing
            | SessionReason::StartTimeout => SessionPhase::Failed,
            _ => SessionPhase::Stopped,
        }
    }

    /// `stop-` or `death-`: the snapshot name's prefix.
    pub fn snapshot_prefix(reason: SessionReason) -> &'static str {
        match Self::final_phase(reason) {
            SessionPhase::Failed => "death",
            _ => "stop",
        }
    }
}

/// What the reconciler observed this pass. The dataset is looked at only in
/// the phases that need it ([`needs_dataset`]); elsewhere it is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub container: Option<ContainerObs>,
    pub dataset: Option<DatasetObs>,
    /// Whether the snapshot planned in status exists (phase `Stopping` only).
    pub planned_snapshot_exists: Option<bool>,
    /// Whether the dataset was looked at (`dataset: None` then means absent).
    pub dataset_observed: bool,
    /// Established connections to the workload's port, looked at only when
    /// an idle stop is near ([`super::probes_activity`]).
    pub open_connections: Option<u32>,
}

/// Settings the decisions depend on.
#[derive(Debug, Clone)]
pub struct Policy {
    pub container_owner: (u32, u32),
    pub start_timeout: Duration,
    pub resync: Duration,
    pub probe_interval: Duration,
    /// How long before an idle stop the agent looks for open connections
    /// (at most half the idle timeout).
    pub activity_lead: Duration,
}

/// The next step for a session. Its [`StepKind`] (the step without its
/// data) is what the step hook and the metrics see.
#[derive(Debug, Clone, PartialEq, strum::EnumDiscriminants)]
#[strum_discriminants(name(StepKind), derive(Hash, strum::IntoStaticStr))]
pub enum Step {
    /// Nothing to do now: look again after this long, or on a change.
    Wait(Option<Duration>),
    /// Check the inputs (Pack, image, restore snapshot) and write `Starting`.
    Begin,
    CreateDataset,
    MountDataset,
    ChownWorkspace,
    CreateContainer,
    StartContainer,
    /// Dial the workload; when it answers, write `Running`, `Ready=True`.
    AwaitPort {
        addr: SocketAddr,
    },
    /// Write `Stopping` with the cause and the snapshot to take.
    BeginStop(StopCause),
    StopContainer,
    Snapshot {
        name: String,
    },
    /// Write the final phase (`Stopped` or `Failed`) and free the GPUs.
    Finish,
    /// Fail at once (nothing running to wind down).
    Fail {
        reason: SessionReason,
        message: String,
    },
    /// Stop a container that runs although its session is over.
    StopStray,
    /// Remove the stopped container of an earlier run, before a resumed
    /// session starts a new one under the same name.
    RemoveContainer,
    /// Write `lastActivityAt: now`: an idle stop was near while
    /// connections to the workload were open (a websocket through the proxy).
    TouchActivity,
}

impl StepKind {
    /// The steps of a start that goes well, in order (mounting is needed
    /// only after a daemon restart).
    pub const START: [StepKind; 6] = [
        StepKind::Begin,
        StepKind::CreateDataset,
        StepKind::ChownWorkspace,
        StepKind::CreateContainer,
        StepKind::StartContainer,
        StepKind::AwaitPort,
    ];
    /// The steps of a stop, in order.
    pub const STOP: [StepKind; 4] = [
        StepKind::BeginStop,
        StepKind::StopContainer,
        StepKind::Snapshot,
        StepKind::Finish,
    ];

    /// The step's name, as metrics and logs show it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Step {
    /// `None` for [`Step::Wait`].
    pub fn kind(&self) -> Option<StepKind> {
        match self {
            Step::Wait(_) => None,
            step => Some(step.into()),
        }
    }
}

/// Whether the session ran before (it is being resumed): its workspace
/// was made and held the owner's work, so it must still be there.
pub fn ran_before(s: &Session) -> bool {
    s.status.as_ref().is_some_and(|st| {
        st.started_at.is_some() && st.workspace.as_ref().is_some_and(|w| w.dataset.is_some())
    })
}

/// Whether this pass must look at the dataset.
pub fn needs_dataset(s: &Session) -> bool {
    matches!(
        s.phase(),
        SessionPhase::Scheduled | SessionPhase::Starting | SessionPhase::Stopping
    )
}

/// The snapshot planned when the session started stopping: the last one
/// recorded while the phase is `Stopping` (a session stops only once).
pub fn planned_snapshot(s: &Session) -> Option<String> {
    if s.phase() != SessionPhase::Stopping {
        return None;
    }
    let st = s.status.as_ref()?;
    let last = st.workspace.as_ref()?.snapshots.last()?;
    if last.starts_with("stop-") || last.starts_with("death-") {
        Some(last.clone())
    } else {
        None
    }
}

/// What a step may have changed in the world, so the next pass of the same
/// reconcile reads only that again.
#[derive(Debug, Clone, Copy)]
pub struct Touched {
    pub container: bool,
    pub dataset: bool,
}

impl Touched {
    /// Everything: what the first pass of a reconcile reads.
    pub const ALL: Touched = Touched {
        container: true,
        dataset: true,
    };

    /// What a step of this kind may have changed.
    pub fn by(kind: StepKind) -> Touched {
        let (container, dataset) = match kind {
            StepKind::Wait
            | StepKind::Begin
            | StepKind::AwaitPort
            | StepKind::BeginStop
            | StepKind::TouchActivity
            | StepKind::Finish => (false, false),
            StepKind::CreateDataset
            | StepKind::MountDataset
            | StepKind::ChownWorkspace
            | StepKind::Snapshot => (false, true),
            StepKind::CreateContainer
            | StepKind::StartContainer
            | StepKind::StopContainer
            | StepKind::StopStray
            | StepKind::RemoveContainer => (true, false),
            StepKind::Fail => (true, true),
        };
        Touched { container, dataset }
    }
}

/// Whether a session whose container is not under its own name must be
/// looked for under another one (created with another prefix) before a
/// container is created or declared missing: never a second container.
pub fn looks_for_other_container(s: &Session, w: &World, owner: (u32, u32)) -> bool {
    let about_to_create = s.phase() == SessionPhase::Starting
        && w.dataset
            .as_ref()
            .is_some_and(|d| d.mounted && d.owner == Some(owner));
    let should_have_one = matches!(s.phase(), SessionPhase::Running | SessionPhase::Stopping);
    about_to_create || should_have_one
}

/// What happens to a Session's dataset when the Session is deleted. The
/// annotation `medforge.dev/workspace-on-delete: snapshot|keep|destroy` on a
/// Session overrides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceOnDelete {
    /// Take a `BeforeDelete` snapshot, then retire the dataset (unmounted,
    /// holding only its snapshots, destroyed with the last of them). The
    /// snapshots stay, as resources, under retention.
    #[default]
    Snapshot,
    /// Keep the dataset as it is (an admin prunes it).
    Keep,
    /// Destroy the dataset with its snapshots and their records.
    Destroy,
}

/// What happens to the session's dataset: its annotation overrides the
/// agent's policy.
pub fn on_delete(s: &Session, policy: WorkspaceOnDelete) -> WorkspaceOnDelete {
    match s
        .annotations()
        .get(WORKSPACE_ON_DELETE_ANNOTATION)
        .map(String::as_str)
    {
        Some("snapshot") => WorkspaceOnDelete::Snapshot,
        Some("destroy") => WorkspaceOnDelete::Destroy,
        Some("keep") => WorkspaceOnDelete::Keep,
        _ => policy,
    }
}
