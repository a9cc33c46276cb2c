//! The test harness: an API over a control plane (the in-memory one, or the
//! embedded one with the real scheduler and a node agent: `cluster`) and a
//! real database (a SQLite file in a temporary directory, or a database of
//! its own in the shared PostgreSQL cluster: `crate::postgres`), and a small
//! request builder over `oneshot`.

pub mod cluster;

use std::net::SocketAddr;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use medforge_api::backend::{MemoryBackend, MemoryBackendConfig, SessionBackend};
use medforge_api::{Api, ApiConfig, AppState, Db, PasswordHashing};
use medforge_crds::Session;
use serde_json::Value;
use tower::ServiceExt;

pub use self::cluster::{Cluster, Plane};

/// The base domain of every test API.
pub const DOMAIN: &str = "medforge.test";
/// An allowed origin.
pub const GOOD_ORIGIN: &str = "https://medforge.test";

/// Where a test's databases come from.
#[derive(Clone, Debug)]
pub enum TestEnv {
    /// A SQLite file per app.
    Sqlite,
    /// A database per app in the shared PostgreSQL cluster, reached through
    /// its admin URL, named `<prefix>_<n>` (the prefix is the test's).
    Postgres {
        /// `postgres://postgres@127.0.0.1:<port>`
        base_url: String,
        /// `t_<pid>_<test>`: the scenario's databases, dropped after it.
        prefix: String,
    },
}

static DB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Declares scenarios: each becomes a test on SQLite (`on_sqlite::<name>`)
/// and one on PostgreSQL (`on_postgres::<name>`). A scenario chooses its
/// control plane itself: `env.app()` is the in-memory one, `env.on(plane)`
/// the embedded one ([`Plane`]).
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::TestEnv::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::postgres::scenario(super::$name).await
                }
            )*
        }
    };
}

/// An image reference the api accepts for a Pack (a local image id).
pub const PACK_IMAGE: &str =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A Pack named `name` with `spec` (a CRD spec in JSON; `image` is filled in).
pub fn pack(name: &str, mut spec: Value) -> medforge_crds::Pack {
    if spec.get("image").is_none() {
        spec["image"] = PACK_IMAGE.into();
    }
    medforge_crds::Pack::new(name, serde_json::from_value(spec).expect("a Pack spec"))
}

/// The in-memory control plane of most tests: automatic scheduling, 10 sessions per user.
pub fn memory_defaults() -> MemoryBackendConfig {
    MemoryBackendConfig {
        default_user_limit: 10,
        ..MemoryBackendConfig::default()
    }
}

/// Test defaults: cheap hashing, generous rate limits, short waits, manual flushes.
pub fn test_config(data_dir: PathBuf) -> ApiConfig {
    let mut config = ApiConfig::new(DOMAIN, data_dir);
    config.auth.password_hashing = PasswordHashing::INSECURE_FAST;
    // Most tests sign their users up; `accounts` tests each mode.
    config.auth.signup = medforge_api::SignupMode::Open;
    config.rate_limit.burst = 10_000;
    config.rate_limit.per_minute = 10_000;
    config.sessions.schedule_timeout = Duration::from_secs(5);
    config.sessions.ready_timeout = Duration::from_secs(5);
    config.activity_flush_interval = Duration::from_secs(3600);
    config
}

impl TestEnv {
    /// An app on the in-memory control plane with the test defaults, one
    /// node of 4 GPUs and the Pack `default`.
    pub async fn app(&self) -> TestApp {
        self.app_with(|_| {}, memory_defaults()).await
    }

    /// An app on the in-memory control plane with a changed configuration.
    pub async fn app_with(
        &self,
        configure: impl FnOnce(&mut ApiConfig),
        memory: MemoryBackendConfig,
    ) -> TestApp {
        let backend = MemoryBackend::new(memory);
        backend.add_node("node-a", 4);
        // The configured default Pack, as `medforge up` applies it.
        backend.put_pack(pack("default", serde_json::json!({})));
        self.start(
            configure,
            Arc::new(backend.clone()),
            Backing::Memory(backend),
        )
        .await
    }

    /// An app on the embedded control plane with `plane` beside it (the real
    /// scheduler, a node agent), its node `node-a` and the Pack `default`.
    pub async fn on(&self, plane: Plane) -> TestApp {
        self.on_with(|_| {}, plane).await
    }

    /// An app on the embedded control plane with a changed configuration.
    /// Waits are longer than on the in-memory one: real components decide.
    pub async fn on_with(&self, configure: impl FnOnce(&mut ApiConfig), plane: Plane) -> TestApp {
        let cluster = Cluster::start(plane).await;
        let backend = cluster.backend();
        self.start(
            |c| {
                c.sessions.schedule_timeout = Duration::from_secs(30);
                c.sessions.ready_timeout = Duration::from_secs(30);
                configure(c);
            },
            backend,
            Backing::Cluster(Box::new(cluster)),
        )
        .await
    }

    async fn start(
        &self,
        configure: impl FnOnce(&mut ApiConfig),
        backend: Arc<dyn SessionBackend>,
        backing: Backing,
    ) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(dir.path().to_path_buf());
        if let TestEnv::Postgres { base_url, prefix } = self {
            let n = DB_COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("{prefix}_{n}");
            create_database(base_url, &name).await;
            config.database_url = Some(format!("{base_url}/{name}"));
        }
        configure(&mut config);
        let db = Db::connect(config.database_url.as_deref(), &config.data_dir)
            .await
            .expect("database");
        db.migrate().await.expect("migrations");
        let api = Api::with_db(config, db, backend);
        assert!(
            api.wait_synced(Duration::from_secs(10)).await,
            "watch synced"
        );
        TestApp {
            router: api.router(),
            api,
            backend: backing,
            _dir: dir,
        }
    }
}

async fn create_database(base_url: &str, name: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&format!("{base_url}/postgres"))
        .await
        .expect("connect to the test cluster");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create database");
    let _ = conn.close().await;
}

/// The control plane of a test app. `t.backend.…` is the in-memory one (a
/// scenario on the embedded one that reaches for it fails, naming
/// [`TestApp::cluster`]).
pub enum Backing {
    Memory(MemoryBackend),
    Cluster(Box<Cluster>),
}

impl Deref for Backing {
    type Target = MemoryBackend;

    #[track_caller]
    fn deref(&self) -> &MemoryBackend {
        match self {
            Backing::Memory(memory) => memory,
            Backing::Cluster(_) => {
                panic!(
                    "this app runs on the embedded control plane: use t.cluster(), not t.backend"
                )
            }
        }
    }
}

/// A running test API.
pub struct TestApp {
    /// The API (background tasks run while it lives).
    pub api: Api,
    /// Its router.
    pub router: Router,
    /// The control plane.
    pub backend: Backing,
    _dir: tempfile::TempDir,
}

/// Polls `check` (every 10 ms) until it gives a value, and returns it;
/// fails the test, naming `what`, after 30 s.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 30 s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Client {
    /// The login token (cookie value).
    pub token: String,
    /// The user's id.
    pub id: String,
}

impl Client {
    /// The `Cookie` header value: the api's own cookie and the session
    /// hosts' one, as a browser holds them after a login.
    pub fn cookie(&self) -> String {
        format!("{}; {}", self.api_cookie(), self.session_cookie())
    }

    /// The api's own login cookie alone.
    pub fn api_cookie(&self) -> String {
        format!("__Host-medforge={}", self.token)
    }

    /// The session hosts' login cookie alone (what forward_auth reads).
    pub fn session_cookie(&self) -> String {
        format!("medforge_session={}", self.token)
    }
}

impl TestApp {
    /// The state.
    pub fn state(&self) -> &AppState {
        self.api.state()
    }

    /// A request.
    pub fn req(&self, method: Method, uri: &str) -> Req {
        Req {
            router: self.router.clone(),
            builder: Request::builder().method(method).uri(uri),
            body: Body::empty(),
        }
    }

    /// GET.
    pub fn get(&self, uri: &str) -> Req {
        self.req(Method::GET, uri)
    }

    /// POST.
    pub fn post(&self, uri: &str) -> Req {
        self.req(Method::POST, uri)
    }

    /// GET as `who`.
    pub async fn get_as(&self, who: &Client, uri: &str) -> Res {
        self.get(uri).cookie(who).send().await
    }

    /// POST without a body as `who`.
    pub async fn post_as(&self, who: &Client, uri: &str) -> Res {
        self.post(uri).cookie(who).send().await
    }

    /// Sends `method path` as `who` (anonymous with `None`) and checks the
    /// answer is the problem `status`/`code`; its body.
    pub async fn problem(
        &self,
        method: Method,
        path: &str,
        who: Option<&Client>,
        status: u16,
        code: &str,
    ) -> serde_json::Value {
        let mut req = self.req(method, path);
        if let Some(who) = who {
            req = req.cookie(who);
        }
        req.send().await.problem(status, code)
    }

    /// Sends `method path` without a login and checks it is refused: 401 `unauthenticated`.
    pub async fn refuses_anonymous(&self, method: Method, path: &str) {
        self.problem(method, path, None, 401, "unauthenticated")
            .await;
    }

    /// An event token for `who` (`POST /api/v2/events/token`, 201): the whole `data`.
    pub async fn event_token(&self, who: &Client) -> serde_json::Value {
        self.post("/api/v2/events/token")
            .cookie(who)
            .send()
            .await
            .data(201)
    }

    /// Signs up a user and returns it logged in.
    pub async fn user(&self, email: &str) -> Client {
        self.sign_in(
            "/api/v2/auth/signup",
            email,
            "correct horse",
            StatusCode::CREATED,
        )
        .await
    }

    /// Another login of a user made by [`TestApp::user`].
    pub async fn log_in_again(&self, email: &str) -> Client {
        self.sign_in("/api/v2/auth/login", email, "correct horse", StatusCode::OK)
            .await
    }

    /// An admin, created through the bootstrap path, logged in.
    pub async fn admin(&self, email: &str) -> Client {
        medforge_api::ensure_admin(
            self.state().db(),
            PasswordHashing::INSECURE_FAST,
            email,
            Some("admin password"),
            medforge_api::ExistingAccount::Refuse,
        )
        .await
        .expect("admin");
        self.sign_in(
            "/api/v2/auth/login",
            email,
            "admin password",
            StatusCode::OK,
        )
        .await
    }

    /// Posts `email` and `password` to `path` (signup or login), checks the
    /// answer is `status`, and returns the client it logged in.
    async fn sign_in(&self, path: &str, email: &str, password: &str, status: StatusCode) -> Client {
        let res = self
            .post(path)
            .json(serde_json::json!({"email": email, "password": password}))
            .send()
            .await;
        assert_eq!(res.status, status, "{}", res.text());
        client_from(&res)
    }

    /// `POST /api/v2/external/sessions` as `who` with a JSON `body`.
    pub async fn create_session(&self, who: &Client, body: Value) -> Res {
        self.post("/api/v2/external/sessions")
            .cookie(who)
            .json(body)
            .send()
            .await
    }

    /// Creates an external session for a user and returns its body (`data.session`).
    pub async fn session(&self, client: &Client) -> Value {
        let res = self
            .create_session(client, serde_json::json!({"gpus": 1}))
            .await;
        assert_eq!(res.status, StatusCode::CREATED, "{}", res.text());
        res.json()["data"]["session"].clone()
    }

    /// Creates or replaces a Pack in the in-memory control plane (as kubectl would).
    pub fn put_pack(&self, name: &str, spec: Value) {
        self.backend.put_pack(pack(name, spec));
    }

    /// The embedded control plane this app runs on.
    #[track_caller]
    pub fn cluster(&self) -> &Cluster {
        match &self.backend {
            Backing::Cluster(cluster) => cluster,
            Backing::Memory(_) => panic!("this app runs on the in-memory control plane"),
        }
    }

    /// The Session `id` as the control plane stores it.
    pub async fn stored(&self, id: &str) -> Option<Session> {
        match &self.backend {
            Backing::Memory(memory) => memory.session(id),
            Backing::Cluster(cluster) => cluster.session(id).await,
        }
    }

    /// Every Session the control plane stores.
    pub async fn stored_sessions(&self) -> Vec<Session> {
        match &self.backend {
            Backing::Memory(memory) => memory.sessions(),
            Backing::Cluster(cluster) => cluster.sessions().await,
        }
    }

    /// Polls until the index shows the session `id` in `phase` (and, for
    /// `running`, routable).
    pub async fn wait_phase(&self, id: &str, phase: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.state().index().get(id);
            if let Some(e) = &seen
                && format!("{:?}", e.phase()).eq_ignore_ascii_case(phase)
                && (phase != "running" || e.upstream.is_some())
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {id} never reached {phase}; last seen: {:?}",
                seen.map(|e| e.session.status.clone())
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// session-proxy for a host, with optional cookie.
    pub async fn proxy(&self, host: &str, client: Option<&Client>) -> Res {
        let mut req = self.get("/api/v2/auth/session-proxy").header("host", host);
        if let Some(c) = client {
            req = req.cookie(c);
        }
        req.send().await
    }
}

/// A session of `owner`'s (`owner@example.org`), with `other`, another
/// user, and `admin`.
pub struct OneSession {
    pub t: TestApp,
    pub owner: Client,
    pub other: Client,
    pub admin: Client,
    pub id: String,
    pub slug: String,
}

impl TestEnv {
    /// An app on the in-memory control plane with one session (not waited
    /// for) and the three users around it.
    pub async fn one_session(&self) -> OneSession {
        OneSession::around(self.app().await).await
    }

    /// The same on the embedded control plane with `plane` beside it.
    pub async fn one_session_on(&self, plane: Plane) -> OneSession {
        OneSession::around(self.on(plane).await).await
    }
}

impl OneSession {
    async fn around(t: TestApp) -> OneSession {
        let owner = t.user("owner@example.org").await;
        let other = t.user("other@example.org").await;
        let admin = t.admin("root@example.org").await;
        let s = t.session(&owner).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let slug = s["slug"].as_str().unwrap().to_owned();
        OneSession {
            t,
            owner,
            other,
            admin,
            id,
            slug,
        }
    }
}

/// The logged-in client from a signup or login response.
pub fn client_from(res: &Res) -> Client {
    let values: Vec<&str> = res
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let token_of = |name: &str| {
        values
            .iter()
            .find_map(|v| v.split(';').next()?.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {values:?}"))
            .to_owned()
    };
    let token = token_of("__Host-medforge=");
    assert_eq!(
        token_of("medforge_session="),
        token,
        "both login cookies carry the one token"
    );
    let body = res.json();
    Client {
        token,
        id: body["data"]["user"]["id"].as_str().unwrap().to_owned(),
    }
}

/// A request on a router.
pub fn request(router: &Router, method: Method, uri: &str) -> Req {
    Req {
        router: router.clone(),
        builder: Request::builder().method(method).uri(uri),
        body: Body::empty(),
    }
}

/// A request being built.
pub struct Req {
    router: Router,
    builder: axum::http::request::Builder,
    body: Body,
}

impl Req {
    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(
            HeaderName::try_from(name).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        self
    }

    /// Sends the client's cookie.
    pub fn cookie(self, client: &Client) -> Self {
        let cookie = client.cookie();
        self.header("cookie", &cookie)
    }

    /// A JSON body.
    pub fn json(mut self, value: Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(value.to_string());
        self
    }

    /// A raw body.
    pub fn body(mut self, content_type: Option<&str>, body: impl Into<Bytes>) -> Self {
        if let Some(ct) = content_type {
            self.builder = self.builder.header(header::CONTENT_TYPE, ct);
        }
        self.body = Body::from(body.into());
        self
    }

    /// Pretends the request came from this peer.
    pub fn peer(mut self, addr: &str) -> Self {
        let addr: SocketAddr = addr.parse().unwrap();
        self.builder = self.builder.extension(ConnectInfo(addr));
        self
    }

    /// Sends it and reads the whole body.
    pub async fn send(self) -> Res {
        let method = self.builder.method_ref().cloned().unwrap_or(Method::GET);
        let uri = self
            .builder
            .uri_ref()
            .map(|u| u.path().to_owned())
            .unwrap_or_default();
        let response = self.send_streaming().await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Res {
            status: parts.status,
            headers: parts.headers,
            body,
            method,
            path: uri,
        }
    }

    /// Sends it and returns the response with its body unread (for SSE).
    pub async fn send_streaming(self) -> axum::response::Response {
        let request = self.builder.body(self.body).expect("request");
        self.router.oneshot(request).await.expect("infallible")
    }
}

/// A response.
#[derive(Debug)]
pub struct Res {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// The request's method.
    pub method: Method,
    /// The request's path.
    pub path: String,
}

/// The documented operation that serves this request, if any.
fn documented(method: &Method, path: &str) -> Option<medforge_api::openapi::Operation> {
    medforge_api::openapi::operation_for(method.as_str(), path)
}

impl Res {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem response with this status and code, and returns its body.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], status);
        // Every problem a test sees is one the OpenAPI document lists for its route.
        if let Some(op) = documented(&self.method, &self.path) {
            assert!(
                op.codes(status).contains(&code),
                "{} {} answered {status} {code}, which the OpenAPI document does not list (it lists {:?})",
                self.method,
                self.path,
                op.codes(status)
            );
        }
        assert!(body["type"].as_str().unwrap().ends_with(code));
        assert_eq!(
            body["request_id"].as_str(),
            self.header("x-request-id"),
            "problem request_id matches the header"
        );
        body
    }

    /// Asserts a problem response with this status and code whose `detail`
    /// mentions `needle`, and returns its body.
    #[track_caller]
    pub fn problem_mentioning(&self, status: u16, code: &str, needle: &str) -> Value {
        let body = self.problem(status, code);
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{needle:?} not in {body}");
        body
    }

    /// Asserts a success envelope with this status, and returns `data`.
    #[track_caller]
    pub fn data(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        if let Some(op) = documented(&self.method, &self.path) {
            assert!(
                op.succeeds_with(status),
                "{} {} answered {status}, which the OpenAPI document does not list",
                self.method,
                self.path
            );
        }
        let body = self.json();
        assert_eq!(
            body["meta"]["request_id"].as_str(),
            self.header("x-request-id")
        );
        assert_eq!(body["meta"]["api_version"], "v2");
        body["data"].clone()
    }

    /// The field names of a 422's `errors[]`.
    pub fn error_fields(&self) -> Vec<String> {
        self.problem(422, "validation_failed")["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}
