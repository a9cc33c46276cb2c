//! One host, end to end: `medforge up` and Caddy inside the harness's network
//! namespace, with the harness's real dockerd and zfs-fuse, driven with real
//! HTTP and cookies through Caddy. Writes its part of the Markdown evidence
//! report `target/evidence/one-host-evidence.md` (`tests/e2e_one_host_https.rs`
//! writes the HTTPS part).
//!
//! Every client connection is made inside the namespace (`harness.connect`),
//! never from the host's own network.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use medforge_testkit::{Harness, HttpResponse, Method, eventually};

#[path = "support/one_host.rs"]
mod one_host;
mod support;
use one_host::{
    ADMIN, Cookies, DOMAIN, Ports, Proxy, ProxyLog, start_caddy, start_medforge, websocket_echo,
    write_evidence,
};
use serde_json::{Value, json};
use support::{
    Account, assert_success, free_port, scope_label, wait_until_ready, workload_image_id,
};

/// A client that talks to Caddy inside the namespace. Every request it
/// sends through the proxy is recorded with its status in `log`, and a 502
/// fails the run at once ([`ProxyLog::record`]).
struct Client<'a> {
    harness: &'a Harness,
    caddy: SocketAddr,
    log: ProxyLog,
}

impl Client<'_> {
    async fn call(
        &self,
        method: Method,
        host: &str,
        path: &str,
        cookie: Option<&str>,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> HttpResponse {
        // As a browser sends them: the api's own (host-only) cookie to the
        // api's hosts, the session hosts' cookie to the session hosts.
        let api_host = host == DOMAIN || host.starts_with("api.");
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
        headers.extend_from_slice(extra);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let what = format!("{method} {host}{path}");
        let r = self
            .harness
            .http_with_headers(method, self.caddy, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{host}{path}: {e}"));
        self.log.record(what, r.status);
        r
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> HttpResponse {
        self.call(method, &format!("api.{DOMAIN}"), path, cookie, &[], body)
            .await
    }

    /// `method /api/v2/external/sessions/{id}{rest}` as `cookie`, without a body.
    async fn on_session(&self, method: Method, id: &str, rest: &str, cookie: &str) -> HttpResponse {
        let path = format!("/api/v2/external/sessions/{id}{rest}");
        self.api(method, &path, Some(cookie), None).await
    }

    async fn session(
        &self,
        slug: &str,
        path: &str,
        cookie: Option<&str>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        self.call(
            Method::GET,
            &format!("s-{slug}.external.{DOMAIN}"),
            path,
            cookie,
            extra,
            None,
        )
        .await
    }
}

async fn container_ip_pid(harness: &Harness, name: &str) -> (std::net::IpAddr, i64) {
    let ip = harness.container_ip(name).await.unwrap();
    let pid = harness
        .docker()
        .inspect_container(name, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.pid)
        .unwrap();
    (ip, pid)
}

/// Connects from a container's network namespace: "connected", "refused"
/// (reachable, port closed) or "dropped" (no answer within a second).
async fn probe(netns: &Path, to: SocketAddr) -> &'static str {
    match medforge_testkit::connect_in_netns(netns, to, Duration::from_secs(1)).await {
        Ok(_) => "connected",
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => "dropped",
        Err(e) => panic!("probe {to}: {e}"),
    }
}

/// Probes several ports side by side (a dropped probe waits its second),
/// results in the order of `ports`.
async fn probe_all(netns: &Path, ip: std::net::IpAddr, ports: &[u16]) -> Vec<&'static str> {
    let tasks: Vec<_> = ports
        .iter()
        .map(|&p| {
            let netns = netns.to_path_buf();
            tokio::spawn(async move { probe(&netns, SocketAddr::new(ip, p)).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results
}

/// Runs the real kubectl inside the harness namespace against `medforge
/// up`'s control plane; fails the test with its stderr when kubectl fails.
async fn kubectl(harness: &Harness, dir: &Path, kubeconfig: &Path, args: &[&str]) -> String {
    let home = dir.join("kubectl-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = harness.netns_command("/usr/bin/kubectl");
    cmd.env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args);
    let out = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("kubectl runs (apt-get install kubernetes-client)");
    assert_success("kubectl", args, &out);
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_run_on_one_host() {
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let dir = tempfile::tempdir().unwrap();
    let image = workload_image_id(&harness).await;
    let zfs_root = format!("{}/ws", scope.dataset());
    // The scope's cleanup removes containers that carry its label.
    let scope_label = scope_label(&scope);
    let ports = Ports {
        apiserver: free_port(),
        api: free_port(),
    };
    let caddy_port = free_port();
    let mut report = String::new();
    writeln!(report, "# MedForge one-host evidence run: plain HTTP\n").unwrap();
    writeln!(
        report,
        "- domain: `{DOMAIN}`\n- pack image: `{image}`\n- workspace root: `{zfs_root}`\n"
    )
    .unwrap();

    // `medforge up` on this host; started again with the same flags below.
    let start_up = || {
        start_medforge(
            &harness,
            dir.path(),
            &ports,
            &zfs_root,
            &image,
            &scope_label,
            Cookies::Insecure,
        )
    };
    let mut up = start_up();
    let caddy = start_caddy(
        &harness,
        dir.path(),
        ports.api,
        &Proxy::Plain {
            port: caddy_port,
            admin: free_port(),
        },
    );
    let api_addr: SocketAddr = format!("127.0.0.1:{}", ports.api).parse().unwrap();
    let caddy_addr: SocketAddr = format!("127.0.0.1:{caddy_port}").parse().unwrap();
    wait_until_ready(&harness, api_addr, &up).await;
    if harness
        .wait_for_port(caddy_addr, Duration::from_secs(20))
        .await
        .is_err()
    {
        panic!("caddy never listened:\n{}", caddy.log_tail());
    }
    let c = Client {
        harness: &harness,
        caddy: caddy_addr,
        log: ProxyLog::default(),
    };

    // Two users sign up; an admin logs in.
    let post = |path, body| c.api(Method::POST, path, None, Some(body));
    let alice = Account::new("alice@medforge.test", "correct horse battery")
        .sign_up(post)
        .await;
    let bob = Account::new("bob@medforge.test", "correct horse battery")
        .sign_up(post)
        .await;
    let admin = ADMIN.log_in(post).await;

    // The data directory and the secrets in it are the service user's alone.
    let data = dir.path().join("data");
    for (path, want) in [
        (data.clone(), 0o700),
        (data.join("api/api.sqlite3"), 0o600),
        (data.join("api/api.sqlite3-wal"), 0o600),
        (data.join("apiserver/store.db"), 0o600),
        (data.join("apiserver/kubeconfig"), 0o600),
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, want, "{} is {mode:o}", path.display());
    }
    writeln!(
        report,
        "- data directory 0700, databases and kubeconfig 0600"
    )
    .unwrap();

    // Each creates a session and waits until it is Ready.
    writeln!(report, "## Create sessions\n").unwrap();
    let mut sessions = Vec::new();
    for (who, cookie) in [("alice", &alice), ("bob", &bob)] {
        let r = c
            .api(
                Method::POST,
                "/api/v2/external/sessions?wait=ready",
                Some(cookie),
                Some(json!({"gpus": 1})),
            )
            .await;
        assert_eq!(
            r.status,
            201,
            "create for {who}: {}\n{}",
            r.text(),
            up.log_tail()
        );
        let body: Value = r.json().unwrap();
        let s = body["data"]["session"].clone();
        writeln!(report, "- create {who}: `{}`", s).unwrap();
        sessions.push(s);
    }
    let (a, b) = (sessions[0].clone(), sessions[1].clone());
    let slug_a = a["slug"].as_str().unwrap().to_string();
    let slug_b = b["slug"].as_str().unwrap().to_string();
    let id_a = a["id"].as_str().unwrap().to_string();

    // Routing matrix through Caddy.
    writeln!(report, "\n## Routing authorization matrix\n").unwrap();
    // The api said A is Ready: from here every answer for A's host counts.
    // The poll waits for the first 200 but no longer hides what came before
    // it: each answer is recorded, and a 502 fails the run (Client::record).
    let mut before_200 = Vec::new();
    let ready_a = eventually("session A routable", Duration::from_secs(30), async || {
        let r = c.session(&slug_a, "/", Some(&alice), &[]).await;
        if r.status == 200 {
            return Some(r);
        }
        before_200.push(r.status);
        None
    })
    .await;
    writeln!(
        report,
        "- answers for A after Ready before its first 200: `{before_200:?}`"
    )
    .unwrap();
    assert_eq!(ready_a.text(), id_a, "the workload names its session");
    for (label, cookie, want) in [
        ("unauthenticated", None, 401),
        ("other user", Some(bob.as_str()), 403),
        ("owner", Some(alice.as_str()), 200),
        ("admin", Some(admin.as_str()), 200),
    ] {
        let r = c.session(&slug_a, "/", cookie, &[]).await;
        writeln!(report, "- {label}: `{}`", r.status).unwrap();
        assert_eq!(r.status, want, "{label}: {}", r.text());
    }
    let r = c
        .session(&slug_a, "/api/v2/auth/session-proxy", Some(&admin), &[])
        .await;
    writeln!(report, "- auth path on a session host: `{}`", r.status).unwrap();
    assert_eq!(r.status, 403);
    let b_upstream = c.session(&slug_b, "/", Some(&bob), &[]).await;
    assert_eq!(b_upstream.status, 200);
    // Spoof B's real upstream: if the header mattered, B would answer.
    let (b_ip_early, _) = container_ip_pid(&harness, &format!("mf-session-{slug_b}")).await;
    let spoof = format!("{b_ip_early}:8080");
    let r = c
        .session(
            &slug_a,
            "/",
            Some(&alice),
            &[("X-Upstream", &spoof), ("X-Medforge-Upstream", &spoof)],
        )
        .await;
    writeln!(
        report,
        "- owner with a spoofed X-Upstream: `{}` body `{}`",
        r.status,
        r.text()
    )
    .unwrap();
    assert_eq!(
        (r.status, r.text()),
        (200, id_a.clone()),
        "a spoofed header changed the route"
    );
    let r = c.session("zzzzzzzz", "/", Some(&alice), &[]).await;
    assert_eq!(r.status, 404, "unknown slug");

    // East-west isolation over a range of ports: 8080 (the sessions' port),
    // 22, 80, 443 and 16 random high ports. First the positive case: from the
    // proxy's side (the namespace host) A and B answer on 8080, and every
    // other port in the range is "refused" (reachable, nothing listening),
    // so a "dropped" below is the isolation rules, not a closed port. Then
    // every port from B to A and from A to B is "dropped"; and the proxy's
    // side still reaches 8080 afterwards.
    writeln!(report, "\n## East-west isolation\n").unwrap();
    let (a_ip, a_pid) = container_ip_pid(&harness, &format!("mf-session-{slug_a}")).await;
    let (b_ip, b_pid) = container_ip_pid(&harness, &format!("mf-session-{slug_b}")).await;
    let b_ns = PathBuf::from(format!("/proc/{b_pid}/ns/net"));
    let a_ns = PathBuf::from(format!("/proc/{a_pid}/ns/net"));
    let mut ports_probed = vec![8080u16, 22, 80, 443];
    while ports_probed.len() < 20 {
        let p = 1024 + rand::random::<u16>() % (u16::MAX - 1024);
        if !ports_probed.contains(&p) {
            ports_probed.push(p);
        }
    }
    writeln!(report, "- ports probed: `{ports_probed:?}`").unwrap();
    let proxy_reaches_8080 = async |when: &str, report: &mut String| {
        for (label, ip) in [("A", a_ip), ("B", b_ip)] {
            let r = harness
                .http_get(SocketAddr::new(ip, 8080), "/healthz")
                .await
                .unwrap();
            writeln!(
                report,
                "- proxy side -> {label}:8080 ({when}): `{}`",
                r.status
            )
            .unwrap();
            assert_eq!(r.status, 200, "proxy side -> {label}:8080 ({when})");
        }
    };
    proxy_reaches_8080("before the probes", &mut report).await;
    let host_ns = harness.layout().netns_path.clone();
    for (label, ip) in [("A", a_ip), ("B", b_ip)] {
        let results = probe_all(&host_ns, ip, &ports_probed[1..]).await;
        writeln!(
            report,
            "- proxy side -> {label}, the other {} ports: {:?}",
            results.len(),
            results
        )
        .unwrap();
        for (p, result) in ports_probed[1..].iter().zip(&results) {
            assert_eq!(*result, "refused", "proxy side -> {label}:{p}");
        }
    }
    // No waiting: the agent starts no container before the rules are in place.
    let probe_both_ways = async |when: &str, report: &mut String| {
        for (label, ns, ip) in [("B -> A", &b_ns, a_ip), ("A -> B", &a_ns, b_ip)] {
            let results = probe_all(ns, ip, &ports_probed).await;
            let dropped = results.iter().filter(|r| **r == "dropped").count();
            writeln!(
                report,
                "- {label} ({when}): {dropped} of {} ports dropped",
                results.len()
            )
            .unwrap();
            for (p, result) in ports_probed.iter().zip(&results) {
                assert_eq!(*result, "dropped", "{label}:{p} ({when})");
            }
        }
    };
    probe_both_ways("as they started", &mut report).await;
    proxy_reaches_8080("after the probes", &mut report).await;
    // Flushed by hand, the rules come back by themselves and hold again.
    // (Docker's own inter-container switch is off on this network as a
    // second layer, so the probes alone cannot tell the rules came back:
    // the chain is read.)
    let chain = || {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net={}", host_ns.display()))
            .args(["iptables", "-w", "-S", medforge_operator::isolation::CHAIN])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let drops = |listing: &str| listing.lines().filter(|l| l.ends_with("-j DROP")).count();
    assert!(
        drops(&chain()) >= 1,
        "no DROP rule before the flush:\n{}",
        chain()
    );
    let flushed = std::process::Command::new("nsenter")
        .arg(format!("--net={}", host_ns.display()))
        .args(["iptables", "-w", "-F", medforge_operator::isolation::CHAIN])
        .status()
        .unwrap();
    assert!(flushed.success(), "iptables -F");
    let flushed_at = std::time::Instant::now();
    eventually(
        "isolation rules restored after a flush",
        Duration::from_secs(15),
        async || (drops(&chain()) >= 1).then_some(()),
    )
    .await;
    let restored_in = flushed_at.elapsed();
    writeln!(
        report,
        "- rules flushed by hand: restored within {restored_in:?}"
    )
    .unwrap();
    probe_both_ways("after the flush", &mut report).await;
    // IPv6 is off on the sessions' network: no address to reach them by.
    for name in [
        format!("mf-session-{slug_a}"),
        format!("mf-session-{slug_b}"),
    ] {
        let info = harness
            .docker()
            .inspect_container(&name, None)
            .await
            .unwrap();
        for (net, ep) in info.network_settings.unwrap().networks.unwrap_or_default() {
            let v6 = ep.global_ipv6_address.unwrap_or_default();
            writeln!(report, "- {name} on {net}: IPv6 address `{v6}`").unwrap();
            assert!(v6.is_empty(), "{name} has IPv6 {v6} on {net}");
        }
    }

    // Runtime: GPU assignment and workspace through the proxy.
    writeln!(report, "\n## Runtime checks\n").unwrap();
    let env = c.session(&slug_a, "/env", Some(&alice), &[]).await;
    writeln!(report, "- session A environment: `{}`", env.text()).unwrap();
    let gpu_uuid = a["gpus"][0]["uuid"].as_str().unwrap().to_string();
    assert!(
        env.text().contains(&gpu_uuid),
        "GPU {gpu_uuid} not in {}",
        env.text()
    );
    let put = c
        .call(
            Method::PUT,
            &format!("s-{slug_a}.external.{DOMAIN}"),
            "/workspace/evidence.txt",
            Some(&alice),
            &[],
            Some(json!("written through the proxy")),
        )
        .await;
    assert!(put.is_success(), "PUT: {} {}", put.status, put.text());
    let got = c
        .session(&slug_a, "/workspace/evidence.txt", Some(&alice), &[])
        .await;
    writeln!(
        report,
        "- workspace write/read: `{}` `{}`",
        got.status,
        got.text()
    )
    .unwrap();
    assert!(got.text().contains("written through the proxy"));
    let echo = websocket_echo(
        harness.connect(caddy_addr).await.unwrap(),
        &format!("s-{slug_a}.external.{DOMAIN}"),
        &format!("medforge_session={alice}"),
        "hello over caddy",
    )
    .await;
    c.log.record(
        format!("GET s-{slug_a}.external.{DOMAIN}/ws (websocket)"),
        101,
    );
    writeln!(report, "- websocket through Caddy echoed: `{echo}`").unwrap();
    assert_eq!(echo, "hello over caddy");

    // Stop A: its host answers 404 within 10 s, and a @stop- snapshot exists.
    writeln!(report, "\n## Stop and snapshot\n").unwrap();
    let stopped_at = Instant::now();
    let r = c.on_session(Method::POST, &id_a, "/stop", &alice).await;
    assert_eq!(r.status, 202, "stop: {}", r.text());
    eventually(
        "session A's host to answer 404",
        Duration::from_secs(10),
        async || {
            let r = c.session(&slug_a, "/", Some(&alice), &[]).await;
            (r.status == 404).then_some(())
        },
    )
    .await;
    let delay = stopped_at.elapsed();
    writeln!(report, "- stop → 404 after {} ms", delay.as_millis()).unwrap();
    let snapshots = eventually("a @stop- snapshot", Duration::from_secs(10), async || {
        let out = harness
            .zfs([
                "list", "-H", "-o", "name", "-t", "snapshot", "-r", &zfs_root,
            ])
            .await
            .ok()?;
        out.contains("@stop-").then_some(out)
    })
    .await;
    writeln!(
        report,
        "- snapshots: `{}`",
        snapshots.trim().replace('\n', ", ")
    )
    .unwrap();

    // What an admin sees with kubectl on this host: people and URLs rather
    // than ids, GPUs free at a glance, and the node agent's own Events.
    writeln!(report, "\n## kubectl on the host\n").unwrap();
    let kubeconfig = dir.path().join("data/apiserver/kubeconfig");
    let host_kubectl = async |args: &[&str]| kubectl(&harness, dir.path(), &kubeconfig, args).await;
    // The agent finishes the stop (phase, released GPU) a moment after the
    // host answers 404: wait for kubectl to show it.
    let sessions_table = eventually(
        "session A Stopped in kubectl",
        Duration::from_secs(30),
        async || {
            let t = host_kubectl(&["get", "sessions", "-A", "-o", "wide"]).await;
            t.lines()
                .any(|l| l.contains(&id_a) && l.contains("Stopped"))
                .then_some(t)
        },
    )
    .await;
    writeln!(report, "```\n{}```", sessions_table).unwrap();
    let row_a = sessions_table
        .lines()
        .find(|l| l.contains(&id_a))
        .unwrap_or_else(|| panic!("no row for {id_a}:\n{sessions_table}"));
    for want in [
        "alice@medforge.test",
        slug_a.as_str(),
        "Stopped",
        &format!("http://s-{slug_a}.external.{DOMAIN}/"),
    ] {
        assert!(row_a.contains(want), "{want:?} not in {row_a:?}");
    }
    // Two GPUs; B holds one, A released its own when it stopped.
    let nodes_table = eventually(
        "one GPU free on e2e-node",
        Duration::from_secs(30),
        async || {
            let t = host_kubectl(&["get", "gpunodes"]).await;
            let row: Vec<String> = t
                .lines()
                .find(|l| l.starts_with("e2e-node"))?
                .split_whitespace()
                .map(str::to_string)
                .collect();
            (row[..4] == ["e2e-node", "2", "1", "True"]).then_some(t)
        },
    )
    .await;
    writeln!(report, "```\n{}```", nodes_table).unwrap();
    let described = eventually(
        "the agent's stop Event in describe",
        Duration::from_secs(30),
        async || {
            let out = host_kubectl(&["describe", "session", &id_a, "-n", "medforge"]).await;
            let events = out.split("Events:").nth(1)?.to_string();
            (events.contains("StopRequested") && events.contains("medforge-node-agent"))
                .then_some(out)
        },
    )
    .await;
    let events = described.split("Events:").nth(1).unwrap_or_default();
    writeln!(report, "- describe session A, Events:\n```{events}```").unwrap();

    // Start A again: the same URL serves the same workspace from a new
    // container, with a GPU bound again; Bob still gets 403 there.
    writeln!(report, "\n## Resume\n").unwrap();
    let old_container = harness
        .docker()
        .inspect_container(&format!("mf-session-{slug_a}"), None)
        .await
        .unwrap()
        .id;
    let resumed_at = Instant::now();
    let r = c.on_session(Method::POST, &id_a, "/start", &alice).await;
    assert_eq!(r.status, 202, "start: {}", r.text());
    let back = eventually(
        "session A's host to serve its file again",
        Duration::from_secs(60),
        async || {
            let r = c
                .session(&slug_a, "/workspace/evidence.txt", Some(&alice), &[])
                .await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    writeln!(
        report,
        "- start → the file served at the same URL after {} ms: `{}`",
        resumed_at.elapsed().as_millis(),
        back.text()
    )
    .unwrap();
    assert!(back.text().contains("written through the proxy"));
    let new_container = harness
        .docker()
        .inspect_container(&format!("mf-session-{slug_a}"), None)
        .await
        .unwrap()
        .id;
    assert_ne!(old_container, new_container, "a new container");
    let a_again = c.on_session(Method::GET, &id_a, "", &alice).await;
    let a_again: Value = a_again.json::<Value>().unwrap()["data"].clone();
    assert_eq!(
        a_again["gpus"].as_array().map(Vec::len),
        Some(1),
        "{a_again}"
    );
    assert_eq!(a_again["url"], a["url"], "the same URL");
    let r = c.session(&slug_a, "/", Some(&bob), &[]).await;
    assert_eq!(r.status, 403, "another user on the resumed session");
    writeln!(
        report,
        "- new container, GPU `{}` bound again, other user: `{}`",
        a_again["gpus"][0]["uuid"], r.status
    )
    .unwrap();

    // A manual snapshot of the running session through the api; Alice
    // restores it into a new session, Bob cannot see or restore it.
    writeln!(report, "\n## Snapshot and restore\n").unwrap();
    let r = c
        .on_session(Method::POST, &id_a, "/snapshots", &alice)
        .await;
    assert_eq!(r.status, 202, "manual snapshot: {}", r.text());
    let snapshot_id = r.json::<Value>().unwrap()["data"]["snapshot"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let snapshot_path = format!("/api/v2/snapshots/{snapshot_id}");
    let until = Instant::now() + Duration::from_secs(30);
    let ready = loop {
        let r = c.api(Method::GET, &snapshot_path, Some(&alice), None).await;
        let v = r.json::<Value>().unwrap()["data"].clone();
        if v["state"] == "ready" {
            break v;
        }
        assert!(
            Instant::now() < until,
            "the manual snapshot is not ready: {v}\n{}",
            up.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    writeln!(report, "- manual snapshot of A: `{ready}`").unwrap();
    let r = c.api(Method::GET, &snapshot_path, Some(&bob), None).await;
    assert_eq!(r.status, 404, "another user's snapshot: {}", r.text());
    let r = c.on_session(Method::POST, &id_a, "/stop", &alice).await;
    assert_eq!(r.status, 202, "stop again: {}", r.text());
    eventually(
        "session A stopped again",
        Duration::from_secs(30),
        async || {
            let r = c.on_session(Method::GET, &id_a, "", &alice).await;
            (r.json::<Value>().ok()?["data"]["phase"] == "stopped").then_some(())
        },
    )
    .await;
    let r = c
        .api(
            Method::POST,
            "/api/v2/external/sessions",
            Some(&bob),
            Some(json!({"gpus": 0, "restore_from": snapshot_id})),
        )
        .await;
    assert_eq!(
        r.status,
        404,
        "Bob restoring Alice's snapshot: {}",
        r.text()
    );
    let r = c
        .api(
            Method::POST,
            "/api/v2/external/sessions?wait=ready",
            Some(&alice),
            Some(json!({"gpus": 1, "restore_from": snapshot_id})),
        )
        .await;
    assert_eq!(r.status, 201, "restore: {}\n{}", r.text(), up.log_tail());
    let restored = r.json::<Value>().unwrap()["data"]["session"].clone();
    let slug_r = restored["slug"].as_str().unwrap().to_string();
    let id_r = restored["id"].as_str().unwrap().to_string();
    assert_eq!(
        restored["restored_from"],
        snapshot_id.as_str(),
        "{restored}"
    );
    let file = eventually(
        "the restored session serving A's file",
        Duration::from_secs(30),
        async || {
            let r = c
                .session(&slug_r, "/workspace/evidence.txt", Some(&alice), &[])
                .await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert!(file.text().contains("written through the proxy"));
    let r = c.session(&slug_r, "/", Some(&bob), &[]).await;
    assert_eq!(r.status, 403, "another user on the restored session");
    writeln!(
        report,
        "- restored into `{id_r}` at its own URL: `{}`; other user: `{}`",
        file.text(),
        r.status
    )
    .unwrap();
    // Stopped again, so that the rest of the run has the GPUs it had.
    let r = c.on_session(Method::POST, &id_r, "/stop", &alice).await;
    assert_eq!(r.status, 202, "stop the restored session: {}", r.text());
    eventually(
        "the restored session stopped",
        Duration::from_secs(30),
        async || {
            let r = c.on_session(Method::GET, &id_r, "", &alice).await;
            (r.json::<Value>().ok()?["data"]["phase"] == "stopped").then_some(())
        },
    )
    .await;

    // Restart medforge up with B running: B stays reachable except while the
    // api itself is down, and its container is not restarted.
    writeln!(
        report,
        "\n## Restart of medforge up under a running session\n"
    )
    .unwrap();
    let b_container = format!("mf-session-{slug_b}");
    let started_at = async || {
        harness
            .docker()
            .inspect_container(&b_container, None)
            .await
            .unwrap()
            .state
            .and_then(|s| s.started_at)
    };
    let started_before = started_at().await;
    // SIGTERM drains: the node agent and the scheduler finish what they have
    // in flight and say so, the process exits 0 within 10 s, and B's
    // container is left running (checked below).
    let log_before = up.log().len();
    let status = up
        .terminate_within(Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "medforge up did not exit within 10 s of SIGTERM:\n{}",
                up.log_tail()
            )
        });
    assert!(
        status.success(),
        "medforge up exited with {status}:\n{}",
        up.log_tail()
    );
    let shutdown_log = up.log()[log_before..].to_string();
    for want in [
        "SIGTERM: shutting down",
        "node agent stopping: finishing the steps in flight",
        "node agent stopped",
        "scheduler stopping: finishing the binding writes in flight",
        "scheduler stopped",
        "lease released",
        "part=\"node agent\"",
        "part=\"scheduler\"",
    ] {
        assert!(
            shutdown_log.contains(want),
            "the shutdown log lacks {want:?}:\n{shutdown_log}"
        );
    }
    writeln!(
        report,
        "- SIGTERM: exited {status}; the agent and the scheduler drained"
    )
    .unwrap();
    let mut during = Vec::new();
    let mut up = start_up();
    // Caddy holds requests while the api restarts (lb_try_duration), so
    // these are answered once it is back.
    let restarted = Instant::now();
    for _ in 0..3 {
        let r = c.session(&slug_b, "/", Some(&bob), &[]).await;
        during.push(r.status);
    }
    writeln!(
        report,
        "- first answers came {} ms after the restart began",
        restarted.elapsed().as_millis()
    )
    .unwrap();
    assert!(
        during.iter().all(|s| *s == 200),
        "B not reachable across the restart: {during:?}\n{}",
        up.log_tail()
    );
    let started_after = started_at().await;
    writeln!(
        report,
        "- statuses seen for B during the restart: `{during:?}`"
    )
    .unwrap();
    writeln!(
        report,
        "- B's container started at `{started_before:?}` before and `{started_after:?}` after"
    )
    .unwrap();
    assert_eq!(
        started_before, started_after,
        "session B's container was restarted"
    );

    // An admin disables Bob: his login ends at once, his session's host
    // answers 404 at once, and the node agent stops the session.
    writeln!(report, "\n## A disabled account\n").unwrap();
    let bob_id = c
        .api(Method::GET, "/api/v2/me", Some(&bob), None)
        .await
        .json::<Value>()
        .unwrap()["data"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = c
        .api(
            Method::PATCH,
            &format!("/api/v2/admin/users/{bob_id}"),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let me = c.api(Method::GET, "/api/v2/me", Some(&bob), None).await;
    let host_b = c.session(&slug_b, "/", Some(&bob), &[]).await;
    writeln!(
        report,
        "- disabled Bob: his /me `{}`, his session's host `{}`",
        me.status, host_b.status
    )
    .unwrap();
    assert_eq!(me.status, 401, "a disabled account's login ends");
    assert_eq!(host_b.status, 401, "nor does it open its session");
    let id_b = b["id"].as_str().unwrap().to_string();
    eventually(
        "the disabled account's session to be Stopped by the node agent",
        Duration::from_secs(30),
        async || {
            let phase = host_kubectl(&[
                "get",
                "session",
                &id_b,
                "-n",
                "medforge",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .await;
            (phase.trim() == "Stopped").then_some(())
        },
    )
    .await;
    let running = harness
        .docker()
        .inspect_container(&b_container, None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.running);
    assert_eq!(running, Some(false), "its container is stopped");
    writeln!(report, "- Bob's session: Stopped, container not running").unwrap();

    // Clean up: delete both sessions as admin and wait until they are gone
    // (the node agent's finalizer removes their containers), then stop
    // everything we started.
    for s in [&a, &b] {
        let id = s["id"].as_str().unwrap();
        let r = c.on_session(Method::DELETE, id, "", &admin).await;
        writeln!(report, "\n- delete {id} as admin: `{}`", r.status).unwrap();
        assert!(r.is_success(), "delete {id}: {}", r.text());
    }
    // The api forgets a session as soon as its deletion starts; the Session
    // itself stays until the node agent's finalizer is done.
    for s in [&a, &b] {
        let id = s["id"].as_str().unwrap().to_string();
        let r = c.on_session(Method::GET, &id, "", &admin).await;
        assert_eq!(r.status, 404, "a deleted session is gone: {}", r.text());
        eventually(
            "the deleted Session to be gone from the control plane",
            Duration::from_secs(30),
            async || {
                let names =
                    host_kubectl(&["get", "sessions", "-n", "medforge", "-o", "name"]).await;
                (!names.contains(&id)).then_some(())
            },
        )
        .await;
    }
    // ProxyLog::record failed the run at any 502; this says it in the report.
    report.push_str(&c.log.summary());
    up.stop(nix::sys::signal::Signal::SIGTERM);
    drop(caddy);
    // Its parts ran as the chart's ServiceAccounts, under the chart's RBAC.
    report.push_str("\n## Identities (the control plane's audit log)\n\n");
    report.push_str(&one_host::assert_parts_ran_as_their_service_accounts(
        dir.path(),
    ));

    let file = write_evidence("plain HTTP", &report);
    println!("evidence report: {}\n{report}", file.display());
    scope.cleanup().await.unwrap();
}
