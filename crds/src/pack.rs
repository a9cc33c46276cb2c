//! `Pack`: an image and the defaults a session runs with.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::schema::{DURATION_PATTERN, QUANTITY_PATTERN};
use crate::session::SessionResources;

/// A container image pinned by digest, with the port and defaults its sessions use.
#[skip_serializing_none]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "medforge.dev",
    version = "v1alpha1",
    kind = "Pack",
    plural = "packs",
    singular = "pack",
    status = "PackStatus",
    derive = "PartialEq",
    shortname = "pk",
    category = "medforge",
    doc = "An image pack: the container image a session runs (pinned by digest), its port, command, environment and default resources.",
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "The image, pinned by digest"
    ),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PackSpec {
    /// The image, pinned by digest: `name@sha256:<64 hex>`, or a local image id `sha256:<64 hex>`.
    #[schemars(regex(pattern = r"^([^@\s]+@)?sha256:[a-f0-9]{64}$"))]
    pub image: String,
    /// The port the session's server listens on inside the container.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// Extra environment variables for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resource limits for sessions that do not set their own.
    pub resources: Option<SessionResources>,
    /// The rest of a session's defaults when it sets none (GPUs, workspace quota, idle timeout, maximum lifetime); unset ones come from the account's or the operator's policy.
    pub session_defaults: Option<PackSessionDefaults>,
    /// The most a session of this Pack may ask for, below the operator's own maxima. A session above one is refused (422 from the api, `PolicyViolation` from the node agent).
    pub maxima: Option<SessionMaxima>,
}

/// A Pack's defaults beyond the container's resources.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackSessionDefaults {
    /// Whole GPUs when a create names no count.
    #[schemars(range(min = 0, max = 8))]
    pub gpus: Option<u32>,
    /// Workspace quota (`100Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub workspace_quota: Option<String>,
    /// Idle timeout (`2h`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`24h`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_lifetime: Option<String>,
}

/// Upper bounds on a session's values. Unset ones leave the operator's maximum.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionMaxima {
    /// CPU cores (`8`, `500m`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub cpu: Option<String>,
    /// Memory (`64Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub memory: Option<String>,
    /// Size of /dev/shm (`8Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub shm: Option<String>,
    /// Processes in the container.
    #[schemars(range(min = 16, max = 1_000_000))]
    pub pids: Option<i64>,
    /// Whole GPUs.
    #[schemars(range(min = 0, max = 8))]
    pub gpus: Option<u32>,
    /// Workspace quota (`200Gi`).
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub workspace_quota: Option<String>,
    /// Idle timeout (`24h`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`168h`).
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_lifetime: Option<String>,
}

fn default_port() -> u16 {
    8080
}

/// One environment variable.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct EnvVar {
    /// The variable's name.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Its value.
    #[serde(default)]
    pub value: String,
}

/// What the operator observes of a Pack.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PackStatus {
    /// Conditions, such as `ImagePresent` (the image exists on every Ready node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    pub observed_generation: Option<i64>,
}
