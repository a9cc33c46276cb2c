//! East-west isolation on the real harness: two workload containers on one
//! user-defined bridge network reach each other until the isolation rules are
//! applied, then cannot (on any port, either way) while the namespace's host
//! side, where Caddy runs, still reaches both; applying twice changes nothing;
//! losing the `DOCKER-USER` jump (Docker drops it for a moment at every
//! network change) keeps the isolation, Docker's `ACCEPT` moved above ours
//! (a dockerd restart) opens it until the next apply restores it; an allowed
//! source gets through one way; removing the rules gives reachability back.
//!
//! Probes between containers run from inside a container's own network
//! namespace (`/proc/<pid>/ns/net`): the workload image has no shell. The
//! test keeps its rules in a chain of its own, so that it never disturbs
//! other tests sharing the namespace.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;

use futures::FutureExt;
use medforge_operator::isolation::{
    self, Applied, Bridge, CommandPrefix, Isolation, bridge_of_network, rules_for,
};
use medforge_testkit::bollard::models::NetworkCreateRequest;
use medforge_testkit::{Harness, TestScope, connect_in_netns};

/// Within one host, an answer (accept or refusal) takes well under a
/// millisecond: a second without one means the SYN was dropped.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const READY: Duration = Duration::from_secs(30);

/// A closed port: a reachable container refuses it, an isolated one drops it.
const CLOSED_PORT: u16 = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    Connected,
    Refused,
    Dropped,
}

struct Session {
    name: String,
    ip: IpAddr,
    netns: PathBuf,
}

/// Connects from `from`'s network namespace to `to:port`.
async fn probe(from: &Session, to: &Session, port: u16) -> Probe {
    let addr = SocketAddr::new(to.ip, port);
    match connect_in_netns(&from.netns, addr, PROBE_TIMEOUT).await {
        Ok(_) => Probe::Connected,
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => Probe::Refused,
        Err(e) if e.kind() == ErrorKind::TimedOut => Probe::Dropped,
        Err(e) => panic!("probe {} -> {addr}: {e}", from.name),
    }
}

async fn start_session(
    harness: &Harness,
    scope: &TestScope,
    network: &str,
    suffix: &str,
) -> Session {
    let docker = harness.docker();
    let name = harness
        .start_workload_container(scope, suffix, Some(network))
        .await
        .expect("start a workload container");
    let pid = docker
        .inspect_container(&name, None)
        .await
        .expect("inspect")
        .state
        .and_then(|s| s.pid)
        .filter(|pid| *pid > 0)
        .expect("a running container has a pid");
    let ip = harness.container_ip(&name).await.expect("container ip");
    harness
        .wait_for_http(SocketAddr::new(ip, 8080), "/healthz", READY)
        .await
        .expect("the workload answers");
    Session {
        name,
        ip,
        netns: PathBuf::from(format!("/proc/{pid}/ns/net")),
    }
}

/// The namespace host side (where Caddy runs) reaches the session's 8080.
async fn host_reaches(harness: &Harness, session: &Session) {
    let got = harness
        .http_get(SocketAddr::new(session.ip, 8080), "/")
        .await
        .expect("GET / from the host side");
    assert_eq!((got.status, got.text()), (200, session.name.clone()));
}

/// Runs `iptables ARGS` inside the namespace; returns its stdout.
fn iptables(harness: &Harness, args: &[&str]) -> String {
    let out = harness
        .netns_command("iptables")
        .arg("-w")
        .args(args)
        .output()
        .expect("run iptables");
    assert!(out.status.success(), "iptables {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `iptables -S` of the test's chain, and the DOCKER-USER and FORWARD rules
/// that jump to it, inside the namespace (other tests may change the rest
/// meanwhile).
fn firewall(harness: &Harness, chain: &str) -> String {
    let mut text = String::new();
    for listed in [
        chain,
        isolation::DOCKER_USER_CHAIN,
        isolation::FORWARD_CHAIN,
    ] {
        for line in iptables(harness, &["-S", listed]).lines() {
            if listed == chain || line.ends_with(&format!(" -j {chain}")) {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text
}

fn rules_of(listing: &str, bridge: &Bridge) -> Vec<String> {
    let tag = format!("\"medforge-isolation:{bridge}\"");
    listing
        .lines()
        .filter(|l| l.contains(&tag))
        .map(|l| l.replace(&tag, &tag[1..tag.len() - 1]))
        .collect()
}

/// The test's firewall manager: its own chain, so that it never disturbs
/// other tests (or a node agent) using `MEDFORGE-ISOLATION` in the shared
/// namespace; a real agent uses the default.
fn manager(harness: &Harness, scope: &TestScope) -> Isolation {
    Isolation::new(CommandPrefix::nsenter_net(&harness.layout().netns_path))
        .with_chain(&format!("MFISO-{}", scope.prefix()))
        .expect("a valid chain name")
}

async fn scenario(harness: &Harness, scope: &TestScope, network: &str) {
    let bridge = bridge_of_network(harness.docker(), network)
        .await
        .expect("bridge of the network");
    assert!(bridge.as_str().starts_with("br-"), "{bridge}");

    let a = start_session(harness, scope, network, "a").await;
    let b = start_session(harness, scope, network, "b").await;

    // The positive first: before isolation, the sessions reach each other.
    assert_eq!(probe(&b, &a, 8080).await, Probe::Connected);
    assert_eq!(probe(&a, &b, 8080).await, Probe::Connected);
    assert_eq!(probe(&b, &a, CLOSED_PORT).await, Probe::Refused);

    let firewall_ns = manager(harness, scope);
    let chain = firewall_ns.chain().to_string();
    let first = firewall_ns.apply(&bridge, &[]).await.expect("apply");
    assert!(first.rules_changed, "{first:?}");
    let after_first = firewall(harness, &chain);
    let expected: Vec<String> = rules_for(&bridge, &[])
        .iter()
        .map(|r| r.spec(&chain))
        .collect();
    assert_eq!(rules_of(&after_first, &bridge), expected, "{after_first}");
    for from in [isolation::DOCKER_USER_CHAIN, isolation::FORWARD_CHAIN] {
        assert!(
            after_first.contains(&format!("-A {from} -j {chain}")),
            "{after_first}"
        );
    }
    assert!(
        firewall_ns
            .isolated_bridges()
            .await
            .unwrap()
            .contains(&bridge),
        "{after_first}"
    );

    // Isolated: no port, no direction.
    let isolated = tokio::join!(
        probe(&b, &a, 8080),
        probe(&a, &b, 8080),
        probe(&b, &a, CLOSED_PORT)
    );
    assert_eq!(isolated, (Probe::Dropped, Probe::Dropped, Probe::Dropped));
    // The host side still reaches both.
    host_reaches(harness, &a).await;
    host_reaches(harness, &b).await;

    // Idempotent: a second apply changes nothing.
    let second = firewall_ns.apply(&bridge, &[]).await.expect("apply again");
    assert_eq!(second, Applied::default());
    assert_eq!(firewall(harness, &chain), after_first);

    // Without the DOCKER-USER jump (what Docker's re-insertion of its own
    // FORWARD -> DOCKER-USER jump amounts to for a moment at every network
    // change, and a firewall reload for longer), the FORWARD jump holds.
    iptables(harness, &["-D", isolation::DOCKER_USER_CHAIN, "-j", &chain]);
    assert_eq!(probe(&b, &a, 8080).await, Probe::Dropped);

    // What a dockerd restart can do on top: Docker's ACCEPT for the bridge
    // inserted again at the top of FORWARD, ahead of our jump. Now open...
    let accept = ["-i", bridge.as_str(), "-o", bridge.as_str(), "-j", "ACCEPT"];
    iptables(
        harness,
        &[&["-D", isolation::FORWARD_CHAIN][..], &accept].concat(),
    );
    iptables(
        harness,
        &[&["-I", isolation::FORWARD_CHAIN, "1"][..], &accept].concat(),
    );
    assert_eq!(probe(&b, &a, 8080).await, Probe::Connected);
    // ... until the agent applies again: both jumps back in place.
    let again = firewall_ns.apply(&bridge, &[]).await.expect("re-apply");
    assert!(again.jump_restored && !again.rules_changed, "{again:?}");
    assert_eq!(firewall(harness, &chain), after_first);
    assert_eq!(probe(&b, &a, 8080).await, Probe::Dropped);
    let settled = firewall_ns.apply(&bridge, &[]).await.expect("settled");
    assert_eq!(settled, Applied::default());

    // A source allowed on the bridge (a proxy container) reaches the others.
    let IpAddr::V4(proxy) = b.ip else {
        panic!("IPv4 expected: {}", b.ip)
    };
    let allowed = firewall_ns.apply(&bridge, &[proxy]).await.expect("allow b");
    assert!(allowed.rules_changed, "{allowed:?}");
    assert_eq!(probe(&b, &a, 8080).await, Probe::Connected);
    assert_eq!(probe(&a, &b, 8080).await, Probe::Dropped);
    let back = firewall_ns.apply(&bridge, &[]).await.expect("disallow b");
    assert!(back.rules_changed, "{back:?}");
    assert_eq!(firewall(harness, &chain), after_first);
    assert_eq!(probe(&b, &a, 8080).await, Probe::Dropped);

    // Removal (a deleted network) gives reachability back; twice is harmless.
    assert!(firewall_ns.remove(&bridge).await.expect("remove"));
    assert!(rules_of(&firewall(harness, &chain), &bridge).is_empty());
    assert_eq!(probe(&b, &a, 8080).await, Probe::Connected);
    assert_eq!(probe(&a, &b, 8080).await, Probe::Connected);
    assert!(!firewall_ns.remove(&bridge).await.expect("remove again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_on_one_bridge_cannot_reach_each_other() {
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let network = scope.name("net");
    harness
        .docker()
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            driver: Some("bridge".into()),
            labels: Some(scope.labels()),
            ..Default::default()
        })
        .await
        .expect("create network");

    let outcome = AssertUnwindSafe(scenario(&harness, &scope, &network))
        .catch_unwind()
        .await;

    // Cleanup whatever happened: the chain and its jump, containers, then
    // the network.
    let uninstalled = manager(&harness, &scope).uninstall().await;
    let cleaned = scope.cleanup().await;
    let removed = harness.docker().remove_network(&network).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(
        uninstalled.expect("uninstall"),
        "the test's chain was there"
    );
    let left = firewall_listing_has(&harness, &format!("MFISO-{}", scope.prefix()));
    assert!(!left, "the test's chain or jump is left over");
    cleaned.expect("scope cleanup");
    removed.expect("remove network");
}

/// Whether `chain` or a jump to it is still in the namespace's filter table.
fn firewall_listing_has(harness: &Harness, chain: &str) -> bool {
    let out = harness
        .netns_command("iptables")
        .args(["-w", "-S"])
        .output()
        .expect("run iptables");
    assert!(out.status.success(), "iptables -S: {out:?}");
    String::from_utf8_lossy(&out.stdout).contains(chain)
}

/// A network namespace of this test's own (no dockerd): deleted on drop.
struct PrivateNetns(String);

impl PrivateNetns {
    fn create() -> PrivateNetns {
        let name = format!("mfiso-{}", medforge_testkit::random_prefix());
        let status = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(status.success(), "ip netns add {name}");
        PrivateNetns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/var/run/netns/{}", self.0))
    }

    fn sysctl(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", self.path().display()))
            .arg("sysctl")
            .args(args)
            .output()
            .expect("run sysctl");
        assert!(out.status.success(), "sysctl {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PrivateNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

#[tokio::test]
async fn bridge_netfilter_is_switched_on_and_a_missing_docker_user_is_reported() {
    let netns = PrivateNetns::create();
    let sysctl = isolation::BRIDGE_NF_SYSCTL;
    netns.sysctl(&["-w", &format!("{sysctl}=0")]);
    assert_eq!(netns.sysctl(&["-n", sysctl]), "0");

    let manager = Isolation::new(CommandPrefix::nsenter_net(netns.path()));
    assert!(manager.ensure_bridge_netfilter().await.expect("switch on"));
    assert_eq!(netns.sysctl(&["-n", sysctl]), "1");
    assert!(!manager.ensure_bridge_netfilter().await.expect("already on"));

    // No dockerd here, so no DOCKER-USER: a clear error, not a silent no-op.
    let bridge = Bridge::new("br-0123456789ab").unwrap();
    let err = manager.apply(&bridge, &[]).await.unwrap_err();
    assert!(
        matches!(err, isolation::IsolationError::NoDockerUserChain),
        "{err}"
    );
    assert!(err.to_string().contains("start dockerd"), "{err}");
    assert!(manager.uninstall().await.expect("uninstall"));
}
