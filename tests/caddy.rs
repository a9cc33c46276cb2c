//! The real Caddy with `deploy/caddy/Caddyfile`, inside the harness network
//! namespace, in front of a stub of the api's `forward_auth` endpoint and real
//! workload containers: the routing matrix, fail-closed behaviour, spoofing,
//! the blocked auth path, websockets and what each side gets to see.
//!
//! Everything runs inside the namespace: Caddy (`nsenter --net=…`), the stub
//! (its sockets are bound on a thread that entered the namespace) and every
//! client connection (`Harness::connect` to Caddy on 127.0.0.1).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Full};
use medforge_testkit::{Harness, TestScope};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DOMAIN: &str = "medforge.test";
const COOKIE: &str = "medforge_session";
const DEADLINE: Duration = Duration::from_secs(15);
const NO_UPSTREAM_BODY: &str = "Bad Gateway: the auth service named no upstream for this session.";
const AUTH_PATH_BODY: &str = "Forbidden: the auth endpoint is not served on session hosts.";
/// The RFC 6455 example key and the accept value it must produce.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

// Slugs the stub knows.
const ALICE_SLUG: &str = "aaaaaaaa";
const BOB_SLUG: &str = "bbbbbbbb";
const NO_HEADER_SLUG: &str = "nnnnnnnn";
const ECHO_SLUG: &str = "eeeeeeee";

fn caddyfile() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/caddy/Caddyfile")
}

/// Binds a listener on 127.0.0.1 (port 0: any free one) inside the network
/// namespace at `netns`, from a short-lived thread that entered it.
fn listen_in_netns(netns: &Path) -> std::net::TcpListener {
    let path = netns.to_path_buf();
    std::thread::spawn(move || -> io::Result<std::net::TcpListener> {
        let ns = File::open(&path)?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
    .join()
    .expect("the netns listener thread")
    .expect("bind inside the namespace")
}

fn port_of(listener: &std::net::TcpListener) -> u16 {
    listener.local_addr().expect("local address").port()
}

/// A free port inside the namespace (bound, then released for Caddy).
fn free_port(netns: &Path) -> u16 {
    port_of(&listen_in_netns(netns))
}

fn serve(listener: std::net::TcpListener, app: Router) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    tokio::spawn(async move { axum::serve(listener, app).await });
}

// ---------------------------------------------------------------- the stub

/// One session the stub knows: its owner and the upstream it names (none:
/// the "200 without X-Upstream" mode).
struct StubSession {
    owner: &'static str,
    upstream: Option<String>,
}

#[derive(Clone)]
struct Stub {
    sessions: Arc<HashMap<&'static str, StubSession>>,
    /// The headers of every request the auth endpoint received.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Stub {
    fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

fn stub_reply(status: StatusCode) -> Response {
    let body = format!("{{\"status\":{},\"from\":\"auth-stub\"}}", status.as_u16());
    (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body,
    )
        .into_response()
}

fn cookie_user(headers: &HeaderMap) -> Option<&'static str> {
    let prefix = format!("{COOKIE}=");
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(prefix.as_str()))
        .find_map(|token| match token {
            "token-alice" => Some("alice"),
            "token-bob" => Some("bob"),
            _ => None,
        })
}

/// The api's `session-proxy` matrix: 404 for a host that is not a session
/// host, 401 without a login, 404 for an unknown slug, 403 for another user,
/// 200 with `X-Upstream` (or without it, for the fail-closed case).
async fn session_proxy(State(stub): State<Stub>, headers: HeaderMap) -> Response {
    stub.seen.lock().unwrap().push(headers.clone());
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let Some(slug) = host.split('.').next().and_then(|l| l.strip_prefix("s-")) else {
        return stub_reply(StatusCode::NOT_FOUND);
    };
    let Some(user) = cookie_user(&headers) else {
        return stub_reply(StatusCode::UNAUTHORIZED);
    };
    let Some(session) = stub.sessions.get(slug) else {
        return stub_reply(StatusCode::NOT_FOUND);
    };
    if session.owner != user {
        return stub_reply(StatusCode::FORBIDDEN);
    }
    let mut response = StatusCode::OK.into_response();
    if let Some(upstream) = &session.upstream {
        response.headers_mut().insert(
            "x-upstream",
            HeaderValue::from_str(upstream).expect("a header value"),
        );
    }
    response
}

/// Everything else on the api hosts.
async fn api_fallback(request: Request) -> String {
    format!("api {} {}", request.method(), request.uri())
}

/// An upstream that reports what it received.
async fn echo(request: Request) -> axum::Json<serde_json::Value> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.expect("request body").to_bytes();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("?").into()))
        .collect();
    axum::Json(serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

// ---------------------------------------------------------------- Caddy

/// A Caddy process; stopped (by its PID) when dropped.
struct Caddy {
    child: Child,
    port: u16,
    log: PathBuf,
    _home: tempfile::TempDir,
}

impl Caddy {
    fn start(harness: &Harness, api: SocketAddr) -> Caddy {
        let home = tempfile::tempdir().expect("caddy home");
        let log = home.path().join("caddy.log");
        let netns = &harness.layout().netns_path;
        let (port, admin) = (free_port(netns), free_port(netns));
        let out = File::create(&log).expect("caddy log");
        let mut command = harness.netns_command("caddy");
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(caddyfile())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", home.path())
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("MEDFORGE_DOMAIN", DOMAIN)
            .env("MEDFORGE_API", api.to_string())
            .env("MEDFORGE_SCHEME", "http")
            .env("MEDFORGE_TLS", "off")
            .env("MEDFORGE_BIND", "127.0.0.1")
            .env("MEDFORGE_HTTP_PORT", port.to_string())
            .env("MEDFORGE_CADDY_ADMIN", format!("127.0.0.1:{admin}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        let child = command
            .spawn()
            .expect("start caddy (apt-get install -y caddy)");
        Caddy {
            child,
            port,
            log,
            _home: home,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut text));
        text
    }

    /// Polls until Caddy (nsenter has exec'd it: the PID is Caddy's) accepts
    /// connections.
    async fn wait_ready(&mut self, harness: &Harness) {
        let deadline = Instant::now() + DEADLINE;
        let pid = self.child.id();
        loop {
            if let Some(status) = self.child.try_wait().expect("caddy status") {
                panic!("caddy exited ({status}):\n{}", self.log_text());
            }
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "caddy" && harness.connect(self.addr()).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "caddy did not listen on {} within {DEADLINE:?}:\n{}",
                self.addr(),
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- clients

struct Reply {
    status: u16,
    body: String,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.status, self.body)
    }
}

/// One HTTP/1.1 request through Caddy, from inside the namespace.
async fn send(
    harness: &Harness,
    caddy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let exchange = async {
        let stream = harness.connect(caddy).await.expect("connect to caddy");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("http handshake");
        tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {host}{path}: no answer within {DEADLINE:?}"))
}

fn session_host(slug: &str) -> String {
    format!("s-{slug}.external.{DOMAIN}")
}

fn alice() -> (&'static str, &'static str) {
    ("cookie", "medforge_session=token-alice")
}

/// A websocket client, just enough for echo frames.
struct WebSocket {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WebSocket {
    /// Opens a websocket to `path` on `host` through Caddy; returns the
    /// socket and the response head.
    async fn open(
        harness: &Harness,
        caddy: SocketAddr,
        host: &str,
        path: &str,
    ) -> (WebSocket, String) {
        let mut stream = harness.connect(caddy).await.expect("connect to caddy");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: {COOKIE}=token-alice\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send handshake");
        let mut ws = WebSocket {
            stream,
            buf: Vec::new(),
        };
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            ws.fill().await;
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
        ws.buf.drain(..end);
        (ws, head)
    }

    async fn fill(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "connection closed; got {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.buf.extend_from_slice(&chunk[..n]);
    }

    /// Sends one masked frame (payload under 126 bytes).
    async fn send(&mut self, opcode: u8, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [0x12u8, 0x34, 0x56, 0x78];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("send frame");
    }

    /// Receives one unmasked, unfragmented frame (payload under 126 bytes).
    async fn recv(&mut self) -> (u8, Vec<u8>) {
        while self.buf.len() < 2 {
            self.fill().await;
        }
        let (first, len) = (self.buf[0], usize::from(self.buf[1]));
        assert!(
            first & 0x80 != 0 && len < 126,
            "unexpected frame head {:?}",
            &self.buf[..2]
        );
        while self.buf.len() < 2 + len {
            self.fill().await;
        }
        let payload = self.buf[2..2 + len].to_vec();
        self.buf.drain(..2 + len);
        (first & 0x0f, payload)
    }
}

// ---------------------------------------------------------------- the test

async fn start_workload(harness: &Harness, scope: &TestScope, suffix: &str) -> (String, IpAddr) {
    let name = harness
        .start_workload_container(scope, suffix, None)
        .await
        .expect("start a workload container");
    let ip = harness.container_ip(&name).await.expect("container ip");
    harness
        .wait_for_http(
            SocketAddr::new(ip, 8080),
            "/healthz",
            Duration::from_secs(30),
        )
        .await
        .expect("the workload answers");
    (name, ip)
}

fn has_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        || headers.contains_key("sec-websocket-key")
        || headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("upgrade")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_routes_sessions_through_forward_auth() {
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let (a_name, a_ip) = start_workload(&harness, &scope, "alice").await;
    let (b_name, b_ip) = start_workload(&harness, &scope, "bob").await;

    // The stub api and the echo upstream, inside the namespace.
    let netns = &harness.layout().netns_path;
    let (auth_listener, echo_listener) = (listen_in_netns(netns), listen_in_netns(netns));
    let echo_upstream = format!("127.0.0.1:{}", port_of(&echo_listener));
    let stub = Stub {
        sessions: Arc::new(HashMap::from([
            (
                ALICE_SLUG,
                StubSession {
                    owner: "alice",
                    upstream: Some(format!("{a_ip}:8080")),
                },
            ),
            (
                BOB_SLUG,
                StubSession {
                    owner: "bob",
                    upstream: Some(format!("{b_ip}:8080")),
                },
            ),
            (
                NO_HEADER_SLUG,
                StubSession {
                    owner: "alice",
                    upstream: None,
                },
            ),
            (
                ECHO_SLUG,
                StubSession {
                    owner: "alice",
                    upstream: Some(echo_upstream),
                },
            ),
        ])),
        seen: Arc::default(),
    };
    let api = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&auth_listener)));
    serve(
        auth_listener,
        Router::new()
            .route(
                "/api/v2/auth/session-proxy",
                axum::routing::get(session_proxy),
            )
            .fallback(api_fallback)
            .with_state(stub.clone()),
    );
    serve(echo_listener, Router::new().fallback(echo));

    let mut caddy = Caddy::start(&harness, api);
    caddy.wait_ready(&harness).await;
    let at = caddy.addr();
    let alice_host = session_host(ALICE_SLUG);
    // GET / through Caddy.
    let get = async |host: &str, headers: &[(&str, &str)]| {
        send(&harness, at, "GET", host, "/", headers, "").await
    };

    // The owner reaches the session, on every form of the session host.
    for host in [
        alice_host.clone(),
        format!("s-{ALICE_SLUG}.internal.{DOMAIN}"),
        format!("s-{ALICE_SLUG}.{DOMAIN}"),
    ] {
        let got = get(&host, &[alice()]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, a_name.as_str()),
            "{host}"
        );
    }
    let got = get(
        &session_host(BOB_SLUG),
        &[("cookie", "medforge_session=token-bob")],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, b_name.as_str()));

    // The api's refusals come back as they are.
    let unauthenticated = get(&alice_host, &[]).await;
    assert_eq!(unauthenticated.status, 401, "{unauthenticated:?}");
    assert!(
        unauthenticated.body.contains("auth-stub"),
        "{unauthenticated:?}"
    );
    let other_user = get(&session_host(BOB_SLUG), &[alice()]).await;
    assert_eq!(other_user.status, 403, "{other_user:?}");
    assert!(other_user.body.contains("auth-stub"), "{other_user:?}");
    let unknown = get(&session_host("zzzzzzzz"), &[alice()]).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert!(unknown.body.contains("auth-stub"), "{unknown:?}");

    // Fail closed: a 2xx without X-Upstream is a 502, whatever the client sends.
    let spoof_a = format!("{a_ip}:8080");
    for headers in [
        vec![alice()],
        vec![
            alice(),
            ("x-upstream", spoof_a.as_str()),
            ("x-medforge-upstream", spoof_a.as_str()),
        ],
    ] {
        let got = get(&session_host(NO_HEADER_SLUG), &headers).await;
        assert_eq!((got.status, got.body.as_str()), (502, NO_UPSTREAM_BODY));
    }

    // The auth endpoint is blocked on session hosts, before any auth call.
    let calls_before = stub.seen().len();
    for path in [
        "/api/v2/auth/session-proxy",
        "/api/v2/auth/session-proxy?x=1",
        "/api/v2/auth/session-proxy/",
        "/API/v2/auth/session-proxy",
        "//api/v2/auth/session-proxy",
        "/api/v2/auth/%73ession-proxy",
        "/api/v2/auth/./session-proxy",
    ] {
        for headers in [vec![], vec![alice()]] {
            let got = send(&harness, at, "GET", &alice_host, path, &headers, "").await;
            assert_eq!(
                (got.status, got.body.as_str()),
                (403, AUTH_PATH_BODY),
                "{path}"
            );
        }
    }
    assert_eq!(stub.seen().len(), calls_before, "the auth stub was called");

    // The api hosts go to the api.
    for host in [format!("api.{DOMAIN}"), DOMAIN.to_string()] {
        let got = send(&harness, at, "GET", &host, "/api/v2/me", &[], "").await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (200, "api GET /api/v2/me"),
            "{host}"
        );
    }

    // A spoofed upstream changes nothing: Alice still lands on her session,
    // and the api never sees the client's header.
    let spoof_b = format!("{b_ip}:8080");
    let calls_before = stub.seen().len();
    let got = get(
        &alice_host,
        &[
            alice(),
            ("x-upstream", spoof_b.as_str()),
            ("x-medforge-upstream", spoof_b.as_str()),
        ],
    )
    .await;
    assert_eq!((got.status, got.body.as_str()), (200, a_name.as_str()));
    let seen = stub.seen();
    assert_eq!(seen.len(), calls_before + 1);
    for headers in &seen {
        assert!(!headers.contains_key("x-upstream"), "{headers:?}");
        assert!(!headers.contains_key("x-medforge-upstream"), "{headers:?}");
    }

    // What the session sees: the request and its body, but neither the
    // routing header nor the login token, and Caddy's own X-Forwarded-For.
    let got = send(
        &harness,
        at,
        "PUT",
        &session_host(ECHO_SLUG),
        "/workspace/notes.txt?v=1",
        &[
            (
                "cookie",
                "theme=dark; medforge_session=token-alice; _xsrf=abc; __Host-medforge=token-alice; medforge_api=token-alice",
            ),
            ("x-medforge-upstream", spoof_b.as_str()),
            ("x-forwarded-for", "203.0.113.9"),
        ],
        "hello through caddy",
    )
    .await;
    assert_eq!(got.status, 200, "{got:?}");
    let echoed: serde_json::Value = serde_json::from_str(&got.body).expect("echo JSON");
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["path"], "/workspace/notes.txt?v=1");
    assert_eq!(echoed["body"], "hello through caddy");
    let seen_headers = &echoed["headers"];
    assert_eq!(
        seen_headers["cookie"],
        "theme=dark; medforge_session=; _xsrf=abc; __Host-medforge=; medforge_api="
    );
    assert!(
        seen_headers.get("x-medforge-upstream").is_none(),
        "{echoed}"
    );
    assert!(seen_headers.get("x-upstream").is_none(), "{echoed}");
    assert_eq!(seen_headers["x-forwarded-for"], "127.0.0.1", "{echoed}");
    assert_eq!(seen_headers["host"], session_host(ECHO_SLUG).as_str());

    // Websockets pass through to the session and echo frames; the auth call
    // is a plain request without the upgrade.
    let calls_before = stub.seen().len();
    let (mut ws, head) = WebSocket::open(&harness, at, &alice_host, "/ws").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains(WS_ACCEPT), "{head}");
    let exchange = async {
        ws.send(0x1, b"hello session").await;
        assert_eq!(ws.recv().await, (0x1, b"hello session".to_vec()));
        ws.send(0x2, &[0, 1, 2, 254, 255]).await;
        assert_eq!(ws.recv().await, (0x2, vec![0, 1, 2, 254, 255]));
        ws.send(0x8, &1000u16.to_be_bytes()).await;
        assert_eq!(ws.recv().await, (0x8, 1000u16.to_be_bytes().to_vec()));
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("websocket echo within the deadline");
    let seen = stub.seen();
    assert_eq!(seen.len(), calls_before + 1);
    for headers in &seen {
        assert!(
            !has_upgrade(headers),
            "the auth call carried an upgrade: {headers:?}"
        );
    }

    drop(caddy);
    let report = scope.cleanup().await.expect("cleanup");
    assert_eq!(report.containers_removed.len(), 2, "{report:?}");
}

#[test]
fn the_caddyfile_is_formatted() {
    // `caddy fmt` prints the canonical form; a difference is a lint failure.
    let out = std::process::Command::new("caddy")
        .arg("fmt")
        .arg(caddyfile())
        .output()
        .expect("run caddy fmt");
    assert!(out.status.success(), "{out:?}");
    let current = std::fs::read_to_string(caddyfile()).unwrap();
    let mut formatted = String::from_utf8(out.stdout).unwrap();
    if !formatted.ends_with('\n') {
        formatted.push('\n');
    }
    assert!(
        current == formatted,
        "run `caddy fmt --overwrite deploy/caddy/Caddyfile`"
    );
}

/// Adapts the Caddyfile to JSON with `env` (no server is started).
fn adapt(env: &[(&str, &str)]) -> serde_json::Value {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(caddyfile())
        .env_clear()
        .env("HOME", home.path())
        .envs(env.iter().copied())
        .output()
        .expect("run caddy adapt");
    assert!(out.status.success(), "{env:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("adapted JSON")
}

#[test]
fn the_caddyfile_adapts_for_each_tls_mode() {
    let domain = ("MEDFORGE_DOMAIN", "medforge.example.org");
    // Production defaults: TLS from certificate files on 443, redirect on 80.
    let files = adapt(&[domain]);
    let servers = &files["apps"]["http"]["servers"];
    let listen: Vec<&str> = servers
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["listen"].as_array().unwrap())
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(listen.contains(&"[::]:443"), "{listen:?}");
    // The admin endpoint is a Unix socket by default, not TCP: nobody on
    // the host reaches it but Caddy's user and root.
    assert_eq!(
        files["admin"]["listen"],
        "unix//run/caddy-medforge/admin.sock"
    );
    let certs = files["apps"]["tls"]["certificates"]["load_files"].to_string();
    assert!(certs.contains("/etc/medforge/tls/fullchain.pem"), "{certs}");
    let text = files.to_string();
    for host in [
        "medforge.example.org",
        "api.medforge.example.org",
        "*.external.medforge.example.org",
        "*.internal.medforge.example.org",
        "*.medforge.example.org",
    ] {
        assert!(text.contains(&format!("\"{host}\"")), "{host} missing");
    }
    assert!(text.contains("127.0.0.1:8000"), "default api address");

    // Caddy's own CA.
    let internal = adapt(&[domain, ("MEDFORGE_TLS", "internal")]).to_string();
    assert!(internal.contains("\"internal\""), "{internal}");

    // Plain HTTP, as the tests run it.
    let plain = adapt(&[
        domain,
        ("MEDFORGE_SCHEME", "http"),
        ("MEDFORGE_TLS", "off"),
        ("MEDFORGE_BIND", "127.0.0.1"),
        ("MEDFORGE_HTTP_PORT", "8080"),
    ]);
    let text = plain.to_string();
    assert!(text.contains("127.0.0.1:8080"), "{text}");
    assert!(!text.contains("load_files"), "{text}");
}
