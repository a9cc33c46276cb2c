//! Benchmark (not a test): a simulated fleet against the embedded control
//! plane.
//!
//! Run: `cargo bench -p medforge-operator --bench fleet`
//!
//! - The control plane runs in a child process (this binary, re-executed),
//!   so that its CPU time and RSS are its own.
//! - This process runs the real scheduler and `MEDFORGE_FLEET_NODES` (200)
//!   node agents but one, the observed one, which runs alone in a second
//!   child process (this binary again) so that its RSS is its own: each is
//!   the agent's real kube-runtime controller
//!   (`controller::reconcile`, `error_policy`) over the agent's fakes of
//!   Docker and ZFS and a readiness probe that always connects, with its own
//!   client and its own watch, selected by `status.nodeName=<node>` as the
//!   real agent's. Each GpuNode is published once (Ready,
//!   `MEDFORGE_FLEET_GPUS` (8) GPUs of a static inventory); no heartbeats,
//!   no Docker events, no snapshot controller.
//! - `MEDFORGE_FLEET_CLIENTS` (16) clients, each with its own connection and
//!   one request in flight, create `MEDFORGE_FLEET_SESSIONS` (10,000)
//!   Sessions. There are fewer GPUs than sessions: as many sessions as the
//!   fleet has GPUs ask for one, spread evenly through the creation order,
//!   and the others ask for none (CPU-only sessions allowed); the scheduler
//!   spreads.
//! - Printed: create → Running p50/p99 (from the create call's return to a
//!   watch seeing `phase: Running`), the time until all are Running, the
//!   control plane's CPU and RSS; one agent's cache and watch traffic, and
//!   how they change while `MEDFORGE_FLEET_CHURN` (2,000) sessions of other
//!   nodes are stopped; and the watch fan-out: `MEDFORGE_FLEET_WATCHERS`
//!   (500) watchers, `MEDFORGE_FLEET_FANOUT_WRITES` (20) single writes,
//!   delivery latency.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::{self as kube_controller, Controller};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::{Pack, Session, SessionPhase};
use medforge_operator::agent::context::Context;
use medforge_operator::agent::metrics::Metrics;
use medforge_operator::agent::runtime::KubeCluster;
use medforge_operator::agent::spec::{bound_here, node_selector};
use medforge_operator::agent::testing::{FakeContainers, FakeDialer, FakeWorkspaces, IMAGE};
use medforge_operator::agent::{AgentConfig, controller};
use medforge_operator::gpu::StaticInventory;
use medforge_operator::scheduler::controller::{SchedulerConfig, run as run_scheduler};
use medforge_operator::scheduler::placement::{Limits, Policy};
use medforge_testkit::{env_or, publish_ready_node, session_spec};
use serde_json::json;
use tokio::sync::mpsc;

const CHILD_ENV: &str = "MEDFORGE_FLEET_BENCH_CHILD";
/// Set (to the node's name) in the child that runs the observed agent, with
/// the control plane's kubeconfig in [`AGENT_KUBECONFIG_ENV`] and its GPUs
/// in [`AGENT_GPUS_ENV`].
const AGENT_ENV: &str = "MEDFORGE_FLEET_BENCH_AGENT";
const AGENT_KUBECONFIG_ENV: &str = "MEDFORGE_FLEET_BENCH_KUBECONFIG";
const AGENT_GPUS_ENV: &str = "MEDFORGE_FLEET_BENCH_GPUS";
const NS: &str = "fleet";
const FANOUT_NS: &str = "fanout";
const DATASET_ROOT: &str = "pool";

struct Sizes {
    nodes: usize,
    gpus: u32,
    sessions: usize,
    clients: usize,
    watchers: usize,
    fanout_writes: usize,
    churn: usize,
    timeout: Duration,
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve();
        return;
    }
    if let Ok(node) = std::env::var(AGENT_ENV) {
        serve_agent(node);
        return;
    }
    let sizes = Sizes {
        nodes: env_or("MEDFORGE_FLEET_NODES", 200),
        gpus: env_or("MEDFORGE_FLEET_GPUS", 8),
        sessions: env_or("MEDFORGE_FLEET_SESSIONS", 10_000),
        clients: env_or("MEDFORGE_FLEET_CLIENTS", 16),
        watchers: env_or("MEDFORGE_FLEET_WATCHERS", 500),
        fanout_writes: env_or("MEDFORGE_FLEET_FANOUT_WRITES", 20),
        churn: env_or("MEDFORGE_FLEET_CHURN", 2_000),
        timeout: Duration::from_secs(env_or("MEDFORGE_FLEET_TIMEOUT_S", 900)),
    };
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(drive(sizes));
}

/// Child: the control plane, until stdin closes.
fn serve() {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let cp = TestControlPlane::builder()
            .namespace(NS)
            .namespace(FANOUT_NS)
            .start()
            .await;
        println!("{}", cp.server.kubeconfig_path().display());
        let done = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        });
        let _ = done.await;
        cp.shutdown().await;
    });
}

/// Child: one node agent, until stdin closes; each line read on stdin is
/// answered with a line `<cache size> <watch events> <watch bytes>`.
fn serve_agent(node: String) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let path = std::env::var(AGENT_KUBECONFIG_ENV).expect("the kubeconfig path");
        let gpus: u32 = env_or(AGENT_GPUS_ENV, 8);
        let kc = kube::config::Kubeconfig::read_from(path).expect("a kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .expect("a client configuration");
        let agent = start_agent(
            Client::try_from(config).expect("a client"),
            node,
            gpus,
            true,
        );
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                if line.is_err() || tx.send(()).is_err() {
                    break;
                }
            }
        });
        while rx.recv().await.is_some() {
            println!(
                "{} {} {}",
                agent.store.state().len(),
                agent.traffic.events.load(Ordering::Relaxed),
                agent.traffic.bytes.load(Ordering::Relaxed)
            );
        }
    });
}

/// The observed agent's process: what it answers, and its RSS.
struct ObservedAgent {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    pid: String,
}

impl ObservedAgent {
    fn start(kubeconfig: &str, node: &str, gpus: u32) -> ObservedAgent {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env(AGENT_ENV, node)
            .env(AGENT_KUBECONFIG_ENV, kubeconfig)
            .env(AGENT_GPUS_ENV, gpus.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the observed agent's process starts");
        let pid = child.id().to_string();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        ObservedAgent { child, lines, pid }
    }

    /// (cache size, watch events, watch bytes) now.
    fn report(&mut self) -> (usize, u64, u64) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("its stdin");
        writeln!(stdin).expect("ask the observed agent");
        stdin.flush().expect("ask the observed agent");
        let line = self
            .lines
            .next()
            .expect("an answer")
            .expect("an answer line");
        let mut parts = line
            .split_whitespace()
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let (cache, events, bytes) = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        (cache as usize, events, bytes)
    }

    fn rss(&self) -> u64 {
        rss_kib(&self.pid).0
    }
}

impl Drop for ObservedAgent {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// (VmRSS, VmHWM) in KiB.
fn rss_kib(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn node_name(i: usize) -> String {
    format!("node-{i:03}")
}

/// Whether session `i` of `sessions` asks for a GPU: `gpus` of them do,
/// spread evenly through the creation order.
fn wants_gpu(i: usize, sessions: usize, gpus: usize) -> bool {
    let gpus = gpus.min(sessions);
    (i + 1) * gpus / sessions > i * gpus / sessions
}

/// What one simulated agent's watch received.
#[derive(Default)]
struct Traffic {
    events: AtomicU64,
    /// The received objects re-serialized as JSON (measured for the observed
    /// agent only): an estimate of the bytes on the wire, not the wire.
    bytes: AtomicU64,
}

struct Agent {
    store: reflector::Store<Session>,
    traffic: Arc<Traffic>,
}

/// Starts one node agent over the fakes, on its own client, watching only
/// its node's Sessions as the real agent does (`agent::start`).
fn start_agent(client: Client, node: String, gpus: u32, measure_bytes: bool) -> Agent {
    let mut config = AgentConfig::new(&node, DATASET_ROOT);
    config.inventory = Arc::new(StaticInventory::uniform(&node, gpus));
    config.dialer = Arc::new(FakeDialer);
    config.capacity = None;
    config.resync = Duration::from_secs(3600);
    config.probe_interval = Duration::from_millis(50);
    config.probe_burst = Duration::from_millis(20);
    let traffic = Arc::new(Traffic::default());
    let (store, writer) = reflector::store();
    let counted = traffic.clone();
    let here = node.clone();
    let trigger = watcher(
        Api::<Session>::all(client.clone()),
        watcher::Config::default().fields(&node_selector(&node)),
    )
    .default_backoff()
    .inspect_ok(move |ev| {
        let objects: Vec<&Session> = match ev {
            watcher::Event::Apply(s) | watcher::Event::Delete(s) | watcher::Event::InitApply(s) => {
                vec![s]
            }
            _ => vec![],
        };
        for s in objects {
            counted.events.fetch_add(1, Ordering::Relaxed);
            if measure_bytes {
                let n = serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0);
                counted.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    })
    .reflect(writer)
    .applied_objects()
    .try_filter(move |s| futures::future::ready(bound_here(s, &here)));
    let peers = store.clone();
    let concurrency = config.concurrency;
    let ctx = Arc::new(
        Context::new(
            config,
            FakeContainers::with_image(IMAGE),
            FakeWorkspaces::default(),
            KubeCluster { client },
            Arc::new(Metrics::default()),
            None,
        )
        .with_peers(Arc::new(move || peers.state())),
    );
    tokio::spawn(
        Controller::for_stream(trigger, store.clone())
            .with_config(kube_controller::Config::default().concurrency(concurrency))
            .run(controller::reconcile, controller::error_policy, ctx)
            .for_each(|_| async {}),
    );
    Agent { store, traffic }
}

/// What the benchmark's own watch of every Session has seen.
#[derive(Default)]
struct Seen {
    running: HashMap<String, Instant>,
    bound: HashMap<String, Instant>,
    stopped: HashSet<String>,
    node_of: HashMap<String, String>,
    events: u64,
}

/// Watches every Session of the fleet's namespace, recording when each is
/// first seen Running, where it runs, and when it is Stopped.
fn watch_fleet(client: Client, seen: Arc<Mutex<Seen>>, changed: Arc<tokio::sync::Notify>) {
    let api: Api<Session> = Api::namespaced(client, NS);
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            let Ok(ev) = ev else { continue };
            let s = match ev {
                watcher::Event::Apply(s) | watcher::Event::InitApply(s) => s,
                _ => continue,
            };
            let now = Instant::now();
            let name = s.name_any();
            let st = s.status.as_ref();
            let phase = st.and_then(|st| st.phase);
            let mut seen = seen.lock().unwrap();
            seen.events += 1;
            if let Some(node) = st.and_then(|st| st.node_name.clone()) {
                seen.bound.entry(name.clone()).or_insert(now);
                seen.node_of.insert(name.clone(), node);
            }
            match phase {
                Some(SessionPhase::Running) => {
                    seen.running.entry(name).or_insert(now);
                }
                Some(SessionPhase::Stopped) => {
                    seen.stopped.insert(name);
                }
                _ => {}
            }
            drop(seen);
            changed.notify_one();
        }
    });
}

/// Waits until `done` holds, printing progress; false on timeout.
async fn wait_until(
    what: &str,
    seen: &Mutex<Seen>,
    changed: &tokio::sync::Notify,
    timeout: Duration,
    progress: impl Fn(&Seen) -> (usize, usize),
) -> bool {
    let start = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let (have, want) = progress(&seen.lock().unwrap());
        if have >= want {
            return true;
        }
        if start.elapsed() > timeout {
            eprintln!("  {what}: gave up after {:?} at {have}/{want}", timeout);
            return false;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "  {what}: {have}/{want} after {:.0} s",
                start.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changed.notified()).await;
    }
}

async fn drive(sz: Sizes) {
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the control plane process starts");
    let pid = child.id().to_string();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the kubeconfig path");
    let kc = kube::config::Kubeconfig::read_from(line.trim()).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a client configuration");
    let client = || Client::try_from(config.clone()).expect("a client");

    println!(
        "fleet benchmark: {} nodes x {} GPUs, {} sessions by {} clients; control plane pid {pid}; {} CPUs; load average {}",
        sz.nodes,
        sz.gpus,
        sz.sessions,
        sz.clients,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (cp_rss_start, _) = rss_kib(&pid);

    // The Pack and the nodes.
    let admin = client();
    Api::<Pack>::all(admin.clone())
        .create(
            &PostParams::default(),
            &medforge_operator::agent::testing::pack("default"),
        )
        .await
        .expect("the Pack");
    let now = Timestamp::now();
    futures::stream::iter((0..sz.nodes).map(|i| {
        let admin = admin.clone();
        async move { publish_ready_node(&admin, &node_name(i), sz.gpus, now).await }
    }))
    .buffer_unordered(16)
    .collect::<Vec<_>>()
    .await;

    // The scheduler.
    let mut cfg = SchedulerConfig::new("fleet-bench");
    cfg.limits = Limits {
        max_sessions_per_user: sz.sessions as u32,
        max_gpus_per_user: sz.sessions as u32,
        allow_cpu_only: true,
    };
    cfg.policy = Policy::Spread;
    cfg.heartbeat_timeout = Duration::from_secs(3600);
    tokio::spawn(run_scheduler(client(), cfg, std::future::pending()));

    // The agents. The observed one is in the middle of the fleet, in its
    // own process.
    let observed = sz.nodes / 2;
    let mut watched = ObservedAgent::start(line.trim(), &node_name(observed), sz.gpus);
    let agents: Vec<Agent> = (0..sz.nodes)
        .filter(|i| *i != observed)
        .map(|i| start_agent(client(), node_name(i), sz.gpus, false))
        .collect();

    // The benchmark's own watch of every Session.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let changed = Arc::new(tokio::sync::Notify::new());
    watch_fleet(client(), seen.clone(), changed.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (cpu0, self_cpu0) = (cpu_secs(&pid), cpu_secs("self"));
    let (self_rss0, _) = rss_kib("self");
    let (cp_rss0, _) = rss_kib(&pid);
    let agent_rss0 = watched.rss();

    // 16 clients create the Sessions, one request in flight each.
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let request_times: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let total_gpus = sz.nodes * sz.gpus as usize;
    let start = Instant::now();
    let creators: Vec<_> = (0..sz.clients)
        .map(|c| {
            let api: Api<Session> = Api::namespaced(client(), NS);
            let (created, request_times) = (created.clone(), request_times.clone());
            let (sessions, clients) = (sz.sessions, sz.clients);
            tokio::spawn(async move {
                for i in (c..sessions).step_by(clients) {
                    let name = format!("s-{i:05}");
                    let gpus = u32::from(wants_gpu(i, sessions, total_gpus));
                    let s = session_spec()
                        .owner(format!("user-{:03}", i % 1000))
                        .gpus(gpus)
                        .session(&name);
                    let t = Instant::now();
                    api.create(&PostParams::default(), &s)
                        .await
                        .expect("create a Session");
                    let done = Instant::now();
                    request_times.lock().unwrap().push(done - t);
                    created.lock().unwrap().insert(name, done);
                }
            })
        })
        .collect();
    for c in creators {
        c.await.expect("a creating client");
    }
    let create_phase = start.elapsed();
    let all_running = wait_until("Running", &seen, &changed, sz.timeout, |s| {
        (s.running.len(), sz.sessions)
    })
    .await;
    let to_all_running = start.elapsed();
    let (cpu1, self_cpu1) = (cpu_secs(&pid), cpu_secs("self"));
    let (cp_rss1, cp_hwm1) = rss_kib(&pid);
    let (self_rss1, _) = rss_kib("self");

    let mut lat: Vec<Duration> = {
        let created = created.lock().unwrap();
        let seen = seen.lock().unwrap();
        seen.running
            .iter()
            .filter_map(|(name, t)| created.get(name).map(|c| t.saturating_duration_since(*c)))
            .collect()
    };
    lat.sort();
    let (mut to_bound, mut bound_to_running): (Vec<Duration>, Vec<Duration>) = {
        let created = created.lock().unwrap();
        let seen = seen.lock().unwrap();
        seen.running
            .iter()
            .filter_map(|(name, t)| {
                let b = seen.bound.get(name)?;
                let c = created.get(name)?;
                Some((
                    b.saturating_duration_since(*c),
                    t.saturating_duration_since(*b),
                ))
            })
            .unzip()
    };
    to_bound.sort();
    bound_to_running.sort();
    let mut req = request_times.lock().unwrap().clone();
    req.sort();

    println!(
        "\ncreate -> Running ({} sessions: {} ask 1 GPU, the rest none; scheduler policy spread)",
        sz.sessions,
        total_gpus.min(sz.sessions)
    );
    println!(
        "  all created in {:.2} s ({:.0} creates/s; request p50 {}, p99 {})",
        create_phase.as_secs_f64(),
        sz.sessions as f64 / create_phase.as_secs_f64(),
        ms(percentile(&req, 0.5)),
        ms(percentile(&req, 0.99))
    );
    println!(
        "  {} until all Running{} ({} Running)",
        format_args!("{:.2} s", to_all_running.as_secs_f64()),
        if all_running { "" } else { " (TIMED OUT)" },
        lat.len()
    );
    println!(
        "  create returned -> watch sees Running: p50 {}, p99 {}, max {}",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(lat.last().copied().unwrap_or_default())
    );
    println!(
        "    of which create returned -> watch sees the binding: p50 {}, p99 {}; binding -> Running: p50 {}, p99 {}",
        ms(percentile(&to_bound, 0.5)),
        ms(percentile(&to_bound, 0.99)),
        ms(percentile(&bound_to_running, 0.5)),
        ms(percentile(&bound_to_running, 0.99))
    );
    let per_node: BTreeMap<String, usize> = {
        let seen = seen.lock().unwrap();
        let mut m = BTreeMap::new();
        for n in seen.node_of.values() {
            *m.entry(n.clone()).or_insert(0) += 1;
        }
        m
    };
    let mut counts: Vec<usize> = per_node.values().copied().collect();
    counts.sort();
    println!(
        "  sessions per node: min {}, median {}, max {} over {} nodes",
        counts.first().copied().unwrap_or(0),
        counts.get(counts.len() / 2).copied().unwrap_or(0),
        counts.last().copied().unwrap_or(0),
        counts.len()
    );
    let busy = to_all_running.as_secs_f64();
    println!(
        "  control plane (separate process): CPU {:.1} s ({:.2} cores) from first create to all Running; RSS {} at start, {} before, {} after (peak {})",
        cpu1 - cpu0,
        (cpu1 - cpu0) / busy,
        mib(cp_rss_start),
        mib(cp_rss0),
        mib(cp_rss1),
        mib(cp_hwm1)
    );
    println!(
        "  this process (scheduler, {} agents, 16 creating clients, the benchmark's watch): CPU {:.1} s ({:.2} cores); RSS {} -> {}",
        sz.nodes,
        self_cpu1 - self_cpu0,
        (self_cpu1 - self_cpu0) / busy,
        mib(self_rss0),
        mib(self_rss1)
    );

    // One agent's share.
    let agent_node = node_name(observed);
    let own = per_node.get(&agent_node).copied().unwrap_or(0);
    let fleet_events = seen.lock().unwrap().events;
    let (cache1, ev1, by1) = watched.report();
    let agent_rss1 = watched.rss();
    let mut all_events: Vec<u64> = agents
        .iter()
        .map(|a| a.traffic.events.load(Ordering::Relaxed))
        .chain([ev1])
        .collect();
    all_events.sort();
    println!("\none agent ({agent_node}, {own} of the fleet's sessions; its own process)");
    println!(
        "  cache {cache1} Sessions; its watch received {ev1} events (~{:.1} KiB as JSON) while the fleet's watch received {fleet_events}",
        by1 as f64 / 1024.0
    );
    println!(
        "  its RSS: {} before the first create, {} with its sessions Running",
        mib(agent_rss0),
        mib(agent_rss1)
    );
    println!(
        "  every agent's watch, events: min {}, median {}, max {}",
        all_events.first().copied().unwrap_or(0),
        all_events.get(all_events.len() / 2).copied().unwrap_or(0),
        all_events.last().copied().unwrap_or(0)
    );

    // The rest of the fleet changes: stop sessions of other nodes.
    let others: Vec<String> = {
        let seen = seen.lock().unwrap();
        let mut v: Vec<String> = seen
            .node_of
            .iter()
            .filter(|(_, n)| **n != agent_node)
            .map(|(s, _)| s.clone())
            .collect();
        v.sort();
        v.truncate(sz.churn);
        v
    };
    let (self_rss2, _) = rss_kib("self");
    let fleet_events2 = seen.lock().unwrap().events;
    let churn_start = Instant::now();
    let chunks: Vec<Vec<String>> = others
        .chunks(others.len().div_ceil(sz.clients).max(1))
        .map(<[String]>::to_vec)
        .collect();
    let stoppers: Vec<_> = chunks
        .into_iter()
        .map(|names| {
            let api: Api<Session> = Api::namespaced(client(), NS);
            tokio::spawn(async move {
                for name in names {
                    api.patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"state": "Stopped"}})),
                    )
                    .await
                    .expect("stop a Session");
                }
            })
        })
        .collect();
    for s in stoppers {
        s.await.expect("a stopping client");
    }
    let stop_set: HashSet<String> = others.iter().cloned().collect();
    let all_stopped = wait_until("Stopped", &seen, &changed, sz.timeout, |s| {
        (
            s.stopped.iter().filter(|n| stop_set.contains(*n)).count(),
            stop_set.len(),
        )
    })
    .await;
    let churn = churn_start.elapsed();
    let (cache2, ev2, by2) = watched.report();
    let agent_rss2 = watched.rss();
    let fleet_events3 = seen.lock().unwrap().events;
    let (self_rss3, _) = rss_kib("self");
    println!(
        "  then {} sessions of other nodes stopped in {:.2} s{} ({} events on the fleet's watch)",
        others.len(),
        churn.as_secs_f64(),
        if all_stopped { "" } else { " (TIMED OUT)" },
        fleet_events3 - fleet_events2
    );
    println!(
        "  meanwhile this agent's watch received {} events (~{:.1} KiB); cache {cache2} Sessions; its RSS {} -> {} (the fleet process's {} -> {})",
        ev2 - ev1,
        (by2 - by1) as f64 / 1024.0,
        mib(agent_rss1),
        mib(agent_rss2),
        mib(self_rss2),
        mib(self_rss3)
    );

    // Watch fan-out.
    fanout(&sz, client).await;

    let (cp_rss_end, cp_hwm_end) = rss_kib(&pid);
    println!(
        "\ncontrol plane RSS at the end: {} (peak {})",
        mib(cp_rss_end),
        mib(cp_hwm_end)
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

/// `watchers` watches of Sessions in their own namespace; single writes one at
/// a time; the latency from issuing each write to each watcher receiving it.
async fn fanout(sz: &Sizes, client: impl Fn() -> Client) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let clients: Vec<Client> = (0..sz.clients).map(|_| client()).collect();
    let mut tasks = Vec::new();
    for w in 0..sz.watchers {
        let api: Api<Session> = Api::namespaced(clients[w % clients.len()].clone(), FANOUT_NS);
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = api
                .watch(&WatchParams::default().timeout(290), "0")
                .await
                .expect("a watch")
                .boxed();
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(s) = ev {
                    let _ = tx.send((s.name_any(), Instant::now()));
                }
            }
        }));
    }
    let api: Api<Session> = Api::namespaced(client(), FANOUT_NS);
    let mut all = Vec::new();
    let mut per_write_p99 = Vec::new();
    // Write 0 is a warm-up: every watch is up once it has arrived everywhere.
    for k in 0..=sz.fanout_writes {
        let name = format!("fan-{k:03}");
        let s = session_spec().owner("fanout").session(&name);
        let t0 = Instant::now();
        api.create(&PostParams::default(), &s)
            .await
            .expect("create a Session");
        let mut got = Vec::with_capacity(sz.watchers);
        let deadline = t0 + Duration::from_secs(if k == 0 { 60 } else { 10 });
        while got.len() < sz.watchers {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Some((n, t))) if n == name => got.push(t - t0),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if got.len() < sz.watchers {
            eprintln!(
                "  fan-out write {k}: {} of {} watchers received it",
                got.len(),
                sz.watchers
            );
        }
        if k == 0 {
            continue;
        }
        got.sort();
        per_write_p99.push(percentile(&got, 0.99));
        all.extend(got);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    all.sort();
    per_write_p99.sort();
    println!(
        "\nwatch fan-out: {} watchers of Sessions in one namespace (over {} clients), {} single creates one at a time",
        sz.watchers,
        clients.len(),
        sz.fanout_writes
    );
    println!(
        "  issue -> received, all deliveries: p50 {}, p99 {}, max {}; per-write p99: median {}, worst {}",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.99)),
        ms(all.last().copied().unwrap_or_default()),
        ms(percentile(&per_write_p99, 0.5)),
        ms(per_write_p99.last().copied().unwrap_or_default())
    );
    for t in tasks {
        t.abort();
    }
}
