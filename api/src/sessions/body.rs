//! The body of `POST …/sessions` and the Session spec it becomes.

use medforge_crds::policy::{SessionPolicy, resolve};
use medforge_crds::{DesiredState, Exposure, Pack, SessionResources, SessionSpec, WorkspaceSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::SessionsConfig;
use crate::error::{ApiError, FieldError};
use crate::packs::catalogue::gpu_range;
use crate::validate;

/// Body of `POST …/sessions`. Every field is optional; `null` is the same as absent.
/// Serialized (every field, absent ones as `null`) only to compare the
/// bodies of idempotent creates.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Pack name (default: the configured default pack).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::pack_name")]
    pub pack: Option<String>,
    /// Whole GPUs, 0 to the configured maximum (default: the configured default).
    #[serde(default, deserialize_with = "validate::int::body_u32")]
    pub gpus: Option<u32>,
    /// Stop after this long without a request (`30m`, `2h`).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub idle_timeout: Option<String>,
    /// Stop this long after starting (`12h`).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub max_lifetime: Option<String>,
    /// Container limits (unset ones come from the Pack, then the operator's defaults).
    #[serde(default, deserialize_with = "validate::object_or_null")]
    pub resources: Option<ResourcesBody>,
    /// Quota of the session's workspace (`50Gi`; default: the operator's).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub workspace_quota: Option<String>,
    /// Start from a snapshot instead of an empty workspace: the id of one
    /// of your own snapshots that is ready (`GET /api/v2/snapshots`). The
    /// session runs on that snapshot's node, on a clone of it.
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::optional_kube_name")]
    pub restore_from: Option<String>,
}

/// Container limits in a create body; `null` is the same as absent.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Resources")]
pub struct ResourcesBody {
    /// CPU cores (`2`, `500m`).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::cpu")]
    pub cpu: Option<String>,
    /// Memory (`16Gi`).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub memory: Option<String>,
    /// /dev/shm size (`2Gi`).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub shm: Option<String>,
    /// Process limit.
    #[serde(default, deserialize_with = "validate::int::body_i64")]
    #[schemars(range(min = validate::PIDS_MIN, max = validate::PIDS_MAX))]
    pub pids: Option<i64>,
}

impl CreateSession {
    /// Checks the body and builds the spec; every invalid field is named.
    pub fn into_spec(
        self,
        owner: &str,
        exposure: Exposure,
        config: &SessionsConfig,
    ) -> Result<SessionSpec, ApiError> {
        let mut errors = Vec::new();
        let pack = self.pack.unwrap_or_else(|| config.default_pack.clone());
        if let Err(e) = validate::PACK_NAME.check("pack", &pack) {
            errors.push(e);
        }
        // Above a maximum is refused by `within_policy`, once the Pack is known.
        let gpus = self.gpus.unwrap_or(config.policy.defaults.gpus);
        if let Some(v) = &self.workspace_quota
            && let Err(e) = validate::size("workspace_quota", v)
        {
            errors.push(e);
        }
        if let Some(v) = &self.restore_from
            && let Err(e) = validate::KUBE_NAME.check("restore_from", v)
        {
            errors.push(e);
        }
        for (field, value) in [
            ("idle_timeout", &self.idle_timeout),
            ("max_lifetime", &self.max_lifetime),
        ] {
            if let Some(v) = value
                && let Err(e) = validate::duration(field, v)
            {
                errors.push(e);
            }
        }
        let resources = self.resources.map(|r| {
            if let Some(v) = &r.cpu
                && let Err(e) = validate::cpu("resources.cpu", v)
            {
                errors.push(e);
            }
            for (field, value) in [("resources.memory", &r.memory), ("resources.shm", &r.shm)] {
                if let Some(v) = value
                    && let Err(e) = validate::size(field, v)
                {
                    errors.push(e);
                }
            }
            if let Some(p) = r.pids
                && !(validate::PIDS_MIN..=validate::PIDS_MAX).contains(&p)
            {
                errors.push(FieldError::new(
                    "resources.pids",
                    format!(
                        "must be between {} and {}",
                        validate::PIDS_MIN,
                        validate::PIDS_MAX
                    ),
                ));
            }
            SessionResources {
                cpu: r.cpu,
                memory: r.memory,
                shm: r.shm,
                pids: r.pids,
            }
        });
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(SessionSpec {
            owner: owner.to_owned(),
            pack,
            exposure,
            gpus,
            state: DesiredState::Running,
            resources,
            workspace: (self.workspace_quota.is_some() || self.restore_from.is_some()).then_some(
                WorkspaceSpec {
                    quota: self.workspace_quota,
                    restore_from: self.restore_from,
                },
            ),
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
            resume_requested_at: None,
        })
    }
}

/// Holds a spec to the policy (the operator's, or the account's own) and
/// its Pack's GPU range and maxima, as the node agent will: a value above
/// its maximum (or a GPU count below the Pack's minimum) is a 422 naming
/// the field and the bound. A GPU count the body did not give is the
/// Pack's default, else the policy's, within the Pack's range.
pub fn within_policy(
    spec: &mut SessionSpec,
    gpus_given: bool,
    pack: Option<&Pack>,
    policy: &SessionPolicy,
) -> Result<(), ApiError> {
    let pack = pack.map(|p| (p.metadata.name.as_deref().unwrap_or_default(), &p.spec));
    let range = gpu_range(pack.map(|(_, p)| p), policy);
    let mut errors = Vec::new();
    if !gpus_given {
        // A default is never refused for being above a maximum: it is
        // lowered to it (and raised to the Pack's minimum).
        spec.gpus = range.default;
    } else if spec.gpus < range.min {
        let name = pack.map(|(n, _)| n).unwrap_or_default();
        errors.push(FieldError::new(
            "gpus",
            format!(
                "{} is below the minimum {} (Pack {name})",
                spec.gpus, range.min
            ),
        ));
    }
    if let Err(violations) = resolve(spec, pack, policy, None) {
        errors.extend(
            violations
                .iter()
                .map(|e| FieldError::new(e.field().body_path(), e.reason())),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(errors))
    }
}
