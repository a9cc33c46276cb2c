//! The verbs on resources: get, list, create, update, patch, delete,
//! deletecollection, with kube-apiserver's object semantics: system metadata
//! (`uid`, `creationTimestamp`, `generateName`, `generation` that moves only
//! with the spec), optimistic concurrency on `resourceVersion`, the status
//! subresource split, finalizers and `deletionTimestamp`, dry runs, and
//! field ownership.

use std::collections::HashMap;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::managed::{self, Scope};
use crate::patch;
use crate::protobuf;
use crate::registry::{Builtin, ResourceType};
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::AppState;
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::{ObjectKey, Precondition, ReadError, StoredObject, WriteError, WriteOp};
use crate::table::{self, IncludeObject, Transform};
use crate::validation::{self, FieldValidation};

/// Query parameters of a request.
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(q.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|s| !s.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

/// A request on one kind, after routing.
pub struct ResourceRequest {
    pub rt_id: usize,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: bool,
    pub query: Query,
    pub body: Bytes,
    pub content_type: String,
    /// The media range chosen from the `Accept` header when the answer is
    /// JSON (it may ask for a Table); `None` for a protobuf answer.
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// Whether the answer is written in protobuf (a watch writes its frames so).
    pub protobuf: bool,
}

impl ResourceRequest {
    fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }

    fn scope(&self) -> Scope {
        if self.status {
            Scope::Status
        } else {
            Scope::Main
        }
    }

    pub fn transform(&self) -> Option<Transform> {
        table::negotiate(
            self.accept.as_deref(),
            IncludeObject::parse(self.query.get("includeObject")),
        )
    }
}

/// Options of a write request.
pub struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
}

impl WriteOpts {
    /// `options_kind` names the options object kube-apiserver validates for
    /// this verb (`CreateOptions`, `UpdateOptions`, `PatchOptions`,
    /// `DeleteOptions`), as its 422 messages do.
    pub fn from_request(req: &ResourceRequest, options_kind: &str) -> ApiResult<WriteOpts> {
        let dry_run = match req.query.0.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other:?}: supported values: \"All\""
                )));
            }
        };
        let manager = match req.query.get("fieldManager") {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::invalid_kind(
                    "meta.k8s.io",
                    options_kind,
                    "",
                    vec![Cause::new(
                        "FieldValueTooLong",
                        "fieldManager",
                        "Too long: may not be more than 128 bytes",
                    )],
                ));
            }
            Some(m) => m.to_string(),
            None => managed::manager_from_user_agent(req.user_agent.as_deref()),
        };
        Ok(WriteOpts {
            dry_run,
            manager,
            validation: FieldValidation::parse(req.query.get("fieldValidation"))?,
        })
    }

    /// Options for writes the server makes itself.
    pub fn internal(manager: &str) -> WriteOpts {
        WriteOpts {
            dry_run: false,
            manager: manager.to_string(),
            validation: FieldValidation::Ignore,
        }
    }
}

/// The current time as Kubernetes writes timestamps (`2024-01-02T03:04:05Z`).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

pub fn json_response(code: StatusCode, body: impl Into<Bytes>, warnings: &[String]) -> Response {
    let mut resp = (code, body.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn value_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default(), warnings)
}

fn object_response(
    rt: &ResourceType,
    code: StatusCode,
    json: Bytes,
    transform: Option<Transform>,
    warnings: &[String],
) -> Response {
    match transform {
        None => json_response(code, json, warnings),
        Some(t) => {
            let v: Value = serde_json::from_slice(&json).unwrap_or(Value::Null);
            let out = match t {
                Transform::Table(include) => table::table(rt, &[v], json!({}), include, true),
                Transform::Metadata => table::partial_metadata(&v),
            };
            value_response(code, &out, warnings)
        }
    }
}

fn meta_mut(v: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get(key)?.as_str()
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether deleting the object must wait: metadata finalizers, or a
/// namespace's `spec.finalizers`.
fn pending_finalizers(rt: &ResourceType, v: &Value) -> bool {
    !finalizers(v).is_empty()
        || (rt.builtin == Some(Builtin::Namespace)
            && v.pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}

/// The media type of a `Content-Type` header, without parameters.
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// Decodes a protobuf request body: built-in kinds only, as on kube-apiserver,
/// where custom resources are JSON (or YAML) only.
fn decode_protobuf(rt: &ResourceType, body: &[u8]) -> ApiResult<Value> {
    if rt.builtin.is_none() {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {}: {} is a custom resource, which is served in JSON only)",
            protobuf::PROTOBUF,
            rt.group_resource()
        )));
    }
    protobuf::decode(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request could not be decoded as {}: {e}",
            protobuf::PROTOBUF
        ))
    })
}

/// Parses a request body (JSON, YAML for `application/yaml`, or Kubernetes
/// protobuf for the built-in kinds) into an object and checks that it is of
/// this kind.
pub fn decode_body(rt: &ResourceType, body: &[u8], content_type: &str) -> ApiResult<Value> {
    let ct = media_type(content_type);
    let v: Value = match ct {
        protobuf::PROTOBUF => decode_protobuf(rt, body)?,
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|e| ApiError::bad_request(format!("the body is not UTF-8: {e}")))?;
            serde_saphyr::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
            })?
        }
        other => {
            let accepted = if rt.builtin.is_some() {
                "application/json, application/yaml, application/vnd.kubernetes.protobuf"
            } else {
                "application/json, application/yaml"
            };
            return Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted} (got {other})"
            )));
        }
    };
    check_kind(rt, &v, body)?;
    Ok(v)
}

/// Checks `apiVersion` and `kind` of a body against the kind the URL names.
pub fn check_kind(rt: &ResourceType, v: &Value, body: &[u8]) -> ApiResult<()> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: the body is a JSON {}, not an object",
            match v {
                Value::Array(_) => "array",
                Value::String(_) => "string",
                Value::Number(_) => "number",
                Value::Bool(_) => "boolean",
                _ => "null",
            }
        )));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{shown}'"
        )));
    }
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != rt.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            rt.api_version()
        )));
    }
    if kind != rt.kind {
        return Err(ApiError::bad_request(format!(
            "{kind} in version {:?} cannot be handled as a {}: the kind in the data ({kind}) does not match the expected kind ({})",
            rt.version, rt.kind, rt.kind
        )));
    }
    Ok(())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Whether a namespace exists and accepts new objects.
fn admit_namespace(st: &AppState, rt: &ResourceType, ns: &str, name: &str) -> ApiResult<()> {
    if !rt.namespaced {
        return Ok(());
    }
    let ns_rt = st.registry.namespace_type();
    match st.store.get(ns_rt.id, "", ns) {
        None => Err(ApiError::namespace_not_found(ns)),
        Some(n) if n.deleting => Err(ApiError::forbidden(
            rt,
            name,
            &format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Runs the kind's validation (schema and CEL for CRDs, typed decoding for built-ins).
fn validate(
    rt: &ResourceType,
    v: &mut Value,
    old: Option<&Value>,
    mode: FieldValidation,
) -> ApiResult<Vec<String>> {
    if rt.builtin.is_some() {
        validation::validate_builtin(rt, v)
    } else {
        validation::validate_custom(rt, v, old, mode)
    }
}

/// Sets the system fields of a new object.
fn prepare_create(rt: &ResourceType, v: &mut Value, ns: &str) -> ApiResult<bool> {
    let meta = meta_mut(v)?;
    if rt.namespaced {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {
                meta.insert("namespace".into(), json!(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    if meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::internal(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut generated = false;
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty()
        && let Some(prefix) = meta
            .get("generateName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    {
        let name = format!("{}{}", truncate(prefix, 58), random_suffix());
        meta.insert("name".into(), json!(name));
        generated = true;
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    for k in [
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
        "resourceVersion",
        "managedFields",
    ] {
        meta.remove(k);
    }
    if rt.builtin.is_none() {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    let obj = v.as_object_mut().expect("checked above");
    if rt.status_subresource && rt.builtin.is_none() {
        obj.remove("status");
    }
    if rt.builtin == Some(Builtin::Namespace) {
        obj.insert("spec".into(), json!({ "finalizers": ["kubernetes"] }));
        obj.insert("status".into(), json!({ "phase": "Active" }));
    }
    Ok(generated)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn set_name(v: &mut Value, name: &str) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("name".into(), json!(name));
    }
}

/// Creates an object (POST, or server-side apply of a missing object).
/// `managed_done` is true when the caller already recorded field ownership.
pub async fn create_object(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    mut v: Value,
    opts: &WriteOpts,
    managed_done: bool,
) -> ApiResult<(Bytes, Vec<String>)> {
    let kept_managed = if managed_done {
        v.pointer("/metadata/managedFields").cloned()
    } else {
        None
    };
    let generated = prepare_create(rt, &mut v, ns)?;
    let name = meta_str(&v, "name").unwrap_or("").to_string();
    admit_namespace(st, rt, ns, &name)?;
    let warnings = validate(rt, &mut v, None, opts.validation)?;
    let when = now();
    match kept_managed {
        Some(m) => {
            meta_mut(&mut v)?.insert("managedFields".into(), m);
        }
        None => managed::record_update(rt, None, &mut v, &opts.manager, Scope::Main, &when),
    }
    if opts.dry_run {
        return Ok((
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            warnings,
        ));
    }
    for attempt in 0..8 {
        if attempt > 0 {
            let prefix = meta_str(&v, "generateName").unwrap_or("").to_string();
            set_name(
                &mut v,
                &format!("{}{}", truncate(&prefix, 58), random_suffix()),
            );
        }
        match st
            .store
            .write(WriteOp::Put {
                resource: rt.id,
                object: v.clone(),
                precondition: Precondition::MustNotExist,
            })
            .await
        {
            Ok(so) => {
                tracing::debug!(kind = %rt.kind, namespace = ns, name = %so.name, uid = %so.uid, "created");
                return Ok((so.json.clone(), warnings));
            }
            Err(WriteError::AlreadyExists) if generated => continue,
            Err(WriteError::AlreadyExists) => {
                return Err(ApiError::already_exists(
                    rt,
                    meta_str(&v, "name").unwrap_or(""),
                ));
            }
            Err(e) => return Err(write_error(rt, &name, e)),
        }
    }
    Err(ApiError::already_exists(
        rt,
        meta_str(&v, "name").unwrap_or(""),
    ))
}

pub fn write_error(rt: &ResourceType, name: &str, e: WriteError) -> ApiError {
    match e {
        WriteError::AlreadyExists => ApiError::already_exists(rt, name),
        WriteError::NotFound => ApiError::not_found(rt, name),
        WriteError::Conflict => ApiError::stale(rt, name),
        WriteError::Storage(m) => ApiError::internal(m),
        WriteError::Closed => ApiError::unavailable("the server is shutting down"),
    }
}

/// What an update's mutation produced from the current object.
pub struct Mutation {
    pub object: Value,
    /// The resourceVersion the client required (from the body or the patch).
    pub required_rv: Option<String>,
    /// Field ownership already recorded (server-side apply).
    pub managed_done: bool,
}

/// Copies what a client may not change from the stored object into the new one.
fn prepare_update(rt: &ResourceType, old: &Value, new: Value, scope: Scope) -> ApiResult<Value> {
    let managed = new.pointer("/metadata/managedFields").cloned();
    let mut out = match scope {
        Scope::Status => {
            let mut out = old.clone();
            match new.get("status") {
                Some(s) => {
                    out["status"] = s.clone();
                }
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            out
        }
        Scope::Main => {
            let mut out = new;
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut out)?;
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ] {
                match old_meta.get(k) {
                    Some(v) => meta.insert(k.into(), v.clone()),
                    None => meta.remove(k),
                };
            }
            meta.remove("selfLink");
            if old_meta.get("deletionTimestamp").is_some() {
                let before = finalizers(old);
                let added: Vec<String> = finalizers(&out)
                    .into_iter()
                    .filter(|f| !before.contains(f))
                    .collect();
                if !added.is_empty() {
                    return Err(ApiError::invalid(
                        rt,
                        meta_str(old, "name").unwrap_or(""),
                        vec![Cause::new(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            format!(
                                "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                                added
                                    .iter()
                                    .map(|f| format!("{f:?}"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )],
                    ));
                }
            }
            let o = out.as_object_mut().expect("meta_mut checked");
            if rt.status_subresource {
                match old.get("status") {
                    Some(s) => o.insert("status".into(), s.clone()),
                    None => o.remove("status"),
                };
            }
            if rt.builtin == Some(Builtin::Namespace)
                && let Some(f) = old.pointer("/spec/finalizers")
            {
                let spec = o.entry("spec").or_insert_with(|| json!({}));
                if let Some(spec) = spec.as_object_mut() {
                    spec.insert("finalizers".into(), f.clone());
                }
            }
            if rt.builtin.is_none() {
                let differs = |a: &Value, b: &Value| {
                    let strip = |v: &Value| {
                        let mut v = v.clone();
                        if let Some(o) = v.as_object_mut() {
                            o.remove("metadata");
                            if rt.status_subresource {
                                o.remove("status");
                            }
                        }
                        v
                    };
                    strip(a) != strip(b)
                };
                if differs(old, &out) {
                    let g = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    meta_mut(&mut out)?.insert("generation".into(), json!(g + 1));
                }
            }
            out
        }
    };
    let meta = meta_mut(&mut out)?;
    match managed {
        Some(m) => meta.insert("managedFields".into(), m),
        None => meta.remove("managedFields"),
    };
    if let Some(rv) = meta_str(old, "resourceVersion") {
        meta_mut(&mut out)?.insert("resourceVersion".into(), json!(rv));
    }
    Ok(out)
}

/// Equality that ignores `managedFields` timestamps, to skip no-op writes.
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(entries) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in entries {
                if let Some(o) = e.as_object_mut() {
                    o.remove("time");
                }
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// The read-modify-write loop behind update, patch and apply: reads the
/// current object, lets `mutate` produce the new one, and writes it with the
/// read resourceVersion as precondition, retrying when another writer got in
/// first (unless the client asked for a specific resourceVersion).
#[allow(clippy::too_many_arguments)]
pub async fn update_object<F>(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    scope: Scope,
    opts: &WriteOpts,
    allow_create: bool,
    mut mutate: F,
) -> ApiResult<(StatusCode, Bytes, Vec<String>)>
where
    F: FnMut(Option<&Value>) -> ApiResult<Mutation>,
{
    for _ in 0..64 {
        let current = st.store.get(rt.id, ns, name);
        let Some(current) = current else {
            if !allow_create {
                return Err(ApiError::not_found(rt, name));
            }
            let m = mutate(None)?;
            if scope == Scope::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let mut obj = m.object;
            set_name(&mut obj, name);
            match create_object(st, rt, ns, obj, opts, m.managed_done).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
                Ok((json, w)) => return Ok((StatusCode::CREATED, json, w)),
            }
        };
        let old = current.value();
        let m = mutate(Some(&old))?;
        let required = m.required_rv.clone().filter(|s| !s.is_empty());
        if let Some(rv) = &required
            && rv.parse::<u64>().ok() != Some(current.rv)
        {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {rv}"
                )));
            }
            return Err(ApiError::stale(rt, name));
        }
        let mut new = prepare_update(rt, &old, m.object, scope)?;
        let warnings = validate(rt, &mut new, Some(&old), opts.validation)?;
        if !m.managed_done {
            let meta = meta_mut(&mut new)?;
            match old.pointer("/metadata/managedFields") {
                Some(mf) => meta.insert("managedFields".into(), mf.clone()),
                None => meta.remove("managedFields"),
            };
            managed::record_update(rt, Some(&old), &mut new, &opts.manager, scope, &now());
        }
        if same_object(&old, &new) {
            return Ok((StatusCode::OK, current.json.clone(), warnings));
        }
        let finished = current.deleting && !pending_finalizers(rt, &new);
        if opts.dry_run {
            return Ok((
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
                warnings,
            ));
        }
        let op = if finished {
            WriteOp::Delete {
                resource: rt.id,
                key: current.key(),
                precondition: Precondition::Rv(current.rv),
                last_state: Some(new),
            }
        } else {
            WriteOp::Put {
                resource: rt.id,
                object: new,
                precondition: Precondition::Rv(current.rv),
            }
        };
        match st.store.write(op).await {
            Ok(so) => {
                if finished {
                    tracing::debug!(kind = %rt.kind, namespace = ns, name, "last finalizer removed; deleted");
                }
                return Ok((StatusCode::OK, so.json.clone(), warnings));
            }
            Err(WriteError::Conflict) | Err(WriteError::NotFound) if required.is_none() => continue,
            Err(e) => return Err(write_error(rt, name, e)),
        }
    }
    Err(ApiError::conflict(
        rt,
        name,
        "the object is being modified too often; try again",
    ))
}

pub fn get(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    let so = st
        .store
        .get(rt.id, req.ns(), req.name())
        .ok_or_else(|| ApiError::not_found(rt, req.name()))?;
    Ok(object_response(
        rt,
        StatusCode::OK,
        so.json.clone(),
        req.transform(),
        &[],
    ))
}

/// The label and field selectors of a request, checked against the kind.
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn from_query(rt: &ResourceType, q: &Query) -> ApiResult<Selectors> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        for r in &fields.reqs {
            let known = r.field == "metadata.name"
                || r.field == "metadata.namespace"
                || rt.selectable_fields.iter().any(|(l, _)| *l == r.field);
            if !known {
                return Err(ApiError::bad_request(if rt.builtin.is_some() {
                    format!("field label not supported: {}", r.field)
                } else {
                    let mut names: Vec<String> =
                        vec!["metadata.name".into(), "metadata.namespace".into()];
                    names.extend(rt.selectable_fields.iter().map(|(l, _)| l.clone()));
                    format!(
                        "{:?} is not a known field selector: only {}",
                        r.field,
                        names
                            .iter()
                            .map(|n| format!("{n:?}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }));
            }
        }
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, rt: &ResourceType, o: &StoredObject) -> bool {
        self.labels.matches(&o.labels) && self.fields.matches(|f| o.field(rt, f))
    }
}

fn continue_token(rv: u64, key: &ObjectKey) -> String {
    use base64::Engine as _;
    let t = json!({ "v": "meta.k8s.io/v1", "rv": rv, "ns": key.0, "name": key.1 });
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t.to_string())
}

fn parse_continue(token: &str) -> ApiResult<(u64, ObjectKey)> {
    use base64::Engine as _;
    let bad = || ApiError::bad_request("continue key is not valid: the token could not be decoded");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
    let ns = v.get("ns").and_then(Value::as_str).ok_or_else(bad)?;
    let name = v.get("name").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rv, (ns.to_string(), name.to_string())))
}

pub fn read_error(e: ReadError) -> ApiError {
    match e {
        ReadError::Expired { .. } => ApiError::expired(format!(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter. ({e})"
        )),
        ReadError::TooLarge { .. } => {
            let mut err = ApiError::new(504, "Timeout", e.to_string());
            err.details = Some(
                json!({ "causes": [{ "reason": "ResourceVersionTooLarge", "message": "Too large resource version" }], "retryAfterSeconds": 1 }),
            );
            err
        }
    }
}

pub fn list(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    let sel = Selectors::from_query(rt, &req.query)?;
    let limit = match req.query.get("limit") {
        Some(l) => Some(
            l.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
                .max(0) as usize,
        ),
        None => None,
    };
    let (after, at) = match req.query.get("continue") {
        Some(c) => {
            let (rv, key) = parse_continue(c)?;
            (Some(key), Some(rv))
        }
        None => {
            let at = match (
                req.query.get("resourceVersion"),
                req.query.get("resourceVersionMatch"),
            ) {
                (Some(rv), Some("Exact")) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version: {rv}"))
                })?),
                (Some(rv), _) if rv != "0" => {
                    let n = rv.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!("invalid resource version: {rv}"))
                    })?;
                    let cur = st.store.current_rv();
                    if n > cur {
                        return Err(read_error(ReadError::TooLarge {
                            requested: n,
                            current: cur,
                        }));
                    }
                    None
                }
                _ => None,
            };
            (None, at)
        }
    };
    let ns = if rt.namespaced {
        req.namespace.as_deref()
    } else {
        None
    };
    let result = st
        .store
        .list(
            rt.id,
            ns,
            &|o| sel.matches(rt, o),
            limit,
            after.as_ref(),
            at,
        )
        .map_err(read_error)?;
    let mut list_meta = json!({ "resourceVersion": result.rv.to_string() });
    if let Some(next) = &result.next {
        list_meta["continue"] = json!(continue_token(result.rv, next));
        list_meta["remainingItemCount"] = json!(result.remaining);
    }
    match req.transform() {
        Some(Transform::Table(include)) => {
            let objects: Vec<Value> = result.items.iter().map(|o| o.value()).collect();
            Ok(value_response(
                StatusCode::OK,
                &table::table(rt, &objects, list_meta, include, true),
                &[],
            ))
        }
        Some(Transform::Metadata) => {
            let items: Vec<Value> = result
                .items
                .iter()
                .map(|o| table::partial_metadata(&o.value()))
                .collect();
            Ok(value_response(
                StatusCode::OK,
                &json!({ "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items }),
                &[],
            ))
        }
        None => {
            // Assemble the list from the stored bytes: no re-serialization of items.
            let head = json!({ "kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": list_meta });
            let mut out = serde_json::to_vec(&head).unwrap_or_default();
            out.pop();
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in result.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            Ok(json_response(StatusCode::OK, out, &[]))
        }
    }
}

pub async fn create(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    if req.status {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = WriteOpts::from_request(req, "CreateOptions")?;
    let v = decode_body(rt, &req.body, &req.content_type)?;
    let (json, warnings) = create_object(st, rt, req.ns(), v, &opts, false).await?;
    Ok(object_response(
        rt,
        StatusCode::CREATED,
        json,
        req.transform(),
        &warnings,
    ))
}

pub async fn update(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    let opts = WriteOpts::from_request(req, "UpdateOptions")?;
    let body = decode_body(rt, &req.body, &req.content_type)?;
    let name = req.name();
    match meta_str(&body, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    if rt.namespaced
        && let Some(n) = meta_str(&body, "namespace").filter(|n| !n.is_empty())
        && n != req.ns()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let required = meta_str(&body, "resourceVersion").map(str::to_string);
    if rt.builtin.is_none() && required.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![Cause::new(
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )],
        ));
    }
    let (code, json, warnings) =
        update_object(st, rt, req.ns(), name, req.scope(), &opts, false, |_| {
            Ok(Mutation {
                object: body.clone(),
                required_rv: required.clone(),
                managed_done: false,
            })
        })
        .await?;
    Ok(object_response(rt, code, json, req.transform(), &warnings))
}

pub async fn patch(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    let opts = WriteOpts::from_request(req, "PatchOptions")?;
    let kind = patch::PatchKind::from_content_type(rt, &req.content_type)?;
    let force = req.query.flag("force");
    if kind == patch::PatchKind::Apply {
        // kube-apiserver's ValidatePatchOptions: 422 Invalid, not 400.
        if req.query.get("fieldManager").is_none() {
            return Err(ApiError::invalid_patch_options(Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )));
        }
    } else if force {
        return Err(ApiError::invalid_patch_options(Cause::new(
            "FieldValueForbidden",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        )));
    }
    let parsed = patch::parse(rt, kind, &req.body)?;
    let name = req.name().to_string();
    let now_ts = now();
    let scope = req.scope();
    let (code, json, warnings) = update_object(
        st,
        rt,
        req.ns(),
        &name,
        scope,
        &opts,
        kind == patch::PatchKind::Apply,
        |current| {
            patch::apply_patch(
                rt,
                &parsed,
                current,
                &name,
                &opts.manager,
                force,
                scope,
                &now_ts,
            )
        },
    )
    .await?;
    Ok(object_response(rt, code, json, req.transform(), &warnings))
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub fn from_request(rt: &ResourceType, req: &ResourceRequest) -> ApiResult<DeleteOpts> {
        let mut o = DeleteOpts {
            dry_run: WriteOpts::from_request(req, "DeleteOptions")?.dry_run,
            ..Default::default()
        };
        if !req.body.is_empty() {
            let v: Value = if media_type(&req.content_type) == protobuf::PROTOBUF {
                let v = decode_protobuf(rt, &req.body)?;
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
                if kind != "DeleteOptions" {
                    return Err(ApiError::bad_request(format!(
                        "the body of a delete request must be DeleteOptions, not {kind}"
                    )));
                }
                v
            } else {
                serde_json::from_slice(&req.body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "couldn't get version/kind; json parse error: {e}"
                    ))
                })?
            };
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= d.iter().any(|x| x == "All");
            }
        }
        Ok(o)
    }
}

/// Deletes one object: marks it with `deletionTimestamp` when finalizers
/// hold it, removes it otherwise. Returns the object as the response shows it.
pub async fn delete_object(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<Arc<StoredObject>> {
    for _ in 0..64 {
        let current = st
            .store
            .get(rt.id, ns, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &opts.uid
            && *uid != current.uid
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.uid
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && rv.parse::<u64>().ok() != Some(current.rv)
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.rv
                ),
            ));
        }
        let mut v = current.value();
        let op = if pending_finalizers(rt, &v) {
            if current.deleting {
                return Ok(current);
            }
            let meta = meta_mut(&mut v)?;
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            // As kube-apiserver's BeforeDelete: an object that tracks its
            // generation gets a new one when its deletion starts, so
            // controllers that filter on generation changes see it.
            if let Some(g) = meta
                .get("generation")
                .and_then(Value::as_i64)
                .filter(|g| *g > 0)
            {
                meta.insert("generation".into(), json!(g + 1));
            }
            if rt.builtin == Some(Builtin::Namespace) {
                v["status"] = json!({ "phase": "Terminating" });
            }
            if opts.dry_run {
                let json = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                return Ok(Arc::new(StoredObject::new(rt, &v, json)));
            }
            WriteOp::Put {
                resource: rt.id,
                object: v,
                precondition: Precondition::Rv(current.rv),
            }
        } else {
            if opts.dry_run {
                return Ok(current);
            }
            WriteOp::Delete {
                resource: rt.id,
                key: current.key(),
                precondition: Precondition::Rv(current.rv),
                last_state: None,
            }
        };
        match st.store.write(op).await {
            Ok(so) => return Ok(so),
            Err(WriteError::Conflict) if opts.rv.is_none() => continue,
            Err(WriteError::NotFound) => return Err(ApiError::not_found(rt, name)),
            Err(e) => return Err(write_error(rt, name, e)),
        }
    }
    Err(ApiError::conflict(
        rt,
        name,
        "the object is being modified too often; try again",
    ))
}

pub async fn delete(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    if req.status {
        return Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let opts = DeleteOpts::from_request(rt, req)?;
    let so = delete_object(st, rt, req.ns(), req.name(), &opts).await?;
    Ok(json_response(StatusCode::OK, so.json.clone(), &[]))
}

pub async fn delete_collection(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.rt_id);
    let sel = Selectors::from_query(rt, &req.query)?;
    let opts = DeleteOpts::from_request(rt, req)?;
    let ns = if rt.namespaced {
        req.namespace.as_deref()
    } else {
        None
    };
    let result = st
        .store
        .list(rt.id, ns, &|o| sel.matches(rt, o), None, None, None)
        .map_err(read_error)?;
    let mut items = Vec::new();
    for o in result.items {
        match delete_object(st, rt, &o.namespace, &o.name, &opts).await {
            Ok(so) => items.push(so.value()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": rt.list_kind,
        "apiVersion": rt.api_version(),
        "metadata": { "resourceVersion": st.store.current_rv().to_string() },
        "items": items,
    });
    Ok(value_response(StatusCode::OK, &list, &[]))
}
