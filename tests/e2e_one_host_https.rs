//! The one-host evidence run in the production Caddyfile mode: `medforge
//! up` with `Secure` cookies (no `--insecure-cookies`) and Caddy serving
//! `deploy/caddy/Caddyfile` with its defaults (HTTPS on port 443, the
//! redirect on port 80, the admin API on a Unix socket) and its internal CA
//! (`MEDFORGE_TLS=internal`, as `medforge up --quickstart` runs it), inside
//! the harness's network namespace with its dockerd and zfs-fuse.
//!
//! The client is a browser as far as it matters here: it verifies Caddy's
//! certificate against the root of Caddy's internal CA, read from Caddy's
//! data directory (never without verification), sends the SNI and `Host` of
//! the URL the api gives, keeps its cookies in a jar that honours `Secure`
//! (`tests/support/browser_jar.rs`) and sends `Origin` with state-changing
//! api requests. No name is ever resolved: every connection goes to Caddy's
//! loopback address inside the namespace. Every answer through Caddy is
//! recorded and a 502 fails the run (`ProxyLog`). Writes its part of
//! `target/evidence/one-host-evidence.md`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use medforge_testkit::{Harness, HttpResponse, Method, eventually, try_eventually};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[path = "support/browser_jar.rs"]
mod browser_jar;
#[path = "support/one_host.rs"]
mod one_host;
mod support;
use browser_jar::BrowserJar;
use one_host::{
    ADMIN, Cookies, DOMAIN, Ports, Proxy, ProxyLog, caddy_home, caddy_root_cert, start_caddy,
    start_medforge, websocket_echo, write_evidence,
};
use support::{free_port, scope_label, wait_until_ready, workload_image_id};

/// The deadline of one request.
const REQUEST: Duration = Duration::from_secs(10);

/// A TLS client that trusts `roots` only, speaking HTTP/1.1.
fn connector(roots: rustls::RootCertStore) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// The certificates of a PEM file.
fn pem_certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A trust store with `root` only.
fn root_store(root: &CertificateDer<'static>) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    roots
}

fn sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The certificate chain Caddy stored for the site name `name` (`*.x` is
/// stored as `wildcard_.x`).
fn stored_chain(dir: &Path, name: &str) -> Vec<CertificateDer<'static>> {
    let file = name.replace('*', "wildcard_");
    pem_certs(
        &caddy_home(dir)
            .join("data/caddy/certificates/local")
            .join(&file)
            .join(format!("{file}.crt")),
    )
}

/// One HTTP/1.1 exchange over `stream`, all within [`REQUEST`].
async fn exchange<S>(
    stream: S,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<HttpResponse, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let work = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .header("content-length", body.len())
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(REQUEST, work)
        .await
        .map_err(|_| format!("no complete answer within {REQUEST:?}"))?
}

/// A person's browser, as far as cookies go: a jar that stores what the
/// answers set and sends what a browser would send (`Secure` cookies only
/// over HTTPS).
struct Browser {
    jar: Mutex<BrowserJar>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            jar: Mutex::new(BrowserJar::new()),
        }
    }

    /// The `Cookie` header for `host` and `path`, over HTTPS or plain HTTP.
    fn cookie(&self, host: &str, path: &str, https: bool) -> Option<String> {
        self.jar.lock().unwrap().header(host, path, https)
    }
}

/// The `Set-Cookie` lines of an answer.
fn set_cookies(r: &HttpResponse) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect()
}

/// Checks the two login cookies of a signup or login answer: both
/// `Secure`, `HttpOnly`, `SameSite=Lax` and `Path=/`; `__Host-medforge`
/// host-only, `medforge_session` for the whole domain. Returns a line for
/// the report.
fn check_login_cookies(r: &HttpResponse) -> String {
    let lines = set_cookies(r);
    let mut out = Vec::new();
    for (name, domain) in [
        ("__Host-medforge", None),
        ("medforge_session", Some(DOMAIN)),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} cookie in {lines:?}"));
        let attrs: Vec<(String, String)> = line
            .split(';')
            .skip(1)
            .map(|a| {
                let (k, v) = a.split_once('=').unwrap_or((a, ""));
                (k.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(attr("secure"), Some(""), "{name} is not Secure: {line}");
        assert_eq!(attr("httponly"), Some(""), "{name} is not HttpOnly: {line}");
        assert_eq!(attr("samesite"), Some("Lax"), "{name}'s SameSite: {line}");
        assert_eq!(attr("path"), Some("/"), "{name}'s Path: {line}");
        assert_eq!(
            attr("domain").map(|d| d.trim_start_matches('.')),
            domain,
            "{name}'s Domain: {line}"
        );
        let shown: Vec<String> = attrs
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    k.clone()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        out.push(format!("`{name}`: {}", shown.join(", ")));
    }
    out.join("; ")
}

/// The client: HTTPS to Caddy's port 443 (SNI and `Host` from the URL,
/// the certificate checked against Caddy's root), plain HTTP to its port 80.
struct Client<'a> {
    harness: &'a Harness,
    https: SocketAddr,
    http: SocketAddr,
    tls: TlsConnector,
    log: ProxyLog,
}

impl Client<'_> {
    /// A TLS connection to Caddy for `host`; `Err` when the handshake or
    /// the certificate's verification fails.
    async fn connect_with(
        &self,
        tls: &TlsConnector,
        host: &str,
    ) -> Result<TlsStream<TcpStream>, String> {
        let tcp = self
            .harness
            .connect(self.https)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
        tokio::time::timeout(REQUEST, tls.connect(name, tcp))
            .await
            .map_err(|_| format!("no TLS handshake within {REQUEST:?}"))?
            .map_err(|e| format!("TLS: {e}"))
    }

    async fn connect(&self, host: &str) -> Result<TlsStream<TcpStream>, String> {
        self.connect_with(&self.tls, host).await
    }

    /// The certificate chain Caddy served for `host` (verified), leaf first.
    async fn served_chain(&self, host: &str) -> Vec<CertificateDer<'static>> {
        let tls = self
            .connect(host)
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        tls.get_ref()
            .1
            .peer_certificates()
            .unwrap()
            .iter()
            .map(|c| c.clone().into_owned())
            .collect()
    }

    /// One request over HTTPS, without recording it; `Err` when no answer came.
    async fn try_https(
        &self,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<HttpResponse, String> {
        let stream = self.connect(host).await?;
        exchange(stream, method, host, path, headers, body).await
    }

    /// One request over HTTPS as `browser` would send it (its cookies, and
    /// `Origin: https://<domain>` on a state-changing api request unless
    /// `extra` names one), recorded; what the answer sets goes into the
    /// browser's jar.
    async fn call(
        &self,
        method: Method,
        host: &str,
        path: &str,
        browser: Option<&Browser>,
        extra: &[(&str, &str)],
        body: Option<Value>,
    ) -> HttpResponse {
        let cookie = browser.and_then(|b| b.cookie(host, path, true));
        let origin = format!("https://{DOMAIN}");
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = &cookie {
            headers.push(("Cookie", c));
        }
        let api_host = host == DOMAIN || host == format!("api.{DOMAIN}");
        let changes = !matches!(method, Method::GET | Method::HEAD);
        if api_host && changes && !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("origin")) {
            headers.push(("Origin", &origin));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        headers.extend_from_slice(extra);
        let bytes = Bytes::from(body.map(|b| b.to_string()).unwrap_or_default());
        let what = format!("{method} https://{host}{path}");
        let r = self
            .try_https(method, host, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.log.record(what, r.status);
        if let Some(b) = browser {
            let mut jar = b.jar.lock().unwrap();
            for line in set_cookies(&r) {
                let _ = jar.store(host, path, true, &line);
            }
        }
        r
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        browser: Option<&Browser>,
        body: Option<Value>,
    ) -> HttpResponse {
        self.call(method, &format!("api.{DOMAIN}"), path, browser, &[], body)
            .await
    }

    async fn on_session(
        &self,
        method: Method,
        id: &str,
        rest: &str,
        browser: &Browser,
    ) -> HttpResponse {
        let path = format!("/api/v2/external/sessions/{id}{rest}");
        self.api(method, &path, Some(browser), None).await
    }

    async fn get(&self, host: &str, path: &str, browser: Option<&Browser>) -> HttpResponse {
        self.call(Method::GET, host, path, browser, &[], None).await
    }

    /// One request over plain HTTP to Caddy's port 80 with the `Cookie`
    /// header `cookie` (what a client that ignores `Secure` would send),
    /// recorded.
    async fn plain(
        &self,
        method: Method,
        host: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> HttpResponse {
        let mut headers: Vec<(&str, &str)> = vec![("Host", host)];
        if let Some(c) = cookie {
            headers.push(("Cookie", c));
        }
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let what = format!("{method} http://{host}{path}");
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let r = self
            .harness
            .http_with_headers(method, self.http, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        self.log.record(what, r.status);
        r
    }
}

/// The host of an `https://host/` URL the api gave.
fn https_host(url: &Value) -> String {
    let url = url.as_str().unwrap_or_else(|| panic!("no URL: {url}"));
    url.strip_prefix("https://")
        .and_then(|u| u.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not an https://host/ URL: {url}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_run_over_https() {
    let harness = Harness::get().await.expect("harness");
    let mut scope = harness.scope().await.expect("scope");
    let dir = tempfile::tempdir().unwrap();
    let image = workload_image_id(&harness).await;
    let zfs_root = format!("{}/ws", scope.dataset());
    let ports = Ports {
        apiserver: free_port(),
        api: free_port(),
    };
    // Caddy listens on the production ports, 443 and 80, of a loopback
    // address of its own inside the namespace (127.64.x.y: no other test
    // binds there).
    let bind = IpAddr::V4(Ipv4Addr::new(
        127,
        64,
        1 + rand::random::<u8>() % 254,
        1 + rand::random::<u8>() % 254,
    ));
    let mut report = String::new();
    writeln!(
        report,
        "# MedForge one-host evidence run: HTTPS, the production Caddyfile mode\n"
    )
    .unwrap();
    writeln!(
        report,
        "- domain: `{DOMAIN}`\n- Caddy: `MEDFORGE_TLS=internal`, HTTPS on `{bind}:443`, plain HTTP on `{bind}:80`\n- medforge up without `--insecure-cookies`\n- pack image: `{image}`\n"
    )
    .unwrap();

    let mut up = start_medforge(
        &harness,
        dir.path(),
        &ports,
        &zfs_root,
        &image,
        &scope_label(&scope),
        Cookies::Secure,
    );
    let caddy = start_caddy(&harness, dir.path(), ports.api, &Proxy::Https { bind });
    let api_addr: SocketAddr = format!("127.0.0.1:{}", ports.api).parse().unwrap();
    wait_until_ready(&harness, api_addr, &up).await;

    // Caddy's internal CA: its root is the only certificate the client
    // trusts.
    let root_file = caddy_root_cert(dir.path());
    if let Err(e) = try_eventually(
        "Caddy's internal root certificate",
        Duration::from_secs(30),
        async || root_file.exists(),
    )
    .await
    {
        panic!("{e}\n{}", caddy.log_tail());
    }
    let root = pem_certs(&root_file);
    assert_eq!(root.len(), 1, "one root in {}", root_file.display());
    let c = Client {
        harness: &harness,
        https: SocketAddr::new(bind, 443),
        http: SocketAddr::new(bind, 80),
        tls: connector(root_store(&root[0])),
        log: ProxyLog::default(),
    };
    writeln!(
        report,
        "## Caddy's certificates\n\n- the client trusts only Caddy's root `{}` (sha256 `{}`)",
        root_file.display(),
        sha256(&root[0])
    )
    .unwrap();
    // Caddy gets its certificates from its CA as it starts: the api host
    // answers over verified TLS once it has them.
    let api_host = format!("api.{DOMAIN}");
    let ready = try_eventually(
        "the api's /readyz over HTTPS through Caddy",
        Duration::from_secs(30),
        async || {
            let r = c
                .try_https(Method::GET, &api_host, "/readyz", &[], Bytes::new())
                .await?;
            // Every answer counts, these too.
            c.log
                .record(format!("GET https://{api_host}/readyz"), r.status);
            if r.status == 200 {
                Ok(r)
            } else {
                Err(format!("{}: {}", r.status, r.text()))
            }
        },
    )
    .await;
    if let Err(e) = ready {
        panic!("{e}\n{}", caddy.log_tail());
    }
    // Verification is on: a client without Caddy's root refuses the same
    // server.
    let untrusting = connector(rustls::RootCertStore::empty());
    let refused = match c.connect_with(&untrusting, &api_host).await {
        Ok(_) => panic!("a client that does not trust Caddy's CA accepted its certificate"),
        Err(e) => e,
    };
    assert!(
        refused.contains("UnknownIssuer") || refused.contains("invalid peer certificate"),
        "{refused}"
    );
    writeln!(
        report,
        "- a client without Caddy's root refuses the handshake: `{refused}`"
    )
    .unwrap();

    // Two users sign up and an admin logs in, over HTTPS: the login cookies
    // are Secure, HttpOnly, SameSite=Lax; the api's is host-only.
    writeln!(report, "\n## Sign-up and login over HTTPS\n").unwrap();
    let (alice, bob, admin) = (Browser::new(), Browser::new(), Browser::new());
    for (who, browser, path, body, want) in [
        (
            "alice",
            &alice,
            "/api/v2/auth/signup",
            json!({"email": "alice@medforge.test", "password": "correct horse battery"}),
            201,
        ),
        (
            "bob",
            &bob,
            "/api/v2/auth/signup",
            json!({"email": "bob@medforge.test", "password": "correct horse battery"}),
            201,
        ),
        (
            "admin",
            &admin,
            "/api/v2/auth/login",
            json!({"email": ADMIN.email, "password": ADMIN.password}),
            200,
        ),
    ] {
        let r = c.api(Method::POST, path, Some(browser), Some(body)).await;
        assert_eq!(r.status, want, "{path} as {who}: {}", r.text());
        let cookies = check_login_cookies(&r);
        writeln!(report, "- {who} `POST {path}`: `{}`; {cookies}", r.status).unwrap();
        // The browser kept both, and sends them over HTTPS only.
        let over_https = browser.cookie(&api_host, "/api/v2/me", true).unwrap();
        assert!(
            over_https.contains("__Host-medforge=") && over_https.contains("medforge_session="),
            "{over_https}"
        );
        assert_eq!(browser.cookie(&api_host, "/api/v2/me", false), None);
        let r = c.api(Method::GET, "/api/v2/me", Some(browser), None).await;
        assert_eq!(r.status, 200, "/me as {who}: {}", r.text());
    }
    writeln!(
        report,
        "- each browser sends both cookies to `https://{api_host}` and none to `http://{api_host}`"
    )
    .unwrap();

    // Each user creates a session and waits until it is Ready; its URL is
    // https, on the default port.
    writeln!(report, "\n## Sessions\n").unwrap();
    let mut sessions = Vec::new();
    for (who, browser) in [("alice", &alice), ("bob", &bob)] {
        let r = c
            .api(
                Method::POST,
                "/api/v2/external/sessions?wait=ready",
                Some(browser),
                Some(json!({"gpus": 1})),
            )
            .await;
        assert_eq!(
            r.status,
            201,
            "create for {who}: {}\n{}",
            r.text(),
            up.log_tail()
        );
        let s = r.json::<Value>().unwrap()["data"]["session"].clone();
        let slug = s["slug"].as_str().unwrap();
        assert_eq!(
            s["url"],
            format!("https://s-{slug}.external.{DOMAIN}/"),
            "{s}"
        );
        writeln!(report, "- create {who}: `{}` at `{}`", s["id"], s["url"]).unwrap();
        sessions.push(s);
    }
    let (a, b) = (sessions[0].clone(), sessions[1].clone());
    let slug_a = a["slug"].as_str().unwrap().to_string();
    let id_a = a["id"].as_str().unwrap().to_string();
    let host_a = https_host(&a["url"]);
    let host_b = https_host(&b["url"]);

    // The api said A is Ready: from here every answer for its host counts,
    // and whatever came before the first 200 is in the report.
    let mut before_200 = Vec::new();
    let first = eventually("session A routable", Duration::from_secs(30), async || {
        let r = c.get(&host_a, "/", Some(&alice)).await;
        if r.status == 200 {
            return Some(r);
        }
        before_200.push(r.status);
        None
    })
    .await;
    assert_eq!(first.text(), id_a, "the workload names its session");
    writeln!(
        report,
        "- answers for A after Ready before its first 200: `{before_200:?}`"
    )
    .unwrap();

    // The routing matrix through forward_auth, over HTTPS.
    writeln!(report, "\n## Routing authorization matrix over HTTPS\n").unwrap();
    let nobody = Browser::new();
    for (label, browser, want) in [
        ("unauthenticated", &nobody, 401),
        ("other user", &bob, 403),
        ("owner", &alice, 200),
        ("admin", &admin, 200),
    ] {
        let r = c.get(&host_a, "/", Some(browser)).await;
        writeln!(report, "- {label} on `https://{host_a}/`: `{}`", r.status).unwrap();
        assert_eq!(r.status, want, "{label}: {}", r.text());
    }
    let r = c
        .get(&host_a, "/api/v2/auth/session-proxy", Some(&admin))
        .await;
    writeln!(report, "- auth path on a session host: `{}`", r.status).unwrap();
    assert_eq!(r.status, 403);
    let r = c.get(&host_b, "/", Some(&bob)).await;
    assert_eq!(r.status, 200, "B's owner: {}", r.text());
    let b_ip = harness
        .container_ip(&format!("mf-session-{}", b["slug"].as_str().unwrap()))
        .await
        .unwrap();
    let spoof = format!("{b_ip}:8080");
    let r = c
        .call(
            Method::GET,
            &host_a,
            "/",
            Some(&alice),
            &[("X-Upstream", &spoof), ("X-Medforge-Upstream", &spoof)],
            None,
        )
        .await;
    writeln!(
        report,
        "- owner with B's upstream spoofed in X-Upstream: `{}` body `{}`",
        r.status,
        r.text()
    )
    .unwrap();
    assert_eq!((r.status, r.text()), (200, id_a.clone()));
    let short = format!("s-{slug_a}.{DOMAIN}");
    let internal = format!("s-{slug_a}.internal.{DOMAIN}");
    let unknown = format!("s-zzzzzzzz.external.{DOMAIN}");
    for (label, host, want) in [
        ("the short form", &short, 200),
        ("the internal form (wrong exposure)", &internal, 404),
        ("an unknown slug", &unknown, 404),
    ] {
        let r = c.get(host, "/", Some(&alice)).await;
        writeln!(
            report,
            "- owner on {label} `https://{host}/`: `{}`",
            r.status
        )
        .unwrap();
        assert_eq!(r.status, want, "{label}: {}", r.text());
    }
    // Each name got the certificate Caddy stored for its site, verified
    // against the root.
    let mut chains = Vec::new();
    for (host, site) in [
        (DOMAIN.to_string(), DOMAIN.to_string()),
        (api_host.clone(), api_host.clone()),
        (host_a.clone(), format!("*.external.{DOMAIN}")),
        (internal.clone(), format!("*.internal.{DOMAIN}")),
        (short.clone(), format!("*.{DOMAIN}")),
    ] {
        let chain = c.served_chain(&host).await;
        let stored = stored_chain(dir.path(), &site);
        assert_eq!(
            chain[0], stored[0],
            "{host} was not served the certificate of {site}"
        );
        writeln!(
            report,
            "- `{host}`: verified, Caddy's certificate for `{site}` (sha256 `{}`)",
            sha256(&chain[0])
        )
        .unwrap();
        chains.push((host, chain));
    }
    // The names are checked too: a certificate that verifies for its own
    // name does not for another one.
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(root_store(&root[0])),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    for (i, (host, chain)) in chains.iter().enumerate() {
        let (other, _) = &chains[(i + 1) % chains.len()];
        let verify = |name: &str| {
            verifier.verify_server_cert(
                &chain[0],
                &chain[1..],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                UnixTime::now(),
            )
        };
        assert!(verify(host).is_ok(), "{host}: {:?}", verify(host).err());
        let wrong = verify(other)
            .err()
            .unwrap_or_else(|| panic!("{host}'s certificate verified for {other}"));
        assert!(
            matches!(
                wrong,
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForNameContext { .. }
                    )
            ),
            "{host}'s certificate for {other}: {wrong:?}"
        );
    }
    writeln!(
        report,
        "- each of these certificates is refused for the next name in the list (`NotValidForName`)"
    )
    .unwrap();
    // State-changing api requests from a page that is not the api's own
    // https origin are refused.
    for origin in [format!("http://{DOMAIN}"), format!("https://{host_a}")] {
        let r = c
            .call(
                Method::POST,
                &api_host,
                "/api/v2/external/sessions",
                Some(&alice),
                &[("Origin", &origin)],
                Some(json!({"gpus": 0})),
            )
            .await;
        writeln!(report, "- create with `Origin: {origin}`: `{}`", r.status).unwrap();
        assert_eq!(r.status, 403, "Origin {origin}: {}", r.text());
        assert!(r.text().contains("origin_not_allowed"), "{}", r.text());
    }

    // Plain HTTP gets nothing of a session or the api: Caddy's port 80
    // answers every request, with or without a login cookie, with a 308
    // redirect to the same URL over HTTPS, an empty body and no cookie (a
    // login over plain HTTP issues none). A browser sends no login cookie
    // over plain HTTP at all (both are Secure); a client that sends one
    // anyway gets the same redirect.
    writeln!(report, "\n## Plain HTTP\n").unwrap();
    assert_eq!(alice.cookie(&host_a, "/", false), None);
    assert_eq!(alice.cookie(&api_host, "/api/v2/me", false), None);
    writeln!(
        report,
        "- alice's browser sends no cookie to `http://{host_a}/` or `http://{api_host}/`"
    )
    .unwrap();
    let session_cookie = alice.cookie(&host_a, "/", true).unwrap();
    let api_cookie = alice.cookie(&api_host, "/api/v2/me", true).unwrap();
    let login = json!({"email": "alice@medforge.test", "password": "correct horse battery"});
    for (label, method, host, path, cookie, body) in [
        (
            "session host, no cookie",
            Method::GET,
            &host_a,
            "/",
            None,
            None,
        ),
        (
            "session host, the cookie sent anyway",
            Method::GET,
            &host_a,
            "/workspace/?x=1",
            Some(session_cookie.as_str()),
            None,
        ),
        (
            "api, the cookies sent anyway",
            Method::GET,
            &api_host,
            "/api/v2/me",
            Some(api_cookie.as_str()),
            None,
        ),
        (
            "login",
            Method::POST,
            &api_host,
            "/api/v2/auth/login",
            None,
            Some(login.clone()),
        ),
    ] {
        let r = c.plain(method.clone(), host, path, cookie, body).await;
        let location = r
            .headers
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string();
        writeln!(
            report,
            "- {label}: `{method} http://{host}{path}` → `{}` Location `{location}`, {} body bytes, Set-Cookie {:?}",
            r.status,
            r.body.len(),
            set_cookies(&r)
        )
        .unwrap();
        assert_eq!(r.status, 308, "{label}: {}", r.text());
        assert_eq!(location, format!("https://{host}{path}"), "{label}");
        assert!(r.body.is_empty(), "{label}: {}", r.text());
        assert!(set_cookies(&r).is_empty(), "{label}: a cookie over HTTP");
    }

    // Runtime: GPU, workspace and a websocket, over TLS.
    writeln!(report, "\n## Runtime checks over HTTPS\n").unwrap();
    let env = c.get(&host_a, "/env", Some(&alice)).await;
    let gpu_uuid = a["gpus"][0]["uuid"].as_str().unwrap();
    assert!(
        env.text().contains(gpu_uuid),
        "{gpu_uuid} not in {}",
        env.text()
    );
    writeln!(report, "- session A sees its GPU `{gpu_uuid}`").unwrap();
    let put = c
        .call(
            Method::PUT,
            &host_a,
            "/workspace/evidence.txt",
            Some(&alice),
            &[],
            Some(json!("written over https")),
        )
        .await;
    assert!(put.is_success(), "PUT: {} {}", put.status, put.text());
    let got = c
        .get(&host_a, "/workspace/evidence.txt", Some(&alice))
        .await;
    assert!(got.text().contains("written over https"), "{}", got.text());
    writeln!(
        report,
        "- workspace write/read: `{}` `{}`",
        got.status,
        got.text()
    )
    .unwrap();
    let stream = c.connect(&host_a).await.unwrap();
    let echo = websocket_echo(stream, &host_a, &session_cookie, "hello over tls").await;
    c.log
        .record(format!("GET https://{host_a}/ws (websocket)"), 101);
    assert_eq!(echo, "hello over tls");
    writeln!(
        report,
        "- websocket over TLS through Caddy echoed: `{echo}`"
    )
    .unwrap();

    // Stop A: its host answers 404.
    writeln!(report, "\n## Stop\n").unwrap();
    let r = c.on_session(Method::POST, &id_a, "/stop", &alice).await;
    assert_eq!(r.status, 202, "stop: {}", r.text());
    eventually(
        "session A's host to answer 404",
        Duration::from_secs(30),
        async || (c.get(&host_a, "/", Some(&alice)).await.status == 404).then_some(()),
    )
    .await;
    writeln!(report, "- stop → `https://{host_a}/` answers 404").unwrap();
    let r = c.get(&host_b, "/", Some(&bob)).await;
    assert_eq!(r.status, 200, "B still runs: {}", r.text());

    // Clean up: the admin deletes both sessions; the node agent removes
    // their containers.
    for s in [&a, &b] {
        let id = s["id"].as_str().unwrap();
        let r = c.on_session(Method::DELETE, id, "", &admin).await;
        assert!(r.is_success(), "delete {id}: {}", r.text());
        let container = format!("mf-session-{}", s["slug"].as_str().unwrap());
        eventually(
            "the deleted session's container to be removed",
            Duration::from_secs(60),
            async || {
                harness
                    .docker()
                    .inspect_container(&container, None)
                    .await
                    .is_err()
            },
        )
        .await;
    }
    writeln!(
        report,
        "- both sessions deleted by the admin, containers removed"
    )
    .unwrap();
    report.push_str(&c.log.summary());
    up.stop(nix::sys::signal::Signal::SIGTERM);
    drop(caddy);
    let file = write_evidence("HTTPS", &report);
    println!("evidence report: {}\n{report}", file.display());
    scope.cleanup().await.unwrap();
}
