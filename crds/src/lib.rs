//! MedForge's resource types, group `medforge.dev`, version `v1alpha1`.
//!
//! This crate owns the shape of the declared resources and nothing else: no
//! client, no runtime. The doc comments on every field become the CRD
//! descriptions that `kubectl explain` shows, so they are written for the
//! people who read them there.
//!
//! The generated CRD YAML is committed under `charts/medforge/crds/` and a test
//! fails when it drifts from these types (`medforge crds --write DIR` refreshes it).
#![forbid(unsafe_code)]
// kube-derive takes one `printcolumn(...)` per column, each with its own
// `type_`; clippy mistakes those for repeated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod conditions;
pub mod gpunode;
pub mod keys;
pub mod pack;
pub mod policy;
pub mod quantity;
pub mod reason;
pub mod schema;
pub mod session;
pub mod slug;
pub mod snapshot;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use gpunode::{
    ComponentHealth, GpuAllocation, GpuHealth, GpuInfo, GpuNode, GpuNodeSpec, GpuNodeStatus,
};
pub use pack::{
    EnvVar, ImageState, Pack, PackNodeImage, PackSessionDefaults, PackSpec, PackStatus,
    SessionMaxima, is_pinned,
};
pub use reason::{
    EventAction, NodeCondition, NodeReason, PackCondition, SessionCondition, SessionReason,
    SnapshotCondition, SnapshotStatusReason,
};
pub use session::{
    AssignedGpu, DesiredState, Exposure, Session, SessionLimits, SessionPhase, SessionResources,
    SessionSpec, SessionStatus, WorkspaceSpec, WorkspaceStatus,
};
pub use snapshot::{
    Retention, RetentionOverride, SnapshotReason, SnapshotSource, WorkspaceSnapshot,
    WorkspaceSnapshotSpec, WorkspaceSnapshotStatus,
};

/// The API group of every MedForge resource.
pub const GROUP: &str = "medforge.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "medforge.dev/v1alpha1";
/// The kubectl category that `kubectl get medforge` lists.
pub const CATEGORY: &str = "medforge";

/// Every MedForge CRD, in a stable order (Session, GpuNode, Pack, WorkspaceSnapshot).
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        Session::crd(),
        GpuNode::crd(),
        Pack::crd(),
        WorkspaceSnapshot::crd(),
    ]
}

/// The file name a CRD is committed under: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Errors while rendering CRDs.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("could not render CRD {name} as YAML: {source}")]
    Yaml {
        name: String,
        #[source]
        source: serde_saphyr::ser::Error,
    },
}

/// One CRD as a YAML document (no leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, RenderError> {
    serde_saphyr::to_string(crd).map_err(|source| RenderError::Yaml {
        name: crd.metadata.name.clone().unwrap_or_default(),
        source,
    })
}

/// Every CRD as one multi-document YAML stream, as `medforge crds` prints it.
pub fn all_crds_yaml() -> Result<String, RenderError> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&crd_yaml(&crd)?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// The `metav1.Condition` type every status uses, re-exported for the controllers.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
