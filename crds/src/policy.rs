//! The operator's resource policy: what a session gets when it asks for
//! nothing, and the most it may ask for.
//!
//! One pure function, [`resolve`], is the rule for both places that apply
//! it: the api before it writes a Session (a value above a maximum is a 422)
//! and the node agent before it creates anything (so a Session written with
//! kubectl is held to the same rules; it fails with `PolicyViolation`).
//!
//! A value comes from the Session, else the Pack's default, else the
//! operator's default. Its maximum is the lowest of the operator's, the
//! Pack's and, on the node agent, what the node has. A value the Session
//! asked for above its maximum is refused; a default above it is lowered to
//! it (a default is the operator's choice, not the user's).

use std::fmt;
use std::time::Duration;

use crate::pack::{PackSpec, SessionMaxima};
use crate::quantity::{ParseError, parse_bytes, parse_duration, parse_nano_cpus};
use crate::session::{SessionLimits, SessionSpec};

/// One value for each limited resource of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Amounts {
    /// CPU limit in nano-CPUs.
    pub nano_cpus: i64,
    /// Memory limit in bytes.
    pub memory: u64,
    /// Size of /dev/shm in bytes.
    pub shm: u64,
    /// Process limit.
    pub pids: i64,
    /// Whole GPUs.
    pub gpus: u32,
    /// Workspace quota in bytes.
    pub workspace_quota: u64,
    /// Stop after this long without a request.
    pub idle_timeout: Duration,
    /// Stop this long after starting.
    pub max_lifetime: Duration,
}

impl Amounts {
    /// As the Session's status shows them.
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            cpu: Field::Cpu.show_in(self),
            memory: Field::Memory.show_in(self),
            shm: Field::Shm.show_in(self),
            pids: self.pids,
            workspace_quota: Field::WorkspaceQuota.show_in(self),
            idle_timeout: Field::IdleTimeout.show_in(self),
            max_lifetime: Field::MaxLifetime.show_in(self),
        }
    }
}

/// The operator's defaults and maxima (from its configuration), with an
/// account's own where an admin set them ([`SessionPolicy::for_account`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionPolicy {
    /// What a session gets for a value that neither it nor its Pack sets.
    pub defaults: Amounts,
    /// The most any session may have.
    pub maxima: Amounts,
    /// The fields whose maximum an admin set for the account (a bit per
    /// [`Field::ALL`] index): errors name that limit rather than the operator's.
    pub account_maxima: u8,
}

/// An account's own defaults and maxima, by key (`memory`, `gpus`…), as an
/// admin set them; they replace the operator's for that account's sessions
/// (a maximum may be higher or lower than the operator's).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// Defaults by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub defaults: std::collections::BTreeMap<String, String>,
    /// Maxima by key.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub maxima: std::collections::BTreeMap<String, String>,
    /// How many of each session's snapshots are kept, in place of the
    /// node agent's settings (each value set) (the api copies it onto the account's Sessions
    /// as [`crate::keys::SNAPSHOT_RETENTION_ANNOTATION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::snapshot::RetentionOverride>,
}

impl PolicyOverrides {
    /// Whether it sets nothing.
    pub fn is_empty(&self) -> bool {
        self.defaults.is_empty() && self.maxima.is_empty() && self.retention.is_none()
    }
}

impl SessionPolicy {
    /// Sets a default (`maximum: false`) or a maximum from `key=value`
    /// (`memory=64Gi`); the error names the key and what is wrong.
    pub fn set(&mut self, maximum: bool, pair: &str) -> Result<(), String> {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not KEY=VALUE"));
        };
        let key = key.trim();
        let field = Field::ALL
            .into_iter()
            .find(|f| f.key() == key)
            .ok_or_else(|| {
                let keys: Vec<&str> = Field::ALL.iter().map(|f| f.key()).collect();
                format!("unknown key {key:?}: use one of {}", keys.join(", "))
            })?;
        let amounts = if maximum {
            &mut self.maxima
        } else {
            &mut self.defaults
        };
        field
            .set_text(amounts, value)
            .map_err(|e| format!("{key}: {e}"))
    }
}

impl Default for SessionPolicy {
    /// Modest defaults, and maxima that bound every value.
    fn default() -> Self {
        const GI: u64 = 1 << 30;
        const HOUR: u64 = 3600;
        SessionPolicy {
            defaults: Amounts {
                nano_cpus: 2_000_000_000,
                memory: 8 * GI,
                shm: GI,
                pids: 4096,
                gpus: 1,
                workspace_quota: 50 * GI,
                idle_timeout: Duration::from_secs(12 * HOUR),
                max_lifetime: Duration::from_secs(7 * 24 * HOUR),
            },
            maxima: Amounts {
                nano_cpus: 32_000_000_000,
                memory: 256 * GI,
                shm: 64 * GI,
                pids: 32_768,
                gpus: 8,
                workspace_quota: 1024 * GI,
                idle_timeout: Duration::from_secs(7 * 24 * HOUR),
                max_lifetime: Duration::from_secs(30 * 24 * HOUR),
            },
            account_maxima: 0,
        }
    }
}

impl SessionPolicy {
    /// This policy with an account's own defaults and maxima in place of the
    /// operator's. A default left above a maximum is lowered when a session
    /// resolves, as any default is.
    pub fn for_account(&self, overrides: &PolicyOverrides) -> Result<SessionPolicy, String> {
        let mut out = *self;
        for (k, v) in &overrides.defaults {
            out.set(false, &format!("{k}={v}"))?;
        }
        for (k, v) in &overrides.maxima {
            out.set(true, &format!("{k}={v}"))?;
            if let Some(i) = Field::ALL.iter().position(|f| f.key() == k.as_str()) {
                out.account_maxima |= 1 << i;
            }
        }
        Ok(out)
    }

    /// Every default must be within its maximum: an operator's policy that
    /// breaks its own rule is refused at start, naming the value.
    pub fn check(&self) -> Result<(), String> {
        let bad: Vec<String> = Field::ALL
            .iter()
            .filter(|f| f.get(&self.defaults) > f.get(&self.maxima))
            .map(|f| {
                format!(
                    "the default {} {} is above its maximum {}",
                    f.spec_path(),
                    f.show(f.get(&self.defaults)),
                    f.show(f.get(&self.maxima))
                )
            })
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad.join("; "))
        }
    }
}

/// What a node has: the agent's own bound on CPU and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// The node's CPUs in nano-CPUs.
    pub nano_cpus: i64,
    /// The node's memory in bytes.
    pub memory: u64,
}

/// A limited resource of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Cpu,
    Memory,
    Shm,
    Pids,
    Gpus,
    WorkspaceQuota,
    IdleTimeout,
    MaxLifetime,
}

impl Field {
    /// Every field, in the order errors name them.
    pub const ALL: [Field; 8] = [
        Field::Cpu,
        Field::Memory,
        Field::Shm,
        Field::Pids,
        Field::Gpus,
        Field::WorkspaceQuota,
        Field::IdleTimeout,
        Field::MaxLifetime,
    ];

    /// Its key in the operator's configuration (`memory`, `workspace-quota`).
    pub fn key(self) -> &'static str {
        match self {
            Field::Cpu => "cpu",
            Field::Memory => "memory",
            Field::Shm => "shm",
            Field::Pids => "pids",
            Field::Gpus => "gpus",
            Field::WorkspaceQuota => "workspace-quota",
            Field::IdleTimeout => "idle-timeout",
            Field::MaxLifetime => "max-lifetime",
        }
    }

    /// Sets this field of `a` from the text an operator wrote (`64Gi`, `12h`).
    pub fn set_text(self, a: &mut Amounts, text: &str) -> Result<(), String> {
        let v = self.parse(text.trim()).map_err(|e| e.to_string())?;
        let fits = match self {
            Field::Cpu | Field::Pids => i64::try_from(v).is_ok() && v > 0,
            Field::Memory | Field::Shm | Field::WorkspaceQuota => u64::try_from(v).is_ok(),
            Field::Gpus => u32::try_from(v).is_ok(),
            Field::IdleTimeout | Field::MaxLifetime => u64::try_from(v).is_ok(),
        };
        if !fits {
            return Err(format!("{text:?} is out of range"));
        }
        self.set(a, v);
        Ok(())
    }

    /// Where it is in a Session's spec (`resources.memory`).
    pub fn spec_path(self) -> &'static str {
        match self {
            Field::Cpu => "resources.cpu",
            Field::Memory => "resources.memory",
            Field::Shm => "resources.shm",
            Field::Pids => "resources.pids",
            Field::Gpus => "gpus",
            Field::WorkspaceQuota => "workspace.quota",
            Field::IdleTimeout => "idleTimeout",
            Field::MaxLifetime => "maxLifetime",
        }
    }

    /// Where it is in the api's create body (`resources.memory`, `workspace_quota`).
    pub fn body_path(self) -> &'static str {
        match self {
            Field::WorkspaceQuota => "workspace_quota",
            Field::IdleTimeout => "idle_timeout",
            Field::MaxLifetime => "max_lifetime",
            other => other.spec_path(),
        }
    }

    /// The value as one comparable number (bytes, nano-CPUs, milliseconds…).
    fn get(self, a: &Amounts) -> u128 {
        match self {
            Field::Cpu => a.nano_cpus.max(0) as u128,
            Field::Memory => a.memory as u128,
            Field::Shm => a.shm as u128,
            Field::Pids => a.pids.max(0) as u128,
            Field::Gpus => a.gpus as u128,
            Field::WorkspaceQuota => a.workspace_quota as u128,
            Field::IdleTimeout => a.idle_timeout.as_millis(),
            Field::MaxLifetime => a.max_lifetime.as_millis(),
        }
    }

    fn set(self, a: &mut Amounts, v: u128) {
        match self {
            Field::Cpu => a.nano_cpus = v as i64,
            Field::Memory => a.memory = v as u64,
            Field::Shm => a.shm = v as u64,
            Field::Pids => a.pids = v as i64,
            Field::Gpus => a.gpus = v as u32,
            Field::WorkspaceQuota => a.workspace_quota = v as u64,
            Field::IdleTimeout => a.idle_timeout = Duration::from_millis(v as u64),
            Field::MaxLifetime => a.max_lifetime = Duration::from_millis(v as u64),
        }
    }

    /// A value of this field as a person writes it (`64Gi`, `500m`, `12h`).
    pub fn show(self, v: u128) -> String {
        match self {
            Field::Cpu => show_cpus(v),
            Field::Memory | Field::Shm | Field::WorkspaceQuota => show_bytes(v),
            Field::Pids | Field::Gpus => v.to_string(),
            Field::IdleTimeout | Field::MaxLifetime => show_millis(v),
        }
    }

    /// The value this field has in `a`, as a person writes it.
    pub fn show_in(self, a: &Amounts) -> String {
        self.show(self.get(a))
    }

    /// Reads the text a Session or Pack carries for this field.
    fn parse(self, text: &str) -> Result<u128, ParseError> {
        Ok(match self {
            Field::Cpu => parse_nano_cpus(text)? as u128,
            Field::Memory | Field::Shm | Field::WorkspaceQuota => parse_bytes(text)? as u128,
            Field::IdleTimeout | Field::MaxLifetime => parse_duration(text)?.as_millis(),
            Field::Pids | Field::Gpus => {
                text.parse::<u128>().map_err(|_| ParseError::Quantity {
                    value: text.to_string(),
                })?
            }
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spec_path())
    }
}

/// Who set the maximum a value broke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The operator's policy.
    Operator,
    /// The limit an admin set for the account.
    Account,
    /// The named Pack's `maxima`.
    Pack(String),
    /// What the node has.
    Node,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Operator => f.write_str("the operator's policy"),
            Bound::Account => f.write_str("this account's limit"),
            Bound::Pack(name) => write!(f, "Pack {name}"),
            Bound::Node => f.write_str("this node's capacity"),
        }
    }
}

/// Why a session's spec cannot be run as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A value above its maximum.
    AboveMaximum {
        field: Field,
        asked: String,
        maximum: String,
        by: Bound,
    },
    /// A value that is not a quantity or duration at all.
    Unreadable { field: Field, error: String },
    /// A Pack's own default or maximum that cannot be read.
    BadPack { field: Field, error: String },
}

impl Violation {
    /// The field it concerns.
    pub fn field(&self) -> Field {
        match self {
            Violation::AboveMaximum { field, .. }
            | Violation::Unreadable { field, .. }
            | Violation::BadPack { field, .. } => *field,
        }
    }

    /// The message without the field's name (the api puts it in `field`).
    pub fn reason(&self) -> String {
        match self {
            Violation::AboveMaximum {
                asked, maximum, by, ..
            } => format!("{asked} is above the maximum {maximum} ({by})"),
            Violation::Unreadable { error, .. } => error.clone(),
            Violation::BadPack { error, .. } => format!("the Pack's value cannot be used: {error}"),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.reason())
    }
}

/// What a session runs with, or every reason it cannot.
pub fn resolve(
    spec: &SessionSpec,
    pack: Option<(&str, &PackSpec)>,
    policy: &SessionPolicy,
    node: Option<&Capacity>,
) -> Result<Amounts, Vec<Violation>> {
    let mut out = policy.defaults;
    let mut errors = Vec::new();
    let mine = spec.resources.clone().unwrap_or_default();
    let pack_defaults = pack
        .and_then(|(_, p)| p.resources.clone())
        .unwrap_or_default();
    let pack_session_defaults = pack
        .and_then(|(_, p)| p.session_defaults.clone())
        .unwrap_or_default();
    let pack_maxima = pack.and_then(|(_, p)| p.maxima.as_ref());
    let pack_name = pack.map(|(n, _)| n.to_string()).unwrap_or_default();
    for (index, field) in Field::ALL.into_iter().enumerate() {
        let asked: Option<String> = match field {
            Field::Cpu => mine.cpu.clone(),
            Field::Memory => mine.memory.clone(),
            Field::Shm => mine.shm.clone(),
            Field::Pids => mine.pids.map(|p| p.to_string()),
            Field::Gpus => Some(spec.gpus.to_string()),
            Field::WorkspaceQuota => spec.workspace.as_ref().and_then(|w| w.quota.clone()),
            Field::IdleTimeout => spec.idle_timeout.clone(),
            Field::MaxLifetime => spec.max_lifetime.clone(),
        };
        let pack_default: Option<String> = match field {
            Field::Cpu => pack_defaults.cpu.clone(),
            Field::Memory => pack_defaults.memory.clone(),
            Field::Shm => pack_defaults.shm.clone(),
            Field::Pids => pack_defaults.pids.map(|p| p.to_string()),
            // A Session always carries its GPU count: the api fills it
            // from the Pack's default (the create body, else the Pack's `sessionDefaults.gpus`).
            Field::Gpus => None,
            Field::WorkspaceQuota => pack_session_defaults.workspace_quota.clone(),
            Field::IdleTimeout => pack_session_defaults.idle_timeout.clone(),
            Field::MaxLifetime => pack_session_defaults.max_lifetime.clone(),
        };
        // The lowest maximum, and who set it.
        let by_account = policy.account_maxima & (1 << index) != 0;
        let mut maximum = (
            field.get(&policy.maxima),
            if by_account {
                Bound::Account
            } else {
                Bound::Operator
            },
        );
        if let Some(text) = pack_maxima.and_then(|m| m.get(field)) {
            match field.parse(&text) {
                Ok(v) if v < maximum.0 => maximum = (v, Bound::Pack(pack_name.clone())),
                Ok(_) => {}
                Err(e) => errors.push(Violation::BadPack {
                    field,
                    error: e.to_string(),
                }),
            }
        }
        if let Some(cap) = node {
            let have = match field {
                Field::Cpu => Some(cap.nano_cpus.max(0) as u128),
                Field::Memory | Field::Shm => Some(cap.memory as u128),
                _ => None,
            };
            if let Some(v) = have.filter(|v| *v < maximum.0) {
                maximum = (v, Bound::Node);
            }
        }
        let value = match asked {
            Some(text) => match field.parse(&text) {
                Ok(v) if v > maximum.0 => {
                    errors.push(Violation::AboveMaximum {
                        field,
                        asked: text,
                        maximum: field.show(maximum.0),
                        by: maximum.1,
                    });
                    continue;
                }
                Ok(v) => v,
                Err(e) => {
                    errors.push(Violation::Unreadable {
                        field,
                        error: e.to_string(),
                    });
                    continue;
                }
            },
            None => {
                let default = match pack_default.map(|t| field.parse(&t)) {
                    Some(Ok(v)) => v,
                    Some(Err(e)) => {
                        errors.push(Violation::BadPack {
                            field,
                            error: e.to_string(),
                        });
                        continue;
                    }
                    None => field.get(&policy.defaults),
                };
                default.min(maximum.0)
            }
        };
        field.set(&mut out, value);
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl SessionMaxima {
    /// The maximum this Pack sets for a field, as written.
    pub fn get(&self, field: Field) -> Option<String> {
        match field {
            Field::Cpu => self.cpu.clone(),
            Field::Memory => self.memory.clone(),
            Field::Shm => self.shm.clone(),
            Field::Pids => self.pids.map(|p| p.to_string()),
            Field::Gpus => self.gpus.map(|g| g.to_string()),
            Field::WorkspaceQuota => self.workspace_quota.clone(),
            Field::IdleTimeout => self.idle_timeout.clone(),
            Field::MaxLifetime => self.max_lifetime.clone(),
        }
    }
}

fn show_cpus(nanos: u128) -> String {
    if nanos.is_multiple_of(1_000_000_000) {
        (nanos / 1_000_000_000).to_string()
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}m", nanos / 1_000_000)
    } else {
        format!("{nanos}n")
    }
}

fn show_bytes(bytes: u128) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

fn show_millis(ms: u128) -> String {
    for (suffix, unit) in [("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms >= unit && ms.is_multiple_of(unit) {
            return format!("{}{suffix}", ms / unit);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{SessionResources, WorkspaceSpec};

    fn spec() -> SessionSpec {
        serde_json::from_value(serde_json::json!({"owner": "u", "pack": "p", "gpus": 1})).unwrap()
    }

    fn pack(resources: serde_json::Value, maxima: serde_json::Value) -> PackSpec {
        serde_json::from_value(serde_json::json!({
            "image": format!("sha256:{}", "a".repeat(64)),
            "resources": resources,
            "maxima": maxima,
        }))
        .unwrap()
    }

    #[test]
    fn nothing_asked_takes_the_packs_defaults_then_the_operators() {
        let policy = SessionPolicy::default();
        let p = pack(
            serde_json::json!({"cpu": "500m", "memory": "2Gi"}),
            serde_json::Value::Null,
        );
        let got = resolve(&spec(), Some(("p", &p)), &policy, None).unwrap();
        assert_eq!(got.nano_cpus, 500_000_000);
        assert_eq!(got.memory, 2 << 30);
        assert_eq!(got.shm, policy.defaults.shm);
        assert_eq!(got.pids, policy.defaults.pids);
        assert_eq!(got.workspace_quota, policy.defaults.workspace_quota);
        assert_eq!(got.idle_timeout, policy.defaults.idle_timeout);
        assert_eq!(got.max_lifetime, policy.defaults.max_lifetime);
        // No Pack at all: the operator's defaults.
        assert_eq!(
            resolve(&spec(), None, &policy, None).unwrap().memory,
            policy.defaults.memory
        );
    }

    #[test]
    fn a_packs_session_defaults_come_before_the_operators() {
        let policy = SessionPolicy::default();
        let p: PackSpec = serde_json::from_value(serde_json::json!({
            "image": format!("sha256:{}", "a".repeat(64)),
            "sessionDefaults": {"workspaceQuota": "100Gi", "idleTimeout": "2h", "maxLifetime": "24h"},
        }))
        .unwrap();
        let got = resolve(&spec(), Some(("p", &p)), &policy, None).unwrap();
        assert_eq!(got.workspace_quota, 100 << 30);
        assert_eq!(got.idle_timeout, Duration::from_secs(7200));
        assert_eq!(got.max_lifetime, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn each_value_above_its_maximum_is_named_with_the_maximum() {
        let policy = SessionPolicy::default();
        let mut s = spec();
        s.gpus = 9;
        s.resources = Some(SessionResources {
            cpu: Some("33".into()),
            memory: Some("1000Ti".into()),
            shm: Some("900Gi".into()),
            pids: Some(1_000_000),
        });
        s.workspace = Some(WorkspaceSpec {
            quota: Some("2Ti".into()),
            restore_from: None,
        });
        s.idle_timeout = Some("200h".into());
        s.max_lifetime = Some("1000h".into());
        let errors = resolve(&s, None, &policy, None).unwrap_err();
        let fields: Vec<Field> = errors.iter().map(Violation::field).collect();
        assert_eq!(fields, Field::ALL);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text[1],
            "resources.memory: 1000Ti is above the maximum 256Gi (the operator's policy)"
        );
        assert_eq!(
            text[7],
            "maxLifetime: 1000h is above the maximum 720h (the operator's policy)"
        );
        // At the maximum is allowed.
        s = spec();
        s.resources = Some(SessionResources {
            memory: Some("256Gi".into()),
            ..Default::default()
        });
        assert_eq!(resolve(&s, None, &policy, None).unwrap().memory, 256 << 30);
    }

    #[test]
    fn the_lowest_maximum_wins_and_says_who_set_it() {
        let policy = SessionPolicy::default();
        let p = pack(
            serde_json::Value::Null,
            serde_json::json!({"memory": "4Gi", "gpus": 0}),
        );
        let mut s = spec();
        s.resources = Some(SessionResources {
            memory: Some("5Gi".into()),
            cpu: Some("3".into()),
            ..Default::default()
        });
        let errors = resolve(
            &s,
            Some(("small", &p)),
            &policy,
            Some(&Capacity {
                nano_cpus: 2_000_000_000,
                memory: 64 << 30,
            }),
        )
        .unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "resources.cpu: 3 is above the maximum 2 (this node's capacity)",
                "resources.memory: 5Gi is above the maximum 4Gi (Pack small)",
                "gpus: 1 is above the maximum 0 (Pack small)",
            ]
        );
    }

    #[test]
    fn a_default_above_a_maximum_is_lowered_to_it_not_refused() {
        let policy = SessionPolicy::default();
        let p = pack(
            serde_json::json!({"memory": "16Gi"}),
            serde_json::json!({"memory": "4Gi", "shm": "256Mi"}),
        );
        let got = resolve(
            &spec(),
            Some(("p", &p)),
            &policy,
            Some(&Capacity {
                nano_cpus: 1_000_000_000,
                memory: 3 << 30,
            }),
        )
        .unwrap();
        assert_eq!(got.memory, 3 << 30, "the node's memory");
        assert_eq!(got.shm, 256 << 20, "the Pack's maximum");
        assert_eq!(got.nano_cpus, 1_000_000_000, "the node's one CPU");
    }

    #[test]
    fn unreadable_values_are_named() {
        let policy = SessionPolicy::default();
        let mut s = spec();
        s.idle_timeout = Some("soon".into());
        let errors = resolve(&s, None, &policy, None).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field(), Field::IdleTimeout);
        assert!(
            errors[0].to_string().contains("not a duration"),
            "{}",
            errors[0]
        );
        let p = pack(
            serde_json::json!({"memory": "lots"}),
            serde_json::Value::Null,
        );
        let errors = resolve(&spec(), Some(("p", &p)), &policy, None).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .starts_with("resources.memory: the Pack's value"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn a_policy_whose_default_is_above_its_maximum_is_refused() {
        let mut policy = SessionPolicy::default();
        assert_eq!(policy.check(), Ok(()));
        policy.defaults.memory = policy.maxima.memory + 1;
        let e = policy.check().unwrap_err();
        assert!(e.contains("resources.memory"), "{e}");
    }

    #[test]
    fn an_operator_sets_values_by_key_and_mistakes_are_named() {
        let mut policy = SessionPolicy::default();
        policy.set(true, "memory=64Gi").unwrap();
        policy.set(false, "idle-timeout = 30m").unwrap();
        policy.set(true, "gpus=2").unwrap();
        assert_eq!(policy.maxima.memory, 64 << 30);
        assert_eq!(policy.defaults.idle_timeout, Duration::from_secs(1800));
        assert_eq!(policy.maxima.gpus, 2);
        let e = policy.set(true, "ram=1Gi").unwrap_err();
        assert!(
            e.starts_with("unknown key \"ram\": use one of cpu, memory"),
            "{e}"
        );
        let e = policy.set(true, "memory=lots").unwrap_err();
        assert!(e.starts_with("memory: \"lots\" is not a quantity"), "{e}");
        let e = policy.set(false, "gpus=-1").unwrap_err();
        assert!(e.starts_with("gpus:"), "{e}");
        assert!(
            policy
                .set(false, "memory")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
    }

    #[test]
    fn an_accounts_own_limits_replace_the_operators_and_say_so() {
        let policy = SessionPolicy::default();
        let overrides: PolicyOverrides = serde_json::from_value(serde_json::json!({
            "defaults": {"memory": "16Gi"},
            "maxima": {"memory": "512Gi", "gpus": "1"},
        }))
        .unwrap();
        let mine = policy.for_account(&overrides).unwrap();
        let mut s = spec();
        s.resources = Some(SessionResources {
            memory: Some("300Gi".into()),
            ..Default::default()
        });
        assert_eq!(resolve(&s, None, &mine, None).unwrap().memory, 300 << 30);
        assert!(resolve(&s, None, &policy, None).is_err(), "others: 256Gi");
        assert_eq!(
            resolve(&spec(), None, &mine, None).unwrap().memory,
            16 << 30
        );
        s.gpus = 2;
        let e = resolve(&s, None, &mine, None).unwrap_err();
        assert_eq!(
            e[0].to_string(),
            "gpus: 2 is above the maximum 1 (this account's limit)"
        );
        let bad: PolicyOverrides =
            serde_json::from_value(serde_json::json!({"maxima": {"ram": "1Gi", "memory": "x"}}))
                .unwrap();
        let e = policy.for_account(&bad).unwrap_err();
        assert!(e.starts_with("memory: \"x\" is not a quantity"), "{e}");
    }

    #[test]
    fn values_are_shown_as_people_write_them() {
        assert_eq!(Field::Cpu.show(500_000_000), "500m");
        assert_eq!(Field::Cpu.show(4_000_000_000), "4");
        assert_eq!(Field::Memory.show(3 << 30), "3Gi");
        assert_eq!(Field::Memory.show(1000), "1000");
        assert_eq!(Field::IdleTimeout.show(90_000), "90s");
        assert_eq!(Field::IdleTimeout.show(7_200_000), "2h");
    }
}
