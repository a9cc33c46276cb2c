//! Validation of objects: a custom resource against its CRD's structural
//! OpenAPI schema (pruning unknown fields, applying defaults, checking types
//! and constraints) and its CEL rules (`x-kubernetes-validations`, transition
//! rules such as `self == oldSelf` included); built-in kinds by decoding them
//! into their typed form; metadata as kube-apiserver checks it. Messages use
//! kube-apiserver's wording so that a 422 reads the same.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::registry::{Builtin, ResourceType};
use crate::selector::{check_label_value, check_qualified_name, is_dns_label, is_dns_subdomain};
use crate::status::{ApiError, ApiResult, Cause, show_value};

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> ApiResult<FieldValidation> {
        match s {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation parameter: invalid value {other:?}: must be one of Ignore, Warn, Strict"
            ))),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops fields the schema does not declare (and `null`s where the schema does
/// not allow them), returning the paths of the unknown fields.
pub fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true))
        && schema.get("properties").is_none()
        && schema.get("additionalProperties").is_none()
        && schema.get("items").is_none()
    {
        return;
    }
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let preserve =
                schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            let root = path.is_empty();
            let mut remove = Vec::new();
            for (k, v) in map.iter_mut() {
                if root && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                let child_schema = props
                    .and_then(|p| p.get(k))
                    .or(additional.filter(|a| a.is_object()));
                match child_schema {
                    Some(cs) => {
                        let nullable = cs.get("nullable") == Some(&Value::Bool(true));
                        if v.is_null() && !nullable {
                            remove.push(k.clone());
                        } else {
                            prune(cs, v, &join(path, k), unknown);
                        }
                    }
                    None if additional == Some(&Value::Bool(true)) || preserve => {}
                    None => {
                        unknown.push(join(path, k));
                        remove.push(k.clone());
                    }
                }
            }
            for k in remove {
                map.remove(&k);
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(is, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent fields, as kube-apiserver does before validation.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, ps) in props {
                    if !map.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(child) = map.get_mut(k) {
                        apply_defaults(ps, child);
                    }
                }
            }
            if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let declared = schema.get("properties").and_then(Value::as_object);
                for (k, v) in map.iter_mut() {
                    if declared.is_none_or(|d| !d.contains_key(k)) {
                        apply_defaults(ap, v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema.get("items") {
                for item in items {
                    apply_defaults(is, item);
                }
            }
        }
        _ => {}
    }
}

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

/// Checks `value` against a structural schema, collecting every violation.
pub fn check_schema(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let display_path = if path.is_empty() { "<root>" } else { path };
    if value.is_null() && (schema.get("nullable") == Some(&Value::Bool(true)) || path.is_empty()) {
        return;
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let have = type_name(value);
        let ok = match want {
            "number" => have == "number" || have == "integer",
            "integer" => have == "integer",
            w => w == have,
        } || (int_or_string && (have == "integer" || have == "string"));
        if !ok {
            causes.push(Cause::new(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {display_path} in body must be of type {want}: {}",
                    show_value(&Value::String(have.to_string())),
                    show_value(&Value::String(have.to_string()))
                ),
            ));
            return;
        }
    } else if int_or_string && !(value.is_string() || value.is_i64() || value.is_u64()) {
        causes.push(Cause::new(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {}: {display_path} in body must be of type integer,string: {}",
                show_value(&Value::String(type_name(value).to_string())),
                show_value(&Value::String(type_name(value).to_string()))
            ),
        ));
        return;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                show_value(value),
                options
                    .iter()
                    .map(show_value)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    match value {
        Value::Number(_) => {
            let v = num(value).unwrap_or(0.0);
            if let Some(max) = schema.get("maximum").and_then(num) {
                let excl = schema.get("exclusiveMaximum") == Some(&Value::Bool(true));
                if v > max || (excl && v >= max) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {display_path} in body should be less than {}{}",
                            show_value(value),
                            if excl { "" } else { "or equal to " },
                            show_limit(max)
                        ),
                    ));
                }
            }
            if let Some(min) = schema.get("minimum").and_then(num) {
                let excl = schema.get("exclusiveMinimum") == Some(&Value::Bool(true));
                if v < min || (excl && v <= min) {
                    causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {display_path} in body should be greater than {}{}",
                            show_value(value),
                            if excl { "" } else { "or equal to " },
                            show_limit(min)
                        ),
                    ));
                }
            }
            if let Some(m) = schema.get("multipleOf").and_then(num)
                && m != 0.0
                && (v / m).fract() != 0.0
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {display_path} in body should be a multiple of {}",
                        show_value(value),
                        show_limit(m)
                    ),
                ));
            }
            if schema.get("format").and_then(Value::as_str) == Some("int32")
                && value.as_i64().is_none_or(|i| i32::try_from(i).is_err())
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {display_path} in body must be of type int32: {}",
                        show_value(value),
                        show_value(value)
                    ),
                ));
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                && len > max
            {
                causes.push(Cause::new(
                    "FieldValueTooLong",
                    path,
                    format!("Too long: may not be more than {max} bytes"),
                ));
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                && len < min
            {
                causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {display_path} in body should be at least {min} chars long",
                            show_value(value)
                        ),
                    ));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                match pattern(p) {
                    Some(re) if !re.is_match(s) => causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {display_path} in body should match '{p}'",
                            show_value(value)
                        ),
                    )),
                    _ => {}
                }
            }
            if schema.get("format").and_then(Value::as_str) == Some("date-time") && !is_date_time(s)
            {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {display_path} in body must be of type date-time: {}",
                        show_value(value),
                        show_value(value)
                    ),
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
                && items.len() as u64 > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                && (items.len() as u64) < min
            {
                causes.push(Cause::new(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {display_path} in body should have at least {min} items",
                            items.len()
                        ),
                    ));
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    for (i, item) in items.iter().enumerate() {
                        if items[..i].contains(item) {
                            causes.push(Cause::new(
                                "FieldValueDuplicate",
                                format!("{path}[{i}]"),
                                format!("Duplicate value: {}", show_value(item)),
                            ));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let key_of = |item: &Value| -> Vec<Value> {
                        keys.iter()
                            .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    for (i, item) in items.iter().enumerate() {
                        let k = key_of(item);
                        if items[..i].iter().any(|o| key_of(o) == k) {
                            let shown: Map<String, Value> = keys
                                .iter()
                                .zip(k.iter())
                                .map(|(a, b)| (a.to_string(), b.clone()))
                                .collect();
                            causes.push(Cause::new(
                                "FieldValueDuplicate",
                                format!("{path}[{i}]"),
                                format!("Duplicate value: {}", Value::Object(shown)),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(is) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_schema(is, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => {
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !map.contains_key(req) {
                    causes.push(Cause::new(
                        "FieldValueRequired",
                        join(path, req),
                        "Required value",
                    ));
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64)
                && map.len() as u64 > max
            {
                causes.push(Cause::new(
                    "FieldValueTooMany",
                    path,
                    format!("Too many: {}: must have at most {max} items", map.len()),
                ));
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                if path.is_empty() && (k == "apiVersion" || k == "kind" || k == "metadata") {
                    continue;
                }
                if let Some(ps) = props.and_then(|p| p.get(k)) {
                    check_schema(ps, v, &join(path, k), causes);
                } else if let Some(ap) = additional {
                    check_schema(ap, v, &format!("{path}[{k}]"), causes);
                }
            }
        }
        _ => {}
    }
    for key in ["allOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check_schema(sub, value, path, causes);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(subs) = schema.get(key).and_then(Value::as_array) {
            let matching = subs
                .iter()
                .filter(|s| {
                    let mut c = Vec::new();
                    check_schema(s, value, path, &mut c);
                    c.is_empty()
                })
                .count();
            let ok = if key == "anyOf" {
                matching >= 1
            } else {
                matching == 1
            };
            if !ok {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    path,
                    format!(
                        "Invalid value: {}: {display_path} in body must match {} schema",
                        show_value(value),
                        if key == "anyOf" {
                            "at least one"
                        } else {
                            "exactly one"
                        }
                    ),
                ));
            }
        }
    }
}

/// The schema node at a dotted path (`spec.owner`), for CEL error messages.
fn schema_at<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let part = part.split('[').next().unwrap_or(part);
        cur = cur
            .get("properties")
            .and_then(|p| p.get(part))
            .or_else(|| {
                cur.get("items")
                    .and_then(|i| i.get("properties")?.get(part))
            })?;
    }
    Some(cur)
}

thread_local! {
    static CEL: kube::core::cel::Validator = kube::core::cel::Validator::new();
}

/// Runs the kind's CEL rules; `old` enables transition rules (`oldSelf`).
pub fn check_cel(rt: &ResourceType, value: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let (Some(compiled), Some(schema)) = (&rt.cel, &rt.schema) else {
        return;
    };
    let result = CEL.with(|v| v.validate_compiled(compiled, value, old));
    if let Err(errors) = result {
        for e in errors {
            let ty = schema_at(schema, &e.field_path)
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("object")
                .to_string();
            causes.push(Cause::new(
                "FieldValueInvalid",
                e.field_path.clone(),
                format!(
                    "Invalid value: {}: {}",
                    show_value(&Value::String(ty)),
                    e.message
                ),
            ));
        }
    }
}

/// Validates metadata as kube-apiserver does for every kind.
pub fn check_metadata(rt: &ResourceType, value: &Value, causes: &mut Vec<Cause>) {
    let Some(meta) = value.get("metadata").and_then(Value::as_object) else {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata",
            "Required value",
        ));
        return;
    };
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    } else if rt.builtin == Some(Builtin::Namespace) {
        if !is_dns_label(name) {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            ));
        }
    } else if !is_dns_subdomain(name) {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
        ));
    }
    if let Some(labels) = meta.get("labels") {
        match labels.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if let Err(e) = check_qualified_name(k) {
                        causes.push(Cause::new(
                            "FieldValueInvalid",
                            "metadata.labels",
                            format!("Invalid value: {k:?}: {e}"),
                        ));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Err(e) = check_label_value(s) {
                                causes.push(Cause::new(
                                    "FieldValueInvalid",
                                    "metadata.labels",
                                    format!("Invalid value: {s:?}: {e}"),
                                ));
                            }
                        }
                        None => causes.push(Cause::new(
                            "FieldValueTypeInvalid",
                            format!("metadata.labels[{k}]"),
                            "Invalid value: must be a string",
                        )),
                    }
                }
            }
            None if labels.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueTypeInvalid",
                "metadata.labels",
                "Invalid value: must be a map of strings",
            )),
        }
    }
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (k, v) in ann {
            total += k.len() + v.as_str().map(str::len).unwrap_or(0);
            if let Err(e) = check_qualified_name(&k.to_lowercase()) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    "metadata.annotations",
                    format!("Invalid value: {k:?}: {e}"),
                ));
            }
            if !v.is_string() {
                causes.push(Cause::new(
                    "FieldValueTypeInvalid",
                    format!("metadata.annotations[{k}]"),
                    "Invalid value: must be a string",
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: must have at most 262144 bytes",
            ));
        }
    }
    if let Some(fins) = meta.get("finalizers") {
        match fins.as_array() {
            Some(a) => {
                for (i, f) in a.iter().enumerate() {
                    match f.as_str() {
                        Some(s) => {
                            if let Err(e) = check_qualified_name(s) {
                                causes.push(Cause::new(
                                    "FieldValueInvalid",
                                    format!("metadata.finalizers[{i}]"),
                                    format!("Invalid value: {s:?}: {e}"),
                                ));
                            }
                        }
                        None => causes.push(Cause::new(
                            "FieldValueTypeInvalid",
                            format!("metadata.finalizers[{i}]"),
                            "Invalid value: must be a string",
                        )),
                    }
                }
            }
            None if fins.is_null() => {}
            None => causes.push(Cause::new(
                "FieldValueTypeInvalid",
                "metadata.finalizers",
                "Invalid value: must be a list of strings",
            )),
        }
    }
}

/// Validates and normalises a custom resource in place: prunes unknown fields
/// (an error with `Strict`), applies defaults, checks the schema, the CEL rules
/// and the metadata. Returns warnings for the client.
pub fn validate_custom(
    rt: &ResourceType,
    value: &mut Value,
    old: Option<&Value>,
    mode: FieldValidation,
) -> ApiResult<Vec<String>> {
    let mut warnings = Vec::new();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(schema) = &rt.schema {
        let mut unknown = Vec::new();
        prune(schema, value, "", &mut unknown);
        if !unknown.is_empty() {
            match mode {
                FieldValidation::Strict => {
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version {ver:?} cannot be handled as a {kind}: strict decoding error: {list}",
                        kind = rt.kind,
                        ver = rt.version,
                        list = unknown
                            .iter()
                            .map(|u| format!("unknown field {u:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|u| format!("unknown field {u:?}")))
                }
                FieldValidation::Ignore => {}
            }
        }
        apply_defaults(schema, value);
    }
    let mut causes = Vec::new();
    check_metadata(rt, value, &mut causes);
    if let Some(schema) = &rt.schema {
        let mut schema_causes = Vec::new();
        check_schema(schema, value, "", &mut schema_causes);
        let schema_ok = schema_causes.is_empty();
        causes.extend(schema_causes);
        if schema_ok {
            check_cel(rt, value, old, &mut causes);
        }
    }
    if causes.is_empty() {
        Ok(warnings)
    } else {
        Err(ApiError::invalid(rt, &name, causes))
    }
}

fn decode_typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    rt: &ResourceType,
    value: &Value,
) -> ApiResult<Value> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{kind} in version {ver:?} cannot be handled as a {kind}: {e}",
            kind = rt.kind,
            ver = rt.version
        ))
    })?;
    serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))
}

/// An Event's `type` is `Normal` or `Warning` when set.
fn check_event_type(v: &Value, causes: &mut Vec<Cause>) {
    if let Some(t) = v.get("type").and_then(Value::as_str)
        && t != "Normal"
        && t != "Warning"
    {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "type",
            format!("Unsupported value: {t:?}: supported values: \"Normal\", \"Warning\""),
        ));
    }
}

/// Validates a built-in kind by decoding it into its typed form, which also
/// drops unknown fields, plus the few rules the controllers rely on.
pub fn validate_builtin(rt: &ResourceType, value: &mut Value) -> ApiResult<Vec<String>> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::events::v1::Event;
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut causes = Vec::new();
    check_metadata(rt, value, &mut causes);
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    let normal = match rt.builtin {
        Some(Builtin::Namespace) => decode_typed::<Namespace>(rt, value)?,
        Some(Builtin::Lease) => decode_typed::<Lease>(rt, value)?,
        Some(Builtin::Event) => {
            let v = decode_typed::<Event>(rt, value)?;
            if v.get("eventTime").is_none_or(Value::is_null) {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    "eventTime",
                    "Required value",
                ));
            }
            check_event_type(&v, &mut causes);
            v
        }
        // Core v1 Events (written by older recorders): eventTime is
        // optional there, as on kube-apiserver.
        Some(Builtin::CoreEvent) => {
            let v = decode_typed::<k8s_openapi::api::core::v1::Event>(rt, value)?;
            check_event_type(&v, &mut causes);
            v
        }
        None => value.clone(),
    };
    if !causes.is_empty() {
        return Err(ApiError::invalid(rt, &name, causes));
    }
    // The typed round trip drops unknown fields but keeps what the client sent.
    *value = normal;
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "required": ["spec"], "properties": {
        "spec": {"type": "object", "required": ["owner"], "properties": {
            "owner": {"type": "string", "minLength": 1},
            "gpus": {"type": "integer", "minimum": 0, "maximum": 8, "default": 0},
            "state": {"type": "string", "enum": ["Running", "Stopped"], "default": "Running"},
            "opt": {"type": "string", "nullable": true},
            "idle": {"type": "string", "pattern": "^[0-9]+m$"}
        }}}})
    }

    #[test]
    fn prunes_defaults_and_checks() {
        let s = schema();
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"owner": "u", "bogus": 1, "opt": null}});
        let mut unknown = Vec::new();
        prune(&s, &mut v, "", &mut unknown);
        assert_eq!(unknown, vec!["spec.bogus".to_string()]);
        apply_defaults(&s, &mut v);
        assert_eq!(v["spec"]["gpus"], json!(0));
        assert_eq!(v["spec"]["state"], json!("Running"));
        let mut causes = Vec::new();
        check_schema(&s, &v, "", &mut causes);
        assert!(causes.is_empty(), "{causes:?}");

        let bad = json!({"spec": {"gpus": 9, "state": "Gone", "idle": "x"}});
        let mut causes = Vec::new();
        check_schema(&s, &bad, "", &mut causes);
        let shown: Vec<String> = causes.iter().map(Cause::display).collect();
        assert!(
            shown.contains(&"spec.owner: Required value".to_string()),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &"spec.gpus: Invalid value: 9: spec.gpus in body should be less than or equal to 8"
                    .to_string()
            ),
            "{shown:?}"
        );
        assert!(shown.contains(&"spec.state: Unsupported value: \"Gone\": supported values: \"Running\", \"Stopped\"".to_string()), "{shown:?}");
        assert!(
            shown.iter().any(|s| s
                .starts_with("spec.idle: Invalid value: \"x\": spec.idle in body should match")),
            "{shown:?}"
        );

        let mut causes = Vec::new();
        check_schema(
            &s,
            &json!({"spec": {"owner": "u", "gpus": "two"}}),
            "",
            &mut causes,
        );
        assert_eq!(
            causes[0].display(),
            "spec.gpus: Invalid value: \"string\": spec.gpus in body must be of type integer: \"string\""
        );
    }
}
