//! Watches: resume, expiry, bookmarks, selectors, kube-runtime's watcher
//! across a server restart, and a Controller with a finalizer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{WatchStreamExt, watcher};
use medforge_crds::{Session, SessionPhase};
use serde_json::json;

use crate::common::{self, WITHIN, session, status};
use medforge_testkit::eventually;

fn describe(e: &WatchEvent<Session>) -> String {
    match e {
        WatchEvent::Added(s) => format!("ADDED {}", s.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Modified(s) => format!("MODIFIED {}", s.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Deleted(s) => format!("DELETED {}", s.metadata.name.as_deref().unwrap_or("")),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(s) => format!("ERROR {} {}", s.code, s.reason),
    }
}

async fn next(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Session>>> + Unpin),
) -> String {
    let e = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a watch event within 5 s")
        .expect("the stream is open")
        .expect("no transport error");
    describe(&e)
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_without_loss() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("a", "u")).await;
    common::create(&api, &session("b", "u")).await;
    let rv = common::list_rv(&api).await;
    common::create(&api, &session("c", "u")).await;
    common::merge(&api, "a", json!({"spec": {"gpus": 2}})).await;
    api.delete("b", &DeleteParams::default()).await.unwrap();

    let mut w = common::watch_from(&api, &rv).await;
    assert_eq!(next(&mut w).await, "ADDED c");
    assert_eq!(next(&mut w).await, "MODIFIED a");
    assert_eq!(next(&mut w).await, "DELETED b");
    // Live events follow the replayed ones.
    common::create(&api, &session("d", "u")).await;
    assert_eq!(next(&mut w).await, "ADDED d");

    // Without a resourceVersion ("0"), a watch starts with the current state.
    let mut w0 = common::watch_from(&api, "0").await;
    let mut initial = vec![
        next(&mut w0).await,
        next(&mut w0).await,
        next(&mut w0).await,
    ];
    initial.sort();
    assert_eq!(initial, ["ADDED a", "ADDED c", "ADDED d"]);
    ts.server.shutdown().await;
}

#[tokio::test]
async fn too_old_versions_expire_and_bookmarks_come_when_asked() {
    let ts = common::start_with(|c| {
        let mut c = c;
        c.watch_history = 5;
        c.bookmark_interval = Duration::from_millis(200);
        c
    })
    .await;
    let api = common::sessions(&ts);
    let first = common::create(&api, &session("e0", "u")).await;
    let old_rv = first.metadata.resource_version.unwrap();
    for i in 1..10 {
        common::create(&api, &session(&format!("e{i}"), "u")).await;
    }
    let mut w = common::watch_from(&api, &old_rv).await;
    let e = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match e {
        WatchEvent::Error(s) => {
            assert_eq!((s.code, s.reason.as_str()), (410, "Expired"));
            assert!(
                s.message.starts_with("too old resource version"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 410, got {}", describe(&other)),
    }
    // A paginated list whose continue token fell out of the history: 410 too.
    let current = common::list_rv(&api).await;
    let mut wb = common::watch_from(&api, &current).await;
    assert_eq!(next(&mut wb).await, "BOOKMARK");
    common::create(&api, &session("late", "u")).await;
    let mut seen = next(&mut wb).await;
    while seen == "BOOKMARK" {
        seen = next(&mut wb).await;
    }
    assert_eq!(seen, "ADDED late");
    ts.server.shutdown().await;
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let (ts, api) = common::server_and_sessions().await;
    let rv = common::list_rv(&api).await;
    let mut w = api
        .watch(&WatchParams::default().labels("tier=gpu"), &rv)
        .await
        .unwrap()
        .boxed();
    common::create(&api, &session("plain", "u")).await;
    common::merge(
        &api,
        "plain",
        json!({"metadata": {"labels": {"tier": "gpu"}}}),
    )
    .await;
    assert_eq!(next(&mut w).await, "ADDED plain");
    common::merge(&api, "plain", json!({"spec": {"gpus": 3}})).await;
    assert_eq!(next(&mut w).await, "MODIFIED plain");
    common::merge(
        &api,
        "plain",
        json!({"metadata": {"labels": {"tier": null}}}),
    )
    .await;
    assert_eq!(next(&mut w).await, "DELETED plain");
    ts.server.shutdown().await;
}

/// The next event of a kube-runtime watcher, within 5 s.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = Result<watcher::Event<Session>, watcher::Error>> + Unpin),
) -> watcher::Event<Session> {
    tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .expect("a watcher event within 5 s")
        .expect("no watcher error")
        .expect("the watcher is open")
}

#[tokio::test]
async fn streaming_list_watcher_gets_the_initial_state_then_changes() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("s1", "u")).await;
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut names = Vec::new();
    loop {
        match next_event(&mut stream).await {
            watcher::Event::Init => {}
            watcher::Event::InitApply(s) => names.push(s.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["s1"]);
    common::create(&api, &session("s2", "u")).await;
    match next_event(&mut stream).await {
        watcher::Event::Apply(s) => assert_eq!(s.metadata.name.as_deref(), Some("s2")),
        other => panic!("unexpected {other:?}"),
    }
    ts.server.shutdown().await;
}

#[tokio::test]
async fn watcher_survives_a_restart_without_missed_or_duplicated_events() {
    let (ts, api) = common::server_and_sessions().await;
    common::create(&api, &session("r1", "u")).await;
    common::create(&api, &session("r2", "u")).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch_api = api.clone();
    let task = tokio::spawn(async move {
        let mut s = watcher(watch_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(e) = s.next().await {
            let line = match e {
                Ok(watcher::Event::Init) => "INIT".to_string(),
                Ok(watcher::Event::InitApply(s)) => {
                    format!("INITAPPLY {}", s.metadata.name.unwrap())
                }
                Ok(watcher::Event::InitDone) => "INITDONE".to_string(),
                Ok(watcher::Event::Apply(s)) => {
                    format!("APPLY {} gpus={}", s.metadata.name.unwrap(), s.spec.gpus)
                }
                Ok(watcher::Event::Delete(s)) => format!("DELETE {}", s.metadata.name.unwrap()),
                Err(_) => continue, // the server is down for a moment
            };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut recv = async || {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("an event within 10 s")
            .unwrap()
    };
    assert_eq!(recv().await, "INIT");
    let mut init = vec![recv().await, recv().await];
    init.sort();
    assert_eq!(init, ["INITAPPLY r1", "INITAPPLY r2"]);
    assert_eq!(recv().await, "INITDONE");
    common::merge(&api, "r1", json!({"spec": {"gpus": 2}})).await;
    assert_eq!(recv().await, "APPLY r1 gpus=2");

    let ts = ts.restart().await;
    let api = common::sessions(&ts);
    // Writes that happen before the watcher reconnects are replayed from the
    // persisted history; nothing is listed again.
    common::create(&api, &session("r3", "u")).await;
    common::merge(&api, "r2", json!({"spec": {"gpus": 3}})).await;
    api.delete("r1", &DeleteParams::default()).await.unwrap();
    assert_eq!(recv().await, "APPLY r3 gpus=1");
    assert_eq!(recv().await, "APPLY r2 gpus=3");
    assert_eq!(recv().await, "DELETE r1");
    common::create(&api, &session("r4", "u")).await;
    assert_eq!(recv().await, "APPLY r4 gpus=1");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no duplicate or extra event"
    );
    task.abort();
    ts.server.shutdown().await;
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

struct Ctx {
    api: Api<Session>,
    cleanups: AtomicUsize,
}

async fn reconcile(s: Arc<Session>, ctx: Arc<Ctx>) -> Result<Action, TestError> {
    let api = ctx.api.clone();
    finalizer(&api, "medforge.dev/test-agent", s, |event| async {
        match event {
            Finalizer::Apply(s) => {
                let generation = s.metadata.generation;
                api.patch_status(
                    s.metadata.name.as_deref().unwrap(),
                    &PatchParams::default(),
                    &Patch::Merge(
                        json!({"status": {"phase": "Running", "observedGeneration": generation}}),
                    ),
                )
                .await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => {
                ctx.cleanups.fetch_add(1, Ordering::SeqCst);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| TestError::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Session>, _: &TestError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

#[tokio::test]
async fn a_controller_with_a_finalizer_converges() {
    let (ts, api) = common::server_and_sessions().await;
    let ctx = Arc::new(Ctx {
        api: api.clone(),
        cleanups: AtomicUsize::new(0),
    });
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|_| async {}),
    );
    common::create(&api, &session("c1", "u")).await;
    eventually("c1 is finalized, Running and observed", WITHIN, || async {
        let s = api.get("c1").await.unwrap();
        s.metadata.finalizers.unwrap_or_default() == ["medforge.dev/test-agent"]
            && s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Running)
            && s.status.as_ref().and_then(|st| st.observed_generation) == Some(1)
    })
    .await;
    // A spec change is observed with the new generation.
    common::merge(&api, "c1", json!({"spec": {"gpus": 2}})).await;
    eventually("generation 2 is observed", WITHIN, || async {
        api.get("c1")
            .await
            .unwrap()
            .status
            .and_then(|st| st.observed_generation)
            == Some(2)
    })
    .await;
    api.delete("c1", &DeleteParams::default()).await.unwrap();
    eventually("c1 is gone", WITHIN, || async {
        api.get("c1").await.is_err()
    })
    .await;
    assert_eq!(status(api.get("c1").await.unwrap_err()).code, 404);
    assert_eq!(ctx.cleanups.load(Ordering::SeqCst), 1);
    controller.abort();
    ts.server.shutdown().await;
}

#[tokio::test]
async fn the_event_recorder_publishes_and_repeats_into_a_series() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (ts, api) = common::server_and_sessions().await;
    let s = common::create(&api, &session("ev", "u")).await;
    let recorder = Recorder::new(
        ts.client.clone(),
        Reporter {
            controller: "medforge-test".into(),
            instance: Some("test-1".into()),
        },
    );
    let ev = Event {
        type_: EventType::Warning,
        reason: "NoGpuAvailable".into(),
        note: Some("no node has 1 free GPU".into()),
        action: "Schedule".into(),
        secondary: None,
    };
    let reference = s.object_ref(&());
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(ts.client.clone(), "default");
    let list = events
        .list(&ListParams::default().fields("regarding.name=ev,reason=NoGpuAvailable"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    let e = &list.items[0];
    assert_eq!(e.note.as_deref(), Some("no node has 1 free GPU"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    ts.server.shutdown().await;
}

#[tokio::test]
async fn pruned_history_expires_across_a_restart_and_recent_history_resumes() {
    let ts = common::start_with(|mut c| {
        c.watch_history = 20;
        c
    })
    .await;
    let api = common::sessions(&ts);
    let first = common::create(&api, &session("h", "u")).await;
    let old_rv = first.metadata.resource_version.unwrap();
    // Enough writes for the database to prune its copy of the history too.
    let mut recent_rv = String::new();
    for i in 0..600 {
        let s = common::merge(
            &api,
            "h",
            json!({"metadata": {"annotations": {"n": i.to_string()}}}),
        )
        .await;
        if i == 590 {
            recent_rv = s.metadata.resource_version.unwrap();
        }
    }
    let ts = ts.restart().await;
    let api = common::sessions(&ts);
    let mut w = common::watch_from(&api, &old_rv).await;
    assert_eq!(next(&mut w).await, "ERROR 410 Expired");
    let mut w = common::watch_from(&api, &recent_rv).await;
    for _ in 591..600 {
        assert_eq!(next(&mut w).await, "MODIFIED h");
    }
    assert_eq!(
        api.get("h").await.unwrap().metadata.annotations.unwrap()["n"],
        "599"
    );
    ts.server.shutdown().await;
}
