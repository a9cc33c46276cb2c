//! Starting servers for tests: each test gets its own data directory and port
//! (`medforge_apiserver::testing`).

use std::time::Duration;

use kube::runtime::events::{Event as RecorderEvent, EventType, Recorder, Reporter};
use std::fmt::Debug;

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt};
use medforge_apiserver::Config;
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::Session;
use serde::de::DeserializeOwned;

pub use medforge_testkit::{create, merge};

pub type TestServer = TestControlPlane;

/// How long tests wait for the server to reach a state.
pub const WITHIN: Duration = Duration::from_secs(5);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn start() -> TestServer {
    start_with(|c| c).await
}

pub async fn start_with(f: impl FnOnce(Config) -> Config + Send + 'static) -> TestServer {
    init_tracing();
    TestControlPlane::builder().configure(f).start().await
}

/// The Sessions of the namespace `default`.
pub fn sessions(ts: &TestServer) -> Api<Session> {
    Api::namespaced(ts.client.clone(), "default")
}

/// A fresh server and the Sessions of its namespace `default`.
pub async fn server_and_sessions() -> (TestServer, Api<Session>) {
    let ts = start().await;
    let sessions = sessions(&ts);
    (ts, sessions)
}

/// The resourceVersion of a full list (to watch from).
pub async fn list_rv<K>(api: &Api<K>) -> String
where
    K: Clone + DeserializeOwned + Debug,
{
    let list = api.list(&ListParams::default()).await.expect("list");
    list.metadata
        .resource_version
        .expect("a list resourceVersion")
}

/// How many objects a full list has.
pub async fn count<K>(api: &Api<K>) -> usize
where
    K: Clone + DeserializeOwned + Debug + Resource,
{
    names(api, &ListParams::default()).await.len()
}

/// The names of the objects a list returns, in its order.
pub async fn names<K>(api: &Api<K>, params: &ListParams) -> Vec<String>
where
    K: Clone + DeserializeOwned + Debug + Resource,
{
    let list = api.list(params).await.expect("list");
    list.items.iter().map(ResourceExt::name_any).collect()
}

/// A watch from `rv` (`"0"`: the current state first).
pub async fn watch_from<K>(
    api: &Api<K>,
    rv: &str,
) -> BoxStream<'static, kube::Result<WatchEvent<K>>>
where
    K: Clone + DeserializeOwned + Debug + Send + 'static,
{
    api.watch(&WatchParams::default(), rv)
        .await
        .expect("the watch starts")
        .boxed()
}

/// A `jupyter` Session with one GPU.
pub fn session(name: &str, owner: &str) -> Session {
    medforge_testkit::session_spec()
        .owner(owner)
        .pack("jupyter")
        .session(name)
}

/// Publishes an Event about `s` as the node agent's Recorder writes it
/// (events.k8s.io/v1, action `Start`).
pub async fn record(ts: &TestServer, s: &Session, reason: &str, note: &str) {
    let recorder = Recorder::new(
        ts.client.clone(),
        Reporter {
            controller: "medforge-node-agent".into(),
            instance: Some("gpu-1".into()),
        },
    );
    recorder
        .publish(
            &RecorderEvent {
                type_: EventType::Normal,
                reason: reason.into(),
                note: Some(note.into()),
                action: "Start".into(),
                secondary: None,
            },
            &s.object_ref(&()),
        )
        .await
        .unwrap();
}

/// A `jupyter` Session held by the finalizer `medforge.dev/agent`.
pub fn held_session(name: &str, owner: &str) -> Session {
    let mut s = session(name, owner);
    s.metadata.finalizers = Some(vec!["medforge.dev/agent".into()]);
    s
}

/// Whether the Session `name` exists with its deletion started (a finalizer holds it).
pub async fn is_deleting(api: &Api<Session>, name: &str) -> bool {
    api.get(name)
        .await
        .unwrap()
        .metadata
        .deletion_timestamp
        .is_some()
}

/// The Status of a failed kube call.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
