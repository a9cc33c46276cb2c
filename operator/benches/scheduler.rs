//! Benchmark (not a test): how long the scheduler takes to bind 1,000
//! pending Sessions across 125 nodes with 8 GPUs each, against the embedded
//! control plane, and how much memory it holds.
//!
//! Run: `cargo bench -p medforge-operator --bench scheduler`

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::Session;
use medforge_operator::scheduler::controller::{SchedulerConfig, run};
use medforge_testkit::{publish_ready_node, session_spec};

const NODES: u32 = 125;
const GPUS_PER_NODE: u32 = 8;
const SESSIONS: u32 = 1000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn publish_nodes(client: &Client) {
    let now = Timestamp::now();
    let tasks = (0..NODES).map(|i| async move {
        publish_ready_node(client, &format!("node-{i:03}"), GPUS_PER_NODE, now).await;
    });
    futures::stream::iter(tasks)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

async fn create_sessions(client: &Client, ns: &str) {
    let api: Api<Session> = Api::namespaced(client.clone(), ns);
    let tasks = (0..SESSIONS).map(|i| {
        let api = api.clone();
        async move {
            let s = session_spec()
                .owner(format!("user-{i:04}"))
                .session(&format!("bench-{i:04}"));
            api.create(&PostParams::default(), &s).await.unwrap();
        }
    });
    futures::stream::iter(tasks)
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

async fn bound(api: &Api<Session>) -> usize {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| s.status.as_ref().is_some_and(|st| st.node_name.is_some()))
        .count()
}

#[tokio::main]
async fn main() {
    let ns = "bench";
    let cp = TestControlPlane::builder().namespace(ns).start().await;
    let client = cp.client.clone();
    publish_nodes(&client).await;
    create_sessions(&client, ns).await;
    let api: Api<Session> = Api::namespaced(client.clone(), ns);
    assert_eq!(bound(&api).await, 0);

    // Count bindings through a watch, as a client would see them; polling
    // lists of 1,000 objects would steal the CPU being measured.
    let mut bound_names = std::collections::HashSet::new();
    let mut watch =
        kube::runtime::watcher(api.clone(), kube::runtime::watcher::Config::default()).boxed();
    let rss_before = rss_kib();
    let mut cfg = SchedulerConfig::new("bench");
    cfg.heartbeat_timeout = Duration::from_secs(3600);
    let start = Instant::now();
    let sched = tokio::spawn(run(client.clone(), cfg, std::future::pending()));
    let mut peak = rss_before;
    while bound_names.len() < SESSIONS as usize {
        let ev = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .expect("not all sessions were bound")
            .expect("watch ended")
            .expect("watch failed");
        let objs = match ev {
            kube::runtime::watcher::Event::Apply(s)
            | kube::runtime::watcher::Event::InitApply(s) => vec![s],
            _ => vec![],
        };
        for s in objs {
            if s.status.as_ref().is_some_and(|st| st.node_name.is_some()) {
                bound_names.insert(kube::ResourceExt::name_any(&s));
            }
        }
        peak = peak.max(rss_kib());
    }
    let elapsed = start.elapsed();
    let rss_after = rss_kib();
    sched.abort();

    println!(
        "scheduler benchmark: {SESSIONS} pending sessions, {NODES} nodes x {GPUS_PER_NODE} GPUs"
    );
    println!(
        "  bind all (start, lease, cache sync, decide, write, visible to a watcher): {:.3} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  bindings per second: {:.0}",
        SESSIONS as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  process RSS (apiserver + scheduler + client): before {} MiB, peak {} MiB, after {} MiB; scheduler's share <= {} MiB",
        rss_before / 1024,
        peak / 1024,
        rss_after / 1024,
        peak.saturating_sub(rss_before) / 1024
    );
    println!("  target: under 2 s end to end");
    cp.shutdown().await;
}
