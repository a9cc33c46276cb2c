//! Starting servers for tests: each test gets its own data directory and port
//! (`medforge_apiserver::testing`).

use std::fmt::Debug;
use std::time::Duration;

use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use medforge_apiserver::Config;
use medforge_apiserver::testing::TestControlPlane;
use medforge_crds::Session;

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

/// A `jupyter` Session with one GPU.
pub fn session(name: &str, owner: &str) -> Session {
    medforge_testkit::session_spec()
        .owner(owner)
        .pack("jupyter")
        .session(name)
}

/// Creates `obj`; the server must accept it.
pub async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: Clone + Serialize + DeserializeOwned + Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .expect("the server accepts the create")
}

/// Applies a JSON merge patch to `name`; the server must accept it.
pub async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value) -> K
where
    K: Clone + DeserializeOwned + Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("the server accepts the merge patch")
}

/// The Status of a failed kube call.
pub fn status(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}
