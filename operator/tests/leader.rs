//! Leader election when the leader is cut off from the control plane: its
//! client reaches the embedded control plane through a TCP relay in the test
//! that stops passing bytes (connections stay open, nothing answers), as a
//! network partition would. The leader must step down before its Lease can
//! expire, and the other candidate take the Lease only after it expired.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Api, Client};
use medforge_apiserver::testing::TestControlPlane;
use medforge_operator::leader::{LeaseConfig, acquire, renew_deadline};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const NAMESPACE: &str = "medforge-system";
const LEASE: &str = "leader-test";

/// Copies bytes one way until either side closes; while `cut` is set, it
/// holds what it read and reads no more.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP relay to `to` on a loopback port of its own; the flag cuts it.
async fn relay(to: SocketAddr) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut = flag.clone();
            tokio::spawn(async move {
                // A connection opened while cut is held unanswered too.
                while cut.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let Ok(server) = TcpStream::connect(to).await else {
                    return;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(pump(cr, sw, cut.clone()), pump(sr, cw, cut));
            });
        }
    });
    (addr, cut)
}

fn lease_config(identity: &str, duration: Duration) -> LeaseConfig {
    let mut c = LeaseConfig::new(NAMESPACE, LEASE, identity);
    c.duration = duration;
    c
}

fn renewed_at(lease: &Lease) -> Timestamp {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.as_ref())
        .expect("a renewed Lease")
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_control_plane_steps_down_before_its_lease_expires() {
    let cp = TestControlPlane::start().await;
    let server: SocketAddr = cp
        .server
        .url()
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let (relay_addr, cut) = relay(server).await;
    let mut through_relay = cp.server.kube_config();
    through_relay.cluster_url = format!("https://{relay_addr}").parse().unwrap();
    let client_a = Client::try_from(through_relay).unwrap();
    let leases: Api<Lease> = Api::namespaced(cp.client.clone(), NAMESPACE);

    let duration = Duration::from_secs(6);
    let mut a = acquire(client_a, lease_config("replica-a", duration))
        .await
        .unwrap();
    let acquired = leases.get(LEASE).await.unwrap();
    // A renews through the relay at least once before the cut.
    medforge_testkit::eventually(
        "replica-a renews its Lease",
        Duration::from_secs(60),
        async || {
            let l = leases.get(LEASE).await.ok()?;
            (renewed_at(&l) > renewed_at(&acquired)).then_some(())
        },
    )
    .await;

    cut.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(60), a.lost())
        .await
        .expect("replica-a steps down while cut off");
    let stepped_down = Timestamp::now();
    let held = leases.get(LEASE).await.unwrap();
    let spec = held.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-a"));
    let expires = renewed_at(&held) + SignedDuration::try_from(duration).expect("a short duration");
    assert!(
        stepped_down < expires,
        "replica-a stepped down at {stepped_down}, after its Lease expired at {expires} \
         (renew deadline {:?})",
        renew_deadline(duration)
    );

    // The other candidate gets the Lease, and only once it expired.
    let _b = acquire(cp.client.clone(), lease_config("replica-b", duration))
        .await
        .unwrap();
    let took_over = Timestamp::now();
    assert!(
        took_over >= expires,
        "replica-b led at {took_over}, before replica-a's Lease expired at {expires}"
    );
    let taken = leases.get(LEASE).await.unwrap().spec.unwrap();
    assert_eq!(taken.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(
        taken.lease_transitions,
        Some(spec.lease_transitions.unwrap_or(0) + 1)
    );
}
