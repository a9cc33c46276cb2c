//! Benchmark of the embedded control plane (not a test; run on demand):
//!
//! ```text
//! cargo bench -p medforge-apiserver --bench apiserver
//! ```
//!
//! The server runs in a child process (this binary, re-executed) so that its
//! resident memory is measured alone. The parent drives it over TLS with
//! kube's client, as the operator does, and prints:
//! - creates per second with 16 concurrent clients (10,000 Sessions);
//! - p50/p99 delivery latency from issuing a write to a watcher receiving it;
//! - the time to list 10,000 Sessions;
//! - the server's RSS with 10,000 Sessions stored.
//!
//! `BENCH_SESSIONS` and `BENCH_WATCH_WRITES` change the sizes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::Session;
use medforge_crds::keys::OWNER_LABEL;
use medforge_testkit::session_spec;
use serde_json::json;

const CHILD_ENV: &str = "MEDFORGE_APISERVER_BENCH_CHILD";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve();
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(drive());
}

/// Child: run a test control plane until stdin closes.
fn serve() {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    rt.block_on(async {
        let cp = TestControlPlane::start().await;
        println!("{}", cp.server.kubeconfig_path().display());
        let done = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        });
        let _ = done.await;
        cp.shutdown().await;
    });
}

fn rss_kib(pid: u32) -> (u64, u64) {
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
    // Fields after the command name, which ends with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn session(name: &str, i: usize) -> Session {
    let owner = format!("user-{}", i % 200);
    let mut s = session_spec()
        .owner(owner.clone())
        .pack("jupyter-cuda12")
        .gpus((i % 3) as u32)
        .idle_timeout("2h")
        .max_lifetime("24h")
        .session(name);
    s.metadata.labels = Some(
        [
            (OWNER_LABEL.to_string(), owner),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "medforge".to_string(),
            ),
        ]
        .into(),
    );
    s
}

async fn client(kubeconfig: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a client configuration");
    kube::Client::try_from(config).expect("a client")
}

async fn drive() {
    let sessions: usize = medforge_testkit::env_or("BENCH_SESSIONS", 10_000);
    let watch_writes: usize = medforge_testkit::env_or("BENCH_WATCH_WRITES", 2_000);
    let clients = 16;
    let mut child = Command::new(std::env::current_exe().expect("this binary"))
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server process starts");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the kubeconfig path");
    let kubeconfig = std::path::PathBuf::from(line.trim());
    let (rss_idle, _) = rss_kib(pid);

    println!(
        "medforge-apiserver benchmark: {} CPUs, server pid {pid}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!("server RSS at start: {:.1} MiB", rss_idle as f64 / 1024.0);

    // 1. Creates with 16 concurrent clients, each on its own connection.
    let mut apis = Vec::new();
    for _ in 0..clients {
        apis.push(Api::<Session>::namespaced(
            client(&kubeconfig).await,
            "default",
        ));
    }
    // Warm the connections up (TLS handshakes) before timing.
    for api in &apis {
        api.list(&ListParams::default().limit(1)).await.unwrap();
    }
    let (server_cpu0, client_cpu0) = (cpu_secs(&pid.to_string()), cpu_secs("self"));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, api) in apis.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = c;
            while i < sessions {
                let t = Instant::now();
                api.create(&PostParams::default(), &session(&format!("s-{i:05}"), i))
                    .await
                    .expect("create");
                lat.push(t.elapsed());
                i += clients;
            }
            lat
        }));
    }
    let mut create_lat = Vec::new();
    for t in tasks {
        create_lat.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let server_cpu = cpu_secs(&pid.to_string()) - server_cpu0;
    let client_cpu = cpu_secs("self") - client_cpu0;
    create_lat.sort();
    println!(
        "creates: {sessions} Sessions by {clients} concurrent clients in {:.2} s = {:.0} creates/s (per-request p50 {}, p99 {})",
        elapsed.as_secs_f64(),
        sessions as f64 / elapsed.as_secs_f64(),
        ms(percentile(&create_lat, 0.5)),
        ms(percentile(&create_lat, 0.99)),
    );
    println!(
        "  CPU during creates: server {:.2} s ({:.0} us per create, {:.2} cores), clients {:.2} s ({:.2} cores)",
        server_cpu,
        server_cpu * 1e6 / sessions as f64,
        server_cpu / elapsed.as_secs_f64(),
        client_cpu,
        client_cpu / elapsed.as_secs_f64(),
    );

    // 2. List time at this size.
    let api = apis[0].clone();
    let raw = client(&kubeconfig).await;
    let mut raw_times = Vec::new();
    let mut typed_times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let body = raw
            .request_text(
                http::Request::get("/apis/medforge.dev/v1alpha1/namespaces/default/sessions")
                    .body(Vec::new())
                    .unwrap(),
            )
            .await
            .unwrap();
        raw_times.push(t.elapsed());
        bytes = body.len();
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await.unwrap();
        typed_times.push(t.elapsed());
        assert_eq!(list.items.len(), sessions);
    }
    raw_times.sort();
    typed_times.sort();
    println!(
        "list {sessions} Sessions ({:.1} MiB of JSON): median {} to receive the body, {} into typed Sessions with kube's Api",
        bytes as f64 / 1048576.0,
        ms(raw_times[2]),
        ms(typed_times[2]),
    );
    let (rss, hwm) = rss_kib(pid);
    println!(
        "server RSS with {sessions} Sessions: {:.1} MiB (peak {:.1} MiB)",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // 3. Watch delivery: from issuing a write to a watcher receiving it.
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let rv = api
        .list(&ListParams::default().limit(1))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let watch_api = Api::<Session>::namespaced(client(&kubeconfig).await, "default");
    let mut stream = watch_api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sent_w = sent.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(e)) = stream.next().await {
            let now = Instant::now();
            if let WatchEvent::Modified(s) = e {
                let seq = s
                    .metadata
                    .annotations
                    .and_then(|a| a.get("bench/seq").cloned());
                let t0 = seq.and_then(|seq| sent_w.lock().unwrap().remove(&seq));
                if let Some(t0) = t0
                    && tx.send(now - t0).is_err()
                {
                    return;
                }
            }
        }
    });
    let mut delivery = Vec::new();
    for i in 0..watch_writes {
        let name = format!("s-{:05}", i % sessions);
        let seq = i.to_string();
        sent.lock().unwrap().insert(seq.clone(), Instant::now());
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"bench/seq": seq}}})),
        )
        .await
        .unwrap();
        delivery.push(
            tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    watcher.abort();
    delivery.sort();
    println!(
        "watch delivery over {watch_writes} writes (one at a time, write issued -> event received): p50 {}, p99 {}, max {}",
        ms(percentile(&delivery, 0.5)),
        ms(percentile(&delivery, 0.99)),
        ms(*delivery.last().unwrap()),
    );

    drop(child.stdin.take());
    let _ = child.wait();
}
