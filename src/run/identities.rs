//! `medforge up` runs its scheduler, node agent and api as the chart's
//! ServiceAccounts, with the chart's Roles and bindings, so that one host
//! exercises exactly the permissions a cluster gives (decision 0021).
//!
//! The RBAC objects come from the committed default rendering of the chart
//! (`charts/medforge/golden/default.yaml`, which CI checks against the chart
//! itself), with the sessions namespace replaced by this host's. Each
//! component's client reads its token from a file under
//! `<data-dir>/apiserver/identities/`, as a Pod reads its projected token,
//! and the file is rewritten with a fresh token long before the old one
//! expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The chart's default rendering.
const CHART: &str = include_str!("../../charts/medforge/golden/default.yaml");
/// The sessions namespace and the release namespace in that rendering.
const CHART_SESSIONS_NAMESPACE: &str = "medforge";
pub const CHART_NAMESPACE: &str = "medforge-system";

/// How long each token lives, and how often it is replaced.
const TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);
const TOKEN_REFRESH: Duration = Duration::from_secs(6 * 3600);

/// The RBAC kinds taken from the chart.
const KINDS: [&str; 5] = [
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

/// A component's ServiceAccount in the chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Scheduler,
    Agent,
    Api,
}

impl Component {
    pub fn service_account(self) -> &'static str {
        match self {
            Component::Scheduler => "medforge-scheduler",
            Component::Agent => "medforge-agent",
            Component::Api => "medforge-api",
        }
    }
}

/// The chart's ServiceAccounts, Roles and bindings, with the sessions
/// namespace `sessions_namespace`; with `destroy_workspaces`, the agent may
/// also list WorkspaceSnapshots there, as the chart renders it with
/// `config.operator.destroy-workspaces`.
pub fn chart_rbac(
    sessions_namespace: &str,
    destroy_workspaces: bool,
) -> anyhow::Result<Vec<Value>> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(CHART).context("parsing the chart's default rendering")?;
    let mut out = Vec::new();
    for mut doc in docs {
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !KINDS.contains(&kind.as_str()) {
            continue;
        }
        if let Some(ns) = doc.pointer_mut("/metadata/namespace")
            && ns.as_str() == Some(CHART_SESSIONS_NAMESPACE)
        {
            *ns = Value::String(sessions_namespace.to_string());
        }
        if destroy_workspaces && kind == "Role" && doc["metadata"]["name"] == "medforge-agent" {
            for rule in doc["rules"].as_array_mut().into_iter().flatten() {
                if rule["resources"] == serde_json::json!(["workspacesnapshots"])
                    && let Some(verbs) = rule["verbs"].as_array_mut()
                {
                    verbs.push(Value::String("list".into()));
                }
            }
        }
        out.push(doc);
    }
    Ok(out)
}

/// Applies the chart's RBAC objects (server-side apply by `medforge-up`).
pub async fn apply(
    admin: &kube::Client,
    sessions_namespace: &str,
    destroy_workspaces: bool,
) -> anyhow::Result<()> {
    medforge_operator::leader::ensure_namespace(admin, CHART_NAMESPACE)
        .await
        .context("creating the namespace of MedForge's ServiceAccounts")?;
    for obj in chart_rbac(sessions_namespace, destroy_workspaces)? {
        let api_version = obj["apiVersion"].as_str().unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or("");
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let api: kube::Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
            Some(ns) => kube::Api::namespaced_with(admin.clone(), ns, &resource),
            None => kube::Api::all_with(admin.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("medforge-up").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying the chart's {kind} {name}"))?;
    }
    Ok(())
}

/// Where a component's token file lives.
fn token_file(dir: &Path, component: Component) -> PathBuf {
    dir.join(format!("{}.token", component.service_account()))
}

/// Writes a fresh token for each component, atomically (mode 0600).
fn write_tokens(issuer: &medforge_apiserver::TokenIssuer, dir: &Path) -> anyhow::Result<()> {
    for c in [Component::Scheduler, Component::Agent, Component::Api] {
        let token = issuer
            .service_account_token(CHART_NAMESPACE, c.service_account(), TOKEN_LIFETIME)
            .with_context(|| format!("a token for {}", c.service_account()))?;
        let path = token_file(dir, c);
        let tmp = path.with_extension("token.new");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut f = options
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(token.as_bytes())?;
        }
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The components' clients, each reading its own token file.
pub struct Clients {
    pub scheduler: kube::Client,
    pub agent: kube::Client,
    pub api: kube::Client,
}

/// Writes the token files into `dir`, starts their renewal (until
/// `shutdown`), and returns one client per component.
pub fn clients(
    server: &medforge_apiserver::RunningServer,
    dir: &Path,
    shutdown: CancellationToken,
) -> anyhow::Result<Clients> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let issuer = server.token_issuer();
    write_tokens(&issuer, dir)?;
    let client = |c| {
        kube::Client::try_from(server.kube_config_with_token_file(&token_file(dir, c)))
            .context("building a component's client")
    };
    let clients = Clients {
        scheduler: client(Component::Scheduler)?,
        agent: client(Component::Agent)?,
        api: client(Component::Api)?,
    };
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TOKEN_REFRESH) => {}
                _ = shutdown.cancelled() => return,
            }
            if let Err(e) = write_tokens(&issuer, &dir) {
                tracing::error!(error = %format!("{e:#}"), "renewing the components' tokens");
            }
        }
    });
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_gives_each_component_an_account_and_its_roles_in_this_hosts_namespace() {
        let objs = chart_rbac("sessions-here", false).unwrap();
        let named = |kind: &str, name: &str| {
            objs.iter()
                .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
                .unwrap_or_else(|| panic!("{kind} {name} in the chart"))
        };
        for c in [Component::Scheduler, Component::Agent, Component::Api] {
            let sa = named("ServiceAccount", c.service_account());
            assert_eq!(sa["metadata"]["namespace"], CHART_NAMESPACE);
            named("ClusterRoleBinding", c.service_account());
            let binding = named("RoleBinding", c.service_account());
            assert_eq!(binding["metadata"]["namespace"], "sessions-here");
            assert_eq!(
                named("Role", c.service_account())["metadata"]["namespace"],
                "sessions-here"
            );
        }
        // The Lease's Role stays in medforge-system.
        assert_eq!(
            named("Role", "medforge-scheduler-lease")["metadata"]["namespace"],
            CHART_NAMESPACE
        );
        assert!(
            objs.iter()
                .all(|o| KINDS.contains(&o["kind"].as_str().unwrap()))
        );
    }

    #[test]
    fn only_an_agent_that_destroys_workspaces_may_list_snapshot_records() {
        let verbs = |destroy: bool| {
            let objs = chart_rbac("ns", destroy).unwrap();
            let role = objs
                .iter()
                .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "medforge-agent")
                .unwrap()
                .clone();
            role["rules"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["resources"] == serde_json::json!(["workspacesnapshots"]))
                .unwrap()["verbs"]
                .clone()
        };
        assert!(!verbs(false).as_array().unwrap().contains(&"list".into()));
        assert!(verbs(true).as_array().unwrap().contains(&"list".into()));
    }
}
