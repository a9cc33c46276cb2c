//! HTTP: routing of Kubernetes API paths, bearer-token authentication, body
//! limits, and the TLS listener (HTTP/2 and HTTP/1.1 over rustls).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::discovery;
use crate::openapi::OpenApi;
use crate::protobuf;
use crate::registry::Registry;
use crate::resources::{self, Query, ResourceRequest, json_response};
use crate::status::{ApiError, ApiResult};
use crate::store::Store;
use crate::watch;

/// Everything a request handler needs.
pub struct AppState {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub token: String,
    pub openapi: OpenApi,
    pub max_body: usize,
    pub bookmark_interval: Duration,
    pub shutdown: CancellationToken,
    pub server_address: String,
}

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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authenticate(st: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), st.token.as_bytes()) => Ok(()),
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
    json_response(
        StatusCode::OK,
        serde_json::to_vec(v).unwrap_or_default(),
        &[],
    )
}

fn only_get(method: &Method) -> ApiResult<()> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ))
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
    authenticate(&st, req.headers())?;
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
    let reg = &st.registry;
    let (watch_prefix, rest) = match rest.split_first() {
        Some((&"watch", r)) => (true, r),
        _ => (false, rest),
    };
    let namespaced_form = rest.len() >= 3
        && rest[0] == "namespaces"
        && reg
            .lookup(group, version, rest[2])
            .is_some_and(|t| t.namespaced);
    let (namespace, parts) = if namespaced_form {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if parts.is_empty() || parts.len() > 3 {
        return Err(ApiError::path_not_found());
    }
    let rt = reg
        .lookup(group, version, parts[0])
        .ok_or_else(ApiError::path_not_found)?;
    let name = parts.get(1).map(|s| s.to_string());
    let status = match parts.get(2) {
        None => false,
        Some(&"status") if rt.status_subresource => true,
        Some(_) => return Err(ApiError::path_not_found()),
    };
    if rt.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::path_not_found());
    }
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
    let builtin = rt.builtin.is_some();
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
        rt_id: rt.id,
        namespace,
        name: name.clone(),
        status,
        query,
        body,
        content_type,
        accept,
        user_agent,
        protobuf: chosen == Output::Protobuf,
    };
    let collection_namespaced_all = rt.namespaced && rr.namespace.is_none();
    match (method, name.is_some()) {
        (Method::GET, false) => {
            if watch_prefix || rr.query.flag("watch") {
                watch::watch(st.clone(), &rr, None)
            } else {
                resources::list(&st, &rr)
            }
        }
        (Method::GET, true) => {
            if watch_prefix {
                watch::watch(st.clone(), &rr, name)
            } else {
                resources::get(&st, &rr)
            }
        }
        (Method::POST, false) if !collection_namespaced_all => resources::create(&st, &rr).await,
        (Method::PUT, true) => resources::update(&st, &rr).await,
        (Method::PATCH, true) => resources::patch(&st, &rr).await,
        (Method::DELETE, true) => resources::delete(&st, &rr).await,
        (Method::DELETE, false) if !collection_namespaced_all => {
            resources::delete_collection(&st, &rr).await
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The media type of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Protobuf,
}

/// Chooses the media type of the answer as kube-apiserver does: the media
/// ranges of `Accept` in the client's order of preference (by `q`, then as
/// listed; `q=0` is not acceptable), the first one this server can write for
/// the kind. JSON for `application/json`, `application/*` and `*/*` (with the
/// `;as=Table` and `;as=PartialObjectMetadata` conversions, JSON only here);
/// protobuf for a plain object, list or Status of a built-in kind. Returns
/// the chosen range, or `None` when nothing acceptable can be written.
fn negotiate(accept: Option<&str>, builtin: bool) -> Option<(Output, String)> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some((Output::Json, String::new()));
    };
    let mut ranges: Vec<(f32, &str)> = accept
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .filter_map(|r| {
            let q = r
                .split(';')
                .skip(1)
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok())?;
            (q > 0.0).then_some((q, r))
        })
        .collect();
    // A stable sort: equal preferences keep the client's order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranges.into_iter().find_map(|(_, range)| {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let converts = parts.any(|p| p.trim().starts_with("as="));
        match media.as_str() {
            "application/json" | "application/*" | "*/*" => Some((Output::Json, range.to_string())),
            protobuf::PROTOBUF if builtin && !converts => {
                Some((Output::Protobuf, range.to_string()))
            }
            _ => None,
        }
    })
}

/// Rewrites a finished JSON answer (an object, a list, or an error Status) in
/// protobuf; a watch, which streams protobuf frames already, passes as it is.
async fn protobuf_response(result: ApiResult<Response>) -> Response {
    let resp = match result {
        Ok(r) => r,
        Err(e) => return protobuf_status(&e),
    };
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let encoded = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|v| protobuf::encode(&v)),
        Err(e) => Err(e.to_string()),
    };
    match encoded {
        Ok(bytes) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(protobuf::PROTOBUF),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, axum::body::Body::from(bytes))
        }
        Err(e) => {
            tracing::warn!(error = %e, "an answer could not be encoded as protobuf");
            protobuf_status(&ApiError::internal(format!(
                "the answer could not be encoded as protobuf: {e}"
            )))
        }
    }
}

/// An error as a protobuf `Status`, with the error's HTTP code and headers.
fn protobuf_status(e: &ApiError) -> Response {
    let mut resp = e.clone().into_response();
    // A Status always encodes; were it not to, the JSON one would still tell.
    if let Ok(bytes) = protobuf::encode(&e.to_status()) {
        *resp.body_mut() = axum::body::Body::from(bytes);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(protobuf::PROTOBUF),
        );
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    resp
}

/// Accepts TLS connections until `shutdown`, serving each with hyper (HTTP/2
/// or HTTP/1.1 by ALPN); on shutdown, open connections get a short grace period.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let service = TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn.as_mut()).await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), tracker.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(accept: Option<&str>, builtin: bool) -> Option<(Output, String)> {
        negotiate(accept, builtin)
    }

    #[test]
    fn negotiation_follows_the_clients_preferences() {
        const PB: &str = "application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(None, true), Some((Output::Json, String::new())));
        assert_eq!(chosen(Some(""), false), Some((Output::Json, String::new())));
        assert_eq!(chosen(Some(PB), true), Some((Output::Protobuf, PB.into())));
        // Custom resources are JSON only.
        assert_eq!(chosen(Some(PB), false), None);
        let both = "application/vnd.kubernetes.protobuf, application/json";
        assert_eq!(chosen(Some(both), true).unwrap().0, Output::Protobuf);
        assert_eq!(chosen(Some(both), false).unwrap().0, Output::Json);
        let json_first = "application/json, application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(Some(json_first), true).unwrap().0, Output::Json);
        // q orders the ranges; q=0 rules one out.
        let q = "application/json;q=0.5, application/vnd.kubernetes.protobuf";
        assert_eq!(chosen(Some(q), true).unwrap().0, Output::Protobuf);
        let q0 = "application/vnd.kubernetes.protobuf;q=0, */*;q=0.1";
        assert_eq!(chosen(Some(q0), true).unwrap().0, Output::Json);
        assert_eq!(chosen(Some("application/json;q=0"), true), None);
        assert_eq!(chosen(Some("text/html"), true), None);
        assert_eq!(chosen(Some("application/*"), true).unwrap().0, Output::Json);
        // Tables are JSON only: the protobuf Table range is passed over.
        let table = "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, \
                     application/json;as=Table;v=v1;g=meta.k8s.io, application/json";
        assert_eq!(
            chosen(Some(table), true),
            Some((
                Output::Json,
                "application/json;as=Table;v=v1;g=meta.k8s.io".into()
            ))
        );
    }
}
