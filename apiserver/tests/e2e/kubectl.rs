//! The real `kubectl` against the server: apply, get (printer columns),
//! describe, explain, get -w, delete waiting for a finalizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams, PostParams};
use medforge_crds::Session;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{self, TestServer, session};

pub(crate) const KUBECTL: &str = "/usr/bin/kubectl";

pub(crate) fn kubectl_path() -> Option<PathBuf> {
    let p = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| KUBECTL.into());
    p.exists().then_some(p)
}

/// A kubectl command isolated from the user's configuration and caches.
pub(crate) fn kubectl(ts: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(kubectl_path().expect("kubectl is installed"));
    let home = ts.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    c.env_clear()
        .env("HOME", &home)
        .env("PATH", "/usr/bin:/bin")
        .arg("--kubeconfig")
        .arg(ts.server.kubeconfig_path())
        .arg("--cache-dir")
        .arg(home.join("cache"))
        .args(args);
    c
}

pub(crate) async fn run(ts: &TestServer, args: &[&str]) -> Output {
    // Asynchronously: the server runs on this test's runtime.
    let out = tokio::process::Command::from(kubectl(ts, args))
        .output()
        .await
        .unwrap();
    eprintln!(
        "$ kubectl {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) async fn ok(ts: &TestServer, args: &[&str]) -> String {
    let out = run(ts, args).await;
    assert!(out.status.success(), "kubectl {} failed", args.join(" "));
    String::from_utf8(out.stdout).unwrap()
}

fn manifest(dir: &Path, gpus: u32) -> PathBuf {
    let p = dir.join("session.yaml");
    std::fs::write(
        &p,
        format!(
            "apiVersion: medforge.dev/v1alpha1
kind: Session
metadata:
  name: demo
  namespace: default
  labels:
    app: notebook
spec:
  owner: alice
  pack: jupyter
  gpus: {gpus}
"
        ),
    )
    .unwrap();
    p
}

/// Splits a `kubectl get` table into rows of cells.
fn table(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test]
async fn apply_get_describe_explain() {
    if kubectl_path().is_none() {
        eprintln!("kubectl not installed; skipped");
        return;
    }
    let ts = common::start().await;
    let file = manifest(ts.dir.path(), 1);
    let f = file.to_str().unwrap();
    let out = ok(&ts, &["apply", "-f", f]).await;
    assert_eq!(out.trim(), "session.medforge.dev/demo created");

    let out = ok(&ts, &["get", "sessions"]).await;
    let rows = table(&out);
    assert_eq!(rows[0], ["NAME", "OWNER", "PHASE", "NODE", "GPUS", "AGE"]);
    // Unset columns print empty, as for CRDs on kube-apiserver.
    assert_eq!(rows[1][..3], ["demo", "alice", "1"]);

    // Re-applying a change goes through client-side apply's merge patch.
    manifest(ts.dir.path(), 2);
    let out = ok(&ts, &["apply", "-f", f]).await;
    assert_eq!(out.trim(), "session.medforge.dev/demo configured");
    let out = ok(&ts, &["apply", "-f", f]).await;
    assert_eq!(out.trim(), "session.medforge.dev/demo unchanged");

    let api: Api<Session> = Api::namespaced(ts.client.clone(), "default");
    api.patch_status(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "nodeName": "gpu-1", "slug": "ab12cd34"}}),
        ),
    )
    .await
    .unwrap();
    let rows = table(&ok(&ts, &["get", "sess", "-o", "wide"]).await);
    assert_eq!(
        rows[0],
        ["NAME", "OWNER", "PHASE", "NODE", "GPUS", "SLUG", "AGE"]
    );
    assert_eq!(
        rows[1][..6],
        ["demo", "alice", "Running", "gpu-1", "2", "ab12cd34"]
    );
    // The category lists every MedForge kind.
    let out = ok(&ts, &["get", "medforge"]).await;
    assert!(out.contains("session.medforge.dev/demo"), "{out}");
    let out = ok(
        &ts,
        &["get", "sessions", "-l", "app=notebook", "-o", "name"],
    )
    .await;
    assert_eq!(out.trim(), "session.medforge.dev/demo");
    let out = ok(
        &ts,
        &["get", "session", "demo", "-o", "jsonpath={.spec.gpus}"],
    )
    .await;
    assert_eq!(out, "2");

    let out = ok(&ts, &["describe", "session", "demo"]).await;
    for want in [
        "Name:",
        "demo",
        "Namespace:",
        "default",
        "Kind:",
        "Session",
        "Owner:",
        "alice",
        "Phase:",
        "Running",
    ] {
        assert!(out.contains(want), "describe lacks {want:?}:\n{out}");
    }

    let out = ok(&ts, &["explain", "session.spec"]).await;
    assert!(out.contains("KIND:") && out.contains("Session"), "{out}");
    assert!(
        out.contains("owner") && out.contains("The id of the user who owns this session"),
        "{out}"
    );
    let out = ok(&ts, &["explain", "sessions.spec.gpus"]).await;
    assert!(out.contains("Number of whole GPUs"), "{out}");

    // Server-side apply from kubectl.
    let out = ok(
        &ts,
        &["apply", "--server-side", "--force-conflicts", "-f", f],
    )
    .await;
    assert_eq!(out.trim(), "session.medforge.dev/demo serverside-applied");

    // An invalid change is refused with the field named.
    std::fs::write(
        ts.dir.path().join("bad.yaml"),
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("owner: alice", "owner: mallory"),
    )
    .unwrap();
    let out = run(
        &ts,
        &[
            "apply",
            "-f",
            ts.dir.path().join("bad.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.owner") && err.contains("owner is immutable"),
        "{err}"
    );

    let out = run(&ts, &["get", "session", "nope"]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): sessions.medforge.dev \"nope\" not found"
    );
    ts.server.shutdown().await;
}

#[tokio::test]
async fn get_watch_sees_a_status_change() {
    if kubectl_path().is_none() {
        eprintln!("kubectl not installed; skipped");
        return;
    }
    let ts = common::start().await;
    let api: Api<Session> = Api::namespaced(ts.client.clone(), "default");
    api.create(&PostParams::default(), &session("watched", "alice"))
        .await
        .unwrap();
    let mut cmd = tokio::process::Command::from(kubectl(&ts, &["get", "sessions", "-w"]));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a line from kubectl get -w")
            .unwrap()
            .expect("kubectl still running")
    };
    assert!(next().await.starts_with("NAME"));
    assert!(next().await.starts_with("watched"));
    api.patch_status(
        "watched",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    let line = next().await;
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[..3], ["watched", "alice", "Running"], "{line}");
    child.kill().await.unwrap();
    ts.server.shutdown().await;
}

#[tokio::test]
async fn delete_waits_for_the_finalizer() {
    if kubectl_path().is_none() {
        eprintln!("kubectl not installed; skipped");
        return;
    }
    let ts = common::start().await;
    let api: Api<Session> = Api::namespaced(ts.client.clone(), "default");
    let mut s = session("held", "alice");
    s.metadata.finalizers = Some(vec!["medforge.dev/agent".into()]);
    api.create(&PostParams::default(), &s).await.unwrap();
    let mut cmd = tokio::process::Command::from(kubectl(
        &ts,
        &["delete", "session", "held", "--timeout=30s"],
    ));
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::spawn(child.wait_with_output());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !output.is_finished(),
        "kubectl delete waits while the finalizer is there"
    );
    assert!(
        api.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "session.medforge.dev \"held\" deleted"
    );
    assert!(api.get("held").await.is_err());
    ts.server.shutdown().await;
}
