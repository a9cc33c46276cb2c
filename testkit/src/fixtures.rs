//! Objects for tests: one Session builder instead of a `SessionSpec { … }`
//! literal in every test file, GpuNodes published as their agent would, and
//! the creates and merge patches a test needs to succeed.
//!
//! ```
//! let s = medforge_testkit::session_spec().owner("bob").gpus(2).session("s1");
//! assert_eq!(s.spec.pack, "default");
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams, PostParams};
use medforge_crds::{
    GpuHealth, GpuInfo, GpuNode, GpuNodeSpec, GpuNodeStatus, NodeCondition, NodeReason, Session,
    SessionSpec,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A `SessionSpec` for tests: owner `alice`, Pack `default`, one GPU, the
/// other fields at their defaults, until changed.
pub fn session_spec() -> SessionSpecBuilder {
    SessionSpecBuilder {
        spec: SessionSpec {
            owner: "alice".into(),
            pack: "default".into(),
            exposure: Default::default(),
            gpus: 1,
            state: Default::default(),
            resources: None,
            workspace: None,
            idle_timeout: None,
            max_lifetime: None,
            resume_requested_at: None,
        },
    }
}

/// Builds a [`SessionSpec`] (or a [`Session`]) for a test; see [`session_spec`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionSpecBuilder {
    spec: SessionSpec,
}

impl SessionSpecBuilder {
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.spec.owner = owner.into();
        self
    }

    pub fn pack(mut self, pack: impl Into<String>) -> Self {
        self.spec.pack = pack.into();
        self
    }

    pub fn gpus(mut self, gpus: u32) -> Self {
        self.spec.gpus = gpus;
        self
    }

    pub fn idle_timeout(mut self, duration: impl Into<String>) -> Self {
        self.spec.idle_timeout = Some(duration.into());
        self
    }

    pub fn max_lifetime(mut self, duration: impl Into<String>) -> Self {
        self.spec.max_lifetime = Some(duration.into());
        self
    }

    /// The spec.
    pub fn build(self) -> SessionSpec {
        self.spec
    }

    /// A Session named `name` with this spec (no namespace, no status).
    pub fn session(self, name: &str) -> Session {
        Session::new(name, self.spec)
    }
}

/// The status an agent publishes for a healthy node: `gpus` healthy GPUs
/// (uuids `GPU-<node>-<index>`), all allocatable, the heartbeat at
/// `heartbeat` and `Ready=True` (`AgentReady`) since then.
pub fn ready_node_status(node: &str, gpus: u32, heartbeat: Timestamp) -> GpuNodeStatus {
    GpuNodeStatus {
        gpus: (0..gpus)
            .map(|i| GpuInfo {
                index: i,
                uuid: format!("GPU-{node}-{i}"),
                model: "test".into(),
                memory_bytes: 1,
                health: GpuHealth::Healthy,
            })
            .collect(),
        allocatable: gpus,
        last_heartbeat_time: Some(Time(heartbeat)),
        conditions: vec![Condition {
            type_: NodeCondition::Ready.to_string(),
            status: "True".into(),
            reason: NodeReason::AgentReady.to_string(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(heartbeat),
        }],
        ..Default::default()
    }
}

/// Creates the GpuNode `name` (or takes the one there) and writes
/// [`ready_node_status`] to its status, as the node's agent would.
pub async fn publish_ready_node(
    client: &kube::Client,
    name: &str,
    gpus: u32,
    heartbeat: Timestamp,
) -> GpuNode {
    let api: Api<GpuNode> = Api::all(client.clone());
    let mut node = match api.get_opt(name).await.expect("get the GpuNode") {
        Some(n) => n,
        None => api
            .create(
                &PostParams::default(),
                &GpuNode::new(name, GpuNodeSpec::default()),
            )
            .await
            .expect("create the GpuNode"),
    };
    node.status = Some(ready_node_status(name, gpus, heartbeat));
    api.replace_status(name, &PostParams::default(), &node)
        .await
        .expect("write the GpuNode's status")
}

/// The condition `type_` of a GpuNode's status, if it has one.
pub fn node_condition(node: &GpuNode, type_: NodeCondition) -> Option<Condition> {
    let conditions = &node.status.as_ref()?.conditions;
    medforge_crds::conditions::find(conditions, type_).cloned()
}

/// Asserts a condition's status (`"True"`/`"False"`), its reason, and that its
/// message says each of `says`.
#[track_caller]
pub fn assert_condition(
    condition: &Condition,
    status: &str,
    reason: impl AsRef<str>,
    says: &[&str],
) {
    assert_eq!(condition.status, status, "{condition:?}");
    assert_eq!(condition.reason, reason.as_ref(), "{condition:?}");
    for part in says {
        assert!(
            condition.message.contains(part),
            "the message should say {part:?}: {}",
            condition.message
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let spec = session_spec().build();
        assert_eq!(
            (spec.owner.as_str(), spec.pack.as_str(), spec.gpus),
            ("alice", "default", 1)
        );
        let s = session_spec()
            .owner("bob")
            .pack("jupyter")
            .gpus(0)
            .idle_timeout("2h")
            .max_lifetime("24h")
            .session("s1");
        assert_eq!(s.metadata.name.as_deref(), Some("s1"));
        assert_eq!(s.spec.owner, "bob");
        assert_eq!(s.spec.pack, "jupyter");
        assert_eq!(s.spec.gpus, 0);
        assert_eq!(s.spec.idle_timeout.as_deref(), Some("2h"));
        assert_eq!(s.spec.max_lifetime.as_deref(), Some("24h"));
    }

    #[test]
    fn a_ready_node_status_lists_its_gpus_and_is_ready() {
        let now = Timestamp::now();
        let st = ready_node_status("n1", 2, now);
        let uuids: Vec<&str> = st.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(uuids, ["GPU-n1-0", "GPU-n1-1"]);
        assert_eq!(st.allocatable, 2);
        assert!(medforge_crds::conditions::is_true(
            &st.conditions,
            NodeCondition::Ready
        ));
    }
}
