//! Writing answers: JSON bodies with `Warning` headers, the `Table` and
//! `PartialObjectMetadata` conversions of an object, and the rewriting of a
//! finished JSON answer into Kubernetes protobuf.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::protobuf;
use crate::registry::ResourceType;
use crate::status::ApiError;
use crate::table::{self, Transform};

/// A JSON answer, with one `Warning: 299 - "…"` header per warning.
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

/// A JSON value as the answer.
pub fn value_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    json_response(code, serde_json::to_vec(v).unwrap_or_default(), warnings)
}

/// One object as the answer: as stored, or converted when the client asked
/// for a Table or for metadata only.
pub fn object_response(
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

/// Rewrites a finished JSON answer (an object, a list, or an error Status) in
/// protobuf; a watch, which streams protobuf frames already, passes as it is.
pub async fn protobuf_response(result: Result<Response, ApiError>) -> Response {
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
            set_protobuf_body(&mut parts.headers);
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
        set_protobuf_body(resp.headers_mut());
    }
    resp
}

fn set_protobuf_body(headers: &mut http::HeaderMap) {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(protobuf::PROTOBUF),
    );
    headers.remove(header::CONTENT_LENGTH);
}
