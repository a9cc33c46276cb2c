//! Leader takeover between two `medforge operator` processes (schedulers
//! only, each with its own identity `<host>-<pid>`) on an embedded control
//! plane: the leader is SIGKILLed as it logs a binding, while a stream of
//! Sessions is being created and bound, and the test checks that the kill
//! cut that binding off. The other process takes the Lease only once it has
//! expired, decides every Session, and no GPU is ever given to two Sessions.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use medforge_crds::Session;
use medforge_testkit::{eventually, publish_ready_node, session_spec};
use support::{Proc, host_port, kube_client};

/// Lease duration given to both schedulers: short, so that the takeover
/// after expiry happens within the test.
const LEASE_SECS: i64 = 3;
const GPUS: u32 = 6;
const OWNERS: usize = 4;
const SESSIONS_PER_OWNER: usize = 3;
const MAX_SESSIONS_PER_USER: usize = 2;
const NS: &str = "takeover";

/// `medforge <args>` with no stdin or stdout and its stderr to `stderr`.
fn medforge(args: &[&str], stderr: impl Into<Stdio>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_medforge"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    command.spawn().expect("medforge starts")
}

fn spawn(name: &'static str, dir: &Path, args: &[&str]) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let child = medforge(args, std::fs::File::create(&log).unwrap());
    Proc { name, child, log }
}

/// Kills the armed scheduler process the moment its log says it is writing
/// its `after`-th binding (the log line comes before the write is sent).
#[derive(Default)]
struct KillOnBinding {
    pid: AtomicU32,
    after: AtomicUsize,
    /// The log line that triggered the kill.
    line: Mutex<Option<String>>,
}

/// A scheduler process whose log (stderr) a thread copies line by line into
/// its log file, and kills as `kill` is armed.
fn spawn_scheduler(
    name: &'static str,
    dir: &Path,
    args: &[&str],
    kill: Arc<KillOnBinding>,
) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let mut child = medforge(args, Stdio::piped());
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let mut file = std::fs::File::create(&log).unwrap();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if kill.pid.load(Ordering::SeqCst) == pid
                && line.contains(" binding ")
                && kill.after.fetch_sub(1, Ordering::SeqCst) == 1
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                *kill.line.lock().unwrap() = Some(line.clone());
            }
            let _ = writeln!(file, "{line}");
        }
    });
    Proc { name, child, log }
}

fn session(name: &str, owner: &str) -> Session {
    session_spec().owner(owner).session(name)
}

fn is_bound(s: &Session) -> bool {
    s.condition(medforge_crds::SessionCondition::Scheduled)
        .is_some_and(|c| c.status == "True")
}

fn gpus_of(s: &Session) -> Vec<String> {
    s.status
        .as_ref()
        .map(|st| st.gpus.iter().map(|g| g.uuid.clone()).collect())
        .unwrap_or_default()
}

/// Every GPU uuid ever seen on a Session, and which Session. Sessions are
/// never stopped or deleted here, so a uuid seen on two Sessions is a GPU
/// given twice.
#[derive(Default)]
struct GpuLedger(HashMap<String, String>);

impl GpuLedger {
    fn observe(&mut self, sessions: &[Session]) {
        for s in sessions {
            for uuid in gpus_of(s) {
                let name = s.name_any();
                let first = self.0.entry(uuid.clone()).or_insert_with(|| name.clone());
                assert_eq!(*first, name, "GPU {uuid} given to both {first} and {name}");
            }
        }
    }
}

struct LeaseView {
    holder: String,
    renew: Timestamp,
    acquire: Timestamp,
    transitions: i32,
    duration: i64,
}

async fn lease(api: &Api<Lease>) -> Option<LeaseView> {
    let spec = api.get_opt("medforge-scheduler").await.unwrap()?.spec?;
    Some(LeaseView {
        holder: spec.holder_identity.filter(|h| !h.is_empty())?,
        renew: spec.renew_time?.0,
        acquire: spec.acquire_time?.0,
        transitions: spec.lease_transitions.unwrap_or(0),
        duration: i64::from(spec.lease_duration_seconds?),
    })
}

/// Rounds at most, until one kills the leader with a binding it had
/// decided and logged not yet in the store.
const ROUNDS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_scheduler_takes_over_only_after_the_killed_leaders_lease_expired() {
    // Every round checks everything below; the kill races the leader's
    // write, so a round may lose the race (the write was already stored).
    // At least one round must show a binding cut off by the kill.
    for round in 1..=ROUNDS {
        if takeover_round().await {
            eprintln!("round {round}: the kill cut off a binding");
            return;
        }
        eprintln!("round {round}: the binding was stored before the kill landed");
    }
    panic!("in {ROUNDS} rounds the kill never landed before a binding was stored");
}

/// One run: returns whether the leader died with its third binding decided
/// (logged) but not in the store.
async fn takeover_round() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("apiserver");
    let listen = format!("127.0.0.1:{}", host_port());
    let _server = spawn(
        "apiserver",
        tmp.path(),
        &[
            "apiserver",
            "--data-dir",
            dir.to_str().unwrap(),
            "--listen",
            &listen,
        ],
    );
    let c = kube_client(&dir).await;
    medforge_operator::leader::ensure_namespace(&c, NS)
        .await
        .unwrap();
    publish_ready_node(&c, "node-a", GPUS, Timestamp::now()).await;

    let kubeconfig = dir.join("kubeconfig");
    let max_sessions = MAX_SESSIONS_PER_USER.to_string();
    let lease_duration = format!("{LEASE_SECS}s");
    let kill = Arc::new(KillOnBinding::default());
    let scheduler = |name| {
        spawn_scheduler(
            name,
            tmp.path(),
            &[
                "operator",
                "--no-agent",
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--max-sessions-per-user",
                &max_sessions,
                "--heartbeat-timeout-secs",
                "3600",
                "--lease-duration",
                &lease_duration,
            ],
            kill.clone(),
        )
    };
    let mut schedulers = [scheduler("scheduler-1"), scheduler("scheduler-2")];

    // Who leads: the Lease's holder is `<host>-<pid>` of one of the two.
    let leases: Api<Lease> = Api::namespaced(c.clone(), "medforge-system");
    let first = eventually(
        "a scheduler to take the Lease",
        Duration::from_secs(60),
        || lease(&leases),
    )
    .await;
    assert_eq!(
        first.duration, LEASE_SECS,
        "--lease-duration reached the Lease"
    );
    let leader = schedulers
        .iter()
        .position(|p| first.holder.ends_with(&format!("-{}", p.child.id())))
        .unwrap_or_else(|| panic!("the holder {} is neither scheduler", first.holder));
    let other = 1 - leader;
    // Killed as its log says it writes the third binding: the first two
    // are (most likely) stored, the third is decided but not yet stored.
    kill.after.store(3, Ordering::SeqCst);
    kill.pid
        .store(schedulers[leader].child.id(), Ordering::SeqCst);

    // A stream of Sessions, several owners, more Sessions than GPUs. The
    // leader is killed once it has bound some of them, with the rest of the
    // stream still to come.
    let sessions: Api<Session> = Api::namespaced(c.clone(), NS);
    let names: Vec<(String, String)> = (0..OWNERS * SESSIONS_PER_OWNER)
        .map(|i| (format!("s-{i:02}"), format!("owner-{}", i % OWNERS)))
        .collect();
    let (before_kill, after_kill) = names.split_at(OWNERS);
    let mut ledger = GpuLedger::default();
    // The first Sessions (one per owner) are created one after another by a
    // task of their own, so the kill may land while some are still being
    // created or bound.
    let creator = {
        let (sessions, before_kill) = (sessions.clone(), before_kill.to_vec());
        tokio::spawn(async move {
            for (name, owner) in before_kill {
                sessions
                    .create(&PostParams::default(), &session(&name, &owner))
                    .await
                    .unwrap();
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = schedulers[leader].child.try_wait().unwrap() {
            break status;
        }
        let list = sessions.list(&ListParams::default()).await.unwrap().items;
        ledger.observe(&list);
        assert!(
            Instant::now() < deadline,
            "the leader never got to its third binding:\n{}",
            schedulers[leader].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the leader died of SIGKILL"
    );
    assert!(
        !schedulers[other].log().contains("became leader"),
        "both schedulers led at once:\n{}",
        schedulers[other].log_tail()
    );
    let killed_at = Timestamp::now();
    // Bindings the dead leader had started (its log says `binding` before
    // each write) that the store does not show right after its death: writes
    // not yet sent, or sent and not yet committed when the kill landed.
    let stored_bound: Vec<String> = sessions
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|s| is_bound(s))
        .map(|s| s.name_any())
        .collect();
    let started: Vec<String> = schedulers[leader]
        .log()
        .lines()
        .filter(|l| l.contains(" binding "))
        .filter_map(|l| l.split("session=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let cut_off: Vec<&String> = started
        .iter()
        .filter(|n| !stored_bound.contains(n))
        .collect();
    let trigger = kill
        .line
        .lock()
        .unwrap()
        .clone()
        .expect("the kill's log line");
    let trigger_session = trigger
        .split("session=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    let caught = !stored_bound.contains(&trigger_session);
    eprintln!(
        "at the kill: binding started for {started:?}, stored bound {stored_bound:?}, not stored {cut_off:?}; killed at: {trigger}"
    );

    creator.await.unwrap();
    // The rest of the stream arrives with no live leader: these Sessions are
    // pending until the other scheduler takes over.
    for (name, owner) in after_kill {
        sessions
            .create(&PostParams::default(), &session(name, owner))
            .await
            .unwrap();
    }
    let list = sessions.list(&ListParams::default()).await.unwrap().items;
    ledger.observe(&list);
    let undecided = list
        .iter()
        .filter(|s| {
            s.condition(medforge_crds::SessionCondition::Scheduled)
                .is_none()
        })
        .count();
    assert!(undecided > 0, "nothing was pending at the takeover");

    // Watch the Lease until someone else holds it. The dead leader's last
    // renewal is the last version that still names it: each version lasts at
    // least the Lease duration before a takeover, and this polls far more
    // often, so none is missed.
    let mut last_renew = first.renew;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (taken, seen_at) = loop {
        let now_lease = lease(&leases)
            .await
            .expect("the Lease is never cleared by a kill");
        let seen_at = Timestamp::now();
        if now_lease.holder == first.holder {
            last_renew = last_renew.max(now_lease.renew);
        } else {
            break (now_lease, seen_at);
        }
        assert!(
            Instant::now() < deadline,
            "nobody took the Lease over:\n{}",
            schedulers[other].log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expiry = last_renew
        .checked_add(Duration::from_secs(LEASE_SECS as u64))
        .unwrap();
    assert!(
        taken
            .holder
            .ends_with(&format!("-{}", schedulers[other].child.id())),
        "the Lease went to {}, not the surviving scheduler",
        taken.holder
    );
    assert_eq!(
        taken.transitions,
        first.transitions + 1,
        "one leader transition"
    );
    // Takeover only after expiry, by the Lease's own times and by this
    // test's clock (the same host clock): no upper bound is claimed.
    assert!(
        taken.acquire > expiry,
        "taken at {} but the dead leader's lease ran until {expiry}",
        taken.acquire
    );
    assert!(
        seen_at >= expiry,
        "new holder seen at {seen_at}, before the lease ran out at {expiry}"
    );
    eprintln!(
        "killed at {killed_at}; last renewal {last_renew}, expiry {expiry}; taken at {} (seen {seen_at}); \
         remaining lease at the kill {:?}, kill to takeover {:?}",
        taken.acquire,
        expiry.duration_since(killed_at),
        taken.acquire.duration_since(killed_at)
    );

    // Every Session ends bound or refused; as many bound as the GPUs and the
    // per-owner limit allow; no GPU twice.
    let expected_bound = (GPUS as usize).min(OWNERS * MAX_SESSIONS_PER_USER);
    let ledger = Mutex::new(ledger);
    let done = eventually(
        "every Session decided, as many bound as fit",
        Duration::from_secs(60),
        || async {
            let list = sessions.list(&ListParams::default()).await.unwrap().items;
            ledger.lock().unwrap().observe(&list);
            let decided = list.iter().all(|s| {
                s.condition(medforge_crds::SessionCondition::Scheduled)
                    .is_some()
            });
            let bound = list.iter().filter(|s| is_bound(s)).count();
            if list.len() == names.len() && decided && bound == expected_bound {
                Ok(list)
            } else {
                Err(format!(
                    "{bound} of {} bound (want {expected_bound}), all decided: {decided}\n{}",
                    list.len(),
                    schedulers[other].log_tail()
                ))
            }
        },
    )
    .await;
    let mut per_owner: BTreeMap<&str, usize> = BTreeMap::new();
    let mut uuids = Vec::new();
    for s in done.iter().filter(|s| is_bound(s)) {
        *per_owner.entry(s.spec.owner.as_str()).or_default() += 1;
        let gpus = gpus_of(s);
        assert_eq!(gpus.len(), 1, "{} holds {gpus:?}", s.name_any());
        uuids.extend(gpus);
    }
    let distinct: std::collections::HashSet<&String> = uuids.iter().collect();
    assert_eq!(distinct.len(), uuids.len(), "a GPU held twice: {uuids:?}");
    assert!(
        per_owner.values().all(|&n| n <= MAX_SESSIONS_PER_USER),
        "an owner over the limit: {per_owner:?}"
    );
    // Sessions that arrived after the kill were decided by the new leader,
    // after it took the Lease (a condition's time has whole seconds).
    for s in done
        .iter()
        .filter(|s| after_kill.iter().any(|(n, _)| *n == s.name_any()))
    {
        let at = s
            .condition(medforge_crds::SessionCondition::Scheduled)
            .unwrap()
            .last_transition_time
            .0;
        assert!(
            at.as_second() >= taken.acquire.as_second(),
            "{} decided at {at}, before the takeover at {}",
            s.name_any(),
            taken.acquire
        );
    }
    for s in done.iter().filter(|s| !is_bound(s)) {
        assert!(gpus_of(s).is_empty(), "refused {} holds GPUs", s.name_any());
    }
    eprintln!(
        "{} sessions: {} bound ({per_owner:?}), {} refused",
        done.len(),
        uuids.len(),
        done.len() - uuids.len()
    );
    // The binding the kill cut off is not lost: that Session ends decided
    // (checked above for all), and if bound, on a GPU no other Session has.
    assert!(
        done.iter().any(|s| s.name_any() == trigger_session
            && s.condition(medforge_crds::SessionCondition::Scheduled)
                .is_some()),
        "{trigger_session} was never decided"
    );
    schedulers[other].stop(nix::sys::signal::Signal::SIGTERM);
    caught
}
