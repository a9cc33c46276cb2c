//! The node agent against the embedded control plane, the harness's real
//! dockerd and zfs-fuse, and the test workload image.
//!
//! Every agent here runs with a resync of an hour: whatever a test waits for
//! is driven by the Session watch or by Docker events.

mod agent_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use medforge_crds::{
    EnvVar, GpuNode, Session, SessionPhase, SnapshotReason, WorkspaceSnapshot, WorkspaceSpec,
};
use medforge_operator::agent::StepHook;
use medforge_operator::agent::plan::StepKind;
use medforge_operator::scheduler::controller::{SchedulerConfig, run as run_scheduler};
use medforge_testkit::bollard::models::{ContainerCreateBody, HostConfig};
use medforge_testkit::bollard::query_parameters::KillContainerOptions;

use agent_support::{Env, is_running_and_ready};
use medforge_operator::agent::docker::ENABLE_ICC;
use medforge_operator::agent::testing::{assert_hardened, http_get};

const DEADLINE: Duration = Duration::from_secs(20);
/// Deadline for stops and deaths. The agent's resync is an hour in these
/// tests (`agent_support::Env`), so only the watch and Docker events can
/// meet it; the deadline itself is generous for a loaded machine, not a
/// latency claim (the agent benchmark reports those, `docs/benchmarks.md`).
const EVENT_DRIVEN: Duration = Duration::from_secs(60);

/// `NVIDIA_VISIBLE_DEVICES` as the workload at `upstream` sees it.
async fn visible_gpus(env: &Env, upstream: std::net::SocketAddr) -> String {
    let vars: HashMap<String, String> = env
        .harness
        .http_get(upstream, "/env")
        .await
        .unwrap()
        .json()
        .unwrap();
    vars["NVIDIA_VISIBLE_DEVICES"].clone()
}

/// The UUIDs of bound GPUs, as NVIDIA_VISIBLE_DEVICES lists them.
fn gpu_list(gpus: &[medforge_crds::AssignedGpu]) -> String {
    gpus.iter()
        .map(|g| g.uuid.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_session_runs_serves_its_workspace_and_stops_through_the_watch() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    // The real scheduler binds what the agent's GpuNode offers.
    let mut sched = SchedulerConfig::new("test-scheduler");
    sched.resync = Duration::from_millis(200);
    let scheduler = {
        let client = env.client.clone();
        tokio::spawn(async move {
            let _ = run_scheduler(client, sched, std::future::pending()).await;
        })
    };

    let mut spec = Env::spec("workload", 2);
    spec.workspace = Some(WorkspaceSpec {
        quota: Some("64Mi".into()),
        restore_from: None,
    });
    let created = env
        .sessions()
        .create(&Default::default(), &Session::new("web", spec))
        .await
        .unwrap();
    let s = env
        .wait_for("web", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;
    let st = s.status.clone().unwrap();
    assert_eq!(st.node_name.as_deref(), Some(env.node.as_str()));
    assert_eq!(st.gpus.len(), 2);
    assert!(st.started_at.is_some());
    assert_eq!(
        s.finalizers(),
        ["medforge.dev/node-agent".to_string()],
        "the finalizer guards the container and dataset"
    );
    for c in [
        medforge_crds::SessionCondition::WorkspaceReady,
        medforge_crds::SessionCondition::ContainerReady,
        medforge_crds::SessionCondition::Ready,
    ] {
        assert_eq!(s.condition(c).unwrap().status, "True", "{c}");
    }

    // Ready means the workload answers at the upstream, at once.
    let upstream = Env::upstream(&s);
    assert_eq!(upstream.port(), 8080);
    let root = env.harness.http_get(upstream, "/").await.unwrap();
    assert_eq!(root.text(), "web");
    assert_eq!(visible_gpus(&env, upstream).await, gpu_list(&st.gpus));

    // The workspace round trip through the container, onto the dataset.
    let put = env
        .harness
        .http_put(upstream, "/workspace/notes.txt", "hello from the session")
        .await
        .unwrap();
    assert!(put.is_success(), "{put:?}");
    let back = env
        .harness
        .http_get(upstream, "/workspace/notes.txt")
        .await
        .unwrap();
    assert_eq!(back.text(), "hello from the session");
    let dataset = env.dataset_of(&s);
    assert_eq!(
        st.workspace.as_ref().unwrap().dataset.as_deref(),
        Some(dataset.as_str())
    );
    let mountpoint = env
        .harness
        .zfs(["get", "-H", "-o", "value", "mountpoint", dataset.as_str()])
        .await
        .unwrap();
    let on_host = std::path::Path::new(mountpoint.trim()).join("notes.txt");
    assert_eq!(
        std::fs::read_to_string(&on_host).unwrap(),
        "hello from the session"
    );
    let quota = env
        .harness
        .zfs(["get", "-Hp", "-o", "value", "quota", dataset.as_str()])
        .await
        .unwrap();
    assert_eq!(quota.trim(), (64u64 << 20).to_string());

    // One container, hardened and labelled.
    let info = env.only_container_of(&s).await;
    assert_eq!(
        info.name.as_deref().unwrap().trim_start_matches('/'),
        format!(
            "{}mf-session-{}",
            env.scope.name(""),
            st.slug.as_deref().unwrap()
        )
    );
    let config = info.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    let labels = config.labels.unwrap();
    assert_eq!(labels["medforge.dev/session-uid"], created.uid().unwrap());
    assert_eq!(labels["medforge.dev/session-namespace"], env.ns);
    assert_eq!(labels["medforge.dev/session-name"], "web");
    assert_eq!(labels["medforge.dev/node"], env.node);
    let host = info.host_config.unwrap();
    assert_hardened(&host);
    // The sessions' network: no traffic between its containers by Docker's
    // own switch, no IPv6.
    let network = env
        .harness
        .docker()
        .inspect_network(
            &env.runtime.network,
            None::<medforge_testkit::bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let options = network.options.unwrap_or_default();
    assert_eq!(
        options.get(ENABLE_ICC).map(String::as_str),
        Some("false"),
        "{options:?}"
    );
    assert_ne!(network.enable_ipv6, Some(true));
    assert!(host.device_requests.unwrap_or_default().is_empty());

    // Metrics and health on the agent's own port.
    let metrics_addr = agent.state.borrow().metrics_addr.expect("metrics served");
    let text = http_get(metrics_addr, "/metrics").await;
    assert!(text.contains("medforge_agent_reconciles_total"), "{text}");
    assert!(
        text.contains("medforge_agent_sessions{phase=\"Running\"} 1"),
        "{text}"
    );
    assert!(text.contains("medforge_agent_reconcile_duration_seconds_bucket"));
    assert!(http_get(metrics_addr, "/healthz").await.contains("ok"));
    assert!(http_get(metrics_addr, "/readyz").await.contains("ready"));

    // Stop: seen through the watch (the resync is an hour).
    let asked = Instant::now();
    env.set_state("web", "Stopped").await;
    let s = env
        .wait_phase("web", SessionPhase::Stopped, EVENT_DRIVEN)
        .await;
    println!("stop → Stopped in {:?}", asked.elapsed());
    let st = s.status.clone().unwrap();
    assert!(st.gpus.is_empty(), "GPUs released");
    assert!(st.upstream.is_none());
    assert_eq!(st.reason.as_deref(), Some("StopRequested"));
    assert_eq!(
        s.condition(medforge_crds::SessionCondition::Ready)
            .unwrap()
            .status,
        "False"
    );
    let snap = st.workspace.unwrap().snapshots.pop().unwrap();
    assert!(snap.starts_with("stop-"), "{snap}");
    assert!(
        env.snapshots(&dataset)
            .await
            .contains(&format!("{dataset}@{snap}")),
        "zfs list -t snapshot shows {snap}"
    );
    let (running, ..) = env.container_facts(info.id.as_deref().unwrap()).await;
    assert!(!running, "the container is stopped");

    // Resume: the same workspace and slug, a new container, GPUs bound again.
    let asked = Instant::now();
    env.set_state("web", "Running").await;
    let s = env
        .wait_for("web", "Running and Ready again", DEADLINE, |s| {
            is_running_and_ready(s) && s.status.as_ref().unwrap().container_id != info.id
        })
        .await;
    println!("resume → Ready in {:?}", asked.elapsed());
    let again = s.status.clone().unwrap();
    assert_eq!(again.slug, st.slug, "the slug (and so the URL) stays");
    assert_eq!(again.node_name.as_deref(), Some(env.node.as_str()));
    assert_eq!(again.gpus.len(), 2, "GPUs bound again");
    assert_eq!(
        again.workspace.as_ref().unwrap().dataset.as_deref(),
        Some(dataset.as_str())
    );
    let new = env.only_container_of(&s).await;
    assert_ne!(new.id, info.id, "a new container, the old one removed");
    let upstream = Env::upstream(&s);
    let back = env
        .harness
        .http_get(upstream, "/workspace/notes.txt")
        .await
        .unwrap();
    assert_eq!(back.text(), "hello from the session", "the file is there");
    assert_eq!(visible_gpus(&env, upstream).await, gpu_list(&again.gpus));
    // Stopped again: a second snapshot, the first kept.
    env.set_state("web", "Stopped").await;
    let s = env
        .wait_phase("web", SessionPhase::Stopped, EVENT_DRIVEN)
        .await;
    let snaps = s.status.clone().unwrap().workspace.unwrap().snapshots;
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0], snap);
    let on_zfs = env.snapshots(&dataset).await;
    for name in &snaps {
        assert!(on_zfs.contains(&format!("{dataset}@{name}")), "{on_zfs:?}");
    }
    // Each snapshot has its WorkspaceSnapshot, written before the stop ended.
    let records: Api<WorkspaceSnapshot> = Api::namespaced(env.client.clone(), &env.ns);
    let mut listed = records.list(&ListParams::default()).await.unwrap().items;
    listed.sort_by_key(|r| r.spec.snapshot.clone());
    let recorded: Vec<String> = listed.iter().map(|r| r.spec.snapshot.clone()).collect();
    let expected: Vec<String> = snaps.iter().map(|n| format!("{dataset}@{n}")).collect();
    assert_eq!(recorded, expected);
    for r in &listed {
        assert_eq!(r.spec.reason, SnapshotReason::Stop);
        assert_eq!(r.spec.owner, s.spec.owner);
        assert_eq!(r.spec.session.name, "web");
        assert_eq!(Some(r.spec.session.uid.clone()), s.uid());
        assert_eq!(r.spec.node, env.node);
        let st = r.status.clone().expect("a status");
        assert!(st.taken_at.is_some());
        assert!(
            st.conditions
                .iter()
                .any(|c| c.type_ == "ReadyToUse" && c.status == "True"),
            "{st:?}"
        );
    }

    // Delete: container gone, finalizer removed, dataset kept (default policy).
    env.delete_and_wait_gone("web", EVENT_DRIVEN).await;
    assert!(env.containers_of(&s).await.is_empty());
    assert!(env.dataset_exists(&dataset).await, "kept by default");

    scheduler.abort();
    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_fails_the_session_through_docker_events() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    env.create_bound("victim", Env::spec("workload", 1)).await;
    let s = env
        .wait_for("victim", "Running", DEADLINE, is_running_and_ready)
        .await;
    let id = env.containers_of(&s).await[0].id.clone().unwrap();

    let killed = Instant::now();
    env.harness
        .docker()
        .kill_container(&id, None::<KillContainerOptions>)
        .await
        .unwrap();
    let s = env
        .wait_phase("victim", SessionPhase::Failed, EVENT_DRIVEN)
        .await;
    println!("kill → Failed in {:?}", killed.elapsed());
    let st = s.status.clone().unwrap();
    assert_eq!(st.reason.as_deref(), Some("ContainerExited"));
    assert!(
        st.message.as_deref().unwrap().contains("code 137"),
        "{st:?}"
    );
    assert!(st.gpus.is_empty());
    let snap = st.workspace.unwrap().snapshots.pop().unwrap();
    assert!(snap.starts_with("death-"), "{snap}");
    let dataset = env.dataset_of(&s);
    assert!(
        env.snapshots(&dataset)
            .await
            .contains(&format!("{dataset}@{snap}"))
    );
    let record: WorkspaceSnapshot = Api::namespaced(env.client.clone(), &env.ns)
        .get(&format!("victim-{snap}"))
        .await
        .unwrap();
    assert_eq!(record.spec.reason, SnapshotReason::Death);
    assert_eq!(record.spec.snapshot, format!("{dataset}@{snap}"));
    // Failed stays Failed (the container dead) until its owner asks again.
    let (running, _, restarts) = env.container_facts(&id).await;
    assert!(!running && restarts == 0);
    assert_eq!(env.get("victim").await.phase(), SessionPhase::Failed);
    // Asked again (`resumeRequestedAt`, its state was Running all along):
    // a new container on the same dataset.
    env.resume_bound("victim").await;
    let s = env
        .wait_for("victim", "Running again", DEADLINE, |s| {
            is_running_and_ready(s)
                && s.status.as_ref().unwrap().container_id.as_deref() != Some(&id)
        })
        .await;
    assert_eq!(env.dataset_of(&s), dataset);
    assert_ne!(
        env.only_container_of(&s).await.id.as_deref(),
        Some(id.as_str())
    );

    // A container removed from outside: ContainerMissing.
    env.create_bound("vanished", Env::spec("workload", 0)).await;
    let s = env
        .wait_for("vanished", "Running", DEADLINE, is_running_and_ready)
        .await;
    let id = env.containers_of(&s).await[0].id.clone().unwrap();
    env.remove_container(&id).await;
    let s = env
        .wait_phase("vanished", SessionPhase::Failed, EVENT_DRIVEN)
        .await;
    let st = s.status.clone().unwrap();
    assert!(
        matches!(
            st.reason.as_deref(),
            Some("ContainerMissing" | "ContainerExited")
        ),
        "{st:?}"
    );
    assert!(st.workspace.unwrap().snapshots[0].starts_with("death-"));
    // Its workspace destroyed behind the agent's back, a resume fails with
    // WorkspaceMissing: no empty workspace in its place, no container.
    let ds = env.dataset_of(&s);
    env.harness.destroy_dataset(&ds).await.unwrap();
    env.resume_bound("vanished").await;
    let s = env
        .wait_for("vanished", "failed again", DEADLINE, |s| {
            s.status.as_ref().and_then(|st| st.reason.as_deref()) == Some("WorkspaceMissing")
        })
        .await;
    assert_eq!(s.phase(), SessionPhase::Failed);
    assert!(
        s.status
            .as_ref()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains(&ds),
        "{:?}",
        s.status
    );
    assert!(!env.dataset_exists(&ds).await, "no empty workspace made");
    assert!(s.status.unwrap().gpus.is_empty());

    // Deleting sessions whose container (or dataset) is already gone works.
    env.delete_and_wait_gone("vanished", EVENT_DRIVEN).await;
    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_that_asks_for_nothing_runs_within_its_packs_defaults_and_a_quota() {
    let env = Env::new().await;
    let mut config = env.config();
    // The operator's default quota, small enough to fill in a test.
    config.policy.defaults.workspace_quota = 16 << 20;
    let agent = env.spawn_agent(config);
    let packs: Api<medforge_crds::Pack> = Api::all(env.client.clone());
    let pack: medforge_crds::Pack = serde_json::from_value(serde_json::json!({
        "apiVersion": "medforge.dev/v1alpha1",
        "kind": "Pack",
        "metadata": {"name": "limited"},
        "spec": {
            "image": env.image,
            "resources": {"cpu": "500m", "memory": "256Mi", "shm": "32Mi", "pids": 128},
        },
    }))
    .unwrap();
    packs.create(&Default::default(), &pack).await.unwrap();

    // Two users' sessions; neither asks for any limit.
    env.create_bound("alice-s", Env::spec("limited", 0)).await;
    let mut bobs = Env::spec("limited", 0);
    bobs.owner = "bob".into();
    env.create_bound("bob-s", bobs).await;
    let alice = env
        .wait_for(
            "alice-s",
            "Running and Ready",
            DEADLINE,
            is_running_and_ready,
        )
        .await;
    let bob = env
        .wait_for("bob-s", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;

    // Docker runs the container with the Pack's defaults.
    let host = env.only_container_of(&alice).await.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(256 << 20));
    assert_eq!(host.pids_limit, Some(128));
    assert_eq!(host.shm_size, Some(32 << 20));
    // The status says what it runs with, the operator's defaults included.
    let limits = alice.status.clone().unwrap().limits.unwrap();
    assert_eq!(
        (limits.cpu.as_str(), limits.memory.as_str(), limits.pids),
        ("500m", "256Mi", 128)
    );
    assert_eq!(limits.workspace_quota, "16Mi");
    assert_eq!(limits.idle_timeout, "12h");

    // ZFS holds the workspace to the operator's default quota.
    let dataset = env.dataset_of(&alice);
    let quota = env
        .harness
        .zfs(["get", "-Hp", "-o", "value", "quota", dataset.as_str()])
        .await
        .unwrap();
    assert_eq!(quota.trim(), (16u64 << 20).to_string());

    // Writing past it fails inside the container; the other user's
    // workspace takes writes as before.
    let over = env
        .harness
        .http(
            medforge_testkit::Method::PUT,
            Env::upstream(&alice),
            "/workspace/big.bin",
            vec![b'x'; 24 << 20],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(over.status, 507, "{}", over.text());
    assert!(
        over.text().contains("Disk quota exceeded"),
        "{}",
        over.text()
    );
    let fine = env
        .harness
        .http_put(
            Env::upstream(&bob),
            "/workspace/small.bin",
            vec![b'y'; 1 << 20],
        )
        .await
        .unwrap();
    assert!(fine.is_success(), "{fine:?}");

    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_isolation_rules_a_node_starts_no_session_container() {
    let env = Env::new().await;
    // iptables cannot be run by the agent: every command it tries fails.
    let bin = tempfile::tempdir().unwrap();
    let broken = medforge_testkit::fake_program(
        bin.path(),
        "no-iptables",
        "echo 'iptables: Permission denied (you must be root)' >&2; exit 4",
    );
    let mut config = env.config();
    config.isolation = Some(medforge_operator::isolation::CommandPrefix::new([broken]));
    config.isolation_period = Duration::from_millis(200);
    let agent = env.spawn_agent(config);

    env.create_bound("walled", Env::spec("workload", 0)).await;
    let s = env
        .wait_for("walled", "waiting for isolation", DEADLINE, |s| {
            s.condition(medforge_crds::SessionCondition::ContainerReady)
                .is_some_and(|c| c.reason == "IsolationUnavailable")
        })
        .await;
    let c = s
        .condition(medforge_crds::SessionCondition::ContainerReady)
        .unwrap();
    assert!(c.message.contains("Permission denied"), "{}", c.message);
    assert_eq!(s.phase(), SessionPhase::Starting);
    // The container was made but never ran, and still does not.
    let containers = env.containers_of(&s).await;
    assert_eq!(containers.len(), 1);
    let id = containers[0].id.clone().unwrap();
    let (running, started_at, _) = env.container_facts(&id).await;
    assert!(!running);
    assert!(
        started_at.is_empty() || started_at.starts_with("0001-"),
        "{started_at}"
    );
    // The node says so too, while it stays Ready.
    let nodes: Api<GpuNode> = Api::all(env.client.clone());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let node = nodes.get(&env.node).await.unwrap();
        let conditions = node.status.unwrap_or_default().conditions;
        if let Some(c) = conditions.iter().find(|c| c.type_ == "Isolated")
            && c.message.contains("Permission denied")
        {
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "IsolationUnavailable")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no Isolated=False: {conditions:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A later pass changes nothing: still not started.
    let s = env.get("walled").await;
    assert_eq!(s.phase(), SessionPhase::Starting);
    assert!(!env.container_facts(&id).await.0);

    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_with_a_message_naming_the_cause_and_leaves_nothing() {
    let env = Env::new().await;
    let mut config = env.config();
    config.start_timeout = Duration::from_secs(3);
    let agent = env.spawn_agent(config);
    env.put_pack("ghost", &format!("sha256:{}", "0".repeat(64)), Vec::new())
        .await;
    // Listens on 9999 while the pack says 8080: never ready.
    env.put_pack(
        "deaf",
        &env.image.clone(),
        vec![EnvVar {
            name: "PORT".into(),
            value: "9999".into(),
        }],
    )
    .await;

    let mut restore = Env::spec("workload", 0);
    restore.workspace = Some(WorkspaceSpec {
        quota: None,
        restore_from: Some("no-such-snapshot".into()),
    });
    let mut tiny = Env::spec("workload", 0);
    tiny.workspace = Some(WorkspaceSpec {
        quota: Some("1Ki".into()),
        restore_from: None,
    });
    let mut greedy = Env::spec("workload", 0);
    greedy.resources = Some(medforge_crds::SessionResources {
        pids: Some(1_000_000),
        ..Default::default()
    });
    let cases = [
        (
            "no-pack",
            Env::spec("missing-pack", 1),
            "PackNotFound",
            "missing-pack",
        ),
        (
            "no-image",
            Env::spec("ghost", 1),
            "ImageNotPresent",
            "0000000000",
        ),
        (
            "no-snapshot",
            restore,
            "SnapshotNotFound",
            "\"no-such-snapshot\" does not exist",
        ),
        ("tiny-quota", tiny, "WorkspaceFailed", "out of space"),
        // Written straight to the Kubernetes API, as kubectl would: the
        // agent holds it to the operator's policy.
        (
            "above-policy",
            greedy,
            "PolicyViolation",
            "resources.pids: 1000000 is above the maximum 32768 (the operator's policy)",
        ),
    ];
    for (name, spec, _, _) in &cases {
        env.create_bound(name, spec.clone()).await;
    }
    for (name, _, reason, needle) in &cases {
        let s = env.wait_phase(name, SessionPhase::Failed, DEADLINE).await;
        let st = s.status.clone().unwrap();
        assert_eq!(st.reason.as_deref(), Some(*reason), "{name}: {st:?}");
        let msg = st.message.clone().unwrap();
        assert!(msg.contains(needle), "{name}: {msg}");
        let ready = s.condition(medforge_crds::SessionCondition::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", *reason)
        );
        assert!(st.gpus.is_empty(), "{name}: GPUs released");
        assert!(
            env.containers_of(&s).await.is_empty(),
            "{name}: no container"
        );
        assert!(
            !env.dataset_exists(&env.dataset_of(&s)).await,
            "{name}: no dataset"
        );
    }

    // Each failure is told as a Warning Event on its Session.
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let deadline = Instant::now() + EVENT_DRIVEN;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        let warned: HashSet<(String, String)> = list
            .items
            .iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| {
                Some((
                    e.regarding.as_ref()?.name.clone()?,
                    e.reason.clone().unwrap_or_default(),
                ))
            })
            .collect();
        if cases
            .iter()
            .all(|(name, _, reason, _)| warned.contains(&(name.to_string(), reason.to_string())))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing Warning events: {warned:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Ready only once the workload answers on its port: a deaf one waits,
    // then fails, and its container is stopped.
    env.create_bound("deaf", Env::spec("deaf", 0)).await;
    let s = env
        .wait_for("deaf", "waiting for its port", DEADLINE, |s| {
            s.condition(medforge_crds::SessionCondition::Ready)
                .is_some_and(|c| c.reason == "WaitingForPort")
        })
        .await;
    assert_eq!(s.phase(), SessionPhase::Starting);
    assert!(s.status.unwrap().upstream.is_none());
    let s = env.wait_phase("deaf", SessionPhase::Failed, DEADLINE).await;
    assert_eq!(
        s.status.clone().unwrap().reason.as_deref(),
        Some("StartTimeout")
    );
    let id = env.containers_of(&s).await[0].id.clone().unwrap();
    assert!(!env.container_facts(&id).await.0, "stopped");

    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_follows_the_dataset_policy_even_when_things_are_already_gone() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    let destroy = BTreeMap::from([(
        "medforge.dev/workspace-on-delete".to_string(),
        "destroy".to_string(),
    )]);
    env.create_bound_with("doomed", Env::spec("workload", 0), destroy.clone())
        .await;
    env.create_bound_with("hollow", Env::spec("workload", 0), destroy)
        .await;
    let doomed = env
        .wait_for("doomed", "Running", DEADLINE, is_running_and_ready)
        .await;
    let hollow = env
        .wait_for("hollow", "Running", DEADLINE, is_running_and_ready)
        .await;

    env.delete_and_wait_gone("doomed", EVENT_DRIVEN).await;
    assert!(env.containers_of(&doomed).await.is_empty());
    assert!(
        !env.dataset_exists(&env.dataset_of(&doomed)).await,
        "destroyed per policy"
    );

    // Its container and dataset removed behind the agent's back first.
    let id = env.containers_of(&hollow).await[0].id.clone().unwrap();
    env.remove_container(&id).await;
    env.wait_phase("hollow", SessionPhase::Failed, EVENT_DRIVEN)
        .await;
    let ds = env.dataset_of(&hollow);
    let destroyed = env.harness.destroy_dataset(&ds).await.unwrap();
    assert!(destroyed.contains(&ds), "{ds} existed: {destroyed:?}");
    env.delete_and_wait_gone("hollow", EVENT_DRIVEN).await;

    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_lifetime_limits_stop_sessions() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    let mut old = Env::spec("workload", 0);
    old.max_lifetime = Some("2s".into());
    let mut idle = Env::spec("workload", 0);
    idle.idle_timeout = Some("3s".into());
    env.create_bound("old", old).await;
    env.create_bound("idle", idle).await;
    let s = env
        .wait_for("idle", "Running", DEADLINE, is_running_and_ready)
        .await;
    let started = s.status.unwrap().started_at.unwrap().0;

    // Activity reported by the api (as forward_auth would) a second later.
    let activity = started
        .checked_add(std::time::Duration::from_secs(1))
        .unwrap();
    env.sessions()
        .patch_status(
            "idle",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"lastActivityAt": activity.to_string()}})),
        )
        .await
        .unwrap();

    let s = env.wait_phase("old", SessionPhase::Stopped, DEADLINE).await;
    let st = s.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("Expired"));
    assert!(st.workspace.unwrap().snapshots[0].starts_with("stop-"));

    let s = env
        .wait_phase("idle", SessionPhase::Stopped, DEADLINE)
        .await;
    let st = s.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("Idle"));
    let stopped = st.stopped_at.unwrap().0;
    assert!(
        stopped.as_millisecond() - activity.as_millisecond() >= 3000,
        "stopped at {stopped}, 3 s after the last activity at {activity} at the earliest"
    );
    env.finish(agent).await;
}

/// A connection held open to the workload (as a websocket through the
/// proxy is) counts as activity: the session outlives several idle timeouts
/// with no request at all, and stops for idleness once it is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_keeps_an_idle_session_running() {
    let env = Env::new().await;
    let agent = env.spawn_agent(env.config());
    let mut spec = Env::spec("workload", 0);
    spec.idle_timeout = Some("4s".into());
    env.create_bound("held", spec).await;
    let s = env
        .wait_for("held", "Running", DEADLINE, is_running_and_ready)
        .await;
    let started = s.status.as_ref().unwrap().started_at.clone().unwrap().0;
    let container = s.status.as_ref().unwrap().container_id.clone();
    let conn = medforge_testkit::connect_in_netns(
        &env.runtime.netns,
        Env::upstream(&s),
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    // Three idle timeouts with the connection open: still Running, the same
    // container, its activity recorded again and again by the agent.
    let until = Instant::now() + Duration::from_secs(12);
    let mut last_seen = started;
    let mut advances = 0;
    while Instant::now() < until {
        let s = env.get("held").await;
        assert!(
            is_running_and_ready(&s),
            "stopped with a connection open: {:?}",
            s.status
        );
        assert_eq!(s.status.as_ref().unwrap().container_id, container);
        if let Some(at) = s.status.as_ref().unwrap().last_activity_at.as_ref()
            && at.0 > last_seen
        {
            last_seen = at.0;
            advances += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(advances >= 2, "activity recorded {advances} time(s)");

    // Closed: idle, stopped within a few idle timeouts.
    drop(conn);
    let s = env
        .wait_phase("held", SessionPhase::Stopped, EVENT_DRIVEN)
        .await;
    let st = s.status.unwrap();
    assert_eq!(st.reason.as_deref(), Some("Idle"), "{:?}", st.message);
    assert!(st.stopped_at.unwrap().0 >= last_seen);
    env.finish(agent).await;
}

/// Parks each named session's reconcile before its step, the first time.
fn parking_hook(
    targets: HashMap<String, StepKind>,
    parked: tokio::sync::mpsc::UnboundedSender<String>,
) -> StepHook {
    let done = Arc::new(Mutex::new(HashSet::new()));
    Arc::new(move |s: &Session, kind: StepKind| {
        let name = s.name_any();
        if targets.get(&name) == Some(&kind) && done.lock().unwrap().insert(name.clone()) {
            let _ = parked.send(name);
            return futures::future::pending().boxed();
        }
        async {}.boxed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_at_each_step_restarts_and_converges_with_one_of_everything() {
    let env = Env::new().await;
    let start_points = StepKind::START;
    let stop_points = StepKind::STOP;
    let name_of = |k: StepKind| k.as_str().to_lowercase();
    let mut targets = HashMap::new();
    for k in start_points {
        targets.insert(format!("start-{}", name_of(k)), k);
    }
    for k in stop_points {
        targets.insert(format!("stop-{}", name_of(k)), k);
    }
    let (tx, mut parked) = tokio::sync::mpsc::unbounded_channel();
    let mut config = env.config();
    config.step_hook = Some(parking_hook(targets.clone(), tx));
    let first = env.spawn_agent(config);

    // Sessions to be stopped run first.
    for k in stop_points {
        env.create_bound(&format!("stop-{}", name_of(k)), Env::spec("workload", 1))
            .await;
    }
    let mut running_before = HashMap::new();
    for k in stop_points {
        let name = format!("stop-{}", name_of(k));
        let s = env
            .wait_for(&name, "Running", DEADLINE, is_running_and_ready)
            .await;
        let id = env.containers_of(&s).await[0].id.clone().unwrap();
        running_before.insert(name, id);
    }
    for k in start_points {
        env.create_bound(&format!("start-{}", name_of(k)), Env::spec("workload", 1))
            .await;
    }
    for k in stop_points {
        env.set_state(&format!("stop-{}", name_of(k)), "Stopped")
            .await;
    }
    let mut waiting: HashSet<String> = targets.keys().cloned().collect();
    let deadline = Instant::now() + DEADLINE;
    while !waiting.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let name = tokio::time::timeout(left, parked.recv())
            .await
            .unwrap_or_else(|_| panic!("never parked: {waiting:?}"))
            .unwrap();
        waiting.remove(&name);
    }

    // Every session is stopped right before its step: the agent dies now.
    first.kill().await;
    let s = env.get("start-createcontainer").await;
    assert!(env.dataset_exists(&env.dataset_of(&s)).await);
    assert!(env.containers_of(&s).await.is_empty());
    let s = env.get("start-startcontainer").await;
    assert_eq!(env.containers_of(&s).await.len(), 1, "created, not started");
    let s = env.get("stop-snapshot").await;
    assert_eq!(s.phase(), SessionPhase::Stopping, "its intent is recorded");

    let second = env.spawn_agent(env.config());
    for k in start_points {
        let name = format!("start-{}", name_of(k));
        let s = env
            .wait_for(&name, "Running", DEADLINE, is_running_and_ready)
            .await;
        let containers = env.containers_of(&s).await;
        assert_eq!(containers.len(), 1, "{name}: exactly one container");
        assert!(
            env.container_facts(containers[0].id.as_deref().unwrap())
                .await
                .0
        );
        let answer = env.harness.http_get(Env::upstream(&s), "/").await.unwrap();
        assert_eq!(answer.text(), name);
    }
    for k in stop_points {
        let name = format!("stop-{}", name_of(k));
        let s = env.wait_phase(&name, SessionPhase::Stopped, DEADLINE).await;
        let containers = env.containers_of(&s).await;
        assert_eq!(containers.len(), 1, "{name}: exactly one container");
        assert_eq!(
            containers[0].id.as_ref(),
            Some(&running_before[&name]),
            "{name}: the same container"
        );
        let snaps = s.status.clone().unwrap().workspace.unwrap().snapshots;
        assert_eq!(snaps.len(), 1, "{name}: {snaps:?}");
        let dataset = env.dataset_of(&s);
        assert_eq!(
            env.snapshots(&dataset).await,
            vec![format!("{dataset}@{}", snaps[0])],
            "{name}: exactly the recorded snapshot"
        );
    }
    // One dataset per session, and no GPU held twice.
    let all = env.sessions().list(&ListParams::default()).await.unwrap();
    let mut datasets = env.datasets_of_owner("alice").await;
    datasets.sort();
    let mut expected: Vec<String> = all.items.iter().map(|s| env.dataset_of(s)).collect();
    expected.sort();
    assert_eq!(datasets, expected);
    let mut held = HashSet::new();
    for s in all.items.iter().filter(|s| !s.phase().is_terminal()) {
        for g in &s.status.as_ref().unwrap().gpus {
            assert!(held.insert(g.uuid.clone()), "{} held twice", g.uuid);
        }
    }
    // The GpuNode the restarted agent publishes agrees.
    let nodes: Api<GpuNode> = Api::all(env.client.clone());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let node = nodes.get(&env.node).await.unwrap();
        let allocated = node.status.unwrap_or_default().allocated;
        let uuids: HashSet<String> = allocated.iter().map(|a| a.uuid.clone()).collect();
        if uuids == held && allocated.len() == held.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "GpuNode allocations {allocated:?} != {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.finish(second).await;
}

/// Snapshots on the pool without a record (taken before records existed,
/// or whose record was deleted) get one when an agent starts; snapshots
/// the agent did not name are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_agent_records_the_snapshots_it_finds_on_its_pool() {
    let env = Env::new().await;
    let first = env.spawn_agent(env.config());
    env.create_bound("old", Env::spec("workload", 0)).await;
    env.wait_for("old", "Running", DEADLINE, is_running_and_ready)
        .await;
    env.set_state("old", "Stopped").await;
    let s = env
        .wait_phase("old", SessionPhase::Stopped, EVENT_DRIVEN)
        .await;
    first.kill().await;
    let records: Api<WorkspaceSnapshot> = Api::namespaced(env.client.clone(), &env.ns);
    let taken = records.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(taken.len(), 1, "{taken:?}");
    // As if taken before records existed: the record gone (deleted and,
    // with no agent to run its finalizer, the finalizer taken off by hand,
    // so that no agent destroys the snapshot for a deleted record), two
    // more snapshots by hand, one of them not named by the agent.
    let record_name = taken[0].metadata.name.clone().unwrap();
    records
        .delete(&record_name, &Default::default())
        .await
        .unwrap();
    records
        .patch(
            &record_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(
        records.get_opt(&record_name).await.unwrap().is_none(),
        "the record is gone before the agent starts"
    );
    let dataset = env.dataset_of(&s);
    for name in ["death-1700000000000", "backup"] {
        env.harness
            .zfs(["snapshot", &format!("{dataset}@{name}")])
            .await
            .unwrap();
    }

    let second = env.spawn_agent(env.config());
    // Created, then given their status (a second write).
    let found =
        agent_support::eventually_list(&records, 2, EVENT_DRIVEN, |r| r.status.is_some()).await;
    let mut by_snapshot: Vec<(String, SnapshotReason)> = found
        .iter()
        .map(|r| (r.spec.snapshot.clone(), r.spec.reason))
        .collect();
    by_snapshot.sort_by(|a, b| a.0.cmp(&b.0));
    let stop = s.status.clone().unwrap().workspace.unwrap().snapshots[0].clone();
    assert_eq!(
        by_snapshot,
        [
            (
                format!("{dataset}@death-1700000000000"),
                SnapshotReason::Death
            ),
            (format!("{dataset}@{stop}"), SnapshotReason::Stop),
        ]
    );
    for r in &found {
        assert_eq!(r.spec.session.name, "old");
        assert_eq!(Some(r.spec.session.uid.clone()), s.uid());
        assert_eq!(r.spec.owner, s.spec.owner);
        let st = r.status.clone().unwrap();
        assert!(st.size_bytes.is_some(), "{st:?}");
    }
    env.finish(second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_its_containers_and_removes_orphans() {
    let env = Env::new().await;
    let first = env.spawn_agent(env.config());
    for name in ["keep-a", "keep-b"] {
        env.create_bound(name, Env::spec("workload", 0)).await;
    }
    let mut before = HashMap::new();
    for name in ["keep-a", "keep-b"] {
        let s = env
            .wait_for(name, "Running", DEADLINE, is_running_and_ready)
            .await;
        let id = env.containers_of(&s).await[0].id.clone().unwrap();
        before.insert(name, (id.clone(), env.container_facts(&id).await.1));
    }
    first.kill().await;

    // While the agent is down: a container no Session owns appears.
    let orphan = env.scope.name("orphan");
    let mut labels = env.scope.labels();
    labels.insert("medforge.dev/node".into(), env.node.clone());
    labels.insert("medforge.dev/session-uid".into(), "no-such-uid".into());
    env.harness
        .create_and_start(
            &orphan,
            ContainerCreateBody {
                image: Some(env.image.clone()),
                labels: Some(labels),
                user: Some("1000:1000".into()),
                host_config: Some(HostConfig {
                    init: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let mut config = env.config();
    config.orphan_grace = Duration::ZERO;
    let second = env.spawn_agent(config);
    let state = second
        .wait_state("one sweep and both sessions reconciled", |s| {
            s.sweeps >= 1 && s.sessions_reconciled >= 2
        })
        .await;
    assert_eq!(state.adopted, 2);
    assert_eq!(state.orphans_removed, 1);
    let left = env
        .harness
        .docker()
        .inspect_container(
            &orphan,
            None::<medforge_testkit::bollard::query_parameters::InspectContainerOptions>,
        )
        .await;
    assert!(left.is_err(), "the orphan is removed");
    for name in ["keep-a", "keep-b"] {
        let s = env.get(name).await;
        assert!(is_running_and_ready(&s));
        let containers = env.containers_of(&s).await;
        assert_eq!(containers.len(), 1);
        let (id, started) = &before[name];
        assert_eq!(containers[0].id.as_ref(), Some(id), "{name}: adopted");
        let (running, started_now, restarts) = env.container_facts(id).await;
        assert!(running && restarts == 0);
        assert_eq!(&started_now, started, "{name}: not restarted");
    }
    // The removal is told as an Event about the GpuNode.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let deadline = Instant::now() + EVENT_DRIVEN;
    loop {
        let list = events.list(&ListParams::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("OrphanContainerRemoved")
                && e.note.as_deref().is_some_and(|n| n.contains(&orphan))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "no OrphanContainerRemoved event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.finish(second).await;
}

/// Sessions in the agent's cache, from its own /metrics.
async fn cached_sessions(agent: &medforge_operator::agent::testing::Agent) -> i64 {
    let addr = agent.state.borrow().metrics_addr.expect("metrics address");
    let body = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| l.strip_prefix("medforge_agent_cached_sessions "))
        .map(|v| v.trim().parse().unwrap())
        .expect("medforge_agent_cached_sessions in /metrics")
}

/// A Session bound to another node, as the scheduler would bind it.
async fn bind_elsewhere(env: &Env, name: &str, node: &str) {
    env.sessions()
        .create(
            &Default::default(),
            &Session::new(name, Env::spec("workload", 0)),
        )
        .await
        .unwrap();
    env.sessions()
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {
                "phase": "Scheduled",
                "nodeName": node,
                "slug": medforge_crds::slug::Slug::random().into_string(),
            }})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_caches_and_watches_only_its_own_nodes_sessions() {
    let env = Env::new().await;
    // Before the agent's first list: Sessions bound elsewhere, and unbound.
    for i in 0..10 {
        bind_elsewhere(&env, &format!("away-{i}"), "some-other-node").await;
    }
    for i in 0..5 {
        env.sessions()
            .create(
                &Default::default(),
                &Session::new(&format!("pending-{i}"), Env::spec("workload", 0)),
            )
            .await
            .unwrap();
    }
    let agent = env.spawn_agent(env.config());
    env.create_bound("mine", Env::spec("workload", 0)).await;
    env.wait_for("mine", "Running", DEADLINE, is_running_and_ready)
        .await;
    // After it: more elsewhere, then one of its own. Its watch delivers in
    // the control plane's order, so once that one runs, every earlier
    // Session would have reached its cache, had the watch not left them out.
    for i in 10..20 {
        bind_elsewhere(&env, &format!("away-{i}"), "yet-another-node").await;
    }
    env.create_bound("mine-too", Env::spec("workload", 0)).await;
    env.wait_for("mine-too", "Running", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(
        cached_sessions(&agent).await,
        2,
        "only its own two Sessions"
    );
    // Stopped, then bound elsewhere (as a resume on another node would be):
    // it leaves the cache.
    env.set_state("mine-too", "Stopped").await;
    env.wait_phase("mine-too", SessionPhase::Stopped, EVENT_DRIVEN)
        .await;
    env.sessions()
        .patch_status(
            "mine-too",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"nodeName": "some-other-node"}})),
        )
        .await
        .unwrap();
    medforge_testkit::eventually(
        "the Session bound away leaves the agent's cache",
        EVENT_DRIVEN,
        async || (cached_sessions(&agent).await == 1).then_some(()),
    )
    .await;
    env.finish(agent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounting_a_workspace_mounts_its_unmounted_parents_first() {
    use medforge_operator::agent::runtime::Workspaces;
    let env = Env::new().await;
    let config = env.config();
    let owner = format!("{}/mount-owner", config.dataset_root);
    let dataset = format!("{owner}/mount-uid");
    env.harness.zfs(["create", "-p", &dataset]).await.unwrap();
    // As after a ZFS daemon restart that the import has not finished
    // mounting: the session's dataset and its owner's both unmounted.
    for d in [&dataset, &owner] {
        env.harness.zfs(["unmount", d]).await.unwrap();
    }
    let mounted = async |d: &str| {
        env.harness
            .zfs(["get", "-H", "-o", "value", "mounted", d])
            .await
            .unwrap()
            .trim()
            == "yes"
    };
    assert!(!mounted(&owner).await && !mounted(&dataset).await);

    let zfs = medforge_operator::agent::zfs::ZfsWorkspaces::new(config.zfs_binary.clone());
    zfs.mount(&dataset).await.unwrap();
    // Both mounted: the owner's first, so the session's mountpoint is made
    // inside it, not in the directory below it (where the owner's mount
    // would then fail with "directory is not empty").
    assert!(mounted(&owner).await, "the owner's dataset is mounted");
    assert!(mounted(&dataset).await, "the session's dataset is mounted");
    // And again: already mounted is done.
    zfs.mount(&dataset).await.unwrap();
    env.cleanup().await;
}
