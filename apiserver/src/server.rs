//! HTTP: routing of Kubernetes API paths (health, version, discovery,
//! OpenAPI, resources), bearer-token authentication and body limits. A
//! resource request is parsed ([`crate::request`]) and handed to its verb
//! ([`crate::handlers`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::auth::{self, User};
use crate::discovery;
use crate::handlers;
use crate::request::negotiate::{Output, negotiate};
use crate::request::query::Query;
use crate::request::target::{ResourceRequest, Target};
use crate::response::{json_response, protobuf_response, value_response};
use crate::state::AppState;
use crate::status::{ApiError, ApiResult};

/// The router: every request goes through [`handle`].
pub fn app(state: Arc<AppState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = match route(st, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

fn text(s: &'static str) -> Response {
    let mut r = (StatusCode::OK, s).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_value(v: &Value) -> Response {
    value_response(StatusCode::OK, v, &[])
}

fn only_get(method: &Method) -> ApiResult<()> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed_here())
    }
}

async fn read_body(st: &AppState, req: Request) -> ApiResult<Bytes> {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > st.max_body);
    if too_big {
        return Err(ApiError::too_large(st.max_body));
    }
    axum::body::to_bytes(req.into_body(), st.max_body)
        .await
        .map_err(|_| ApiError::too_large(st.max_body))
}

fn discovery_response(st: &AppState, accept: Option<&str>, core: bool) -> Response {
    match discovery::wants_aggregated(accept) {
        Some(v) => {
            let (api_version, ct) = if v == "v2beta1" {
                ("apidiscovery.k8s.io/v2beta1", discovery::AGGREGATED_V2BETA1)
            } else {
                ("apidiscovery.k8s.io/v2", discovery::AGGREGATED_V2)
            };
            let doc = discovery::aggregated(&st.registry, core, api_version);
            let mut r = json_value(&doc);
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept"));
            r
        }
        None => {
            let doc = if core {
                discovery::core_versions(&st.server_address)
            } else {
                discovery::group_list(&st.registry)
            };
            let mut r = json_value(&doc);
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept"));
            r
        }
    }
}

async fn route(st: Arc<AppState>, req: Request) -> ApiResult<Response> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" => return Ok(text("ok")),
        "/version" | "/version/" => return Ok(json_value(&discovery::version())),
        _ => {}
    }
    let uri = req.uri().to_string();
    let user = auth::authenticate(&st.auth, &st.store, req.headers())?;
    let user = auth::impersonate(&st.auth, &st.store, user, req.headers(), &uri)?;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let is_resource = matches!(s.as_slice(), ["api", _, _, ..] | ["apis", _, _, _, ..]);
    if !is_resource {
        let verb = if method == Method::GET || method == Method::HEAD {
            "get".to_string()
        } else {
            method.as_str().to_lowercase()
        };
        auth::authorize(
            &st.auth,
            &st.store,
            &user,
            &auth::rbac::Attributes::non_resource(&verb, &path),
            &uri,
        )?;
    }
    match s.as_slice() {
        ["api"] => {
            only_get(&method)?;
            Ok(discovery_response(&st, accept.as_deref(), true))
        }
        ["apis"] => {
            only_get(&method)?;
            Ok(discovery_response(&st, accept.as_deref(), false))
        }
        ["api", version] => {
            only_get(&method)?;
            discovery::resource_list(&st.registry, "", version)
                .map(|d| json_value(&d))
                .ok_or_else(ApiError::path_not_found)
        }
        ["apis", group] => {
            only_get(&method)?;
            discovery::group(&st.registry, group)
                .map(|d| json_value(&d))
                .ok_or_else(ApiError::path_not_found)
        }
        ["apis", group, version] => {
            only_get(&method)?;
            discovery::resource_list(&st.registry, group, version)
                .map(|d| json_value(&d))
                .ok_or_else(ApiError::path_not_found)
        }
        ["openapi", "v3"] => {
            only_get(&method)?;
            Ok(json_value(&st.openapi.index()))
        }
        ["openapi", "v3", rest @ ..] => {
            only_get(&method)?;
            let key = rest.join("/");
            let (hash, doc) = st
                .openapi
                .documents
                .get(&key)
                .ok_or_else(ApiError::path_not_found)?;
            let mut r = json_response(StatusCode::OK, doc.clone(), &[]);
            if let Ok(v) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                r.headers_mut().insert(header::ETAG, v);
            }
            Ok(r)
        }
        [
            "api",
            "v1",
            "namespaces",
            ns,
            "serviceaccounts",
            name,
            "token",
        ] => token_request(&st, &user, ns, name, &uri, req).await,
        ["api", version, rest @ ..] => resource(st, &user, "", version, rest, req).await,
        ["apis", group, version, rest @ ..] => resource(st, &user, group, version, rest, req).await,
        _ => Err(ApiError::path_not_found()),
    }
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`: a
/// TokenRequest (verb `create` on `serviceaccounts/token`).
async fn token_request(
    st: &AppState,
    user: &User,
    ns: &str,
    name: &str,
    uri: &str,
    req: Request,
) -> ApiResult<Response> {
    let a = auth::rbac::Attributes::resource(
        &method_verb(req.method()),
        "",
        "serviceaccounts",
        "token",
        ns,
        name,
    );
    auth::authorize(&st.auth, &st.store, user, &a, uri)?;
    if req.method() != Method::POST {
        return Err(ApiError::method_not_allowed_here());
    }
    let (accept, content_type) = {
        let header = |h: header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        (header(header::ACCEPT), header(header::CONTENT_TYPE))
    };
    // kubectl sends and reads a TokenRequest in protobuf.
    let (chosen, _) = negotiate(Some(&accept).filter(|a| !a.is_empty()).map(String::as_str), true)
        .ok_or_else(|| {
            ApiError::not_acceptable(
                "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf",
            )
        })?;
    let body = read_body(st, req).await?;
    let answer = (|| {
        let v = match crate::request::body::media_type(&content_type) {
            crate::protobuf::PROTOBUF => crate::protobuf::decode(&body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body of the request could not be decoded as {}: {e}",
                    crate::protobuf::PROTOBUF
                ))
            })?,
            _ => serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?,
        };
        let answer = auth::review::token_request(&st.auth, &st.store, &st.registry, ns, name, v)?;
        Ok(value_response(StatusCode::CREATED, &answer, &[]))
    })();
    match chosen {
        Output::Json => answer,
        Output::Protobuf => Ok(protobuf_response(answer).await),
    }
}

/// The verb of a request on a subresource that only takes `create`.
fn method_verb(method: &Method) -> String {
    if *method == Method::POST {
        "create".into()
    } else {
        method.as_str().to_lowercase()
    }
}

async fn resource(
    st: Arc<AppState>,
    user: &User,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request,
) -> ApiResult<Response> {
    let mut output = Output::Json;
    let result = resource_json(st, user, group, version, rest, req, &mut output).await;
    match output {
        Output::Json => result,
        Output::Protobuf => Ok(protobuf_response(result).await),
    }
}

/// Serves a request on a resource; sets `output` to the negotiated media
/// type of the answer, which it writes in JSON except for a watch's frames.
async fn resource_json(
    st: Arc<AppState>,
    user: &User,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request,
    output: &mut Output,
) -> ApiResult<Response> {
    let target = Target::parse(&st.registry, group, version, rest)?;
    let method = req.method().clone();
    let query = Query::parse(req.uri().query());
    let attributes = auth::resource_attributes(&st.registry, &method, &target, &query);
    auth::authorize(
        &st.auth,
        &st.store,
        user,
        &attributes,
        &req.uri().to_string(),
    )?;
    let builtin = st.registry.get(target.rt_id).protobuf();
    let (accept, content_type, user_agent) = {
        let header = |h: header::HeaderName| {
            req.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        (
            header(header::ACCEPT),
            header(header::CONTENT_TYPE).unwrap_or_default(),
            header(header::USER_AGENT),
        )
    };
    let (chosen, range) = negotiate(accept.as_deref(), builtin).ok_or_else(|| {
        ApiError::not_acceptable(if builtin {
            "only the following media types are accepted: application/json, application/vnd.kubernetes.protobuf"
        } else {
            "only the following media types are accepted: application/json"
        })
    })?;
    *output = chosen;
    // What a JSON answer may be converted to (`;as=Table`) is read from the chosen range.
    let accept = (chosen == Output::Json).then_some(range);
    let body = if matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        read_body(&st, req).await?
    } else {
        Bytes::new()
    };
    let rt = st.registry.get(target.rt_id);
    if rt.builtin.is_some_and(crate::registry::Builtin::is_review) {
        // A review is answered, never stored.
        if method != Method::POST || target.name.is_some() {
            return Err(ApiError::method_not_allowed_here());
        }
        let v = crate::request::body::decode_body(rt, &body, &content_type)?;
        let answer = auth::review::answer(&st.auth, &st.store, rt, user, v)?;
        return Ok(value_response(StatusCode::CREATED, &answer, &[]));
    }
    let rr = ResourceRequest {
        target,
        query,
        body,
        content_type,
        accept,
        user_agent,
        protobuf: chosen == Output::Protobuf,
    };
    handlers::dispatch(st.clone(), method, rr).await
}
