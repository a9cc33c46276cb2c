//! Every scenario again on PostgreSQL: one throwaway cluster (initdb + pg_ctl, as
//! the `postgres` user when run as root) for the whole suite, a database of its
//! own per app, stopped by PID through `pg_ctl stop` at the end.
//!
//! One test runs them all, because nextest runs each test in a process of its own
//! and a cluster per test would cost seconds each.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::common::{PgCluster, Scenario, TestEnv};

fn all_scenarios() -> Vec<(&'static str, Scenario)> {
    [
        crate::accounts::SCENARIOS,
        crate::auth::SCENARIOS,
        crate::sessions::SCENARIOS,
        crate::snapshots::SCENARIOS,
        crate::proxy::SCENARIOS,
        crate::events::SCENARIOS,
        crate::admin::SCENARIOS,
        crate::packs::SCENARIOS,
        crate::contract::SCENARIOS,
        crate::validation::SCENARIOS,
    ]
    .concat()
}

#[test]
fn all_scenarios_on_postgres() {
    // A missing server fails the suite: it never passes without running.
    let cluster = match PgCluster::start() {
        Ok(cluster) => cluster,
        Err(why) if why.contains("not found") => panic!(
            "the PostgreSQL suite needs the server binaries: {why}; install them with `apt-get install postgresql`"
        ),
        Err(why) => panic!("could not start PostgreSQL: {why}"),
    };
    println!(
        "PostgreSQL test cluster on 127.0.0.1:{} (pid {})",
        cluster.port, cluster.pid
    );
    let env = TestEnv::Postgres {
        base_url: cluster.base_url(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let failures = rt.block_on(async {
        let limit = Arc::new(Semaphore::new(4));
        let mut running = Vec::new();
        for (name, scenario) in all_scenarios() {
            let permit = limit.clone().acquire_owned().await.unwrap();
            let env = env.clone();
            let started = Instant::now();
            let handle = tokio::spawn(async move {
                scenario(env).await;
                drop(permit);
                started.elapsed()
            });
            running.push((name, handle));
        }
        let mut failures = Vec::new();
        for (name, handle) in running {
            match handle.await {
                Ok(took) => println!("postgres: {name} ... ok ({} ms)", took.as_millis()),
                Err(err) => {
                    println!("postgres: {name} ... FAILED: {err}");
                    failures.push(name);
                }
            }
        }
        failures
    });
    drop(rt);
    drop(cluster);
    assert!(failures.is_empty(), "failed on PostgreSQL: {failures:?}");
}
