//! RBAC authorization as kube-apiserver's RBAC authorizer does it: a request
//! (its verb, API group, resource, subresource, namespace and name, or its
//! path when it is not on a resource) is allowed when a rule of a role bound
//! to the user allows it, and denied otherwise. There is no deny rule.
//!
//! The roles and bindings are read from the store into a [`Snapshot`],
//! rebuilt whenever one of the RBAC kinds (or a ServiceAccount) changed, so
//! a request sees every RBAC write answered before it.
//!
//! Besides the stored objects, every authenticated user gets the rules of
//! kube-apiserver's bootstrap roles `system:discovery`,
//! `system:public-info-viewer` and `system:basic-user`: discovery, OpenAPI,
//! version and health paths, and creating self-subject access and rules
//! reviews. Members of `system:masters` (the admin token) are allowed
//! everything without a rule, as on kube-apiserver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::json;

use super::user::{self, User};
use crate::registry::{Builtin, Registry, ResourceId};
use crate::status::ApiError;
use crate::store::Store;

/// What a request asks to do, as RBAC sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    pub verb: String,
    /// `None` for a request on a path that is not a resource (`/apis`).
    pub resource: Option<ResourceAttributes>,
    /// The request path, for a non-resource request.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// `""` at the cluster scope.
    pub namespace: String,
    /// `""` for a collection.
    pub name: String,
}

impl Attributes {
    pub fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        subresource: &str,
        namespace: &str,
        name: &str,
    ) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            resource: Some(ResourceAttributes {
                group: group.to_string(),
                resource: resource.to_string(),
                subresource: subresource.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            path: String::new(),
        }
    }

    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.to_string(),
            resource: None,
            path: path.to_string(),
        }
    }
}

/// The RBAC objects in force, and the ServiceAccounts tokens may name.
#[derive(Debug, Default)]
pub struct Snapshot {
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    /// `(binding name, role, subjects)`.
    cluster_bindings: Vec<(String, RoleRef, Vec<Subject>)>,
    /// By namespace: `(binding name, role, subjects)`.
    bindings: HashMap<String, Vec<(String, RoleRef, Vec<Subject>)>>,
    /// `(namespace, name)` → uid.
    service_accounts: HashMap<(String, String), String>,
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// What allowed it (`RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "z"`), or `""`.
    pub reason: String,
}

/// The bootstrap rules every authenticated user has (see the module documentation).
pub fn bootstrap_rules() -> Vec<PolicyRule> {
    vec![
        PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: Some(
                [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/openapi",
                    "/openapi/*",
                    "/version",
                    "/version/",
                    "/healthz",
                    "/livez",
                    "/readyz",
                ]
                .map(String::from)
                .to_vec(),
            ),
            ..Default::default()
        },
        PolicyRule {
            verbs: vec!["create".into()],
            api_groups: Some(vec![crate::registry::AUTHORIZATION.into()]),
            resources: Some(vec![
                "selfsubjectaccessreviews".into(),
                "selfsubjectrulesreviews".into(),
            ]),
            ..Default::default()
        },
    ]
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

/// Whether `rule` allows `a`.
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    let Some(r) = &a.resource else {
        return rule.non_resource_urls.as_deref().is_some_and(|urls| {
            urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            })
        });
    };
    if !rule.api_groups.as_deref().is_some_and(|g| has(g, &r.group)) {
        return false;
    }
    let resources = rule.resources.as_deref().unwrap_or_default();
    let resource_ok = if r.subresource.is_empty() {
        has(resources, &r.resource)
    } else {
        let combined = format!("{}/{}", r.resource, r.subresource);
        resources.iter().any(|x| {
            *x == "*"
                || *x == combined
                || *x == format!("{}/*", r.resource)
                || *x == format!("*/{}", r.subresource)
        })
    };
    if !resource_ok {
        return false;
    }
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => !r.name.is_empty() && names.contains(&r.name),
    }
}

/// Whether a binding's subject (in namespace `binding_ns`) names `user`.
pub fn subject_matches(subject: &Subject, binding_ns: &str, user: &User) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == user.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().unwrap_or(binding_ns);
            user.name == user::service_account_user(ns, &subject.name)
        }
        _ => false,
    }
}

impl Snapshot {
    /// The uid of a ServiceAccount, when it exists.
    pub fn service_account_uid(&self, namespace: &str, name: &str) -> Option<&str> {
        self.service_accounts
            .get(&(namespace.to_string(), name.to_string()))
            .map(String::as_str)
    }

    fn role_rules(&self, role: &RoleRef, binding_ns: Option<&str>) -> &[PolicyRule] {
        let rules = match (role.kind.as_str(), binding_ns) {
            ("ClusterRole", _) => self.cluster_roles.get(&role.name),
            ("Role", Some(ns)) => self.roles.get(&(ns.to_string(), role.name.clone())),
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// Every `(binding, role, rules)` that applies to `user` in `namespace`
    /// (`""`: cluster-wide bindings only).
    fn grants<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
    ) -> impl Iterator<Item = (String, &'a RoleRef, &'a [PolicyRule])> + 'a {
        let cluster = self
            .cluster_bindings
            .iter()
            .filter(move |(_, _, subjects)| subjects.iter().any(|s| subject_matches(s, "", user)))
            .map(move |(name, role, _)| {
                (
                    format!("ClusterRoleBinding {name:?}"),
                    role,
                    self.role_rules(role, None),
                )
            });
        let local = self
            .bindings
            .get(namespace)
            .filter(|_| !namespace.is_empty())
            .into_iter()
            .flatten()
            .filter(move |(_, _, subjects)| {
                subjects.iter().any(|s| subject_matches(s, namespace, user))
            })
            .map(move |(name, role, _)| {
                (
                    format!("RoleBinding \"{namespace}/{name}\""),
                    role,
                    self.role_rules(role, Some(namespace)),
                )
            });
        cluster.chain(local)
    }

    /// Whether `user` may do `a`.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Decision {
        if user.is_superuser() {
            return Decision {
                allowed: true,
                reason: format!("member of {:?}", user::MASTERS),
            };
        }
        if user.groups.iter().any(|g| g == user::AUTHENTICATED)
            && bootstrap_rules().iter().any(|r| rule_allows(r, a))
        {
            return Decision {
                allowed: true,
                reason: "RBAC: allowed by the bootstrap rules of system:authenticated".into(),
            };
        }
        let namespace = a.resource.as_ref().map_or("", |r| r.namespace.as_str());
        for (binding, role, rules) in self.grants(user, namespace) {
            if rules.iter().any(|r| rule_allows(r, a)) {
                return Decision {
                    allowed: true,
                    reason: format!(
                        "RBAC: allowed by {binding} of {} {:?} to {:?}",
                        role.kind, role.name, user.name
                    ),
                };
            }
        }
        Decision {
            allowed: false,
            reason: String::new(),
        }
    }

    /// The rules `user` has in `namespace`, bootstrap rules included (what a
    /// SelfSubjectRulesReview lists).
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<PolicyRule> {
        if user.is_superuser() {
            return vec![
                PolicyRule {
                    verbs: vec!["*".into()],
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    ..Default::default()
                },
                PolicyRule {
                    verbs: vec!["*".into()],
                    non_resource_urls: Some(vec!["*".into()]),
                    ..Default::default()
                },
            ];
        }
        let mut out = bootstrap_rules();
        for (_, _, rules) in self.grants(user, namespace) {
            out.extend(rules.iter().cloned());
        }
        out
    }
}

/// The store's fingerprint of each RBAC kind (see `Store::fingerprint`).
type Fingerprint = Vec<(usize, u64)>;

/// The store's RBAC kinds, and the snapshot of them last built.
pub struct Authorizer {
    kinds: Vec<ResourceId>,
    cache: Mutex<Option<(Fingerprint, Arc<Snapshot>)>>,
}

impl Authorizer {
    pub fn new(registry: &Registry) -> Authorizer {
        let kinds = [
            Builtin::ServiceAccount,
            Builtin::Role,
            Builtin::ClusterRole,
            Builtin::RoleBinding,
            Builtin::ClusterRoleBinding,
        ]
        .iter()
        .filter_map(|b| registry.types.iter().find(|t| t.builtin == Some(*b)))
        .map(|t| t.id)
        .collect();
        Authorizer {
            kinds,
            cache: Mutex::new(None),
        }
    }

    /// The RBAC objects in force now: the cached snapshot when none of the
    /// kinds changed since it was built, else a new one.
    pub fn snapshot(&self, store: &Store) -> Arc<Snapshot> {
        let fingerprint: Fingerprint = self.kinds.iter().map(|k| store.fingerprint(*k)).collect();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((f, snap)) = cache.as_ref()
            && *f == fingerprint
        {
            return snap.clone();
        }
        let snap = Arc::new(self.build(store));
        *cache = Some((fingerprint, snap.clone()));
        snap
    }

    fn build(&self, store: &Store) -> Snapshot {
        let values = |i: usize| {
            store
                .list(self.kinds[i], None, &|_| true, None, None, None)
                .map(|r| r.items.iter().map(|o| o.value()).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        let mut s = Snapshot::default();
        for v in values(0) {
            let s_ = |p: &str| {
                v.pointer(p)
                    .and_then(|x| x.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            s.service_accounts.insert(
                (s_("/metadata/namespace"), s_("/metadata/name")),
                s_("/metadata/uid"),
            );
        }
        for r in values(1)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Role>(v).ok())
        {
            let key = (
                r.metadata.namespace.unwrap_or_default(),
                r.metadata.name.unwrap_or_default(),
            );
            s.roles.insert(key, r.rules.unwrap_or_default());
        }
        for r in values(2)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<ClusterRole>(v).ok())
        {
            s.cluster_roles.insert(
                r.metadata.name.unwrap_or_default(),
                r.rules.unwrap_or_default(),
            );
        }
        for b in values(3)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RoleBinding>(v).ok())
        {
            s.bindings
                .entry(b.metadata.namespace.unwrap_or_default())
                .or_default()
                .push((
                    b.metadata.name.unwrap_or_default(),
                    b.role_ref,
                    b.subjects.unwrap_or_default(),
                ));
        }
        for b in values(4)
            .into_iter()
            .filter_map(|v| serde_json::from_value::<ClusterRoleBinding>(v).ok())
        {
            s.cluster_bindings.push((
                b.metadata.name.unwrap_or_default(),
                b.role_ref,
                b.subjects.unwrap_or_default(),
            ));
        }
        s
    }
}

/// kube-apiserver's 403 for a denied request, word for word:
/// `sessions.medforge.dev "x" is forbidden: User "u" cannot get resource
/// "sessions" in API group "medforge.dev" in the namespace "ns"`.
pub fn forbidden(user: &User, a: &Attributes) -> ApiError {
    let Some(r) = &a.resource else {
        return ApiError::new(
            403,
            "Forbidden",
            format!(
                "forbidden: User {:?} cannot {} path {:?}",
                user.name, a.verb, a.path
            ),
        )
        .with_details(json!({}));
    };
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let scope = if r.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", r.namespace)
    };
    let why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.name, a.verb, r.group
    );
    let qualified = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let message = if r.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} {:?} is forbidden: {why}", r.name)
    };
    let mut details = json!({ "name": r.name, "kind": r.resource });
    if !r.group.is_empty() {
        details["group"] = json!(r.group);
    }
    ApiError::new(403, "Forbidden", message).with_details(details)
}

#[cfg(test)]
#[path = "rbac/tests.rs"]
mod tests;
