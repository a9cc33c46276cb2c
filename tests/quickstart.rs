//! The README's first command, minus the package installs and the build: on
//! a host where Docker's daemon is not running and no ZFS pool is
//! configured, `medforge up --quickstart` starts dockerd, creates a
//! file-backed trial pool, builds the default Pack, starts Caddy with its
//! internal CA, and a person then signs in as the first admin and uses a
//! CPU-only session over HTTPS. A second run reuses everything; `medforge
//! down --purge` stops what the quickstart started, by PID.
//!
//! The host is a network namespace this test creates (loopback only, no
//! route out), so its dockerd, bridge and iptables rules stay inside it;
//! zfs-fuse is the harness's (one per machine). Every client runs inside
//! the namespace (`nsenter`), and curl is the client a person would use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use medforge_testkit::Harness;
#[path = "support/browser_jar.rs"]
mod browser_jar;
mod support;
use browser_jar::BrowserJar;
use serde_json::Value;

const HTTPS_PORT: u16 = 18443;
const DOMAIN: &str = "medforge.localhost";

/// A network namespace with only `lo`, removed when dropped.
struct Netns {
    name: String,
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        Netns::new_named("mfqs")
    }

    fn new_named(prefix: &str) -> Netns {
        let name = format!("{prefix}-{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("ip")
                .args(args)
                .output()
                .expect("ip (iproute2) runs");
            support::assert_success("ip", args, &out);
        };
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["netns", "add", &name]);
        run(&["-n", &name, "link", "set", "lo", "up"]);
        Netns {
            path: PathBuf::from(format!("/var/run/netns/{name}")),
            name,
        }
    }

    /// `program args…` inside the namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path.display())).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// One run of `medforge up --quickstart`, stopped by PID when dropped.
struct Up {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Up {
    fn start(ns: &Netns, data: &Path, workload: &Path, run: u32) -> Up {
        let out = data.with_file_name(format!("up{run}.out"));
        let err = data.with_file_name(format!("up{run}.err"));
        let child = ns
            .command(env!("CARGO_BIN_EXE_medforge"))
            .args(["up", "--quickstart", "--data-dir"])
            .arg(data)
            .arg("--docker-socket")
            .arg(data.with_file_name("docker.sock"))
            .args([
                "--https-port",
                &HTTPS_PORT.to_string(),
                "--http-port",
                "18080",
                "--api-listen",
                "127.0.0.1:18000",
                "--apiserver-listen",
                "127.0.0.1:16443",
                "--node-name",
                "qs-node",
                "--trial-pool-size",
                "256Mi",
                "--domain",
                DOMAIN,
            ])
            .arg("--workload-binary")
            .arg(workload)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("medforge up starts");
        Up { child, out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits for the closing summary; fails with the log when it never comes.
    fn wait_ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let out = self.stdout();
            if out.contains("MedForge is up (quickstart)") && out.contains("  Stop ") {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "medforge up --quickstart exited ({status}):\n{out}\n{}",
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no summary within 180 s:\n{out}\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "medforge up did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.terminate();
        }
    }
}

/// `curl` inside the namespace, trusting Caddy's internal CA; returns the
/// status and the body.
fn curl(
    ns: &Netns,
    ca: &Path,
    jar: &Path,
    method: &str,
    url: &str,
    body: Option<&str>,
) -> (u16, String) {
    let mut c = ns.command("curl");
    c.args(["-sS", "-X", method, "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .arg("-b")
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(["-H", "content-type: application/json"]);
    if let Some(b) = body {
        c.args(["-d", b]);
    }
    let out = c
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

/// One request with curl and no cookie jar of its own: the status, the
/// `Set-Cookie` lines and the body.
fn curl_raw(
    ns: &Netns,
    ca: &Path,
    method: &str,
    url: &str,
    headers: &[String],
    body: Option<&str>,
) -> (u16, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (head, out) = (dir.path().join("head"), dir.path().join("body"));
    let mut c = ns.command("curl");
    c.args(["-sS", "-X", method, "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&out)
        .args(["-H", "content-type: application/json"]);
    for h in headers {
        c.args(["-H", h]);
    }
    if let Some(b) = body {
        c.args(["-d", b]);
    }
    let res = c.arg(url).output().expect("curl runs");
    assert!(res.status.success(), "curl {method} {url}: {res:?}");
    let code = String::from_utf8_lossy(&res.stdout).trim().parse().unwrap();
    let set_cookies = std::fs::read_to_string(&head)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("set-cookie")
                .then(|| v.trim().to_string())
        })
        .collect();
    (
        code,
        set_cookies,
        std::fs::read_to_string(&out).unwrap_or_default(),
    )
}

/// A session that plants cookies cannot change whom the browser's next api
/// request is authenticated as: a browser-like jar holds the admin's login,
/// a session of the admin's own answers with `Set-Cookie` lines carrying
/// another user's token for the whole domain (every variant below), and
/// the next `GET /api/v2/me` is still the admin's.
fn planted_cookies_do_not_change_the_api_login(
    ns: &Netns,
    ca: &Path,
    api: &str,
    session_host: &str,
    admin_login: &str,
) {
    let api_host = DOMAIN;
    let session_name = session_host
        .trim_start_matches("https://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    // The admin's browser: its login.
    let mut jar = BrowserJar::new();
    let (code, set, body) = curl_raw(
        ns,
        ca,
        "POST",
        &format!("{api}/api/v2/auth/login"),
        &[],
        Some(admin_login),
    );
    assert_eq!(code, 200, "{body}");
    for line in &set {
        jar.store(api_host, "/api/v2/auth/login", true, line)
            .unwrap();
    }
    let cookie_for = |jar: &BrowserJar, host: &str, path: &str| {
        jar.header(host, path, true)
            .map(|c| vec![format!("cookie: {c}")])
            .unwrap_or_default()
    };
    let me = |jar: &BrowserJar| {
        let (code, _, body) = curl_raw(
            ns,
            ca,
            "GET",
            &format!("{api}/api/v2/me"),
            &cookie_for(jar, api_host, "/api/v2/me"),
            None,
        );
        (code, body)
    };
    let (code, body) = me(&jar);
    assert_eq!(code, 200, "{body}");
    let admin_id = serde_json::from_str::<Value>(&body).unwrap()["data"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Mallory: an account of her own, and its token.
    let admin_cookies = cookie_for(&jar, api_host, "/api/v2/admin/users");
    let (code, _, body) = curl_raw(
        ns,
        ca,
        "POST",
        &format!("{api}/api/v2/admin/users"),
        &admin_cookies,
        Some(r#"{"email":"mallory@example.org","password":"mallory's password"}"#),
    );
    assert_eq!(code, 201, "{body}");
    let (code, set, _) = curl_raw(
        ns,
        ca,
        "POST",
        &format!("{api}/api/v2/auth/login"),
        &[],
        Some(r#"{"email":"mallory@example.org","password":"mallory's password"}"#),
    );
    assert_eq!(code, 200);
    let token = set
        .iter()
        .find_map(|l| l.split(';').next()?.strip_prefix("__Host-medforge="))
        .expect("mallory's token")
        .to_string();
    let d = DOMAIN;
    let variants: Vec<Vec<String>> = vec![
        vec![format!(
            "medforge_session={token}; Domain={d}; Path=/api/v2"
        )],
        vec![format!(
            "__Host-medforge={token}; Domain={d}; Path=/api/v2; Secure"
        )],
        vec![format!(
            "__Host-medforge={token}; Domain=.{d}; Path=/; Secure; HttpOnly"
        )],
        vec![format!(
            "__host-medforge={token}; domain={d}; path=/api/v2; secure"
        )],
        vec![format!(
            "__HOST-MEDFORGE={token}; DOMAIN={d}; PATH=/api; SECURE"
        )],
        vec![format!("__Host-medforge={token}; Path=/; Secure")],
        vec![format!(
            "=__Host-medforge={token}; Domain={d}; Path=/api/v2; Secure"
        )],
        vec![format!("medforge_api={token}; Domain={d}; Path=/api/v2")],
        vec![
            format!("medforge_session={token}; Domain={d}; Path=/api/v2/me"),
            format!("__Host-medforge={token}; Domain={d}; Path=/api/v2/me; Secure"),
            format!("medforge_api={token}; Domain={d}; Path=/"),
        ],
    ];
    for planted in &variants {
        let mut headers = cookie_for(&jar, &session_name, "/set-cookie");
        headers.extend(planted.iter().map(|p| format!("x-set-cookie: {p}")));
        let (code, set, body) = curl_raw(
            ns,
            ca,
            "GET",
            &format!("{session_host}/set-cookie"),
            &headers,
            None,
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            &set, planted,
            "the session's Set-Cookie lines reach the browser as sent"
        );
        for line in &set {
            // The jar refuses what a browser refuses (the `__Host-` ones).
            let _ = jar.store(&session_name, "/set-cookie", true, line);
        }
        let (code, body) = me(&jar);
        assert_eq!(code, 200, "{planted:?}: {body}");
        let who = serde_json::from_str::<Value>(&body).unwrap()["data"]["user"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(who, admin_id, "{planted:?} changed the api's login");
    }
}

/// Runs `medforge down --purge` when the test ends early, so that a failed
/// run leaves no dockerd, Caddy or trial pool behind.
struct Cleanup<'a> {
    ns: &'a Netns,
    data: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.data.join("quickstart").exists() {
            let _ = self
                .ns
                .command(env!("CARGO_BIN_EXE_medforge"))
                .args(["down", "--purge", "--data-dir"])
                .arg(&self.data)
                .output();
        }
    }
}

fn live(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn pid_in(file: &Path) -> i32 {
    std::fs::read_to_string(file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

fn zpools() -> String {
    String::from_utf8(
        Command::new("zpool")
            .args(["list", "-H", "-o", "name"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
}

/// `medforge down --purge` for the quickstart whose data directory is `data`.
fn down_purge(ns: &Netns, data: &Path) -> std::process::Output {
    ns.command(env!("CARGO_BIN_EXE_medforge"))
        .args(["down", "--purge", "--data-dir"])
        .arg(data)
        .output()
        .unwrap()
}

/// The static workload binary the quickstart packs into its image.
async fn static_workload() -> PathBuf {
    tokio::task::spawn_blocking(medforge_testkit::build_workload_binary)
        .await
        .unwrap()
        .expect("the static workload builds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_from_a_bare_host_then_again_then_down() {
    // zfs-fuse is machine-wide: the harness's (started by `mf-harness up`).
    let _harness = Harness::get().await.expect("the test harness is up");
    let workload = static_workload().await;
    let ns = Netns::new();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let qs = data.join("quickstart");
    let ca = qs.join("caddy/data/caddy/pki/authorities/local/root.crt");
    let jar = tmp.path().join("cookies");
    let socket = tmp.path().join("docker.sock");
    assert!(!socket.exists(), "no Docker daemon answers here yet");
    let pools_before = zpools();
    let _cleanup = Cleanup {
        ns: &ns,
        data: data.clone(),
    };

    // First run: a bare host.
    let mut up = Up::start(&ns, &data, &workload, 1);
    let summary = up.wait_ready();
    eprintln!("{summary}");
    for want in [
        "started dockerd",
        "created the TRIAL pool",
        "built from",
        "started Caddy",
        "CPU-only sessions (gpus: 0) are allowed",
        &format!("https://{DOMAIN}:{HTTPS_PORT}/"),
        &format!("password in {}", data.join("admin-password").display()),
        "kubectl --kubeconfig",
    ] {
        assert!(
            summary.contains(want),
            "the summary lacks {want:?}:\n{summary}"
        );
    }
    let stderr = up.stderr();
    assert!(stderr.contains("TRIAL STORAGE"), "{stderr}");
    let password_file = data.join("admin-password");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&password_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the admin password file is private");
    }
    let password = std::fs::read_to_string(&password_file).unwrap();
    let password = password.trim();
    assert!(!stderr.contains(password), "the password is never logged");
    let trial: String = zpools()
        .lines()
        .find(|p| p.starts_with("mftrial") && !pools_before.contains(p))
        .expect("a new trial pool")
        .to_string();

    // A person: sign in as the first admin, over HTTPS through Caddy.
    let api = format!("https://{DOMAIN}:{HTTPS_PORT}");
    let login = format!(r#"{{"email":"admin@{DOMAIN}","password":"{password}"}}"#);
    let (code, body) = curl(
        &ns,
        &ca,
        &jar,
        "POST",
        &format!("{api}/api/v2/auth/login"),
        Some(&login),
    );
    assert_eq!(code, 200, "{body}");
    let cookies = std::fs::read_to_string(&jar).unwrap();
    assert!(
        cookies.lines().any(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 7 && f[5] == "medforge_session" && f[3] == "TRUE"
        }),
        "a Secure login cookie over HTTPS:\n{cookies}"
    );
    // The api's own cookie: host-only (curl's second field FALSE), Secure.
    assert!(
        cookies.lines().any(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 7 && f[5] == "__Host-medforge" && f[1] == "FALSE" && f[3] == "TRUE"
        }),
        "a host-only __Host- api cookie:\n{cookies}"
    );
    // A CPU-only session, ready.
    let (code, body) = curl(
        &ns,
        &ca,
        &jar,
        "POST",
        &format!("{api}/api/v2/external/sessions?wait=ready"),
        Some(r#"{"gpus":0}"#),
    );
    assert_eq!(code, 201, "{body}\n{}", up.stderr());
    let v: Value = serde_json::from_str(&body).unwrap();
    let session = &v["data"]["session"];
    assert_eq!(session["gpu_count"], 0);
    assert_eq!(session["ready"], true, "{body}");
    let slug = session["slug"].as_str().unwrap();
    let id = session["id"].as_str().unwrap();
    let host = format!("https://s-{slug}.external.{DOMAIN}:{HTTPS_PORT}");
    let (code, body) = curl(&ns, &ca, &jar, "GET", &format!("{host}/"), None);
    assert_eq!(
        (code, body.as_str()),
        (200, id),
        "the workload names its session"
    );
    let empty = tmp.path().join("no-cookies");
    let (code, _) = curl(&ns, &ca, &empty, "GET", &format!("{host}/"), None);
    assert_eq!(code, 401, "no sign-in, no session");
    planted_cookies_do_not_change_the_api_login(&ns, &ca, &api, &host, &login);
    // The node says its storage is a trial.
    let out = ns
        .command("kubectl")
        .arg("--kubeconfig")
        .arg(data.join("apiserver/kubeconfig"))
        .args([
            "get",
            "gpunode",
            "qs-node",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"TrialStorage\")].status}",
        ])
        .env("HOME", tmp.path())
        .output()
        .expect("kubectl runs (apt-get install kubernetes-client)");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "True", "{out:?}");
    // Stop: the session host answers 404.
    let (code, body) = curl(
        &ns,
        &ca,
        &jar,
        "POST",
        &format!("{api}/api/v2/external/sessions/{id}/stop"),
        None,
    );
    assert_eq!(code, 202, "{body}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, _) = curl(&ns, &ca, &jar, "GET", &format!("{host}/"), None);
        if code == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "still {code} after stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dockerd = pid_in(&qs.join("dockerd.pid"));
    let caddy = pid_in(&qs.join("caddy.pid"));
    let image_line = summary
        .lines()
        .find(|l| l.contains("default Pack image"))
        .unwrap()
        .to_string();
    assert!(up.terminate().success(), "{}", up.stderr());
    assert!(
        live(dockerd) && live(caddy),
        "Docker and Caddy outlive medforge up"
    );

    // Second run: everything is reused, nothing made twice.
    let mut again = Up::start(&ns, &data, &workload, 2);
    let summary = again.wait_ready();
    eprintln!("{summary}");
    for want in [
        "Docker answers at",
        &format!("trial pool {trial} exists: reusing it"),
        "exists: reusing it, built from",
        &format!("Caddy runs (pid {caddy}) with these settings: reusing it"),
    ] {
        assert!(
            summary.contains(want),
            "the second summary lacks {want:?}:\n{summary}"
        );
    }
    let image_id = image_line
        .split('(')
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(summary.contains(image_id), "the same image:\n{summary}");
    assert!(!again.stderr().contains("created the first admin"));
    assert_eq!(
        std::fs::read_to_string(&password_file).unwrap().trim(),
        password
    );
    assert_eq!(pid_in(&qs.join("dockerd.pid")), dockerd);
    assert_eq!(
        zpools()
            .lines()
            .filter(|p| p.starts_with("mftrial") && !pools_before.contains(p))
            .count(),
        1,
        "no second pool"
    );
    let jar2 = tmp.path().join("cookies2");
    let (code, body) = curl(
        &ns,
        &ca,
        &jar2,
        "POST",
        &format!("{api}/api/v2/auth/login"),
        Some(&login),
    );
    assert_eq!(code, 200, "the same admin and password: {body}");
    let medforge = pid_in(&qs.join("medforge.pid"));
    assert_eq!(medforge, again.child.id() as i32);

    // Down: by PID, everything the quickstart started, and with --purge the data.
    let out = down_purge(&ns, &data);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        format!("stopped medforge (pid {medforge})"),
        format!("stopped caddy (pid {caddy})"),
        format!("stopped dockerd (pid {dockerd})"),
        format!("destroyed the trial pool {trial}"),
    ] {
        assert!(text.contains(&want), "down lacks {want:?}:\n{text}");
    }
    let _ = again.child.wait();
    for pid in [medforge, caddy, dockerd] {
        assert!(!live(pid), "pid {pid} still runs after down");
    }
    assert!(!zpools().contains(&trial));
    assert!(!data.exists());
}

/// A setting the quickstart cannot use is refused with what was wrong, and
/// `medforge down --purge` then cleans up what it had started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_refuses_a_pool_too_small_and_down_cleans_up() {
    let _harness = Harness::get().await.expect("the test harness is up");
    let workload = static_workload().await;
    let ns = Netns::new_named("mfqs-bad");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let _cleanup = Cleanup {
        ns: &ns,
        data: data.clone(),
    };
    let out = ns
        .command(env!("CARGO_BIN_EXE_medforge"))
        .args([
            "up",
            "--quickstart",
            "--trial-pool-size",
            "1Mi",
            "--data-dir",
        ])
        .arg(&data)
        .arg("--docker-socket")
        .arg(tmp.path().join("docker.sock"))
        .arg("--workload-binary")
        .arg(&workload)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--trial-pool-size 1Mi is too small: ZFS needs at least 64Mi"),
        "{err}"
    );
    let dockerd = pid_in(&data.join("quickstart/dockerd.pid"));
    assert!(live(dockerd), "Docker was started before the pool step");
    let down = down_purge(&ns, &data);
    assert!(down.status.success(), "{down:?}");
    assert!(!live(dockerd));
    assert!(!data.exists());
}
