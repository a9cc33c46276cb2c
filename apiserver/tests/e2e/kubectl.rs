//! The real `kubectl` against the server: namespaces, create, apply, edit,
//! label, annotate, get (printer columns), describe with Events, events in
//! both groups, wait, api-resources, explain, get -w, delete with and without
//! waiting for a finalizer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use medforge_crds::Session;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{self, TestServer, held_session, session};

const KUBECTL: &str = "/usr/bin/kubectl";

/// The kubectl these tests drive (`$KUBECTL`, else `/usr/bin/kubectl`). A
/// missing one fails the test: the tests exist to prove kubectl works.
pub(crate) fn kubectl_path() -> PathBuf {
    let p = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| KUBECTL.into());
    assert!(
        p.exists(),
        "{} is missing: install it with `apt-get install kubernetes-client` (or set KUBECTL)",
        p.display()
    );
    p
}

/// A kubectl command isolated from the user's configuration and caches.
pub(crate) fn kubectl(ts: &TestServer, args: &[&str]) -> Command {
    let mut c = Command::new(kubectl_path());
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

/// Runs kubectl, asserts that it succeeds and prints `want`: as a line, or
/// bare (a jsonpath value).
async fn assert_prints(ts: &TestServer, args: &[&str], want: &str) {
    let out = ok(ts, args).await;
    assert_eq!(
        out.strip_suffix('\n').unwrap_or(&out),
        want,
        "kubectl {}",
        args.join(" ")
    );
}

/// Asserts that kubectl `args` prints `session.medforge.dev/demo <done>`,
/// as it does for each change to the Session `demo`.
async fn assert_demo(ts: &TestServer, args: &[&str], done: &str) {
    assert_prints(ts, args, &format!("session.medforge.dev/demo {done}")).await;
}

/// Asserts that `kubectl get <what> -o jsonpath=<path>` prints `want`.
async fn assert_jsonpath(ts: &TestServer, what: &[&str], path: &str, want: &str) {
    let output = format!("jsonpath={path}");
    let mut args = vec!["get"];
    args.extend_from_slice(what);
    args.extend(["-o", &output]);
    assert_prints(ts, &args, want).await;
}

/// Runs kubectl, asserts that it fails, and returns its stderr (trimmed).
pub(crate) async fn fails(ts: &TestServer, args: &[&str]) -> String {
    let out = run(ts, args).await;
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// Asserts that a kubectl run succeeded and printed `stdout` (trimmed).
fn assert_succeeded(out: &Output, what: &str, stdout: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), stdout);
}

/// Writes the Session `demo` of `owner` with `gpus` GPUs to `path` as YAML;
/// `metadata` is more of its metadata (labels, annotations), indented as
/// the keys under `metadata:` are.
fn write_manifest(path: &Path, namespace: &str, metadata: &str, owner: &str, gpus: u32) {
    let yaml = format!(
        "apiVersion: medforge.dev/v1alpha1
kind: Session
metadata:
  name: demo
  namespace: {namespace}
{metadata}spec:
  owner: {owner}
  pack: jupyter
  gpus: {gpus}
"
    );
    std::fs::write(path, yaml).unwrap();
}

/// `demo` in the namespace `default`, owned by `alice`, labelled `app=notebook`.
fn manifest(dir: &Path, gpus: u32) -> PathBuf {
    let p = dir.join("session.yaml");
    write_manifest(
        &p,
        "default",
        "  labels:\n    app: notebook\n",
        "alice",
        gpus,
    );
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
    let ts = common::start().await;
    let file = manifest(ts.dir.path(), 1);
    let f = file.to_str().unwrap();
    assert_demo(&ts, &["apply", "-f", f], "created").await;

    let out = ok(&ts, &["get", "sessions"]).await;
    let rows = table(&out);
    assert_eq!(
        rows[0],
        [
            "NAME", "SLUG", "OWNER", "PACK", "PHASE", "NODE", "GPUS", "READY", "AGE"
        ]
    );
    // Unset columns print empty, as for CRDs on kube-apiserver.
    assert_eq!(rows[1][..3], ["demo", "jupyter", "1"]);

    // Re-applying a change goes through client-side apply's merge patch;
    // applying it once more changes nothing.
    manifest(ts.dir.path(), 2);
    for outcome in ["configured", "unchanged"] {
        assert_demo(&ts, &["apply", "-f", f], outcome).await;
    }

    let api = common::sessions(&ts);
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
        [
            "NAME", "SLUG", "OWNER", "PACK", "PHASE", "NODE", "GPUS", "READY", "AGE", "URL",
            "REASON", "OWNER-ID"
        ]
    );
    // No owner-email annotation (not created by the api): that cell is empty.
    assert_eq!(
        rows[1][..6],
        ["demo", "ab12cd34", "jupyter", "Running", "gpu-1", "2"]
    );
    assert_eq!(rows[1].last().map(String::as_str), Some("alice"));
    // The category lists every MedForge kind.
    let out = ok(&ts, &["get", "medforge"]).await;
    assert!(out.contains("session.medforge.dev/demo"), "{out}");
    assert_prints(
        &ts,
        &["get", "sessions", "-l", "app=notebook", "-o", "name"],
        "session.medforge.dev/demo",
    )
    .await;
    assert_jsonpath(&ts, &["session", "demo"], "{.spec.gpus}", "2").await;

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
    assert_demo(
        &ts,
        &["apply", "--server-side", "--force-conflicts", "-f", f],
        "serverside-applied",
    )
    .await;

    // An invalid change is refused with the field named.
    std::fs::write(
        ts.dir.path().join("bad.yaml"),
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("owner: alice", "owner: mallory"),
    )
    .unwrap();
    let err = fails(
        &ts,
        &[
            "apply",
            "-f",
            ts.dir.path().join("bad.yaml").to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        err.contains("spec.owner") && err.contains("owner is immutable"),
        "{err}"
    );

    assert_eq!(
        fails(&ts, &["get", "session", "nope"]).await,
        "Error from server (NotFound): sessions.medforge.dev \"nope\" not found"
    );
    ts.server.shutdown().await;
}

#[tokio::test]
async fn get_watch_sees_a_status_change() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("watched", "alice")).await;
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
    assert_eq!(cells[..3], ["watched", "jupyter", "Running"], "{line}");
    child.kill().await.unwrap();
    ts.server.shutdown().await;
}

#[tokio::test]
async fn delete_waits_for_the_finalizer() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &held_session("held", "alice")).await;
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
    assert!(common::is_deleting(&api, "held").await);
    common::merge(&api, "held", json!({"metadata": {"finalizers": null}})).await;
    let out = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_succeeded(
        &out,
        "kubectl delete",
        "session.medforge.dev \"held\" deleted",
    );
    assert!(api.get("held").await.is_err());
    ts.server.shutdown().await;
}

/// A row of `kubectl get` whose first cell is `name`.
fn row_named(out: &str, name: &str) -> Vec<String> {
    table(out)
        .into_iter()
        .find(|r| r.first().map(String::as_str) == Some(name))
        .unwrap_or_else(|| panic!("no row {name:?} in:\n{out}"))
}

/// What a cluster admin does with kubectl on a `medforge up` host, end to
/// end: namespaces (sent as protobuf by kubectl), create/apply/edit, label,
/// annotate, the readable columns, describe with the node agent's Events,
/// events in both groups, wait, api-resources, explain, delete without
/// waiting on a finalizer.
#[tokio::test]
async fn kubectl_works_as_on_a_cluster() {
    use medforge_crds::GpuNode;

    let ts = common::start().await;
    let dir = ts.dir.path();
    assert_prints(
        &ts,
        &["create", "namespace", "demo"],
        "namespace/demo created",
    )
    .await;
    assert_jsonpath(&ts, &["namespace", "demo"], "{.status.phase}", "Active").await;

    let file = dir.join("demo.yaml");
    let annotations = "  annotations:
    medforge.dev/owner-email: alice@example.org
    medforge.dev/url: https://s-ab12cd34.external.example.org/
";
    let write = |gpus: u32| write_manifest(&file, "demo", annotations, "0b6c6a4e-alice", gpus);
    write(1);
    let f = file.to_str().unwrap();
    assert_demo(&ts, &["create", "-f", f], "created").await;
    write(2);
    assert_demo(&ts, &["apply", "-f", f], "configured").await;

    // kubectl edit, non-interactive: the editor is a script that edits the file.
    let editor = dir.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/^  gpus: 2$/  gpus: 3/' \"$1\"\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&editor, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = tokio::process::Command::from({
        let mut c = kubectl(&ts, &["edit", "session", "demo", "-n", "demo"]);
        c.env("KUBE_EDITOR", &editor);
        c
    })
    .output()
    .await
    .unwrap();
    assert_succeeded(&out, "kubectl edit", "session.medforge.dev/demo edited");
    assert_jsonpath(&ts, &["session", "demo", "-n", "demo"], "{.spec.gpus}", "3").await;

    for (verb, arg, done) in [
        ("label", "tier=gold", "labeled"),
        ("annotate", "note=hi", "annotated"),
    ] {
        let args = [verb, "session", "demo", "-n", "demo", arg];
        assert_demo(&ts, &args, done).await;
    }
    assert_jsonpath(
        &ts,
        &["sessions", "-n", "demo", "-l", "tier=gold"],
        "{.items[0].metadata.annotations.note}",
        "hi",
    )
    .await;

    // kubectl wait on a jsonpath, satisfied by a status write while it waits.
    let waiting = tokio::spawn(
        tokio::process::Command::from(kubectl(
            &ts,
            &[
                "wait",
                "--for=jsonpath={.status.phase}=Running",
                "session/demo",
                "-n",
                "demo",
                "--timeout=60s",
            ],
        ))
        .output(),
    );
    let sessions: Api<Session> = Api::namespaced(ts.client.clone(), "demo");
    sessions
        .patch_status(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "phase": "Running", "nodeName": "gpu-1", "slug": "ab12cd34",
                "reason": "Started",
                "conditions": [{"type": "Ready", "status": "True", "reason": "ContainerReady",
                                "message": "answers", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }})),
        )
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(90), waiting)
        .await
        .expect("kubectl wait ends")
        .unwrap()
        .unwrap();
    assert_succeeded(
        &out,
        "kubectl wait",
        "session.medforge.dev/demo condition met",
    );

    // Columns a person can read.
    let out = ok(&ts, &["get", "sessions", "-A"]).await;
    assert_eq!(
        table(&out)[0],
        [
            "NAMESPACE",
            "NAME",
            "SLUG",
            "OWNER",
            "PACK",
            "PHASE",
            "NODE",
            "GPUS",
            "READY",
            "AGE"
        ]
    );
    assert_eq!(
        table(&out)[1][..9],
        [
            "demo",
            "demo",
            "ab12cd34",
            "alice@example.org",
            "jupyter",
            "Running",
            "gpu-1",
            "3",
            "True"
        ]
    );
    let out = ok(&ts, &["get", "sessions", "-n", "demo", "-o", "wide"]).await;
    let row = row_named(&out, "demo");
    assert_eq!(
        row[9..],
        [
            "https://s-ab12cd34.external.example.org/",
            "Started",
            "0b6c6a4e-alice"
        ],
        "{out}"
    );

    let nodes: Api<GpuNode> = Api::all(ts.client.clone());
    let mut node = GpuNode::new("gpu-1", Default::default());
    node.spec.unschedulable = true;
    common::create(&nodes, &node).await;
    nodes
        .patch_status(
            "gpu-1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": 8, "allocatable": 7, "free": 4,
                "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady",
                                "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }})),
        )
        .await
        .unwrap();
    let out = ok(&ts, &["get", "gpunodes"]).await;
    assert_eq!(
        table(&out)[0],
        ["NAME", "GPUS", "FREE", "READY", "CORDONED", "AGE"]
    );
    assert_eq!(
        row_named(&out, "gpu-1")[..5],
        ["gpu-1", "8", "4", "True", "true"]
    );
    let out = ok(&ts, &["get", "gn", "-o", "wide"]).await;
    assert_eq!(row_named(&out, "gpu-1")[6..], ["7", "AgentReady"], "{out}");

    // The node agent's Events, as its Recorder writes them (events.k8s.io/v1).
    let s = sessions.get("demo").await.unwrap();
    common::record(
        &ts,
        &s,
        "ContainerStarted",
        "container 3f2a started with GPU-0",
    )
    .await;
    let out = ok(&ts, &["describe", "session", "demo", "-n", "demo"]).await;
    let events = out
        .split("Events:")
        .nth(1)
        .unwrap_or_else(|| panic!("describe has no Events section:\n{out}"));
    assert!(!events.contains("<none>"), "{out}");
    assert!(
        events.contains("ContainerStarted") && events.contains("container 3f2a started with GPU-0"),
        "{out}"
    );
    let out = ok(&ts, &["get", "events", "-n", "demo"]).await;
    assert!(
        table(&out)[0]
            .join(" ")
            .contains("LAST SEEN TYPE REASON OBJECT MESSAGE"),
        "core v1 columns: {out}"
    );
    assert!(
        out.contains("ContainerStarted") && out.contains("container 3f2a started with GPU-0"),
        "{out}"
    );
    let out = ok(&ts, &["get", "events.events.k8s.io", "-n", "demo"]).await;
    assert!(out.contains("ContainerStarted"), "{out}");
    assert_jsonpath(
        &ts,
        &[
            "events",
            "-A",
            "--field-selector",
            "involvedObject.kind=Session,reason=ContainerStarted",
        ],
        "{.items[*].involvedObject.name}",
        "demo",
    )
    .await;

    let out = ok(&ts, &["api-resources"]).await;
    for want in [
        [
            "sessions",
            "sess",
            "medforge.dev/v1alpha1",
            "true",
            "Session",
        ],
        [
            "gpunodes",
            "gn",
            "medforge.dev/v1alpha1",
            "false",
            "GpuNode",
        ],
        ["packs", "pk", "medforge.dev/v1alpha1", "false", "Pack"],
        ["events", "ev", "v1", "true", "Event"],
        ["events", "ev", "events.k8s.io/v1", "true", "Event"],
        ["namespaces", "ns", "v1", "false", "Namespace"],
        ["leases", "", "coordination.k8s.io/v1", "true", "Lease"],
    ] {
        let want: Vec<&str> = want.into_iter().filter(|c| !c.is_empty()).collect();
        assert!(
            table(&out).iter().any(|r| *r == want),
            "api-resources lacks {want:?}:\n{out}"
        );
    }
    let out = ok(&ts, &["explain", "gpunode.status.free"]).await;
    assert!(out.contains("no session holds"), "{out}");
    let out = ok(
        &ts,
        &["explain", "events.involvedObject", "--api-version=v1"],
    )
    .await;
    assert!(
        out.contains("ObjectReference") || out.contains("involvedObject"),
        "{out}"
    );

    // Delete without waiting on a finalizer: kubectl returns at once, the
    // object stays marked for deletion with a new generation.
    common::merge(
        &sessions,
        "demo",
        json!({"metadata": {"finalizers": ["medforge.dev/node-agent"]}}),
    )
    .await;
    let generation = sessions
        .get("demo")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    assert_prints(
        &ts,
        &["delete", "session", "demo", "-n", "demo", "--wait=false"],
        "session.medforge.dev \"demo\" deleted",
    )
    .await;
    let held = sessions.get("demo").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.generation, Some(generation + 1));
    common::merge(&sessions, "demo", json!({"metadata": {"finalizers": null}})).await;
    assert!(sessions.get_opt("demo").await.unwrap().is_none());
    assert_prints(
        &ts,
        &["delete", "namespace", "demo"],
        "namespace \"demo\" deleted",
    )
    .await;
    ts.server.shutdown().await;
}
