//! The chaos soak: the whole single host as separate processes (control
//! plane, scheduler, node agent, api, Caddy) on a private harness (its own
//! network namespace, dockerd and zfs-fuse pool, so no other test's daemons
//! are touched), a load generator that signs users up and creates, stops,
//! starts and deletes sessions through Caddy, and a chaos loop that SIGKILLs
//! one component at a time at random (by the PID this test started) and
//! restarts it. Invariants are checked while it runs and once more after the
//! chaos stops and the host settles; every violation goes into the report
//! (`target/soak/report.md`), and the test fails on any.
//!
//! `MEDFORGE_SOAK_SECS` sets how long the chaos runs (default 120: the short
//! soak CI runs); `scripts/soak.sh 3600` runs the hour on demand.
//! `MEDFORGE_SOAK_BINARY` names another `medforge` binary to run (a build
//! broken on purpose, to see the soak report it).

#[path = "support/one_host.rs"]
mod one_host;
#[path = "support/private_harness.rs"]
mod private_harness;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use medforge_crds::{Pack, PackSpec, Session, SessionPhase};
use medforge_testkit::{Harness, HarnessConfig, Method};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use one_host::Proxy;
use private_harness::PrivateHarness;
use rand::Rng;
use serde_json::{Value, json};
use support::{Proc, cookie_of, free_port, workload_image_id};

const DOMAIN: &str = "soak.medforge.test";
const NODE: &str = "soak-node";
const NAMESPACE: &str = "medforge";
const ADMIN_EMAIL: &str = "admin@soak.medforge.test";
const ADMIN_PASSWORD: &str = "correct horse battery staple";
const USERS: usize = 6;
const GPUS: u32 = 4;

/// The components the chaos loop kills.
const COMPONENTS: [&str; 7] = [
    "apiserver",
    "scheduler",
    "agent",
    "api",
    "caddy",
    "dockerd",
    "zfs-fuse",
];

/// The host under test: its processes and where they listen.
struct Host {
    harness: Harness,
    config: HarnessConfig,
    dir: PathBuf,
    image: String,
    zfs_root: String,
    apiserver_port: u16,
    api_port: u16,
    caddy_port: u16,
    caddy_admin_port: u16,
    procs: BTreeMap<&'static str, Proc>,
}

impl Host {
    fn spawn(&mut self, name: &'static str) {
        if name == "caddy" {
            let proxy = Proxy::Plain {
                port: self.caddy_port,
                admin: self.caddy_admin_port,
            };
            let p =
                one_host::start_caddy_for(&self.harness, &self.dir, DOMAIN, self.api_port, &proxy);
            self.procs.insert(name, p);
            return;
        }
        // MEDFORGE_SOAK_BINARY runs the soak against another build (one
        // broken on purpose, to see that the soak catches it).
        let binary = std::env::var_os("MEDFORGE_SOAK_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_medforge")));
        let medforge = binary.as_path();
        let data = self.dir.join("apiserver");
        let kubeconfig = data.join("kubeconfig").to_str().unwrap().to_string();
        let layout = self.harness.layout();
        let (program, args, env): (&Path, Vec<String>, Vec<(&str, String)>) = match name {
            "apiserver" => (
                medforge,
                vec![
                    "apiserver".into(),
                    "--data-dir".into(),
                    data.to_str().unwrap().into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", self.apiserver_port),
                ],
                vec![],
            ),
            "scheduler" => (
                medforge,
                vec![
                    "operator".into(),
                    "--no-agent".into(),
                    "--kubeconfig".into(),
                    kubeconfig,
                    "--lease-duration".into(),
                    "5s".into(),
                ],
                vec![],
            ),
            "agent" => (
                medforge,
                vec![
                    "operator".into(),
                    "--no-scheduler".into(),
                    "--kubeconfig".into(),
                    kubeconfig,
                    "--node-name".into(),
                    NODE.into(),
                    "--gpus".into(),
                    format!("static:{GPUS}"),
                    "--docker-socket".into(),
                    layout.docker_socket.to_str().unwrap().into(),
                    "--zfs-binary".into(),
                    self.harness.zfs_binary().to_str().unwrap().into(),
                    "--zfs-root".into(),
                    self.zfs_root.clone(),
                    "--network".into(),
                    "soak-sessions".into(),
                ],
                vec![],
            ),
            "api" => (
                medforge,
                vec![
                    "api".into(),
                    "--kubeconfig".into(),
                    kubeconfig,
                    "--data-dir".into(),
                    self.dir.join("api").to_str().unwrap().into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", self.api_port),
                    "--domain".into(),
                    DOMAIN.into(),
                    "--insecure-cookies".into(),
                    "--signup-mode".into(),
                    "open".into(),
                    "--admin-email".into(),
                    ADMIN_EMAIL.into(),
                ],
                vec![("MEDFORGE_ADMIN_PASSWORD", ADMIN_PASSWORD.to_string())],
            ),
            other => unreachable!("{other} is not a process of the host"),
        };
        let mut env = env;
        env.push(("RUST_LOG", "info".into()));
        // nsenter execs the program: the child's PID is the component's.
        let p = one_host::spawn(&self.harness, name, program, &args, &env, false, &self.dir);
        self.procs.insert(name, p);
    }

    /// SIGKILLs one component (by the PID this test started, or the
    /// harness's pidfile for its daemons) and waits until it is gone.
    async fn kill(&mut self, name: &'static str) {
        match name {
            "dockerd" | "zfs-fuse" => {
                let layout = self.harness.layout();
                let pidfile = if name == "dockerd" {
                    &layout.docker_pidfile
                } else {
                    &layout.zfs_fuse_pidfile
                };
                let Some(pid) = std::fs::read_to_string(pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok())
                else {
                    return;
                };
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let until = Instant::now() + Duration::from_secs(30);
                while std::path::Path::new(&format!("/proc/{pid}")).exists()
                    && !zombie(pid)
                    && Instant::now() < until
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            _ => {
                if let Some(mut p) = self.procs.remove(name) {
                    p.stop(Signal::SIGKILL);
                }
            }
        }
    }

    /// Restarts the processes that exited on their own (as a supervisor
    /// would); their names.
    fn supervise(&mut self) -> Vec<&'static str> {
        let exited: Vec<&'static str> = self
            .procs
            .iter_mut()
            .filter_map(|(name, p)| matches!(p.child.try_wait(), Ok(Some(_))).then_some(*name))
            .collect();
        for name in &exited {
            eprintln!("soak: {name} exited on its own; restarting it");
            self.procs.remove(name);
            self.spawn(name);
        }
        exited
    }

    /// Starts the component again.
    async fn restart(&mut self, name: &'static str) {
        match name {
            "dockerd" | "zfs-fuse" => {
                let config = self.config.clone();
                let out = tokio::task::spawn_blocking(move || medforge_testkit::up(&config))
                    .await
                    .unwrap();
                if let Err(e) = out {
                    eprintln!("soak: bringing {name} back: {e}");
                }
                // zfs-fuse is one daemon for every harness on the machine:
                // the shared harness's pool (when it is up) is imported
                // again too, so that the tests after this one find it.
                // Nextest runs the soak alone (`.config/nextest.toml`).
                if name == "zfs-fuse" {
                    let shared = HarnessConfig::from_env();
                    if shared.state_dir != self.config.state_dir
                        && shared.layout().is_ok_and(|l| l.info_file.exists())
                    {
                        let out =
                            tokio::task::spawn_blocking(move || medforge_testkit::up(&shared))
                                .await
                                .unwrap();
                        if let Err(e) = out {
                            eprintln!("soak: bringing the shared harness's pool back: {e}");
                        }
                    }
                }
            }
            _ => self.spawn(name),
        }
    }

    fn caddy(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.caddy_port))
    }

    fn api(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.api_port))
    }
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
        .unwrap_or(true)
}

/// Forwards a loopback port of this process's namespace to an address in
/// the harness's namespace (the control plane listens there): the test's
/// kube client goes through it.
async fn forward_into_netns(harness: Harness, to: SocketAddr) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let harness = harness.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = harness.connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

/// A kube client for the control plane through the forwarder.
async fn kube_client(host: &Host, port: u16) -> kube::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut kc) =
            kube::config::Kubeconfig::read_from(host.dir.join("apiserver/kubeconfig"))
        {
            for c in &mut kc.clusters {
                if let Some(cluster) = c.cluster.as_mut() {
                    cluster.server = Some(format!("https://127.0.0.1:{port}"));
                }
            }
            if let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
                && let Ok(c) = kube::Client::try_from(config)
                && c.apiserver_version().await.is_ok()
            {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the control plane never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What happened, for the report.
#[derive(Default)]
struct Tally {
    faults: BTreeMap<&'static str, u32>,
    /// One answer body per failed (operation, status), for the report.
    samples: BTreeMap<String, String>,
    /// Processes that exited by themselves (restarted, as a supervisor would).
    exits: BTreeMap<&'static str, u32>,
    ops: BTreeMap<String, u32>,
    proxy_5xx: u32,
    checks: u32,
    /// Session changes the GPU check saw.
    watched: u64,
    violations: Vec<String>,
}

impl Tally {
    /// Keeps the first answer body of each failed (operation, status).
    fn note(&mut self, what: &str, status: u16, body: &str) {
        let key = format!("{what} {status}");
        self.samples
            .entry(key)
            .or_insert_with(|| body.chars().take(300).collect());
    }

    fn op(&mut self, what: &str, status: u16) {
        *self.ops.entry(format!("{what} {status}")).or_default() += 1;
    }

    /// Records a violation, once however often it is seen.
    fn violation(&mut self, v: String) {
        if !self.violations.contains(&v) {
            eprintln!("soak: VIOLATION: {v}");
            self.violations.push(v);
        }
    }
}

/// One user of the load generator.
#[derive(Clone)]
struct User {
    email: String,
    cookie: Option<String>,
    /// Sessions acknowledged (201/202) and not deleted, with what was last
    /// acknowledged of them: true for running, false for stopped.
    sessions: BTreeMap<String, (String, bool)>,
    /// Sessions whose delete got no answer or a 5xx: it may have happened.
    maybe_deleted: BTreeSet<String>,
}

/// An HTTP client through Caddy.
#[derive(Clone)]
struct Web {
    harness: Harness,
    caddy: SocketAddr,
}

impl Web {
    async fn call(
        &self,
        method: Method,
        host: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Option<medforge_testkit::HttpResponse> {
        let api_host = host.starts_with("api.");
        let cookie_header = cookie.map(|c| {
            if api_host {
                format!("medforge_api={c}")
            } else {
                format!("medforge_session={c}")
            }
        });
        let mut headers: Vec<(&str, &str)> = vec![("Host", host)];
        if let Some(c) = &cookie_header {
            headers.push(("Cookie", c));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.harness
            .http_with_headers(method, self.caddy, path, &headers, bytes)
            .await
            .ok()
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> Option<medforge_testkit::HttpResponse> {
        self.call(method, &format!("api.{DOMAIN}"), path, cookie, body)
            .await
    }
}

/// The api's view of one session, by id.
async fn session_view(web: &Web, id: &str, cookie: &str) -> Option<Value> {
    let r = web
        .api(
            Method::GET,
            &format!("/api/v2/external/sessions/{id}"),
            Some(cookie),
            None,
        )
        .await?;
    (r.status == 200)
        .then(|| r.json::<Value>().ok())
        .flatten()
        .map(|v| v["data"].clone())
}

/// One step of the load generator for one user.
async fn load_step(web: &Web, user: &mut User, admin: &str, tally: &Mutex<Tally>) {
    // `rand::rng()` per draw: the thread's generator is not held across an
    // await, so that each user's loop can be its own task.
    let Some(cookie) = user.cookie.clone() else {
        let body = json!({"email": user.email, "password": "correct horse battery"});
        let mut r = web
            .api(
                Method::POST,
                "/api/v2/auth/signup",
                None,
                Some(body.clone()),
            )
            .await;
        if r.as_ref().is_some_and(|r| r.status == 409) {
            r = web
                .api(Method::POST, "/api/v2/auth/login", None, Some(body))
                .await;
        }
        let status = r.as_ref().map_or(0, |r| r.status);
        tally.lock().unwrap().op("signup/login", status);
        if let Some(r) = r.filter(|r| r.status == 200 || r.status == 201) {
            user.cookie = Some(cookie_of(&r));
        }
        return;
    };
    let pick = rand::rng().random_range(0..100);
    let existing: Vec<String> = user.sessions.keys().cloned().collect();
    if existing.is_empty() || pick < 25 {
        let r = web
            .api(
                Method::POST,
                "/api/v2/external/sessions",
                Some(&cookie),
                Some(json!({"gpus": 1})),
            )
            .await;
        let status = r.as_ref().map_or(0, |r| r.status);
        tally.lock().unwrap().op("create", status);
        if let Some(r) = r.as_ref().filter(|r| r.status >= 400) {
            tally.lock().unwrap().note("create", r.status, &r.text());
        }
        if let Some(r) = r.filter(|r| r.status == 201 || r.status == 202)
            && let Ok(v) = r.json::<Value>()
            && let Some(id) = v["data"]["session"]["id"].as_str()
        {
            let slug = v["data"]["session"]["slug"].as_str().unwrap_or_default();
            user.sessions
                .insert(id.to_string(), (slug.to_string(), true));
        }
        return;
    }
    let id = existing[rand::rng().random_range(0..existing.len())].clone();
    let (what, method, path, who) = match pick {
        25..=54 => (
            "stop",
            Method::POST,
            format!("/api/v2/external/sessions/{id}/stop"),
            cookie.as_str(),
        ),
        55..=84 => (
            "start",
            Method::POST,
            format!("/api/v2/external/sessions/{id}/start"),
            cookie.as_str(),
        ),
        _ => (
            "delete",
            Method::DELETE,
            format!("/api/v2/external/sessions/{id}"),
            admin,
        ),
    };
    let r = web.api(method, &path, Some(who), None).await;
    let status = r.as_ref().map_or(0, |r| r.status);
    tally.lock().unwrap().op(what, status);
    if let Some(r) = r.as_ref().filter(|r| r.status >= 400) {
        tally.lock().unwrap().note(what, r.status, &r.text());
    }
    match (what, status) {
        ("stop", 202) => {
            if let Some(s) = user.sessions.get_mut(&id) {
                s.1 = false;
            }
        }
        ("start", 202) => {
            if let Some(s) = user.sessions.get_mut(&id) {
                s.1 = true;
            }
        }
        ("delete", 204) => {
            user.sessions.remove(&id);
        }
        ("delete", 0 | 500..) => {
            user.maybe_deleted.insert(id);
        }
        (_, 404) => {
            // Gone: fine after a delete whose outcome is unknown; otherwise
            // an acknowledged session was lost.
            if !user.maybe_deleted.remove(&id) {
                tally.lock().unwrap().violation(format!(
                    "acknowledged session {id} of {} answered 404 to {what} with no delete sent",
                    user.email
                ));
            }
            user.sessions.remove(&id);
        }
        _ => {}
    }
}

/// Live Sessions of the control plane.
async fn sessions(client: &kube::Client) -> Option<Vec<Session>> {
    Api::<Session>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .ok()
        .map(|l| l.items)
}

/// Checks [`check_gpus`] on the control plane's Sessions after every change
/// its watch delivers, through its restarts, until aborted.
async fn watch_gpus(client: kube::Client, tally: Arc<Mutex<Tally>>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let api = Api::<Session>::namespaced(client, NAMESPACE);
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
        let mut t = tally.lock().unwrap();
        t.watched += 1;
        check_gpus(&all, &mut t);
    }
}

/// No GPU held by two sessions at once.
fn check_gpus(all: &[Session], tally: &mut Tally) {
    let mut held: HashMap<(String, String), String> = HashMap::new();
    for s in all {
        let Some(st) = &s.status else { continue };
        let holds = matches!(
            st.phase,
            Some(
                SessionPhase::Scheduled
                    | SessionPhase::Starting
                    | SessionPhase::Running
                    | SessionPhase::Stopping
            )
        );
        if !holds {
            continue;
        }
        let node = st.node_name.clone().unwrap_or_default();
        for g in &st.gpus {
            if let Some(other) = held.insert((node.clone(), g.uuid.clone()), s.name_any()) {
                tally.violation(format!(
                    "GPU {} on {node} held by {other} and {} at once",
                    g.uuid,
                    s.name_any()
                ));
            }
        }
    }
}

/// Ready sessions answer their owner through the proxy, and never another
/// user. `strict`: a failing answer is a violation (after the host settled);
/// otherwise it is counted (a fault may have just taken the container).
async fn check_proxy(web: &Web, users: &[User], strict: bool, tally: &Mutex<Tally>) {
    for (i, user) in users.iter().enumerate() {
        let Some(cookie) = &user.cookie else { continue };
        let other = users
            .iter()
            .enumerate()
            .find(|(j, u)| *j != i && u.cookie.is_some())
            .and_then(|(_, u)| u.cookie.clone());
        for (id, (slug, _)) in &user.sessions {
            let Some(view) = session_view(web, id, cookie).await else {
                continue;
            };
            if view["state"] != "running" || view["ready"] != true {
                continue;
            }
            let host = format!("s-{slug}.external.{DOMAIN}");
            let r = web.call(Method::GET, &host, "/", Some(cookie), None).await;
            let status = r.as_ref().map_or(0, |r| r.status);
            {
                let mut t = tally.lock().unwrap();
                t.checks += 1;
                if status >= 500 || status == 0 {
                    t.proxy_5xx += 1;
                    // Ready by the api a moment ago; say so only once the
                    // session is still Ready and still failing.
                    if strict {
                        t.violation(format!(
                            "session {id} ({host}) is Ready but its owner got {status} through the proxy"
                        ));
                    }
                }
            }
            if let Some(other) = &other {
                let r = web.call(Method::GET, &host, "/", Some(other), None).await;
                if let Some(r) = r
                    && (200..400).contains(&r.status)
                {
                    tally.lock().unwrap().violation(format!(
                        "another user got {} from session {id} ({host})",
                        r.status
                    ));
                }
            }
        }
    }
}

/// After the host settled: acknowledged writes are there, and nothing runs
/// or holds a dataset without its Session.
async fn final_checks(
    host: &Host,
    client: &kube::Client,
    web: &Web,
    users: &[User],
    tally: &Mutex<Tally>,
) {
    let all = sessions(client)
        .await
        .expect("the control plane answers after the soak");
    check_gpus(&all, &mut tally.lock().unwrap());
    let uids: BTreeSet<String> = all.iter().filter_map(|s| s.uid()).collect();
    for user in users {
        let Some(cookie) = &user.cookie else { continue };
        for (id, (_, running)) in &user.sessions {
            match session_view(web, id, cookie).await {
                // Its delete had no answer: it may have happened.
                None if user.maybe_deleted.contains(id) => {}
                None => tally.lock().unwrap().violation(format!(
                    "acknowledged session {id} of {} is gone",
                    user.email
                )),
                Some(v) => {
                    if !running && v["state"] == "running" && v["phase"] == "Running" {
                        tally.lock().unwrap().violation(format!(
                            "session {id}: the stop was acknowledged, it still runs"
                        ));
                    }
                }
            }
        }
    }
    // Containers of this node: each belongs to a live Session.
    let docker = host.harness.docker();
    let label = format!("{}={NODE}", medforge_crds::keys::container::NODE);
    let containers = docker
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_string(), vec![label])])),
            ..Default::default()
        }))
        .await
        .expect("dockerd answers after the soak");
    for c in containers {
        let uid = c
            .labels
            .unwrap_or_default()
            .get(medforge_crds::keys::container::SESSION_UID)
            .cloned()
            .unwrap_or_default();
        if !uids.contains(&uid) {
            tally.lock().unwrap().violation(format!(
                "container {:?} belongs to no Session (uid {uid})",
                c.names
            ));
        }
    }
    // Datasets that are not retired: each is a live Session's workspace.
    let out = host
        .harness
        .zfs([
            "list",
            "-H",
            "-r",
            "-t",
            "filesystem",
            "-o",
            "name,medforge:session-uid,medforge:retired",
            host.zfs_root.as_str(),
        ])
        .await
        .expect("zfs answers after the soak");
    for line in out.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [name, uid, retired] = cols[..] else {
            continue;
        };
        if uid == "-" || retired != "-" {
            continue;
        }
        if !uids.contains(uid) {
            tally.lock().unwrap().violation(format!(
                "dataset {name} is not retired and belongs to no Session (uid {uid})"
            ));
        }
    }
    check_proxy(web, users, true, tally).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let secs: u64 = medforge_testkit::env_or("MEDFORGE_SOAK_SECS", 120);
    let state = tempfile::Builder::new()
        .prefix("mf-soak")
        .tempdir()
        .unwrap();
    let config = HarnessConfig::from_env().with_state_dir(state.path().join("h"));
    let _teardown = PrivateHarness {
        config: config.clone(),
    };
    let harness = Harness::start(config.clone())
        .await
        .expect("private harness");
    let image = workload_image_id(&harness).await;
    let dir = state.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    let zfs_root = format!("{}/soak", harness.layout().pool);
    let mut host = Host {
        harness: harness.clone(),
        config: config.clone(),
        dir,
        image,
        zfs_root,
        apiserver_port: free_port(),
        api_port: free_port(),
        caddy_port: free_port(),
        caddy_admin_port: free_port(),
        procs: BTreeMap::new(),
    };
    host.spawn("apiserver");
    let forward = forward_into_netns(
        harness.clone(),
        SocketAddr::from(([127, 0, 0, 1], host.apiserver_port)),
    )
    .await;
    let client = kube_client(&host, forward).await;
    for name in ["scheduler", "agent", "api", "caddy"] {
        host.spawn(name);
    }
    medforge_operator::leader::ensure_namespace(&client, NAMESPACE)
        .await
        .unwrap();
    let pack = Pack::new("default", PackSpec::of_image(host.image.clone(), 8080));
    Api::<Pack>::all(client.clone())
        .create(&PostParams::default(), &pack)
        .await
        .unwrap();
    if harness
        .wait_for_http(host.api(), "/readyz", Duration::from_secs(120))
        .await
        .is_err()
    {
        panic!(
            "the api never became ready:\n{}",
            host.procs["api"].log_tail()
        );
    }
    let web = Web {
        harness: harness.clone(),
        caddy: host.caddy(),
    };
    // The admin, for deletes.
    let admin = medforge_testkit::eventually(
        "the admin logs in through Caddy",
        Duration::from_secs(60),
        async || {
            let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
            let r = web
                .api(Method::POST, "/api/v2/auth/login", None, Some(body))
                .await?;
            (r.status == 200).then(|| cookie_of(&r))
        },
    )
    .await;
    let users: Vec<User> = (0..USERS)
        .map(|i| User {
            email: format!("user{i}@soak.medforge.test"),
            cookie: None,
            sessions: BTreeMap::new(),
            maybe_deleted: BTreeSet::new(),
        })
        .collect();
    // What each user's loop last acknowledged, for the checks.
    let shared = Arc::new(Mutex::new(users));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let load_on = Arc::new(AtomicBool::new(true));
    // The load: every user its own task, so that creates, stops and starts
    // of different users race each other (the scheduler's bindings too).
    let mut load = tokio::task::JoinSet::new();
    for i in 0..USERS {
        let (web, admin, tally, shared, load_on) = (
            web.clone(),
            admin.clone(),
            tally.clone(),
            shared.clone(),
            load_on.clone(),
        );
        load.spawn(async move {
            let mut user = shared.lock().unwrap()[i].clone();
            while load_on.load(Ordering::Relaxed) {
                load_step(&web, &mut user, &admin, &tally).await;
                shared.lock().unwrap()[i] = user.clone();
                // Long enough, often enough, for sessions to reach Ready
                // between one user's operations; short enough that users'
                // creates race each other.
                let pause = rand::rng().random_range(50..2000);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        });
    }
    // No GPU held twice, checked at every Session change the control plane
    // sends (a watch through its restarts), not only every few seconds: a
    // double hold that lasts a moment is seen too.
    let gpu_watch = tokio::spawn(watch_gpus(client.clone(), tally.clone()));
    let mut next_fault = Instant::now() + Duration::from_secs(5);
    let mut next_check = Instant::now();
    // The chaos and the checks, while the users' tasks run.
    while Instant::now() < until {
        if Instant::now() >= next_fault {
            let name = COMPONENTS[rand::rng().random_range(0..COMPONENTS.len())];
            eprintln!("soak: {:>5}s SIGKILL {name}", started.elapsed().as_secs());
            host.kill(name).await;
            *tally.lock().unwrap().faults.entry(name).or_default() += 1;
            // Down for a moment, as after a crash before a supervisor
            // restarts it.
            let down = rand::rng().random_range(200..3000);
            tokio::time::sleep(Duration::from_millis(down)).await;
            host.restart(name).await;
            next_fault = Instant::now() + Duration::from_secs(rand::rng().random_range(5..15));
        }
        for name in host.supervise() {
            *tally.lock().unwrap().exits.entry(name).or_default() += 1;
        }
        if Instant::now() >= next_check {
            if let Some(all) = sessions(&client).await {
                check_gpus(&all, &mut tally.lock().unwrap());
            }
            let users = shared.lock().unwrap().clone();
            check_proxy(&web, &users, false, &tally).await;
            next_check = Instant::now() + Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    gpu_watch.abort();
    // The load stops (each user finishes the call it is in).
    load_on.store(false, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("a user's load task");
    }
    let users = shared.lock().unwrap().clone();
    // The chaos stops: every component is up, and the host settles (no
    // session in a passing phase) before the last checks.
    for name in COMPONENTS {
        if !host.procs.contains_key(name) && !matches!(name, "dockerd" | "zfs-fuse") {
            host.spawn(name);
        }
    }
    host.restart("dockerd").await;
    let settled = medforge_testkit::try_eventually(
        "the host settles",
        Duration::from_secs(180),
        async || {
            let all = sessions(&client).await?;
            all.iter()
                .all(|s| {
                    matches!(
                        s.phase(),
                        SessionPhase::Running
                            | SessionPhase::Stopped
                            | SessionPhase::Failed
                            | SessionPhase::Pending
                    ) && s.metadata.deletion_timestamp.is_none()
                })
                .then_some(())
        },
    )
    .await;
    if let Err(e) = &settled {
        let unsettled: Vec<String> = sessions(&client)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|s| {
                s.metadata.deletion_timestamp.is_some()
                    || !matches!(
                        s.phase(),
                        SessionPhase::Running
                            | SessionPhase::Stopped
                            | SessionPhase::Failed
                            | SessionPhase::Pending
                    )
            })
            .map(|s| {
                format!(
                    "{} {:?}{} ({})",
                    s.name_any(),
                    s.phase(),
                    if s.metadata.deletion_timestamp.is_some() {
                        " deleting"
                    } else {
                        ""
                    },
                    s.status
                        .as_ref()
                        .and_then(|st| st.conditions.last())
                        .map(|c| format!("{}: {}", c.reason, c.message))
                        .unwrap_or_default()
                )
            })
            .collect();
        tally.lock().unwrap().violation(format!(
            "the host did not settle: {e}; still moving: {}",
            unsettled.join("; ")
        ));
    }
    // Ready answers through the proxy come a moment after the status.
    final_checks(&host, &client, &web, &users, &tally).await;

    let t = tally.lock().unwrap();
    let mut report = String::new();
    writeln!(report, "# Chaos soak\n").unwrap();
    writeln!(
        report,
        "- chaos for {secs} s, {} s in all; {USERS} users, one node with {GPUS} GPUs",
        started.elapsed().as_secs()
    )
    .unwrap();
    writeln!(
        report,
        "- faults injected (SIGKILL, then restart): {:?}",
        t.faults
    )
    .unwrap();
    writeln!(report, "- exited on their own and restarted: {:?}", t.exits).unwrap();
    writeln!(report, "- operations (api answer status): {:?}", t.ops).unwrap();
    writeln!(
        report,
        "- Session changes checked for a GPU held twice: {}",
        t.watched
    )
    .unwrap();
    writeln!(
        report,
        "- proxy checks of Ready sessions: {}; 5xx or no answer while the chaos ran: {}",
        t.checks, t.proxy_5xx
    )
    .unwrap();
    writeln!(report, "- a refusal of each kind, as answered:").unwrap();
    for (k, body) in &t.samples {
        writeln!(report, "  - {k}: `{body}`").unwrap();
    }
    writeln!(report, "- violations: {}", t.violations.len()).unwrap();
    for v in &t.violations {
        writeln!(report, "  - {v}").unwrap();
    }
    println!("{report}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/soak");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("report.md"), &report).unwrap();
    let violations = t.violations.clone();
    drop(t);
    if !violations.is_empty() {
        for name in ["apiserver", "scheduler", "agent", "api"] {
            if let Some(p) = host.procs.get(name) {
                eprintln!("--- {name} log tail\n{}", p.log_tail());
            }
        }
    }
    for (_, mut p) in std::mem::take(&mut host.procs) {
        p.stop(Signal::SIGTERM);
    }
    assert!(violations.is_empty(), "the soak saw violations:\n{report}");
}
