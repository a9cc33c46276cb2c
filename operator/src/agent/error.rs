//! The reconcile [`Error`]: why a reconcile failed, its category (the
//! metric label and Event reason), and [`cause_chain`], its one-line note.
//! Every layer of the reconciler returns it.

use medforge_crds::{SessionCondition, SessionReason};

use super::runtime::{ContainerError, WorkspaceError};

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

impl Error {
    /// A runtime that does not answer, as the condition it concerns and the
    /// reason shown there; `None` for every other error.
    pub fn outage(&self) -> Option<(SessionCondition, SessionReason)> {
        match self {
            Error::Container(ContainerError::Unavailable { .. }) => Some((
                SessionCondition::ContainerReady,
                SessionReason::DockerUnavailable,
            )),
            Error::Workspace(WorkspaceError::Unavailable { .. }) => Some((
                SessionCondition::WorkspaceReady,
                SessionReason::ZfsUnavailable,
            )),
            _ => None,
        }
    }

    /// Someone else wrote the session since we read it (HTTP 409).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.code == 409)
    }
}
