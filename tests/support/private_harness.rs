//! A harness of a test's own: its own state directory, so its own network
//! namespace, dockerd and pool (zfs-fuse is the machine's one daemon), torn
//! down when the guard is dropped, also when the test fails. Used by the
//! chaos soak (one host) and the multi-node test (one per node). Included
//! with `#[path]` next to `mod support;`.
#![allow(dead_code)]

use std::time::Duration;

use medforge_testkit::{DownOptions, HarnessConfig};

/// Tears down the harness of `config` (its containers, dockerd, pool and
/// namespace, by PID) when dropped.
pub struct PrivateHarness {
    pub config: HarnessConfig,
}

impl PrivateHarness {
    /// A guard for the harness whose state lives in `state_dir`; create it
    /// before starting the harness, so a start that fails halfway is torn
    /// down too.
    pub fn new(state_dir: impl Into<std::path::PathBuf>) -> PrivateHarness {
        PrivateHarness {
            config: HarnessConfig::from_env().with_state_dir(state_dir),
        }
    }
}

impl Drop for PrivateHarness {
    fn drop(&mut self) {
        let options = DownOptions {
            wait: Duration::from_secs(30),
            force: true,
        };
        if let Err(e) = medforge_testkit::down(&self.config, &options) {
            eprintln!(
                "private harness {}: teardown: {e}",
                self.config.state_dir.display()
            );
        }
    }
}
