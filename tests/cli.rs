//! The `medforge` binary as a user meets it: usage errors, `medforge crds`
//! and `medforge create-admin`.

use std::process::{Command, Output};

fn medforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medforge"))
        .args(args)
        .output()
        .expect("run medforge")
}

/// Runs medforge, asserts the usage-error exit code 2, and that its stderr
/// says each of `says`.
fn usage_error(args: &[&str], says: &[&str]) {
    let out = medforge(args);
    assert!(!out.status.success(), "{args:?}");
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for said in says {
        assert!(stderr.contains(said), "{args:?}: {said:?} not in {stderr}");
    }
}

#[test]
fn unknown_subcommand_exits_non_zero_with_usage() {
    usage_error(
        &["frobnicate"],
        &["unrecognized subcommand 'frobnicate'", "Usage: medforge"],
    );
}

#[test]
fn bad_flag_exits_non_zero_with_usage() {
    usage_error(
        &["crds", "--no-such-flag"],
        &[
            "unexpected argument '--no-such-flag'",
            "Usage: medforge crds",
        ],
    );
}

#[test]
fn no_subcommand_prints_help_and_fails() {
    usage_error(&[], &["Usage: medforge"]);
}

#[test]
fn crds_prints_one_document_per_crd() {
    let out = medforge(&["crds"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<&str> = text
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .collect();
    assert_eq!(docs.len(), 4);
    let mut names = Vec::new();
    for doc in docs {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(doc).unwrap();
        names.push(crd.metadata.name.unwrap());
    }
    assert_eq!(
        names,
        [
            "sessions.medforge.dev",
            "gpunodes.medforge.dev",
            "packs.medforge.dev",
            "workspacesnapshots.medforge.dev"
        ]
    );
}

#[test]
fn crds_write_creates_one_file_per_crd_and_reports_unwritable_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let out = medforge(&["crds", "--write", dir.path().to_str().unwrap()]);
    assert!(out.status.success());
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "gpunodes.medforge.dev.yaml",
            "packs.medforge.dev.yaml",
            "sessions.medforge.dev.yaml",
            "workspacesnapshots.medforge.dev.yaml"
        ]
    );

    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let out = medforge(&["crds", "--write", blocker.join("sub").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("medforge: creating "), "{stderr}");
}

#[test]
fn a_lease_duration_is_whole_seconds() {
    for bad in ["500ms", "1500ms", "0s"] {
        usage_error(
            &["operator", "--no-agent", "--lease-duration", bad],
            &["a whole number of seconds"],
        );
    }
}

#[test]
fn a_session_policy_that_cannot_hold_is_refused_before_anything_starts() {
    usage_error(
        &["api", "--session-maximum", "ram=1Gi"],
        &["unknown key \"ram\": use one of cpu, memory, shm, pids, gpus"],
    );
    usage_error(
        &["operator", "--session-default", "memory=lots"],
        &["memory: \"lots\" is not a quantity"],
    );
    // Each value reads, but a default is above its maximum: refused at
    // start, before the control plane is dialled (none is given here).
    let out = medforge(&[
        "api",
        "--kubeconfig",
        "/nonexistent/kubeconfig",
        "--session-default",
        "memory=32Gi",
        "--session-maximum",
        "memory=16Gi",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the session policy: the default resources.memory 32Gi is above its maximum 16Gi"
        ),
        "{stderr}"
    );
}

#[test]
fn a_signup_mode_that_cannot_work_is_refused_before_anything_starts() {
    for (args, says) in [
        (
            &["--signup-mode", "public"][..],
            "unknown signup mode \"public\"",
        ),
        (
            &["--signup-mode", "domains"][..],
            "`domains` needs at least one domain",
        ),
        (
            &["--signup-mode", "open", "--signup-domains", "example.org"][..],
            "the signup mode is open",
        ),
    ] {
        let mut all = vec!["api", "--kubeconfig", "/nonexistent/kubeconfig"];
        all.extend_from_slice(args);
        let out = medforge(&all);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

fn config_check(file: &std::path::Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medforge"));
    cmd.args(["config", "check", "--config"]).arg(file);
    for (k, _) in std::env::vars() {
        if k.starts_with("MEDFORGE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run medforge")
}

#[test]
fn config_check_prints_what_is_in_effect_and_where_it_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medforge.toml");
    std::fs::write(
        &file,
        r#"
# The api
domain = "medforge.example.org"
signup-mode = "invite"
database-url = "postgres://medforge:s3cret@db.internal/medforge"
[session-maximum]
memory = "64Gi"
"#,
    )
    .unwrap();
    let out = config_check(&file, &[("MEDFORGE_SIGNUP_MODE", "open")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("# configuration file: {}", file.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("domain = medforge.example.org  # file"),
        "{stdout}"
    );
    // The environment overrides the file.
    assert!(
        stdout.contains("signup-mode = open  # environment"),
        "{stdout}"
    );
    assert!(
        stdout.contains("session-maximum = [memory=64Gi]  # file"),
        "{stdout}"
    );
    assert!(
        stdout.contains("max-sessions-per-user = 1  # built in"),
        "{stdout}"
    );
    assert!(
        stdout.contains("database-url = postgres://medforge:***@db.internal/medforge  # file"),
        "{stdout}"
    );
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[test]
fn a_configuration_that_cannot_work_is_refused_naming_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("medforge.toml");
    for (text, says) in [
        ("domian = \"x\"", "unknown key `domian`"),
        ("max-sessions-per-user = -1", "key `max-sessions-per-user`"),
        ("signup-mode = \"public\"", "unknown signup mode \"public\""),
        (
            "[session-default]\nmemory = \"300Gi\"",
            "the default resources.memory 300Gi is above its maximum 256Gi",
        ),
        ("domain = ", "not valid TOML"),
        (
            "token-idle-ttl = \"200h\"",
            "--token-idle-ttl (720000s) is longer than --token-max-ttl (604800s)",
        ),
        (
            "trusted-proxy = [\"caddy.internal\"]",
            "key `trusted-proxy`",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let out = config_check(&file, &[]);
        assert_eq!(out.status.code(), Some(1), "{text}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{text}: {stderr}");
        if says.contains("key `") || says.contains("TOML") {
            assert!(
                stderr.contains(&file.display().to_string()),
                "{text}: {stderr}"
            );
        }
    }
    // A file named but missing is an error, not the built-in defaults.
    let out = config_check(&dir.path().join("missing.toml"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the configuration file"));
    // The same file stops a start, before anything runs.
    std::fs::write(&file, "domian = \"x\"").unwrap();
    let out = medforge(&["api", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `domian`"));
}

/// `medforge create-admin` with the password on standard input.
fn create_admin(data_dir: &std::path::Path, extra: &[&str]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_medforge"))
        .args(["create-admin", "--email", "ops@example.org", "--data-dir"])
        .arg(data_dir)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run medforge");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"the admin's own\n")
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Someone signed up as `ops@example.org` before the operator made it the
/// admin: `create-admin` refuses (exit 1, saying why and what to run) and
/// changes nothing; with `--reset-password` it sets the password, ends the
/// registrant's logins and makes the account an admin.
#[tokio::test]
async fn create_admin_never_promotes_a_self_registered_account_silently() {
    use medforge_api::users;
    let dir = tempfile::tempdir().unwrap();
    let db = medforge_api::Db::connect(None, dir.path()).await.unwrap();
    db.migrate().await.unwrap();
    let squatter = users::create_user(&db, "ops@example.org", "not-a-hash", false, 0)
        .await
        .unwrap();
    let login = "ab".repeat(32);
    users::insert_token(&db, &login, &squatter.id, 0, i64::MAX)
        .await
        .unwrap();

    let out = create_admin(dir.path(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for said in [
        "ops@example.org exists and is not an admin",
        "--reset-password",
    ] {
        assert!(stderr.contains(said), "{said:?} not in {stderr}");
    }
    let user = users::get_user(&db, &squatter.id).await.unwrap().unwrap();
    assert!(!user.is_admin, "refused means not promoted");
    assert!(users::find_token(&db, &login).await.unwrap().is_some());

    let out = create_admin(dir.path(), &["--reset-password"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = users::get_user(&db, &squatter.id).await.unwrap().unwrap();
    assert!(user.is_admin && user.can_use_internal);
    assert!(
        users::find_token(&db, &login).await.unwrap().is_none(),
        "the registrant's login ended"
    );
    // That the new password works and the old one does not is checked
    // through the api's login (api tests, `auth`).
}

/// An audit event of the agent's ServiceAccount: `verb` on Sessions (or
/// their `sub`resource) in `ns`, with the decision.
fn audit_line(verb: &str, sub: &str, ns: &str, decision: &str) -> String {
    let mut object =
        serde_json::json!({ "resource": "sessions", "apiGroup": "medforge.dev", "namespace": ns });
    if !sub.is_empty() {
        object["subresource"] = serde_json::json!(sub);
    }
    serde_json::json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "verb": verb, "requestURI": "/x",
        "user": { "username": "system:serviceaccount:sys:agent", "groups": ["system:authenticated"] },
        "objectRef": object,
        "annotations": { "authorization.k8s.io/decision": decision },
    })
    .to_string()
}

const RBAC_YAML: &str = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: agent, namespace: work }
rules:
  - { apiGroups: [medforge.dev], resources: [sessions], verbs: [get, patch] }
  - { apiGroups: [medforge.dev], resources: [sessions/status], verbs: [update] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: agent, namespace: work }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: agent }
subjects: [{ kind: ServiceAccount, name: agent, namespace: sys }]
---
apiVersion: v1
kind: ConfigMap
metadata: { name: skipped, namespace: work }
";

#[test]
fn rbac_report_passes_only_when_every_grant_was_used_and_nothing_refused() {
    let dir = tempfile::tempdir().unwrap();
    let rbac = dir.path().join("rbac.yaml");
    std::fs::write(&rbac, RBAC_YAML).unwrap();
    let run = |lines: &[String]| {
        let log = dir.path().join("audit.log");
        std::fs::write(&log, lines.join("\n")).unwrap();
        medforge(&[
            "rbac-report",
            "--audit-log",
            log.to_str().unwrap(),
            "--rbac",
            rbac.to_str().unwrap(),
        ])
    };
    let all_used = [
        audit_line("get", "", "work", "allow"),
        audit_line("patch", "", "work", "allow"),
        audit_line("update", "status", "work", "allow"),
    ];
    let out = run(&all_used);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("system:serviceaccount:sys:agent: 3 requests, 0 refused, 0 unused grants"),
        "{said}"
    );

    // No patch, and a refused delete.
    let out = run(&[
        audit_line("get", "", "work", "allow"),
        audit_line("update", "status", "work", "allow"),
        audit_line("delete", "", "work", "forbid"),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert!(
        said.contains("unused:  patch sessions (medforge.dev) in work"),
        "{said}"
    );
    assert!(
        said.contains("refused: delete sessions (medforge.dev) in work"),
        "{said}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused requests or unused grants"));

    // A log that is not JSON lines is refused, naming the line.
    let out = run(&["not json".to_string()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit log line 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
