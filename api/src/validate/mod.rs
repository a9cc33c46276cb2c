//! What the api accepts, in one place. Every path parameter, query parameter
//! and body field is checked against a [`Rule`] (a pattern and a length) or a
//! bound from here, and the OpenAPI document publishes the same rules: the
//! handlers and the document read the same constants, so they cannot drift.
//!
//! The patterns are written in the subset of regular expressions that
//! ECMA-262 (what OpenAPI names), Python's `re` (what fuzzers generate from)
//! and `regex-lite` (what checks them here) read alike: ASCII character classes
//! and ranges, `?`, `*`, `+`, `{m,n}`, groups and alternation; no `\s`, `\w`,
//! `\d` or `.`, whose meanings differ between them.
//!
//! Where a value goes on to a control-plane resource, the api's pattern is a
//! subset of the CRD's (`medforge_crds::schema`) and admits only values the
//! node agent can run: a unit test generates values from each pattern and
//! runs them through `medforge_crds::quantity`'s parsers and the agent's limits.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use medforge_crds::quantity;
use regex_lite::Regex;
use serde_json::{Value, json};

use crate::error::FieldError;

/// A string rule: a pattern (anchored) and a length in characters.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// Anchored pattern (`^…$`), or `None` for any characters.
    pub pattern: Option<&'static str>,
    /// Fewest characters.
    pub min_length: usize,
    /// Most characters.
    pub max_length: usize,
    /// What is accepted, for the field error and the document's description.
    pub expected: &'static str,
    /// An accepted value, for the document.
    pub example: &'static str,
}

fn compiled(pattern: &'static str) -> &'static Regex {
    static CACHE: LazyLock<Mutex<HashMap<&'static str, &'static Regex>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache.entry(pattern).or_insert_with(|| {
        let re = Regex::new(pattern)
            .unwrap_or_else(|e| panic!("validate: bad pattern {pattern:?}: {e}"));
        Box::leak(Box::new(re))
    })
}

impl Rule {
    /// Whether `value` follows the rule.
    pub fn matches(&self, value: &str) -> bool {
        let n = value.chars().count();
        n >= self.min_length
            && n <= self.max_length
            && self.pattern.is_none_or(|p| compiled(p).is_match(value))
    }

    /// `Ok` when `value` follows the rule; otherwise a field error naming `field`.
    pub fn check(&self, field: &str, value: &str) -> Result<(), FieldError> {
        if self.matches(value) {
            Ok(())
        } else {
            Err(self.error(field))
        }
    }

    /// The field error for a value that does not follow the rule.
    pub fn error(&self, field: &str) -> FieldError {
        FieldError::new(field, format!("must be {}", self.expected))
    }

    /// The JSON Schema of a string following the rule.
    pub fn schema(&self) -> Value {
        let mut s = json!({
            "type": "string",
            "minLength": self.min_length,
            "maxLength": self.max_length,
            "description": format!("Must be {}.", self.expected),
            "examples": [self.example],
        });
        if let Some(p) = self.pattern {
            s["pattern"] = json!(p);
        }
        s
    }

    /// [`Rule::schema`], also admitting `null` (a JSON field that may be null, meaning absent).
    pub fn nullable_schema(&self) -> Value {
        let mut s = self.schema();
        s["type"] = json!(["string", "null"]);
        s
    }
}

/// A Kubernetes object name (a DNS-1123 subdomain): GpuNodes and Sessions.
pub const KUBE_NAME: Rule = Rule {
    pattern: Some(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"),
    min_length: 1,
    max_length: 253,
    expected: "a Kubernetes object name: 1 to 253 characters of [a-z0-9.-], \
               each dot-separated part starting and ending with a letter or digit",
    example: "gpu-node-1",
};

/// An `Idempotency-Key` header of a create (`docs/api.md`, "Idempotent creates").
pub const IDEMPOTENCY_KEY: Rule = Rule {
    pattern: Some("^[A-Za-z0-9._:+/=-]{1,128}$"),
    min_length: 1,
    max_length: 128,
    expected: "1 to 128 characters of [A-Za-z0-9._:+/=-] (a UUID will do)",
    example: "5f0c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
};

/// A Pack name (a DNS-1123 label).
pub const PACK_NAME: Rule = Rule {
    pattern: Some("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"),
    min_length: 1,
    max_length: 63,
    expected: "a Pack name: 1 to 63 characters of [a-z0-9-], not starting or ending with '-'",
    example: "default",
};

/// A user id (a lower-case UUID, as the api makes them).
pub const USER_ID: Rule = Rule {
    pattern: Some("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    min_length: 36,
    max_length: 36,
    expected: "a user id: a lower-case UUID such as 0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
    example: "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
};

/// A GPU of a node: its index, or its UUID (`GPU-…`).
pub const GPU_REF: Rule = Rule {
    pattern: Some("^([0-9]{1,9}|GPU-[A-Za-z0-9-]{1,300})$"),
    min_length: 1,
    max_length: 304,
    expected: "a GPU index (0 to 999999999) or a GPU UUID (GPU- followed by letters, digits and '-')",
    example: "0",
};

/// A CPU limit: 0.01 to 9999.999 cores, or 10m to 9999999m.
pub const CPU: Rule = Rule {
    pattern: Some(r"^(0\.0[1-9]|0\.[1-9][0-9]?|[1-9][0-9]{0,3}(\.[0-9]{1,3})?|[1-9][0-9]{1,6}m)$"),
    min_length: 1,
    max_length: 8,
    expected: "a CPU limit in cores from 0.01 to 9999.999 (2, 0.5, 1.25) or in millicores \
               from 10m to 9999999m (500m)",
    example: "2",
};

/// A size in bytes of at least 6Mi (Docker's least memory limit): memory and /dev/shm.
pub const SIZE: Rule = Rule {
    pattern: Some(concat!(
        "^(([6-9]|[1-9][0-9]{1,6})Mi|([7-9]|[1-9][0-9]{1,6})M",
        r"|[1-9][0-9]{0,4}(\.[0-9]{1,3})?(Gi|G)|[1-9][0-9]{0,2}(Ti|T)",
        "|[1-9][0-9]{4,9}(Ki|k)|[1-9][0-9]{7,12})$"
    )),
    min_length: 2,
    max_length: 13,
    expected: "a size of at least 6Mi: a whole number of Mi (6Mi and up), M (7M and up), \
               Ti or T, a number of Gi or G with up to 3 decimals (1.5Gi), 10000Ki/10000k \
               and up, or 10000000 bytes and up",
    example: "16Gi",
};

/// A duration: one to four parts of a number (up to 6 digits, up to 3 decimals) and a unit.
pub const DURATION: Rule = Rule {
    pattern: Some(r"^([0-9]{1,6}(\.[0-9]{1,3})?(ns|us|ms|s|m|h)){1,4}$"),
    min_length: 2,
    max_length: 48,
    expected: "a duration of one to four parts, each a number (up to 6 digits and 3 decimals) \
               and a unit of ns, us, ms, s, m or h, such as 30m, 2h or 1h30m",
    example: "30m",
};

/// An email address (surrounding ASCII white space is ignored, case is folded).
/// `[!-?A-~]` is printable ASCII but space and `@`; `[!-\x2D/-?A-~]` the same without `.`.
pub const EMAIL: Rule = Rule {
    pattern: Some(concat!(
        r"^[ \t\n\f\r]*",
        "[!-?A-~]+",
        "@",
        r"[!-\x2D/-?A-~]",
        "[!-?A-~]*",
        r"\.",
        "[!-?A-~]*",
        r"[!-\x2D/-?A-~]",
        r"[ \t\n\f\r]*$"
    )),
    min_length: 5,
    max_length: 254,
    expected: "an email address such as ada@example.org: printable ASCII without spaces, one @, \
               a domain with a dot that neither starts nor ends with a dot; at most 254 characters",
    example: "ada@example.org",
};

/// Fewest characters of a new password.
pub const MIN_PASSWORD: usize = 8;
/// Most characters of a password (bounds the hashing work per request).
pub const MAX_PASSWORD: usize = 1024;

/// A new password (signup).
pub const NEW_PASSWORD: Rule = Rule {
    pattern: None,
    min_length: MIN_PASSWORD,
    max_length: MAX_PASSWORD,
    expected: "a password of 8 to 1024 characters",
    example: "correct horse battery staple",
};

/// A password to log in with.
pub const PASSWORD: Rule = Rule {
    pattern: None,
    min_length: 1,
    max_length: MAX_PASSWORD,
    expected: "a password of 1 to 1024 characters",
    example: "correct horse battery staple",
};

/// A sessions list cursor: `<creation time in ns>_<session id>`, as `meta.next_cursor` gives it.
pub const SESSION_CURSOR: Rule = Rule {
    pattern: Some(r"^([0-9]{1,19}_[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$"),
    min_length: 0,
    max_length: 273,
    expected: "a cursor as meta.next_cursor gives it (<digits>_<session id>)",
    example: "1700000000000000000_0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
};

/// A snapshots list cursor: `<time in ns>_<snapshot id>`, as `meta.next_cursor` gives it.
pub const SNAPSHOT_CURSOR: Rule = Rule {
    pattern: Some(r"^([0-9]{1,19}_[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$"),
    min_length: 0,
    max_length: 273,
    expected: "a cursor as meta.next_cursor gives it (<digits>_<snapshot id>)",
    example: "1700000000000000000_0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b-manual-1700000000000",
};

/// A users list cursor: base64url without padding, as `meta.next_cursor` gives it.
pub const USERS_CURSOR: Rule = Rule {
    pattern: Some("^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$"),
    min_length: 0,
    max_length: 400,
    expected: "a cursor as meta.next_cursor gives it (base64url without padding)",
    example: "YWRhQGV4YW1wbGUub3Jn",
};

/// A single-use event token (32 bytes, base64url without padding).
pub const EVENT_TOKEN: Rule = Rule {
    pattern: Some("^[A-Za-z0-9_-]{43}$"),
    min_length: 43,
    max_length: 43,
    expected: "a token from POST /api/v2/events/token (43 characters of base64url)",
    example: "q8Vn2Yw0m3JtZ5o1bRk7dXc9sLf4hAe6uGi0pNr2TyQ",
};

/// An invite code, as `POST /api/v2/admin/invites` gives it.
pub const INVITE_CODE: Rule = Rule {
    pattern: Some("^[A-Za-z0-9_-]{43}$"),
    min_length: 43,
    max_length: 43,
    expected: "an invite code from an admin (43 characters of base64url)",
    example: "Zq8Vn2Yw0m3JtZ5o1bRk7dXc9sLf4hAe6uGi0pNr2Ty",
};

/// The id of an audit entry or an invite: its time in milliseconds (13
/// digits) and a UUID, so that ids sort by time; also the cursor of their lists.
pub const LOG_ID: Rule = Rule {
    pattern: Some("^[0-9]{13}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"),
    min_length: 50,
    max_length: 50,
    expected: "an id as the list gives it: 13 digits, a dash and a lower-case UUID",
    example: "1764720000000-0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
};

/// What an audit entry is about: a user id, an invite id ([`LOG_ID`]) or
/// a Pack name ([`PACK_NAME`], which admits the other two).
pub const AUDIT_TARGET: Rule = Rule {
    pattern: PACK_NAME.pattern,
    min_length: 1,
    max_length: 63,
    expected: "a user id (a lower-case UUID), an invite id (13 digits, a dash and a UUID) \
               or a Pack name",
    example: "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
};

/// A Pack's image: pinned by digest (`name@sha256:<64 hex>`) or a local
/// image id (`sha256:<64 hex>`); a subset of the CRD's pattern (no
/// upper case or white space in the name).
pub const PACK_IMAGE: Rule = Rule {
    pattern: Some("^([a-z0-9]([-a-z0-9._/:]{0,254}[a-z0-9])?@)?sha256:[a-f0-9]{64}$"),
    min_length: 71,
    max_length: 328,
    expected: "an image pinned by digest: name@sha256:<64 hex> (a name of [a-z0-9._/:-], \
               starting and ending with a letter or digit, up to 256 characters) or a local \
               image id sha256:<64 hex>",
    example: "registry.example.org/packs/jupyter@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
};

/// A Pack's display name: 1 to 64 characters, no control characters.
pub const PACK_DISPLAY_NAME: Rule = Rule {
    pattern: Some(r"^[^\x00-\x1F\x7F]*$"),
    min_length: 1,
    max_length: medforge_crds::pack::DISPLAY_NAME_MAX,
    expected: "a display name of 1 to 64 characters without control characters",
    example: "PyTorch with Jupyter",
};

/// A Pack's description: up to 1024 characters, no control characters but
/// tab and line feed.
pub const PACK_DESCRIPTION: Rule = Rule {
    pattern: Some(r"^[^\x00-\x08\x0B-\x1F\x7F]*$"),
    min_length: 0,
    max_length: medforge_crds::pack::DESCRIPTION_MAX,
    expected: "a description of up to 1024 characters without control characters \
               (tab and line feed allowed)",
    example: "Python 3, PyTorch and JupyterLab, for notebooks on one or more GPUs.",
};

/// One argument of a Pack's command: up to 4096 characters, no NUL.
pub const PACK_COMMAND_ARG: Rule = Rule {
    pattern: Some(r"^[^\x00]*$"),
    min_length: 0,
    max_length: 4096,
    expected: "an argument of up to 4096 characters without NUL",
    example: "--port=8080",
};

/// Most arguments of a Pack's command.
pub const PACK_COMMAND_MAX: usize = 64;

/// The name of an environment variable of a Pack (the CRD's pattern).
pub const ENV_NAME: Rule = Rule {
    pattern: Some("^[A-Za-z_][A-Za-z0-9_]*$"),
    min_length: 1,
    max_length: 256,
    expected: "a variable name of 1 to 256 characters of [A-Za-z0-9_], not starting with a digit",
    example: "JUPYTER_TOKEN",
};

/// The value of an environment variable of a Pack: up to 32768 characters, no NUL.
pub const ENV_VALUE: Rule = Rule {
    pattern: Some(r"^[^\x00]*$"),
    min_length: 0,
    max_length: 32768,
    expected: "a value of up to 32768 characters without NUL",
    example: "1",
};

/// Most environment variables of a Pack.
pub const PACK_ENV_MAX: usize = 128;

/// Ports a Pack's server may listen on.
pub const PORT_MIN: u32 = 1;
/// Ports a Pack's server may listen on.
pub const PORT_MAX: u32 = 65535;
/// Most GPUs a Pack's range may name.
pub const PACK_GPUS_MAX: u32 = 8;

/// A packs list cursor: the name of the last Pack of the previous page, as
/// `meta.next_cursor` gives it (any such string is a position).
pub const PACK_CURSOR: Rule = Rule {
    pattern: Some("^[-a-z0-9.]*$"),
    min_length: 0,
    max_length: 253,
    expected: "a cursor as meta.next_cursor gives it (a Pack name)",
    example: "default",
};

/// An audit action filter.
pub const AUDIT_ACTION: Rule = Rule {
    pattern: Some("^[a-z]{1,16}\\.[a-z_]{1,32}$"),
    min_length: 3,
    max_length: 49,
    expected: "an action such as user.disabled: a word, a dot and a word of a-z and _",
    example: "user.disabled",
};

/// Process limit of a session's container.
pub const PIDS_MIN: i64 = 16;
/// Process limit of a session's container.
pub const PIDS_MAX: i64 = 1_000_000;
/// Page size of the lists.
pub const LIMIT_MIN: u32 = 1;
/// Page size of the lists.
pub const LIMIT_MAX: u32 = 200;
/// Page size when none is given.
pub const LIMIT_DEFAULT: u32 = 50;
/// A user's session limit override.
pub const MAX_SESSIONS_MIN: i64 = 0;
/// A user's session limit override.
pub const MAX_SESSIONS_MAX: i64 = 1000;

/// The field error of a page size out of bounds.
pub fn limit_error() -> FieldError {
    FieldError::new(
        "limit",
        format!("must be between {} and {}", LIMIT_MIN, LIMIT_MAX),
    )
}

/// The `state` filter of the session lists: a phase, or `active`.
pub const LIST_STATES: [&str; 8] = [
    "pending",
    "scheduled",
    "starting",
    "running",
    "stopping",
    "stopped",
    "failed",
    "active",
];

/// The values of create's `wait` parameter.
pub const WAIT_VALUES: [&str; 1] = ["ready"];

/// Checks a CPU limit and returns it in nano-CPUs: read by
/// `medforge_crds::quantity`, the parser the node agent uses, then held to the
/// api's policy, the notation and range [`CPU`] publishes.
pub fn cpu(field: &str, value: &str) -> Result<i64, FieldError> {
    let nanos = quantity::parse_nano_cpus(value).map_err(|_| CPU.error(field))?;
    CPU.check(field, value)?;
    Ok(nanos)
}

/// Least memory limit Docker accepts, in bytes (6Mi).
pub const MIN_SIZE_BYTES: u64 = 6 * 1024 * 1024;

/// Checks a size (memory, /dev/shm) and returns it in bytes: read by
/// `medforge_crds::quantity`, then held to the api's policy, the notation
/// [`SIZE`] publishes and [`MIN_SIZE_BYTES`] and up.
pub fn size(field: &str, value: &str) -> Result<u64, FieldError> {
    match quantity::parse_bytes(value) {
        Ok(b) if b >= MIN_SIZE_BYTES && i64::try_from(b).is_ok() => {
            SIZE.check(field, value)?;
            Ok(b)
        }
        _ => Err(SIZE.error(field)),
    }
}

/// Checks a duration and returns it: read by `medforge_crds::quantity`, the
/// parser the operator uses, then held to the api's policy, the notation and
/// range [`DURATION`] publishes.
pub fn duration(field: &str, value: &str) -> Result<std::time::Duration, FieldError> {
    let parsed = quantity::parse_duration(value).map_err(|_| DURATION.error(field))?;
    DURATION.check(field, value)?;
    Ok(parsed)
}

/// Checks an email and returns it as stored: surrounding ASCII white space
/// removed, lower case.
pub fn email(field: &str, value: &str) -> Result<String, FieldError> {
    EMAIL.check(field, value)?;
    Ok(value.trim_ascii().to_ascii_lowercase())
}

pub mod int;
pub mod schema;

/// An object or `null` that was present (`Some(None)` for `null`); an absent
/// field is `None` with `#[serde(default)]`: "clear it" and "leave it" apart.
pub fn object_or_null_present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    object_or_null(d).map(Some)
}

/// A nested object of a JSON body, or `null` (absent). serde's derive would
/// also read a struct from an array of its fields in order (`[null, null]`),
/// which no schema admits; this reads objects only, keeping the path of any
/// error inside (`resources.cpu`). Use with `#[serde(default, deserialize_with = …)]`.
pub fn object_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use std::marker::PhantomData;

    use serde::de::value::MapAccessDeserializer;
    use serde::de::{MapAccess, Visitor};

    struct OrNull<T>(PhantomData<T>);
    struct Object<T>(PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for OrNull<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object or null")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_map(Object(PhantomData)).map(Some)
        }
    }

    impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for Object<T> {
        type Value = T;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_option(OrNull(PhantomData))
}

#[cfg(test)]
mod tests;
