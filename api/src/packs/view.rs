//! A Pack as the catalogue shows it.

use medforge_crds::Pack;
use medforge_crds::policy::SessionPolicy;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::account_policy::LimitValues;
use crate::packs::body::{EnvVarBody, PackDefaults, PackResources};
use crate::packs::catalogue::{GpuRange, gpu_range};

/// A Pack as the catalogue shows it: what a session of it runs, what it
/// gets when it asks for nothing, and what it may ask for.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Pack")]
pub struct PackView {
    /// The Pack's name: what a create body's `pack` names.
    #[schemars(schema_with = "crate::validate::schema::kube_name")]
    pub name: String,
    /// The name to show people (the Pack's `displayName`, else its name).
    pub display_name: String,
    /// What it holds and what it is for.
    pub description: Option<String>,
    /// The image, pinned by digest (a node lacking it pulls it).
    pub image: String,
    /// The port its server listens on in the container.
    pub port: u16,
    /// The command that replaces the image's, if any.
    pub command: Option<Vec<String>>,
    /// Extra environment variables of its containers.
    pub env: Vec<EnvVarBody>,
    /// The exposures its sessions may have (both when the Pack names none).
    #[schemars(schema_with = "crate::validate::schema::shown_exposures")]
    pub exposures: Vec<String>,
    /// The GPU counts a create may ask for, and the count it gets when it
    /// names none, under the caller's own policy.
    pub gpus: GpuRange,
    /// Container limits its sessions get when they set none (as the Pack
    /// sets them; unset ones are the account's or the operator's defaults).
    pub resources: PackResources,
    /// Its other defaults, as the Pack sets them.
    pub session_defaults: PackDefaults,
    /// The most its sessions may ask for, as the Pack sets it (the
    /// operator's maxima apply too).
    pub maxima: LimitValues,
    /// No new sessions (listed to admins only); its sessions run and resume.
    pub deprecated: bool,
    /// Every Ready node pulls its image ahead of any session.
    pub pre_pull: bool,
}

/// The answer of `PUT /api/v2/admin/packs/{name}`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "PackReply")]
pub struct PackReply {
    /// The Pack as stored.
    pub pack: PackView,
}

/// Shows `pack` to a caller held to `policy`.
pub fn view(pack: &Pack, policy: &SessionPolicy) -> PackView {
    let spec = &pack.spec;
    let name = pack.metadata.name.clone().unwrap_or_default();
    PackView {
        display_name: spec.display_name.clone().unwrap_or_else(|| name.clone()),
        name,
        description: spec.description.clone(),
        image: spec.image.clone(),
        port: spec.port,
        command: spec.command.clone(),
        env: spec.env.iter().map(EnvVarBody::from).collect(),
        exposures: spec
            .offered()
            .into_iter()
            .map(|e| e.as_str().to_owned())
            .collect(),
        gpus: gpu_range(Some(spec), policy),
        resources: spec
            .resources
            .as_ref()
            .map(PackResources::from)
            .unwrap_or_default(),
        session_defaults: spec
            .session_defaults
            .as_ref()
            .map(PackDefaults::from)
            .unwrap_or_default(),
        maxima: spec
            .maxima
            .as_ref()
            .map(LimitValues::from)
            .unwrap_or_default(),
        deprecated: spec.deprecated,
        pre_pull: spec.pre_pull,
    }
}
