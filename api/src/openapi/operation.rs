//! One documented operation and how the table builds it: parameters, successes,
//! the problem codes per status, links, and the errors every operation of a kind
//! can give.

use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value, json};

use crate::request::PathParam;
use crate::validate;

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
    /// `path`, `query` or `header`.
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
    /// Headers of success answers: (name, description, always sent).
    pub success_headers: Vec<(&'static str, &'static str, bool)>,
}

/// Schemas of the request and response types, collected as operations name them.
pub(super) struct Schemas {
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
    pub(super) fn new() -> Self {
        Self {
            requests: settings().for_deserialize().into_generator(),
            responses: settings().for_serialize().into_generator(),
        }
    }
    pub(super) fn request<T: JsonSchema>(&mut self) -> Value {
        self.requests.subschema_for::<T>().to_value()
    }
    pub(super) fn response<T: JsonSchema>(&mut self) -> Value {
        self.responses.subschema_for::<T>().to_value()
    }
    pub(super) fn response_list<T: JsonSchema>(&mut self) -> Value {
        json!({"type": "array", "items": self.response::<T>()})
    }
    pub(super) fn into_components(mut self) -> Map<String, Value> {
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

pub(super) fn path_param<P: PathParam>() -> Param {
    Param {
        name: P::NAME,
        location: "path",
        schema: P::RULE.schema(),
        description: P::DESCRIPTION,
        admin_only: false,
    }
}

pub(super) fn query(name: &'static str, schema: Value, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        schema,
        description,
        admin_only: false,
    }
}

pub(super) fn header(name: &'static str, schema: Value, description: &'static str) -> Param {
    Param {
        name,
        location: "header",
        schema,
        description,
        admin_only: false,
    }
}

pub(super) fn limit_param() -> Param {
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

pub(super) fn list_params(owner_admin_only: bool) -> Vec<Param> {
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

pub(super) fn op(
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
    pub(super) fn ok(mut self, status: u16, success: Success) -> Self {
        self.success.push((status, success));
        self
    }
    pub(super) fn body(mut self, schema: Value, required: bool) -> Self {
        self.body = Some((schema, required));
        self
    }
    pub(super) fn error(mut self, status: u16, codes: &[&'static str]) -> Self {
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
    pub(super) fn param(mut self, p: Param) -> Self {
        self.params.push(p);
        self
    }
    pub(super) fn params(mut self, ps: Vec<Param>) -> Self {
        self.params.extend(ps);
        self
    }
    pub(super) fn link(
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
    pub(super) fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.success_headers.push((name, description, true));
        self
    }
    /// A header some success answers carry.
    pub(super) fn optional_header(mut self, name: &'static str, description: &'static str) -> Self {
        self.success_headers.push((name, description, false));
        self
    }

    /// Adds what every operation of its kind can answer, whatever its handler
    /// does: authentication and admin refusals, the Origin check of state-changing
    /// methods, body and path-parameter refusals, and an unreachable database
    /// (every authenticated request resolves its token there).
    pub(super) fn with_common_errors(mut self) -> Self {
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
