//! The checks on one value against one schema node: its type, `enum`,
//! numeric bounds and `int32`, string lengths, `pattern` and `date-time`,
//! and the number of items. Messages as kube-apiserver writes them.

use std::collections::HashMap;

use serde_json::Value;

use crate::status::{Cause, show_value};

/// The JSON schema type of a value.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn show_limit(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Compiled `pattern`s, compiled once per pattern for the life of the process.
fn pattern(p: &str) -> Option<regex::Regex> {
    static CACHE: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Option<regex::Regex>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(p).ok())
        .clone()
}

fn is_date_time(s: &str) -> bool {
    s.parse::<jiff::Timestamp>().is_ok()
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key) == Some(&Value::Bool(true))
}

/// Where the violations of one value are recorded: its path (as the cause's
/// field) and the list of causes.
pub struct Report<'a> {
    pub path: &'a str,
    pub causes: &'a mut Vec<Cause>,
}

impl Report<'_> {
    /// The path as messages show it: `<root>` for the object itself.
    fn shown_path(&self) -> &str {
        if self.path.is_empty() {
            "<root>"
        } else {
            self.path
        }
    }

    fn push(&mut self, reason: &str, message: String) {
        self.causes.push(Cause::new(reason, self.path, message));
    }

    /// `Invalid value: <value>: <path> in body <what>`.
    fn invalid(&mut self, value: &str, what: String) {
        let message = format!(
            "Invalid value: {value}: {} in body {what}",
            self.shown_path()
        );
        self.push("FieldValueInvalid", message);
    }

    fn type_invalid(&mut self, have: &str, want: &str) {
        let have = show_value(&Value::String(have.to_string()));
        let message = format!(
            "Invalid value: {have}: {} in body must be of type {want}: {have}",
            self.shown_path()
        );
        self.push("FieldValueTypeInvalid", message);
    }
}

/// Checks `type` (and `x-kubernetes-int-or-string`); false when the value is
/// of the wrong type, and nothing more about it should be checked.
pub fn check_type(schema: &Value, value: &Value, r: &mut Report<'_>) -> bool {
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let have = type_name(value);
        let ok = match want {
            "number" => have == "number" || have == "integer",
            "integer" => have == "integer",
            w => w == have,
        } || (int_or_string && (have == "integer" || have == "string"));
        if !ok {
            r.type_invalid(have, want);
            return false;
        }
    } else if int_or_string && !(value.is_string() || value.is_i64() || value.is_u64()) {
        r.type_invalid(type_name(value), "integer,string");
        return false;
    }
    true
}

/// Checks `enum`.
pub fn check_enum(schema: &Value, value: &Value, r: &mut Report<'_>) {
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        let supported = options
            .iter()
            .map(show_value)
            .collect::<Vec<_>>()
            .join(", ");
        r.push(
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {supported}",
                show_value(value)
            ),
        );
    }
}

/// Checks `maximum`, `minimum` (exclusive or not), `multipleOf` and the `int32` format.
pub fn check_number(schema: &Value, value: &Value, r: &mut Report<'_>) {
    let v = num(value).unwrap_or(0.0);
    let shown = show_value(value);
    if let Some(max) = schema.get("maximum").and_then(num) {
        let excl = flag(schema, "exclusiveMaximum");
        if v > max || (excl && v >= max) {
            let or_equal = if excl { "" } else { "or equal to " };
            r.invalid(
                &shown,
                format!("should be less than {or_equal}{}", show_limit(max)),
            );
        }
    }
    if let Some(min) = schema.get("minimum").and_then(num) {
        let excl = flag(schema, "exclusiveMinimum");
        if v < min || (excl && v <= min) {
            let or_equal = if excl { "" } else { "or equal to " };
            r.invalid(
                &shown,
                format!("should be greater than {or_equal}{}", show_limit(min)),
            );
        }
    }
    if let Some(m) = schema.get("multipleOf").and_then(num)
        && m != 0.0
        && (v / m).fract() != 0.0
    {
        r.invalid(&shown, format!("should be a multiple of {}", show_limit(m)));
    }
    if schema.get("format").and_then(Value::as_str) == Some("int32")
        && value.as_i64().is_none_or(|i| i32::try_from(i).is_err())
    {
        r.invalid(&shown, format!("must be of type int32: {shown}"));
    }
}

/// Checks `maxLength`, `minLength`, `pattern` and the `date-time` format.
pub fn check_string(schema: &Value, value: &Value, s: &str, r: &mut Report<'_>) {
    let len = s.chars().count() as u64;
    let shown = show_value(value);
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        r.push(
            "FieldValueTooLong",
            format!("Too long: may not be more than {max} bytes"),
        );
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        r.invalid(&shown, format!("should be at least {min} chars long"));
    }
    if let Some(p) = schema.get("pattern").and_then(Value::as_str)
        && let Some(re) = pattern(p)
        && !re.is_match(s)
    {
        r.invalid(&shown, format!("should match '{p}'"));
    }
    if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(s) {
        r.invalid(&shown, format!("must be of type date-time: {shown}"));
    }
}

/// Checks `maxItems` and `minItems`.
pub fn check_item_count(schema: &Value, len: usize, r: &mut Report<'_>) {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
        && len as u64 > max
    {
        r.push(
            "FieldValueTooMany",
            format!("Too many: {len}: must have at most {max} items"),
        );
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
        && (len as u64) < min
    {
        r.invalid(
            &len.to_string(),
            format!("should have at least {min} items"),
        );
    }
}

/// Checks `maxProperties`.
pub fn check_property_count(schema: &Value, len: usize, r: &mut Report<'_>) {
    if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
        && len as u64 > max
    {
        r.push(
            "FieldValueTooMany",
            format!("Too many: {len}: must have at most {max} items"),
        );
    }
}

/// The message of a value that matches too few or too many of `anyOf`/`oneOf`.
pub fn check_alternatives(value: &Value, key: &str, matching: usize, r: &mut Report<'_>) {
    let (ok, how_many) = if key == "anyOf" {
        (matching >= 1, "at least one")
    } else {
        (matching == 1, "exactly one")
    };
    if !ok {
        r.invalid(&show_value(value), format!("must match {how_many} schema"));
    }
}
