//! Multi-node: one embedded control plane (`medforge apiserver`), three node
//! agents as separate processes (`medforge operator --no-scheduler`), each
//! with a harness of its own (its own network namespace, dockerd and pool,
//! so its own dataset root), two scheduler replicas (`medforge operator
//! --no-agent`, one Lease) and two api replicas (`medforge api`) on one
//! PostgreSQL database. Every process runs in this test's namespace on
//! loopback; each agent reaches its containers with `--netns`.
//!
//! In order, each step checked by asserts:
//!
//! 1. 30 sessions created through both apis (6 users) all reach Running
//!    with `Ready=True`, on all three nodes, and no (node, GPU index) is held
//!    by two sessions (checked at every Session change a watch delivers,
//!    for the whole test, and again at each step).
//! 2. The leading scheduler (the Lease's holder, `<host>-<pid>`) is
//!    SIGKILLed; the other replica takes the Lease within the lease
//!    duration plus slack; sessions created right after the kill are bound
//!    no earlier than its takeover, and every binding made before the kill
//!    is unchanged.
//! 3. One node agent is SIGKILLed: its GpuNode turns `Ready=Unknown`
//!    (`NodeStatusUnknown`) and each of its sessions `Ready=False` with
//!    reason `NodeLost`, in the control plane and as the api shows them; the
//!    other nodes' sessions stay Running and Ready. The agent is started
//!    again and its sessions come back Ready.
//! 4. One api replica is SIGKILLed while 8 creates (`?wait=ready`, each
//!    with its own `Idempotency-Key`) are in flight on it; the cut ones are
//!    retried with the same key on the other replica. Every session a
//!    client got a 2xx for exists once and its owner sees it through the
//!    api, and there is exactly one new Session per create: a Session the
//!    killed replica wrote is the one its retry got back. The killed
//!    replica, restarted, shows each user the same sessions as the other
//!    (one database, one control plane).
//! 5. The rest of a session's life through the surviving api: a manual
//!    snapshot taken and deleted, a keepalive, two stops and starts (the
//!    agents keep one snapshot per session, so retention deletes the
//!    older), a session restored from the kept snapshot, the admin's
//!    deletes, a stopped session deleted by the schedulers after the
//!    session history (20 s here), and the admin's node (cordon, GPU
//!    cordon) and Pack (create, replace, list, delete) routes. In step 3,
//!    two of the lost node's Sessions are force-deleted (finalizer removed)
//!    while its agent is down; the restarted agent removes their containers
//!    as orphans and says so in Events about its GpuNode.
//! 6. The control plane enforces the chart's RBAC from the start (its
//!    ServiceAccounts, Roles and bindings, loaded with `kubectl apply` from
//!    the chart's default rendering), and each component runs with a token
//!    of its own ServiceAccount (`kubectl create token`). From the control
//!    plane's audit log: each component made requests, none was refused,
//!    and every grant the chart gives was used
//!    (`medforge_apiserver::rbac_report`).

#[path = "support/private_harness.rs"]
mod private_harness;
#[path = "support/private_postgres.rs"]
mod private_postgres;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use medforge_crds::keys::OWNER_EMAIL_ANNOTATION;
use medforge_crds::{
    GpuNode, NodeCondition, Pack, PackSpec, Session, SessionCondition, SessionPhase,
};
use medforge_testkit::{Harness, HttpResponse, Method, eventually};
use nix::sys::signal::Signal;
use private_harness::PrivateHarness;
use private_postgres::PrivatePostgres;
use serde_json::{Value, json};
use support::{Account, Proc, host_port, kube_client};

const NS: &str = "medforge";
const NODES: [&str; 3] = ["mn-node-a", "mn-node-b", "mn-node-c"];
const AGENTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];
const SCHEDULERS: [&str; 2] = ["scheduler-1", "scheduler-2"];
const APIS: [&str; 2] = ["api-1", "api-2"];
/// Static GPUs per node: room for every session the test creates (30, 3
/// after the scheduler's death, 8 creates at the api's death plus as many
/// left by cut requests) with GPUs to spare.
const GPUS_PER_NODE: u32 = 20;
const SESSIONS: usize = 30;
const AFTER_SCHEDULER_KILL: usize = 3;
const AT_API_KILL: usize = 8;
const USERS: [Account; 6] = [
    Account::new("ada@mn.medforge.test", "multi-node password 0"),
    Account::new("bob@mn.medforge.test", "multi-node password 1"),
    Account::new("cyd@mn.medforge.test", "multi-node password 2"),
    Account::new("dan@mn.medforge.test", "multi-node password 3"),
    Account::new("eve@mn.medforge.test", "multi-node password 4"),
    Account::new("fay@mn.medforge.test", "multi-node password 5"),
];
const LEASE_SECS: u64 = 3;
/// How late the new leader may be after the lease duration (its retry
/// period is a fifth of the duration; the rest is a loaded 2-core machine).
const TAKEOVER_SLACK: Duration = Duration::from_secs(10);
/// The agents beat every 10 s.
const HEARTBEAT_TIMEOUT_SECS: u64 = 20;
const DEADLINE: Duration = Duration::from_secs(180);
/// A stopped session the schedulers delete after this long (step 5).
const SESSION_HISTORY_SECS: u64 = 20;
const ADMIN: Account = Account::new("root@mn.medforge.test", "multi-node admin password");

/// The chart's default rendering; its RBAC objects are what this test's
/// control plane enforces (the chart's sessions namespace is `NS`).
const CHART: &str = include_str!("../charts/medforge/golden/default.yaml");
/// The chart's release namespace, where its ServiceAccounts live.
const CHART_NAMESPACE: &str = "medforge-system";
/// The RBAC kinds taken from the chart.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

/// The chart's ServiceAccounts, Roles and bindings.
fn chart_rbac() -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(CHART).expect("the chart's rendering");
    docs.into_iter()
        .filter(|d| RBAC_KINDS.contains(&d["kind"].as_str().unwrap_or("")))
        .collect()
}

/// Loads the chart's RBAC objects into the control plane with `kubectl
/// apply` (as the admin), then writes a kubeconfig per component with a
/// token of the chart's ServiceAccount for it (`kubectl create token`).
fn load_chart_rbac(dir: &Path) {
    let admin = dir.join("apiserver/kubeconfig");
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .env("HOME", dir)
            .arg("--kubeconfig")
            .arg(&admin)
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // A stream of JSON objects, one per object of the chart.
    let docs: Vec<String> = chart_rbac().iter().map(Value::to_string).collect();
    let file = dir.join("chart-rbac.json");
    std::fs::write(&file, docs.join("\n")).unwrap();
    kubectl(&["create", "namespace", CHART_NAMESPACE]);
    kubectl(&["apply", "-f", file.to_str().unwrap()]);
    let admin_config = std::fs::read_to_string(&admin).unwrap();
    let admin_token = std::fs::read_to_string(dir.join("apiserver/token")).unwrap();
    for component in ["agent", "scheduler", "api"] {
        let sa = format!("medforge-{component}");
        let token = kubectl(&[
            "create",
            "token",
            &sa,
            "-n",
            CHART_NAMESPACE,
            "--duration",
            "2h",
        ]);
        let config = admin_config.replace(admin_token.trim(), token.trim());
        assert_ne!(config, admin_config, "the admin token is in its kubeconfig");
        std::fs::write(kubeconfig_for(dir, component), config).unwrap();
    }
}

/// The kubeconfig `component` (`agent`, `scheduler` or `api`) runs with: a
/// token of the chart's ServiceAccount for it ([`load_chart_rbac`]).
fn kubeconfig_for(dir: &Path, component: &str) -> PathBuf {
    assert!(
        ["agent", "scheduler", "api"].contains(&component),
        "no credentials for {component}"
    );
    dir.join(format!("{component}.kubeconfig"))
}

/// The processes of the fleet, by name, and how each is started again.
struct Fleet {
    dir: PathBuf,
    args: BTreeMap<&'static str, Vec<String>>,
    procs: BTreeMap<&'static str, Proc>,
}

impl Fleet {
    fn start(&mut self, name: &'static str) {
        let log = self.dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_medforge"))
            .args(&self.args[name])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.insert(name, Proc { name, child, log });
    }

    /// Panics with its log when `name` exited by itself.
    fn assert_alive(&mut self, name: &str) {
        if let Some(p) = self.procs.get_mut(name)
            && let Ok(Some(status)) = p.child.try_wait()
        {
            panic!("{name} exited ({status}):\n{}", self.tail(name));
        }
    }

    fn assert_all_alive(&mut self) {
        let names: Vec<&'static str> = self.procs.keys().copied().collect();
        for name in names {
            self.assert_alive(name);
        }
    }

    fn pid(&self, name: &str) -> u32 {
        self.procs[name].child.id()
    }

    /// SIGKILLs `name` by the PID this test started and waits for its exit.
    fn kill(&mut self, name: &'static str) -> ExitStatus {
        let mut p = self.procs.remove(name).expect("a running process");
        p.stop(Signal::SIGKILL);
        p.child.try_wait().unwrap().expect("it exited")
    }

    fn tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in self.args.keys() {
                eprintln!("--- {name} log tail\n{}", self.tail(name));
            }
        }
        // The control plane last, so the others drain against it.
        let mut procs = std::mem::take(&mut self.procs);
        let apiserver = procs.remove("apiserver");
        for (_, mut p) in procs {
            p.terminate_within(Duration::from_secs(15));
        }
        if let Some(mut p) = apiserver {
            p.terminate_within(Duration::from_secs(15));
        }
    }
}

/// One HTTP/1 request on loopback of this namespace (where the apis
/// listen), with a bearer token and a JSON body; `Err` when no complete
/// answer came (a connection cut by a killed replica).
async fn http(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    within: Duration,
) -> Result<HttpResponse, String> {
    http_with(addr, method, path, token, body, &[], within).await
}

/// [`http`] with extra request headers.
async fn http_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
    within: Duration,
) -> Result<HttpResponse, String> {
    // This process's own namespace: the apis listen on its loopback.
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    if let Some(a) = &auth {
        all.push(("authorization", a));
    }
    if body.is_some() {
        all.push(("content-type", "application/json"));
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    medforge_testkit::request_with_headers(
        Path::new("/proc/self/ns/net"),
        addr,
        method,
        path,
        &all,
        bytes.into(),
        within,
    )
    .await
    .map_err(|e| e.to_string())
}

/// A user: its email and login token (one database: valid on both apis).
#[derive(Clone)]
struct User {
    email: &'static str,
    token: String,
}

/// A session a client got a 2xx for: whose, and through which api.
#[derive(Clone, Debug)]
struct Acked {
    user: usize,
    api: usize,
}

const CREATE: &str = "/api/v2/external/sessions";

/// Creates one 1-GPU session through `api`; the session's id, or what went wrong.
async fn create(api: SocketAddr, token: &str, path: &str) -> Result<String, String> {
    create_with_key(api, token, path, None).await
}

/// [`create`], with an `Idempotency-Key` when `key` is given.
async fn create_with_key(
    api: SocketAddr,
    token: &str,
    path: &str,
    key: Option<&str>,
) -> Result<String, String> {
    let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
    let r = http_with(
        api,
        Method::POST,
        path,
        Some(token),
        Some(&json!({"gpus": 1})),
        &headers,
        Duration::from_secs(150),
    )
    .await?;
    if !(200..300).contains(&r.status) {
        return Err(format!("{}: {}", r.status, r.text()));
    }
    let v: Value = r.json().map_err(|e| e.to_string())?;
    v["data"]["session"]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no session id in {v}"))
}

/// `GET path` on `api` as the owner of `token`: the answer's `data`, or
/// what went wrong.
async fn get_data(api: SocketAddr, token: &str, path: &str) -> Result<Value, String> {
    let r = http(
        api,
        Method::GET,
        path,
        Some(token),
        None,
        Duration::from_secs(10),
    )
    .await?;
    if r.status != 200 {
        return Err(format!("{}: {}", r.status, r.text()));
    }
    let v: Value = r.json().map_err(|e| e.to_string())?;
    Ok(v["data"].clone())
}

/// The api's view of session `id` for its owner.
async fn view(api: SocketAddr, token: &str, id: &str) -> Result<Value, String> {
    get_data(api, token, &format!("{CREATE}/{id}")).await
}

/// The ids of the sessions the api lists for the owner of `token`.
async fn listed(api: SocketAddr, token: &str) -> Result<BTreeSet<String>, String> {
    let v = get_data(api, token, &format!("{CREATE}?limit=200")).await?;
    Ok(v.as_array()
        .ok_or_else(|| format!("no list in {v}"))?
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_string))
        .collect())
}

async fn sessions(client: &kube::Client) -> Vec<Session> {
    Api::<Session>::namespaced(client.clone(), NS)
        .list(&ListParams::default())
        .await
        .expect("the control plane lists Sessions")
        .items
}

/// Where a session is bound: its node and GPU indexes.
type Binding = (String, Vec<u32>);

fn binding(s: &Session) -> Option<Binding> {
    let st = s.status.as_ref()?;
    let node = st.node_name.clone()?;
    let mut gpus: Vec<u32> = st.gpus.iter().map(|g| g.index).collect();
    gpus.sort_unstable();
    Some((node, gpus))
}

/// Each (node, GPU index) held by two sessions at once, described.
fn gpus_given_twice(all: &[Session]) -> Vec<String> {
    let mut held: HashMap<(String, u32), String> = HashMap::new();
    let mut twice = Vec::new();
    for s in all.iter().filter(|s| s.holds_binding()) {
        let Some((node, gpus)) = binding(s) else {
            continue;
        };
        for g in gpus {
            if let Some(other) = held.insert((node.clone(), g), s.name_any()) {
                twice.push(format!(
                    "GPU {g} of {node} held by {other} and {}",
                    s.name_any()
                ));
            }
        }
    }
    twice
}

/// Checks [`gpus_given_twice`] after every Session change the control
/// plane's watch delivers, until aborted; the violations and the number of
/// changes checked.
async fn watch_gpus(client: kube::Client, seen: Arc<Mutex<(Vec<String>, u64)>>) {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let api = Api::<Session>::namespaced(client, NS);
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if event.is_err() {
            continue;
        }
        let all: Vec<Session> = reader.state().iter().map(|s| (**s).clone()).collect();
        let twice = gpus_given_twice(&all);
        let mut seen = seen.lock().unwrap();
        seen.1 += 1;
        for v in twice {
            if !seen.0.contains(&v) {
                eprintln!("VIOLATION: {v}");
                seen.0.push(v);
            }
        }
    }
}

fn running_and_ready(s: &Session) -> bool {
    s.phase() == SessionPhase::Running
        && s.condition(SessionCondition::Ready)
            .is_some_and(|c| c.status == "True")
}

/// Waits until every session in `names` runs with `Ready=True`; returns them all.
async fn all_running(client: &kube::Client, names: &BTreeSet<String>, what: &str) -> Vec<Session> {
    eventually(what, DEADLINE, async || {
        let all = sessions(client).await;
        let twice = gpus_given_twice(&all);
        assert!(twice.is_empty(), "a GPU given twice: {twice:?}");
        let missing: Vec<String> = names
            .iter()
            .filter(|n| {
                !all.iter()
                    .any(|s| s.name_any() == **n && running_and_ready(s))
            })
            .map(|n| {
                let s = all.iter().find(|s| s.name_any() == *n);
                format!(
                    "{n}: {:?} {:?}",
                    s.map(|s| s.phase()),
                    s.and_then(|s| s.status.as_ref())
                        .and_then(|st| st.message.clone())
                )
            })
            .collect();
        if missing.is_empty() {
            Ok(all)
        } else {
            Err(format!("{} not running yet: {missing:?}", missing.len()))
        }
    })
    .await
}

/// The scheduler Lease's holder and transitions.
async fn lease_holder(leases: &Api<Lease>) -> Option<(String, i32, i64)> {
    let spec = leases.get_opt("medforge-scheduler").await.ok()??.spec?;
    Some((
        spec.holder_identity.filter(|h| !h.is_empty())?,
        spec.lease_transitions.unwrap_or(0),
        spec.acquire_time?.0.as_second(),
    ))
}

fn node_ready(node: &GpuNode) -> Option<(String, String)> {
    let st = node.status.as_ref()?;
    medforge_crds::conditions::find(&st.conditions, NodeCondition::Ready)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Copies the harness's workload image into `to` with its image ID (docker
/// save and load keep the image's configuration, so its ID): every node
/// runs the same `sha256:` image the Pack names.
async fn copy_image(from: &Harness, to: &Harness, image: &str) {
    let mut tar = Vec::new();
    let mut export = std::pin::pin!(from.docker().export_image(image));
    while let Some(chunk) = export.next().await {
        tar.extend_from_slice(&chunk.expect("docker save of the workload image"));
    }
    let mut load = std::pin::pin!(to.docker().import_image(
        bollard::query_parameters::ImportImageOptions::default(),
        bollard::body_full(hyper::body::Bytes::from(tar)),
        None,
    ));
    while let Some(step) = load.next().await {
        step.expect("docker load of the workload image");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_two_schedulers_two_apis() {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("mn")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = tmp.path().to_path_buf();
    // Torn down after everything below (dropped last), also on failure.
    let guards: Vec<PrivateHarness> = (0..NODES.len())
        .map(|i| PrivateHarness::new(dir.join(format!("harness-{i}"))))
        .collect();
    let starts = guards.iter().map(|g| Harness::start(g.config.clone()));
    let harnesses: Vec<Harness> = futures::future::join_all(starts)
        .await
        .into_iter()
        .map(|h| h.expect("a private harness"))
        .collect();
    let tag = harnesses[0].workload_image().await.expect("workload image");
    for h in &harnesses[1..] {
        copy_image(&harnesses[0], h, &tag).await;
    }
    let mut ids = BTreeSet::new();
    for h in &harnesses {
        ids.insert(h.docker().inspect_image(&tag).await.unwrap().id.unwrap());
    }
    assert_eq!(ids.len(), 1, "one image ID on every node: {ids:?}");
    let image = ids.pop_first().unwrap();
    eprintln!("harnesses and image ready after {:?}", started.elapsed());

    let postgres = PrivatePostgres::start(&dir.join("postgres"));
    let apiserver_dir = dir.join("apiserver");
    let api_addrs: Vec<SocketAddr> = APIS
        .iter()
        .map(|_| SocketAddr::from(([127, 0, 0, 1], host_port())))
        .collect();
    let mut args: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    args.insert(
        "apiserver",
        strings(&[
            "apiserver",
            "--data-dir",
            apiserver_dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{}", host_port()),
            "--audit-log-path",
            dir.join("audit.log").to_str().unwrap(),
        ]),
    );
    for (i, name) in AGENTS.iter().enumerate() {
        let h = &harnesses[i];
        args.insert(
            *name,
            strings(&[
                "operator",
                "--no-scheduler",
                "--kubeconfig",
                kubeconfig_for(&dir, "agent").to_str().unwrap(),
                "--node-name",
                NODES[i],
                "--gpus",
                &format!("static:{GPUS_PER_NODE}"),
                "--docker-socket",
                h.layout().docker_socket.to_str().unwrap(),
                "--netns",
                h.netns_path().to_str().unwrap(),
                "--zfs-binary",
                h.zfs_binary().to_str().unwrap(),
                "--zfs-root",
                &format!("{}/mn", h.layout().pool),
                // Retention keeps a session's newest snapshot only (step 5).
                "--snapshot-keep-last",
                "1",
                "--snapshot-keep-days",
                "0",
            ]),
        );
    }
    for name in SCHEDULERS {
        args.insert(
            name,
            strings(&[
                "operator",
                "--no-agent",
                "--kubeconfig",
                kubeconfig_for(&dir, "scheduler").to_str().unwrap(),
                "--lease-duration",
                &format!("{LEASE_SECS}s"),
                "--placement",
                "spread",
                "--heartbeat-timeout-secs",
                &HEARTBEAT_TIMEOUT_SECS.to_string(),
                "--max-sessions-per-user",
                "100",
                "--max-gpus-per-user",
                "100",
                "--session-history",
                &format!("{SESSION_HISTORY_SECS}s"),
            ]),
        );
    }
    for (i, name) in APIS.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        args.insert(
            *name,
            strings(&[
                "api",
                "--kubeconfig",
                kubeconfig_for(&dir, "api").to_str().unwrap(),
                "--data-dir",
                dir.join(name).to_str().unwrap(),
                "--listen",
                &api_addrs[i].to_string(),
                "--database-url",
                &postgres.url(),
                "--signup-mode",
                "open",
                "--login-burst",
                "100",
                "--login-per-minute",
                "1000",
            ]),
        );
    }
    let mut fleet = Fleet {
        dir: dir.clone(),
        args,
        procs: BTreeMap::new(),
    };
    fleet.start("apiserver");
    let client = kube_client(&apiserver_dir).await;
    medforge_operator::leader::ensure_namespace(&client, NS)
        .await
        .unwrap();
    load_chart_rbac(&dir);
    Api::<Pack>::all(client.clone())
        .create(
            &PostParams::default(),
            &Pack::new("default", PackSpec::of_image(image.clone(), 8080)),
        )
        .await
        .unwrap();
    for name in AGENTS.iter().chain(&SCHEDULERS) {
        fleet.start(name);
    }
    let gpu_watch_seen = Arc::new(Mutex::new((Vec::<String>::new(), 0u64)));
    let gpu_watch = tokio::spawn(watch_gpus(client.clone(), gpu_watch_seen.clone()));
    let nodes: Api<GpuNode> = Api::all(client.clone());
    eventually("three GpuNodes Ready", DEADLINE, async || {
        fleet.assert_all_alive();
        let list = nodes.list(&ListParams::default()).await.ok()?.items;
        let ready = list
            .iter()
            .filter(|n| node_ready(n).is_some_and(|(s, _)| s == "True"))
            .count();
        (ready == NODES.len()).then_some(())
    })
    .await;
    // Both apis at the same moment, on the empty database: their first-admin
    // bootstrap races, and both must come up.
    for name in APIS {
        fleet.start(name);
    }
    for (i, addr) in api_addrs.iter().enumerate() {
        eventually(&format!("{} ready", APIS[i]), DEADLINE, async || {
            fleet.assert_alive(APIS[i]);
            http(
                *addr,
                Method::GET,
                "/readyz",
                None,
                None,
                Duration::from_secs(5),
            )
            .await
            .is_ok_and(|r| r.status == 200)
        })
        .await;
    }
    eprintln!("fleet up after {:?}", started.elapsed());
    let admin = make_admin(&postgres.url(), api_addrs[1]).await;

    // Users: half sign up on each api; each token works on both.
    let mut users = Vec::new();
    for (i, account) in USERS.iter().enumerate() {
        let api = api_addrs[i % 2];
        let cookie = account
            .sign_up(move |path, body| async move {
                http(
                    api,
                    Method::POST,
                    path,
                    None,
                    Some(&body),
                    Duration::from_secs(30),
                )
                .await
                .unwrap()
            })
            .await;
        users.push(User {
            email: account.email,
            token: cookie,
        });
    }

    // 1. 30 sessions through both apis, all Running, on every node.
    let phase = Instant::now();
    let mut acked: BTreeMap<String, Acked> = BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for (u, user) in users.iter().enumerate() {
        let (token, apis) = (user.token.clone(), api_addrs.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            for k in 0..SESSIONS / USERS.len() {
                let api = (u + k) % 2;
                let id = create(apis[api], &token, CREATE)
                    .await
                    .unwrap_or_else(|e| panic!("create {k} of user {u} on {}: {e}", APIS[api]));
                made.push((id, Acked { user: u, api }));
            }
            made
        });
    }
    while let Some(made) = tasks.join_next().await {
        for (id, a) in made.unwrap() {
            assert!(
                acked.insert(id.clone(), a).is_none(),
                "{id} acknowledged twice"
            );
        }
    }
    assert_eq!(acked.len(), SESSIONS);
    let names: BTreeSet<String> = acked.keys().cloned().collect();
    let all = all_running(&client, &names, "30 sessions Running").await;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for s in &all {
        *per_node
            .entry(binding(s).expect("a bound session").0)
            .or_default() += 1;
    }
    assert!(
        NODES
            .iter()
            .all(|n| per_node.get(*n).is_some_and(|c| *c > 0)),
        "sessions on every node: {per_node:?}"
    );
    let per_api = (0..2)
        .map(|a| acked.values().filter(|x| x.api == a).count())
        .collect::<Vec<_>>();
    eprintln!(
        "1. {SESSIONS} sessions Running in {:?}: per node {per_node:?}, per api {per_api:?}",
        phase.elapsed()
    );

    // 2. The leading scheduler SIGKILLed.
    let phase = Instant::now();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "medforge-system");
    let (holder, transitions, _) =
        eventually("a scheduler holds the Lease", DEADLINE, async || {
            lease_holder(&leases).await
        })
        .await;
    let leader = *SCHEDULERS
        .iter()
        .find(|n| holder.ends_with(&format!("-{}", fleet.pid(n))))
        .unwrap_or_else(|| panic!("the holder {holder} is neither scheduler"));
    let other = *SCHEDULERS.iter().find(|n| **n != leader).unwrap();
    let before: BTreeMap<String, Binding> = sessions(&client)
        .await
        .iter()
        .map(|s| (s.name_any(), binding(s).expect("bound")))
        .collect();
    let status = fleet.kill(leader);
    let killed = Instant::now();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{leader} died of SIGKILL"
    );
    // Sessions created now wait for a leader: the api waits (bounded) for
    // the scheduler's decision.
    let mut creates = tokio::task::JoinSet::new();
    for (u, user) in users.iter().enumerate().take(AFTER_SCHEDULER_KILL) {
        let (token, api) = (user.token.clone(), u % 2);
        let addr = api_addrs[api];
        creates.spawn(async move { (u, api, create(addr, &token, CREATE).await) });
    }
    let (new_holder, new_transitions, acquired) = eventually(
        "the other scheduler takes the Lease",
        Duration::from_secs(LEASE_SECS) + TAKEOVER_SLACK,
        async || {
            lease_holder(&leases)
                .await
                .filter(|(h, _, _)| *h != holder)
                .ok_or_else(|| format!("still {holder}"))
        },
    )
    .await;
    let takeover = killed.elapsed();
    assert!(
        new_holder.ends_with(&format!("-{}", fleet.pid(other))),
        "the Lease went to {new_holder}, not {other}"
    );
    assert_eq!(new_transitions, transitions + 1, "one leader transition");
    let mut after_kill = BTreeSet::new();
    while let Some(done) = creates.join_next().await {
        let (u, api, result) = done.unwrap();
        let id = result
            .unwrap_or_else(|e| panic!("create by user {u} on {} after the kill: {e}", APIS[api]));
        assert!(acked.insert(id.clone(), Acked { user: u, api }).is_none());
        after_kill.insert(id);
    }
    let names: BTreeSet<String> = acked.keys().cloned().collect();
    let all = all_running(&client, &names, "every session Running after the takeover").await;
    // Bound by the new leader: no earlier than its takeover (whole seconds).
    for s in all.iter().filter(|s| after_kill.contains(&s.name_any())) {
        let at = s
            .condition(SessionCondition::Scheduled)
            .expect("a decision")
            .last_transition_time
            .0
            .as_second();
        assert!(
            at >= acquired,
            "{} bound at {at}, before the takeover at {acquired}",
            s.name_any()
        );
    }
    for s in &all {
        if let Some(was) = before.get(&s.name_any()) {
            assert_eq!(
                binding(s).as_ref(),
                Some(was),
                "{} moved across the takeover",
                s.name_any()
            );
        }
    }
    assert_eq!(
        all.len(),
        SESSIONS + AFTER_SCHEDULER_KILL,
        "no Session more or less"
    );
    eprintln!(
        "2. {leader} killed; {other} took the Lease {takeover:?} after the kill (lease {LEASE_SECS} s); \
         {} sessions created after the kill bound; {} bindings unchanged ({:?})",
        after_kill.len(),
        before.len(),
        phase.elapsed()
    );

    // 3. A node agent SIGKILLed: its node lost, its sessions NodeLost.
    let phase = Instant::now();
    let (lost_node, lost_agent) = (NODES[2], AGENTS[2]);
    let lost_bindings: BTreeMap<String, Binding> = all
        .iter()
        .filter_map(|s| Some((s.name_any(), binding(s)?)))
        .filter(|(_, b)| b.0 == lost_node)
        .collect();
    let on_lost: BTreeSet<String> = lost_bindings.keys().cloned().collect();
    assert!(!on_lost.is_empty(), "sessions on {lost_node}");
    fleet.kill(lost_agent);
    let lost_within = Duration::from_secs(HEARTBEAT_TIMEOUT_SECS + 10 + 5) + TAKEOVER_SLACK;
    eventually(
        &format!("{lost_node} Ready=Unknown and its sessions NodeLost"),
        lost_within,
        async || {
            let node = nodes.get(lost_node).await.map_err(|e| e.to_string())?;
            let ready = node_ready(&node);
            if ready != Some(("Unknown".into(), "NodeStatusUnknown".into())) {
                return Err(format!("{lost_node} Ready: {ready:?}"));
            }
            let all = sessions(&client).await;
            let not_yet: Vec<String> = all
                .iter()
                .filter(|s| on_lost.contains(&s.name_any()))
                .filter(|s| {
                    let lost = s
                        .condition(SessionCondition::Ready)
                        .is_some_and(|c| c.status == "False" && c.reason == "NodeLost");
                    let said = s
                        .status
                        .as_ref()
                        .is_some_and(|st| st.reason.as_deref() == Some("NodeLost"));
                    !(lost && said)
                })
                .map(|s| s.name_any())
                .collect();
            if not_yet.is_empty() {
                Ok(())
            } else {
                Err(format!("not NodeLost yet: {not_yet:?}"))
            }
        },
    )
    .await;
    let lost_after = phase.elapsed();
    // The api says so too, to each owner, on both replicas.
    for id in &on_lost {
        let token = &users[acked[id].user].token;
        for api in &api_addrs {
            eventually(
                &format!("the api shows {id} NodeLost"),
                DEADLINE,
                async || {
                    let v = view(*api, token, id).await?;
                    if v["ready"] == false && v["reason"] == "NodeLost" && v["node"] == lost_node {
                        Ok(())
                    } else {
                        Err(format!("{v}"))
                    }
                },
            )
            .await;
        }
    }
    // The other nodes and their sessions are untouched.
    for node in &NODES[..2] {
        let n = nodes.get(node).await.unwrap();
        assert_eq!(
            node_ready(&n).map(|r| r.0),
            Some("True".to_string()),
            "{node} stays Ready"
        );
    }
    let all = sessions(&client).await;
    for s in all.iter().filter(|s| !on_lost.contains(&s.name_any())) {
        assert!(
            running_and_ready(s),
            "{} on {:?} stays Running and Ready: {:?}",
            s.name_any(),
            binding(s),
            s.status
        );
    }
    // An admin force-deletes two of its Sessions while the agent is down
    // (the delete, then the agent's finalizer removed by hand): their
    // containers are orphans, which the agent removes when it comes back,
    // saying so in Events about its GpuNode.
    let forced: Vec<String> = on_lost.iter().take(2).cloned().collect();
    let all_sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    for name in &forced {
        all_sessions
            .delete(name, &Default::default())
            .await
            .unwrap();
        all_sessions
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(json!({ "metadata": { "finalizers": null } })),
            )
            .await
            .unwrap();
        acked.remove(name);
    }
    let on_lost: BTreeSet<String> = on_lost
        .difference(&forced.iter().cloned().collect())
        .cloned()
        .collect();
    // The agent comes back: its node Ready, its sessions Ready again.
    fleet.start(lost_agent);
    eventually(&format!("{lost_node} Ready again"), DEADLINE, async || {
        let n = nodes.get(lost_node).await.ok()?;
        node_ready(&n).is_some_and(|r| r.0 == "True").then_some(())
    })
    .await;
    let names: BTreeSet<String> = acked.keys().cloned().collect();
    let all = all_running(&client, &names, "the lost node's sessions Ready again").await;
    for s in all.iter().filter(|s| on_lost.contains(&s.name_any())) {
        assert_eq!(
            binding(s).as_ref(),
            lost_bindings.get(&s.name_any()),
            "{} moved",
            s.name_any()
        );
        assert_ne!(
            s.status.as_ref().and_then(|st| st.reason.as_deref()),
            Some("NodeLost"),
            "{} still says NodeLost",
            s.name_any()
        );
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "default");
    let orphans_removed = eventually(
        "the restarted agent's Events: two orphan containers removed",
        DEADLINE,
        async || {
            let list = events.list(&ListParams::default()).await.ok()?.items;
            let count: i32 = list
                .iter()
                .filter(|e| {
                    e.reason.as_deref() == Some("OrphanContainerRemoved")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(lost_node)
                })
                .map(|e| e.series.as_ref().map_or(1, |s| s.count))
                .sum();
            (count >= 2).then_some(count)
        },
    )
    .await;
    for name in &forced {
        assert!(
            all_sessions.get_opt(name).await.unwrap().is_none(),
            "{name} came back"
        );
    }
    eprintln!(
        "3. {lost_agent} killed: {} sessions NodeLost after {lost_after:?} (heartbeat timeout {HEARTBEAT_TIMEOUT_SECS} s); \
         2 force-deleted meanwhile; restarted, Ready again, {orphans_removed} orphan containers removed ({:?} in all)",
        on_lost.len() + forced.len(),
        phase.elapsed()
    );

    // 4. An api replica SIGKILLed with creates in flight.
    let phase = Instant::now();
    let known: BTreeSet<String> = sessions(&client)
        .await
        .iter()
        .map(|s| s.name_any())
        .collect();
    assert_eq!(known, names, "only acknowledged sessions so far");
    let (victim, survivor) = (0usize, 1usize);
    let mut in_flight = tokio::task::JoinSet::new();
    // Each create carries its own Idempotency-Key, as a client that
    // retries should.
    let key = |i: usize| format!("multi-node-step-4-{i}");
    for i in 0..AT_API_KILL {
        let u = i % users.len();
        let (token, addr, k) = (users[u].token.clone(), api_addrs[victim], key(i));
        in_flight.spawn(async move {
            (
                i,
                u,
                create_with_key(addr, &token, &format!("{CREATE}?wait=ready"), Some(&k)).await,
            )
        });
    }
    // Killed once half of the creates have written their Session (they
    // then wait for it to be Ready, seconds here).
    let written = eventually(
        "creates in flight have written their Sessions",
        Duration::from_secs(60),
        async || {
            let n = sessions(&client)
                .await
                .iter()
                .filter(|s| !known.contains(&s.name_any()))
                .count();
            (n >= AT_API_KILL / 2).then_some(n)
        },
    )
    .await;
    let status = fleet.kill(APIS[victim]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "{} died of SIGKILL",
        APIS[victim]
    );
    let mut answered = 0;
    let mut cut: Vec<(usize, usize, String)> = Vec::new();
    while let Some(done) = in_flight.join_next().await {
        match done.unwrap() {
            (_, u, Ok(id)) => {
                answered += 1;
                assert!(
                    acked
                        .insert(
                            id,
                            Acked {
                                user: u,
                                api: victim
                            }
                        )
                        .is_none()
                );
            }
            (i, u, Err(why)) => cut.push((i, u, why)),
        }
    }
    assert!(
        !cut.is_empty(),
        "no create was in flight when {} died ({answered} answered)",
        APIS[victim]
    );
    // The clients retry what got no answer on the other replica, with the
    // same key: a create whose Session was written gets that session back.
    for (i, u, why) in &cut {
        let id = create_with_key(
            api_addrs[survivor],
            &users[*u].token,
            CREATE,
            Some(&key(*i)),
        )
        .await
        .unwrap_or_else(|e| panic!("retry of a create cut by the kill ({why}): {e}"));
        assert!(
            acked
                .insert(
                    id,
                    Acked {
                        user: *u,
                        api: survivor
                    }
                )
                .is_none()
        );
    }
    let names: BTreeSet<String> = acked.keys().cloned().collect();
    let all = all_running(&client, &names, "every acknowledged session Running").await;
    // Nothing acknowledged is lost, nothing is there twice.
    for id in &names {
        let n = all.iter().filter(|s| s.name_any() == *id).count();
        assert_eq!(n, 1, "acknowledged session {id} exists {n} times");
        let token = &users[acked[id].user].token;
        let v = view(api_addrs[survivor], token, id)
            .await
            .unwrap_or_else(|e| panic!("{id} through {}: {e}", APIS[survivor]));
        assert_eq!(v["id"], id.as_str());
    }
    // Nothing else: every Session the killed replica wrote for a cut
    // request is the one its retry got back.
    let orphans: Vec<String> = all
        .iter()
        .filter(|s| !names.contains(&s.name_any()))
        .map(|s| s.name_any())
        .collect();
    assert!(
        orphans.is_empty(),
        "Sessions nobody acknowledged (duplicates of retried creates): {orphans:?}"
    );
    let new_sessions = all
        .iter()
        .filter(|s| !known.contains(&s.name_any()))
        .count();
    assert_eq!(
        new_sessions, AT_API_KILL,
        "one Session per create, retried or not"
    );
    // The killed replica, back: the same sessions for each user as the other.
    fleet.start(APIS[victim]);
    eventually("the restarted api ready", DEADLINE, async || {
        fleet.assert_alive(APIS[victim]);
        http(
            api_addrs[victim],
            Method::GET,
            "/readyz",
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .is_ok_and(|r| r.status == 200)
    })
    .await;
    for user in &users {
        let in_plane: BTreeSet<String> = all
            .iter()
            .filter(|s| {
                s.annotations()
                    .get(OWNER_EMAIL_ANNOTATION)
                    .map(String::as_str)
                    == Some(user.email)
            })
            .map(|s| s.name_any())
            .collect();
        for (i, api) in api_addrs.iter().enumerate() {
            eventually(
                &format!("{} lists {}'s sessions", APIS[i], user.email),
                DEADLINE,
                async || {
                    let got = listed(*api, &user.token).await?;
                    if got == in_plane {
                        Ok(())
                    } else {
                        Err(format!("{got:?} != {in_plane:?}"))
                    }
                },
            )
            .await;
        }
    }
    eprintln!(
        "4. {} killed with {AT_API_KILL} creates in flight ({written} Sessions written): {answered} answered, \
         {} cut and retried with their Idempotency-Key on {}; {new_sessions} new Sessions, no duplicate; \
         {} acknowledged sessions, all there once ({:?})",
        APIS[victim],
        cut.len(),
        APIS[survivor],
        names.len(),
        phase.elapsed()
    );

    // 5. The rest of a session's life and the admin's routes, through the
    // surviving api, so that every grant the chart gives is exercised.
    lifecycle(
        &client,
        api_addrs[survivor],
        &admin,
        &users[0].token,
        &image,
    )
    .await;

    gpu_watch.abort();
    let (violations, checked) = gpu_watch_seen.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "GPUs given twice (of {checked} changes): {violations:?}"
    );
    assert!(checked > 0, "the GPU watch saw no change");
    let twice = gpus_given_twice(&sessions(&client).await);
    assert!(twice.is_empty(), "{twice:?}");
    eprintln!(
        "no GPU given twice over {checked} Session changes; {:?} in all",
        started.elapsed()
    );

    // 6. Least privilege: each component made every call as its own
    // ServiceAccount, none was refused, and every grant the chart gives was
    // used by the calls above.
    let audit = std::fs::read_to_string(dir.join("audit.log")).unwrap();
    let report = medforge_apiserver::rbac_report::report(&chart_rbac(), &audit).unwrap();
    eprintln!(
        "6. RBAC, from the control plane's audit log:\n{}",
        report.render()
    );
    for component in ["agent", "scheduler", "api"] {
        let user = format!("system:serviceaccount:{CHART_NAMESPACE}:medforge-{component}");
        assert!(
            report.accounts.get(&user).is_some_and(|a| a.requests > 0),
            "{user} made no request"
        );
    }
    assert!(
        report.is_clean(),
        "refused requests or unused grants:\n{}",
        report.render()
    );
    drop(fleet);
    drop(postgres);
    drop(harnesses);
    drop(guards);
}

/// Creates the api's admin with `medforge create-admin` (the password on
/// standard input) and logs it in through `api`; its login token.
async fn make_admin(database_url: &str, api: SocketAddr) -> String {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_medforge"))
        .args([
            "create-admin",
            "--email",
            ADMIN.email,
            "--database-url",
            database_url,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", ADMIN.password).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "create-admin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ADMIN
        .log_in(move |path, body| async move {
            http(
                api,
                Method::POST,
                path,
                None,
                Some(&body),
                Duration::from_secs(30),
            )
            .await
            .unwrap()
        })
        .await
}

/// `method path` on `api` with `token`; asserts the status is one of `want`
/// and returns the answer's `data`.
async fn call(
    api: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    want: &[u16],
) -> Value {
    let r = http(
        api,
        method.clone(),
        path,
        Some(token),
        body.as_ref(),
        Duration::from_secs(60),
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert!(
        want.contains(&r.status),
        "{method} {path}: {} {}",
        r.status,
        r.text()
    );
    if r.body.is_empty() {
        Value::Null
    } else {
        r.json::<Value>()
            .map(|v| v["data"].clone())
            .unwrap_or(Value::Null)
    }
}

/// Step 5: a manual snapshot taken and deleted, a keepalive, two stops and
/// starts (retention deletes the older stop snapshot), a session restored
/// from the kept one, the admin's deletes, a stopped session deleted by the
/// schedulers after the session history, and the admin's node and Pack
/// routes (cordon and uncordon a node and a GPU, create, replace, list and
/// delete a Pack).
async fn lifecycle(client: &kube::Client, api: SocketAddr, admin: &str, token: &str, image: &str) {
    let phase = Instant::now();
    let sessions: Api<Session> = Api::namespaced(client.clone(), NS);
    let running = |id: String| {
        let sessions = sessions.clone();
        async move {
            eventually(&format!("{id} Running and Ready"), DEADLINE, async || {
                let s = sessions.get(&id).await.ok()?;
                running_and_ready(&s).then_some(())
            })
            .await
        }
    };
    let stopped = |id: String| {
        let sessions = sessions.clone();
        async move {
            eventually(&format!("{id} Stopped"), DEADLINE, async || {
                let s = sessions.get(&id).await.ok()?;
                (s.status.as_ref()?.phase == Some(SessionPhase::Stopped)).then_some(())
            })
            .await
        }
    };
    let gone = |id: String| {
        let sessions = sessions.clone();
        async move {
            eventually(
                &format!("{id} gone from the control plane"),
                DEADLINE,
                async || sessions.get_opt(&id).await.ok()?.is_none().then_some(()),
            )
            .await
        }
    };
    let id = create(api, token, CREATE).await.unwrap();
    running(id.clone()).await;

    // A manual snapshot: taken by the node agent, then deleted.
    let snap = call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/snapshots"),
        None,
        &[202],
    )
    .await;
    let snap_id = snap["snapshot"]["id"].as_str().unwrap().to_string();
    eventually("the manual snapshot ready", DEADLINE, async || {
        let v = get_data(api, token, &format!("/api/v2/snapshots/{snap_id}"))
            .await
            .ok()?;
        (v["state"] == "ready").then_some(())
    })
    .await;
    call(
        api,
        token,
        Method::DELETE,
        &format!("/api/v2/snapshots/{snap_id}"),
        None,
        &[202, 204],
    )
    .await;
    eventually("the manual snapshot deleted", DEADLINE, async || {
        let r = http(
            api,
            Method::GET,
            &format!("/api/v2/snapshots/{snap_id}"),
            Some(token),
            None,
            Duration::from_secs(10),
        )
        .await
        .ok()?;
        (r.status == 404).then_some(())
    })
    .await;

    // Activity, a stop (with its snapshot) and a start on the same workspace.
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/keepalive"),
        None,
        &[200],
    )
    .await;
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/stop"),
        None,
        &[202],
    )
    .await;
    stopped(id.clone()).await;
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/start"),
        None,
        &[202],
    )
    .await;
    running(id.clone()).await;
    // A second stop: its snapshot is the newest, and retention (the newest
    // one kept) deletes the first.
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/stop"),
        None,
        &[202],
    )
    .await;
    stopped(id.clone()).await;
    let kept = eventually(
        "retention down to one snapshot of the session",
        DEADLINE,
        async || {
            let v = get_data(api, token, &format!("/api/v2/snapshots?session={id}"))
                .await
                .ok()?;
            let list = v.as_array()?;
            (list.len() == 1 && list[0]["state"] == "ready")
                .then(|| list[0]["id"].as_str().unwrap().to_string())
        },
    )
    .await;
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{id}/start"),
        None,
        &[202],
    )
    .await;
    running(id.clone()).await;
    // A new session restored from the kept snapshot.
    let restored = call(
        api,
        token,
        Method::POST,
        CREATE,
        Some(json!({ "gpus": 1, "restore_from": kept })),
        &[201, 202],
    )
    .await;
    let restored = restored["session"]["id"].as_str().unwrap().to_string();
    running(restored.clone()).await;
    // The admin deletes both; the agents clean up and let them go.
    for s in [&id, &restored] {
        call(
            api,
            admin,
            Method::DELETE,
            &format!("{CREATE}/{s}"),
            None,
            &[204],
        )
        .await;
        gone(s.to_string()).await;
    }

    // A stopped session is deleted by the schedulers after the history.
    let old = create(api, token, CREATE).await.unwrap();
    running(old.clone()).await;
    call(
        api,
        token,
        Method::POST,
        &format!("{CREATE}/{old}/stop"),
        None,
        &[202],
    )
    .await;
    stopped(old.clone()).await;
    gone(old).await;

    // The admin's node routes.
    let node = NODES[0];
    call(api, admin, Method::GET, "/api/v2/admin/nodes", None, &[200]).await;
    for action in ["cordon", "uncordon"] {
        call(
            api,
            admin,
            Method::POST,
            &format!("/api/v2/admin/nodes/{node}/{action}"),
            None,
            &[200],
        )
        .await;
        call(
            api,
            admin,
            Method::POST,
            &format!("/api/v2/admin/nodes/{node}/gpus/0/{action}"),
            None,
            &[200],
        )
        .await;
    }
    // The admin's Pack routes.
    let pack = json!({ "image": image, "port": 8080 });
    call(
        api,
        admin,
        Method::PUT,
        "/api/v2/admin/packs/extra",
        Some(pack.clone()),
        &[201],
    )
    .await;
    let mut replaced = pack;
    replaced["display_name"] = json!("Extra");
    call(
        api,
        admin,
        Method::PUT,
        "/api/v2/admin/packs/extra",
        Some(replaced),
        &[200],
    )
    .await;
    let listed = call(api, admin, Method::GET, "/api/v2/packs", None, &[200]).await;
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|p| p["name"] == "extra")),
        "{listed}"
    );
    call(
        api,
        admin,
        Method::DELETE,
        "/api/v2/admin/packs/extra",
        None,
        &[204],
    )
    .await;
    eprintln!(
        "5. snapshot, stop, start, keepalive, restore, delete, history, node and Pack routes ({:?})",
        phase.elapsed()
    );
}
