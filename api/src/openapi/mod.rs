//! The OpenAPI 3.1 document served at `/api/v2/openapi.json`.
//!
//! Nothing in it is written by hand twice. The schemas of bodies come from the
//! request and response types themselves (`schemars` derives, JSON Schema
//! 2020-12, which OpenAPI 3.1 uses); every pattern, length and bound in them,
//! and every path and query parameter, is a rule of [`crate::validate`] that
//! the handlers check with; path parameters are the [`PathParam`] types the
//! handlers extract. The one table here, [`operations`], says per route who may
//! call it, which statuses it answers with and which problem `code`s each
//! status carries, and how operations link (create → get, stop, delete). Tests
//! walk the table against the router, every problem a test sees against the
//! table, and a fuzzer (Schemathesis, in the `api_fuzz` test) walks the whole
//! document against a running `medforge up`.

mod operation;
mod table;
#[cfg(test)]
mod tests;

pub use self::operation::{Access, Link, Operation, Param, Success};
pub use self::table::{operation_for, operations};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};

use self::operation::Schemas;
use self::table::operations_with;
use crate::config::ApiConfig;
use crate::state::AppState;

/// The route of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v2/openapi.json", get(serve))
}

async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document(state.config()).to_string(),
    )
}

fn status_text(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
}

fn problem_response(status: u16, codes: &[&'static str]) -> Value {
    let mut headers = request_id_header();
    if matches!(status, 429 | 503) {
        headers.insert(
            "Retry-After".into(),
            json!({"description": "Seconds after which a retry makes sense", "required": true, "schema": {"type": "string", "pattern": "^[0-9]+$"}}),
        );
    }
    json!({
        "description": format!("{}: {}", status_text(status), codes.join(", ")),
        "headers": headers,
        "content": { crate::error::PROBLEM_JSON: { "schema": {
            "allOf": [
                { "$ref": "#/components/schemas/Problem" },
                { "properties": {
                    "status": { "const": status },
                    "code": { "enum": codes },
                } },
            ]
        }}}
    })
}

fn request_id_header() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "X-Request-Id".into(),
        json!({"$ref": "#/components/headers/RequestId"}),
    );
    m
}

fn meta_ref() -> Value {
    json!({"$ref": "#/components/schemas/Meta"})
}

/// The whole document, for an api with this configuration (the bounds that come
/// from it, such as the most GPUs a session may ask for, are in it).
pub fn document(config: &ApiConfig) -> Value {
    let mut schemas = Schemas::new();
    let ops = operations_with(&mut schemas);
    let _ = schemas.response::<crate::reply::Meta<'static>>();
    let _ = schemas.response::<crate::error::ProblemBody<'static>>();
    let mut components = schemas.into_components();
    // The one bound that is configuration rather than code.
    if let Some(gpus) = components
        .get_mut("CreateSession")
        .and_then(|c| c.pointer_mut("/properties/gpus"))
    {
        let policy = &config.sessions.policy;
        gpus["maximum"] = json!(policy.maxima.gpus);
        gpus["description"] = json!(format!(
            "Whole GPUs, 0 to {} (default {}; a Pack may allow fewer).",
            policy.maxima.gpus, policy.defaults.gpus
        ));
    }

    if let Some(pids) = components
        .get_mut("Resources")
        .and_then(|c| c.pointer_mut("/properties/pids"))
    {
        let most = crate::validate::PIDS_MAX.min(config.sessions.policy.maxima.pids);
        pids["maximum"] = json!(most);
    }

    let mut paths = Map::new();
    for o in &ops {
        for segment in o.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                assert!(
                    o.params
                        .iter()
                        .any(|p| p.location == "path" && p.name == name),
                    "{} {} has no parameter {name}",
                    o.method,
                    o.path
                );
            }
        }
        let parameters: Vec<Value> = o
            .params
            .iter()
            .map(|p| {
                let mut v = json!({
                    "name": p.name,
                    "in": p.location,
                    "required": p.location == "path",
                    "description": p.description,
                    "schema": p.schema,
                });
                if p.admin_only {
                    v["x-medforge-admin-only"] = json!(true);
                    v["description"] = json!(format!(
                        "{}. Admins only: anyone else gets 422 naming it.",
                        p.description
                    ));
                }
                v
            })
            .collect();
        let mut responses = Map::new();
        for (status, success) in &o.success {
            let mut headers = request_id_header();
            for (name, description, required) in &o.success_headers {
                headers.insert(
                    (*name).into(),
                    json!({"description": description, "required": required, "schema": {"type": "string"}}),
                );
            }
            let mut r = json!({ "description": status_text(*status), "headers": headers });
            match success {
                Success::Envelope(data) => {
                    r["content"] = json!({ "application/json": { "schema": {
                        "type": "object",
                        "required": ["data", "meta"],
                        "additionalProperties": false,
                        "properties": { "data": data, "meta": meta_ref() }
                    }}});
                }
                Success::Raw(media, schema) => {
                    r["content"] = json!({ *media: { "schema": schema } });
                }
                Success::Empty => {}
            }
            if !o.links.is_empty() {
                let mut links = Map::new();
                for l in &o.links {
                    let params: Map<String, Value> = l
                        .parameters
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), json!(v)))
                        .collect();
                    links.insert(
                        l.name.into(),
                        json!({"operationId": l.operation_id, "parameters": params}),
                    );
                }
                r["links"] = Value::Object(links);
            }
            responses.insert(status.to_string(), r);
        }
        for (status, codes) in &o.errors {
            responses.insert(status.to_string(), problem_response(*status, codes));
        }
        let mut operation = json!({
            "summary": o.summary,
            "tags": [o.tag],
            "operationId": o.id,
            "parameters": parameters,
            "responses": responses,
            "security": match o.access {
                Access::Public => json!([]),
                Access::User | Access::Admin => json!([{ "cookie": [] }, { "bearer": [] }]),
            },
        });
        if o.access == Access::Admin {
            operation["description"] = json!("Admins only.");
        }
        if let Some((schema, required)) = &o.body {
            operation["requestBody"] = json!({
                "required": required,
                "content": { "application/json": { "schema": schema } }
            });
        }
        let entry = paths
            .entry(o.path.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[o.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "MedForge API",
            "version": crate::reply::API_VERSION,
            "description": "Users, sessions, Caddy forward_auth and live events. Success bodies are {data, meta}; \
                errors are application/problem+json with a stable `code` (listed per status). Every pattern, \
                length and bound here is what the api checks. Parameters marked x-medforge-admin-only are refused \
                (422) for anyone else."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "cookie": { "type": "apiKey", "in": "cookie", "name": config.cookie.api_name },
                "bearer": { "type": "http", "scheme": "bearer" }
            },
            "headers": {
                "RequestId": {
                    "description": "The request id: the caller's X-Request-Id when it is 1 to 64 of [A-Za-z0-9._-], else a new UUID",
                    "required": true,
                    "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }
                }
            },
            "schemas": components
        }
    })
}
