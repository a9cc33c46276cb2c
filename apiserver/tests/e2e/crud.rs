//! The semantics controllers depend on, through kube's `Api`.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use medforge_crds::{Session, SessionPhase, SessionStatus};
use serde_json::json;

use crate::common::{self, WITHIN, held_session, session, status};
use medforge_testkit::eventually;

/// Deletes `name`, which finalizers hold: the object as returned, its deletion pending.
async fn delete_held<K>(api: &Api<K>, name: &str) -> K
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object is returned while finalizers hold it")
}

#[tokio::test]
async fn create_get_list_replace_delete_with_system_metadata() {
    let (ts, api) = common::server_and_sessions().await;
    let created = common::create(&api, &session("s1", "alice")).await;
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    // Defaults from the schema were applied.
    assert_eq!(created.spec.state, medforge_crds::DesiredState::Running);

    let got = api.get("s1").await.unwrap();
    assert_eq!(got.metadata.uid, created.metadata.uid);
    assert_eq!(common::count(&api).await, 1);

    // A label change does not bump generation; a spec change does.
    let mut labelled = got.clone();
    labelled
        .metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("team".into(), "radiology".into());
    let labelled = api
        .replace("s1", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let rv2: u64 = labelled
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let mut respec = labelled.clone();
    respec.spec.gpus = 2;
    let respec = api
        .replace("s1", &PostParams::default(), &respec)
        .await
        .unwrap();
    assert_eq!(respec.metadata.generation, Some(2));
    assert_eq!(respec.metadata.uid, created.metadata.uid);
    assert_eq!(
        respec.metadata.creation_timestamp,
        created.metadata.creation_timestamp
    );

    api.delete("s1", &DeleteParams::default()).await.unwrap();
    let err = status(api.get("s1").await.unwrap_err());
    assert_eq!(err.code, 404);
    assert_eq!(err.reason, "NotFound");
    assert_eq!(err.message, "sessions.medforge.dev \"s1\" not found");
    ts.server.shutdown().await;
}

#[tokio::test]
async fn resource_version_increases_across_the_store_and_stale_writes_conflict() {
    let (ts, sessions) = common::server_and_sessions().await;
    let leases: Api<Lease> = Api::namespaced(ts.client.clone(), "default");
    let mut last = 0u64;
    for i in 0..5 {
        let s = common::create(&sessions, &session(&format!("s{i}"), "bob")).await;
        let l: Lease = serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": format!("l{i}")}, "spec": {"holderIdentity": "x"}
        }))
        .unwrap();
        let l = common::create(&leases, &l).await;
        for rv in [s.metadata.resource_version, l.metadata.resource_version] {
            let rv: u64 = rv.unwrap().parse().unwrap();
            assert!(rv > last, "{rv} after {last}");
            last = rv;
        }
    }
    let stale = sessions.get("s0").await.unwrap();
    let mut fresh = stale.clone();
    fresh.spec.gpus = 3;
    sessions
        .replace("s0", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let mut again = stale.clone();
    again.spec.gpus = 4;
    let err = status(
        sessions
            .replace("s0", &PostParams::default(), &again)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "Conflict");
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    assert_eq!(sessions.get("s0").await.unwrap().spec.gpus, 3);

    // Creating an existing object: 409 AlreadyExists.
    let err = status(
        sessions
            .create(&PostParams::default(), &session("s0", "bob"))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    ts.server.shutdown().await;
}

#[tokio::test]
async fn status_subresource_is_the_only_writer_of_status() {
    let (ts, api) = common::server_and_sessions().await;
    let mut s = session("st", "carol");
    s.status = Some(SessionStatus {
        phase: Some(SessionPhase::Running),
        ..Default::default()
    });
    let created = common::create(&api, &s).await;
    assert_eq!(
        created.status, None,
        "create through the main resource drops status"
    );

    let patched = api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Scheduled", "nodeName": "n1"}, "spec": {"gpus": 7}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        patched.status.as_ref().unwrap().phase,
        Some(SessionPhase::Scheduled)
    );
    assert_eq!(
        patched.spec.gpus, 1,
        "the status subresource never writes spec"
    );
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    let mut main = patched.clone();
    main.status.as_mut().unwrap().phase = Some(SessionPhase::Failed);
    main.spec.gpus = 2;
    let replaced = api
        .replace("st", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(
        replaced.status.unwrap().phase,
        Some(SessionPhase::Scheduled),
        "the main resource never writes status"
    );
    assert_eq!(replaced.spec.gpus, 2);
    assert_eq!(replaced.metadata.generation, Some(2));

    // A status write that changes nothing is not a write.
    let before = api.get("st").await.unwrap();
    let same = api
        .patch_status(
            "st",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Scheduled"}})),
        )
        .await
        .unwrap();
    assert_eq!(same.resource_version(), before.resource_version());
    ts.server.shutdown().await;
}

#[tokio::test]
async fn generate_name_and_finalizers() {
    let (ts, api) = common::server_and_sessions().await;
    let mut s = session("", "dave");
    s.metadata.name = None;
    s.metadata.generate_name = Some("work-".into());
    s.metadata.finalizers = Some(vec!["medforge.dev/agent".into()]);
    let created = common::create(&api, &s).await;
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("work-") && name.len() == 10, "{name}");

    let pending = delete_held(&api, &name).await;
    assert!(pending.metadata.deletion_timestamp.is_some());
    let still = api.get(&name).await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());

    // No new finalizers on an object being deleted.
    let err = status(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["medforge.dev/agent", "x.dev/other"]}}),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);

    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["medforge.dev/agent"]},
                {"op": "remove", "path": "/metadata/finalizers"}
            ]))
            .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(status(api.get(&name).await.unwrap_err()).code, 404);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn invalid_objects_get_422_naming_the_field() {
    let (ts, api) = common::server_and_sessions().await;
    let mut s = session("bad", "erin");
    s.spec.gpus = 9;
    let err = status(api.create(&PostParams::default(), &s).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Session.medforge.dev \"bad\" is invalid: spec.gpus: Invalid value: 9: spec.gpus in body should be less than or equal to 8"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.gpus");

    let raw: Api<kube::api::DynamicObject> = Api::namespaced_with(
        ts.client.clone(),
        "default",
        &kube::api::ApiResource::erase::<Session>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
        "metadata": {"name": "noowner"}, "spec": {"pack": "p", "state": "Sleeping"}
    }))
    .unwrap();
    let err = status(raw.create(&PostParams::default(), &obj).await.unwrap_err());
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("spec.owner: Required value"),
        "{}",
        err.message
    );
    assert!(
        err.message
            .contains("spec.state: Unsupported value: \"Sleeping\""),
        "{}",
        err.message
    );

    // CEL: owner is immutable.
    common::create(&api, &session("good", "erin")).await;
    let err = status(
        api.patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"owner": "mallory"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(
        err.message,
        "Session.medforge.dev \"good\" is invalid: spec.owner: Invalid value: \"string\": owner is immutable"
    );
    assert_eq!(err.details.unwrap().causes[0].field, "spec.owner");
    assert_eq!(api.get("good").await.unwrap().spec.owner, "erin");
    // CEL: restoreFrom is fixed, whether set, changed or removed later.
    for (patch, before) in [
        (
            json!({"spec": {"workspace": {"restoreFrom": "snap-a"}}}),
            None,
        ),
        (
            json!({"spec": {"workspace": {"restoreFrom": "snap-a"}}}),
            Some("snap-b"),
        ),
        (json!({"spec": {"workspace": null}}), Some("snap-b")),
    ] {
        let name = format!("restored-{}", before.unwrap_or("none"));
        let mut s = session(&name, "erin");
        if let Some(b) = before {
            s.spec.workspace = Some(medforge_crds::WorkspaceSpec {
                quota: None,
                restore_from: Some(b.into()),
            });
        }
        let _ = api.delete(&name, &Default::default()).await;
        common::create(&api, &s).await;
        let err = status(
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch.clone()))
                .await
                .unwrap_err(),
        );
        assert_eq!(err.code, 422, "{patch}");
        assert!(
            err.message.contains("workspace.restoreFrom is fixed"),
            "{patch}: {}",
            err.message
        );
        let stored = api.get(&name).await.unwrap();
        assert_eq!(
            stored
                .spec
                .workspace
                .and_then(|w| w.restore_from)
                .as_deref(),
            before
        );
    }
    // Other workspace changes still go through.
    api.patch(
        "good",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"workspace": {"quota": "1Gi"}}})),
    )
    .await
    .unwrap();
    // Nothing invalid was stored.
    assert_eq!(common::count(&api).await, 3);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn selectors_filter_lists() {
    let (ts, api) = common::server_and_sessions().await;
    for (name, owner, team) in [("a", "u1", "x"), ("b", "u2", "x"), ("c", "u1", "y")] {
        let mut s = session(name, owner);
        s.metadata.labels = Some([("team".to_string(), team.to_string())].into());
        common::create(&api, &s).await;
    }
    let labels = |s: &str| ListParams::default().labels(s);
    let fields = |s: &str| ListParams::default().fields(s);
    for (params, want) in [
        (labels("team=x"), &["a", "b"][..]),
        (labels("team in (y),team!=x"), &["c"]),
        (fields("metadata.name=b"), &["b"]),
        (fields("spec.owner=u1"), &["a", "c"]),
        (
            fields("metadata.namespace=default,metadata.name!=a"),
            &["b", "c"],
        ),
    ] {
        assert_eq!(common::names(&api, &params).await, want, "{params:?}");
    }

    for (params, reason, message) in [
        (labels("!"), "BadRequest", ""),
        (labels("a b"), "BadRequest", ""),
        (
            fields("spec.pack=x"),
            "BadRequest",
            "is not a known field selector",
        ),
    ] {
        let err = status(api.list(&params).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (400, reason), "{params:?}");
        assert!(err.message.contains(message), "{params:?}: {}", err.message);
    }

    // Pagination: a consistent list in pages.
    let page1 = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().unwrap();
    common::create(&api, &session("aa", "u9")).await;
    let page2 = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let page2_names: Vec<_> = page2.iter().map(ResourceExt::name_any).collect();
    assert_eq!(
        page2_names,
        ["c"],
        "a page shows the list as of the first page"
    );
    assert!(page2.metadata.continue_.is_none());
    assert_eq!(
        page2.metadata.resource_version,
        page1.metadata.resource_version
    );
    ts.server.shutdown().await;
}

#[tokio::test]
async fn objects_and_resource_versions_survive_a_restart() {
    let (ts, api) = common::server_and_sessions().await;
    for i in 0..3 {
        common::create(&api, &session(&format!("p{i}"), "frank")).await;
    }
    let before = api.list(&ListParams::default()).await.unwrap();
    let rv_before: u64 = before
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    // A second server on the same data directory is refused.
    let second = medforge_apiserver::start(ts.config()).await;
    assert!(
        matches!(second, Err(medforge_apiserver::Error::Locked(_))),
        "{second:?}"
    );
    let token = ts.server.token().to_string();
    let ts = ts.restart().await;
    assert_eq!(ts.server.token(), token, "the token is kept");
    let api = common::sessions(&ts);
    let after = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(after.items, before.items);
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    let s = common::create(&api, &session("p9", "frank")).await;
    let rv: u64 = s.metadata.resource_version.unwrap().parse().unwrap();
    assert!(rv > rv_before);
    ts.server.shutdown().await;
}

/// The data directory is 0700 and nothing in it (store, WAL, keys, token,
/// kubeconfig, lock) can be read by group or others.
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("p0", "frank")).await;
    let dir = ts.data_dir().to_path_buf();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(
            mode(&path) & 0o077,
            0,
            "{} is {:o}",
            path.display(),
            mode(&path)
        );
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for file in ["store.db", "store.db-wal"] {
        assert!(seen.iter().any(|s| s == file), "{file} in {seen:?}");
    }
    ts.server.shutdown().await;
}

#[tokio::test]
async fn fifty_writers_with_optimistic_concurrency_lose_no_increment() {
    let ts = common::start().await;
    let api: Api<Lease> = Api::namespaced(ts.client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "counter"}, "spec": {"leaseTransitions": 0}
    }))
    .unwrap();
    common::create(&api, &lease).await;
    const TASKS: i32 = 50;
    const EACH: i32 = 2;
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..EACH {
                loop {
                    let mut l = api.get("counter").await.unwrap();
                    let spec = l.spec.get_or_insert_with(Default::default);
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    match api.replace("counter", &PostParams::default(), &l).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let l = api.get("counter").await.unwrap();
    assert_eq!(l.spec.unwrap().lease_transitions, Some(TASKS * EACH));
    assert!(conflicts > 0, "the writers did race");
    ts.server.shutdown().await;
}

#[tokio::test]
async fn namespaces_gate_creation_and_delete_their_contents() {
    let ts = common::start().await;
    let nss: Api<Namespace> = Api::all(ts.client.clone());
    let names = common::names(&nss, &ListParams::default()).await;
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    let api: Api<Session> = Api::namespaced(ts.client.clone(), "team-a");
    let err = status(
        api.create(&PostParams::default(), &session("x", "u"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert_eq!(err.message, "namespaces \"team-a\" not found");

    let ns: Namespace = serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}),
    )
    .unwrap();
    let ns = common::create(&nss, &ns).await;
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    common::create(&api, &session("x", "u")).await;
    let held = held_session("held", "u");
    common::create(&api, &held).await;

    nss.delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = nss.get("team-a").await.unwrap();
    assert_eq!(
        terminating.status.unwrap().phase.as_deref(),
        Some("Terminating")
    );
    let err = status(
        api.create(&PostParams::default(), &session("y", "u"))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 403);
    // The namespace waits for the finalizer of its last object.
    eventually("x is gone", WITHIN, || async {
        api.get("x").await.is_err()
    })
    .await;
    assert!(common::is_deleting(&api, "held").await);
    assert!(nss.get("team-a").await.is_ok());
    common::merge(&api, "held", json!({"metadata": {"finalizers": null}})).await;
    eventually("namespace team-a is gone", WITHIN, || async {
        nss.get("team-a").await.is_err()
    })
    .await;
    ts.server.shutdown().await;
}

#[tokio::test]
async fn patches_merge_json_and_server_side_apply() {
    let (ts, api) = common::server_and_sessions().await;
    // Apply creates.
    let applied = api
        .patch(
            "ssa",
            &PatchParams::apply("alice-tool"),
            &Patch::Apply(json!({
                "apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
                "metadata": {"name": "ssa", "labels": {"a": "1"}},
                "spec": {"owner": "alice", "pack": "jupyter", "gpus": 1}
            })),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec.gpus, 1);
    let mf = applied.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("alice-tool"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Another manager setting the same field to another value conflicts.
    let err = status(
        api.patch(
            "ssa",
            &PatchParams::apply("bob-tool"),
            &Patch::Apply(json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
                "metadata": {"name": "ssa"}, "spec": {"owner": "alice", "pack": "jupyter", "gpus": 2}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"alice-tool\""),
        "{}",
        err.message
    );
    // Forced, it wins.
    let forced = api
        .patch(
            "ssa",
            &PatchParams::apply("bob-tool").force(),
            &Patch::Apply(json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
                "metadata": {"name": "ssa"}, "spec": {"owner": "alice", "pack": "jupyter", "gpus": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.gpus, 2);
    // Alice stops applying the label: it is removed.
    let after = api
        .patch(
            "ssa",
            &PatchParams::apply("alice-tool"),
            &Patch::Apply(
                json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
                "metadata": {"name": "ssa"}, "spec": {"owner": "alice", "pack": "jupyter"}}),
            ),
        )
        .await
        .unwrap();
    assert!(after.metadata.labels.unwrap_or_default().is_empty());
    assert_eq!(after.spec.gpus, 2);

    // JSON merge patch and JSON patch.
    let merged = common::merge(&api, "ssa", json!({"spec": {"idleTimeout": "30m"}})).await;
    assert_eq!(merged.spec.idle_timeout.as_deref(), Some("30m"));
    let err = status(
        api.patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "test", "path": "/spec/gpus", "value": 5}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    // Strategic merge patch is for built-in kinds only, as in Kubernetes.
    let err = status(
        api.patch(
            "ssa",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"gpus": 1}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    // Status through apply on the status subresource.
    let st = api
        .patch_status(
            "ssa",
            &PatchParams::apply("agent"),
            &Patch::Apply(json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "reason": "Up", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.unwrap().phase, Some(SessionPhase::Running));

    // Dry run stores nothing.
    let rv = api.get("ssa").await.unwrap().metadata.resource_version;
    let dry = api
        .patch(
            "ssa",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"spec": {"gpus": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(dry.spec.gpus, 4);
    let now = api.get("ssa").await.unwrap();
    assert_eq!(now.spec.gpus, 2);
    assert_eq!(now.metadata.resource_version, rv);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn delete_collection_deletes_what_the_selector_matches() {
    let (ts, api) = common::server_and_sessions().await;
    for (name, tier) in [("a", "gpu"), ("b", "gpu"), ("c", "cpu")] {
        let mut s = session(name, "u");
        s.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        if name == "b" {
            s.metadata.finalizers = Some(vec!["medforge.dev/agent".into()]);
        }
        common::create(&api, &s).await;
    }
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("tier=gpu"),
        )
        .await
        .unwrap()
        .left()
        .expect("the deleted objects");
    let mut names: Vec<String> = deleted
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let left = common::names(&api, &ListParams::default()).await;
    assert_eq!(left, ["b", "c"], "b waits for its finalizer");
    assert!(common::is_deleting(&api, "b").await);
    ts.server.shutdown().await;
}

/// kube-apiserver (`rest.BeforeDelete`): when deletion of an object that
/// tracks `metadata.generation` is deferred by finalizers, setting
/// `deletionTimestamp` increments `generation`, once; objects without a
/// generation (Namespaces, Leases) get none.
#[tokio::test]
async fn deletion_with_finalizers_bumps_generation_once() {
    let (ts, api) = common::server_and_sessions().await;
    let s = held_session("gen", "dave");
    let created = common::create(&api, &s).await;
    assert_eq!(created.metadata.generation, Some(1));
    let pending = delete_held(&api, "gen").await;
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.generation, Some(2));
    // A second delete changes nothing.
    let again = delete_held(&api, "gen").await;
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(again.resource_version(), pending.resource_version());

    let leases: Api<Lease> = Api::namespaced(ts.client.clone(), "default");
    let mut l = Lease::default();
    l.metadata.name = Some("held".into());
    l.metadata.finalizers = Some(vec!["medforge.dev/test".into()]);
    common::create(&leases, &l).await;
    let pending = delete_held(&leases, "held").await;
    assert_eq!(pending.metadata.generation, None);
    ts.server.shutdown().await;
}

/// kube-apiserver (`ValidatePatchOptions`): an apply patch without
/// `fieldManager`, or `force` on a non-apply patch, is `422 Invalid` for
/// `PatchOptions.meta.k8s.io ""`, naming the field; a too-long
/// `fieldManager` is `422` for the verb's options kind.
#[tokio::test]
async fn bad_patch_options_are_422_invalid() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("opts", "dave")).await;
    let apply = |manager: Option<&str>, force: bool| {
        let mut q = String::new();
        if let Some(m) = manager {
            q.push_str(&format!("fieldManager={m}&"));
        }
        if force {
            q.push_str("force=true");
        }
        http::Request::builder()
            .method("PATCH")
            .uri(format!(
                "/apis/medforge.dev/v1alpha1/namespaces/default/sessions/opts?{q}"
            ))
            .header("content-type", "application/apply-patch+yaml")
            .body(br#"{"apiVersion":"medforge.dev/v1alpha1","kind":"Session","metadata":{"name":"opts"},"spec":{"owner":"dave","pack":"p"}}"#.to_vec())
            .unwrap()
    };
    let err = |r: Result<String, kube::Error>| match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    };
    let s = err(ts.client.request_text(apply(None, false)).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let d = s.details.unwrap();
    assert_eq!(
        (d.group.as_str(), d.kind.as_str()),
        ("meta.k8s.io", "PatchOptions")
    );
    assert_eq!(d.causes[0].field, "fieldManager");
    assert_eq!(d.causes[0].reason, "FieldValueRequired");

    let merge_forced = http::Request::builder()
        .method("PATCH")
        .uri("/apis/medforge.dev/v1alpha1/namespaces/default/sessions/opts?force=true")
        .header("content-type", "application/merge-patch+json")
        .body(b"{}".to_vec())
        .unwrap();
    let long = "m".repeat(129);
    let create_long = http::Request::builder()
        .method("POST")
        .uri(format!(
            "/apis/medforge.dev/v1alpha1/namespaces/default/sessions?fieldManager={long}"
        ))
        .header("content-type", "application/json")
        .body(br#"{"apiVersion":"medforge.dev/v1alpha1","kind":"Session","metadata":{"name":"other"},"spec":{"owner":"dave","pack":"p"}}"#.to_vec())
        .unwrap();
    // What each message starts and ends with.
    for (what, request, starts, ends) in [
        (
            "force on a merge patch",
            merge_forced,
            "",
            "force: Forbidden: may not be specified for non-apply patch",
        ),
        (
            "a too long fieldManager",
            apply(Some(&long), false),
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long",
            "",
        ),
        (
            "a too long fieldManager on create",
            create_long,
            "CreateOptions.meta.k8s.io",
            "",
        ),
    ] {
        let s = err(ts.client.request_text(request).await);
        assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{what}");
        let message = &s.message;
        assert!(
            message.starts_with(starts) && message.ends_with(ends),
            "{what}: {message}"
        );
    }
    // Nothing was written by the refused requests.
    assert!(api.get_opt("other").await.unwrap().is_none());
    ts.server.shutdown().await;
}
