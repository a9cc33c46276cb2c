//! The harness when its zfs-fuse stops answering.
//!
//! The daemon is stopped with SIGSTOP: to the harness that looks like the
//! hang seen in CI (it runs, its socket accepts, nothing answers), though
//! it is not a deadlock inside zfs-fuse. The test replaces the one daemon
//! every test uses, so nextest runs it alone (`.config/nextest.toml`).

use std::time::Duration;

use medforge_testkit::{Harness, HarnessConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn pid_in(file: &std::path::Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn runs_as_zfs_fuse(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "zfs-fuse")
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

/// Lets the stopped daemon go on if the test ends before the harness
/// replaced it, so that it does not hold up the tests after this one.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        if runs_as_zfs_fuse(self.0) {
            let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_harness_zfs_fuse_that_stops_answering_is_replaced_and_its_pool_mounted_again() {
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let layout = harness.layout().clone();
    let before = pid_in(&layout.zfs_fuse_pidfile)
        .filter(|&pid| runs_as_zfs_fuse(pid))
        .expect(
            "the running zfs-fuse was not started by a harness, so this test may not stop it: \
             stop it and let `mf-harness up` start one",
        );
    // Written before the hang, read after.
    let note = scope.dataset_mountpoint().join("before-the-hang");
    std::fs::write(&note, "kept").unwrap();
    let snapshot = format!("{}@kept", scope.dataset());
    let zfs = harness.zfs_binary().to_path_buf();
    let status = std::process::Command::new(&zfs)
        .args(["snapshot", &snapshot])
        .status()
        .unwrap();
    assert!(status.success(), "zfs snapshot {snapshot}");

    kill(Pid::from_raw(before), Signal::SIGSTOP).unwrap();
    let _resume = Resume(before);

    let mut config = HarnessConfig::from_env();
    config.start_timeout = Duration::from_secs(3);
    let up = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || medforge_testkit::up(&config))
            .await
            .unwrap()
    };
    up.expect("up replaces the daemon that does not answer");

    let after = pid_in(&layout.zfs_fuse_pidfile).expect("a new PID file");
    assert_ne!(after, before, "the same daemon is recorded");
    assert!(
        runs_as_zfs_fuse(after),
        "the new daemon {after} does not run"
    );
    assert!(
        !runs_as_zfs_fuse(before),
        "the hung daemon {before} still runs"
    );
    let status = medforge_testkit::status(&config).unwrap();
    assert!(status.is_up(), "{status}");
    // The scope's dataset is mounted again, with what was written to it.
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "kept");
    scope.cleanup().await.expect("cleanup after the restart");
}
