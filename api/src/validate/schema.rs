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
}
