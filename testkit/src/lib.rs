//! MedForge test harness: the real components the tests share.
//!
//! Once per test run (and reused while up, across test processes, serialised
//! by a lock file in the state directory) the harness brings up:
//!
//! - a network namespace `mf-test-<id>` with only `lo` and no route out;
//! - a dockerd inside it (`nsenter --net=… dockerd --data-root … --exec-root …
//!   --pidfile … -H unix://… --cgroup-parent /medforge-harness-<id>`);
//! - zfs-fuse (reused when one runs; one per machine) and a 1 GiB
//!   file-backed pool `mfh<id>` mounted under `/run/medforge-harness/<id>/pool`.
//!
//! The state directory is `<workspace>/target/harness`, or `$MEDFORGE_HARNESS_DIR`;
//! `<id>` derives from its path. `mf-harness up|down|status` drives it by hand.
//!
//! ```no_run
//! use medforge_testkit::Harness;
//! # async fn example() -> medforge_testkit::Result<()> {
//! let harness = Harness::get().await?;          // up, or reuse
//! let mut scope = harness.scope().await?;       // unique prefix + dataset <pool>/<prefix>
//! let image = harness.workload_image().await?;  // medforge-workload:<hash>, FROM scratch
//! let ws = scope.create_dataset("ws", &[("quota", "64M")]).await?;
//! // … create a container named scope.name("x") with scope.labels(): harness.create_and_start(…) …
//! // … talk to it: harness.http_get(SocketAddr::new(ip, 8080), "/").await? …
//! scope.cleanup().await?;                       // containers and datasets gone
//! # Ok(()) }
//! ```

mod agent_node;
mod dockerd;
mod error;
mod eventually;
mod fixtures;
mod harness;
mod http;
mod image;
mod layout;
mod lifecycle;
mod netns;
mod process;
mod registry;
mod scope;
mod zfs;

pub use agent_node::{node_runtime, start_agent_node};
pub use bollard;
pub use dockerd::API_VERSION as DOCKER_API_VERSION;
pub use error::{HarnessError, Result};
pub use eventually::{Outcome, POLL_INTERVAL, TimedOut, eventually, try_eventually};
pub use fixtures::{
    SessionSpecBuilder, assert_condition, create, merge, node_condition, publish_ready_node,
    ready_node_status, session_spec,
};
pub use harness::Harness;
pub use http::{DEFAULT_TIMEOUT as HTTP_TIMEOUT, HttpResponse, request_with_headers};
pub use hyper::Method;
pub use image::{
    ENV_WORKLOAD_BIN, WORKLOAD_REPOSITORY, build_workload_binary, ensure_image_from_binary,
    ensure_workload_image, workload_target_dir,
};
pub use layout::{ENV_HARNESS_DIR, HarnessConfig, Layout, workspace_root};
pub use lifecycle::{DownOptions, DownReport, Status, down, status, up};
pub use netns::connect as connect_in_netns;
pub use process::{
    Binaries, REQUIREMENTS, Requirement, default_search_path, fake_program, find_in_path,
    spawn_impostor,
};
pub use registry::{Registry, remove_image};
pub use scope::{CleanupReport, Dataset, SCOPE_LABEL, TestScope, random_prefix};
pub use zfs::DAEMON_SOCKET as ZFS_DAEMON_SOCKET;

/// The environment variable `name` parsed as a `T`; `default` when it is
/// unset or does not parse (a test's or benchmark's knob).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
