//! `GpuNode`: one GPU host, published by its node agent, cordoned by admins.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::schema::GPU_UUID_PATTERN;

/// What admins want of a GPU node.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "medforge.dev",
    version = "v1alpha1",
    kind = "GpuNode",
    plural = "gpunodes",
    singular = "gpunode",
    status = "GpuNodeStatus",
    derive = "PartialEq",
    shortname = "gn",
    category = "medforge",
    doc = "A GPU host that runs MedForge sessions. Its node agent publishes the GPUs and their health in status; admins cordon the node or single GPUs in spec.",
    printcolumn(
        name = "GPUs",
        type_ = "integer",
        json_path = ".status.capacity",
        description = "GPUs on the node, healthy or not"
    ),
    printcolumn(
        name = "Free",
        type_ = "integer",
        json_path = ".status.free",
        description = "Healthy, uncordoned GPUs that no session holds"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the node agent is alive and Docker and ZFS work"
    ),
    printcolumn(
        name = "Cordoned",
        type_ = "boolean",
        json_path = ".spec.unschedulable",
        description = "Cordoned by an admin: no new session is placed here"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Allocatable",
        type_ = "integer",
        json_path = ".status.allocatable",
        description = "Healthy, uncordoned GPUs, held or not",
        priority = "1"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the node is or is not Ready",
        priority = "1"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeSpec {
    /// Cordon the whole node: running sessions stay, no new session is placed here.
    #[serde(default)]
    pub unschedulable: bool,
    /// UUIDs of single GPUs to cordon: running sessions keep them, no new session gets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_gpus: Vec<String>,
}

/// Health of one GPU as NVML (or the static inventory) reports it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum GpuHealth {
    /// The GPU works.
    Healthy,
    /// The GPU reported an error (XID, ECC, lost); it is not scheduled.
    Unhealthy,
    /// Not known yet.
    #[default]
    Unknown,
}

/// One GPU of a node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuInfo {
    /// The GPU's index on the node.
    pub index: u32,
    /// The GPU's UUID (`GPU-…`).
    #[schemars(regex(pattern = GPU_UUID_PATTERN))]
    pub uuid: String,
    /// The product name (`NVIDIA H100 80GB HBM3`).
    #[serde(default)]
    pub model: String,
    /// Total memory in bytes.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Health as last observed.
    #[serde(default)]
    pub health: GpuHealth,
}

/// Which session holds which GPU.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuAllocation {
    /// The GPU's UUID.
    pub uuid: String,
    /// The holding Session as `<namespace>/<name>`.
    pub session: String,
    /// The holding Session's uid.
    pub session_uid: String,
}

/// Health of a runtime dependency of the node agent (Docker, ZFS).
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentHealth {
    /// Whether the component answered its last check.
    pub healthy: bool,
    /// The component's version, when known.
    pub version: Option<String>,
    /// What went wrong, and how to fix it.
    pub message: Option<String>,
}

/// What the node agent observes on its node.
#[skip_serializing_none]
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GpuNodeStatus {
    /// The node's GPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<GpuInfo>,
    /// Number of GPUs on the node, healthy or not.
    #[serde(default)]
    pub capacity: u32,
    /// Number of healthy, uncordoned GPUs (held by sessions or not).
    #[serde(default)]
    pub allocatable: u32,
    /// Number of healthy, uncordoned GPUs that no session holds: what the
    /// scheduler can still give out here. The node agent recomputes it
    /// whenever a session on this node binds or releases GPUs.
    #[serde(default)]
    pub free: u32,
    /// GPUs held by sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allocated: Vec<GpuAllocation>,
    /// Version of the node agent.
    pub agent_version: Option<String>,
    /// Docker Engine on the node.
    pub docker: Option<ComponentHealth>,
    /// ZFS on the node.
    pub zfs: Option<ComponentHealth>,
    /// The node agent's last heartbeat; the node turns `Ready=False` when it is stale.
    pub last_heartbeat_time: Option<Time>,
    /// Standard conditions: `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from.
    pub observed_generation: Option<i64>,
}
