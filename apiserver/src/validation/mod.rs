//! Validation of objects: a custom resource against its CRD's structural
//! OpenAPI schema (pruning unknown fields, applying defaults, checking types
//! and constraints) and its CEL rules (`x-kubernetes-validations`, transition
//! rules such as `self == oldSelf` included); built-in kinds by decoding them
//! into their typed form; metadata as kube-apiserver checks it. Messages use
//! kube-apiserver's wording so that a 422 reads the same.
//!
//! - [`structural`]: pruning and defaulting;
//! - [`schema`]: the walk of a value against its schema, with
//!   [`constraints`] for the checks on one value (types, bounds, lengths,
//!   patterns, formats);
//! - [`cel`]: the CEL rules;
//! - [`metadata`]: `metadata` of every kind;
//! - [`builtin`]: the built-in kinds.

pub mod builtin;
pub mod cel;
pub mod constraints;
pub mod metadata;
pub mod schema;
pub mod structural;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult};

use builtin::validate_builtin;

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
/// Runs the kind's validation. A built-in kind is decoded into its typed
/// form; a custom resource is validated and normalised in place: unknown
/// fields pruned (an error with `Strict`), defaults applied, the schema, the
/// CEL rules and the metadata checked. Returns warnings for the client.
pub fn validate(
    rt: &ResourceType,
    value: &mut Value,
    old: Option<&Value>,
    mode: FieldValidation,
) -> ApiResult<Vec<String>> {
    if rt.builtin.is_some() {
        return validate_builtin(rt, value);
    }
    let mut warnings = Vec::new();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if let Some(schema) = &rt.schema {
        let mut unknown = Vec::new();
        structural::prune(schema, value, "", &mut unknown);
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
        structural::apply_defaults(schema, value);
    }
    let mut causes = Vec::new();
    metadata::check_metadata(rt, value, &mut causes);
    if let Some(schema) = &rt.schema {
        let mut schema_causes = Vec::new();
        schema::check_schema(schema, value, "", &mut schema_causes);
        let schema_ok = schema_causes.is_empty();
        causes.extend(schema_causes);
        if schema_ok {
            cel::check_cel(rt, value, old, &mut causes);
        }
    }
    if causes.is_empty() {
        Ok(warnings)
    } else {
        Err(ApiError::invalid(rt, &name, causes))
    }
}
