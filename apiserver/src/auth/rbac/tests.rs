use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};

use super::*;
use crate::auth::user::User;

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
    let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        verbs: v(verbs),
        api_groups: Some(v(groups)),
        resources: Some(v(resources)),
        resource_names: (!names.is_empty()).then(|| v(names)),
        non_resource_urls: None,
    }
}

fn sessions(verb: &str, sub: &str, ns: &str, name: &str) -> Attributes {
    Attributes::resource(verb, "medforge.dev", "sessions", sub, ns, name)
}

#[test]
fn a_rule_allows_exactly_its_verbs_groups_resources_and_names() {
    let r = rule(&["get", "list"], &["medforge.dev"], &["sessions"], &[]);
    assert!(rule_allows(&r, &sessions("get", "", "ns", "a")));
    assert!(rule_allows(&r, &sessions("list", "", "ns", "")));
    assert!(!rule_allows(&r, &sessions("delete", "", "ns", "a")), "verb");
    assert!(
        !rule_allows(&r, &sessions("get", "status", "ns", "a")),
        "a subresource needs its own grant"
    );
    assert!(
        !rule_allows(
            &r,
            &Attributes::resource("get", "", "sessions", "", "ns", "a")
        ),
        "another group"
    );
    assert!(
        !rule_allows(
            &r,
            &Attributes::resource("get", "medforge.dev", "packs", "", "", "a")
        ),
        "another resource"
    );
    let status = rule(&["update"], &["medforge.dev"], &["sessions/status"], &[]);
    assert!(rule_allows(
        &status,
        &sessions("update", "status", "ns", "a")
    ));
    assert!(!rule_allows(&status, &sessions("update", "", "ns", "a")));
    let named = rule(
        &["get", "update", "list"],
        &["coordination.k8s.io"],
        &["leases"],
        &["medforge-scheduler"],
    );
    let lease = |verb: &str, name: &str| {
        Attributes::resource(
            verb,
            "coordination.k8s.io",
            "leases",
            "",
            "medforge-system",
            name,
        )
    };
    assert!(rule_allows(&named, &lease("get", "medforge-scheduler")));
    assert!(!rule_allows(&named, &lease("get", "another")));
    assert!(
        !rule_allows(&named, &lease("list", "")),
        "a list of all is not a list of one name"
    );
    let wild = rule(&["*"], &["*"], &["*"], &[]);
    assert!(rule_allows(
        &wild,
        &sessions("deletecollection", "status", "x", "")
    ));
    let any_status = rule(&["get"], &["medforge.dev"], &["*/status"], &[]);
    assert!(rule_allows(
        &any_status,
        &sessions("get", "status", "ns", "a")
    ));
    assert!(!rule_allows(&any_status, &sessions("get", "", "ns", "a")));
}

#[test]
fn non_resource_rules_match_paths_and_prefixes() {
    let r = PolicyRule {
        verbs: vec!["get".into()],
        non_resource_urls: Some(vec!["/apis".into(), "/openapi/*".into()]),
        ..Default::default()
    };
    assert!(rule_allows(&r, &Attributes::non_resource("get", "/apis")));
    assert!(rule_allows(
        &r,
        &Attributes::non_resource("get", "/openapi/v3/apis")
    ));
    assert!(!rule_allows(
        &r,
        &Attributes::non_resource("get", "/apis/medforge.dev")
    ));
    assert!(!rule_allows(&r, &Attributes::non_resource("post", "/apis")));
    assert!(
        !rule_allows(&r, &sessions("get", "", "", "")),
        "not a resource rule"
    );
}

fn agent() -> User {
    User::service_account("medforge-system", "medforge-agent")
}

fn snapshot() -> Snapshot {
    let mut s = Snapshot::default();
    s.cluster_roles.insert(
        "watch-sessions".into(),
        vec![rule(
            &["list", "watch"],
            &["medforge.dev"],
            &["sessions"],
            &[],
        )],
    );
    s.roles.insert(
        ("medforge".into(), "write-status".into()),
        vec![rule(
            &["update"],
            &["medforge.dev"],
            &["sessions/status"],
            &[],
        )],
    );
    let sa = Subject {
        kind: "ServiceAccount".into(),
        name: "medforge-agent".into(),
        namespace: Some("medforge-system".into()),
        api_group: None,
    };
    s.cluster_bindings.push((
        "agent".into(),
        RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "watch-sessions".into(),
        },
        vec![sa.clone()],
    ));
    s.bindings.entry("medforge".into()).or_default().push((
        "agent".into(),
        RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "write-status".into(),
        },
        vec![sa],
    ));
    s
}

#[test]
fn bindings_grant_their_roles_to_their_subjects_only_where_they_are() {
    let s = snapshot();
    let a = agent();
    assert!(
        s.authorize(&a, &sessions("watch", "", "", "")).allowed,
        "cluster-wide watch"
    );
    assert!(
        s.authorize(&a, &sessions("list", "", "elsewhere", ""))
            .allowed
    );
    assert!(
        s.authorize(&a, &sessions("update", "status", "medforge", "x"))
            .allowed
    );
    assert!(
        !s.authorize(&a, &sessions("update", "status", "elsewhere", "x"))
            .allowed,
        "a RoleBinding grants only in its namespace"
    );
    assert!(
        !s.authorize(&a, &sessions("delete", "", "medforge", "x"))
            .allowed
    );
    let other = User::service_account("medforge-system", "medforge-api");
    assert!(
        !s.authorize(&other, &sessions("list", "", "", "")).allowed,
        "another subject"
    );
    let same_name_elsewhere = User::service_account("medforge", "medforge-agent");
    assert!(
        !s.authorize(&same_name_elsewhere, &sessions("list", "", "", ""))
            .allowed,
        "a ServiceAccount of the same name in another namespace"
    );
    let reason = s.authorize(&a, &sessions("list", "", "", "")).reason;
    assert!(reason.contains("ClusterRoleBinding \"agent\""), "{reason}");
}

#[test]
fn a_binding_to_a_missing_role_grants_nothing() {
    let mut s = snapshot();
    s.cluster_roles.clear();
    s.roles.clear();
    assert!(!s.authorize(&agent(), &sessions("list", "", "", "")).allowed);
    assert!(
        !s.authorize(&agent(), &sessions("update", "status", "medforge", "x"))
            .allowed
    );
}

#[test]
fn every_authenticated_user_may_discover_and_review_itself_and_nothing_else() {
    let s = Snapshot::default();
    let nobody = User::service_account("default", "default");
    assert!(
        s.authorize(&nobody, &Attributes::non_resource("get", "/apis"))
            .allowed
    );
    assert!(
        s.authorize(&nobody, &Attributes::non_resource("get", "/openapi/v3"))
            .allowed
    );
    assert!(
        !s.authorize(&nobody, &Attributes::non_resource("post", "/apis"))
            .allowed
    );
    let review = Attributes::resource(
        "create",
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "",
        "",
        "",
    );
    assert!(s.authorize(&nobody, &review).allowed);
    assert!(
        !s.authorize(&nobody, &sessions("get", "", "default", "x"))
            .allowed
    );
    assert!(
        s.authorize(&User::admin(), &sessions("delete", "", "default", "x"))
            .allowed
    );
}

#[test]
fn forbidden_answers_read_as_kube_apiservers() {
    let a = agent();
    let e = forbidden(&a, &sessions("delete", "", "medforge", "s1"));
    assert_eq!((e.code, e.reason), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "sessions.medforge.dev \"s1\" is forbidden: User \"system:serviceaccount:medforge-system:medforge-agent\" cannot delete resource \"sessions\" in API group \"medforge.dev\" in the namespace \"medforge\""
    );
    assert_eq!(
        e.details,
        Some(json!({ "name": "s1", "group": "medforge.dev", "kind": "sessions" }))
    );
    let e = forbidden(
        &a,
        &Attributes::resource("list", "", "namespaces", "", "", ""),
    );
    assert_eq!(
        e.message,
        "namespaces is forbidden: User \"system:serviceaccount:medforge-system:medforge-agent\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    let e = forbidden(&a, &sessions("update", "status", "medforge", "s1"));
    assert!(
        e.message
            .contains("cannot update resource \"sessions/status\""),
        "{}",
        e.message
    );
    let e = forbidden(&a, &Attributes::non_resource("get", "/metrics"));
    assert_eq!(
        e.message,
        "forbidden: User \"system:serviceaccount:medforge-system:medforge-agent\" cannot get path \"/metrics\""
    );
}
