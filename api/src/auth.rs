//! Accounts and login: `POST /api/v2/auth/{signup,login,logout}`, `GET /api/v2/me`,
//! the extractors that authenticate a request (cookie, or `Authorization: Bearer`
//! for programs), password hashing with Argon2id, and the admin bootstrap.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::routing::{get, post};
use axum::{Router, response::IntoResponse};
use serde::{Deserialize, Serialize};

use crate::clock::{now_secs, rfc3339};
use crate::config::PasswordHashing;
use crate::db::Db;
use crate::error::{ApiError, FieldError};
use crate::hash_slots::HashSlot;
use crate::reply::Reply;
use crate::request::{ClientIp, Json};
use crate::state::AppState;
use crate::tokens::{self, Principal};
use crate::users::{self, User};
use crate::validate;
use medforge_crds::policy::PolicyOverrides;
use schemars::JsonSchema;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/auth/login", post(login))
        .route("/api/v2/auth/logout", post(logout))
        .route("/api/v2/me", get(me))
}

/// A user as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "User")]
pub struct UserView {
    /// The user's id (the `owner` of their sessions).
    #[schemars(schema_with = "crate::validate::schema::user_id")]
    pub id: String,
    /// Login email (lower case).
    pub email: String,
    /// Admin flag.
    pub is_admin: bool,
    /// May use the internal domain.
    pub can_use_internal: bool,
    /// Session limit override, when set.
    pub max_sessions: Option<i64>,
    /// Creation time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Disabled by an admin: cannot log in, and has no sessions running.
    pub disabled: bool,
    /// The account's own session defaults and maxima, in place of the
    /// operator's (`null`: the operator's).
    pub session_policy: Option<crate::account_policy::AccountPolicy>,
}

impl From<&User> for UserView {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.clone(),
            email: user.email.clone(),
            is_admin: user.is_admin,
            can_use_internal: user.can_use_internal,
            max_sessions: user.max_sessions,
            created_at: rfc3339(user.created_at),
            disabled: user.disabled_at.is_some(),
            session_policy: user
                .session_policy
                .as_deref()
                .and_then(|p| serde_json::from_str::<PolicyOverrides>(p).ok())
                .map(|o| crate::account_policy::AccountPolicy::from_overrides(&o)),
        }
    }
}

/// Body of signup.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Signup")]
pub struct Signup {
    /// Login email.
    #[schemars(schema_with = "crate::validate::schema::email")]
    pub email: String,
    /// Password.
    #[schemars(schema_with = "crate::validate::schema::new_password")]
    pub password: String,
    /// An invite code from an admin (needed when sign-up is by invite).
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::invite_code")]
    pub invite_code: Option<String>,
}

/// Body of login.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Login")]
pub struct Login {
    /// Login email.
    #[schemars(schema_with = "crate::validate::schema::email")]
    pub email: String,
    /// Password.
    #[schemars(schema_with = "crate::validate::schema::password")]
    pub password: String,
}

/// Fewest characters of a new password.
pub const MIN_PASSWORD: usize = validate::MIN_PASSWORD;

/// Lower-cases and checks an email; the field error names `email`.
pub fn normalize_email(email: &str) -> Result<String, FieldError> {
    validate::email("email", email)
}

fn check_new_password(password: &str) -> Result<(), FieldError> {
    validate::NEW_PASSWORD.check("password", password)
}

fn argon2(params: PasswordHashing) -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        None,
    )
    .map_err(ApiError::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password with Argon2id (PHC string), off the async threads. The
/// `slot` (see [`crate::hash_slots::HashSlots`]) is held until the hash is done, even when the
/// request is dropped first.
pub async fn hash_password(
    params: PasswordHashing,
    password: String,
    slot: Option<HashSlot>,
) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let salt = SaltString::generate(&mut OsRng);
        argon2(params)?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Hashes a new password under the api's settings, holding one of the
/// bounded hash slots (503 `busy` when none is free).
pub async fn hash_new_password(state: &AppState, password: String) -> Result<String, ApiError> {
    let slot = state.hash_slots().take()?;
    hash_password(state.config().auth.password_hashing, password, Some(slot)).await
}

/// An email and a password from a body, checked together: the email as
/// stored (lower case), or a 422 naming every field that is wrong
/// (`password` held to `rule`), with `more` errors found by the caller.
pub fn email_and_password(
    email: &str,
    password: &str,
    rule: validate::Rule,
    mut more: Vec<FieldError>,
) -> Result<String, ApiError> {
    let email = normalize_email(email).map_err(|e| more.push(e)).ok();
    if let Err(e) = rule.check("password", password) {
        more.push(e);
    }
    match email {
        Some(email) if more.is_empty() => Ok(email),
        _ => Err(ApiError::Validation(more)),
    }
}

/// Checks a password against a stored hash, off the async threads. Without a stored
/// hash (unknown user) a dummy hash is checked, so both cases take as long.
pub async fn verify_password(
    params: PasswordHashing,
    password: String,
    stored: Option<String>,
    slot: HashSlot,
) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let known = stored.is_some();
        let stored = match stored {
            Some(s) => s,
            None => dummy_hash(params)?,
        };
        let Ok(parsed) = PasswordHash::new(&stored) else {
            return Ok(false);
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(ApiError::internal)?
}

fn dummy_hash(params: PasswordHashing) -> Result<String, ApiError> {
    static DUMMY: OnceLock<(PasswordHashing, String)> = OnceLock::new();
    if let Some((p, h)) = DUMMY.get()
        && *p == params
    {
        return Ok(h.clone());
    }
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2(params)?
        .hash_password(b"not a password anyone has", &salt)
        .map_err(ApiError::internal)?
        .to_string();
    let _ = DUMMY.set((params, hash.clone()));
    Ok(hash)
}

/// The bearer token of `Authorization: Bearer …`, if any.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The login tokens an api request carries: a bearer token first, then the
/// api's own cookie. That cookie is host-only and its path is `/`, so a
/// browser holds one value of it; a request with several (planted by a page
/// of another host of the domain, on a more specific path) has none of
/// them counted: it cannot pick whom the request is authenticated as.
pub fn request_tokens<'h>(
    headers: &'h HeaderMap,
    api_cookie: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    let mut values = cookie_values(headers, api_cookie);
    let one = match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    };
    bearer(headers).into_iter().chain(one)
}

/// The most values of the login cookie one request has looked at. A browser
/// sends one value per path and domain it holds the cookie for, the most
/// specific path first; more than a few is a flood (or values a session
/// planted), and each unknown value would cost a database lookup.
pub const MAX_COOKIE_VALUES: usize = 4;

// A bearer token and every cookie value looked at fit one lookup query.
const _: () = assert!(MAX_COOKIE_VALUES + 1 == users::TOKENS_PER_QUERY);

/// The first [`MAX_COOKIE_VALUES`] values of the cookie `name` in the
/// request's `Cookie` headers.
pub fn cookie_values<'h>(
    headers: &'h HeaderMap,
    name: &'h str,
) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k.trim() == name).then(|| v.trim().trim_matches('"'))
        })
        .filter(|v| !v.is_empty())
        .take(MAX_COOKIE_VALUES)
}

/// Resolves the first valid token among the request's tokens.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<Principal>>, ApiError> {
    let tokens = request_tokens(headers, &state.config().cookie.api_name);
    first_principal(state, tokens, now_secs()).await
}

/// The principal of the first of `tokens` that resolves, with at most one
/// database query for all of them; tokens longer than any the api makes are
/// skipped without a lookup, and only the first
/// [`users::TOKENS_PER_QUERY`] of the rest are looked at.
pub async fn first_principal<'a>(
    state: &AppState,
    tokens: impl IntoIterator<Item = &'a str>,
    now: i64,
) -> Result<Option<Arc<Principal>>, ApiError> {
    let tokens: Vec<&str> = tokens
        .into_iter()
        .filter(|t| t.len() <= 256)
        .take(users::TOKENS_PER_QUERY)
        .collect();
    if tokens.is_empty() {
        return Ok(None);
    }
    Ok(state
        .tokens()
        .resolve_first(state.db(), &tokens, now)
        .await?)
}

/// The authenticated caller; 401 otherwise.
#[derive(Clone, Debug)]
pub struct Auth(pub Arc<Principal>);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers)
            .await?
            .map(Auth)
            .ok_or(ApiError::Unauthenticated)
    }
}

/// An authenticated admin; 401 or 403 otherwise.
#[derive(Clone, Debug)]
pub struct Admin(pub Arc<Principal>);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Auth(principal) = Auth::from_request_parts(parts, state).await?;
        if principal.is_admin() {
            Ok(Admin(principal))
        } else {
            Err(ApiError::forbidden(
                "admin_required",
                "This route is for admins.",
            ))
        }
    }
}

/// The two `Set-Cookie` values of a login (or, with an empty value and
/// `max_age` 0, of a logout): the api's host-only cookie, then the session
/// hosts' cookie for the whole domain.
fn cookie_headers(state: &AppState, value: &str, max_age: i64) -> [HeaderValue; 2] {
    let c = &state.config().cookie;
    let one = |name: &str, domain: Option<&str>| {
        let mut cookie = format!(
            "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={}",
            c.same_site.as_str()
        );
        if c.secure {
            cookie.push_str("; Secure");
        }
        if let Some(domain) = domain {
            cookie.push_str("; Domain=");
            cookie.push_str(domain);
        }
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    };
    [one(&c.api_name, None), one(&c.name, c.domain.as_deref())]
}

/// Issues a login token for a user and returns the `Set-Cookie` values.
pub(crate) async fn issue_token(
    state: &AppState,
    user: &User,
) -> Result<[HeaderValue; 2], ApiError> {
    let token = tokens::new_token();
    let now = now_secs();
    let max_ttl = state.config().auth.max_ttl.as_secs() as i64;
    users::insert_token(
        state.db(),
        &tokens::hash_hex(&tokens::hash_token(&token)),
        &user.id,
        now,
        now + max_ttl,
    )
    .await?;
    Ok(cookie_headers(state, &token, max_ttl))
}

/// The body of signup, login, me and a user's change.
#[derive(Serialize, JsonSchema)]
pub struct UserReply {
    /// The user.
    pub user: UserView,
}

async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Login>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .auth_limiter()
        .check(ip)
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    let email = email_and_password(&body.email, &body.password, validate::PASSWORD, Vec::new())?;
    state
        .login_failures()
        .check(&email)
        .map_err(|retry_after_secs| ApiError::LoginDelayed { retry_after_secs })?;
    let found = users::find_for_login(state.db(), &email).await?;
    let stored = found.as_ref().map(|u| u.password_hash.clone());
    let params = state.config().auth.password_hashing;
    let slot = state.hash_slots().take()?;
    let (true, Some(found)) = (
        verify_password(params, body.password, stored, slot).await?,
        found,
    ) else {
        state.login_failures().failed(&email);
        return Err(ApiError::InvalidCredentials);
    };
    state.login_failures().succeeded(&email);
    if found.user.disabled_at.is_some() {
        return Err(ApiError::forbidden(
            "account_disabled",
            "This account is disabled; ask an admin.",
        ));
    }
    let cookie = issue_token(&state, &found.user).await?;
    tracing::info!(user_id = %found.user.id, "user logged in");
    Ok(Reply::ok(UserReply {
        user: UserView::from(&found.user),
    })
    .cookies(cookie))
}

/// A body that only says what happened.
#[derive(Serialize, JsonSchema)]
pub struct Message {
    /// What happened.
    pub message: &'static str,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    // Revokes the tokens the request carries, whether or not they are still
    // valid, in one statement: the bearer token and the first values of
    // both login cookies (five at most).
    let cookie = &state.config().cookie;
    let mut keys: Vec<_> = bearer(&headers)
        .into_iter()
        .chain(cookie_values(&headers, &cookie.api_name))
        .chain(cookie_values(&headers, &cookie.name))
        .map(tokens::hash_token)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys.truncate(users::TOKENS_PER_QUERY);
    if !keys.is_empty() {
        let hashes: Vec<String> = keys.iter().map(tokens::hash_hex).collect();
        users::delete_tokens(state.db(), &hashes).await?;
        for key in &keys {
            state.tokens().forget(key);
        }
    }
    Ok(Reply::ok(Message {
        message: "Logged out.",
    })
    .cookies(cookie_headers(&state, "", 0)))
}

async fn me(Auth(principal): Auth) -> Reply<UserReply> {
    Reply::ok(UserReply {
        user: UserView::from(&principal.user),
    })
}

/// Errors of the admin bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The email is not valid.
    #[error("invalid admin email: {0}")]
    Email(String),
    /// No usable password was given for an account that needs one (a new
    /// one, or one whose password is reset).
    #[error("give a password of at least {MIN_PASSWORD} characters for the admin account {0}")]
    Password(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// Hashing failed.
    #[error("could not hash the password: {0}")]
    Hash(String),
    /// The account exists and is not an admin: whoever signed up with the
    /// address chose its password.
    #[error(
        "the account {0} exists and is not an admin (someone signed up with this address); promoting it would keep a password you did not choose. To set its password, end its logins and make it an admin, run `medforge create-admin --email {0} --reset-password`"
    )]
    NotAnAdmin(String),
}

/// What [`ensure_admin`] does with an account that exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExistingAccount {
    /// An admin already: left as it is (the password given is not used).
    /// Not an admin: refused ([`BootstrapError::NotAnAdmin`]).
    Refuse,
    /// Sets its password to the one given, ends its logins and makes it an
    /// admin, whatever it was.
    ResetPassword,
    /// An admin already: left as it is (the password given is not used).
    /// Not an admin: as [`ExistingAccount::ResetPassword`]. The generated
    /// first admin of `medforge up`: a replica starting at the same moment
    /// may have created it, with the password it wrote down.
    ResetUnlessAdmin,
}

/// What [`ensure_admin_outcome`] did to the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminOutcome {
    /// This call created it, with the password given.
    Created,
    /// This call set its password to the one given (and made it an admin).
    PasswordReset,
    /// It was an admin already and was left as it is (its password too).
    LeftAsItIs,
}

/// Makes `email` an admin. A missing account is created with `password`;
/// there is no default password, so without one that is an error. An existing
/// account is handled as `existing` says: never silently promoted with a
/// password someone else chose. Used by the configuration's
/// `bootstrap_admin`, the first start and the CLI.
///
/// Safe to run concurrently, in this process or in others on the same
/// database (api replicas starting at once): the account is inserted, and
/// when the insert loses to another one (the email is unique) the account
/// that won is read back and handled as an existing one.
pub async fn ensure_admin(
    db: &Db,
    hashing: PasswordHashing,
    email: &str,
    password: Option<&str>,
    existing: ExistingAccount,
) -> Result<User, BootstrapError> {
    ensure_admin_outcome(db, hashing, email, password, existing)
        .await
        .map(|(user, _)| user)
}

/// [`ensure_admin`], saying also what it did: whether the password given is
/// now the account's.
pub async fn ensure_admin_outcome(
    db: &Db,
    hashing: PasswordHashing,
    email: &str,
    password: Option<&str>,
    existing: ExistingAccount,
) -> Result<(User, AdminOutcome), BootstrapError> {
    let email = normalize_email(email).map_err(|e| BootstrapError::Email(e.message))?;
    if let Some(user) = users::get_user_by_email(db, &email).await? {
        return existing_admin(db, hashing, &email, password, existing, user).await;
    }
    let hash = new_password_hash(hashing, &email, password).await?;
    match users::create_user(db, &email, &hash, true, now_secs()).await {
        Ok(user) => {
            tracing::info!(user_id = %user.id, "admin created");
            Ok((user, AdminOutcome::Created))
        }
        // Another process inserted the account between the look and the insert.
        Err(err) if err.is_unique_violation() => {
            let Some(user) = users::get_user_by_email(db, &email).await? else {
                return Err(err.into()); // …and it is gone again: say what failed.
            };
            tracing::info!(user_id = %user.id, "admin account created meanwhile by another process");
            existing_admin(db, hashing, &email, password, existing, user).await
        }
        Err(err) => Err(err.into()),
    }
}

/// [`ensure_admin`] for an account that exists.
async fn existing_admin(
    db: &Db,
    hashing: PasswordHashing,
    email: &str,
    password: Option<&str>,
    existing: ExistingAccount,
    user: User,
) -> Result<(User, AdminOutcome), BootstrapError> {
    match existing {
        ExistingAccount::Refuse | ExistingAccount::ResetUnlessAdmin if user.is_admin => {
            tracing::info!(user_id = %user.id, "admin exists; left as it is");
            Ok((user, AdminOutcome::LeftAsItIs))
        }
        ExistingAccount::Refuse => Err(BootstrapError::NotAnAdmin(email.to_owned())),
        ExistingAccount::ResetPassword | ExistingAccount::ResetUnlessAdmin => {
            let hash = new_password_hash(hashing, email, password).await?;
            users::set_password_hash(db, &user.id, &hash).await?;
            let ended = users::delete_user_tokens(db, &user.id).await?;
            let update = users::UserUpdate {
                is_admin: Some(true),
                can_use_internal: Some(true),
                max_sessions: None,
                disabled_at: Some(None),
                session_policy: None,
            };
            let user = users::update_user(db, &user.id, &update)
                .await?
                .unwrap_or(user);
            tracing::info!(user_id = %user.id, logins_ended = ended, "admin ensured: existing account, password reset");
            Ok((user, AdminOutcome::PasswordReset))
        }
    }
}

/// The hash of an admin's new password; a missing or too short one is an error.
async fn new_password_hash(
    hashing: PasswordHashing,
    email: &str,
    password: Option<&str>,
) -> Result<String, BootstrapError> {
    let password = password
        .filter(|p| check_new_password(p).is_ok())
        .ok_or_else(|| BootstrapError::Password(email.to_owned()))?;
    hash_password(hashing, password.to_owned(), None)
        .await
        .map_err(|e| BootstrapError::Hash(e.to_string()))
}
