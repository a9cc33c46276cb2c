//! The harness error type: every failure names its component, and a component
//! that cannot start names its command line and the tail of its log.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while bringing up, using or tearing down the harness.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program the harness needs is not installed.
    #[error(
        "{component}: `{binary}` not found (searched {searched}); install the Debian package \
         `{package}` (apt-get install -y {package})"
    )]
    MissingBinary {
        component: &'static str,
        binary: &'static str,
        package: &'static str,
        searched: String,
    },

    /// The harness needs root (network namespaces, mounts, dockerd).
    #[error("{component}: the harness must run as root (network namespaces, dockerd, zfs-fuse)")]
    NotRoot { component: &'static str },

    /// A long-running component did not come up.
    #[error(
        "{component} failed to start: {reason}\n  command: {command}\n  log {log}:\n{tail}",
        log = log.display()
    )]
    StartFailed {
        component: &'static str,
        command: String,
        reason: String,
        log: PathBuf,
        /// The last lines of the component's log.
        tail: String,
    },

    /// A one-shot command exited unsuccessfully.
    #[error("{component}: `{command}` failed ({status}): {stderr}")]
    CommandFailed {
        component: &'static str,
        command: String,
        status: String,
        stderr: String,
    },

    /// Polling for a state ran past its deadline.
    #[error("{component}: {what} (waited {waited:?})")]
    Timeout {
        component: &'static str,
        what: String,
        waited: Duration,
    },

    /// An I/O error with what was being done.
    #[error("{component}: {context}: {source}")]
    Io {
        component: &'static str,
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The Docker API answered with an error.
    #[error("docker: {context}: {source}")]
    Docker {
        context: String,
        #[source]
        source: bollard::errors::Error,
    },

    /// An HTTP exchange with a container failed.
    #[error("http {method} {url}: {detail}")]
    Http {
        method: String,
        url: String,
        detail: String,
    },

    /// The harness is in use by running tests (for `down`).
    #[error("harness {state_dir}: {detail}", state_dir = state_dir.display())]
    Busy { state_dir: PathBuf, detail: String },

    /// Anything else, with the component it concerns.
    #[error("{component}: {detail}")]
    Other {
        component: &'static str,
        detail: String,
    },
}

impl HarnessError {
    pub(crate) fn io(
        component: &'static str,
        context: impl Into<String>,
    ) -> impl FnOnce(std::io::Error) -> HarnessError {
        let context = context.into();
        move |source| HarnessError::Io {
            component,
            context,
            source,
        }
    }

    pub(crate) fn docker(
        context: impl Into<String>,
    ) -> impl FnOnce(bollard::errors::Error) -> HarnessError {
        let context = context.into();
        move |source| HarnessError::Docker { context, source }
    }

    pub(crate) fn other(component: &'static str, detail: impl Into<String>) -> HarnessError {
        HarnessError::Other {
            component,
            detail: detail.into(),
        }
    }

    /// The component this error concerns (`dockerd`, `zfs-fuse`, `netns`, …), if any.
    pub fn component(&self) -> Option<&'static str> {
        match self {
            HarnessError::MissingBinary { component, .. }
            | HarnessError::NotRoot { component }
            | HarnessError::StartFailed { component, .. }
            | HarnessError::CommandFailed { component, .. }
            | HarnessError::Timeout { component, .. }
            | HarnessError::Io { component, .. }
            | HarnessError::Other { component, .. } => Some(component),
            HarnessError::Docker { .. } => Some("docker"),
            HarnessError::Http { .. } | HarnessError::Busy { .. } => None,
        }
    }

    /// Whether this is ZFS's "dataset is busy" (worth a retry after a short wait).
    pub fn is_busy(&self) -> bool {
        matches!(self, HarnessError::CommandFailed { stderr, .. }
            if stderr.contains("busy"))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
