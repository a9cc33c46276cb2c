//! An account's own session policy as the api reads and shows it
//! (`session_policy` of a user), and its conversion to the policy keys the
//! operator's policy and the Session annotation use.

use std::collections::BTreeMap;

use medforge_crds::policy::{PolicyOverrides, SessionPolicy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, FieldError};
use crate::users::User;
use crate::validate;

/// The account's own session defaults and maxima, when an admin set any.
pub fn overrides_of(user: &User) -> Option<PolicyOverrides> {
    user.session_policy
        .as_deref()
        .and_then(|p| serde_json::from_str::<PolicyOverrides>(p).ok())
        .filter(|o| !o.is_empty())
}

/// The policy `user`'s new sessions are held to: the operator's, with the
/// account's own defaults and maxima in place where an admin set them.
pub fn policy_for(operator: &SessionPolicy, user: &User) -> Result<SessionPolicy, ApiError> {
    match overrides_of(user) {
        Some(o) => operator
            .for_account(&o)
            .map_err(|e| ApiError::internal(format!("the account's session policy: {e}"))),
        None => Ok(*operator),
    }
}

/// Session limits by name, as an admin sets them for one account
/// (`PATCH /api/v2/admin/users/{id}` `session_policy`); unset ones keep the
/// operator's. The same notation as a create body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SessionLimitValues")]
pub struct LimitValues {
    /// CPU cores (`8`, `500m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::cpu")]
    pub cpu: Option<String>,
    /// Memory (`64Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub memory: Option<String>,
    /// /dev/shm (`8Gi`).
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
    /// Whole GPUs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = 0, max = 8))]
    pub gpus: Option<u32>,
    /// Workspace quota (`200Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::size")]
    pub workspace_quota: Option<String>,
    /// Idle timeout (`24h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::validate::schema::duration")]
    pub max_lifetime: Option<String>,
}

impl LimitValues {
    /// The errors of the values that are not valid, each named
    /// `<prefix>.<field>` (none: every value is one the api accepts).
    pub fn errors(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        self.keyed(prefix, &mut errors);
        errors
    }

    /// The values by policy key (`workspace-quota`), and the errors of those
    /// that are not valid, each named `<prefix>.<field>`.
    fn keyed(&self, prefix: &str, errors: &mut Vec<FieldError>) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut text = |key: &str,
                        field: &str,
                        v: &Option<String>,
                        check: fn(&str, &str) -> Result<(), FieldError>| {
            if let Some(v) = v {
                match check(&format!("{prefix}.{field}"), v) {
                    Ok(()) => {
                        out.insert(key.to_owned(), v.clone());
                    }
                    Err(e) => errors.push(e),
                }
            }
        };
        text("cpu", "cpu", &self.cpu, |f, v| {
            validate::cpu(f, v).map(drop)
        });
        text("memory", "memory", &self.memory, |f, v| {
            validate::size(f, v).map(drop)
        });
        text("shm", "shm", &self.shm, |f, v| {
            validate::size(f, v).map(drop)
        });
        text(
            "workspace-quota",
            "workspace_quota",
            &self.workspace_quota,
            |f, v| validate::size(f, v).map(drop),
        );
        text(
            "idle-timeout",
            "idle_timeout",
            &self.idle_timeout,
            |f, v| validate::duration(f, v).map(drop),
        );
        text(
            "max-lifetime",
            "max_lifetime",
            &self.max_lifetime,
            |f, v| validate::duration(f, v).map(drop),
        );
        if let Some(p) = self.pids {
            if (validate::PIDS_MIN..=validate::PIDS_MAX).contains(&p) {
                out.insert("pids".into(), p.to_string());
            } else {
                errors.push(FieldError::new(
                    format!("{prefix}.pids"),
                    format!(
                        "must be between {} and {}",
                        validate::PIDS_MIN,
                        validate::PIDS_MAX
                    ),
                ));
            }
        }
        if let Some(g) = self.gpus {
            if g <= 8 {
                out.insert("gpus".into(), g.to_string());
            } else {
                errors.push(FieldError::new(
                    format!("{prefix}.gpus"),
                    "must be between 0 and 8",
                ));
            }
        }
        out
    }

    fn from_keyed(map: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| map.get(k).cloned();
        LimitValues {
            cpu: get("cpu"),
            memory: get("memory"),
            shm: get("shm"),
            pids: get("pids").and_then(|v| v.parse().ok()),
            gpus: get("gpus").and_then(|v| v.parse().ok()),
            workspace_quota: get("workspace-quota"),
            idle_timeout: get("idle-timeout"),
            max_lifetime: get("max-lifetime"),
        }
    }
}

/// An account's own session defaults and maxima.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "AccountSessionPolicy")]
pub struct AccountPolicy {
    /// What the account's sessions get when neither they nor their Pack say.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub defaults: Option<LimitValues>,
    /// The most the account's sessions may have (may be above the operator's).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub maxima: Option<LimitValues>,
    /// How many of each of the account's sessions' snapshots are kept, in
    /// place of the operator's retention.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::object_or_null"
    )]
    pub snapshot_retention: Option<RetentionValues>,
}

/// Snapshot retention for one account: the newest `keep_last` snapshots of
/// each session and every one younger than `keep_days` are kept (the newest,
/// and one a workspace was restored from, always are). Unset values keep
/// the operator's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "SnapshotRetention")]
pub struct RetentionValues {
    /// At least 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = 1, max = 100000))]
    pub keep_last: Option<u32>,
    /// 0: none is kept for its age alone.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "validate::int::body_u32"
    )]
    #[schemars(range(min = 0, max = 100000))]
    pub keep_days: Option<u32>,
}

impl AccountPolicy {
    /// As stored (policy keys), or a 422 naming each invalid field under `field`.
    pub fn to_overrides(&self, field: &str) -> Result<PolicyOverrides, ApiError> {
        let mut errors = Vec::new();
        let empty = LimitValues::default();
        let overrides = PolicyOverrides {
            defaults: self
                .defaults
                .as_ref()
                .unwrap_or(&empty)
                .keyed(&format!("{field}.defaults"), &mut errors),
            maxima: self
                .maxima
                .as_ref()
                .unwrap_or(&empty)
                .keyed(&format!("{field}.maxima"), &mut errors),
            retention: self
                .snapshot_retention
                .map(|r| medforge_crds::RetentionOverride {
                    keep_last: r.keep_last,
                    keep_days: r.keep_days,
                }),
        };
        if let Some(Err((name, e))) = overrides.retention.map(|r| r.check()) {
            let name = if name == "keepLast" {
                "keep_last"
            } else {
                "keep_days"
            };
            errors.push(FieldError::new(
                format!("{field}.snapshot_retention.{name}"),
                e,
            ));
        }
        if errors.is_empty() {
            Ok(overrides)
        } else {
            Err(ApiError::Validation(errors))
        }
    }

    /// As the api shows it.
    pub fn from_overrides(o: &PolicyOverrides) -> Self {
        let part =
            |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| LimitValues::from_keyed(m));
        AccountPolicy {
            defaults: part(&o.defaults),
            maxima: part(&o.maxima),
            snapshot_retention: o.retention.map(|r| RetentionValues {
                keep_last: r.keep_last,
                keep_days: r.keep_days,
            }),
        }
    }
}
