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

/// Checks a CPU limit and returns it in nano-CPUs, as the node agent will read it.
pub fn cpu(field: &str, value: &str) -> Result<i64, FieldError> {
    CPU.check(field, value)?;
    medforge_crds::quantity::parse_nano_cpus(value).map_err(|_| CPU.error(field))
}

/// Least memory limit Docker accepts, in bytes (6Mi).
pub const MIN_SIZE_BYTES: u64 = 6 * 1024 * 1024;

/// Checks a size (memory, /dev/shm) and returns it in bytes, as the node agent will read it.
pub fn size(field: &str, value: &str) -> Result<u64, FieldError> {
    SIZE.check(field, value)?;
    match medforge_crds::quantity::parse_bytes(value) {
        Ok(b) if b >= MIN_SIZE_BYTES && i64::try_from(b).is_ok() => Ok(b),
        _ => Err(SIZE.error(field)),
    }
}

/// Checks a duration and returns it, as the operator will read it.
pub fn duration(field: &str, value: &str) -> Result<std::time::Duration, FieldError> {
    DURATION.check(field, value)?;
    medforge_crds::quantity::parse_duration(value).map_err(|_| DURATION.error(field))
}

/// Checks an email and returns it as stored: surrounding ASCII white space
/// removed, lower case.
pub fn email(field: &str, value: &str) -> Result<String, FieldError> {
    EMAIL.check(field, value)?;
    Ok(value.trim_ascii().to_ascii_lowercase())
}

/// Integers as JSON Schema counts them: `4` and `4.0` alike (a generator of
/// documented-valid bodies may send either). For query strings, the decimal
/// text of one (`4`, `4.0`). Used with `#[serde(deserialize_with = …)]`.
pub mod int {
    use std::fmt;

    use serde::de::{Deserialize, Deserializer, Error, Unexpected, Visitor};

    /// An integer read from JSON (`text: false`) or from a query string (`text: true`).
    struct Int<const TEXT: bool>(i128);

    struct IntVisitor<const TEXT: bool>;

    impl<'de, const TEXT: bool> Visitor<'de> for IntVisitor<TEXT> {
        type Value = Int<TEXT>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer")
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Int(i128::from(v)))
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Int(i128::from(v)))
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e30 {
                Ok(Int(v as i128))
            } else {
                Err(E::invalid_type(Unexpected::Float(v), &self))
            }
        }
        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            if !TEXT {
                return Err(E::invalid_type(Unexpected::Str(v), &self));
            }
            parse_text(v)
                .map(Int)
                .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
        }
    }

    /// `4`, `+4`, `-4`, `4.0`: the decimal text of an integer.
    pub fn parse_text(v: &str) -> Option<i128> {
        if let Ok(n) = v.parse::<i128>() {
            return Some(n);
        }
        let (whole, zeros) = v.split_once('.')?;
        (!zeros.is_empty() && zeros.bytes().all(|b| b == b'0'))
            .then(|| whole.parse::<i128>().ok())
            .flatten()
    }

    impl<'de, const TEXT: bool> Deserialize<'de> for Int<TEXT> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            if TEXT {
                d.deserialize_str(IntVisitor::<TEXT>)
            } else {
                d.deserialize_any(IntVisitor::<TEXT>)
            }
        }
    }

    fn narrow<T: TryFrom<i128>, E: Error>(v: i128) -> Result<T, E> {
        T::try_from(v).map_err(|_| {
            E::invalid_value(
                Unexpected::Other("an integer out of range"),
                &"a smaller integer",
            )
        })
    }

    /// An optional `u32` in a JSON body (`null` is absent).
    pub fn body_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        Option::<Int<false>>::deserialize(d)?
            .map(|Int(v)| narrow(v))
            .transpose()
    }

    /// An optional `i64` in a JSON body (`null` is absent).
    pub fn body_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<Int<false>>::deserialize(d)?
            .map(|Int(v)| narrow(v))
            .transpose()
    }

    /// An `i64` or `null` in a JSON body, told apart from an absent field
    /// (`Some(None)` for `null`; use with `#[serde(default)]`).
    pub fn body_nullable_i64<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<i64>>, D::Error> {
        body_i64(d).map(Some)
    }

    /// An optional `u32` in a query string.
    pub fn query_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let Int::<true>(v) = Int::deserialize(d)?;
        narrow(v).map(Some)
    }
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, FileFailurePersistence};

    fn config(cases: u32) -> Config {
        Config {
            cases,
            failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
            ..Config::default()
        }
    }

    /// Values generated from a rule's own pattern (anchors stripped).
    fn from_pattern(rule: &Rule) -> impl Strategy<Value = String> {
        let p = rule.pattern.expect("a pattern");
        let inner = p.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
        proptest::string::string_regex(inner).unwrap()
    }

    fn crd(pattern: &str) -> Regex {
        Regex::new(pattern).unwrap()
    }

    #[test]
    fn every_pattern_compiles_and_is_anchored() {
        for rule in [
            KUBE_NAME,
            PACK_NAME,
            USER_ID,
            GPU_REF,
            CPU,
            SIZE,
            DURATION,
            EMAIL,
            SESSION_CURSOR,
            USERS_CURSOR,
            EVENT_TOKEN,
        ] {
            let p = rule.pattern.unwrap();
            assert!(p.starts_with('^') && p.ends_with('$'), "{p}");
            assert!(
                !p.contains(r"\s") && !p.contains(r"\d") && !p.contains(r"\w"),
                "{p}"
            );
            assert!(rule.matches(rule.example), "{} rejects its example", p);
            compiled(p);
        }
        assert!(NEW_PASSWORD.matches(NEW_PASSWORD.example));
    }

    #[test]
    fn cpu_values_the_pattern_admits_run_on_the_node_agent() {
        let crd_pattern = crd(medforge_crds::schema::QUANTITY_PATTERN);
        proptest!(config(2000), |(v in from_pattern(&CPU))| {
            prop_assert!(crd_pattern.is_match(&v), "{v} is not a CRD quantity");
            let nanos = cpu("cpu", &v).map_err(|e| TestCaseError::fail(format!("{v}: {e:?}")))?;
            // Docker takes 0.01 CPU and up.
            prop_assert!(nanos >= 10_000_000, "{v} is {nanos} nano-CPUs");
        });
        for ok in ["2", "0.5", "0.01", "1.25", "500m", "10m", "9999.999"] {
            assert!(cpu("cpu", ok).is_ok(), "{ok}");
        }
        for bad in [
            "0", "0.0", "0.001", "1m", "9m", "-1", "+1", "1e3", "1.", ".5", "2 ", "1Gi", "",
        ] {
            assert!(cpu("cpu", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_the_pattern_admits_run_on_the_node_agent() {
        let crd_pattern = crd(medforge_crds::schema::QUANTITY_PATTERN);
        proptest!(config(2000), |(v in from_pattern(&SIZE))| {
            prop_assert!(crd_pattern.is_match(&v), "{v} is not a CRD quantity");
            let bytes = size("memory", &v).map_err(|e| TestCaseError::fail(format!("{v}: {e:?}")))?;
            prop_assert!(bytes >= MIN_SIZE_BYTES);
        });
        for ok in [
            "6Mi", "7M", "16Gi", "1.5Gi", "2G", "1Ti", "10000Ki", "10000000",
        ] {
            assert!(size("memory", ok).is_ok(), "{ok}");
        }
        for bad in [
            "5Mi", "6M", "1", "0", "0.5Gi", "1e9", "-1Gi", "1Ei", "9999Ki", "16gi",
        ] {
            assert!(size("memory", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_the_pattern_admits_parse() {
        let crd_pattern = crd(medforge_crds::schema::DURATION_PATTERN);
        proptest!(config(2000), |(v in from_pattern(&DURATION))| {
            prop_assert!(crd_pattern.is_match(&v), "{v} is not a CRD duration");
            prop_assert!(duration("idle_timeout", &v).is_ok(), "{v}");
        });
        for ok in [
            "30m", "2h", "1h30m", "90s", "1.5h", "100ms", "3us", "5ns", "1h0m0s",
        ] {
            assert!(duration("d", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "30",
            "m",
            "1d",
            "1.h",
            ".5h",
            "-1h",
            "1h ",
            "1H",
            "30mm",
            "1µs",
            "1s1s1s1s1s",
            "1234567h",
        ] {
            assert!(duration("d", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_follow_kubernetes_and_the_crds() {
        let gpu_uuid = crd(medforge_crds::schema::GPU_UUID_PATTERN);
        proptest!(config(500), |(v in from_pattern(&GPU_REF))| {
            prop_assert!(v.parse::<u32>().is_ok() || gpu_uuid.is_match(&v), "{v}");
        });
        proptest!(config(500), |(v in from_pattern(&KUBE_NAME).prop_filter("length", |v| v.len() <= 253))| {
            prop_assert!(KUBE_NAME.matches(&v));
            prop_assert!(v.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-')));
        });
        for ok in [
            "node-a",
            "e2e-node",
            "a",
            "a.b-c.d",
            "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b",
        ] {
            assert!(KUBE_NAME.matches(ok), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "", "Node", "a_b", "-a", "a-", "a..b", ".a", "é", "a\u{0}b", "a b", "a/b", &long,
        ] {
            assert!(!KUBE_NAME.matches(bad), "{bad:?}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!PACK_NAME.matches(bad), "{bad:?}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(
            email("email", "  Ada@Example.ORG ").unwrap(),
            "ada@example.org"
        );
        assert_eq!(email("email", "a@b.c").unwrap(), "a@b.c");
        for bad in [
            "",
            "ada",
            "@example.org",
            "ada@",
            "ada@example",
            "ada@.org",
            "ada@example.",
            "a da@example.org",
            "ada@@example.org",
            "adé@example.org",
            "ada@exa\u{0}mple.org",
            "\u{a0}ada@example.org",
        ] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(email("email", &long).is_err());
        proptest!(config(500), |(v in from_pattern(&EMAIL).prop_filter("length", |v| v.len() <= 254))| {
            let e = email("email", &v).map_err(|e| TestCaseError::fail(format!("{v:?}: {e:?}")))?;
            let (local, domain) = e.split_once('@').unwrap();
            prop_assert!(!local.is_empty() && domain.contains('.'));
            prop_assert!(!domain.starts_with('.') && !domain.ends_with('.'));
        });
    }

    #[test]
    fn passwords_count_characters() {
        assert!(NEW_PASSWORD.matches(&"é".repeat(1024)));
        assert!(!NEW_PASSWORD.matches(&"é".repeat(1025)));
        assert!(!NEW_PASSWORD.matches("seven77"));
        assert!(PASSWORD.matches("x"));
        assert!(!PASSWORD.matches(""));
    }
}
