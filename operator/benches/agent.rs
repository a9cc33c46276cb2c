//! Benchmark (not a test) of the node agent against the embedded control
//! plane, the harness's dockerd and zfs-fuse, and the test workload:
//!
//! - create → Ready and stop → Stopped latency (p50/p99 over N sessions, one
//!   at a time), next to bare `docker create`+`start` and `docker stop` of
//!   the same container measured in the same run, as ratios;
//! - kill → Failed: how soon a container killed from outside is seen;
//! - the time a restarted agent takes to adopt ADOPT running sessions, and
//!   that none of their containers was restarted.
//!
//! Run: `cargo bench -p medforge-operator --bench agent`
//! (`MEDFORGE_BENCH_SESSIONS`, default 20; `MEDFORGE_BENCH_ADOPT`, default 200).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{Session, SessionPhase};
use medforge_operator::agent::docker::{DockerContainers, create_body};
use medforge_operator::agent::runtime::{ContainerSpec, Containers};
use medforge_operator::agent::testing::{self, TestNode, WORKLOAD_PACK, is_running_and_ready};
use medforge_testkit::bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, StopContainerOptions,
};
use medforge_testkit::{Harness, TestScope};
use tokio::sync::Notify;

/// The benchmark's node: the harness's dockerd and zfs-fuse through a
/// scope, an embedded control plane, and the agent's side of it.
struct Env {
    harness: Harness,
    scope: TestScope,
    control_plane: TestControlPlane,
    node: TestNode,
}

impl std::ops::Deref for Env {
    type Target = TestNode;

    fn deref(&self) -> &TestNode {
        &self.node
    }
}

impl Env {
    async fn new() -> Env {
        let harness = Harness::get().await.expect("harness");
        let scope = harness.scope().await.expect("scope");
        let control_plane = TestControlPlane::start().await;
        let node =
            medforge_testkit::start_agent_node(&harness, &scope, control_plane.client.clone())
                .await;
        Env {
            harness,
            scope,
            control_plane,
            node,
        }
    }

    async fn cleanup(mut self) {
        self.scope.cleanup().await.expect("scope cleanup");
        self.node.remove_networks().await;
        self.control_plane.shutdown().await;
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    Stats {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

/// A row of figures next to bare Docker doing the same, with the target:
/// within 20 % of bare Docker plus 100 ms (p50).
fn compared_row(figure: &str, bare_what: &str, agent: &Stats, bare: &Stats) {
    let target = ms(bare.p50) * 1.2 + 100.0;
    println!(
        "| {figure} | {:.0} ms | {:.0} ms | {:.0} ms ({bare_what}; p99 {:.0} ms) | {:.2}× | < {:.0} ms: {} |",
        ms(agent.p50),
        ms(agent.p99),
        ms(bare.p50),
        ms(bare.p99),
        ms(agent.p50) / ms(bare.p50),
        target,
        met(ms(agent.p50) < target)
    );
}

/// When each session was first seen Ready, Stopped and Failed, through a watch.
#[derive(Default)]
struct Seen {
    ready: HashMap<String, Instant>,
    stopped: HashMap<String, Instant>,
    failed: HashMap<String, Instant>,
    /// First seen Running and Ready after a stop (a resume).
    resumed: HashMap<String, Instant>,
    /// First seen Stopped with two snapshots (stopped again after a resume).
    stopped_again: HashMap<String, Instant>,
    /// First seen with reason ContainerExited (phase Stopping or Failed).
    exited: HashMap<String, Instant>,
}

struct Watch {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl Watch {
    fn start(env: &Env) -> Watch {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (seen.clone(), changed.clone());
        let stream = watcher(env.sessions(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Ok(Some(session)) = stream.try_next().await {
                let now = Instant::now();
                let name = session.name_any();
                let mut seen = s.lock().unwrap();
                let st = session.status.clone().unwrap_or_default();
                if is_running_and_ready(&session) {
                    seen.ready.entry(name.clone()).or_insert(now);
                    if st.stopped_generation.is_some() {
                        seen.resumed.entry(name.clone()).or_insert(now);
                    }
                }
                let snapshots = st.workspace.map_or(0, |w| w.snapshots.len());
                if session.phase() == SessionPhase::Stopped && snapshots >= 2 {
                    seen.stopped_again.entry(name.clone()).or_insert(now);
                }
                if session.status.as_ref().and_then(|st| st.reason.as_deref())
                    == Some(medforge_crds::SessionReason::ContainerExited.as_str())
                {
                    seen.exited.entry(name.clone()).or_insert(now);
                }
                match session.phase() {
                    SessionPhase::Stopped => {
                        seen.stopped.entry(name).or_insert(now);
                    }
                    SessionPhase::Failed => {
                        seen.failed.entry(name).or_insert(now);
                    }
                    _ => {}
                }
                drop(seen);
                c.notify_waiters();
            }
        });
        Watch { seen, changed }
    }

    async fn wait(&self, what: &str, pick: impl Fn(&Seen) -> Option<Instant>) -> Instant {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // Registered before the check, so no notification is missed.
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(t) = pick(&self.seen.lock().unwrap()) {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            let _ = tokio::time::timeout(left.min(Duration::from_millis(500)), notified).await;
        }
    }
}

/// The container the agent would create, for the bare Docker measurement.
fn bare_spec(env: &Env, i: usize, workspace: std::path::PathBuf, network: &str) -> ContainerSpec {
    let mut labels: std::collections::BTreeMap<String, String> =
        env.scope.labels().into_iter().collect();
    labels.insert(
        medforge_operator::agent::runtime::labels::PORT.into(),
        "8080".into(),
    );
    ContainerSpec {
        name: env.scope.name(&format!("bare-{i}")),
        image: env.image.clone(),
        cmd: None,
        env: vec![
            format!("MEDFORGE_SESSION=bare-{i}"),
            "NVIDIA_VISIBLE_DEVICES=GPU-x".into(),
        ],
        labels,
        hostname: format!("bare-{i}"),
        user: "1000:1000".into(),
        workspace,
        memory_bytes: None,
        nano_cpus: None,
        pids_limit: Some(4096),
        shm_bytes: None,
        tmp_bytes: 1 << 30,
        gpus: vec![],
        device_requests: false,
        network: network.to_string(),
        cgroup_parent: None,
        stop_timeout: Duration::from_secs(5),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let n = env_usize("MEDFORGE_BENCH_SESSIONS", 20);
    let adopt = env_usize("MEDFORGE_BENCH_ADOPT", 200);
    let env = Env::new().await;
    let config = env.config();
    let docker = env.harness.docker().clone();
    let runtime = DockerContainers::connect(&env.harness.layout().docker_socket).unwrap();
    runtime.ensure_network(&config.network).await.unwrap();
    println!("node agent benchmark: {n} sessions one at a time, adoption of {adopt}");

    // 1 and 2, interleaved so that both see the same load: the same
    // container created, started and stopped directly (bare Docker), and a
    // session through the agent, create → Ready and stop → Stopped.
    let watch = Watch::start(&env);
    let agent = env.spawn_agent(config.clone());
    let mut bare_start = Vec::new();
    let mut bare_stop = Vec::new();
    let mut ready = Vec::new();
    let mut stopped = Vec::new();
    let mut resumed = Vec::new();
    for i in 0..n {
        let ds = env
            .scope
            .create_dataset(&format!("bare/{i}"), &[])
            .await
            .unwrap();
        std::os::unix::fs::chown(&ds.mountpoint, Some(1000), Some(1000)).unwrap();
        let spec = bare_spec(&env, i, ds.mountpoint.clone(), &config.network);
        let t = Instant::now();
        let id = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(spec.name.clone()),
                    ..Default::default()
                }),
                create_body(&spec),
            )
            .await
            .unwrap()
            .id;
        docker.start_container(&id, None).await.unwrap();
        bare_start.push(t.elapsed());
        let t = Instant::now();
        docker
            .stop_container(
                &id,
                Some(StopContainerOptions {
                    t: Some(5),
                    signal: None,
                }),
            )
            .await
            .unwrap();
        bare_stop.push(t.elapsed());
        env.remove_container(&id).await;

        let name = format!("lat-{i}");
        let t = Instant::now();
        env.create_bound(&name, testing::spec(WORKLOAD_PACK, 1))
            .await;
        tracing::info!(session = %name, "bound");
        let at = watch
            .wait(&format!("{name} Ready"), |s| s.ready.get(&name).copied())
            .await;
        tracing::info!(session = %name, took = ?(at - t), "seen Ready");
        ready.push(at - t);
        let t = Instant::now();
        tracing::info!(session = %name, "stop asked");
        env.set_state(&name, "Stopped").await;
        let at = watch
            .wait(&format!("{name} Stopped"), |s| {
                s.stopped.get(&name).copied()
            })
            .await;
        tracing::info!(session = %name, took = ?(at - t), "seen Stopped");
        stopped.push(at - t);

        // Resume on the same workspace: the old container removed, a new one
        // started; then stopped again, to free its GPU.
        let t = Instant::now();
        env.resume_bound(&name).await;
        let at = watch
            .wait(&format!("{name} Ready again"), |s| {
                s.resumed.get(&name).copied()
            })
            .await;
        tracing::info!(session = %name, took = ?(at - t), "seen Ready again");
        resumed.push(at - t);
        env.set_state(&name, "Stopped").await;
        watch
            .wait(&format!("{name} Stopped again"), |s| {
                s.stopped_again.get(&name).copied()
            })
            .await;
    }

    // 3. A container killed from outside → Failed.
    let mut deaths = Vec::new();
    let mut noticed = Vec::new();
    for i in 0..n {
        let name = format!("death-{i}");
        let s = env
            .create_bound(&name, testing::spec(WORKLOAD_PACK, 0))
            .await;
        watch
            .wait(&format!("{name} Ready"), |s| s.ready.get(&name).copied())
            .await;
        let id = env.containers_of(&s).await[0].id.clone().unwrap();
        let t = Instant::now();
        tracing::info!(session = %name, "kill");
        docker
            .kill_container(&id, None::<KillContainerOptions>)
            .await
            .unwrap();
        let at = watch
            .wait(&format!("{name} Failed"), |s| s.failed.get(&name).copied())
            .await;
        deaths.push(at - t);
        let seen = watch.seen.lock().unwrap().exited[&name];
        tracing::info!(session = %name, noticed = ?(seen - t), failed = ?(at - t), "death");
        noticed.push(seen - t);
    }

    // 4. Adoption: ADOPT running sessions, the agent restarted.
    let t = Instant::now();
    let mut sessions: Vec<Session> = Vec::new();
    for i in 0..adopt {
        sessions.push(
            env.create_bound(&format!("adopt-{i:03}"), testing::spec(WORKLOAD_PACK, 0))
                .await,
        );
    }
    for s in &sessions {
        let name = s.name_any();
        watch
            .wait(&format!("{name} Ready"), |seen| {
                seen.ready.get(&name).copied()
            })
            .await;
    }
    let started_all = t.elapsed();
    let mut before = HashMap::new();
    for s in &sessions {
        let id = env.containers_of(s).await[0].id.clone().unwrap();
        let facts = env.container_facts(&id).await;
        before.insert(id, facts.1);
    }
    agent.kill().await;
    let t = Instant::now();
    let restarted = env.spawn_agent(config.clone());
    // Every session this agent has (finished ones included) reconciled once.
    let total = n + n + adopt;
    restarted
        .wait_state("all sessions adopted", |s| s.sessions_reconciled >= total)
        .await;
    let adoption = t.elapsed();
    let mut restarted_containers = 0;
    for (id, started) in &before {
        let (running, started_now, restarts) = env.container_facts(id).await;
        if !running || &started_now != started || restarts != 0 {
            restarted_containers += 1;
        }
    }
    let mut still_ready = 0;
    for s in &sessions {
        if is_running_and_ready(&env.get(&s.name_any()).await) {
            still_ready += 1;
        }
    }

    let bs = stats(bare_start);
    let bt = stats(bare_stop);
    let r = stats(ready);
    let st = stats(stopped);
    let d = stats(deaths);
    let seen = stats(noticed);
    println!();
    println!("| figure | p50 | p99 | bare Docker p50 | ratio p50 | target |");
    println!("|---|---|---|---|---|---|");
    compared_row("create → Ready", "create+start", &r, &bs);
    compared_row("stop → Stopped", "stop", &st, &bt);
    let rs = stats(resumed);
    println!(
        "| resume → Ready (same dataset, old container removed) | {:.0} ms | {:.0} ms | | {:.2}× create → Ready | ≤ 1.0× create → Ready: {} |",
        ms(rs.p50),
        ms(rs.p99),
        ms(rs.p50) / ms(r.p50),
        met(rs.p50 <= r.p50)
    );
    println!(
        "| kill → death recorded (Stopping, ContainerExited) | {:.0} ms | {:.0} ms | | | |",
        ms(seen.p50),
        ms(seen.p99),
    );
    println!(
        "| kill → Failed, `@death-` snapshot taken (Docker events) | {:.0} ms | {:.0} ms | | | < 1000 ms: {} |",
        ms(d.p50),
        ms(d.p99),
        met(d.p99 < Duration::from_secs(1))
    );
    println!(
        "| restarted agent adopts {adopt} running sessions | {:.2} s | | | | < 5 s: {} |",
        adoption.as_secs_f64(),
        met(adoption < Duration::from_secs(5))
    );
    println!();
    println!(
        "{adopt} sessions started by the agent in {:.1} s; after adoption {still_ready}/{adopt} still Ready, {restarted_containers} container(s) restarted",
        started_all.as_secs_f64()
    );

    restarted.kill().await;
    env.cleanup().await;
}
