//! The Helm chart (charts/medforge), checked with Helm's own engine.
//!
//! `scripts/chart-check.py` (run with the virtualenv `scripts/install-deps.sh`
//! makes) lints the chart strictly, renders it with the default values and
//! with every values file in `charts/medforge/ci/`, and compares the default
//! rendering with the golden copy. This test runs it, then reads every
//! rendered object as its Kubernetes type (k8s-openapi) and writes it back:
//! a field the type does not know (a misspelt one) is lost on the way and
//! fails the comparison. It also runs the real `medforge config check` on the
//! configuration file the chart writes, and checks that every binding names
//! a role and a service account the chart makes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Python of the virtualenv holding helm-python-sdk.
fn helm_python() -> PathBuf {
    let venv = std::env::var_os("MEDFORGE_HELM_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/medforge/tools/helm"));
    let python = venv.join("bin").join("python");
    let works = Command::new(&python)
        .args(["-c", "import helm_python"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        works,
        "Helm's engine (helm-python-sdk) is missing from {}: install it with `bash scripts/install-deps.sh`",
        venv.display()
    );
    python
}

/// Runs the chart check; the renderings go to `out`.
fn chart_check(out: &Path) {
    let python = helm_python();
    let started = std::time::Instant::now();
    let run = Command::new(&python)
        .arg(root().join("scripts/chart-check.py"))
        .arg("--out")
        .arg(out)
        .current_dir(root())
        .output()
        .expect("running scripts/chart-check.py");
    assert!(
        run.status.success(),
        "scripts/chart-check.py failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!(
        "{} (the test's wall time for it: {:.1?})",
        String::from_utf8_lossy(&run.stdout).trim(),
        started.elapsed()
    );
}

/// Reads `doc` as `T` and writes it back: equal to the original, or a field
/// `T` does not have was in it.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{what}: not a valid {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).unwrap();
    if &back != doc {
        panic!(
            "{what}: fields its type does not know (misspelt, or in the wrong place):\n{}",
            difference(doc, &back, "").join("\n")
        );
    }
}

/// Where `a` (rendered) and `b` (read back) differ, as JSON paths.
fn difference(a: &Value, b: &Value, at: &str) -> Vec<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter()
                .flat_map(|k| {
                    let path = format!("{at}.{k}");
                    match (x.get(k), y.get(k)) {
                        (Some(v), Some(w)) => difference(v, w, &path),
                        (Some(_), None) => vec![format!("  {path}: rendered, unknown to the type")],
                        (None, Some(_)) => vec![format!("  {path}: added by the type")],
                        (None, None) => vec![],
                    }
                })
                .collect()
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .flat_map(|(i, (v, w))| difference(v, w, &format!("{at}[{i}]")))
            .collect(),
        _ if a == b => vec![],
        _ => vec![format!("  {at}: rendered {a}, read back {b}")],
    }
}

fn str_at<'a>(doc: &'a Value, pointer: &str) -> &'a str {
    doc.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The Prometheus Operator's ServiceMonitor: no type in k8s-openapi; its
/// required fields are checked by hand.
fn check_service_monitor(doc: &Value, what: &str) {
    assert!(!str_at(doc, "/metadata/name").is_empty(), "{what}: no name");
    assert!(
        doc.pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .is_some_and(|m| !m.is_empty()),
        "{what}: spec.selector.matchLabels is required"
    );
    let endpoints = doc.pointer("/spec/endpoints").and_then(Value::as_array);
    assert!(
        endpoints.is_some_and(|e| !e.is_empty() && e.iter().all(|e| e.get("port").is_some())),
        "{what}: spec.endpoints needs at least one, each with a port"
    );
    let known = ["apiVersion", "kind", "metadata", "spec"];
    for k in doc.as_object().unwrap().keys() {
        assert!(known.contains(&k.as_str()), "{what}: unknown field {k}");
    }
}

/// One rendering's objects, each checked against its type.
struct Rendering {
    objects: Vec<Value>,
}

impl Rendering {
    fn read(path: &Path) -> Rendering {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        let objects: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        for doc in &objects {
            let what = format!(
                "{} {} {}/{}",
                path.file_name().unwrap().to_string_lossy(),
                str_at(doc, "/kind"),
                str_at(doc, "/metadata/namespace"),
                str_at(doc, "/metadata/name"),
            );
            match (str_at(doc, "/apiVersion"), str_at(doc, "/kind")) {
                ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(doc, &what),
                ("apps/v1", "Deployment") => round_trip::<Deployment>(doc, &what),
                ("v1", "Service") => round_trip::<Service>(doc, &what),
                ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc, &what),
                ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc, &what),
                ("v1", "Namespace") => round_trip::<Namespace>(doc, &what),
                ("policy/v1", "PodDisruptionBudget") => {
                    round_trip::<PodDisruptionBudget>(doc, &what)
                }
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    round_trip::<NetworkPolicy>(doc, &what)
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    round_trip::<ClusterRole>(doc, &what)
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    round_trip::<ClusterRoleBinding>(doc, &what)
                }
                ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc, &what),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    round_trip::<RoleBinding>(doc, &what)
                }
                ("monitoring.coreos.com/v1", "ServiceMonitor") => check_service_monitor(doc, &what),
                (api, kind) => panic!("{what}: a kind this test does not know: {api} {kind}"),
            }
        }
        Rendering { objects }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|o| str_at(o, "/kind") == kind)
            .collect()
    }

    fn names(&self, kind: &str) -> BTreeSet<String> {
        self.of_kind(kind)
            .into_iter()
            .map(|o| {
                let ns = str_at(o, "/metadata/namespace");
                let name = str_at(o, "/metadata/name");
                if ns.is_empty() {
                    name.to_string()
                } else {
                    format!("{ns}/{name}")
                }
            })
            .collect()
    }

    /// Every binding names a role and service accounts of this rendering,
    /// and every pod runs as a service account of it.
    fn check_references(&self, label: &str) {
        let accounts = self.names("ServiceAccount");
        let roles = self.names("Role");
        let cluster_roles = self.names("ClusterRole");
        for binding in self
            .of_kind("RoleBinding")
            .into_iter()
            .chain(self.of_kind("ClusterRoleBinding"))
        {
            let name = str_at(binding, "/metadata/name");
            let role = str_at(binding, "/roleRef/name");
            match str_at(binding, "/roleRef/kind") {
                "Role" => {
                    let ns = str_at(binding, "/metadata/namespace");
                    assert!(
                        roles.contains(&format!("{ns}/{role}")),
                        "{label}: RoleBinding {name} names the Role {ns}/{role}, not rendered"
                    );
                }
                "ClusterRole" => assert!(
                    cluster_roles.contains(role),
                    "{label}: {name} names the ClusterRole {role}, not rendered"
                ),
                other => panic!("{label}: {name}: roleRef kind {other}"),
            }
            for s in binding["subjects"].as_array().unwrap() {
                let account = format!("{}/{}", str_at(s, "/namespace"), str_at(s, "/name"));
                assert!(
                    accounts.contains(&account),
                    "{label}: {name} binds {account}, which is not rendered"
                );
            }
        }
        for workload in self
            .of_kind("Deployment")
            .into_iter()
            .chain(self.of_kind("DaemonSet"))
        {
            let account = str_at(workload, "/spec/template/spec/serviceAccountName");
            if account.is_empty() {
                continue; // the example proxy: no API access at all
            }
            let account = format!("{}/{account}", str_at(workload, "/metadata/namespace"));
            assert!(
                accounts.contains(&account),
                "{label}: {} runs as {account}, which is not rendered",
                str_at(workload, "/metadata/name")
            );
        }
    }

    /// `medforge config check` accepts the configuration file the chart
    /// writes, for each command the chart runs.
    fn check_config(&self, label: &str, dir: &Path) {
        let configs = self.of_kind("ConfigMap");
        let config = configs
            .iter()
            .find_map(|c| c.pointer("/data/medforge.toml").and_then(Value::as_str))
            .unwrap_or_else(|| panic!("{label}: no ConfigMap with medforge.toml"));
        let file = dir.join(format!("{label}.toml"));
        std::fs::write(&file, config).unwrap();
        for command in ["api", "operator"] {
            let out = Command::new(env!("CARGO_BIN_EXE_medforge"))
                .args(["config", "check", "--for", command, "--config"])
                .arg(&file)
                .env_clear()
                // The pods get it from the admin's Secret.
                .env("MEDFORGE_ADMIN_PASSWORD", "from-the-secret")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{label}: `medforge config check --for {command}` refuses the chart's medforge.toml:\n{}\n{config}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_chart_lints_renders_and_every_object_reads_as_its_type() {
    let out = tempfile::tempdir().unwrap();
    chart_check(out.path());

    let default = Rendering::read(&out.path().join("default.yaml"));
    default.check_references("default");
    default.check_config("default", out.path());
    // The default: one agent DaemonSet, the scheduler and the api, and the
    // optional parts off.
    assert_eq!(default.of_kind("DaemonSet").len(), 1);
    assert_eq!(
        default.names("Deployment"),
        BTreeSet::from([
            "medforge-system/medforge-api".to_string(),
            "medforge-system/medforge-scheduler".to_string()
        ])
    );
    assert!(default.of_kind("ServiceMonitor").is_empty());
    assert_eq!(default.of_kind("PodDisruptionBudget").len(), 1);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "Service",
        "ConfigMap",
    ] {
        assert!(!default.of_kind(kind).is_empty(), "default: no {kind}");
    }
    let scheduler = default
        .of_kind("Deployment")
        .into_iter()
        .find(|d| str_at(d, "/metadata/name").ends_with("-scheduler"))
        .unwrap();
    assert_eq!(scheduler["spec"]["replicas"], 2);
    let args = &scheduler["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args, &serde_json::json!(["operator", "--no-agent"]));
    let agent = default.of_kind("DaemonSet")[0];
    let env = agent["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let node_name = env
        .iter()
        .find(|e| e["name"] == "MEDFORGE_NODE_NAME")
        .expect("the agent gets MEDFORGE_NODE_NAME");
    assert_eq!(
        node_name.pointer("/valueFrom/fieldRef/fieldPath"),
        Some(&Value::from("spec.nodeName"))
    );

    let three = Rendering::read(&out.path().join("three-gpu-nodes-values.yaml"));
    three.check_references("three-gpu-nodes");
    three.check_config("three-gpu-nodes", out.path());
    assert_eq!(
        three.of_kind("DaemonSet").len(),
        2,
        "main and group `older`"
    );
    assert_eq!(three.of_kind("ServiceMonitor").len(), 1);
    assert!(
        three
            .names("Deployment")
            .contains("medforge-system/medforge-caddy"),
        "the example Caddy is on in the three-node values"
    );
}

#[test]
fn the_chart_names_this_version_and_ships_the_projects_caddyfile() {
    let chart = std::fs::read_to_string(root().join("charts/medforge/Chart.yaml")).unwrap();
    let chart: Value = serde_saphyr::from_str(&chart).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    let shipped = std::fs::read_to_string(root().join("deploy/caddy/Caddyfile")).unwrap();
    let copy = std::fs::read_to_string(root().join("charts/medforge/files/Caddyfile")).unwrap();
    assert!(
        shipped == copy,
        "charts/medforge/files/Caddyfile differs from deploy/caddy/Caddyfile: \
         cp deploy/caddy/Caddyfile charts/medforge/files/Caddyfile"
    );
}
