//! The JupyterLab pack, end to end through Caddy: `medforge up --default-pack
//! jupyter` inside the harness's network namespace makes the Pack from the
//! image `packs/jupyter/build.sh` built into the harness's Docker; a user
//! creates a session, opens the lab at the session's URL, starts a kernel,
//! runs `1+1` over the kernel's websocket through the proxy, saves a
//! notebook, stops and resumes the session and finds the notebook again;
//! another user gets 403 at the same URL. Prints how long a create took to
//! the lab answering, and writes `target/evidence/jupyter-evidence.md`.
//!
//! The image is built before the tests (`scripts/test.sh`; it needs Debian's
//! mirror and PyPI, which tests never reach): when the harness's Docker lacks
//! it, the test fails with the command that builds it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use medforge_testkit::bollard::query_parameters::ListImagesOptionsBuilder;
use medforge_testkit::{Harness, HttpResponse, Method, eventually};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "support/one_host.rs"]
mod one_host;
mod support;
use one_host::Proxy;
use support::{Account, Proc, free_port, scope_label, wait_until_ready};

const DOMAIN: &str = "medforge.test";
const ADMIN: Account = Account::new("admin@medforge.test", "admin-password-jupyter");
/// The recipe's label on the image (packs/jupyter/build.sh).
const RECIPE_LABEL: &str = "dev.medforge.pack.recipe";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The id of the image `packs/jupyter/build.sh` built from the recipe as it
/// is now; fails with the command that builds it when Docker has none.
async fn jupyter_image(harness: &Harness) -> String {
    let script = repo().join("packs/jupyter/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-hash")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{} --print-hash failed",
        script.display()
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let filters =
        std::collections::HashMap::from([("label", vec![format!("{RECIPE_LABEL}={hash}")])]);
    let images = harness
        .docker()
        .list_images(Some(
            ListImagesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap();
    match images.into_iter().max_by_key(|i| i.created) {
        Some(image) => image.id,
        None => panic!(
            "the JupyterLab pack's image (recipe {hash}) is not in the harness's Docker; build it with\n  \
             DOCKER_HOST=unix://{} bash packs/jupyter/build.sh\n(scripts/test.sh does this before the tests)",
            harness.layout().docker_socket.display()
        ),
    }
}

struct Ports {
    apiserver: u16,
    api: u16,
    caddy: u16,
    caddy_admin: u16,
}

/// `medforge up --default-pack jupyter`: no image given, so it takes the
/// newest one Docker has labelled for the Pack `jupyter`.
fn start_medforge(
    harness: &Harness,
    dir: &Path,
    ports: &Ports,
    zfs_root: &str,
    label: &str,
) -> Proc {
    let args: Vec<String> = [
        "up",
        "--container-label",
        label,
        "--data-dir",
        dir.join("data").to_str().unwrap(),
        "--apiserver-listen",
        &format!("127.0.0.1:{}", ports.apiserver),
        "--api-listen",
        &format!("127.0.0.1:{}", ports.api),
        "--domain",
        DOMAIN,
        "--insecure-cookies",
        "--signup-mode",
        "open",
        "--node-name",
        "jupyter-node",
        "--gpus",
        "static:2",
        "--docker-socket",
        harness.layout().docker_socket.to_str().unwrap(),
        "--zfs-root",
        zfs_root,
        "--zfs-binary",
        harness.zfs_binary().to_str().unwrap(),
        "--default-pack",
        "jupyter",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    one_host::spawn(
        harness,
        "medforge-up",
        Path::new(env!("CARGO_BIN_EXE_medforge")),
        &args,
        &[
            ("MEDFORGE_ADMIN_EMAIL", ADMIN.email.to_string()),
            ("MEDFORGE_ADMIN_PASSWORD", ADMIN.password.to_string()),
            ("RUST_LOG", "info".to_string()),
        ],
        false,
        dir,
    )
}

fn start_caddy(harness: &Harness, dir: &Path, ports: &Ports) -> Proc {
    let proxy = Proxy::Plain {
        port: ports.caddy,
        admin: ports.caddy_admin,
    };
    one_host::start_caddy_for(harness, dir, DOMAIN, ports.api, &proxy)
}

/// A browser, as far as this test needs one: requests to Caddy inside the
/// namespace with the MedForge login cookie of its user and the cookies
/// JupyterLab set.
struct Browser<'a> {
    harness: &'a Harness,
    caddy: SocketAddr,
    /// The `medforge_session` login cookie.
    login: String,
    /// JupyterLab's XSRF cookie, once the lab page set it.
    xsrf: Option<String>,
}

impl Browser<'_> {
    fn cookies(&self) -> String {
        let mut c = format!("medforge_session={}", self.login);
        if let Some(x) = &self.xsrf {
            write!(c, "; _xsrf={x}").unwrap();
        }
        c
    }

    /// `method host path` with this browser's cookies; a JSON body as
    /// JupyterLab sends it, with the XSRF header when `with_xsrf`.
    async fn send(
        &self,
        method: Method,
        host: &str,
        path: &str,
        body: Option<&Value>,
        with_xsrf: bool,
    ) -> HttpResponse {
        let cookies = self.cookies();
        let origin = format!("http://{host}");
        let mut headers = vec![("Host", host), ("Cookie", cookies.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if method != Method::GET {
            headers.push(("Origin", origin.as_str()));
        }
        if with_xsrf && let Some(x) = &self.xsrf {
            headers.push(("X-XSRFToken", x.as_str()));
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.harness
            .http_with_headers(method, self.caddy, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{host}{path}: {e}"))
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> HttpResponse {
        // The api's own hosts take the api's cookie.
        let cookie = format!("medforge_api={}", self.login);
        let host = format!("api.{DOMAIN}");
        let mut headers = vec![("Host", host.as_str()), ("Cookie", cookie.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        self.harness
            .http_with_headers(method, self.caddy, path, &headers, bytes)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

/// The value of the cookie `name` that an answer sets.
fn set_cookie(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// A websocket client (RFC 6455) over one connection through Caddy: text
/// frames out, masked; frames in, pings answered.
struct WebSocket {
    stream: TcpStream,
}

impl WebSocket {
    /// Sends the upgrade request; the answer's status line and, on 101, the socket.
    async fn open(
        harness: &Harness,
        caddy: SocketAddr,
        host: &str,
        path: &str,
        cookies: &str,
    ) -> (String, Option<WebSocket>) {
        let mut stream = harness.connect(caddy).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nCookie: {cookies}\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            if stream.read_exact(&mut b).await.is_err() {
                break;
            }
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let status = head.lines().next().unwrap_or_default().to_string();
        let socket = status
            .starts_with("HTTP/1.1 101")
            .then_some(WebSocket { stream });
        (status, socket)
    }

    async fn write_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mask: [u8; 4] = rand::random();
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= usize::from(u16::MAX) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.unwrap();
    }

    async fn send_text(&mut self, text: &str) {
        self.write_frame(0x1, text.as_bytes()).await;
    }

    /// The next whole text message; pings are answered, binary messages
    /// skipped. Panics when the server closes.
    async fn next_text(&mut self) -> String {
        let mut message = Vec::new();
        let mut text = false;
        loop {
            let mut hdr = [0u8; 2];
            self.stream.read_exact(&mut hdr).await.unwrap();
            let (fin, opcode) = (hdr[0] & 0x80 != 0, hdr[0] & 0x0f);
            let len = match hdr[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.stream.read_exact(&mut b).await.unwrap();
                    u64::from(u16::from_be_bytes(b))
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.stream.read_exact(&mut b).await.unwrap();
                    u64::from_be_bytes(b)
                }
                n => u64::from(n),
            };
            let mask = if hdr[1] & 0x80 != 0 {
                let mut m = [0u8; 4];
                self.stream.read_exact(&mut m).await.unwrap();
                Some(m)
            } else {
                None
            };
            let mut payload = vec![0u8; usize::try_from(len).unwrap()];
            self.stream.read_exact(&mut payload).await.unwrap();
            if let Some(m) = mask {
                payload
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, b)| *b ^= m[i % 4]);
            }
            match opcode {
                0x9 => self.write_frame(0xA, &payload).await,
                0x8 => panic!(
                    "the server closed the websocket: {}",
                    String::from_utf8_lossy(&payload)
                ),
                // A data frame: the first of a message says text or binary,
                // continuations (0) follow it.
                0x0..=0x2 => {
                    if opcode != 0x0 {
                        text = opcode == 0x1;
                    }
                    message.extend_from_slice(&payload);
                    if fin {
                        if text {
                            return String::from_utf8(message).unwrap();
                        }
                        message.clear();
                    }
                }
                _ => {}
            }
        }
    }
}

/// Runs `code` in the kernel over its channels websocket (Jupyter's
/// messaging protocol 5: an `execute_request` on the shell channel) and
/// returns the `text/plain` of its `execute_result`.
async fn execute(ws: &mut WebSocket, code: &str) -> String {
    let msg_id = format!("medforge-test-{:016x}", rand::random::<u64>());
    let request = json!({
        "header": {
            "msg_id": msg_id,
            "username": "medforge-test",
            "session": "medforge-test-session",
            "msg_type": "execute_request",
            "version": "5.3",
            "date": "",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": false,
            "store_history": true,
            "user_expressions": {},
            "allow_stdin": false,
            "stop_on_error": true,
        },
        "channel": "shell",
        "buffers": [],
    });
    ws.send_text(&request.to_string()).await;
    let answer = async {
        loop {
            let m: Value = serde_json::from_str(&ws.next_text().await).unwrap();
            if m["parent_header"]["msg_id"] != msg_id.as_str() {
                continue;
            }
            match m["msg_type"].as_str() {
                Some("execute_result") => {
                    return m["content"]["data"]["text/plain"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no text/plain in {m}"))
                        .to_string();
                }
                Some("error") => panic!("{code:?} failed in the kernel: {}", m["content"]),
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), answer)
        .await
        .unwrap_or_else(|_| panic!("no execute_result for {code:?} within 60 s"))
}

/// A notebook with one code cell and its output, as JupyterLab saves it.
fn notebook() -> Value {
    json!({
        "cells": [{
            "cell_type": "code",
            "execution_count": 1,
            "id": "medforge-evidence",
            "metadata": {},
            "outputs": [{
                "data": {"text/plain": "2"},
                "execution_count": 1,
                "metadata": {},
                "output_type": "execute_result",
            }],
            "source": "1+1",
        }],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_runs_a_notebook_in_jupyterlab_through_the_proxy() {
    let harness = Harness::get().await.expect("harness");
    let image = jupyter_image(&harness).await;
    let mut scope = harness.scope().await.expect("scope");
    let dir = tempfile::tempdir().unwrap();
    let zfs_root = format!("{}/ws", scope.dataset());
    let label = scope_label(&scope);
    let ports = Ports {
        apiserver: free_port(),
        api: free_port(),
        caddy: free_port(),
        caddy_admin: free_port(),
    };
    let mut report = String::new();
    writeln!(
        report,
        "# The JupyterLab pack through Caddy\n\n- image: `{image}`"
    )
    .unwrap();

    let mut up = start_medforge(&harness, dir.path(), &ports, &zfs_root, &label);
    let caddy = start_caddy(&harness, dir.path(), &ports);
    let api_addr: SocketAddr = format!("127.0.0.1:{}", ports.api).parse().unwrap();
    let caddy_addr: SocketAddr = format!("127.0.0.1:{}", ports.caddy).parse().unwrap();
    wait_until_ready(&harness, api_addr, &up).await;
    if harness
        .wait_for_port(caddy_addr, Duration::from_secs(20))
        .await
        .is_err()
    {
        panic!("caddy never listened:\n{}", caddy.log_tail());
    }

    let post = |path: &'static str, body: Value| {
        let harness = &harness;
        async move {
            let host = format!("api.{DOMAIN}");
            let headers = [
                ("Host", host.as_str()),
                ("Content-Type", "application/json"),
            ];
            harness
                .http_with_headers(Method::POST, caddy_addr, path, &headers, body.to_string())
                .await
                .unwrap()
        }
    };
    let alice_login = Account::new("alice@medforge.test", "correct horse battery")
        .sign_up(post)
        .await;
    let bob_login = Account::new("bob@medforge.test", "correct horse battery")
        .sign_up(post)
        .await;
    let admin = Browser {
        harness: &harness,
        caddy: caddy_addr,
        login: ADMIN.log_in(post).await,
        xsrf: None,
    };
    let mut alice = Browser {
        harness: &harness,
        caddy: caddy_addr,
        login: alice_login,
        xsrf: None,
    };
    let bob = Browser {
        harness: &harness,
        caddy: caddy_addr,
        login: bob_login,
        xsrf: None,
    };

    // `medforge up` made the Pack from the image built for it.
    let packs: Value = alice
        .api(Method::GET, "/api/v2/packs", None)
        .await
        .json()
        .unwrap();
    let pack = packs["data"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "jupyter"))
        .unwrap_or_else(|| panic!("no Pack jupyter in {packs}\n{}", up.log_tail()))
        .clone();
    writeln!(report, "- the Pack as the catalogue shows it: `{pack}`").unwrap();
    assert_eq!(
        pack["image"],
        image.as_str(),
        "the newest image built for it"
    );
    assert_eq!(pack["port"], 8888);
    assert_eq!(pack["display_name"], "JupyterLab");

    // Alice creates a session (the default Pack: jupyter) and opens the lab:
    // the time from the create to the lab's first 200 through Caddy.
    let created_at = Instant::now();
    let r = alice
        .api(
            Method::POST,
            "/api/v2/external/sessions",
            Some(json!({"gpus": 1})),
        )
        .await;
    assert_eq!(r.status, 201, "create: {}\n{}", r.text(), up.log_tail());
    let create_answered = created_at.elapsed();
    let session = r.json::<Value>().unwrap()["data"]["session"].clone();
    assert_eq!(session["pack"], "jupyter", "the default Pack: {session}");
    let id = session["id"].as_str().unwrap().to_string();
    let slug = session["slug"].as_str().unwrap().to_string();
    let host = format!("s-{slug}.external.{DOMAIN}");
    let mut before_lab = Vec::new();
    let lab = eventually(
        "the lab page to answer 200",
        Duration::from_secs(180),
        async || {
            let r = alice.send(Method::GET, &host, "/lab", None, false).await;
            if r.status == 200 {
                return Some(r);
            }
            if before_lab.last() != Some(&r.status) {
                before_lab.push(r.status);
            }
            None
        },
    )
    .await;
    let create_to_lab = created_at.elapsed();
    println!(
        "create → lab 200 through Caddy: {} ms (the create answered after {} ms; answers before: {before_lab:?})",
        create_to_lab.as_millis(),
        create_answered.as_millis()
    );
    writeln!(
        report,
        "- create → lab page 200 through Caddy: **{} ms** (the create answered after {} ms; the lab's answers before its 200, repeats folded: `{before_lab:?}`)",
        create_to_lab.as_millis(),
        create_answered.as_millis()
    )
    .unwrap();
    let page = lab.text();
    assert!(page.contains("<title>JupyterLab</title>"), "{page}");
    for setting in [
        r#""baseUrl": "/""#,
        r#""token": """#,
        r#""serverRoot": "/workspace""#,
    ] {
        assert!(
            page.contains(setting),
            "{setting} not in the lab's page config"
        );
    }
    alice.xsrf = Some(set_cookie(&lab, "_xsrf").expect("the lab page sets the _xsrf cookie"));

    // A kernel: refused without the XSRF header (Jupyter's own check stays
    // on behind the proxy), created with it.
    let refused = alice
        .send(
            Method::POST,
            &host,
            "/api/kernels",
            Some(&json!({"name": "python3"})),
            false,
        )
        .await;
    assert_eq!(
        refused.status,
        403,
        "a POST without X-XSRFToken: {}",
        refused.text()
    );
    let kernel = alice
        .send(
            Method::POST,
            &host,
            "/api/kernels",
            Some(&json!({"name": "python3"})),
            true,
        )
        .await;
    assert_eq!(kernel.status, 201, "start a kernel: {}", kernel.text());
    let kernel_id = kernel.json::<Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    writeln!(
        report,
        "- POST /api/kernels: 403 without X-XSRFToken, 201 with it"
    )
    .unwrap();

    // `1+1` over the kernel's websocket through Caddy.
    let channels = format!("/api/kernels/{kernel_id}/channels");
    let (status, ws) =
        WebSocket::open(&harness, caddy_addr, &host, &channels, &alice.cookies()).await;
    let mut ws = ws.unwrap_or_else(|| panic!("the kernel's websocket: {status}"));
    let two = execute(&mut ws, "1+1").await;
    writeln!(report, "- `1+1` over the kernel's websocket: `{two}`").unwrap();
    assert_eq!(two, "2");
    // The session's environment as the notebook sees it: its GPU, uid 1000,
    // the workspace as home and working directory.
    let env = execute(
        &mut ws,
        "import os; (os.environ.get('NVIDIA_VISIBLE_DEVICES'), os.environ.get('CUDA_DEVICE_ORDER'), os.getuid(), os.getcwd(), os.environ.get('HOME'))",
    )
    .await;
    writeln!(report, "- the kernel's environment: `{env}`").unwrap();
    let gpu = session["gpus"][0]["uuid"].as_str().unwrap();
    assert_eq!(
        env,
        format!("('{gpu}', 'PCI_BUS_ID', 1000, '/workspace', '/workspace')")
    );
    drop(ws);

    // Save a notebook.
    let saved = alice
        .send(
            Method::PUT,
            &host,
            "/api/contents/evidence.ipynb",
            Some(&json!({"type": "notebook", "format": "json", "content": notebook()})),
            true,
        )
        .await;
    assert_eq!(saved.status, 201, "save: {}", saved.text());
    writeln!(
        report,
        "- PUT /api/contents/evidence.ipynb: `{}`",
        saved.status
    )
    .unwrap();

    // Another user: 403 at the same URL, for the page, the api and the websocket.
    let r = bob.send(Method::GET, &host, "/lab", None, false).await;
    assert_eq!(r.status, 403, "another user on the lab: {}", r.text());
    let (status, ws) =
        WebSocket::open(&harness, caddy_addr, &host, &channels, &bob.cookies()).await;
    assert!(
        ws.is_none() && status.contains(" 403"),
        "another user's websocket: {status}"
    );
    writeln!(
        report,
        "- another user: `/lab` 403, kernel websocket `{status}`"
    )
    .unwrap();

    // Stop, then resume: the notebook is there at the same URL.
    let r = alice
        .api(
            Method::POST,
            &format!("/api/v2/external/sessions/{id}/stop"),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "stop: {}", r.text());
    eventually(
        "the stopped session's host to answer 404",
        Duration::from_secs(60),
        async || {
            alice
                .send(Method::GET, &host, "/lab", None, false)
                .await
                .status
                == 404
        },
    )
    .await;
    // The node agent finishes the stop (the container stopped, the
    // workspace snapshotted) before the start below.
    eventually(
        "the session's phase stopped",
        Duration::from_secs(60),
        async || {
            let r = alice
                .api(
                    Method::GET,
                    &format!("/api/v2/external/sessions/{id}"),
                    None,
                )
                .await;
            let s: Value = r.json().ok()?;
            (s["data"]["phase"] == "stopped").then_some(())
        },
    )
    .await;
    let resumed_at = Instant::now();
    let r = alice
        .api(
            Method::POST,
            &format!("/api/v2/external/sessions/{id}/start"),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "start: {}", r.text());
    let back = eventually(
        "the notebook served again",
        Duration::from_secs(180),
        async || {
            let r = alice
                .send(
                    Method::GET,
                    &host,
                    "/api/contents/evidence.ipynb",
                    None,
                    false,
                )
                .await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    let resume_to_notebook = resumed_at.elapsed();
    let got: Value = back.json().unwrap();
    assert_eq!(got["content"]["cells"][0]["source"], "1+1", "{got}");
    assert_eq!(
        got["content"]["cells"][0]["outputs"][0]["data"]["text/plain"],
        "2"
    );
    writeln!(
        report,
        "- stop, then start → the notebook served again after {} ms",
        resume_to_notebook.as_millis()
    )
    .unwrap();
    println!(
        "start → the saved notebook served again: {} ms",
        resume_to_notebook.as_millis()
    );
    let r = bob.send(Method::GET, &host, "/lab", None, false).await;
    assert_eq!(r.status, 403, "another user on the resumed session");

    // Clean up: an admin deletes the session; the node agent's finalizer
    // removes the container.
    let r = admin
        .api(
            Method::DELETE,
            &format!("/api/v2/external/sessions/{id}"),
            None,
        )
        .await;
    assert!(r.is_success(), "delete: {} {}", r.status, r.text());
    let container = format!("mf-session-{slug}");
    eventually(
        "the session's container removed",
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
    up.stop(nix::sys::signal::Signal::SIGTERM);
    drop(caddy);

    let out = repo().join("target/evidence");
    std::fs::create_dir_all(&out).unwrap();
    let file = out.join("jupyter-evidence.md");
    std::fs::write(&file, &report).unwrap();
    println!("evidence report: {}\n{report}", file.display());
    scope.cleanup().await.unwrap();
}
