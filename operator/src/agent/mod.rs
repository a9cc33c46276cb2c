//! The node agent: runs on each GPU host and turns the Sessions bound to it
//! into containers with GPUs and ZFS workspaces, and keeps them true through
//! crashes of itself, of containers and of Docker.
//!
//! One concern per module:
//!
//! - `config`: how the agent runs, and the state it reports;
//! - `controller`: the kube-runtime entry points (`reconcile`, the error
//!   policy);
//! - `error`: the reconcile error every layer returns, and its cause chain;
//! - `context` and `state`: what the reconciler works with (and how it
//!   writes a status), and the small typed states it keeps between
//!   reconciles;
//! - `driver`: observe, decide, apply, until there is nothing to do now;
//! - `plan` decides the next step and builds the status it writes (no I/O);
//! - `steps`: one executor per kind of step (dataset, container, port wait,
//!   stop and snapshot);
//! - `cleanup`: the finalizer's cleanup on delete;
//! - `packs`: pre-pulls and this node's image state on each Pack's status;
//! - `pulls`: the node's image pulls (one per image, bounded, retried with
//!   backoff, with progress), which the `begin` step looks at;
//! - `snapshots`: the controller of this node's `WorkspaceSnapshot`s
//!   (manual snapshots, the finalizer that destroys them, retention);
//! - `runtime` holds the traits every I/O goes through; `docker`, `zfs` and
//!   `dialer` implement them on the real things, `testing` fakes them
//!   (feature `testing`);
//! - `events` turns Docker's container events into reconciles;
//! - `recovery` finds containers no Session owns; `tasks` runs the orphan
//!   sweep and the other side tasks, east-west isolation among them;
//! - `metrics` serves `/metrics`, `/healthz` and `/readyz`.
//!
//! The reconciler's layers point one way: `controller` → `driver` and
//! `cleanup` → `steps` → `context`, `plan`, `error` and `runtime`; no module
//! imports one that imports it back, and a parent module only declares,
//! composes and re-exports its children.
//!
//! [`run`] wires it all: a kube-runtime `Controller` over the Sessions whose
//! `status.nodeName` is this node, the Docker event watcher, the GpuNode
//! heartbeat ([`crate::node`]), the orphan sweep, the isolation of the
//! sessions' network and the metrics server.
//! See `docs/sessions.md` for the lifecycle it implements.

mod cleanup;
mod config;
pub mod context;
pub mod controller;
pub mod dialer;
pub mod docker;
mod driver;
mod error;
pub mod events;
pub mod metrics;
pub mod packs;
pub mod plan;
pub mod pulls;
pub mod recovery;
pub mod runtime;
pub mod snapshots;
pub mod spec;
mod start;
mod state;
mod steps;
mod tasks;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod zfs;

pub use cleanup::cleanup;
pub use config::{AgentConfig, AgentState, PullPolicy, StepHook};
pub use driver::drive;
pub use plan::WorkspaceOnDelete;
pub use start::{AgentError, run};
pub use state::Peers;
