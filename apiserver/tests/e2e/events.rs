//! Events in both groups: stored once as `events.k8s.io/v1`, served also as
//! the core `v1` view that `kubectl describe` reads, and expired a fixed time
//! after their last write.

use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Event as CoreEvent, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent};
use medforge_testkit::eventually;

use crate::common::{self, session};

#[tokio::test]
async fn recorder_events_are_listed_and_watched_in_the_core_group() {
    let (ts, sessions) = common::server_and_sessions().await;
    let s = common::create(&sessions, &session("ev", "u")).await;
    let uid = s.metadata.uid.clone().unwrap();
    let core: Api<CoreEvent> = Api::namespaced(ts.client.clone(), "default");
    let list = core.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    assert!(list.items.is_empty());
    let mut watch = common::watch_from(&core, &rv).await;

    common::record(&ts, &s, "Started", "container started on gpu-1").await;

    // kubectl describe's query: the involved object's name, namespace, kind and uid.
    let selector = format!(
        "involvedObject.name=ev,involvedObject.namespace=default,involvedObject.kind=Session,involvedObject.uid={uid}"
    );
    let found = core
        .list(&ListParams::default().fields(&selector))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1, "{selector}");
    let e = &found.items[0];
    assert_eq!(e.message.as_deref(), Some("container started on gpu-1"));
    assert_eq!(e.reason.as_deref(), Some("Started"));
    assert_eq!(e.type_.as_deref(), Some("Normal"));
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("medforge-node-agent")
    );
    assert_eq!(e.reporting_instance.as_deref(), Some("gpu-1"));
    assert_eq!(e.involved_object.uid.as_deref(), Some(uid.as_str()));
    assert!(e.event_time.is_some());
    // Selectors that match nothing, and a label the core view does not know.
    assert!(
        core.list(&ListParams::default().fields("involvedObject.name=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        core.list(
            &ListParams::default()
                .fields("source=medforge-node-agent,reportingComponent=medforge-node-agent")
        )
        .await
        .unwrap()
        .items
        .is_empty(),
        "the recorder sets no deprecated source"
    );
    let err = core
        .list(&ListParams::default().fields("regarding.name=ev"))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("field label not supported"),
        "{err}"
    );

    // The same object under both groups, at the same resourceVersion.
    let stored: Api<Event> = Api::namespaced(ts.client.clone(), "default");
    let name = e.metadata.name.clone().unwrap();
    let same = stored.get(&name).await.unwrap();
    assert_eq!(same.metadata.resource_version, e.metadata.resource_version);
    assert_eq!(same.note, e.message);

    match tokio::time::timeout(Duration::from_secs(20), watch.try_next())
        .await
        .expect("a watch event")
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(w) => {
            assert_eq!(w.metadata.name.as_deref(), Some(name.as_str()));
            assert_eq!(w.message.as_deref(), Some("container started on gpu-1"));
        }
        other => panic!("expected ADDED, got {other:?}"),
    }

    // Deleting through the core view deletes the one stored object.
    core.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(stored.get_opt(&name).await.unwrap().is_none());
    ts.server.shutdown().await;
}

#[tokio::test]
async fn a_core_event_written_by_an_old_recorder_reads_in_both_groups() {
    let ts = common::start().await;
    let core: Api<CoreEvent> = Api::namespaced(ts.client.clone(), "default");
    let mut e = CoreEvent {
        involved_object: ObjectReference {
            kind: Some("Session".into()),
            name: Some("legacy".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        message: Some("pulled the image".into()),
        reason: Some("Pulled".into()),
        type_: Some("Normal".into()),
        count: Some(4),
        ..Default::default()
    };
    e.metadata.name = Some("legacy.1".into());
    // No eventTime: optional in core v1, as on kube-apiserver.
    let created = common::create(&core, &e).await;
    assert_eq!(created.count, Some(4));
    let stored: Api<Event> = Api::namespaced(ts.client.clone(), "default");
    let same = stored.get("legacy.1").await.unwrap();
    assert_eq!(same.note.as_deref(), Some("pulled the image"));
    assert_eq!(same.deprecated_count, Some(4));
    assert_eq!(same.regarding.unwrap().name.as_deref(), Some("legacy"));

    // Bad input is refused with the field named.
    let mut bad = e.clone();
    bad.metadata.name = Some("legacy.2".into());
    bad.type_ = Some("Fatal".into());
    let err = core.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("type: Unsupported value: \"Fatal\""),
        "{err}"
    );
    ts.server.shutdown().await;
}

#[tokio::test]
async fn events_expire_after_their_ttl_and_others_stay() {
    let ts = common::start_with(|mut c| {
        c.event_ttl = Duration::from_secs(2);
        c
    })
    .await;
    let sessions = common::sessions(&ts);
    let s = common::create(&sessions, &session("short", "u")).await;
    common::record(&ts, &s, "Started", "started").await;
    let stored: Api<Event> = Api::namespaced(ts.client.clone(), "default");
    let core: Api<CoreEvent> = Api::namespaced(ts.client.clone(), "default");
    assert_eq!(common::count(&stored).await, 1);
    eventually("the event expires", Duration::from_secs(60), || async {
        common::count(&stored).await == 0
    })
    .await;
    assert!(common::count(&core).await == 0);
    // Only Events expire.
    assert!(sessions.get_opt("short").await.unwrap().is_some());
    ts.server.shutdown().await;
}

#[tokio::test]
async fn events_live_an_hour_by_default() {
    assert_eq!(
        medforge_apiserver::Config::new("/nonexistent").event_ttl,
        Duration::from_secs(3600),
        "kube-apiserver's --event-ttl default"
    );
    let (ts, sessions) = common::server_and_sessions().await;
    let s = common::create(&sessions, &session("long", "u")).await;
    common::record(&ts, &s, "Started", "started").await;
    // Restarting keeps it: expiry is from the last write, not from the start.
    let ts = ts.restart().await;
    let stored: Api<Event> = Api::namespaced(ts.client.clone(), "default");
    assert_eq!(common::count(&stored).await, 1);
    ts.server.shutdown().await;
}
