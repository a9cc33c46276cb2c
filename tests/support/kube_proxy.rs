//! A proxy in front of the control plane for one of its clients, which can
//! hold one chosen request: the node agent's path to `medforge apiserver`
//! in `tests/agent_crash.rs`.
//!
//! The client talks plain HTTP/1.1 to the proxy on loopback (its kubeconfig
//! names `http://127.0.0.1:<port>` and no credentials); the proxy reads each
//! request (head and Content-Length body), so it can match the method, the
//! path and the JSON body, and sends it on with a kube client of its own,
//! which speaks TLS to the control plane with its CA and bearer token.
//! Answers stream back with chunked framing, watches included.
//!
//! Armed with a matcher, it holds the first request that matches before it
//! reaches the control plane and says so. While it holds it, it watches the
//! client's connection: an HTTP/1.1 client sends nothing while it waits for
//! an answer, so the connection closing is the client process gone. The
//! test then releases the request: [`Release::Drop`] closes it unsent (the
//! write never happens), [`Release::Forward`] sends it to the control plane
//! behind the client's back and keeps the answer's status (the write
//! happens, and no one reads the answer).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A request as the proxy read it.
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The body as JSON (`Null` when empty or not JSON).
    pub body: serde_json::Value,
}

/// Which request to hold.
pub type Matcher = Box<dyn Fn(&Request) -> bool + Send + Sync>;

/// What becomes of a held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Closed unsent: the control plane never sees it.
    Drop,
    /// Sent to the control plane; its answer is read by no one once the
    /// client is gone.
    Forward,
}

#[derive(Default)]
struct Hold {
    /// What the test asked for, for messages.
    what: String,
    matcher: Option<Matcher>,
    /// The request line held, once one is.
    held: Option<String>,
    /// The client's connection closed while the request was held.
    hung_up: bool,
    release: Option<Release>,
    /// The status the control plane answered a forwarded request with
    /// (0: it could not be sent).
    forwarded: Option<u16>,
}

#[derive(Default)]
struct State {
    hold: Hold,
    /// Every request other than a GET, in order (`METHOD path`), for messages.
    writes: Vec<String>,
}

/// The proxy; clones share it.
#[derive(Clone)]
pub struct KubeProxy {
    addr: SocketAddr,
    upstream: kube::Client,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
}

/// How long the proxy waits for what a test asks of it.
const DEADLINE: Duration = Duration::from_secs(60);

impl KubeProxy {
    /// Listens on a free loopback port and sends requests on with `upstream`.
    pub async fn start(upstream: kube::Client) -> KubeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = KubeProxy {
            addr: listener.local_addr().unwrap(),
            upstream,
            state: Arc::default(),
            changed: Arc::default(),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    let _ = p.serve(conn).await;
                });
            }
        });
        proxy
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig for the proxy: plain HTTP, no credentials (the proxy's
    /// own client has them), default namespace `default`.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: proxy
  cluster:
    server: {}
users:
- name: through-proxy
  user: {{}}
contexts:
- name: proxy
  context:
    cluster: proxy
    user: through-proxy
    namespace: default
current-context: proxy
preferences: {{}}
",
            self.url()
        )
    }

    /// Holds the first request from now on that `matcher` accepts (one at a
    /// time: this replaces an earlier hold).
    pub fn arm(&self, what: &str, matcher: Matcher) {
        self.state.lock().unwrap().hold = Hold {
            what: what.to_string(),
            matcher: Some(matcher),
            ..Default::default()
        };
        self.changed.notify_waiters();
    }

    /// Polls the hold until `check` gives a value, within [`DEADLINE`];
    /// past it, panics saying `what` and the requests seen.
    async fn wait<T>(&self, what: &str, check: impl Fn(&Hold) -> Option<T>) -> T {
        let until = Instant::now() + DEADLINE;
        loop {
            let notified = self.changed.notified();
            {
                let st = self.state.lock().unwrap();
                if let Some(v) = check(&st.hold) {
                    return v;
                }
                assert!(
                    Instant::now() < until,
                    "the control-plane proxy, armed for {}: {what} did not happen within {DEADLINE:?}; \
                     held: {:?}; writes seen (last 30): {:?}",
                    st.hold.what,
                    st.hold.held,
                    &st.writes[st.writes.len().saturating_sub(30)..]
                );
            }
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    /// Waits until the armed request arrived and is held; its request line.
    pub async fn wait_held(&self) -> String {
        self.wait("the request arriving", |h| h.held.clone()).await
    }

    /// Waits until the client's connection of the held request closed.
    pub async fn wait_hung_up(&self) {
        self.wait("the client hanging up while held", |h| {
            h.hung_up.then_some(())
        })
        .await
    }

    /// Lets the held request go as `how`.
    pub fn release(&self, how: Release) {
        self.state.lock().unwrap().hold.release = Some(how);
        self.changed.notify_waiters();
    }

    /// Waits for the control plane's answer to the forwarded request; its status.
    pub async fn wait_forwarded(&self) -> u16 {
        self.wait("the forwarded request answered", |h| h.forwarded)
            .await
    }

    /// Whether a request held is released yet.
    fn released(&self) -> Option<Release> {
        self.state.lock().unwrap().hold.release
    }

    /// Serves one client connection: its requests in turn, until it closes
    /// or a request is held.
    async fn serve(&self, conn: TcpStream) -> std::io::Result<()> {
        let (mut from_client, mut to_client) = conn.into_split();
        let mut buf = Vec::new();
        loop {
            let Some(raw) = read_request(&mut from_client, &mut buf).await? else {
                return Ok(());
            };
            let request = Request {
                method: raw.method.clone(),
                path: raw.target.split('?').next().unwrap_or_default().to_string(),
                body: serde_json::from_slice(&raw.body).unwrap_or_default(),
            };
            let held = {
                let mut st = self.state.lock().unwrap();
                if raw.method != "GET" {
                    st.writes.push(format!("{} {}", raw.method, request.path));
                }
                let hit =
                    st.hold.held.is_none() && st.hold.matcher.as_ref().is_some_and(|m| m(&request));
                if hit {
                    st.hold.held = Some(format!("{} {}", raw.method, raw.target));
                }
                hit
            };
            if held {
                self.changed.notify_waiters();
                return self.hold(from_client, to_client, raw).await;
            }
            let close = raw.closes();
            match self.send(&raw).await {
                Ok(answer) => write_answer(&mut to_client, answer, raw.method == "HEAD").await?,
                Err(e) => {
                    let text = e.to_string();
                    to_client
                        .write_all(
                            format!(
                                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{text}",
                                text.len()
                            )
                            .as_bytes(),
                        )
                        .await?;
                    return Ok(());
                }
            }
            if close {
                return Ok(());
            }
        }
    }

    /// Holds `raw` until the test releases it, noting the client hanging up
    /// meanwhile; then drops or forwards it. The connection ends with it.
    async fn hold(
        &self,
        mut from_client: OwnedReadHalf,
        mut to_client: OwnedWriteHalf,
        raw: RawRequest,
    ) -> std::io::Result<()> {
        let mut hung_up = false;
        let mut byte = [0u8; 1];
        let how = loop {
            let notified = self.changed.notified();
            if let Some(how) = self.released() {
                break how;
            }
            if hung_up {
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                continue;
            }
            tokio::select! {
                read = from_client.read(&mut byte) => {
                    // Nothing may come while the client waits for its answer:
                    // an end (or an error) is its process gone.
                    if matches!(read, Ok(0) | Err(_)) {
                        hung_up = true;
                        self.state.lock().unwrap().hold.hung_up = true;
                        self.changed.notify_waiters();
                    }
                }
                _ = tokio::time::timeout(Duration::from_millis(200), notified) => {}
            }
        };
        if how == Release::Drop {
            return Ok(());
        }
        let answer = self.send(&raw).await;
        let status = answer.as_ref().map_or(0, |a| a.status().as_u16());
        if !hung_up && let Ok(answer) = answer {
            // Released with the client still there: it gets its answer late.
            write_answer(&mut to_client, answer, raw.method == "HEAD").await?;
        }
        self.state.lock().unwrap().hold.forwarded = Some(status);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Sends `raw` to the control plane through the proxy's own client.
    async fn send(
        &self,
        raw: &RawRequest,
    ) -> Result<hyper::Response<kube::client::Body>, kube::Error> {
        let mut request = hyper::Request::builder()
            .method(raw.method.as_str())
            .uri(raw.target.as_str());
        for (name, value) in &raw.headers {
            if !is_hop_by_hop(name) && !name.eq_ignore_ascii_case("host") {
                request = request.header(name.as_str(), value.as_str());
            }
        }
        let request = request
            .body(kube::client::Body::from(raw.body.clone()))
            .expect("a request the client sent can be rebuilt");
        self.upstream.send(request).await
    }
}

/// A request as read off the connection.
struct RawRequest {
    method: String,
    /// The path and query.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawRequest {
    /// Whether the client asked to close the connection after this one.
    fn closes(&self) -> bool {
        self.headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close"))
    }
}

/// Headers for one hop (and the credentials and framing the proxy's own
/// client sets), never copied across the proxy.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Reads the next request (head, then a Content-Length body); `None` when
/// the client closed the connection between requests. `buf` keeps bytes
/// read past the request.
async fn read_request(
    from: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<RawRequest>> {
    let mut chunk = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        first.next().unwrap_or_default().to_string(),
        first.next().unwrap_or_default().to_string(),
    );
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding")
                && !v.eq_ignore_ascii_case("identity")),
        "the control-plane proxy reads Content-Length bodies only: {method} {target}"
    );
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok(Some(RawRequest {
        method,
        target,
        headers,
        body,
    }))
}

/// Writes the control plane's answer to the client: its status and headers,
/// and the body as it streams, in chunks.
async fn write_answer(
    to: &mut OwnedWriteHalf,
    answer: hyper::Response<kube::client::Body>,
    head_only: bool,
) -> std::io::Result<()> {
    let (parts, mut body) = answer.into_parts();
    let status = parts.status;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (name, value) in &parts.headers {
        if !is_hop_by_hop(name.as_str()) {
            head.push_str(&format!(
                "{name}: {}\r\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
    }
    let bodyless = head_only
        || status.is_informational()
        || status == hyper::StatusCode::NO_CONTENT
        || status == hyper::StatusCode::NOT_MODIFIED;
    if bodyless {
        head.push_str("\r\n");
        return to.write_all(head.as_bytes()).await;
    }
    head.push_str("transfer-encoding: chunked\r\n\r\n");
    to.write_all(head.as_bytes()).await?;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(std::io::Error::other)?;
        if let Ok(data) = frame.into_data()
            && !data.is_empty()
        {
            let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
            chunk.extend_from_slice(&data);
            chunk.extend_from_slice(b"\r\n");
            to.write_all(&chunk).await?;
        }
    }
    to.write_all(b"0\r\n\r\n").await
}
