//! Per-request plumbing: the request id, the request log (with tokens redacted),
//! turning bare error responses into problems, and the extractors that reject
//! bad input with the same problem shape (JSON bodies, query strings, client IP).

use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;

use crate::context::{RequestContext, X_REQUEST_ID};
use crate::error::{ApiError, FieldError, PROBLEM_JSON, Problem};
use crate::state::AppState;

/// Routes whose requests are not logged at info level: probes and Caddy's per-request auth.
fn is_quiet(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/api/v2/auth/session-proxy")
}

/// The outermost middleware: request id, request log, problem rendering of bare errors.
pub async fn request_context(req: Request, next: Next) -> Response {
    let ctx = RequestContext::for_request(req.headers(), req.uri().path());
    let method = req.method().clone();
    let quiet = is_quiet(req.uri().path());
    let logged_uri = if quiet {
        String::new()
    } else {
        redact_uri(req.uri())
    };
    let started = Instant::now();

    let mut response = ctx.clone().scope(next.run(req)).await;

    let status = response.status();
    if (status.is_client_error() || status.is_server_error()) && !is_problem(&response) {
        // A response axum made on its own (405, a rejection we did not wrap): same shape as ours.
        let mut problem = Problem::for_status(status).into_response_with(&ctx);
        for name in [header::ALLOW, header::RETRY_AFTER] {
            if let Some(value) = response.headers().get(&name) {
                problem.headers_mut().insert(name, value.clone());
            }
        }
        response = problem;
    }
    if let Ok(value) = HeaderValue::from_str(&ctx.id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    if !quiet {
        tracing::info!(
            request_id = %ctx.id,
            method = %method,
            uri = %logged_uri,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
    response
}

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// The URI as logged: the values of query parameters that carry secrets become `***`.
pub fn redact_uri(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_owned();
    };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let (key, _) = pair.split_once('=').unwrap_or((pair, ""));
            let lower = key.to_ascii_lowercase();
            if lower.contains("token") || lower.contains("password") || lower.contains("secret") {
                format!("{key}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

/// A JSON body that is rejected as a problem: 415 without a JSON content type, 413
/// past the body limit, 400 when it is not JSON, 422 naming the field when it does
/// not fit the expected shape.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = body_bytes(req, state).await?;
        parse_json(&bytes).map(Json)
    }
}

/// Like [`Json`], but an empty body (with any content type) means `T::default()`.
#[derive(Debug)]
pub struct JsonOrEmpty<T>(pub T);

impl<S, T> FromRequest<S> for JsonOrEmpty<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = has_json_content_type(req.headers());
        let bytes = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Ok(JsonOrEmpty(T::default()));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        parse_json(&bytes).map(JsonOrEmpty)
    }
}

async fn body_bytes<S: Send + Sync>(req: Request<Body>, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::MalformedJson("the body could not be read".into())
        }
    })
}

fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses a JSON body, which must be an object, naming the offending field in a
/// 422 when the shape is wrong (400 when it is not JSON at all).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(strip_position(&e.to_string())))?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(path_error)
}

/// A 422 naming the field serde_path_to_error found at fault.
fn path_error<E: std::fmt::Display>(err: serde_path_to_error::Error<E>) -> ApiError {
    let path = err.path().to_string();
    let message = err.into_inner().to_string();
    ApiError::Validation(vec![field_error(&path, &message)])
}

/// Turns serde's message into a field error, pointing at the missing or unknown field itself.
fn field_error(path: &str, message: &str) -> FieldError {
    let message = strip_position(message);
    let named = ["missing field `", "unknown field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let field = match (named, path) {
        (Some(name), "." | "") => name.to_owned(),
        // serde_path_to_error already ends the path with an unknown field's name.
        (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
            path.to_owned()
        }
        (Some(name), parent) => format!("{parent}.{name}"),
        (None, "." | "") => "body".to_owned(),
        (None, path) => path.to_owned(),
    };
    FieldError::new(field, message)
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string that is rejected as a 422 naming the parameter.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded_parse(query));
        serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(path_error)
    }
}

fn form_urlencoded_parse(query: &str) -> form_urlencoded::Parse<'_> {
    form_urlencoded::parse(query.as_bytes())
}

/// A path parameter with the rule it must follow.
pub trait PathParam: Send + Sync + 'static {
    /// Its name in the route (`{node}`).
    const NAME: &'static str;
    /// What it must look like.
    const RULE: crate::validate::Rule;
    /// One line for the OpenAPI document.
    const DESCRIPTION: &'static str;
}

/// The name of a GpuNode (a Kubernetes object name).
pub struct NodeName;
impl PathParam for NodeName {
    const NAME: &'static str = "node";
    const RULE: crate::validate::Rule = crate::validate::KUBE_NAME;
    const DESCRIPTION: &'static str = "The GpuNode's name";
}

/// A GPU of a node, by index or UUID.
pub struct GpuRef;
impl PathParam for GpuRef {
    const NAME: &'static str = "gpu";
    const RULE: crate::validate::Rule = crate::validate::GPU_REF;
    const DESCRIPTION: &'static str = "The GPU's index on the node, or its UUID";
}

/// A session id (the Session's name).
pub struct SessionId;
impl PathParam for SessionId {
    const NAME: &'static str = "id";
    const RULE: crate::validate::Rule = crate::validate::KUBE_NAME;
    const DESCRIPTION: &'static str = "The session's id (`data.session.id` of create)";
}

/// A snapshot id (the WorkspaceSnapshot's name).
pub struct SnapshotId;
impl PathParam for SnapshotId {
    const NAME: &'static str = "id";
    const RULE: crate::validate::Rule = crate::validate::KUBE_NAME;
    const DESCRIPTION: &'static str = "The snapshot's id (`data.snapshot.id` of a manual snapshot, or an id of a session's `snapshots`)";
}

/// An invite id.
pub struct InviteId;
impl PathParam for InviteId {
    const NAME: &'static str = "id";
    const RULE: crate::validate::Rule = crate::validate::LOG_ID;
    const DESCRIPTION: &'static str = "The invite's id (`data.invite.id` of create)";
}

/// A Pack's name (one a create body can give).
pub struct PackName;
impl PathParam for PackName {
    const NAME: &'static str = "name";
    const RULE: crate::validate::Rule = crate::validate::PACK_NAME;
    const DESCRIPTION: &'static str = "The Pack's name (what a create body's `pack` names)";
}

/// A user id.
pub struct UserId;
impl PathParam for UserId {
    const NAME: &'static str = "id";
    const RULE: crate::validate::Rule = crate::validate::USER_ID;
    const DESCRIPTION: &'static str = "The user's id";
}

/// A path parameter checked against its rule before the handler runs: a value
/// that cannot be one (`é` as a node name) is a 404 whose `errors[]` names the
/// parameter and what it must look like, and never reaches the control plane
/// or the database.
#[derive(Debug)]
pub struct Param<P> {
    /// The value, percent-decoded.
    pub value: String,
    _rule: PhantomData<P>,
}

impl<P> Param<P> {
    /// The value.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl<S, P> FromRequestParts<S> for Param<P>
where
    S: Send + Sync,
    P: PathParam,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidPathParam(P::RULE.error(P::NAME)))?;
        let value = raw
            .iter()
            .find(|(name, _)| *name == P::NAME)
            .map(|(_, value)| value.to_owned())
            .ok_or_else(|| ApiError::internal(format!("the route has no {{{}}}", P::NAME)))?;
        P::RULE
            .check(P::NAME, &value)
            .map_err(ApiError::InvalidPathParam)?;
        Ok(Param {
            value,
            _rule: PhantomData,
        })
    }
}

/// The client's address: the peer, or the nearest untrusted hop of
/// `X-Forwarded-For` when the peer is a trusted proxy (Caddy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(ClientIp(client_ip(
            peer,
            &parts.headers,
            &state.config().trusted_proxies,
        )))
    }
}

/// Walks `X-Forwarded-For` from the right while the hops are trusted proxies.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|hop| !trusted.contains(hop))
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_token_values_in_query() {
        let uri: Uri = "/api/v2/events?token=abc.def&x=1&access_token=zz"
            .parse()
            .unwrap();
        assert_eq!(
            redact_uri(&uri),
            "/api/v2/events?token=***&x=1&access_token=***"
        );
        let plain: Uri = "/api/v2/me".parse().unwrap();
        assert_eq!(redact_uri(&plain), "/api/v2/me");
    }

    #[test]
    fn field_errors_name_missing_and_nested_fields() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            cpu: String,
        }
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            email: String,
            inner: Option<Inner>,
        }
        let missing = parse_json::<Body>(br#"{}"#).unwrap_err();
        assert!(
            matches!(&missing, ApiError::Validation(e) if e[0].field == "email"),
            "{missing:?}"
        );
        let nested = parse_json::<Body>(br#"{"email":"a","inner":{"cpu":3}}"#).unwrap_err();
        assert!(
            matches!(&nested, ApiError::Validation(e) if e[0].field == "inner.cpu"),
            "{nested:?}"
        );
        let unknown = parse_json::<Body>(br#"{"email":"a","bogus":1}"#).unwrap_err();
        assert!(
            matches!(&unknown, ApiError::Validation(e) if e[0].field == "bogus"),
            "{unknown:?}"
        );
        let broken = parse_json::<Body>(br#"{"email":"#).unwrap_err();
        assert!(matches!(broken, ApiError::MalformedJson(_)));
        let trailing = parse_json::<Body>(br#"{"email":"a"} x"#).unwrap_err();
        assert!(matches!(trailing, ApiError::MalformedJson(_)));
    }

    #[test]
    fn forwarded_for_is_trusted_only_from_trusted_peers() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 10.0.0.1".parse().unwrap());
        let trusted = vec![proxy, "10.0.0.1".parse().unwrap()];
        assert_eq!(
            client_ip(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &trusted), stranger);
    }
}
