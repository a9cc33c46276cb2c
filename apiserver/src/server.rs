//! HTTP: routing of Kubernetes API paths (health, version, discovery,
//! OpenAPI, resources), bearer-token authentication and body limits. A
//! resource request is parsed ([`crate::request`]) and handed to its verb
//! ([`crate::handlers`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use headers::authorization::Bearer;
use headers::{Authorization, HeaderMapExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;
use subtle::ConstantTimeEq;

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

/// Lets the request through when it carries the server's bearer token
/// (`Authorization: Bearer …`, the scheme in any case), compared in constant time.
fn authenticate(token: &str, headers: &HeaderMap) -> ApiResult<()> {
    let presented = headers.typed_get::<Authorization<Bearer>>();
    match presented {
        Some(auth) if bool::from(auth.token().as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
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
    authenticate(&st.token, req.headers())?;
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
        ["api", version, rest @ ..] => resource(st, "", version, rest, req).await,
        ["apis", group, version, rest @ ..] => resource(st, group, version, rest, req).await,
        _ => Err(ApiError::path_not_found()),
    }
}

async fn resource(
    st: Arc<AppState>,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request,
) -> ApiResult<Response> {
    let mut output = Output::Json;
    let result = resource_json(st, group, version, rest, req, &mut output).await;
    match output {
        Output::Json => result,
        Output::Protobuf => Ok(protobuf_response(result).await),
    }
}

/// Serves a request on a resource; sets `output` to the negotiated media
/// type of the answer, which it writes in JSON except for a watch's frames.
async fn resource_json(
    st: Arc<AppState>,
    group: &str,
    version: &str,
    rest: &[&str],
    req: Request,
    output: &mut Output,
) -> ApiResult<Response> {
    let target = Target::parse(&st.registry, group, version, rest)?;
    let builtin = st.registry.get(target.rt_id).builtin.is_some();
    let method = req.method().clone();
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
    let query = Query::parse(req.uri().query());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_servers_bearer_token_gets_in() {
        let token = "s3cret-token";
        for (authorization, lets_in) in [
            ("Bearer s3cret-token", true),
            ("bearer s3cret-token", true),
            ("BEARER s3cret-token", true),
            ("Bearer s3cret-toke", false),
            ("Bearer s3cret-token2", false),
            ("Bearer ", false),
            ("Basic s3cret-token", false),
            ("s3cret-token", false),
            ("Bearers3cret-token", false),
        ] {
            let answer = authenticate(token, &with_authorization(authorization));
            assert_eq!(answer.is_ok(), lets_in, "{authorization}");
        }
        assert!(authenticate(token, &HeaderMap::new()).is_err(), "no header");
    }
}
