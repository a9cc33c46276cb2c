//! Input is checked before anything reaches the control plane or the database,
//! and what is checked is what the OpenAPI document says.
//!
//! - The cordon case of issue 18: a node name that cannot be a Kubernetes name
//!   is a 404 naming `node`, never a 503, and the control plane is not asked.
//! - Every path parameter of every documented operation likewise.
//! - The document against the validators: for every body field and every
//!   parameter the document describes, values generated from the document's own
//!   schema (its pattern, lengths, bounds, enums), mutations of them and random
//!   strings are sent to the api, and the api accepts exactly those the
//!   document's schema admits.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::common::{Client, TestApp, TestEnv};

/// Percent-encodes everything but unreserved characters.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn cordon_with_a_name_that_cannot_be_a_node_is_404_naming_it(env: TestEnv) {
    let t = env.app().await;
    let admin = t.admin("root@example.org").await;
    // The control plane is down: anything that reached it would be a 503.
    t.backend.set_reachable(false);
    for action in ["cordon", "uncordon"] {
        for bad in [
            "é", "nöde", "a\u{0}b", "a\nb", "a\u{7f}", "Node-A", "a/b", "-a", "a b",
        ] {
            let path = format!("/api/v2/admin/nodes/{}/{action}", encode(bad));
            let res = t.post_as(&admin, &path).await;
            let problem = res.problem_mentioning(404, "not_found", "`node`");
            assert_eq!(problem["errors"][0]["field"], "node", "{problem}");
        }
    }
    // A name that could be a node's does reach the control plane: then, and
    // only then, an outage is an outage.
    t.post_as(&admin, "/api/v2/admin/nodes/node-a/cordon")
        .await
        .problem(503, "control_plane_unavailable");
    t.backend.set_reachable(true);
    t.post_as(
        &admin,
        &format!("/api/v2/admin/nodes/{}/cordon", encode("é")),
    )
    .await
    .problem(404, "not_found");
}

/// A value for each path parameter that names nothing but follows its rule.
fn good_path_value(name: &str, path: &str, user: &Client) -> String {
    match name {
        "node" => "node-a".into(),
        // A Pack of its own: the catalogue's `default` stays as it is.
        "name" => "checked-pack".into(),
        "gpu" => "0".into(),
        "id" if path.starts_with("/api/v2/admin/users") => user.id.clone(),
        "id" if path.starts_with("/api/v2/admin/invites") => {
            "1764720000000-0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b".into()
        }
        "id" => "0f6c1c3e-5d2b-4a8e-9b1f-2c3d4e5f6a7b".into(),
        other => panic!("no good value for {{{other}}} in {path}"),
    }
}

async fn every_path_parameter_is_checked_before_the_handler(env: TestEnv) {
    let t = env.app().await;
    let user = t.user("ada@example.org").await;
    let admin = t.admin("root@example.org").await;
    t.backend.set_reachable(false);
    let mut checked = 0;
    for op in medforge_api::openapi::operations() {
        let names: Vec<&str> = op
            .params
            .iter()
            .filter(|p| p.location == "path")
            .map(|p| p.name)
            .collect();
        for bad_name in &names {
            for bad in ["é", "a\u{0}b", "UPPER", "a b", "a/b", &"7".repeat(400)] {
                let mut path = op.path.clone();
                for name in &names {
                    let value = if name == bad_name {
                        bad.to_owned()
                    } else {
                        good_path_value(name, &op.path, &user)
                    };
                    path = path.replace(&format!("{{{name}}}"), &encode(&value));
                }
                let res = t
                    .req(op.method.to_ascii_uppercase().parse().unwrap(), &path)
                    .cookie(&admin)
                    .json(json!({}))
                    .send()
                    .await;
                let problem = res.problem(404, "not_found");
                assert_eq!(
                    problem["errors"][0]["field"], *bad_name,
                    "{} {path}: {problem}",
                    op.method
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6 * 12, "only {checked} path parameters checked");
}

/// A nested object field: `{"$ref": …}` or `{"anyOf": [{"$ref": …}, {"type": "null"}]}`.
fn is_object(schema: &Value) -> bool {
    schema.get("$ref").is_some()
        || schema["anyOf"]
            .as_array()
            .is_some_and(|o| o.iter().any(|s| s.get("$ref").is_some()))
}

/// What the document's schema says about a value.
fn admits(schema: &Value, value: &Value) -> bool {
    if is_object(schema) {
        // Every field of the nested objects here is optional.
        let nullable = schema["anyOf"]
            .as_array()
            .is_some_and(|o| o.iter().any(|s| s["type"] == "null"));
        return value.is_object() || (nullable && value.is_null());
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        return false;
    }
    match value {
        Value::Null => types.contains(&"null"),
        Value::Bool(_) => types.contains(&"boolean"),
        Value::Number(n) => {
            // JSON Schema: 4.0 is an integer.
            let n = match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i,
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e18 => f as i64,
                _ => return false,
            };
            types.contains(&"integer")
                && schema["minimum"].as_i64().is_none_or(|m| n >= m)
                && schema["maximum"].as_i64().is_none_or(|m| n <= m)
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            types.contains(&"string")
                && schema["minLength"].as_u64().is_none_or(|m| len >= m)
                && schema["maxLength"].as_u64().is_none_or(|m| len <= m)
                && schema["pattern"].as_str().is_none_or(|p| {
                    regex_lite::Regex::new(p)
                        .unwrap_or_else(|e| {
                            panic!("the document's pattern {p} does not compile: {e}")
                        })
                        .is_match(s)
                })
        }
        _ => false,
    }
}

/// Values to try against a schema: generated from it, mutated, at and past its bounds.
fn candidates(schema: &Value, runner: &mut TestRunner) -> Vec<Value> {
    if is_object(schema) {
        return vec![
            json!({}),
            Value::Null,
            json!([]),
            json!([null, null]),
            json!("x"),
            json!(1),
            json!(true),
        ];
    }
    let mut out = vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(""),
        json!("x"),
    ];
    if let Some(options) = schema["enum"].as_array() {
        out.extend(options.iter().cloned());
        out.push(json!("not-one-of-them"));
    }
    for bound in ["minimum", "maximum"] {
        if let Some(b) = schema[bound].as_i64() {
            out.extend([
                json!(b - 1),
                json!(b),
                json!(b + 1),
                json!(b.to_string()),
                json!(b as f64),
                json!(b as f64 + 0.5),
            ]);
        }
    }
    let mut strings: Vec<String> = Vec::new();
    if let Some(p) = schema["pattern"].as_str() {
        let inner = p.strip_prefix('^').unwrap().strip_suffix('$').unwrap();
        let strategy = proptest::string::string_regex(inner).unwrap();
        for _ in 0..24 {
            strings.push(strategy.new_tree(runner).unwrap().current());
        }
    }
    if let Some(example) = schema["examples"][0].as_str() {
        strings.push(example.to_owned());
    }
    let min = schema["minLength"].as_u64().unwrap_or(0) as usize;
    let max = schema["maxLength"].as_u64().unwrap_or(64) as usize;
    strings.push("a".repeat(max + 1));
    strings.push("a".repeat(max));
    strings.push("a".repeat(min.saturating_sub(1)));
    let inserts = [
        " ", "é", "\u{0}", "\n", "-", ".", "A", "0", "_", "@", "/", "µ", "ab",
    ];
    let seeds = strings.clone();
    for (i, seed) in seeds.iter().enumerate() {
        let chars: Vec<char> = seed.chars().collect();
        let at = if chars.is_empty() {
            0
        } else {
            (i * 7) % (chars.len() + 1)
        };
        let insert = inserts[i % inserts.len()];
        let mut mutated: String = chars[..at].iter().collect();
        mutated.push_str(insert);
        mutated.extend(&chars[at..]);
        strings.push(mutated);
        if !chars.is_empty() {
            let mut dropped = chars.clone();
            dropped.remove(at.min(chars.len() - 1));
            strings.push(dropped.into_iter().collect());
        }
    }
    let random = proptest::string::string_regex("[ -~é\u{0}]{0,12}").unwrap();
    for _ in 0..12 {
        strings.push(random.new_tree(runner).unwrap().current());
    }
    out.extend(strings.into_iter().map(Value::String));
    out.dedup();
    out
}

/// Follows `$ref`s and `anyOf: [X, null]` to an object schema's properties.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema["$ref"].as_str() {
        return resolve(doc, doc.pointer(r.trim_start_matches('#')).unwrap());
    }
    if let Some(options) = schema["anyOf"].as_array()
        && let Some(inner) = options.iter().find(|o| o["type"] != "null")
    {
        return resolve(doc, inner);
    }
    schema
}

/// Every leaf field of a body schema: (dotted path, its schema).
fn leaves<'a>(doc: &'a Value, schema: &'a Value, prefix: &str, out: &mut Vec<(String, &'a Value)>) {
    let schema = resolve(doc, schema);
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    for (name, field) in props {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let resolved = resolve(doc, field);
        if resolved["properties"].is_object() {
            // The object itself (arrays, strings… in its place), then its fields.
            out.push((path.clone(), field));
            leaves(doc, field, &path, out);
        } else {
            out.push((path, field));
        }
    }
}

/// A body that is valid but for `field`, set to `value`.
fn body_with(base: &Value, field: &str, value: Value) -> Value {
    let mut body = base.clone();
    let mut at = &mut body;
    let parts: Vec<&str> = field.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        if !at[*part].is_object() {
            at[*part] = json!({});
        }
        at = &mut at[*part];
    }
    at[parts[parts.len() - 1]] = value;
    body
}

/// Asserts that the api refused (`refused`) exactly what the document does not
/// admit (`admitted`); `what` names the request and the value.
fn assert_agrees(refused: bool, admitted: bool, what: &str) {
    assert_eq!(
        refused,
        !admitted,
        "{what}: the document {} it, the api {} it",
        if admitted { "admits" } else { "refuses" },
        if refused { "refused" } else { "accepted" },
    );
}

/// Sends one request and says whether the api refused the value of `field`
/// (422 naming it; for a path parameter, 404 naming it; for a credential, 401).
async fn refused(
    t: &TestApp,
    admin: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
    field: &str,
    header: Option<&str>,
) -> bool {
    let mut req = t
        .req(method.to_ascii_uppercase().parse().unwrap(), path)
        .cookie(admin);
    if let Some(value) = header {
        req = req.header(field, value);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req.send().await;
    let status = res.status.as_u16();
    assert!(status < 500, "{method} {path}: {status} {}", res.text());
    let named = || {
        res.json()["errors"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["field"] == field))
    };
    // A bad header is 400 naming it; nothing else is ever 400 here.
    if header.is_some() && status == 400 {
        assert!(
            named(),
            "{method} {path}: 400 not naming {field}: {}",
            res.text()
        );
        return true;
    }
    assert_ne!(status, 400, "{method} {path}: {}", res.text());
    match status {
        422 => {
            assert!(
                named(),
                "{method} {path}: 422 not naming {field}: {}",
                res.text()
            );
            true
        }
        404 => named(),
        401 if field == "token" => true,
        _ => false,
    }
}

async fn the_document_and_the_validators_agree(env: TestEnv) {
    let t = env
        .app_with(
            // The operator's maxima are beyond what a schema can say of a
            // quantity or duration; `sessions::…::each_maximum_is_enforced…`
            // tests them. Here only the formats and ranges are compared.
            |c| {
                let m = &mut c.sessions.policy.maxima;
                m.nano_cpus = i64::MAX;
                m.memory = u64::MAX;
                m.shm = u64::MAX;
                m.workspace_quota = u64::MAX;
                m.pids = i64::MAX;
                m.idle_timeout = std::time::Duration::MAX;
                m.max_lifetime = std::time::Duration::MAX;
            },
            medforge_api::backend::MemoryBackendConfig {
                default_user_limit: 1000,
                ..crate::common::memory_defaults()
            },
        )
        .await;
    let admin = t.admin("root@example.org").await;
    let other = t.user("other@example.org").await;
    let doc = medforge_api::openapi::document(t.state().config());
    let mut runner = TestRunner::deterministic();
    let mut checked = 0usize;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            // Logging out would end the admin's login; the event stream never ends
            // once a token is accepted (its parameter is still checked below).
            if template == "/api/v2/auth/logout" {
                continue;
            }
            // `DELETE /api/v2/admin/packs/default` may have been tried (the
            // name is the rule's example): creates name it when they name none.
            t.put_pack("default", json!({}));
            let params: Vec<&Value> = op["parameters"].as_array().unwrap().iter().collect();
            let concrete = |overrides: &[(&str, String)]| {
                let mut path = template.clone();
                for p in params.iter().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap();
                    let value = overrides
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| good_path_value(name, template, &other));
                    path = path.replace(&format!("{{{name}}}"), &encode(&value));
                }
                path
            };
            let base_body = match op["operationId"].as_str().unwrap() {
                "signup" | "login" | "createUser" => {
                    Some(json!({"email": "ada@example.org", "password": "correct horse"}))
                }
                // A wrong current password: the admin's is never changed.
                "changePassword" => Some(
                    json!({"current_password": "not the password", "new_password": "correct horse"}),
                ),
                "resetPassword" => Some(json!({"password": "correct horse"})),
                "putPack" => Some(json!({"image": crate::common::PACK_IMAGE})),
                _ if op.get("requestBody").is_some() => Some(json!({})),
                _ => None,
            };
            // Body fields.
            if let Some(base) = &base_body {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                let mut fields = Vec::new();
                leaves(&doc, schema, "", &mut fields);
                for (field, field_schema) in fields {
                    for value in candidates(field_schema, &mut runner) {
                        let expected = admits(field_schema, &value);
                        // A create names a Pack of the catalogue: whatever
                        // name is tried exists (the schema says nothing of
                        // which Packs exist; `packs` tests the refusals).
                        if field == "pack"
                            && let Some(name) = value.as_str()
                        {
                            t.put_pack(name, json!({}));
                        }
                        let body = body_with(base, &field, value.clone());
                        let got =
                            refused(&t, &admin, method, &concrete(&[]), Some(body), &field, None)
                                .await;
                        assert_agrees(
                            got,
                            expected,
                            &format!("{method} {template}: {field} = {value}"),
                        );
                        checked += 1;
                    }
                }
            }
            // Parameters.
            for p in &params {
                let name = p["name"].as_str().unwrap();
                for value in candidates(&p["schema"], &mut runner) {
                    // Parameters travel as text.
                    let text = match &value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => continue,
                    };
                    let as_typed = if p["schema"]["type"] == "integer" {
                        medforge_api::validate::int::parse_text(&text)
                            .and_then(|n| i64::try_from(n).ok())
                            .map(Value::from)
                            .unwrap_or(json!(text))
                    } else {
                        json!(text)
                    };
                    let expected = admits(&p["schema"], &as_typed);
                    // An accepted event token opens the endless stream: only refusals are tried.
                    if template == "/api/v2/events" && expected {
                        continue;
                    }
                    let mut header = None;
                    let path = if p["in"] == "path" {
                        if text.is_empty() {
                            continue; // an empty segment is another route
                        }
                        concrete(&[(name, text.clone())])
                    } else if p["in"] == "header" {
                        if axum::http::HeaderValue::from_str(&text).is_err() {
                            continue; // no request can carry it
                        }
                        header = Some(text.as_str());
                        concrete(&[])
                    } else {
                        format!("{}?{name}={}", concrete(&[]), encode(&text))
                    };
                    let got =
                        refused(&t, &admin, method, &path, base_body.clone(), name, header).await;
                    assert_agrees(
                        got,
                        expected,
                        &format!("{method} {path}: {name} = {text:?}"),
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000, "only {checked} values checked");
}

crate::scenarios!(
    cordon_with_a_name_that_cannot_be_a_node_is_404_naming_it,
    every_path_parameter_is_checked_before_the_handler,
    the_document_and_the_validators_agree,
);
