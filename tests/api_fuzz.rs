//! The api's contract, machine-checked: `medforge up` (the embedded control
//! plane, the scheduler and the node agent, with the harness's dockerd and
//! zfs-fuse) inside the harness's network namespace, the OpenAPI document it
//! serves checked with openapi-spec-validator, and Schemathesis driven by that
//! document against it, once as an unprivileged user and once as an admin,
//! with all of its checks. Any failure, or a "schema validation mismatch"
//! warning, fails the test.
//!
//! Left out of the fuzzing: `POST /api/v2/auth/logout` (it would revoke the
//! very token the run authenticates with) and `GET /api/v2/events` (an endless
//! event stream). Both are in the document and in the api's own tests.
//!
//! Every request goes to the api on loopback inside the namespace. The
//! reports (Schemathesis's log, JUnit and NDJSON per identity, the document,
//! a summary) are kept under `target/api-fuzz/`. `MEDFORGE_FUZZ_SECONDS` sets
//! each identity's time budget (default 60), `MEDFORGE_FUZZ_SEED` replays a
//! run (the seed is in the summary).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use medforge_testkit::{Harness, HttpResponse, Method};

mod support;
use serde_json::Value;
use support::{Account, Proc, free_port, scope_label, wait_until_ready, workload_image_id};

const DOMAIN: &str = "medforge.test";
const ADMIN: Account = Account::new("fuzz-admin@medforge.test", "fuzz-admin-password");
const USER: Account = Account::new("fuzz-user@medforge.test", "fuzz-user-password");

/// Where `scripts/install-deps.sh` puts the fuzzer.
fn fuzzer_venv() -> PathBuf {
    let venv = std::env::var_os("MEDFORGE_FUZZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/medforge/tools/fuzz"));
    for tool in ["st", "openapi-spec-validator"] {
        assert!(
            venv.join("bin").join(tool).exists(),
            "{tool} is missing from {}: install the api fuzzer with `bash scripts/install-deps.sh`",
            venv.display()
        );
    }
    venv
}

async fn call(
    harness: &Harness,
    api: SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = vec![("Host", "api.medforge.test")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    if body.is_some() {
        headers.push(("Content-Type", "application/json"));
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    harness
        .http_with_headers(method, api, path, &headers, bytes)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// What one Schemathesis run did.
struct Run {
    role: &'static str,
    ok: bool,
    elapsed: Duration,
    requests: usize,
    summary: String,
    log: PathBuf,
}

/// One identity's Schemathesis run, inside the namespace.
struct Fuzz<'a> {
    harness: &'a Harness,
    venv: &'a Path,
    out: &'a Path,
    api: SocketAddr,
    seconds: u64,
    seed: u64,
}

fn schemathesis(f: &Fuzz<'_>, role: &'static str, token: &str) -> Run {
    let Fuzz {
        harness,
        venv,
        out,
        api,
        seconds,
        seed,
    } = *f;
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = out.join(role);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("schemathesis.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut cmd: Command = harness.netns_command(venv.join("bin/st"));
    cmd.arg("--config-file")
        .arg(repo.join("tests/fuzz/schemathesis.toml"))
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://{api}/api/v2/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--exclude-operation-id", "logout"])
        .args(["--exclude-operation-id", "events"])
        .args(["--max-time", &seconds.to_string()])
        .args(["--seed", &seed.to_string()])
        // One worker: CPython before 3.11.8 can fail `ast.parse` in two
        // threads at once ("AST constructor recursion depth mismatch"), which
        // Hypothesis calls while generating.
        .args(["--workers", "1"])
        .args(["--request-timeout", "30"])
        .args(["--report", "junit,ndjson"])
        .arg("--report-dir")
        .arg(&dir)
        // Hypothesis keeps its example database in the working directory.
        .current_dir(&dir)
        .env("PYTHONPATH", repo.join("tests/fuzz"))
        .env("SCHEMATHESIS_HOOKS", "medforge_hooks")
        .env("MEDFORGE_FUZZ_ROLE", role)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let started = Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("starting Schemathesis: {e}"));
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    // The NDJSON report records each test case's request and response.
    let requests = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("\"response\":{")
                .count()
        })
        .sum();
    let summary = text
        .lines()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Run {
        role,
        ok: status.success(),
        elapsed,
        requests,
        summary,
        log,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_medforge_up() {
    let venv = fuzzer_venv();
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let dir = tempfile::tempdir().unwrap();
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/api-fuzz");
    std::fs::create_dir_all(&out).unwrap();
    let image = workload_image_id(&harness).await;
    let scope_label = scope_label(&scope);
    let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let apiserver = format!("127.0.0.1:{}", free_port());
    let log = dir.path().join("medforge-up.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut cmd = harness.netns_command(env!("CARGO_BIN_EXE_medforge"));
    cmd.args(["up", "--container-label", &scope_label])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--apiserver-listen", &apiserver])
        .args(["--api-listen", &api.to_string()])
        .args([
            "--domain",
            DOMAIN,
            "--insecure-cookies",
            "--signup-mode",
            "open",
        ])
        .args(["--node-name", "fuzz-node", "--gpus", "static:2"])
        .arg("--docker-socket")
        .arg(&harness.layout().docker_socket)
        .args(["--zfs-root", &format!("{}/ws", scope.dataset())])
        .arg("--zfs-binary")
        .arg(harness.zfs_binary())
        .args(["--default-pack-image", &image])
        .args(["--session-ready-timeout", "10s"])
        // The operator's maxima are not in the document (a schema cannot
        // bound a quantity string's value), so a value the document admits
        // but the policy refuses would read as a finding: this run's
        // maxima are wider than anything the document admits. The api's
        // own tests hold creates to the policy
        // (`sessions::…::each_maximum_is_enforced_and_named`).
        .args([
            "--session-maximum",
            "cpu=10000,memory=8Ei,shm=8Ei,workspace-quota=8Ei,pids=1000000",
            "--session-maximum",
            "idle-timeout=99999999h,max-lifetime=99999999h",
        ])
        .env("MEDFORGE_ADMIN_EMAIL", ADMIN.email)
        .env("MEDFORGE_ADMIN_PASSWORD", ADMIN.password)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file);
    let mut up = Proc {
        name: "medforge-up",
        child: cmd.spawn().expect("starting medforge up"),
        log,
    };
    wait_until_ready(&harness, api, &up).await;

    // The two identities.
    let post = |path, body| call(&harness, api, Method::POST, path, None, Some(body));
    let user = USER.sign_up(post).await;
    let admin = ADMIN.log_in(post).await;

    // The document is valid OpenAPI 3.1.
    let doc = call(
        &harness,
        api,
        Method::GET,
        "/api/v2/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(doc.status, 200);
    let doc_path = out.join("openapi.json");
    std::fs::write(&doc_path, &doc.body).unwrap();
    let validated = Command::new(venv.join("bin/openapi-spec-validator"))
        .arg(&doc_path)
        .output()
        .expect("running openapi-spec-validator");
    assert!(
        validated.status.success(),
        "the served document is not valid OpenAPI 3.1:\n{}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );
    let doc: Value = serde_json::from_slice(&doc.body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    // Fuzz, as each identity.
    let seconds: u64 = medforge_testkit::env_or("MEDFORGE_FUZZ_SECONDS", 60);
    let seed: u64 = medforge_testkit::env_or("MEDFORGE_FUZZ_SEED", rand::random::<u32>() as u64);
    let fuzz = Fuzz {
        harness: &harness,
        venv: &venv,
        out: &out,
        api,
        seconds,
        seed,
    };
    let runs: Vec<Run> = [("user", &user), ("admin", &admin)]
        .into_iter()
        .map(|(role, token)| schemathesis(&fuzz, role, token))
        .collect();

    let mut report = String::new();
    writeln!(report, "# Api fuzz run\n").unwrap();
    writeln!(
        report,
        "- Schemathesis: `{}`, seed {seed}, {seconds} s per identity\n- document: `{}` (openapi-spec-validator: valid)\n",
        String::from_utf8_lossy(
            &Command::new(venv.join("bin/st"))
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim(),
        doc_path.display()
    )
    .unwrap();
    for run in &runs {
        writeln!(
            report,
            "## As {}: {}, {} requests in {:.0} s\n\nLog: `{}`\n\n```\n{}\n```\n",
            run.role,
            if run.ok { "passed" } else { "FAILED" },
            run.requests,
            run.elapsed.as_secs_f64(),
            run.log.display(),
            run.summary
        )
        .unwrap();
    }
    std::fs::write(out.join("summary.md"), &report).unwrap();
    println!("{report}");

    // Clean up what the runs made: delete every session and wait until the
    // node agent has let them go, then stop medforge up.
    let mut left = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = call(
            &harness,
            api,
            Method::GET,
            &format!("/api/v2/admin/sessions?limit=200&cursor={cursor}"),
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body: Value = r.json().unwrap();
        for s in body["data"].as_array().unwrap() {
            left.push((
                s["id"].as_str().unwrap().to_string(),
                s["exposure"].as_str().unwrap().to_string(),
            ));
        }
        match body["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    for (id, exposure) in &left {
        let r = call(
            &harness,
            api,
            Method::DELETE,
            &format!("/api/v2/{exposure}/sessions/{id}"),
            Some(&admin),
            None,
        )
        .await;
        assert!(
            r.status == 204 || r.status == 404,
            "delete {id}: {}",
            r.text()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let kubeconfig = dir.path().join("data/apiserver/kubeconfig");
    loop {
        let out = harness
            .netns_command("/usr/bin/kubectl")
            .env_clear()
            .env("HOME", dir.path())
            .env("PATH", "/usr/bin:/bin")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "sessions", "-A", "-o", "name"])
            .output()
            .expect("kubectl runs (apt-get install kubernetes-client)");
        if out.status.success() && out.stdout.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions left after deleting them all: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    up.stop(nix::sys::signal::Signal::SIGTERM);
    scope.cleanup().await.unwrap();

    for run in &runs {
        assert!(
            run.ok,
            "Schemathesis found problems as {} (seed {seed}; log {}):\n{}",
            run.role,
            run.log.display(),
            run.summary
        );
        assert!(
            run.requests > 100,
            "as {}: only {} requests were made",
            run.role,
            run.requests
        );
    }
}
