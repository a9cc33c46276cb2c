//! The node agent when its dockerd restarts under running sessions.
//!
//! Restarting the shared dockerd would disturb every other test, so this
//! one brings up a private harness (its own namespace, dockerd and pool, on
//! the shared zfs-fuse) and restarts that dockerd.

mod agent_support;

use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use medforge_crds::{GpuNode, SessionPhase};
use medforge_testkit::{DownOptions, Harness, HarnessConfig};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use agent_support::{Env, is_running_and_ready};

const DEADLINE: Duration = Duration::from_secs(30);

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

async fn node_ready(env: &Env) -> Option<(String, String)> {
    let nodes: Api<GpuNode> = Api::all(env.client.clone());
    let node = nodes.get_opt(&env.node).await.ok()??;
    let ready = node
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((ready.status, ready.message))
}

async fn wait_node(env: &Env, what: &str, pred: impl Fn(&str, &str) -> bool) -> String {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some((status, message)) = node_ready(env).await
            && pred(&status, &message)
        {
            return message;
        }
        assert!(
            Instant::now() < until,
            "the GpuNode never showed {what}: {:?}",
            node_ready(env).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Brings the private harness down when the test ends, passed or not.
struct PrivateHarness {
    config: HarnessConfig,
    _state: tempfile::TempDir,
}

impl Drop for PrivateHarness {
    fn drop(&mut self) {
        let options = DownOptions {
            wait: Duration::from_secs(30),
            force: std::thread::panicking(),
        };
        if let Err(e) = medforge_testkit::down(&self.config, &options) {
            eprintln!("private harness teardown: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rides_out_a_dockerd_restart_and_reports_what_it_finds() {
    // The shared harness keeps zfs-fuse up (it is not ours to stop).
    let _shared = Harness::get().await.expect("shared harness");
    let state = tempfile::tempdir().unwrap();
    let config = HarnessConfig::from_env().with_state_dir(state.path().join("h"));
    let _teardown = PrivateHarness {
        config: config.clone(),
        _state: state,
    };
    let private = Harness::start(config.clone())
        .await
        .expect("private harness");
    let pidfile = private.layout().docker_pidfile.clone();
    let env = Env::with_harness(private).await;

    let agent = env.spawn_agent(env.config());
    env.create_bound("before", Env::spec("workload", 1)).await;
    let s = env
        .wait_for("before", "Running", DEADLINE, is_running_and_ready)
        .await;
    let dataset = env.dataset_of(&s);
    wait_node(&env, "Ready=True", |status, _| status == "True").await;

    // dockerd stops (as `systemctl restart docker` does): SIGTERM, and it
    // stops its containers on the way out.
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    kill(Pid::from_raw(pid), Signal::SIGTERM).unwrap();
    let until = Instant::now() + DEADLINE;
    while pid_alive(pid) {
        assert!(Instant::now() < until, "dockerd {pid} did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = wait_node(&env, "Docker down", |status, _| status == "False").await;
    assert!(message.contains("Docker"), "{message}");
    assert!(
        !agent.is_finished(),
        "the agent keeps running while Docker is down"
    );

    // A session bound meanwhile shows the outage as a condition, and the
    // failed reconcile as a Warning Event; it is retried with backoff.
    env.create_bound("during", Env::spec("workload", 1)).await;
    env.wait_for("during", "ContainerReady=Unknown", DEADLINE, |s| {
        s.condition(medforge_crds::SessionCondition::ContainerReady)
            .is_some_and(|c| c.status == "Unknown" && c.reason == "DockerUnavailable")
    })
    .await;
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let until = Instant::now() + DEADLINE;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("DockerUnavailable")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("during")
        }) {
            break;
        }
        assert!(Instant::now() < until, "no DockerUnavailable Warning event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!agent.is_finished());

    // dockerd comes back on the same data directory.
    let again = config.clone();
    tokio::task::spawn_blocking(move || medforge_testkit::up(&again))
        .await
        .unwrap()
        .expect("dockerd restarts");
    wait_node(&env, "Ready=True again", |status, _| status == "True").await;
    assert!(!agent.is_finished());

    // What it finds: the session's container was stopped with dockerd, so
    // the session failed, with a death snapshot.
    let s = env
        .wait_phase("before", SessionPhase::Failed, DEADLINE)
        .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("ContainerExited"), "{st:?}");
    let snap = st.workspace.unwrap().snapshots.pop().unwrap();
    assert!(snap.starts_with("death-"));
    assert!(
        env.snapshots(&dataset)
            .await
            .contains(&format!("{dataset}@{snap}"))
    );
    assert_eq!(
        env.containers_of(&s).await.len(),
        1,
        "never a second container"
    );

    // The one bound during the outage starts once Docker is back.
    let s = env
        .wait_for("during", "Running", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(env.containers_of(&s).await.len(), 1);

    // And new sessions run on the restarted daemon.
    env.create_bound("after", Env::spec("workload", 1)).await;
    let s = env
        .wait_for("after", "Running", DEADLINE, is_running_and_ready)
        .await;
    let answer = env.harness.http_get(Env::upstream(&s), "/").await.unwrap();
    assert_eq!(answer.text(), "after");

    env.finish(agent).await;
}
