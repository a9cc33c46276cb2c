//! What the end-to-end tests of the `medforge` binary share: child processes
//! stopped by PID, loopback ports inside the harness namespace, the login
//! cookie of an answer and the accounts that sign up or log in for it. Each
//! test file uses a part of it.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output};
use std::time::{Duration, Instant};

use medforge_testkit::{Harness, HttpResponse, TestScope};
use serde_json::{Value, json};

/// A child process, stopped by PID (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub name: &'static str,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Sends `signal` and waits up to 20 s, then kills.
    pub fn stop(&mut self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        if self.wait_within(Duration::from_secs(20)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the exit; `None` when it did
    /// not exit in time (then it is killed).
    pub fn terminate_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_within(within);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }

    fn wait_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        None
    }

    /// The whole log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of the log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            eprintln!("stopping {} (pid {})", self.name, self.child.id());
            self.stop(nix::sys::signal::Signal::SIGTERM);
        }
    }
}

/// A port on loopback inside the harness namespace, which is private to the
/// harness: a range no other test uses, random to avoid parallel runs.
pub fn free_port() -> u16 {
    20_000 + (rand::random::<u16>() % 30_000)
}

/// The `medforge_session` cookie an answer sets.
pub fn cookie_of(r: &HttpResponse) -> String {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("medforge_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no login cookie in {:?}", r.headers))
}

/// An account of the api, by its email and password.
pub struct Account {
    pub email: &'static str,
    pub password: &'static str,
}

impl Account {
    pub const fn new(email: &'static str, password: &'static str) -> Self {
        Account { email, password }
    }

    /// Signs the account up through `post` (which sends a JSON body to an api
    /// path), checks the 201, and returns the login cookie.
    pub async fn sign_up<F>(&self, post: impl FnOnce(&'static str, Value) -> F) -> String
    where
        F: Future<Output = HttpResponse>,
    {
        self.enter(post, "/api/v2/auth/signup", 201).await
    }

    /// Logs the account in through `post`, checks the 200, and returns the login cookie.
    pub async fn log_in<F>(&self, post: impl FnOnce(&'static str, Value) -> F) -> String
    where
        F: Future<Output = HttpResponse>,
    {
        self.enter(post, "/api/v2/auth/login", 200).await
    }

    async fn enter<F>(
        &self,
        post: impl FnOnce(&'static str, Value) -> F,
        path: &'static str,
        status: u16,
    ) -> String
    where
        F: Future<Output = HttpResponse>,
    {
        let body = json!({"email": self.email, "password": self.password});
        let r = post(path, body).await;
        assert_eq!(r.status, status, "{path} as {}: {}", self.email, r.text());
        cookie_of(&r)
    }
}

/// A free port on the host's loopback (for processes in the host's namespace).
pub fn host_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kube client for the control plane whose data directory is `dir`, once
/// it answers, within a generous deadline.
pub async fn kube_client(dir: &Path) -> kube::Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(kc) = kube::config::Kubeconfig::read_from(dir.join("kubeconfig"))
            && let Ok(config) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await
            && let Ok(c) = kube::Client::try_from(config)
            && c.apiserver_version().await.is_ok()
        {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the control plane never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The image ID of the harness's workload image (what `--default-pack-image` takes).
pub async fn workload_image_id(harness: &Harness) -> String {
    let tag = harness.workload_image().await.unwrap();
    harness
        .docker()
        .inspect_image(&tag)
        .await
        .unwrap()
        .id
        .unwrap()
}

/// One `key=value` label of `scope` (its cleanup removes containers that carry it).
pub fn scope_label(scope: &TestScope) -> String {
    scope
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .next()
        .expect("a scope label")
}

/// Waits up to 60 s for `medforge up`'s api at `api` to answer `/readyz`.
pub async fn wait_until_ready(harness: &Harness, api: SocketAddr, up: &Proc) {
    if harness
        .wait_for_http(api, "/readyz", Duration::from_secs(60))
        .await
        .is_err()
    {
        panic!("medforge up never became ready:\n{}", up.log_tail());
    }
}

/// Asserts that `program args` exited 0, with its stderr as the message.
pub fn assert_success(program: &str, args: &[&str], out: &Output) {
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
