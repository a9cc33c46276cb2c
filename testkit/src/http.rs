//! A tiny HTTP/1 client for talking to containers from the test process,
//! through the harness network namespace.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{HeaderMap, Method, Request};
use hyper_util::rt::TokioIo;

use crate::error::{HarnessError, Result};
use crate::eventually::{TimedOut, try_eventually};
use crate::netns;

/// Default deadline of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl HttpResponse {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            HarnessError::other("http", format!("response is not the expected JSON: {e}"))
        })
    }
}

/// Sends one request over a fresh connection opened inside the namespace at
/// `netns_path`, all within `timeout`.
pub async fn request(
    netns_path: &Path,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<HttpResponse> {
    request_with_headers(netns_path, addr, method, path, &[], body, timeout).await
}

/// Like [`request`], with extra request headers. A `Host` among them
/// replaces the default (`addr`), so a test can address a virtual host of a
/// proxy listening at `addr`.
pub async fn request_with_headers(
    netns_path: &Path,
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
) -> Result<HttpResponse> {
    let url = format!("http://{addr}{path}");
    let err = |detail: String| HarnessError::Http {
        method: method.to_string(),
        url: url.clone(),
        detail,
    };
    let exchange = async {
        let stream = netns::connect(netns_path, addr, timeout)
            .await
            .map_err(|e| err(format!("connect: {e}")))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(format!("handshake: {e}")))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut builder = Request::builder().method(method.clone()).uri(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            builder = builder.header(HOST, addr.to_string());
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder
            .header(CONTENT_LENGTH, body.len())
            .body(Full::new(body))
            .map_err(|e| err(format!("request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| err(format!("send: {e}")))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| err(format!("body: {e}")))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(err(format!("no complete answer within {timeout:?}"))),
    }
}

/// The deadline of one attempt while polling until `deadline`: what is
/// left, but at least 100 ms and at most 2 s.
fn attempt_within(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .min(Duration::from_secs(2))
        .max(Duration::from_millis(100))
}

/// The harness's timeout error for a poll that gave up.
fn gave_up(t: TimedOut) -> HarnessError {
    HarnessError::Timeout {
        component: "http",
        what: format!("{}; last: {}", t.what, t.last.unwrap_or_default()),
        waited: t.waited,
    }
}

/// Polls `GET path` until it answers 2xx or `timeout` passes; returns the
/// first successful response, or the last error.
pub async fn wait_for_http(
    netns_path: &Path,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse> {
    let deadline = Instant::now() + timeout;
    let what = format!("http://{addr}{path} did not answer 2xx");
    try_eventually(&what, timeout, async || {
        let attempt = attempt_within(deadline);
        match request(netns_path, addr, Method::GET, path, Bytes::new(), attempt).await {
            Ok(r) if r.is_success() => Ok(r),
            Ok(r) => Err(format!("status {}: {}", r.status, r.text())),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
    .map_err(gave_up)
}

/// Polls until a TCP connection to `addr` (inside the namespace) succeeds.
pub async fn wait_for_port(netns_path: &Path, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let what = format!("{addr} did not accept a connection");
    try_eventually(&what, timeout, async || {
        netns::connect(netns_path, addr, attempt_within(deadline))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(gave_up)
}
