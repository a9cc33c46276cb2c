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

/// One `fn(&mut SchemaGenerator) -> Schema` per rule a field uses.
macro_rules! field_schemas {
    ($($name:ident => $rule:ident, nullable: $nullable:literal;)*) => {
        $(
            #[doc = concat!("[`super::", stringify!($rule), "`]; `null` admitted: ", stringify!($nullable), ".")]
            pub fn $name(_: &mut SchemaGenerator) -> Schema {
                rule(super::$rule, $nullable)
            }
        )*
    };
}

field_schemas! {
    kube_name => KUBE_NAME, nullable: false;
    optional_kube_name => KUBE_NAME, nullable: true;
    user_id => USER_ID, nullable: false;
    email => EMAIL, nullable: false;
    new_password => NEW_PASSWORD, nullable: false;
    password => PASSWORD, nullable: false;
    pack_name => PACK_NAME, nullable: true;
    duration => DURATION, nullable: true;
    cpu => CPU, nullable: true;
    size => SIZE, nullable: true;
    log_id => LOG_ID, nullable: false;
    invite_code => INVITE_CODE, nullable: true;
    optional_email => EMAIL, nullable: true;
    pack_image => PACK_IMAGE, nullable: false;
    pack_display_name => PACK_DISPLAY_NAME, nullable: true;
    pack_description => PACK_DESCRIPTION, nullable: true;
    env_name => ENV_NAME, nullable: false;
    env_value => ENV_VALUE, nullable: true;
}

/// A list of strings that each follow `item`, at most `max` of them.
fn list(item: Rule, max: usize, nullable: bool) -> Schema {
    let mut v = serde_json::json!({
        "type": "array",
        "maxItems": max,
        "items": item.schema(),
    });
    if nullable {
        v["type"] = serde_json::json!(["array", "null"]);
    }
    Schema::try_from(v).expect("an object")
}

/// A Pack's command: at most [`super::PACK_COMMAND_MAX`] arguments, `null` admitted.
pub fn pack_command(_: &mut SchemaGenerator) -> Schema {
    list(super::PACK_COMMAND_ARG, super::PACK_COMMAND_MAX, true)
}

/// Exposures (`external`, `internal`), each at most once.
fn exposures(nullable: bool) -> Schema {
    let mut v = serde_json::json!({
        "type": "array",
        "maxItems": 2,
        "uniqueItems": true,
        "items": {"type": "string", "enum": ["external", "internal"]},
    });
    if nullable {
        v["type"] = serde_json::json!(["array", "null"]);
    }
    Schema::try_from(v).expect("an object")
}

/// A Pack's exposures in a body: `null` (or absent, or empty) for both.
pub fn optional_exposures(_: &mut SchemaGenerator) -> Schema {
    exposures(true)
}

/// A Pack's exposures as shown.
pub fn shown_exposures(_: &mut SchemaGenerator) -> Schema {
    exposures(false)
}
