//! `Pack`: an image and the defaults a session runs with.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use crate::schema::{DURATION_PATTERN, QUANTITY_PATTERN};
use crate::session::{Exposure, SessionResources};

/// The most characters of a Pack's `displayName`.
pub const DISPLAY_NAME_MAX: usize = 64;
/// The most characters of a Pack's `description`.
pub const DESCRIPTION_MAX: usize = 1024;

/// A container image (pinned by digest, or a tag the node agents resolve to one), with the port and defaults its sessions use, and how the api's catalogue (`GET /api/v2/packs`) shows it.
#[skip_serializing_none]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
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
    doc = "An image pack: the container image a session runs (pinned by digest, or a tag resolved to one), its port, command, environment and default resources, and how the catalogue shows it (display name, description, exposures, GPU range, deprecated).",
    printcolumn(
        name = "Display-Name",
        type_ = "string",
        json_path = ".spec.displayName",
        description = "The name people see in the catalogue"
    ),
    printcolumn(
        name = "Image",
        type_ = "string",
        json_path = ".spec.image",
        description = "The image, pinned by digest, or a tag"
    ),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(
        name = "Deprecated",
        type_ = "boolean",
        json_path = ".spec.deprecated",
        description = "New sessions are refused; existing ones run and resume"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.minima) || !has(self.minima.gpus) || !has(self.maxima) || !has(self.maxima.gpus) || self.minima.gpus <= self.maxima.gpus"
).message("minima.gpus must not be above maxima.gpus"))]
pub struct PackSpec {
    /// The image: pinned by digest (`name@sha256:<64 hex>`, pulled by a node that lacks it), a local image id (`sha256:<64 hex>`, never pulled), or a tag (`name:tag`), which the node agents resolve to a digest once per change of the Pack (`status.resolvedImage`) so that every node runs the same bytes; sessions start from the digest only.
    #[schemars(regex(pattern = r"^(([^@\s]+@)?sha256:[a-f0-9]{64}|[a-z0-9][^@\s]*)$"))]
    #[schemars(length(max = 512))]
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
    /// The most a session of this Pack may ask for, below the operator's own maxima. A session above one is refused (422 from the api, `PolicyViolation` from the node agent). `maxima.gpus` is the top of the Pack's GPU range.
    pub maxima: Option<SessionMaxima>,
    /// The least a session of this Pack may ask for: `gpus` is the bottom of the Pack's GPU range (0 when unset). The api refuses a create below it (422); a default GPU count below it is raised to it. The node agent does not check it.
    pub minima: Option<PackMinima>,
    /// The name people see in the catalogue (`PyTorch 2.4 with Jupyter`), at most 64 characters; the Pack's name when unset.
    #[schemars(length(max = 64))]
    pub display_name: Option<String>,
    /// What the Pack holds and what it is for, as the catalogue shows it; at most 1024 characters.
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The exposures its sessions may have (`external`, `internal`); empty or unset: both. The api refuses a create of another exposure (422) and lists the Pack only to users who may use one of them (`internal` needs the internal permission).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub exposures: Vec<Exposure>,
    /// A deprecated Pack takes no new sessions (the api refuses creates naming it, 422, and lists it to admins only); its existing sessions keep running, stop and resume as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deprecated: bool,
    /// Pull the image onto every Ready node ahead of any session (each node
    /// agent pulls it when it lacks it); otherwise a node pulls it when a
    /// session first needs it there. Each node's state shows in `status.nodes`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pre_pull: bool,
}

impl Pack {
    /// The image its sessions run, pinned: `spec.image` when it is pinned
    /// (by digest or as a local id), else the digest resolved for this
    /// generation; `None` while its tag is not resolved (for this generation).
    pub fn pinned_image(&self) -> Option<&str> {
        if is_pinned(&self.spec.image) {
            return Some(&self.spec.image);
        }
        let st = self.status.as_ref()?;
        (st.observed_generation.is_some() && st.observed_generation == self.metadata.generation)
            .then_some(st.resolved_image.as_deref())
            .flatten()
    }
}

/// Whether an image reference is pinned: `…@sha256:<hex>` or `sha256:<hex>`.
pub fn is_pinned(image: &str) -> bool {
    let digest = image.rsplit_once('@').map_or(image, |(_, d)| d);
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl PackSpec {
    /// A Pack of `image` serving on `port`, everything else unset (no
    /// command or environment of its own, the policy's resources and
    /// limits, both exposures, not deprecated, not pre-pulled).
    pub fn of_image(image: impl Into<String>, port: u16) -> PackSpec {
        PackSpec {
            image: image.into(),
            port,
            command: None,
            env: Vec::new(),
            resources: None,
            maxima: None,
            session_defaults: None,
            minima: None,
            display_name: None,
            description: None,
            exposures: Vec::new(),
            deprecated: false,
            pre_pull: false,
        }
    }

    /// Whether its sessions may have `exposure` (an empty list allows both).
    pub fn offers(&self, exposure: Exposure) -> bool {
        self.exposures.is_empty() || self.exposures.contains(&exposure)
    }

    /// The exposures it offers, in their order (`external`, `internal`).
    pub fn offered(&self) -> Vec<Exposure> {
        [Exposure::External, Exposure::Internal]
            .into_iter()
            .filter(|e| self.offers(*e))
            .collect()
    }

    /// The bottom of its GPU range (`minima.gpus`, 0 when unset).
    pub fn min_gpus(&self) -> u32 {
        self.minima.as_ref().and_then(|m| m.gpus).unwrap_or(0)
    }

    /// The top of its GPU range (`maxima.gpus`), if it sets one.
    pub fn max_gpus(&self) -> Option<u32> {
        self.maxima.as_ref().and_then(|m| m.gpus)
    }
}

/// A Pack's lower bounds on a session's values.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackMinima {
    /// Whole GPUs: a session of this Pack asks for at least this many.
    #[schemars(range(min = 0, max = 8))]
    pub gpus: Option<u32>,
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
    /// Conditions: `Resolved` (a tag was resolved to a digest, or why not:
    /// `ImageNotFound`, `Unauthorized`, `ImagePullFailed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status was computed from
    /// (`resolvedImage` is the image of this generation).
    pub observed_generation: Option<i64>,
    /// When `image` is a tag: the image pinned to the digest the tag named
    /// when a node agent asked its registry for `observedGeneration`.
    /// Sessions run this (a pinned `image` is run as it is).
    pub resolved_image: Option<String>,
    /// The image on each node that reported it, one entry per node (each
    /// node agent writes its own, by server-side apply).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["node".into()]))]
    pub nodes: Vec<PackNodeImage>,
}

/// Whether one node has a Pack's image.
#[skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackNodeImage {
    /// The node (its GpuNode's name).
    pub node: String,
    /// The image this entry is about (the Pack's `image` when it was written).
    pub image: String,
    /// `Present`, `Pulling`, `Failed` or `Absent` (not pulled: no session
    /// needed it there, and the Pack is not pre-pulled).
    pub state: ImageState,
    /// Why it failed (`ImagePullFailed`, `ImageNotFound`, `Unauthorized`).
    pub reason: Option<String>,
    /// The registry's message, or the bytes pulled so far.
    pub message: Option<String>,
    /// When `state` last changed.
    pub last_transition_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// A node's copy of a Pack's image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, strum::Display)]
pub enum ImageState {
    Present,
    Pulling,
    Failed,
    Absent,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> PackSpec {
        let mut v = v;
        v["image"] = format!("sha256:{}", "a".repeat(64)).into();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn catalogue_fields_default_to_todays_behaviour() {
        let plain = spec(serde_json::json!({}));
        assert!(plain.offers(Exposure::External) && plain.offers(Exposure::Internal));
        assert_eq!(plain.offered(), [Exposure::External, Exposure::Internal]);
        assert_eq!((plain.min_gpus(), plain.max_gpus()), (0, None));
        assert!(!plain.deprecated);
        // Unset fields stay out of the object written.
        let written = serde_json::to_value(&plain).unwrap();
        assert_eq!(
            written.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["image", "port"]
        );
    }

    #[test]
    fn a_tag_runs_only_once_resolved_for_the_packs_generation() {
        let digest = format!("sha256:{}", "b".repeat(64));
        assert!(is_pinned(&digest) && is_pinned(&format!("r.io/x@{digest}")));
        assert!(!is_pinned("r.io/x:1.0") && !is_pinned("x") && !is_pinned("x@sha256:12"));
        let mut p = Pack::new("p", spec(serde_json::json!({})));
        p.metadata.generation = Some(2);
        assert_eq!(
            p.pinned_image(),
            Some(format!("sha256:{}", "a".repeat(64)).as_str())
        );
        p.spec.image = "r.io/x:1.0".into();
        assert_eq!(p.pinned_image(), None);
        let resolved = format!("r.io/x@{digest}");
        p.status = Some(PackStatus {
            observed_generation: Some(1),
            resolved_image: Some(resolved.clone()),
            ..PackStatus::default()
        });
        // Resolved for an older generation: not this one's.
        assert_eq!(p.pinned_image(), None);
        p.status.as_mut().unwrap().observed_generation = Some(2);
        assert_eq!(p.pinned_image(), Some(resolved.as_str()));
    }

    #[test]
    fn exposures_and_the_gpu_range_are_read() {
        let p = spec(serde_json::json!({
            "exposures": ["internal"],
            "minima": {"gpus": 1},
            "maxima": {"gpus": 2},
            "deprecated": true,
        }));
        assert!(!p.offers(Exposure::External));
        assert_eq!(p.offered(), [Exposure::Internal]);
        assert_eq!((p.min_gpus(), p.max_gpus()), (1, Some(2)));
        assert!(p.deprecated);
    }
}
