//! The body of `PUT /api/v2/admin/packs/{name}`: a Pack's spec in the
//! api's conventions (snake_case, the create body's notation for
//! quantities and durations), checked, and the `PackSpec` it becomes. Its
//! parts are also how a Pack is shown.

use medforge_crds::pack::{PackMinima, PackSessionDefaults, SessionMaxima};
use medforge_crds::{EnvVar, Exposure, PackSpec, SessionResources};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::account_policy::LimitValues;
use crate::error::{ApiError, FieldError};
use crate::validate;

/// Container limits a Pack gives its sessions when they set none (unset:
/// the account's or the operator's defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PackResources")]
pub struct PackResources {
    /// CPU cores (`2`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::cpu")]
    pub cpu: Option<String>,
    /// Memory (`16Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub memory: Option<String>,
    /// /dev/shm (`2Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub shm: Option<String>,
    /// Processes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_i64"
    )]
    #[schemars(range(min = validate::PIDS_MIN, max = validate::PIDS_MAX))]
    pub pids: Option<i64>,
}

/// A Pack's other defaults for its sessions (unset: the account's or the
/// operator's).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PackSessionDefaults")]
pub struct PackDefaults {
    /// Whole GPUs when a create names none (kept within the Pack's GPU range).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = 0, max = validate::PACK_GPUS_MAX))]
    pub gpus: Option<u32>,
    /// Workspace quota (`100Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub workspace_quota: Option<String>,
    /// Idle timeout (`2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub max_lifetime: Option<String>,
}

/// A Pack's lower bounds on its sessions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PackMinima")]
pub struct PackMinimaBody {
    /// Whole GPUs: a create asks for at least this many (0 when unset).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = 0, max = validate::PACK_GPUS_MAX))]
    pub gpus: Option<u32>,
}

/// One environment variable of a Pack's container. The node agent sets
/// `MEDFORGE_*` and `NVIDIA_*` itself and ignores a Pack's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PackEnvVar")]
pub struct EnvVarBody {
    /// Its name.
    #[schemars(schema_with = "crate::validate::schema::env_name")]
    pub name: String,
    /// Its value (`null` or absent: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::env_value")]
    pub value: Option<String>,
}

/// Body of `PUT /api/v2/admin/packs/{name}`: the whole spec of the Pack
/// (what is left out is unset, not kept). Only `image` is required.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "PackSpec")]
pub struct PackBody {
    /// The image, pinned by digest: `repository@sha256:…`, which a node
    /// lacking it pulls, or a local image id `sha256:…`, which must already
    /// be on the nodes (`docker load`).
    #[schemars(schema_with = "crate::validate::schema::pack_image")]
    pub image: String,
    /// The port the session's server listens on in the container (8080).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = validate::PORT_MIN, max = validate::PORT_MAX))]
    pub port: Option<u32>,
    /// Replaces the image's command (at most 64 arguments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::pack_command")]
    pub command: Option<Vec<String>>,
    /// Extra environment variables (at most 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = validate::PACK_ENV_MAX))]
    pub env: Option<Vec<EnvVarBody>>,
    /// The name the catalogue shows (1 to 64 characters; default: the Pack's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::pack_display_name")]
    pub display_name: Option<String>,
    /// What the catalogue says of it (up to 1024 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::pack_description")]
    pub description: Option<String>,
    /// The exposures its sessions may have (`external`, `internal`; each at
    /// most once). Absent, `null` or empty: both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::optional_exposures")]
    pub exposures: Option<Vec<Exposure>>,
    /// `true`: no new sessions (creates naming it get 422; users no longer
    /// see it listed); its sessions run, stop and resume as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<bool>,
    /// `true`: every Ready node pulls the image ahead of any session
    /// (default: a node pulls it when a session first needs it there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_pull: Option<bool>,
    /// Container limits for its sessions that set none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub resources: Option<PackResources>,
    /// Its sessions' other defaults.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub session_defaults: Option<PackDefaults>,
    /// The least its sessions may ask for: `gpus`, the bottom of its GPU range.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub minima: Option<PackMinimaBody>,
    /// The most its sessions may ask for (below the operator's maxima;
    /// `gpus` is the top of its GPU range).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub maxima: Option<LimitValues>,
}

/// Checks one optional string against a rule.
fn check(errors: &mut Vec<FieldError>, rule: validate::Rule, field: &str, value: Option<&str>) {
    if let Some(v) = value
        && let Err(e) = rule.check(field, v)
    {
        errors.push(e);
    }
}

/// Checks a GPU count of a Pack's range.
fn check_gpus(errors: &mut Vec<FieldError>, field: &str, value: Option<u32>) {
    if let Some(g) = value
        && g > validate::PACK_GPUS_MAX
    {
        errors.push(FieldError::new(
            field,
            format!("must be between 0 and {}", validate::PACK_GPUS_MAX),
        ));
    }
}

/// Checks a quantity or duration with one of the api's checks.
fn check_with<T>(
    errors: &mut Vec<FieldError>,
    check: fn(&str, &str) -> Result<T, FieldError>,
    field: &str,
    value: Option<&str>,
) {
    if let Some(v) = value
        && let Err(e) = check(field, v)
    {
        errors.push(e);
    }
}

impl PackResources {
    fn errors(&self, errors: &mut Vec<FieldError>) {
        check_with(errors, validate::cpu, "resources.cpu", self.cpu.as_deref());
        check_with(
            errors,
            validate::size,
            "resources.memory",
            self.memory.as_deref(),
        );
        check_with(errors, validate::size, "resources.shm", self.shm.as_deref());
        if let Some(p) = self.pids
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
    }
}

impl PackDefaults {
    fn errors(&self, errors: &mut Vec<FieldError>) {
        check_gpus(errors, "session_defaults.gpus", self.gpus);
        check_with(
            errors,
            validate::size,
            "session_defaults.workspace_quota",
            self.workspace_quota.as_deref(),
        );
        check_with(
            errors,
            validate::duration,
            "session_defaults.idle_timeout",
            self.idle_timeout.as_deref(),
        );
        check_with(
            errors,
            validate::duration,
            "session_defaults.max_lifetime",
            self.max_lifetime.as_deref(),
        );
    }
}

impl PackBody {
    /// Checks the body and builds the spec; every invalid field is named.
    pub fn into_spec(self) -> Result<PackSpec, ApiError> {
        let mut errors = Vec::new();
        if let Err(e) = validate::PACK_IMAGE.check("image", &self.image) {
            errors.push(e);
        }
        if let Some(p) = self.port
            && !(validate::PORT_MIN..=validate::PORT_MAX).contains(&p)
        {
            errors.push(FieldError::new(
                "port",
                format!(
                    "must be between {} and {}",
                    validate::PORT_MIN,
                    validate::PORT_MAX
                ),
            ));
        }
        if let Some(command) = &self.command {
            if command.len() > validate::PACK_COMMAND_MAX {
                errors.push(FieldError::new(
                    "command",
                    format!("must have at most {} arguments", validate::PACK_COMMAND_MAX),
                ));
            }
            for (i, arg) in command.iter().enumerate() {
                check(
                    &mut errors,
                    validate::PACK_COMMAND_ARG,
                    &format!("command[{i}]"),
                    Some(arg),
                );
            }
        }
        if let Some(env) = &self.env {
            if env.len() > validate::PACK_ENV_MAX {
                errors.push(FieldError::new(
                    "env",
                    format!("must have at most {} variables", validate::PACK_ENV_MAX),
                ));
            }
            for (i, var) in env.iter().enumerate() {
                check(
                    &mut errors,
                    validate::ENV_NAME,
                    &format!("env[{i}].name"),
                    Some(&var.name),
                );
                check(
                    &mut errors,
                    validate::ENV_VALUE,
                    &format!("env[{i}].value"),
                    var.value.as_deref(),
                );
            }
        }
        check(
            &mut errors,
            validate::PACK_DISPLAY_NAME,
            "display_name",
            self.display_name.as_deref(),
        );
        check(
            &mut errors,
            validate::PACK_DESCRIPTION,
            "description",
            self.description.as_deref(),
        );
        let exposures = self.exposures.clone().unwrap_or_default();
        if exposures.len() > 2 || (exposures.len() == 2 && exposures[0] == exposures[1]) {
            errors.push(FieldError::new(
                "exposures",
                "must name each of external and internal at most once",
            ));
        }
        if let Some(r) = &self.resources {
            r.errors(&mut errors);
        }
        if let Some(d) = &self.session_defaults {
            d.errors(&mut errors);
        }
        let min = self.minima.as_ref().and_then(|m| m.gpus);
        check_gpus(&mut errors, "minima.gpus", min);
        if let Some(m) = &self.maxima {
            errors.extend(m.errors("maxima"));
        }
        // The GPU range holds together: min ≤ default ≤ max.
        let max = self.maxima.as_ref().and_then(|m| m.gpus);
        if let (Some(lo), Some(hi)) = (min, max)
            && lo > hi
        {
            errors.push(FieldError::new(
                "minima.gpus",
                format!("{lo} is above maxima.gpus ({hi})"),
            ));
        }
        if let Some(d) = self.session_defaults.as_ref().and_then(|d| d.gpus) {
            if min.is_some_and(|lo| d < lo) {
                errors.push(FieldError::new(
                    "session_defaults.gpus",
                    format!("{d} is below minima.gpus ({})", min.unwrap_or_default()),
                ));
            }
            if max.is_some_and(|hi| d > hi) {
                errors.push(FieldError::new(
                    "session_defaults.gpus",
                    format!("{d} is above maxima.gpus ({})", max.unwrap_or_default()),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(PackSpec {
            image: self.image,
            port: self.port.map_or(8080, |p| p as u16),
            command: self.command,
            env: self
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|v| EnvVar {
                    name: v.name,
                    value: v.value.unwrap_or_default(),
                })
                .collect(),
            resources: self.resources.map(|r| SessionResources {
                cpu: r.cpu,
                memory: r.memory,
                shm: r.shm,
                pids: r.pids,
            }),
            session_defaults: self.session_defaults.map(|d| PackSessionDefaults {
                gpus: d.gpus,
                workspace_quota: d.workspace_quota,
                idle_timeout: d.idle_timeout,
                max_lifetime: d.max_lifetime,
            }),
            maxima: self.maxima.map(|m| SessionMaxima {
                cpu: m.cpu,
                memory: m.memory,
                shm: m.shm,
                pids: m.pids,
                gpus: m.gpus,
                workspace_quota: m.workspace_quota,
                idle_timeout: m.idle_timeout,
                max_lifetime: m.max_lifetime,
            }),
            minima: self.minima.map(|m| PackMinima { gpus: m.gpus }),
            display_name: self.display_name,
            description: self.description.filter(|d| !d.is_empty()),
            exposures,
            deprecated: self.deprecated.unwrap_or(false),
            pre_pull: self.pre_pull.unwrap_or(false),
        })
    }
}

impl From<&SessionResources> for PackResources {
    fn from(r: &SessionResources) -> Self {
        PackResources {
            cpu: r.cpu.clone(),
            memory: r.memory.clone(),
            shm: r.shm.clone(),
            pids: r.pids,
        }
    }
}

impl From<&PackSessionDefaults> for PackDefaults {
    fn from(d: &PackSessionDefaults) -> Self {
        PackDefaults {
            gpus: d.gpus,
            workspace_quota: d.workspace_quota.clone(),
            idle_timeout: d.idle_timeout.clone(),
            max_lifetime: d.max_lifetime.clone(),
        }
    }
}

impl From<&SessionMaxima> for LimitValues {
    fn from(m: &SessionMaxima) -> Self {
        LimitValues {
            cpu: m.cpu.clone(),
            memory: m.memory.clone(),
            shm: m.shm.clone(),
            pids: m.pids,
            gpus: m.gpus,
            workspace_quota: m.workspace_quota.clone(),
            idle_timeout: m.idle_timeout.clone(),
            max_lifetime: m.max_lifetime.clone(),
        }
    }
}

impl From<&EnvVar> for EnvVarBody {
    fn from(v: &EnvVar) -> Self {
        EnvVarBody {
            name: v.name.clone(),
            value: Some(v.value.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: serde_json::Value) -> Result<PackSpec, ApiError> {
        crate::request::parse_json::<PackBody>(v.to_string().as_bytes())?.into_spec()
    }

    fn fields(r: Result<PackSpec, ApiError>) -> Vec<String> {
        match r {
            Err(ApiError::Validation(e)) => e.into_iter().map(|e| e.field).collect(),
            other => panic!("not a 422: {other:?}"),
        }
    }

    const IMAGE: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_whole_body_becomes_the_spec() {
        let spec = body(serde_json::json!({
            "image": format!("registry.example.org:5000/packs/jupyter:4@{IMAGE}"),
            "port": 8888,
            "command": ["jupyter", "lab"],
            "env": [{"name": "A", "value": "1"}, {"name": "B"}],
            "display_name": "Jupyter",
            "description": "Notebooks.\nOn GPUs.",
            "exposures": ["internal"],
            "deprecated": true,
            "resources": {"cpu": "4", "memory": "16Gi"},
            "session_defaults": {"gpus": 2, "idle_timeout": "2h"},
            "minima": {"gpus": 1},
            "maxima": {"gpus": 4, "memory": "64Gi"},
        }))
        .unwrap();
        assert_eq!(spec.port, 8888);
        assert_eq!(spec.env[1].value, "");
        assert_eq!(spec.exposures, [Exposure::Internal]);
        assert!(spec.deprecated);
        assert_eq!(spec.min_gpus(), 1);
        assert_eq!(spec.max_gpus(), Some(4));
        assert_eq!(
            spec.resources.as_ref().unwrap().memory.as_deref(),
            Some("16Gi")
        );
        let plain = body(serde_json::json!({"image": IMAGE})).unwrap();
        assert_eq!(plain.port, 8080);
        assert!(plain.exposures.is_empty() && !plain.deprecated);
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = body(serde_json::json!({
            "image": "jupyter:latest",
            "port": 0,
            "command": ["a\u{0}b"],
            "env": [{"name": "1A"}],
            "display_name": "",
            "description": "bell\u{7}",
            "exposures": ["external", "external"],
            "resources": {"cpu": "lots"},
            "session_defaults": {"gpus": 9},
            "minima": {"gpus": 3},
            "maxima": {"gpus": 2},
        }));
        assert_eq!(
            fields(bad),
            [
                "image",
                "port",
                "command[0]",
                "env[0].name",
                "display_name",
                "description",
                "exposures",
                "resources.cpu",
                "session_defaults.gpus",
                "minima.gpus",
                "session_defaults.gpus",
            ]
        );
        let unknown = crate::request::parse_json::<PackBody>(br#"{"image": "x", "bogus": 1}"#);
        assert!(matches!(unknown, Err(ApiError::Validation(e)) if e[0].field == "bogus"));
        let missing = crate::request::parse_json::<PackBody>(br#"{}"#);
        assert!(matches!(missing, Err(ApiError::Validation(e)) if e[0].field == "image"));
    }
}
