//! The node agent SIGKILLed inside a Docker or ZFS call, and restarted.
//!
//! The agent runs as its own process (`medforge operator --no-scheduler`)
//! against a `medforge apiserver` process, the harness's dockerd and
//! zfs-fuse. Its Docker socket is a proxy in this test and its `zfs` a
//! wrapper script: each holds one chosen call (a request line, a `zfs`
//! verb) once it has arrived, and says so. The test waits for that, SIGKILLs
//! the agent process while the call is held, then lets the call go on to
//! dockerd or ZFS behind the dead agent's back, restarts the agent and
//! checks that it converges with exactly one of everything: one container,
//! one dataset, one snapshot per stop, the session in the phase asked for.
//!
//! A second test does the same inside the agent's calls to the control
//! plane: its kubeconfig names a proxy in this test over plain HTTP
//! (`support/kube_proxy.rs`), which holds one chosen request (the
//! finalizer's add or removal, a status write to a phase, the stop's
//! snapshot record) while the agent is SIGKILLed, then drops it unsent or
//! forwards it to the control plane behind the dead agent's back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use medforge_crds::conditions::set_condition;
use medforge_crds::keys::AGENT_FINALIZER as FINALIZER;
use medforge_crds::{
    Pack, PackSpec, Session, SessionCondition, SessionPhase, SessionReason, SessionStatus,
    WorkspaceSnapshot,
};
use medforge_testkit::{Harness, TestScope, session_spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

mod support;
use support::{Proc, host_port, kube_client, scope_label, workload_image_id};
#[path = "support/kube_proxy.rs"]
mod kube_proxy;
use kube_proxy::{KubeProxy, Release};

const NS: &str = "crash";
const NODE: &str = "crash-node";
const DEADLINE: Duration = Duration::from_secs(60);

/// Which Docker request to hold: its method and a path predicate.
type Matcher = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// A proxy on a Unix socket in front of dockerd that can hold one request.
#[derive(Default)]
struct HoldState {
    armed: Option<(String, Matcher)>,
    /// The request line held, once one is.
    held: Option<String>,
    released: bool,
}

#[derive(Clone, Default)]
struct DockerProxy {
    state: Arc<Mutex<HoldState>>,
    changed: Arc<Notify>,
}

impl DockerProxy {
    /// Serves `listen`, forwarding to `upstream`.
    fn start(listen: &Path, upstream: PathBuf) -> DockerProxy {
        let proxy = DockerProxy::default();
        let listener = UnixListener::bind(listen).unwrap();
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, upstream) = (p.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Ok(server) = UnixStream::connect(&upstream).await {
                        let _ = p.relay(client, server).await;
                    }
                });
            }
        });
        proxy
    }

    fn arm(&self, what: &str, matcher: Matcher) {
        let mut st = self.state.lock().unwrap();
        *st = HoldState {
            armed: Some((what.to_string(), matcher)),
            ..Default::default()
        };
    }

    async fn wait_held(&self) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            if let Some(line) = self.state.lock().unwrap().held.clone() {
                return line;
            }
            let what = self
                .state
                .lock()
                .unwrap()
                .armed
                .as_ref()
                .map(|a| a.0.clone());
            assert!(Instant::now() < until, "no Docker request held ({what:?})");
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    fn release(&self) {
        self.state.lock().unwrap().released = true;
        self.changed.notify_waiters();
    }

    /// Copies requests one by one (head, then a Content-Length body),
    /// holding the armed one; answers flow back untouched.
    async fn relay(&self, client: UnixStream, server: UnixStream) -> std::io::Result<()> {
        let (mut from_client, mut to_client) = client.into_split();
        let (mut from_server, mut to_server) = server.into_split();
        let back = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
        });
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16384];
        loop {
            let head_end = loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                let n = from_client.read(&mut chunk).await?;
                if n == 0 {
                    back.abort();
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + length {
                let n = from_client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let request: Vec<u8> = buf.drain(..head_end + length).collect();
            let line = head.lines().next().unwrap_or_default().to_string();
            let mut parts = line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let hold = {
                let mut st = self.state.lock().unwrap();
                let hit =
                    st.held.is_none() && st.armed.as_ref().is_some_and(|(_, m)| m(method, path));
                if hit {
                    st.held = Some(line.clone());
                }
                hit
            };
            if hold {
                self.changed.notify_waiters();
                loop {
                    let notified = self.changed.notified();
                    if self.state.lock().unwrap().released {
                        break;
                    }
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                }
            }
            to_server.write_all(&request).await?;
        }
    }
}

/// A `zfs` that holds the first call whose verb is the first line of
/// `<dir>/pattern` and whose arguments contain its second line, until
/// `<dir>/release` exists, after writing `held <args>` to `<dir>/held`.
fn zfs_wrapper(dir: &Path, real: &Path) -> PathBuf {
    let script = dir.join("zfs");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
d='{dir}'
if [ -f "$d/pattern" ] && [ "$1" = "$(sed -n 1p "$d/pattern")" ]; then
  case "$*" in
    *"$(sed -n 2p "$d/pattern")"*)
      if mv "$d/pattern" "$d/taken.$$" 2>/dev/null; then
        echo "held $*" > "$d/held.tmp.$$" && mv "$d/held.tmp.$$" "$d/held"
        while [ ! -f "$d/release" ]; do sleep 0.05; done
      fi
      ;;
  esac
fi
exec '{real}' "$@"
"#,
            dir = dir.display(),
            real = real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

struct Rig {
    harness: Harness,
    scope: TestScope,
    dir: PathBuf,
    client: kube::Client,
    docker: DockerProxy,
    zfs_dir: PathBuf,
    /// The agent's way to the control plane, when the test holds its calls.
    api: Option<KubeProxy>,
    agent_args: Vec<String>,
    agent: Option<Proc>,
    starts: usize,
    apiserver: Proc,
    _tmp: tempfile::TempDir,
}

impl Rig {
    fn sessions(&self) -> Api<Session> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Stops the agent and the control plane by PID, and removes what the
    /// test made (containers, datasets, the network).
    async fn finish(mut self) {
        if self.agent.is_some() {
            self.kill_agent();
        }
        self.apiserver.stop(nix::sys::signal::Signal::SIGTERM);
        self.scope.cleanup().await.expect("scope cleanup");
        let _ = self
            .harness
            .docker()
            .remove_network(&self.scope.name("net"))
            .await;
    }

    /// Waits until the agent's GpuNode is Ready and its dataset root exists.
    async fn wait_agent_ready(&self) {
        let nodes: Api<medforge_crds::GpuNode> = Api::all(self.client.clone());
        let root = format!("{}/ws", self.scope.dataset());
        let until = Instant::now() + DEADLINE;
        loop {
            let ready = nodes.get_opt(NODE).await.unwrap().is_some_and(|n| {
                n.status.as_ref().is_some_and(|st| {
                    medforge_crds::conditions::is_true(
                        &st.conditions,
                        medforge_crds::NodeCondition::Ready,
                    )
                })
            });
            if ready && self.scope.dataset_exists(&root).await.unwrap() {
                return;
            }
            assert!(
                Instant::now() < until,
                "the agent never became ready:\n{}",
                self.agent.as_ref().map(Proc::log_tail).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_agent(&mut self) {
        self.starts += 1;
        let log = self.dir.join(format!("agent-{}.log", self.starts));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_medforge"))
            .args(&self.agent_args)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("medforge operator starts");
        self.agent = Some(Proc {
            name: "agent",
            child,
            log,
        });
    }

    /// SIGKILLs the agent process and waits for it to be gone; how it ended.
    fn kill_agent(&mut self) -> std::process::ExitStatus {
        let mut agent = self.agent.take().expect("an agent runs");
        let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        agent.child.wait().unwrap()
    }

    fn arm_zfs(&self, verb: &str, containing: &str) {
        let _ = std::fs::remove_file(self.zfs_dir.join("held"));
        let _ = std::fs::remove_file(self.zfs_dir.join("release"));
        std::fs::write(
            self.zfs_dir.join("pattern"),
            format!("{verb}\n{containing}\n"),
        )
        .unwrap();
    }

    async fn wait_zfs_held(&self) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Ok(line) = std::fs::read_to_string(self.zfs_dir.join("held")) {
                return line.trim().to_string();
            }
            assert!(
                Instant::now() < until,
                "no zfs call held:\n{}",
                self.agent.as_ref().map(Proc::log_tail).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn release_zfs(&self) {
        std::fs::write(self.zfs_dir.join("release"), "").unwrap();
    }

    /// Creates a Session bound to this node as the scheduler would.
    async fn create_bound(&self, name: &str) -> Session {
        let created = self
            .sessions()
            .create(
                &PostParams::default(),
                &session_spec()
                    .owner("alice")
                    .gpus(0)
                    .pack("workload")
                    .session(name),
            )
            .await
            .unwrap();
        let mut bound = created.clone();
        let mut st = SessionStatus {
            phase: Some(SessionPhase::Scheduled),
            node_name: Some(NODE.into()),
            slug: Some(medforge_crds::slug::Slug::random().into_string()),
            ..Default::default()
        };
        set_condition(
            &mut st.conditions,
            SessionCondition::Scheduled,
            Some(true),
            SessionReason::Bound,
            "bound by the test",
            created.metadata.generation,
            Time(Timestamp::now()),
        );
        bound.status = Some(st);
        self.sessions()
            .replace_status(name, &PostParams::default(), &bound)
            .await
            .unwrap()
    }

    async fn wait_for(
        &self,
        name: &str,
        what: &str,
        pred: impl Fn(Option<&Session>) -> bool,
    ) -> Option<Session> {
        let until = Instant::now() + DEADLINE;
        loop {
            let s = self.sessions().get_opt(name).await.unwrap();
            if pred(s.as_ref()) {
                return s;
            }
            assert!(
                Instant::now() < until,
                "{name}: not {what}: {:?}\n{}",
                s.and_then(|s| s.status),
                self.agent.as_ref().map(Proc::log_tail).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_running(&self, name: &str) -> Session {
        self.wait_for(name, "Running and Ready", |s| {
            s.is_some_and(|s| {
                s.phase() == SessionPhase::Running
                    && s.condition(SessionCondition::Ready)
                        .is_some_and(|c| c.status == "True")
            })
        })
        .await
        .unwrap()
    }

    async fn wait_phase(&self, name: &str, phase: SessionPhase) -> Session {
        self.wait_for(name, &format!("{phase:?}"), |s| {
            s.is_some_and(|s| s.phase() == phase)
        })
        .await
        .unwrap()
    }

    /// Every container of the session (by its uid label), running or not.
    async fn containers_of(&self, s: &Session) -> Vec<String> {
        let uid = s.uid().unwrap();
        let filters = std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!(
                "{}={uid}",
                medforge_crds::keys::container::SESSION_UID
            )],
        )]);
        self.harness
            .docker()
            .list_containers(Some(
                medforge_testkit::bollard::query_parameters::ListContainersOptions {
                    all: true,
                    filters: Some(filters),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    fn dataset_of(&self, s: &Session) -> String {
        format!("{}/ws/alice/{}", self.scope.dataset(), s.uid().unwrap())
    }

    async fn snapshots_of(&self, dataset: &str) -> Vec<String> {
        self.harness
            .zfs(["list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset])
            .await
            .map(|out| {
                out.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The session's WorkspaceSnapshot records.
    async fn records_of(&self, s: &Session) -> Vec<WorkspaceSnapshot> {
        let records: Api<WorkspaceSnapshot> = Api::namespaced(self.client.clone(), NS);
        records
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|r| r.spec.session.uid == s.uid().unwrap())
            .collect()
    }

    /// Waits for `name` Running and Ready; checks it has one container and
    /// its dataset.
    async fn expect_started(&self, name: &str) -> Session {
        let s = self.wait_running(name).await;
        let containers = self.containers_of(&s).await;
        assert_eq!(containers.len(), 1, "{name}: one container: {containers:?}");
        assert!(
            self.scope
                .dataset_exists(&self.dataset_of(&s))
                .await
                .unwrap(),
            "{name}: the dataset"
        );
        s
    }

    /// Asks for `name` stopped.
    async fn request_stop(&self, name: &str) {
        self.sessions()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"state": "Stopped"}})),
            )
            .await
            .unwrap();
    }

    /// Waits for `name` Stopped at its owner's request; checks one stop
    /// snapshot on ZFS, one planned in the status and one record.
    async fn expect_stopped(&self, name: &str) -> Session {
        let s = self.wait_phase(name, SessionPhase::Stopped).await;
        let st = s.status.clone().unwrap();
        assert_eq!(st.reason.as_deref(), Some("StopRequested"), "{name}");
        let snapshots = self.snapshots_of(&self.dataset_of(&s)).await;
        assert_eq!(
            snapshots.len(),
            1,
            "{name}: one stop snapshot: {snapshots:?}"
        );
        assert_eq!(
            st.workspace.unwrap().snapshots.len(),
            1,
            "{name}: one planned snapshot"
        );
        let records = self.records_of(&s).await;
        assert_eq!(records.len(), 1, "{name}: one record");
        s
    }

    /// Kills the running session's container from outside the agent.
    async fn kill_container_of(&self, running: &Session) {
        let id = running
            .status
            .as_ref()
            .unwrap()
            .container_id
            .clone()
            .unwrap();
        self.harness
            .docker()
            .kill_container(
                &id,
                None::<medforge_testkit::bollard::query_parameters::KillContainerOptions>,
            )
            .await
            .unwrap();
    }

    /// Waits for `name` Failed because its container exited; checks one
    /// `death-` snapshot on ZFS.
    async fn expect_died(&self, name: &str) -> Session {
        let s = self.wait_phase(name, SessionPhase::Failed).await;
        let st = s.status.clone().unwrap();
        assert_eq!(st.reason.as_deref(), Some("ContainerExited"), "{st:?}");
        let snapshots = self.snapshots_of(&self.dataset_of(&s)).await;
        assert_eq!(snapshots.len(), 1, "{name}: one snapshot: {snapshots:?}");
        assert!(snapshots[0].contains("@death-"), "{snapshots:?}");
        s
    }

    /// Waits for `name` (which was `before`) gone; checks no container, the
    /// dataset retired and one `predelete-` snapshot.
    async fn expect_deleted(&self, name: &str, before: &Session) {
        self.wait_for(name, "gone", |s| s.is_none()).await;
        assert!(
            self.containers_of(before).await.is_empty(),
            "{name}: no container"
        );
        let dataset = self.dataset_of(before);
        let retired = self
            .harness
            .zfs([
                "get",
                "-H",
                "-o",
                "value",
                medforge_crds::keys::dataset::RETIRED,
                &dataset,
            ])
            .await
            .unwrap();
        assert_ne!(retired.trim(), "-", "{name}: the dataset is retired");
        let predelete: Vec<String> = self
            .snapshots_of(&dataset)
            .await
            .into_iter()
            .filter(|s| s.contains("@predelete-"))
            .collect();
        assert_eq!(
            predelete.len(),
            1,
            "{name}: one BeforeDelete snapshot: {predelete:?}"
        );
    }
}

/// The rig; with `api_proxy`, the agent reaches the control plane through a
/// [`KubeProxy`] (the test's own client goes direct).
async fn rig(api_proxy: bool) -> Rig {
    let harness = Harness::get().await.expect("harness");
    let scope = harness.scope().await.expect("scope");
    let tmp = tempfile::Builder::new()
        .prefix("agent-crash")
        .tempdir()
        .unwrap();
    let dir = tmp.path().to_path_buf();
    let data = dir.join("apiserver");
    let listen = format!("127.0.0.1:{}", host_port());
    let server = std::process::Command::new(env!("CARGO_BIN_EXE_medforge"))
        .args([
            "apiserver",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            &listen,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("apiserver.log")).unwrap())
        .spawn()
        .unwrap();
    let apiserver = Proc {
        name: "apiserver",
        child: server,
        log: dir.join("apiserver.log"),
    };
    let client = kube_client(&data).await;
    medforge_operator::leader::ensure_namespace(&client, NS)
        .await
        .unwrap();
    let image = workload_image_id(&harness).await;
    Api::<Pack>::all(client.clone())
        .create(
            &PostParams::default(),
            &Pack::new("workload", PackSpec::of_image(image, 8080)),
        )
        .await
        .unwrap();
    let docker_socket = dir.join("docker.sock");
    let docker = DockerProxy::start(&docker_socket, harness.layout().docker_socket.clone());
    let zfs_dir = dir.join("zfs");
    std::fs::create_dir_all(&zfs_dir).unwrap();
    let zfs = zfs_wrapper(&zfs_dir, harness.zfs_binary());
    let (api, kubeconfig) = if api_proxy {
        let proxy = KubeProxy::start(kube_client(&data).await).await;
        let path = dir.join("agent-kubeconfig");
        std::fs::write(&path, proxy.kubeconfig()).unwrap();
        (Some(proxy), path)
    } else {
        (None, data.join("kubeconfig"))
    };
    let agent_args: Vec<String> = [
        "operator",
        "--no-scheduler",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--node-name",
        NODE,
        "--gpus",
        "static:2",
        "--docker-socket",
        docker_socket.to_str().unwrap(),
        "--zfs-binary",
        zfs.to_str().unwrap(),
        "--zfs-root",
        &format!("{}/ws", scope.dataset()),
        "--netns",
        harness.layout().netns_path.to_str().unwrap(),
        "--network",
        &scope.name("net"),
        "--container-label",
        &scope_label(&scope),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Rig {
        harness,
        scope,
        dir,
        client,
        docker,
        zfs_dir,
        api,
        agent_args,
        agent: None,
        starts: 0,
        apiserver,
        _tmp: tmp,
    }
}

/// Where the kill lands: a Docker request or a `zfs` verb.
enum Target {
    Docker(&'static str, fn(&str, &str) -> bool),
    /// A verb, and what its arguments contain.
    Zfs(&'static str, &'static str),
}

impl Target {
    fn arm(&self, rig: &Rig) {
        match self {
            Target::Docker(what, m) => {
                let m = *m;
                rig.docker.arm(what, Box::new(m));
            }
            Target::Zfs(verb, containing) => rig.arm_zfs(verb, containing),
        }
    }

    async fn wait_held(&self, rig: &Rig) -> String {
        match self {
            Target::Docker(..) => rig.docker.wait_held().await,
            Target::Zfs(..) => rig.wait_zfs_held().await,
        }
    }

    fn release(&self, rig: &Rig) {
        match self {
            Target::Docker(..) => rig.docker.release(),
            Target::Zfs(..) => rig.release_zfs(),
        }
    }
}

/// Once `target` (armed before the change that sets it off) is held:
/// SIGKILLs the agent inside the call, lets the call finish, and restarts
/// the agent. Returns what was held.
async fn kill_inside(rig: &mut Rig, target: &Target) -> String {
    let held = target.wait_held(rig).await;
    rig.kill_agent();
    target.release(rig);
    rig.start_agent();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_inside_docker_and_zfs_calls_converges_after_restart() {
    let mut rig = rig(false).await;
    rig.start_agent();
    rig.wait_agent_ready().await;
    let mut report = Vec::new();

    // Start: killed inside each call that makes something.
    let start_calls = [
        ("create-dataset", Target::Zfs("create", "/alice/")),
        (
            "create-container",
            Target::Docker("POST /containers/create", |m, p| {
                m == "POST" && p.contains("/containers/create")
            }),
        ),
        (
            "start-container",
            Target::Docker("POST /containers/{id}/start", |m, p| {
                m == "POST" && p.contains("/start")
            }),
        ),
    ];
    for (name, target) in start_calls {
        target.arm(&rig);
        rig.create_bound(name).await;
        let held = kill_inside(&mut rig, &target).await;
        rig.expect_started(name).await;
        report.push(format!(
            "{name}: killed inside `{held}`, then Running with one container"
        ));
    }

    // Stop: killed inside the container's stop, then inside the snapshot.
    let stop_calls = [
        (
            "create-dataset",
            Target::Docker("POST /containers/{id}/stop", |m, p| {
                m == "POST" && p.contains("/stop")
            }),
        ),
        ("create-container", Target::Zfs("snapshot", "@stop-")),
    ];
    for (name, target) in stop_calls {
        target.arm(&rig);
        rig.request_stop(name).await;
        let held = kill_inside(&mut rig, &target).await;
        rig.expect_stopped(name).await;
        report.push(format!(
            "{name} stop: killed inside `{held}`, then Stopped with one snapshot and one record"
        ));
    }

    // Death: the container killed from outside; the agent killed inside
    // the `death-` snapshot it takes before failing the session.
    rig.create_bound("death").await;
    let running = rig.wait_running("death").await;
    let target = Target::Zfs("snapshot", "@death-");
    target.arm(&rig);
    rig.kill_container_of(&running).await;
    let held = kill_inside(&mut rig, &target).await;
    rig.expect_died("death").await;
    report.push(format!(
        "death: killed inside `{held}`, then Failed (ContainerExited) with one death snapshot"
    ));

    // Delete (the finalizer): killed inside the container's removal, then
    // inside the dataset's retirement.
    let delete_calls = [
        (
            "start-container",
            Target::Docker("DELETE /containers/{id}", |m, p| {
                m == "DELETE" && p.contains("/containers/")
            }),
        ),
        ("create-dataset", Target::Zfs("set", "medforge:retired=")),
    ];
    for (name, target) in delete_calls {
        let before = rig.sessions().get(name).await.unwrap();
        target.arm(&rig);
        rig.sessions()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        let held = kill_inside(&mut rig, &target).await;
        rig.expect_deleted(name, &before).await;
        report.push(format!(
            "{name} delete: killed inside `{held}`, then gone, the dataset retired once"
        ));
    }

    eprintln!("{}", report.join("\n"));
    rig.finish().await;
}

/// Which of the agent's calls to the control plane the kill lands in.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// The finalizer added to a Session the agent sees bound to its node
    /// for the first time (a JSON patch adding to `metadata.finalizers`).
    FinalizerAdd,
    /// The status write that moves the Session to this phase (a replace of
    /// `…/sessions/<name>/status` whose body has this `status.phase`).
    Status(SessionPhase),
    /// The creation of the stop's WorkspaceSnapshot record (a POST of one
    /// naming the session and a `@stop-` snapshot).
    RecordCreate,
    /// The finalizer removed once the cleanup is done (a JSON patch
    /// removing from `metadata.finalizers`).
    FinalizerRemove,
}

impl Call {
    /// Matches the call for the Session `name`, and nothing else.
    fn matcher(self, name: &str) -> kube_proxy::Matcher {
        let session = format!("/namespaces/{NS}/sessions/{name}");
        let patches_finalizer = move |body: &serde_json::Value, op: &str| {
            body.as_array().is_some_and(|ops| {
                ops.iter().any(|o| {
                    o["op"] == op
                        && o["path"]
                            .as_str()
                            .is_some_and(|p| p.starts_with("/metadata/finalizers"))
                })
            })
        };
        match self {
            Call::FinalizerAdd => Box::new(move |r| {
                r.method == "PATCH"
                    && r.path.ends_with(&session)
                    && patches_finalizer(&r.body, "add")
                    && r.body.to_string().contains(FINALIZER)
            }),
            Call::FinalizerRemove => Box::new(move |r| {
                r.method == "PATCH"
                    && r.path.ends_with(&session)
                    && patches_finalizer(&r.body, "remove")
            }),
            Call::Status(phase) => {
                let phase = serde_json::to_value(phase).unwrap();
                let status = format!("{session}/status");
                Box::new(move |r| {
                    matches!(r.method.as_str(), "PUT" | "PATCH")
                        && r.path.ends_with(&status)
                        && r.body["status"]["phase"] == phase
                })
            }
            Call::RecordCreate => {
                let (records, name) = (
                    format!("/namespaces/{NS}/workspacesnapshots"),
                    name.to_string(),
                );
                Box::new(move |r| {
                    r.method == "POST"
                        && r.path.ends_with(&records)
                        && r.body["spec"]["session"]["name"] == name.as_str()
                        && r.body["spec"]["snapshot"]
                            .as_str()
                            .is_some_and(|s| s.contains("@stop-"))
                })
            }
        }
    }

    /// Whether what the call writes is in the control plane for `name`.
    async fn landed(self, rig: &Rig, name: &str) -> bool {
        let s = rig.sessions().get_opt(name).await.unwrap();
        match self {
            Call::FinalizerAdd => s.is_some_and(|s| s.finalizers().iter().any(|f| f == FINALIZER)),
            Call::FinalizerRemove => s.is_none(),
            Call::Status(phase) => s.is_some_and(|s| s.phase() == phase),
            Call::RecordCreate => {
                let s = s.expect("the session exists");
                rig.records_of(&s)
                    .await
                    .iter()
                    .any(|r| r.spec.snapshot.contains("@stop-"))
            }
        }
    }
}

/// Once the agent's `call` for `name` (armed before the change that sets it
/// off) is held at the control-plane proxy: checks its write is not in the
/// control plane yet, SIGKILLs the agent, waits for the process to be gone
/// and the proxy to see its connection close under the held request, then
/// drops or forwards the request and checks the write is there exactly when
/// it was forwarded (and answered 2xx), and restarts the agent. Returns what
/// was held, for the report.
async fn kill_in_api_call(rig: &mut Rig, call: Call, name: &str, how: Release) -> String {
    let proxy = rig.api.clone().expect("the agent goes through the proxy");
    let held = proxy.wait_held().await;
    assert!(
        !call.landed(rig, name).await,
        "{name}: {call:?} is held, yet its write is in the control plane"
    );
    let pid = rig.agent.as_ref().unwrap().child.id();
    let exit = rig.kill_agent();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(nix::sys::signal::Signal::SIGKILL as i32),
        "{name}: the agent ended by SIGKILL"
    );
    proxy.wait_hung_up().await;
    proxy.release(how);
    let outcome = match how {
        Release::Drop => "dropped unsent".to_string(),
        Release::Forward => {
            let status = proxy.wait_forwarded().await;
            assert!(
                (200..300).contains(&status),
                "{name}: the forwarded {call:?} answered {status}"
            );
            format!("forwarded, answered {status}")
        }
    };
    assert_eq!(
        call.landed(rig, name).await,
        how == Release::Forward,
        "{name}: {call:?} {how:?}: its write is in the control plane exactly when forwarded"
    );
    rig.start_agent();
    format!(
        "{held}` (agent pid {pid} SIGKILLed while it was held, its connection closed under it, \
         then {outcome})"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_inside_control_plane_calls_converges_after_restart() {
    let mut rig = rig(true).await;
    rig.start_agent();
    rig.wait_agent_ready().await;
    let proxy = rig.api.clone().unwrap();
    let mut report = Vec::new();
    for how in [Release::Drop, Release::Forward] {
        let v = format!("{how:?}").to_lowercase();
        let name = |n: &str| format!("{n}-{v}");

        // Start: three new sessions, one per call.
        let start_calls = [
            ("a", Call::FinalizerAdd),
            ("b", Call::Status(SessionPhase::Starting)),
            ("c", Call::Status(SessionPhase::Running)),
        ];
        for (n, call) in start_calls {
            let name = name(n);
            proxy.arm(&format!("{call:?} of {name}"), call.matcher(&name));
            rig.create_bound(&name).await;
            let held = kill_in_api_call(&mut rig, call, &name, how).await;
            let s = rig.expect_started(&name).await;
            let finalizers = s.finalizers().iter().filter(|f| *f == FINALIZER).count();
            assert_eq!(
                finalizers,
                1,
                "{name}: the finalizer once: {:?}",
                s.finalizers()
            );
            report.push(format!(
                "{name} start, {call:?}: killed inside `{held}; Running with one container and the finalizer once"
            ));
        }

        // Stop: the same three sessions, one call each.
        let stop_calls = [
            ("a", Call::Status(SessionPhase::Stopping)),
            ("b", Call::RecordCreate),
            ("c", Call::Status(SessionPhase::Stopped)),
        ];
        for (n, call) in stop_calls {
            let name = name(n);
            proxy.arm(&format!("{call:?} of {name}"), call.matcher(&name));
            rig.request_stop(&name).await;
            let held = kill_in_api_call(&mut rig, call, &name, how).await;
            let s = rig.expect_stopped(&name).await;
            let records = rig.records_of(&s).await;
            assert!(
                records[0]
                    .status
                    .as_ref()
                    .is_some_and(|st| st.taken_at.is_some()),
                "{name}: the record has its status: {:?}",
                records[0].status
            );
            report.push(format!(
                "{name} stop, {call:?}: killed inside `{held}; Stopped with one snapshot and one record"
            ));
        }

        // Death: the container killed from outside; the kill lands in the
        // write of Failed, after the `death-` snapshot.
        let name_d = name("death");
        rig.create_bound(&name_d).await;
        let running = rig.expect_started(&name_d).await;
        let call = Call::Status(SessionPhase::Failed);
        proxy.arm(&format!("{call:?} of {name_d}"), call.matcher(&name_d));
        rig.kill_container_of(&running).await;
        let held = kill_in_api_call(&mut rig, call, &name_d, how).await;
        let s = rig.expect_died(&name_d).await;
        assert_eq!(rig.records_of(&s).await.len(), 1, "{name_d}: one record");
        report.push(format!(
            "{name_d}, {call:?}: killed inside `{held}; Failed (ContainerExited) with one death snapshot and one record"
        ));

        // Delete: the finalizer's removal after the cleanup.
        let name_a = name("a");
        let before = rig.sessions().get(&name_a).await.unwrap();
        let call = Call::FinalizerRemove;
        proxy.arm(&format!("{call:?} of {name_a}"), call.matcher(&name_a));
        rig.sessions()
            .delete(&name_a, &DeleteParams::default())
            .await
            .unwrap();
        let held = kill_in_api_call(&mut rig, call, &name_a, how).await;
        rig.expect_deleted(&name_a, &before).await;
        report.push(format!(
            "{name_a} delete, {call:?}: killed inside `{held}; gone, no container, the dataset retired once"
        ));
    }
    eprintln!("{}", report.join("\n"));
    rig.finish().await;
}
