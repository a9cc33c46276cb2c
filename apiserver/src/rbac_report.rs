//! Least privilege, checked against what was done: given RBAC objects (a
//! chart's rendering) and an audit log (this server's `--audit-log-path`, or
//! kube-apiserver's at level Metadata or above), lists for each
//! ServiceAccount the requests it was refused and every grant it never used.
//! A grant is one verb on one resource (with its resource names, if any) in
//! one scope (a RoleBinding's namespace, or cluster-wide); it is used when
//! an allowed request of a user the binding names falls under it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::Value;

use crate::auth::User;
use crate::auth::rbac::{Attributes, rule_allows, subject_matches};

/// One grant: a verb on a resource (or a path) in a scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// `ClusterRole medforge-agent via ClusterRoleBinding medforge-agent`.
    pub source: String,
    /// `""`: cluster-wide.
    pub namespace: String,
    pub verb: String,
    pub api_group: String,
    /// `sessions`, `sessions/status`, or a non-resource path.
    pub resource: String,
    pub resource_names: Vec<String>,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = if self.api_group.is_empty() {
            self.resource.clone()
        } else {
            format!("{} ({})", self.resource, self.api_group)
        };
        write!(f, "{} {resource}", self.verb)?;
        if !self.resource_names.is_empty() {
            write!(f, " named {}", self.resource_names.join(", "))?;
        }
        if self.namespace.is_empty() {
            write!(f, " cluster-wide")?;
        } else {
            write!(f, " in {}", self.namespace)?;
        }
        write!(f, ", from {}", self.source)
    }
}

/// What one ServiceAccount did and was given.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Account {
    pub requests: usize,
    /// The refused requests (`verb resource in namespace`).
    pub refused: Vec<String>,
    pub unused: Vec<Grant>,
}

/// The report: every ServiceAccount the RBAC objects bind, by user name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub accounts: BTreeMap<String, Account>,
}

impl Report {
    /// Whether nothing was refused and every grant was used.
    pub fn is_clean(&self) -> bool {
        self.accounts
            .values()
            .all(|a| a.refused.is_empty() && a.unused.is_empty())
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (user, a) in &self.accounts {
            let _ = writeln!(
                out,
                "{user}: {} requests, {} refused, {} unused grants",
                a.requests,
                a.refused.len(),
                a.unused.len()
            );
            for r in &a.refused {
                let _ = writeln!(out, "  refused: {r}");
            }
            for g in &a.unused {
                let _ = writeln!(out, "  unused:  {g}");
            }
        }
        out
    }
}

/// One binding of a role's rules to subjects in a scope.
struct Binding {
    source: String,
    namespace: String,
    rules: Vec<PolicyRule>,
    subjects: Vec<Subject>,
}

fn bindings(objects: &[Value]) -> Result<Vec<Binding>, String> {
    fn of<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = Value> + 'a {
        objects.iter().filter(move |o| o["kind"] == kind).cloned()
    }
    let parse = |e: serde_json::Error| e.to_string();
    let mut cluster_roles = BTreeMap::new();
    for o in of(objects, "ClusterRole") {
        let r: ClusterRole = serde_json::from_value(o).map_err(parse)?;
        cluster_roles.insert(
            r.metadata.name.unwrap_or_default(),
            r.rules.unwrap_or_default(),
        );
    }
    let mut roles = BTreeMap::new();
    for o in of(objects, "Role") {
        let r: Role = serde_json::from_value(o).map_err(parse)?;
        let key = (
            r.metadata.namespace.unwrap_or_default(),
            r.metadata.name.unwrap_or_default(),
        );
        roles.insert(key, r.rules.unwrap_or_default());
    }
    let mut out = Vec::new();
    for o in of(objects, "ClusterRoleBinding") {
        let b: ClusterRoleBinding = serde_json::from_value(o).map_err(parse)?;
        let name = b.metadata.name.unwrap_or_default();
        out.push(Binding {
            source: format!(
                "ClusterRole {} via ClusterRoleBinding {name}",
                b.role_ref.name
            ),
            namespace: String::new(),
            rules: cluster_roles
                .get(&b.role_ref.name)
                .cloned()
                .unwrap_or_default(),
            subjects: b.subjects.unwrap_or_default(),
        });
    }
    for o in of(objects, "RoleBinding") {
        let b: RoleBinding = serde_json::from_value(o).map_err(parse)?;
        let ns = b.metadata.namespace.unwrap_or_default();
        let name = b.metadata.name.unwrap_or_default();
        let rules = if b.role_ref.kind == "ClusterRole" {
            cluster_roles.get(&b.role_ref.name).cloned()
        } else {
            roles.get(&(ns.clone(), b.role_ref.name.clone())).cloned()
        };
        out.push(Binding {
            source: format!(
                "{} {} via RoleBinding {ns}/{name}",
                b.role_ref.kind, b.role_ref.name
            ),
            namespace: ns,
            rules: rules.unwrap_or_default(),
            subjects: b.subjects.unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Splits a rule into one grant per verb, group and resource.
fn grants_of(b: &Binding) -> Vec<(Grant, PolicyRule)> {
    let mut out = Vec::new();
    for rule in &b.rules {
        let names = rule.resource_names.clone().unwrap_or_default();
        let targets: Vec<(String, String)> = match &rule.non_resource_urls {
            Some(urls) if !urls.is_empty() => {
                urls.iter().map(|u| (String::new(), u.clone())).collect()
            }
            _ => {
                let mut t = Vec::new();
                for g in rule.api_groups.iter().flatten() {
                    for r in rule.resources.iter().flatten() {
                        t.push((g.clone(), r.clone()));
                    }
                }
                t
            }
        };
        for verb in &rule.verbs {
            for (group, resource) in &targets {
                let single = if rule
                    .non_resource_urls
                    .as_ref()
                    .is_some_and(|u| !u.is_empty())
                {
                    PolicyRule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: Some(vec![resource.clone()]),
                        ..Default::default()
                    }
                } else {
                    PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: Some(vec![group.clone()]),
                        resources: Some(vec![resource.clone()]),
                        resource_names: rule.resource_names.clone(),
                        non_resource_urls: None,
                    }
                };
                out.push((
                    Grant {
                        source: b.source.clone(),
                        namespace: b.namespace.clone(),
                        verb: verb.clone(),
                        api_group: group.clone(),
                        resource: resource.clone(),
                        resource_names: names.clone(),
                    },
                    single,
                ));
            }
        }
    }
    out
}

/// The attributes and decision of one audit event, when it has them.
fn event(e: &Value) -> Option<(User, Attributes, bool)> {
    let user = User {
        name: e.pointer("/user/username")?.as_str()?.to_string(),
        groups: e
            .pointer("/user/groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let verb = e.get("verb")?.as_str()?;
    let allowed = e
        .pointer("/annotations/authorization.k8s.io~1decision")?
        .as_str()?
        == "allow";
    let attrs = match e.get("objectRef") {
        Some(o) => {
            let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            Attributes::resource(
                verb,
                s("apiGroup"),
                s("resource"),
                s("subresource"),
                s("namespace"),
                s("name"),
            )
        }
        None => {
            let uri = e.get("requestURI")?.as_str()?;
            Attributes::non_resource(verb, uri.split('?').next().unwrap_or(uri))
        }
    };
    Some((user, attrs, allowed))
}

/// Builds the report from RBAC objects (any other kinds among them are
/// skipped) and audit log lines.
pub fn report(objects: &[Value], audit_lines: &str) -> Result<Report, String> {
    let bindings = bindings(objects)?;
    let mut events = Vec::new();
    for (i, line) in audit_lines
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: Value =
            serde_json::from_str(line).map_err(|e| format!("audit log line {}: {e}", i + 1))?;
        if let Some(e) = event(&v) {
            events.push(e);
        }
    }
    let mut report = Report::default();
    // Every ServiceAccount the bindings name.
    for b in &bindings {
        for s in b.subjects.iter().filter(|s| s.kind == "ServiceAccount") {
            let ns = s.namespace.clone().unwrap_or_else(|| b.namespace.clone());
            report
                .accounts
                .entry(crate::auth::service_account_user(&ns, &s.name))
                .or_default();
        }
    }
    for (user, account) in report.accounts.iter_mut() {
        let mine: Vec<&(User, Attributes, bool)> =
            events.iter().filter(|(u, _, _)| u.name == *user).collect();
        account.requests = mine.len();
        for (_, a, allowed) in &mine {
            if !allowed {
                account.refused.push(describe(a));
            }
        }
        let probe = User {
            name: user.clone(),
            groups: vec![],
        };
        for b in bindings.iter().filter(|b| {
            b.subjects
                .iter()
                .any(|s| subject_matches(s, &b.namespace, &probe))
        }) {
            for (grant, rule) in grants_of(b) {
                let used = mine.iter().any(|(_, a, allowed)| {
                    *allowed
                        && rule_allows(&rule, a)
                        && (b.namespace.is_empty()
                            || a.resource
                                .as_ref()
                                .is_some_and(|r| r.namespace == b.namespace))
                });
                if !used {
                    account.unused.push(grant);
                }
            }
        }
        account.unused.sort();
        account.unused.dedup();
    }
    Ok(report)
}

fn describe(a: &Attributes) -> String {
    match &a.resource {
        None => format!("{} {}", a.verb, a.path),
        Some(r) => {
            let mut s = format!("{} {}", a.verb, r.resource);
            if !r.subresource.is_empty() {
                s.push('/');
                s.push_str(&r.subresource);
            }
            if !r.group.is_empty() {
                s.push_str(&format!(" ({})", r.group));
            }
            if !r.name.is_empty() {
                s.push_str(&format!(" {:?}", r.name));
            }
            if r.namespace.is_empty() {
                s.push_str(" cluster-wide");
            } else {
                s.push_str(&format!(" in {}", r.namespace));
            }
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn objects() -> Vec<Value> {
        vec![
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": { "name": "agent" },
                "rules": [{ "apiGroups": ["medforge.dev"], "resources": ["sessions"], "verbs": ["list", "watch"] }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": { "name": "agent" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "agent" },
                "subjects": [{ "kind": "ServiceAccount", "name": "agent", "namespace": "sys" }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": { "name": "agent", "namespace": "work" },
                "rules": [{ "apiGroups": ["medforge.dev"], "resources": ["sessions/status"], "verbs": ["update"] }] }),
            json!({ "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": { "name": "agent", "namespace": "work" },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent" },
                "subjects": [{ "kind": "ServiceAccount", "name": "agent", "namespace": "sys" }] }),
            json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "skipped" } }),
        ]
    }

    fn line(verb: &str, sub: &str, ns: &str, decision: &str) -> String {
        let mut r = json!({ "resource": "sessions", "apiGroup": "medforge.dev", "namespace": ns });
        if !sub.is_empty() {
            r["subresource"] = json!(sub);
        }
        json!({ "verb": verb, "user": { "username": "system:serviceaccount:sys:agent", "groups": [] },
            "objectRef": r, "requestURI": "/x",
            "annotations": { "authorization.k8s.io/decision": decision } })
        .to_string()
    }

    #[test]
    fn every_grant_used_and_nothing_refused_is_clean() {
        let log = [
            line("list", "", "", "allow"),
            line("watch", "", "", "allow"),
            line("update", "status", "work", "allow"),
        ]
        .join("\n");
        let r = report(&objects(), &log).unwrap();
        assert!(r.is_clean(), "{}", r.render());
        assert_eq!(r.accounts["system:serviceaccount:sys:agent"].requests, 3);
    }

    #[test]
    fn an_unused_verb_and_a_grant_used_only_elsewhere_are_listed() {
        // No watch; the status update was in another namespace (and refused).
        let log = [
            line("list", "", "", "allow"),
            line("update", "status", "elsewhere", "forbid"),
        ]
        .join("\n");
        let r = report(&objects(), &log).unwrap();
        let a = &r.accounts["system:serviceaccount:sys:agent"];
        let unused: Vec<String> = a
            .unused
            .iter()
            .map(|g| format!("{} {}", g.verb, g.resource))
            .collect();
        assert_eq!(
            unused,
            ["watch sessions", "update sessions/status"],
            "{}",
            r.render()
        );
        assert_eq!(
            a.refused,
            ["update sessions/status (medforge.dev) in elsewhere"]
        );
        assert!(!r.is_clean());
    }

    #[test]
    fn a_refused_request_does_not_use_a_grant() {
        let log = [
            line("list", "", "", "forbid"),
            line("watch", "", "", "allow"),
            line("update", "status", "work", "allow"),
        ]
        .join("\n");
        let r = report(&objects(), &log).unwrap();
        let a = &r.accounts["system:serviceaccount:sys:agent"];
        assert_eq!(a.unused.len(), 1);
        assert_eq!(a.unused[0].verb, "list");
    }
}
