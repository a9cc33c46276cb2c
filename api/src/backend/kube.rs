//! The backend over the Kubernetes API (a real cluster or the embedded control
//! plane), with the kube client: Sessions and WorkspaceSnapshots in one
//! namespace, GpuNodes and Packs cluster-wide.

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use medforge_crds::keys::OWNER_LABEL;
use medforge_crds::{DesiredState, GpuNode, Pack, Session, WorkspaceSnapshot};
use serde_json::json;

use super::contract::{BackendError, BackendResult, SessionBackend, SnapshotDeletion, WatchEvent};

/// Field manager the api's writes are recorded under.
const FIELD_MANAGER: &str = "medforge-api";

/// Sessions, WorkspaceSnapshots, GpuNodes and Packs through the kube client.
#[derive(Clone)]
pub struct KubeBackend {
    sessions: Api<Session>,
    snapshots: Api<WorkspaceSnapshot>,
    nodes: Api<GpuNode>,
    packs: Api<Pack>,
}

impl KubeBackend {
    /// A backend for Sessions (and their WorkspaceSnapshots) in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            sessions: Api::namespaced(client.clone(), namespace),
            snapshots: Api::namespaced(client.clone(), namespace),
            nodes: Api::all(client.clone()),
            packs: Api::all(client),
        }
    }

    fn patch_params() -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        }
    }
}

fn map_err(what: &str, err: kube::Error) -> BackendError {
    match err {
        kube::Error::Api(status) if status.code == 404 => BackendError::NotFound(what.into()),
        kube::Error::Api(status) if status.code == 409 => {
            BackendError::Conflict(format!("{what}: {}", status.message))
        }
        kube::Error::Api(status) => {
            BackendError::Api(format!("{what}: {} ({})", status.message, status.code))
        }
        other => BackendError::Unreachable(format!("{what}: {other}")),
    }
}

/// Creates one object, under the api's field manager.
async fn create<K>(api: &Api<K>, kind: &str, object: &K) -> BackendResult<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.create(&pp, object)
        .await
        .map_err(|e| map_err(&format!("{kind} {name}"), e))
}

/// One object by name, if it exists.
async fn get<K>(api: &Api<K>, kind: &str, name: &str) -> BackendResult<Option<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|e| map_err(&format!("{kind} {name}"), e))
}

/// The list of one owner's objects (by their owner label), or of all.
fn owned_by(owner: Option<&str>) -> ListParams {
    let lp = ListParams::default();
    match owner {
        Some(owner) => lp.labels(&format!("{OWNER_LABEL}={owner}")),
        None => lp,
    }
}

/// The objects a list names.
async fn list<K>(api: &Api<K>, what: &str, params: &ListParams) -> BackendResult<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(params)
        .await
        .map(|l| l.items)
        .map_err(|e| map_err(what, e))
}

/// A merge patch of one object, under the api's field manager.
async fn merge_patch<K>(
    api: &Api<K>,
    kind: &str,
    name: &str,
    patch: serde_json::Value,
) -> BackendResult<K>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &KubeBackend::patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| map_err(&format!("{kind} {name}"), e))
}

#[async_trait]
impl SessionBackend for KubeBackend {
    async fn create(&self, session: Session) -> BackendResult<Session> {
        create(&self.sessions, "session", &session).await
    }

    async fn get(&self, name: &str) -> BackendResult<Option<Session>> {
        get(&self.sessions, "session", name).await
    }

    async fn get_pack(&self, name: &str) -> BackendResult<Option<Pack>> {
        get(&self.packs, "pack", name).await
    }

    async fn list_packs(&self) -> BackendResult<Vec<Pack>> {
        list(&self.packs, "packs", &ListParams::default()).await
    }

    async fn replace_pack(&self, pack: Pack) -> BackendResult<(Pack, bool)> {
        let name = pack.metadata.name.clone().unwrap_or_default();
        let what = format!("pack {name}");
        let pp = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        // Read, then replace under the read's resourceVersion (or create);
        // a write that lost a race is tried again, a few times.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let written = match get(&self.packs, "pack", &name).await? {
                Some(current) => {
                    let next = Pack {
                        metadata: current.metadata,
                        spec: pack.spec.clone(),
                        status: current.status,
                    };
                    self.packs
                        .replace(&name, &pp, &next)
                        .await
                        .map(|p| (p, false))
                }
                None => self.packs.create(&pp, &pack).await.map(|p| (p, true)),
            };
            match written {
                Ok(done) => return Ok(done),
                Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => continue,
                Err(e) => return Err(map_err(&what, e)),
            }
        }
    }

    async fn delete_pack(&self, name: &str) -> BackendResult<bool> {
        match self.packs.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(map_err(&format!("pack {name}"), e)),
        }
    }

    async fn list(&self, owner: Option<&str>) -> BackendResult<Vec<Session>> {
        list(&self.sessions, "sessions", &owned_by(owner)).await
    }

    async fn set_state(&self, name: &str, state: DesiredState) -> BackendResult<Session> {
        merge_patch(
            &self.sessions,
            "session",
            name,
            json!({ "spec": { "state": state } }),
        )
        .await
    }

    async fn request_start(&self, name: &str) -> BackendResult<Session> {
        merge_patch(
            &self.sessions,
            "session",
            name,
            json!({ "spec": {
                "state": DesiredState::Running,
                "resumeRequestedAt": resume_stamp(),
            } }),
        )
        .await
    }

    async fn annotate(&self, name: &str, key: &str, value: &str) -> BackendResult<()> {
        let patch = json!({ "metadata": { "annotations": { key: value } } });
        merge_patch(&self.sessions, "session", name, patch)
            .await
            .map(drop)
    }

    async fn delete(&self, name: &str) -> BackendResult<bool> {
        match self.sessions.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
            Err(e) => Err(map_err(&format!("session {name}"), e)),
        }
    }

    fn watch(&self) -> BoxStream<'static, Result<WatchEvent, BackendError>> {
        watch_all(self.sessions.clone(), "sessions")
    }

    async fn list_nodes(&self) -> BackendResult<Vec<GpuNode>> {
        list(&self.nodes, "gpunodes", &ListParams::default()).await
    }

    async fn set_node_unschedulable(
        &self,
        node: &str,
        unschedulable: bool,
    ) -> BackendResult<GpuNode> {
        let patch = json!({ "spec": { "unschedulable": unschedulable } });
        merge_patch(&self.nodes, "gpunode", node, patch).await
    }

    async fn set_gpu_disabled(
        &self,
        node: &str,
        gpu_uuid: &str,
        disabled: bool,
    ) -> BackendResult<GpuNode> {
        // Read-modify-write of the list, guarded by resourceVersion; retried on conflict.
        let what = format!("gpunode {node}");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = self.nodes.get(node).await.map_err(|e| map_err(&what, e))?;
            let mut list = current.spec.disabled_gpus.clone();
            list.retain(|u| u != gpu_uuid);
            if disabled {
                list.push(gpu_uuid.to_owned());
            }
            if list == current.spec.disabled_gpus {
                return Ok(current);
            }
            let patch = json!({
                "metadata": { "resourceVersion": current.metadata.resource_version },
                "spec": { "disabledGpus": list },
            });
            match self
                .nodes
                .patch(node, &Self::patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(updated) => return Ok(updated),
                Err(kube::Error::Api(status)) if status.code == 409 && attempts < 5 => {
                    continue;
                }
                Err(e) => return Err(map_err(&what, e)),
            }
        }
    }

    async fn record_activity(&self, activity: &[(String, jiff::Timestamp)]) -> BackendResult<()> {
        let mut first_error = None;
        for (name, at) in activity {
            let patch = json!({ "status": { "lastActivityAt": Time(*at) } });
            match self
                .sessions
                .patch_status(name, &Self::patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                // Deleted since: nothing to record.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => {
                    first_error.get_or_insert_with(|| map_err(&format!("session {name}"), e));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn ping(&self) -> BackendResult<()> {
        self.sessions
            .list_metadata(&ListParams::default().limit(1))
            .await
            .map(|_| ())
            .map_err(|e| map_err("sessions", e))
    }

    async fn create_snapshot(&self, record: WorkspaceSnapshot) -> BackendResult<WorkspaceSnapshot> {
        create(&self.snapshots, "workspacesnapshot", &record).await
    }

    async fn get_snapshot(&self, name: &str) -> BackendResult<Option<WorkspaceSnapshot>> {
        get(&self.snapshots, "workspacesnapshot", name).await
    }

    async fn list_snapshots(&self, owner: Option<&str>) -> BackendResult<Vec<WorkspaceSnapshot>> {
        list(&self.snapshots, "workspacesnapshots", &owned_by(owner)).await
    }

    async fn delete_snapshot(&self, name: &str) -> BackendResult<SnapshotDeletion> {
        match self.snapshots.delete(name, &DeleteParams::default()).await {
            // The answer is the object, or a Status, either way; only a
            // finalizer left on the object keeps it.
            Ok(answer) => Ok(match answer.left() {
                Some(held)
                    if held
                        .metadata
                        .finalizers
                        .as_ref()
                        .is_some_and(|f| !f.is_empty()) =>
                {
                    SnapshotDeletion::Held(Box::new(held))
                }
                _ => SnapshotDeletion::Gone,
            }),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(SnapshotDeletion::Missing),
            Err(e) => Err(map_err(&format!("workspacesnapshot {name}"), e)),
        }
    }

    fn watch_snapshots(
        &self,
    ) -> BoxStream<'static, Result<WatchEvent<WorkspaceSnapshot>, BackendError>> {
        watch_all(self.snapshots.clone(), "workspacesnapshots")
    }
}

/// A watch on every object of `api`, retried with backoff, in the
/// backend's vocabulary.
fn watch_all<K>(
    api: Api<K>,
    what: &'static str,
) -> BoxStream<'static, Result<WatchEvent<K>, BackendError>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |event| match event {
            Ok(watcher::Event::Init) => Ok(WatchEvent::Init),
            Ok(watcher::Event::InitApply(s)) => Ok(WatchEvent::InitApply(s)),
            Ok(watcher::Event::InitDone) => Ok(WatchEvent::InitDone),
            Ok(watcher::Event::Apply(s)) => Ok(WatchEvent::Apply(s)),
            Ok(watcher::Event::Delete(s)) => Ok(WatchEvent::Delete(s)),
            Err(e) => Err(BackendError::Unreachable(format!("watch on {what}: {e}"))),
        })
        .boxed()
}

/// Now, to the millisecond: two requests a second apart still change the
/// spec (and so its generation).
pub(crate) fn resume_stamp() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| jiff::Timestamp::now().to_string())
}
