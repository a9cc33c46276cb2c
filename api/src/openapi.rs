//! The OpenAPI 3.1 document served at `/api/v2/openapi.json`, built from one table
//! of operations. A test walks the table against the router (every documented
//! operation is routed, every other method on a documented path is 405).

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::AppState;

/// The route of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/v2/openapi.json", get(serve))
}

async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
}

/// Who may call an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A logged-in user (cookie or bearer token).
    User,
    /// An admin.
    Admin,
}

/// One documented operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// Path template (`{id}` for parameters).
    pub path: String,
    /// One line.
    pub summary: &'static str,
    /// Grouping.
    pub tag: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Request body schema name.
    pub body: Option<&'static str>,
    /// Success status and `data` schema (a `$ref` name, `[Name]` for arrays, `None` for no body).
    pub success: (u16, Option<&'static str>),
    /// Documented error statuses.
    pub errors: &'static [u16],
    /// Query parameters: (name, description).
    pub query: &'static [(&'static str, &'static str)],
}

fn op(
    method: &'static str,
    path: impl Into<String>,
    summary: &'static str,
    tag: &'static str,
    access: Access,
) -> Operation {
    Operation {
        method,
        path: path.into(),
        summary,
        tag,
        access,
        body: None,
        success: (200, None),
        errors: &[],
        query: &[],
    }
}

impl Operation {
    fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    fn ok(mut self, status: u16, schema: Option<&'static str>) -> Self {
        self.success = (status, schema);
        self
    }
    fn errors(mut self, errors: &'static [u16]) -> Self {
        self.errors = errors;
        self
    }
    fn query(mut self, query: &'static [(&'static str, &'static str)]) -> Self {
        self.query = query;
        self
    }
}

const LIST_QUERY: &[(&str, &str)] = &[
    (
        "state",
        "A phase (pending, scheduled, starting, running, stopping, stopped, failed) or `active`",
    ),
    ("limit", "Page size, 1 to 200 (default 50)"),
    ("cursor", "meta.next_cursor of the previous page"),
    ("owner", "Admins only: one owner's sessions"),
];

/// Every operation the API serves.
pub fn operations() -> Vec<Operation> {
    use Access::*;
    let mut ops = vec![
        op("get", "/healthz", "The process is up", "health", Public).ok(200, Some("Health")),
        op("get", "/readyz", "Database and control plane reachable, watch synced", "health", Public)
            .ok(200, Some("Readiness"))
            .errors(&[503]),
        op("get", "/api/v2/openapi.json", "This document", "meta", Public),
        op("post", "/api/v2/auth/signup", "Create an account and log in (sets the cookie)", "auth", Public)
            .body("Credentials")
            .ok(201, Some("UserReply"))
            .errors(&[400, 403, 409, 413, 415, 422, 429]),
        op("post", "/api/v2/auth/login", "Log in (sets the cookie)", "auth", Public)
            .body("Credentials")
            .ok(200, Some("UserReply"))
            .errors(&[400, 401, 403, 413, 415, 422, 429]),
        op("post", "/api/v2/auth/logout", "Revoke the login token and clear the cookie", "auth", Public)
            .ok(200, Some("Message"))
            .errors(&[403]),
        op("get", "/api/v2/me", "The logged-in user", "auth", User)
            .ok(200, Some("UserReply"))
            .errors(&[401]),
        op("get", "/api/v2/auth/session-proxy", "Caddy forward_auth for s-<slug> hosts: 200 with X-Upstream for the owner or an admin of a running session", "auth", Public)
            .errors(&[401, 403, 404]),
        op("get", "/api/v2/events", "Server-Sent Events of the caller's session changes (cookie, bearer or ?token=)", "events", User)
            .query(&[("token", "Single-use token from POST /api/v2/events/token")])
            .errors(&[401]),
        op("post", "/api/v2/events/token", "A single-use token (60 s) for EventSource", "events", User)
            .ok(201, Some("EventToken"))
            .errors(&[401, 403]),
        op("get", "/api/v2/admin/nodes", "GPU nodes with free and used GPUs", "admin", Admin)
            .ok(200, Some("[Node]"))
            .errors(&[401, 403]),
        op("post", "/api/v2/admin/nodes/{node}/cordon", "Cordon a node", "admin", Admin)
            .ok(200, Some("Node"))
            .errors(&[401, 403, 404]),
        op("post", "/api/v2/admin/nodes/{node}/uncordon", "Uncordon a node", "admin", Admin)
            .ok(200, Some("Node"))
            .errors(&[401, 403, 404]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/cordon", "Cordon one GPU (by index or UUID)", "admin", Admin)
            .ok(200, Some("Node"))
            .errors(&[401, 403, 404]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/uncordon", "Uncordon one GPU (by index or UUID)", "admin", Admin)
            .ok(200, Some("Node"))
            .errors(&[401, 403, 404]),
        op("get", "/api/v2/admin/sessions", "Every session, both exposures", "admin", Admin)
            .ok(200, Some("[Session]"))
            .query(LIST_QUERY)
            .errors(&[401, 403, 422]),
        op("get", "/api/v2/admin/users", "Users, by email", "admin", Admin)
            .ok(200, Some("[User]"))
            .query(&[("limit", "Page size, 1 to 200"), ("cursor", "meta.next_cursor of the previous page")])
            .errors(&[401, 403, 422]),
        op("patch", "/api/v2/admin/users/{id}", "Change a user's flags", "admin", Admin)
            .body("UserPatch")
            .ok(200, Some("UserReply"))
            .errors(&[400, 401, 403, 404, 409, 415, 422]),
    ];
    for exposure in ["external", "internal"] {
        let base = format!("/api/v2/{exposure}/sessions");
        ops.push(
            op(
                "post",
                base.clone(),
                "Create a session and wait for the scheduler (wait=ready: until Ready)",
                "sessions",
                User,
            )
            .body("CreateSession")
            .query(&[(
                "wait",
                "`ready`: answer once the session is Ready (202 if it is not in time)",
            )])
            .ok(201, Some("SessionReply"))
            .errors(&[400, 401, 403, 409, 413, 415, 422, 503]),
        );
        ops.push(
            op(
                "get",
                base.clone(),
                "Your sessions (all for admins), newest first",
                "sessions",
                User,
            )
            .query(LIST_QUERY)
            .ok(200, Some("[Session]"))
            .errors(&[401, 422]),
        );
        ops.push(
            op(
                "get",
                format!("{base}/{{id}}"),
                "One session",
                "sessions",
                User,
            )
            .ok(200, Some("Session"))
            .errors(&[401, 404]),
        );
        ops.push(
            op(
                "delete",
                format!("{base}/{{id}}"),
                "Delete a session (admins)",
                "sessions",
                Admin,
            )
            .ok(204, None)
            .errors(&[401, 403, 404]),
        );
        ops.push(
            op(
                "post",
                format!("{base}/{{id}}/stop"),
                "Stop a session (idempotent)",
                "sessions",
                User,
            )
            .ok(202, Some("SessionReply"))
            .errors(&[401, 403, 404]),
        );
    }
    ops
}

fn schema_ref(name: &str) -> Value {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(item) => {
            json!({ "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } })
        }
        None => json!({ "$ref": format!("#/components/schemas/{name}") }),
    }
}

fn status_text(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Response")
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for o in operations() {
        let mut parameters: Vec<Value> = Vec::new();
        for segment in o.path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                parameters.push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
            }
        }
        for (name, description) in o.query {
            parameters.push(json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}}));
        }
        let mut responses = Map::new();
        let (status, schema) = o.success;
        let success = match schema {
            Some(s) => json!({
                "description": status_text(status),
                "content": { "application/json": { "schema": {
                    "type": "object",
                    "required": ["data", "meta"],
                    "properties": { "data": schema_ref(s), "meta": schema_ref("Meta") }
                }}}
            }),
            None => json!({ "description": status_text(status) }),
        };
        responses.insert(status.to_string(), success);
        for e in o.errors {
            responses.insert(
                e.to_string(),
                json!({
                    "description": status_text(*e),
                    "content": { "application/problem+json": { "schema": schema_ref("Problem") } }
                }),
            );
        }
        let mut operation = json!({
            "summary": o.summary,
            "tags": [o.tag],
            "operationId": format!("{}{}", o.method, o.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = o.body {
            operation["requestBody"] = json!({
                "required": o.method != "post" || body != "CreateSession",
                "content": { "application/json": { "schema": schema_ref(body) } }
            });
        }
        operation["security"] = match o.access {
            Access::Public => json!([]),
            Access::User | Access::Admin => json!([{ "cookie": [] }, { "bearer": [] }]),
        };
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
            "description": "Users, sessions, Caddy forward_auth and live events. Bodies use the {data, meta} envelope; errors are application/problem+json."
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "cookie": { "type": "apiKey", "in": "cookie", "name": "medforge_session" },
                "bearer": { "type": "http", "scheme": "bearer" }
            },
            "schemas": schemas()
        }
    })
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let ns = json!({"type": ["string", "null"]});
    let b = json!({"type": "boolean"});
    json!({
        "Meta": {"type": "object", "properties": {
            "request_id": s, "api_version": s, "timestamp": s,
            "limit": {"type": ["integer", "null"]}, "next_cursor": ns, "has_more": {"type": ["boolean", "null"]}
        }},
        "Problem": {"type": "object", "required": ["type", "title", "status", "detail", "instance", "code", "request_id"], "properties": {
            "type": s, "title": s, "status": {"type": "integer"}, "detail": s, "instance": s, "code": s, "request_id": s,
            "errors": {"type": "array", "items": {"type": "object", "properties": {"field": s, "message": s}}}
        }},
        "Health": {"type": "object", "properties": {"status": s}},
        "Readiness": {"type": "object", "properties": {"status": s, "database": b, "control_plane": b, "watch_synced": b}},
        "Message": {"type": "object", "properties": {"message": s}},
        "Credentials": {"type": "object", "required": ["email", "password"], "additionalProperties": false, "properties": {
            "email": {"type": "string", "format": "email", "maxLength": 254},
            "password": {"type": "string", "minLength": 8, "maxLength": 1024}
        }},
        "User": {"type": "object", "properties": {
            "id": s, "email": s, "is_admin": b, "can_use_internal": b,
            "max_sessions": {"type": ["integer", "null"]}, "created_at": s
        }},
        "UserReply": {"type": "object", "properties": {"user": {"$ref": "#/components/schemas/User"}}},
        "UserPatch": {"type": "object", "additionalProperties": false, "properties": {
            "is_admin": b, "can_use_internal": b, "max_sessions": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000}
        }},
        "CreateSession": {"type": "object", "additionalProperties": false, "properties": {
            "pack": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"},
            "gpus": {"type": "integer", "minimum": 0, "maximum": 8},
            "idle_timeout": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"},
            "max_lifetime": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(ns|us|ms|s|m|h))+$"},
            "resources": {"type": "object", "additionalProperties": false, "properties": {
                "cpu": s, "memory": s, "shm": s, "pids": {"type": "integer", "minimum": 16, "maximum": 1000000}
            }}
        }},
        "Session": {"type": "object", "properties": {
            "id": s, "slug": ns, "exposure": {"enum": ["external", "internal"]}, "owner": s, "pack": s,
            "state": {"enum": ["running", "stopped"]},
            "phase": {"enum": ["pending", "scheduled", "starting", "running", "stopping", "stopped", "failed"]},
            "ready": b, "gpu_count": {"type": "integer"},
            "gpus": {"type": "array", "items": {"type": "object", "properties": {"index": {"type": "integer"}, "uuid": s}}},
            "node": ns, "url": ns, "reason": ns, "error_message": ns, "idle_timeout": ns, "max_lifetime": ns,
            "created_at": ns, "started_at": ns, "stopped_at": ns, "last_activity_at": ns
        }},
        "SessionReply": {"type": "object", "properties": {"message": s, "session": {"$ref": "#/components/schemas/Session"}}},
        "EventToken": {"type": "object", "properties": {"token": s, "expires_at": s, "expires_in": {"type": "integer"}}},
        "Node": {"type": "object", "properties": {
            "name": s, "ready": b, "unschedulable": b, "last_heartbeat": ns,
            "total": {"type": "integer"}, "used": {"type": "integer"}, "free": {"type": "integer"},
            "gpus": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "uuid": s, "model": s, "memory_bytes": {"type": "integer"},
                "health": s, "cordoned": b, "session": ns
            }}}
        }}
    })
}
