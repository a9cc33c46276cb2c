//! The reconciler's decisions, without I/O: from a Session, what was
//! observed of its container and dataset, and the time, the one next step;
//! and the status each step writes.
//!
//! Every step is idempotent and keyed by the Session's uid (the container by
//! its name and uid label, the dataset by its name), so a step repeated after
//! a crash finds its own work done and moves on. The one thing that is not
//! naturally idempotent, the name of the snapshot taken on stop, is written
//! to the status (phase `Stopping`) before the container is stopped, so a
//! restarted agent takes the same snapshot name.
//!
//! `model` holds what the decisions work with (the observed world, the
//! policy, the steps); `decide` picks the step; `status` builds the status
//! each step writes; `record` the `WorkspaceSnapshot` of a snapshot taken. This module only composes them: its children import
//! from one another, never from here.

mod decide;
mod model;
mod record;
mod retention;
mod status;
#[cfg(test)]
mod tests;

pub use decide::{activity_probe_at, deadline, decide, exit_message, probes_activity, upstream_of};
pub use model::{
    Policy, Step, StepKind, StopCause, Touched, WorkspaceOnDelete, World,
    looks_for_other_container, needs_dataset, on_delete, planned_snapshot,
};
pub use record::{
    SnapshotOf, found_snapshot, predelete_name, snapshot_record, snapshot_status, stop_record,
    taken_at_of_name,
};
pub use retention::{Kept, expired};
pub use status::{
    pull_message, status_active, status_failed, status_finished, status_gpu_in_use,
    status_image_pulling, status_pull_failed, status_running, status_runtime_unavailable,
    status_starting, status_stopping, status_waiting, status_waiting_for_port,
};
