//! The rules as field schemas, for `#[schemars(schema_with = …)]` on the
//! request and response types: the document publishes exactly what the
//! handlers check.

use schemars::{Schema, SchemaGenerator};

use super::Rule;

/// A rule as a field schema (for `#[schemars(schema_with = …)]`).
fn rule(rule: Rule, nullable: bool) -> Schema {
    let v = if nullable {
        rule.nullable_schema()
    } else {
        rule.schema()
    };
    Schema::try_from(v).expect("a rule's schema is an object")
}

/// [`super::KUBE_NAME`].
pub fn kube_name(_: &mut SchemaGenerator) -> Schema {
    rule(super::KUBE_NAME, false)
}
/// [`super::USER_ID`].
pub fn user_id(_: &mut SchemaGenerator) -> Schema {
    rule(super::USER_ID, false)
}
/// [`super::EMAIL`].
pub fn email(_: &mut SchemaGenerator) -> Schema {
    rule(super::EMAIL, false)
}
/// [`super::NEW_PASSWORD`].
pub fn new_password(_: &mut SchemaGenerator) -> Schema {
    rule(super::NEW_PASSWORD, false)
}
/// [`super::PASSWORD`].
pub fn password(_: &mut SchemaGenerator) -> Schema {
    rule(super::PASSWORD, false)
}
/// [`super::PACK_NAME`], or null.
pub fn pack_name(_: &mut SchemaGenerator) -> Schema {
    rule(super::PACK_NAME, true)
}
/// [`super::DURATION`], or null.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    rule(super::DURATION, true)
}
/// [`super::CPU`], or null.
pub fn cpu(_: &mut SchemaGenerator) -> Schema {
    rule(super::CPU, true)
}
/// [`super::SIZE`], or null.
pub fn size(_: &mut SchemaGenerator) -> Schema {
    rule(super::SIZE, true)
}
