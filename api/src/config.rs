//! Configuration of the API service. The CLI fills this in; every field has a sound default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use medforge_crds::policy::SessionPolicy;

/// Everything the API needs to know, apart from the control plane it talks to.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// The MedForge base domain (`medforge.example.org`). Session hosts, allowed origins
    /// and the cookie domain derive from it.
    pub domain: String,
    /// Where external sessions are served: `s-<slug>.<external_domain>` (default `external.<domain>`).
    /// `s-<slug>.<domain>` is accepted for external sessions as well.
    pub external_domain: String,
    /// Where internal sessions are served: `s-<slug>.<internal_domain>` (default `internal.<domain>`).
    pub internal_domain: String,
    /// Scheme of the session URLs shown to users (`https`).
    pub public_scheme: String,
    /// Origins allowed on state-changing routes besides the derived ones
    /// (`https://<domain>`, `https://api.<domain>`, `https://<external_domain>`,
    /// `https://<internal_domain>`). Exact `scheme://host[:port]` strings.
    pub extra_allowed_origins: Vec<String>,
    /// The SQL database: `postgres://…` or `sqlite:…`; `None` means a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Directory for the default SQLite database.
    pub data_dir: PathBuf,
    /// The login cookie.
    pub cookie: CookieConfig,
    /// Login token lifetimes and caching.
    pub auth: AuthConfig,
    /// Rate limit of signup and login per client network (IPv4 address, IPv6 /64).
    pub rate_limit: RateLimitConfig,
    /// Peers whose `X-Forwarded-For` is believed (the reverse proxy). Default: loopback.
    pub trusted_proxies: Vec<IpAddr>,
    /// Session creation defaults and waits.
    pub sessions: SessionsConfig,
    /// How often activity (session requests through the proxy, token use) is written back.
    pub activity_flush_interval: Duration,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Create or promote this admin at start-up (never a default password).
    pub bootstrap_admin: Option<AdminBootstrap>,
}

/// The first admin, from configuration.
#[derive(Clone)]
pub struct AdminBootstrap {
    /// The admin's email.
    pub email: String,
    /// The admin's password; used only when the account does not exist yet.
    pub password: String,
}

impl std::fmt::Debug for AdminBootstrap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminBootstrap")
            .field("email", &self.email)
            .field("password", &"***")
            .finish()
    }
}

/// `SameSite` attribute of the login cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Lax` (default): sent on top-level navigations, which session hosts need.
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (requires `Secure`).
    None,
}

impl SameSite {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

impl std::str::FromStr for SameSite {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "lax" => Ok(SameSite::Lax),
            "strict" => Ok(SameSite::Strict),
            "none" => Ok(SameSite::None),
            other => Err(format!(
                "unknown SameSite {other:?}: use lax, strict or none"
            )),
        }
    }
}

/// The login cookies' attributes. A login sets two cookies with the same
/// token: the api's own, host-only (`__Host-medforge`: no `Domain`, so no
/// session host can set or shadow it), which is the only cookie the api's
/// routes read; and the session hosts' (`medforge_session`, `Domain` the
/// base domain), which only forward_auth reads. See decision 0013.
#[derive(Clone, Debug)]
pub struct CookieConfig {
    /// The session hosts' cookie (`medforge_session`).
    pub name: String,
    /// The api's own cookie: `__Host-medforge` (needs `Secure`), or
    /// `medforge_api` when cookies are not `Secure` (plain-HTTP testing).
    pub api_name: String,
    /// `Secure` attribute (default true; turn off only for plain-HTTP development).
    pub secure: bool,
    /// `SameSite` attribute (default Lax).
    pub same_site: SameSite,
    /// `Domain` attribute (default `.<domain>`, so that session hosts receive it); `None` omits it.
    pub domain: Option<String>,
}

/// Login token lifetimes and password hashing cost.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// A token unused for this long is invalid.
    pub idle_ttl: Duration,
    /// A token older than this is invalid, however often it is used.
    pub max_ttl: Duration,
    /// How long a resolved token is trusted from memory before the database is asked again
    /// (bounds how late a logout on another replica or a changed admin flag is seen).
    pub token_cache_ttl: Duration,
    /// Who may create an account with `POST /api/v2/auth/signup`.
    pub signup: SignupMode,
    /// Argon2id cost.
    pub password_hashing: PasswordHashing,
    /// Most password hashes (signup, login) computed at once; beyond it,
    /// 503 `busy` with `Retry-After` (default: twice the CPUs, at least 2).
    pub max_concurrent_hashes: usize,
    /// Lifetime of the single-use tokens for `EventSource`.
    pub event_token_ttl: Duration,
}

/// Who may sign up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SignupMode {
    /// Nobody: admins create accounts (`POST /api/v2/admin/users`). The default.
    #[default]
    Closed,
    /// Whoever has an unused, unexpired invite code an admin created.
    Invite,
    /// Whoever has an email address in one of these domains (lower case,
    /// exact match of the part after `@`).
    Domains(Vec<String>),
    /// Anyone who reaches the site.
    Open,
}

impl SignupMode {
    /// From the mode's name and, for `domains`, the domains; the error says
    /// what is wrong.
    pub fn parse(mode: &str, domains: &[String]) -> Result<SignupMode, String> {
        let domains: Vec<String> = domains
            .iter()
            .map(|d| normalize_domain(d.trim_start_matches('@')))
            .filter(|d| !d.is_empty())
            .collect();
        let mode = match mode.trim().to_ascii_lowercase().as_str() {
            "closed" => SignupMode::Closed,
            "invite" => SignupMode::Invite,
            "open" => SignupMode::Open,
            "domains" if domains.is_empty() => {
                return Err("signup mode `domains` needs at least one domain".into());
            }
            "domains" => return Ok(SignupMode::Domains(domains)),
            other => {
                return Err(format!(
                    "unknown signup mode {other:?}: use closed, invite, domains or open"
                ));
            }
        };
        if !domains.is_empty() {
            return Err(format!(
                "signup domains are given but the signup mode is {}: use the mode `domains`, or give no domains",
                mode.name()
            ));
        }
        Ok(mode)
    }

    /// The mode's name.
    pub fn name(&self) -> &'static str {
        match self {
            SignupMode::Closed => "closed",
            SignupMode::Invite => "invite",
            SignupMode::Domains(_) => "domains",
            SignupMode::Open => "open",
        }
    }
}

/// Argon2id parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordHashing {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Parallelism.
    pub parallelism: u32,
}

impl PasswordHashing {
    /// OWASP's recommendation for Argon2id (19 MiB, 2 iterations, 1 lane).
    pub const RECOMMENDED: PasswordHashing = PasswordHashing {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };
    /// Cheap parameters for tests only.
    pub const INSECURE_FAST: PasswordHashing = PasswordHashing {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
}

/// Token bucket per client network (IPv4 address, IPv6 /64) for signup and login.
#[derive(Clone, Copy, Debug)]
pub struct RateLimitConfig {
    /// Attempts allowed at once.
    pub burst: u32,
    /// Attempts regained per minute.
    pub per_minute: u32,
}

/// Session creation defaults and waits.
#[derive(Clone, Debug)]
pub struct SessionsConfig {
    /// Namespace the Session resources live in (used by the CLI to build the backend).
    pub namespace: String,
    /// Pack used when a create request names none.
    pub default_pack: String,
    /// Defaults and maxima of every session's limits (GPUs, CPU, memory,
    /// shm, pids, workspace quota, idle timeout, lifetime). The node agent
    /// holds Sessions to the same policy.
    pub policy: SessionPolicy,
    /// How long a create waits for the scheduler's decision before giving up (503).
    pub schedule_timeout: Duration,
    /// How long `wait=ready` waits for the session to become Ready before answering 202.
    pub ready_timeout: Duration,
    /// How long before an idle or lifetime stop the owner's event streams
    /// get `session.expiring` (zero: never).
    pub expiry_warning: Duration,
}

impl ApiConfig {
    /// Defaults for a base domain and a data directory.
    pub fn new(domain: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        let domain = normalize_domain(&domain.into());
        Self {
            external_domain: format!("external.{domain}"),
            internal_domain: format!("internal.{domain}"),
            public_scheme: "https".into(),
            extra_allowed_origins: Vec::new(),
            database_url: None,
            data_dir: data_dir.into(),
            cookie: CookieConfig {
                name: "medforge_session".into(),
                api_name: API_COOKIE_SECURE.into(),
                secure: true,
                same_site: SameSite::Lax,
                domain: Some(format!(".{domain}")),
            },
            auth: AuthConfig {
                idle_ttl: Duration::from_secs(24 * 3600),
                max_ttl: Duration::from_secs(7 * 24 * 3600),
                token_cache_ttl: Duration::from_secs(30),
                signup: SignupMode::Closed,
                password_hashing: PasswordHashing::RECOMMENDED,
                max_concurrent_hashes: std::thread::available_parallelism()
                    .map_or(2, |n| n.get() * 2)
                    .max(2),
                event_token_ttl: Duration::from_secs(60),
            },
            rate_limit: RateLimitConfig {
                burst: 10,
                per_minute: 10,
            },
            trusted_proxies: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            sessions: SessionsConfig {
                namespace: "medforge".into(),
                default_pack: "default".into(),
                policy: SessionPolicy::default(),
                schedule_timeout: Duration::from_secs(10),
                ready_timeout: Duration::from_secs(120),
                expiry_warning: Duration::from_secs(600),
            },
            activity_flush_interval: Duration::from_secs(15),
            body_limit_bytes: 64 * 1024,
            bootstrap_admin: None,
            domain,
        }
    }

    /// Origins allowed on state-changing routes: the derived ones and the extra ones, normalized.
    /// Session hosts are never among them: a session runs its owner's code.
    pub fn allowed_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = [
            self.domain.as_str(),
            &format!("api.{}", self.domain),
            &self.external_domain,
            &self.internal_domain,
        ]
        .iter()
        .map(|host| format!("https://{host}"))
        .collect();
        origins.extend(
            self.extra_allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase()),
        );
        origins.sort();
        origins.dedup();
        origins
    }
}

/// The api's cookie when cookies are `Secure`.
pub const API_COOKIE_SECURE: &str = "__Host-medforge";
/// The api's cookie when they are not (`__Host-` needs `Secure`).
pub const API_COOKIE_INSECURE: &str = "medforge_api";

impl CookieConfig {
    /// Turns `Secure` off (plain-HTTP testing): the api's cookie loses its
    /// `__Host-` prefix, which browsers accept only on `Secure` cookies.
    pub fn insecure(&mut self) {
        self.secure = false;
        self.api_name = API_COOKIE_INSECURE.into();
    }
}

/// Lower-case, without surrounding dots.
pub(crate) fn normalize_domain(domain: &str) -> String {
    domain.trim().trim_matches('.').to_ascii_lowercase()
}
