use serde_json::{Value, json};

use super::schema::check_schema;
use super::structural::{apply_defaults, prune};
use crate::status::Cause;

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
    assert!(
        shown.contains(
            &"spec.state: Unsupported value: \"Gone\": supported values: \"Running\", \"Stopped\""
                .to_string()
        ),
        "{shown:?}"
    );
    assert!(
        shown
            .iter()
            .any(|s| s
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
