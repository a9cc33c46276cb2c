//! RBAC in the embedded control plane, attacked the way a stolen or
//! low-privilege credential would be used: ServiceAccount tokens from a
//! TokenRequest (`kubectl create token`), Roles and bindings written with
//! `kubectl apply`, `kubectl auth can-i`, the 403 wording, revocation by
//! deleting the ServiceAccount, forged tokens, escalation through RBAC
//! writes, TokenRequests and impersonation, and the audit log.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchParams};
use medforge_crds::Session;
use serde_json::{Value, json};

use crate::common::{self, TestServer, session, status};
use crate::kubectl::{self, run};

const NS: &str = "team";

/// A Role letting `reader` list and watch Sessions in `team` and update
/// their status, bound to the ServiceAccount `team/reader`.
const RBAC: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: { name: reader, namespace: team }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: session-reader, namespace: team }
rules:
  - apiGroups: ["medforge.dev"]
    resources: ["sessions"]
    verbs: ["get", "list", "watch"]
  - apiGroups: ["medforge.dev"]
    resources: ["sessions/status"]
    verbs: ["update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: reader, namespace: team }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: session-reader }
subjects:
  - { kind: ServiceAccount, name: reader, namespace: team }
"#;

async fn start() -> TestServer {
    let audit = tempfile::NamedTempFile::new()
        .unwrap()
        .into_temp_path()
        .to_path_buf();
    common::init_tracing();
    medforge_apiserver::testing::TestControlPlane::builder()
        .namespace(NS)
        .namespace("other")
        .configure(move |c| medforge_apiserver::Config {
            audit_log: Some(audit),
            ..c
        })
        .start()
        .await
}

async fn apply(ts: &TestServer, yaml: &str) {
    let file = ts.dir.path().join(format!("apply-{}.yaml", rand_suffix()));
    std::fs::write(&file, yaml).unwrap();
    kubectl::ok(ts, &["apply", "-f", file.to_str().unwrap()]).await;
}

fn rand_suffix() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// `kubectl create token` for a ServiceAccount of `team`.
async fn token_for(ts: &TestServer, sa: &str) -> String {
    kubectl::ok(ts, &["create", "token", sa, "-n", NS])
        .await
        .trim()
        .to_string()
}

/// A kube client presenting `token` instead of the admin token.
fn client_with(ts: &TestServer, token: &str) -> kube::Client {
    let mut c = ts.server.kube_config();
    c.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(c).unwrap()
}

/// kubectl with the server's kubeconfig but `token` as the credential.
async fn kubectl_as(ts: &TestServer, token: &str, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    run(ts, &all).await
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn a_service_account_token_gets_exactly_what_its_role_grants() {
    let ts = start().await;
    apply(&ts, RBAC).await;
    let admin: Api<Session> = Api::namespaced(ts.client.clone(), NS);
    admin
        .create(&PostParams::default(), &session("s1", "alice"))
        .await
        .unwrap();
    let token = token_for(&ts, "reader").await;
    assert!(token.starts_with("mfsa1."), "{token}");

    let as_reader = client_with(&ts, &token);
    let sessions: Api<Session> = Api::namespaced(as_reader.clone(), NS);
    let listed = sessions.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let mut s1 = sessions.get("s1").await.unwrap();
    // The status subresource: granted.
    s1.status = Some(Default::default());
    sessions
        .replace_status("s1", &PostParams::default(), &s1)
        .await
        .unwrap();

    // Everything else is refused with kube-apiserver's words.
    let err = sessions
        .delete("s1", &DeleteParams::default())
        .await
        .unwrap_err();
    let st = status(err);
    assert_eq!((st.code, st.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        st.message,
        "sessions.medforge.dev \"s1\" is forbidden: User \"system:serviceaccount:team:reader\" cannot delete resource \"sessions\" in API group \"medforge.dev\" in the namespace \"team\""
    );
    let err = sessions
        .create(&PostParams::default(), &session("s2", "mallory"))
        .await
        .unwrap_err();
    assert_eq!(status(err).code, 403);
    let elsewhere: Api<Session> = Api::namespaced(as_reader.clone(), "other");
    let st = status(elsewhere.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        st.message,
        "sessions.medforge.dev is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"sessions\" in API group \"medforge.dev\" in the namespace \"other\""
    );
    let all: Api<Session> = Api::all(as_reader.clone());
    let st = status(all.list(&ListParams::default()).await.unwrap_err());
    assert!(
        st.message.contains("at the cluster scope"),
        "{}",
        st.message
    );
    // A watch is authorized as `watch`, and refused outside the grant too.
    assert!(sessions.watch(&WatchParams::default(), "0").await.is_ok());
    let st = status(
        elsewhere
            .watch(&WatchParams::default(), "0")
            .await
            .err()
            .unwrap(),
    );
    assert!(
        st.message.contains("cannot watch resource \"sessions\""),
        "{}",
        st.message
    );
    // The admin token still does everything.
    admin.delete("s1", &DeleteParams::default()).await.unwrap();
    ts.shutdown().await;
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_for_the_token_it_presents() {
    let ts = start().await;
    apply(&ts, RBAC).await;
    let token = token_for(&ts, "reader").await;
    for (args, yes) in [
        (
            vec!["auth", "can-i", "list", "sessions.medforge.dev", "-n", NS],
            true,
        ),
        (
            vec!["auth", "can-i", "watch", "sessions.medforge.dev", "-n", NS],
            true,
        ),
        (
            vec![
                "auth",
                "can-i",
                "update",
                "sessions.medforge.dev",
                "--subresource=status",
                "-n",
                NS,
            ],
            true,
        ),
        (
            vec!["auth", "can-i", "delete", "sessions.medforge.dev", "-n", NS],
            false,
        ),
        (
            vec![
                "auth",
                "can-i",
                "list",
                "sessions.medforge.dev",
                "-n",
                "other",
            ],
            false,
        ),
        (
            vec!["auth", "can-i", "create", "rolebindings", "-n", NS],
            false,
        ),
        (
            vec!["auth", "can-i", "create", "serviceaccounts/token", "-n", NS],
            false,
        ),
    ] {
        let out = kubectl_as(&ts, &token, &args).await;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            said,
            if yes { "yes" } else { "no" },
            "kubectl {}",
            args.join(" ")
        );
        assert_eq!(out.status.success(), yes);
    }
    // The admin may do anything, and may ask on behalf of the ServiceAccount.
    assert_eq!(
        kubectl::ok(
            &ts,
            &["auth", "can-i", "delete", "sessions.medforge.dev", "-n", NS]
        )
        .await
        .trim(),
        "yes"
    );
    let out = run(
        &ts,
        &[
            "auth",
            "can-i",
            "list",
            "sessions.medforge.dev",
            "-n",
            NS,
            "--as",
            "system:serviceaccount:team:reader",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = run(
        &ts,
        &[
            "auth",
            "can-i",
            "delete",
            "sessions.medforge.dev",
            "-n",
            NS,
            "--as",
            "system:serviceaccount:team:reader",
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    // --list shows the Role's rules.
    let out = kubectl_as(&ts, &token, &["auth", "can-i", "--list", "-n", NS]).await;
    let listed = text(&out);
    assert!(out.status.success(), "{listed}");
    assert!(listed.contains("sessions.medforge.dev"), "{listed}");
    assert!(listed.contains("[get list watch]"), "{listed}");
    assert!(listed.contains("sessions.medforge.dev/status"), "{listed}");
    // A refused kubectl get prints the Status message.
    let out = kubectl_as(&ts, &token, &["get", "sessions", "-n", "other"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("Error from server (Forbidden): sessions.medforge.dev is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"sessions\" in API group \"medforge.dev\" in the namespace \"other\""),
        "{}",
        text(&out)
    );
    ts.shutdown().await;
}

#[tokio::test]
async fn deleting_or_recreating_the_service_account_revokes_its_tokens() {
    let ts = start().await;
    apply(&ts, RBAC).await;
    let token = token_for(&ts, "reader").await;
    let sessions: Api<Session> = Api::namespaced(client_with(&ts, &token), NS);
    sessions.list(&ListParams::default()).await.unwrap();
    let sas: Api<ServiceAccount> = Api::namespaced(ts.client.clone(), NS);
    sas.delete("reader", &DeleteParams::default())
        .await
        .unwrap();
    let st = status(sessions.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((st.code, st.reason.as_str()), (401, "Unauthorized"));
    // A new ServiceAccount of the same name is another identity: the old
    // token stays dead, a new one works.
    apply(&ts, RBAC).await;
    let st = status(sessions.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(st.code, 401);
    let fresh = token_for(&ts, "reader").await;
    let again: Api<Session> = Api::namespaced(client_with(&ts, &fresh), NS);
    again.list(&ListParams::default()).await.unwrap();
    // No token for a ServiceAccount that does not exist.
    let out = run(&ts, &["create", "token", "nobody", "-n", NS]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("serviceaccounts \"nobody\" not found"),
        "{}",
        text(&out)
    );
    // An audience is refused, not ignored: the token would not be bound to it.
    let out = run(
        &ts,
        &[
            "create",
            "token",
            "reader",
            "-n",
            NS,
            "--audience",
            "https://vault.example.org",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(text(&out).contains("spec.audiences"), "{}", text(&out));
    // Too short a lifetime is refused, as kube-apiserver refuses it.
    let out = run(
        &ts,
        &["create", "token", "reader", "-n", NS, "--duration", "5m"],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("may not specify a duration less than 10 minutes"),
        "{}",
        text(&out)
    );
    ts.shutdown().await;
}

#[tokio::test]
async fn forged_altered_and_foreign_tokens_are_unauthorized() {
    let ts = start().await;
    let other = start().await;
    apply(&ts, RBAC).await;
    apply(&other, RBAC).await;
    let token = token_for(&ts, "reader").await;
    let foreign = token_for(&other, "reader").await;
    let (signed, mac) = token.rsplit_once('.').unwrap();
    let (_, claims) = signed.split_once('.').unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut c: Value = serde_json::from_slice(&b64.decode(claims).unwrap()).unwrap();
    c["name"] = json!("admin");
    c["exp"] = json!(4_000_000_000i64);
    let altered = format!(
        "mfsa1.{}.{mac}",
        b64.encode(serde_json::to_vec(&c).unwrap())
    );
    for (what, bad) in [
        ("another server's token", foreign.as_str()),
        ("altered claims", altered.as_str()),
        ("no MAC", signed),
        ("the admin token's prefix", &ts.server.token()[..8]),
        ("empty", ""),
    ] {
        let sessions: Api<Session> = Api::namespaced(client_with(&ts, bad), NS);
        let err = sessions.list(&ListParams::default()).await.unwrap_err();
        assert_eq!(status(err).code, 401, "{what}");
    }
    ts.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn a_service_account_cannot_escalate_through_rbac_tokens_or_impersonation() {
    let ts = start().await;
    apply(&ts, RBAC).await;
    let token = token_for(&ts, "reader").await;
    let client = client_with(&ts, &token);
    // Bind itself to more.
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "reader-is-admin" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin" },
        "subjects": [{ "kind": "ServiceAccount", "name": "reader", "namespace": NS }],
    }))
    .unwrap();
    let crbs: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> = Api::all(client.clone());
    assert_eq!(
        status(
            crbs.create(&PostParams::default(), &binding)
                .await
                .unwrap_err()
        )
        .code,
        403
    );
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), NS);
    let mut role = roles.get("session-reader").await.unwrap_err();
    assert_eq!(status(role).code, 403, "cannot even read its Role");
    role = roles
        .patch(
            "session-reader",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({ "rules": [{ "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] }] }),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(status(role).code, 403);
    // Mint a token for another ServiceAccount.
    let out = kubectl_as(&ts, &token, &["create", "token", "default", "-n", NS]).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("serviceaccounts \"default\" is forbidden: User \"system:serviceaccount:team:reader\" cannot create resource \"serviceaccounts/token\" in API group \"\" in the namespace \"team\""),
        "{}",
        text(&out)
    );
    // Impersonate the admin, or claim system:masters.
    for args in [
        vec!["get", "sessions", "-n", NS, "--as", "medforge-admin"],
        vec![
            "get",
            "sessions",
            "-n",
            NS,
            "--as",
            "system:serviceaccount:team:reader",
            "--as-group",
            "system:masters",
        ],
    ] {
        let out = kubectl_as(&ts, &token, &args).await;
        assert!(!out.status.success(), "kubectl {}", args.join(" "));
        assert!(
            text(&out).contains("cannot impersonate resource"),
            "{}",
            text(&out)
        );
    }
    // The admin's impersonation is honoured, with the impersonated rights only.
    let out = run(
        &ts,
        &[
            "get",
            "sessions",
            "-n",
            "other",
            "--as",
            "system:serviceaccount:team:reader",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("User \"system:serviceaccount:team:reader\" cannot list"),
        "{}",
        text(&out)
    );
    ts.shutdown().await;
}

#[tokio::test]
async fn bad_rbac_objects_are_refused_with_the_field_that_is_wrong() {
    let ts = start().await;
    for (yaml, want) in [
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: { name: b, namespace: team }\nroleRef: { apiGroup: rbac.authorization.k8s.io, kind: Secret, name: r }\n",
            "roleRef.kind: Unsupported value: \"Secret\"",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: { name: b }\nroleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: r }\n",
            "roleRef.kind: Unsupported value: \"Role\"",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: { name: b }\nroleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: r }\nsubjects: [{ kind: ServiceAccount, name: sa }]\n",
            "subjects[0].namespace: Required value",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: { name: r, namespace: team }\nrules: [{ apiGroups: [\"\"], resources: [\"pods\"] }]\n",
            "rules[0].verbs: Required value",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: r }\nrules: [{ verbs: [get], resources: [pods] }]\n",
            "rules[0].apiGroups: Required value",
        ),
        (
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: r }\naggregationRule: { clusterRoleSelectors: [{ matchLabels: { a: b } }] }\n",
            "aggregated ClusterRoles are not supported",
        ),
    ] {
        let file = ts.dir.path().join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = run(&ts, &["create", "-f", file.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{yaml}");
        assert!(text(&out).contains(want), "{yaml}: {}", text(&out));
    }
    // A binding's role cannot be changed afterwards, as on kube-apiserver.
    apply(&ts, RBAC).await;
    let out = run(
        &ts,
        &[
            "patch", "rolebinding", "reader", "-n", NS, "--type", "merge", "-p",
            r#"{"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"cluster-admin"}}"#,
        ],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("cannot change roleRef"),
        "{}",
        text(&out)
    );
    ts.shutdown().await;
}

#[tokio::test]
async fn the_audit_log_records_each_decision_with_its_user() {
    let ts = start().await;
    apply(&ts, RBAC).await;
    let token = token_for(&ts, "reader").await;
    let sessions: Api<Session> = Api::namespaced(client_with(&ts, &token), NS);
    sessions.list(&ListParams::default()).await.unwrap();
    let _ = sessions
        .delete("x", &DeleteParams::default())
        .await
        .unwrap_err();
    let path = ts.config().audit_log.unwrap();
    let events: Vec<Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["user"]["username"] == "system:serviceaccount:team:reader")
        .collect();
    let decided = |verb: &str, decision: &str| {
        mine.iter().any(|e| {
            e["verb"] == verb
                && e["objectRef"]["resource"] == "sessions"
                && e["objectRef"]["namespace"] == NS
                && e["annotations"]["authorization.k8s.io/decision"] == decision
        })
    };
    assert!(decided("list", "allow"), "{mine:#?}");
    assert!(decided("delete", "forbid"), "{mine:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["user"]["username"] == "medforge-admin" && e["verb"] == "create"),
        "the admin's writes are recorded too"
    );
    ts.shutdown().await;
}
