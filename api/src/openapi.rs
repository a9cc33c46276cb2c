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

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::request::{GpuRef, NodeName, PathParam, SessionId, UserId};
use crate::validate::{self, Rule};
use crate::{ApiConfig, AppState};

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

/// What a success answer carries.
#[derive(Clone, Debug)]
pub enum Success {
    /// `{data, meta}` with `data` of this schema.
    Envelope(Value),
    /// No body.
    Empty,
    /// A body of this media type and schema.
    Raw(&'static str, Value),
}

/// One documented parameter.
#[derive(Clone, Debug)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// `path` or `query`.
    pub location: &'static str,
    /// Its schema.
    pub schema: Value,
    /// One line.
    pub description: &'static str,
    /// Only admins may send it (a non-admin gets 422 naming it).
    pub admin_only: bool,
}

/// A link from a success answer to another operation.
#[derive(Clone, Debug)]
pub struct Link {
    /// The link's name.
    pub name: &'static str,
    /// The target's `operationId`.
    pub operation_id: String,
    /// Target parameter name → runtime expression.
    pub parameters: Vec<(&'static str, &'static str)>,
}

/// One documented operation.
#[derive(Clone, Debug)]
pub struct Operation {
    /// Lower-case HTTP method.
    pub method: &'static str,
    /// Path template (`{id}` for parameters).
    pub path: String,
    /// `operationId`.
    pub id: String,
    /// One line.
    pub summary: &'static str,
    /// Grouping.
    pub tag: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Request body schema and whether it is required.
    pub body: Option<(Value, bool)>,
    /// Success statuses and what they carry.
    pub success: Vec<(u16, Success)>,
    /// Error statuses and the problem codes each carries.
    pub errors: Vec<(u16, Vec<&'static str>)>,
    /// Path and query parameters.
    pub params: Vec<Param>,
    /// Links from every success answer.
    pub links: Vec<Link>,
    /// Headers of success answers: (name, description).
    pub success_headers: Vec<(&'static str, &'static str)>,
}

/// Schemas of the request and response types, collected as operations name them.
struct Schemas {
    requests: SchemaGenerator,
    responses: SchemaGenerator,
}

fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    })
}

impl Schemas {
    fn new() -> Self {
        Self {
            requests: settings().for_deserialize().into_generator(),
            responses: settings().for_serialize().into_generator(),
        }
    }
    fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }
    fn response<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }
    fn response_list<T: JsonSchema>(&mut self) -> Value {
        json!({"type": "array", "items": self.response::<T>()})
    }
    fn into_components(mut self) -> Map<String, Value> {
        let mut all = self.requests.take_definitions(true);
        for (name, schema) in self.responses.take_definitions(true) {
            if let Some(existing) = all.get(&name) {
                assert_eq!(
                    existing, &schema,
                    "schema {name} differs between requests and responses"
                );
            }
            all.insert(name, schema);
        }
        all
    }
}

fn path_param<P: PathParam>() -> Param {
    Param {
        name: P::NAME,
        location: "path",
        schema: P::RULE.schema(),
        description: P::DESCRIPTION,
        admin_only: false,
    }
}

fn query(name: &'static str, schema: Value, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        schema,
        description,
        admin_only: false,
    }
}

fn limit_param() -> Param {
    query(
        "limit",
        json!({
            "type": "integer",
            "minimum": validate::LIMIT_MIN,
            "maximum": validate::LIMIT_MAX,
            "default": validate::LIMIT_DEFAULT,
        }),
        "Page size",
    )
}

fn list_params(owner_admin_only: bool) -> Vec<Param> {
    let mut owner = query(
        "owner",
        validate::USER_ID.schema(),
        "One owner's sessions (a user id)",
    );
    owner.admin_only = owner_admin_only;
    vec![
        query(
            "state",
            json!({"type": "string", "enum": validate::LIST_STATES}),
            "A phase, or `active` (neither stopped nor failed)",
        ),
        limit_param(),
        query(
            "cursor",
            validate::SESSION_CURSOR.schema(),
            "`meta.next_cursor` of the previous page",
        ),
        owner,
    ]
}

fn op(
    method: &'static str,
    path: impl Into<String>,
    id: impl Into<String>,
    summary: &'static str,
    tag: &'static str,
    access: Access,
) -> Operation {
    Operation {
        method,
        path: path.into(),
        id: id.into(),
        summary,
        tag,
        access,
        body: None,
        success: Vec::new(),
        errors: Vec::new(),
        params: Vec::new(),
        links: Vec::new(),
        success_headers: Vec::new(),
    }
}

impl Operation {
    fn ok(mut self, status: u16, success: Success) -> Self {
        self.success.push((status, success));
        self
    }
    fn body(mut self, schema: Value, required: bool) -> Self {
        self.body = Some((schema, required));
        self
    }
    fn error(mut self, status: u16, codes: &[&'static str]) -> Self {
        match self.errors.iter_mut().find(|(s, _)| *s == status) {
            Some((_, existing)) => {
                for c in codes {
                    if !existing.contains(c) {
                        existing.push(c);
                    }
                }
            }
            None => self.errors.push((status, codes.to_vec())),
        }
        self
    }
    fn param(mut self, p: Param) -> Self {
        self.params.push(p);
        self
    }
    fn params(mut self, ps: Vec<Param>) -> Self {
        self.params.extend(ps);
        self
    }
    fn link(
        mut self,
        name: &'static str,
        operation_id: impl Into<String>,
        parameters: &[(&'static str, &'static str)],
    ) -> Self {
        self.links.push(Link {
            name,
            operation_id: operation_id.into(),
            parameters: parameters.to_vec(),
        });
        self
    }
    fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.success_headers.push((name, description));
        self
    }

    /// Adds what every operation of its kind can answer, whatever its handler
    /// does: authentication and admin refusals, the Origin check of state-changing
    /// methods, body and path-parameter refusals, and an unreachable database
    /// (every authenticated request resolves its token there).
    fn with_common_errors(mut self) -> Self {
        if self.access != Access::Public {
            self = self
                .error(401, &["unauthenticated"])
                .error(503, &["database_unavailable"]);
        }
        if self.access == Access::Admin {
            self = self.error(403, &["admin_required"]);
        }
        if self.method != "get" {
            self = self.error(403, &["origin_not_allowed"]);
        }
        if self.body.is_some() {
            self = self
                .error(400, &["malformed_json"])
                .error(413, &["payload_too_large"])
                .error(415, &["unsupported_media_type"])
                .error(422, &["validation_failed"]);
        }
        if self.params.iter().any(|p| p.location == "path") {
            // A value its rule refuses names nothing (404 naming it); an empty
            // segment matches no route at all.
            self = self.error(404, &["not_found", "route_not_found"]);
        }
        if self.params.iter().any(|p| p.location == "query") {
            self = self.error(422, &["validation_failed"]);
        }
        self.errors.sort_by_key(|(s, _)| *s);
        self
    }
}

const SESSION_ID_OF_REPLY: &str = "$response.body#/data/session/id";

/// Every operation the API serves.
pub fn operations() -> Vec<Operation> {
    operations_with(&mut Schemas::new())
}

fn operations_with(s: &mut Schemas) -> Vec<Operation> {
    use Access::*;
    let health = s.response::<crate::health::Health>();
    let readiness = s.response::<crate::health::Readiness>();
    let user_reply = s.response::<crate::auth::UserReply>();
    let message = s.response::<crate::auth::Message>();
    let event_token = s.response::<crate::events::EventToken>();
    let node = s.response::<crate::admin::NodeView>();
    let nodes = s.response_list::<crate::admin::NodeView>();
    let session = s.response::<crate::sessions::SessionView>();
    let sessions = s.response_list::<crate::sessions::SessionView>();
    let session_reply = s.response::<crate::sessions::SessionReply>();
    let users = s.response_list::<crate::auth::UserView>();
    let signup = s.request::<crate::auth::Signup>();
    let login = s.request::<crate::auth::Login>();
    let user_patch = s.request::<crate::admin::UserPatch>();
    let create = s.request::<crate::sessions::CreateSession>();

    let mut ops = vec![
        op("get", "/healthz", "healthz", "The process is up", "health", Public)
            .ok(200, Success::Envelope(health)),
        op("get", "/readyz", "readyz", "Database and control plane answer, session watch synced", "health", Public)
            .ok(200, Success::Envelope(readiness))
            .error(503, &["not_ready"]),
        op("get", "/api/v2/openapi.json", "openapi", "This document", "meta", Public)
            .ok(200, Success::Raw("application/json", json!({"type": "object", "required": ["openapi", "paths"]}))),
        op("post", "/api/v2/auth/signup", "signup", "Create an account and log in (sets the cookie)", "auth", Public)
            .body(signup, true)
            .ok(201, Success::Envelope(user_reply.clone()))
            .header("Set-Cookie", "The login cookie")
            .link("ChangeUser", "changeUser", &[("id", "$response.body#/data/user/id")])
            .error(403, &["signup_disabled"])
            .error(409, &["email_taken"])
            .error(429, &["rate_limited"])
            .error(503, &["database_unavailable"]),
        op("post", "/api/v2/auth/login", "login", "Log in (sets the cookie)", "auth", Public)
            .body(login, true)
            .ok(200, Success::Envelope(user_reply.clone()))
            .header("Set-Cookie", "The login cookie")
            .error(401, &["invalid_credentials"])
            .error(429, &["rate_limited"])
            .error(503, &["database_unavailable"]),
        op("post", "/api/v2/auth/logout", "logout", "Revoke the login token and clear the cookie", "auth", Public)
            .ok(200, Success::Envelope(message))
            .header("Set-Cookie", "The cleared cookie")
            .error(503, &["database_unavailable"]),
        op("get", "/api/v2/me", "me", "The logged-in user", "auth", User)
            .ok(200, Success::Envelope(user_reply.clone())),
        op("get", "/api/v2/auth/session-proxy", "sessionProxy", "Caddy forward_auth for s-<slug> hosts: 200 with X-Upstream for the owner or an admin of a running session (the cookie authenticates; the Host names the session)", "auth", Public)
            .ok(200, Success::Empty)
            .header("X-Upstream", "Where Caddy sends the request (host:port)")
            .error(401, &["unauthenticated"])
            .error(403, &["session_access_denied"])
            .error(404, &["not_found"])
            .error(503, &["database_unavailable"]),
        op("get", "/api/v2/events", "events", "Server-Sent Events of the caller's session changes (cookie, bearer or ?token=)", "events", User)
            .param(query("token", validate::EVENT_TOKEN.schema(), "Single-use token from POST /api/v2/events/token, for EventSource"))
            .ok(200, Success::Raw("text/event-stream", json!({"type": "string"}))),
        op("post", "/api/v2/events/token", "eventToken", "A single-use token (60 s) for EventSource", "events", User)
            .ok(201, Success::Envelope(event_token)),
        op("get", "/api/v2/admin/nodes", "listNodes", "GPU nodes with free and used GPUs", "admin", Admin)
            .ok(200, Success::Envelope(nodes))
            .error(503, &["control_plane_unavailable"])
            .link("CordonNode", "cordonNode", &[("node", "$response.body#/data/0/name")])
            .link("CordonGpu", "cordonGpu", &[("node", "$response.body#/data/0/name"), ("gpu", "$response.body#/data/0/gpus/0/uuid")]),
        op("post", "/api/v2/admin/nodes/{node}/cordon", "cordonNode", "Cordon a node", "admin", Admin)
            .param(path_param::<NodeName>())
            .ok(200, Success::Envelope(node.clone()))
            .error(503, &["control_plane_unavailable"])
            .link("UncordonNode", "uncordonNode", &[("node", "$response.body#/data/name")]),
        op("post", "/api/v2/admin/nodes/{node}/uncordon", "uncordonNode", "Uncordon a node", "admin", Admin)
            .param(path_param::<NodeName>())
            .ok(200, Success::Envelope(node.clone()))
            .error(503, &["control_plane_unavailable"]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/cordon", "cordonGpu", "Cordon one GPU (by index or UUID)", "admin", Admin)
            .param(path_param::<NodeName>())
            .param(path_param::<GpuRef>())
            .ok(200, Success::Envelope(node.clone()))
            .error(409, &["conflict"])
            .error(503, &["control_plane_unavailable"])
            .link("UncordonGpu", "uncordonGpu", &[("node", "$request.path.node"), ("gpu", "$request.path.gpu")]),
        op("post", "/api/v2/admin/nodes/{node}/gpus/{gpu}/uncordon", "uncordonGpu", "Uncordon one GPU (by index or UUID)", "admin", Admin)
            .param(path_param::<NodeName>())
            .param(path_param::<GpuRef>())
            .ok(200, Success::Envelope(node))
            .error(409, &["conflict"])
            .error(503, &["control_plane_unavailable"]),
        op("get", "/api/v2/admin/sessions", "listAllSessions", "Every session, both exposures", "admin", Admin)
            .params(list_params(false))
            .ok(200, Success::Envelope(sessions.clone())),
        op("get", "/api/v2/admin/users", "listUsers", "Users, by email", "admin", Admin)
            .param(limit_param())
            .param(query("cursor", validate::USERS_CURSOR.schema(), "`meta.next_cursor` of the previous page"))
            .ok(200, Success::Envelope(users)),
        op("patch", "/api/v2/admin/users/{id}", "changeUser", "Change a user's flags", "admin", Admin)
            .param(path_param::<UserId>())
            .body(user_patch, true)
            .ok(200, Success::Envelope(user_reply))
            .error(409, &["last_admin_guard"]),
    ];
    for (exposure, title) in [("external", "External"), ("internal", "Internal")] {
        let base = format!("/api/v2/{exposure}/sessions");
        let get_id = format!("get{title}Session");
        let stop_id = format!("stop{title}Session");
        let delete_id = format!("delete{title}Session");
        let session_links = |o: Operation, id: &'static str| {
            o.link("GetSession", get_id.clone(), &[("id", id)])
                .link("StopSession", stop_id.clone(), &[("id", id)])
                .link("DeleteSession", delete_id.clone(), &[("id", id)])
        };
        let mut create_op = op(
            "post",
            base.clone(),
            format!("create{title}Session"),
            "Create a session and wait for the scheduler (wait=ready: until Ready)",
            "sessions",
            User,
        )
        .body(create.clone(), false)
        .param(query(
            "wait",
            json!({"type": "string", "enum": validate::WAIT_VALUES}),
            "`ready`: answer once the session is Ready (202 if it is not in time)",
        ))
        .ok(201, Success::Envelope(session_reply.clone()))
        .ok(202, Success::Envelope(session_reply.clone()))
        .error(
            409,
            &[
                "session_deleted",
                "session_failed",
                "conflict",
                crate::sessions::OTHER_REFUSAL,
            ],
        )
        .error(503, &["scheduler_timeout", "control_plane_unavailable"]);
        for (_, code, _) in crate::sessions::SCHEDULER_REFUSALS {
            create_op = create_op.error(409, &[code]);
        }
        if exposure == "internal" {
            create_op = create_op.error(403, &["internal_not_allowed"]);
        }
        ops.push(session_links(create_op, SESSION_ID_OF_REPLY));
        ops.push(
            op(
                "get",
                base.clone(),
                format!("list{title}Sessions"),
                "Your sessions (everyone's for admins), newest first",
                "sessions",
                User,
            )
            .params(list_params(true))
            .ok(200, Success::Envelope(sessions.clone())),
        );
        ops.push(
            op(
                "get",
                format!("{base}/{{id}}"),
                get_id.clone(),
                "One session",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(200, Success::Envelope(session.clone())),
        );
        ops.push(
            op(
                "delete",
                format!("{base}/{{id}}"),
                delete_id.clone(),
                "Delete a session (admins)",
                "sessions",
                Admin,
            )
            .param(path_param::<SessionId>())
            .ok(204, Success::Empty)
            .error(503, &["control_plane_unavailable"]),
        );
        ops.push(session_links(
            op(
                "post",
                format!("{base}/{{id}}/stop"),
                stop_id.clone(),
                "Stop a session (idempotent)",
                "sessions",
                User,
            )
            .param(path_param::<SessionId>())
            .ok(202, Success::Envelope(session_reply.clone()))
            .error(503, &["control_plane_unavailable"]),
            SESSION_ID_OF_REPLY,
        ));
    }
    ops.into_iter().map(Operation::with_common_errors).collect()
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
        gpus["maximum"] = json!(config.sessions.max_gpus);
        gpus["description"] = json!(format!(
            "Whole GPUs, 0 to {} (default {}).",
            config.sessions.max_gpus, config.sessions.default_gpus
        ));
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
            for (name, description) in &o.success_headers {
                headers.insert(
                    (*name).into(),
                    json!({"description": description, "required": true, "schema": {"type": "string"}}),
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
                "cookie": { "type": "apiKey", "in": "cookie", "name": config.cookie.name },
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

/// A rule as a field schema (for `#[schemars(schema_with = …)]`).
fn rule(rule: Rule, nullable: bool) -> Schema {
    let v = if nullable {
        rule.nullable_schema()
    } else {
        rule.schema()
    };
    Schema::try_from(v).expect("a rule's schema is an object")
}

/// [`validate::KUBE_NAME`].
pub fn kube_name(_: &mut SchemaGenerator) -> Schema {
    rule(validate::KUBE_NAME, false)
}
/// [`validate::USER_ID`].
pub fn user_id(_: &mut SchemaGenerator) -> Schema {
    rule(validate::USER_ID, false)
}
/// [`validate::EMAIL`].
pub fn email(_: &mut SchemaGenerator) -> Schema {
    rule(validate::EMAIL, false)
}
/// [`validate::NEW_PASSWORD`].
pub fn new_password(_: &mut SchemaGenerator) -> Schema {
    rule(validate::NEW_PASSWORD, false)
}
/// [`validate::PASSWORD`].
pub fn password(_: &mut SchemaGenerator) -> Schema {
    rule(validate::PASSWORD, false)
}
/// [`validate::PACK_NAME`], or null.
pub fn pack_name(_: &mut SchemaGenerator) -> Schema {
    rule(validate::PACK_NAME, true)
}
/// [`validate::DURATION`], or null.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    rule(validate::DURATION, true)
}
/// [`validate::CPU`], or null.
pub fn cpu(_: &mut SchemaGenerator) -> Schema {
    rule(validate::CPU, true)
}
/// [`validate::SIZE`], or null.
pub fn size(_: &mut SchemaGenerator) -> Schema {
    rule(validate::SIZE, true)
}

/// The documented operation that serves `method` on a concrete `path` (such as
/// `/api/v2/external/sessions/abc/stop`; a query is ignored), if any.
pub fn operation_for(method: &str, path: &str) -> Option<Operation> {
    let method = method.to_ascii_lowercase();
    let path = path.split('?').next().unwrap_or(path);
    let segments: Vec<&str> = path.split('/').collect();
    operations().into_iter().find(|o| {
        let template: Vec<&str> = o.path.split('/').collect();
        o.method == method
            && template.len() == segments.len()
            && template
                .iter()
                .zip(&segments)
                .all(|(t, s)| t == s || (t.starts_with('{') && t.ends_with('}')))
    })
}

impl Operation {
    /// The problem codes documented for `status` (empty when the status is not).
    pub fn codes(&self, status: u16) -> Vec<&'static str> {
        self.errors
            .iter()
            .find(|(s, _)| *s == status)
            .map(|(_, codes)| codes.clone())
            .unwrap_or_default()
    }

    /// Whether `status` is one of the documented successes.
    pub fn succeeds_with(&self, status: u16) -> bool {
        self.success.iter().any(|(s, _)| *s == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn doc() -> Value {
        let config = ApiConfig::new("medforge.test", "/nonexistent");
        let doc = document(&config);
        if let Ok(path) = std::env::var("MEDFORGE_OPENAPI_OUT") {
            std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
        }
        doc
    }

    #[test]
    fn every_reference_resolves_and_every_link_names_a_real_parameter() {
        let doc = doc();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = part.split('"').next().unwrap();
            let (kind, name) = target.split_once('/').unwrap();
            assert!(
                doc["components"][kind].get(name).is_some(),
                "missing {kind}/{name}"
            );
        }
        let ops = operations();
        let ids: BTreeSet<&str> = ops.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids.len(), ops.len(), "operationIds are unique");
        for o in &ops {
            assert!(!o.success.is_empty(), "{} has no success", o.id);
            for l in &o.links {
                let target = ops
                    .iter()
                    .find(|t| t.id == l.operation_id)
                    .unwrap_or_else(|| panic!("{} links to no {}", o.id, l.operation_id));
                for (name, expr) in &l.parameters {
                    assert!(
                        target.params.iter().any(|p| p.name == *name),
                        "{} → {}: no parameter {name}",
                        o.id,
                        target.id
                    );
                    assert!(
                        expr.starts_with("$response.body#/") || expr.starts_with("$request.path.")
                    );
                }
            }
        }
    }

    #[test]
    fn the_gpu_bound_comes_from_the_configuration() {
        let mut config = ApiConfig::new("medforge.test", "/nonexistent");
        config.sessions.max_gpus = 3;
        let doc = document(&config);
        assert_eq!(
            doc["components"]["schemas"]["CreateSession"]["properties"]["gpus"]["maximum"],
            3
        );
    }
}
