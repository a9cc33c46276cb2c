//! Account administration: who may sign up (the signup modes and invites),
//! accounts an admin creates, passwords changed by their owner or reset by
//! an admin, and accounts disabled and enabled again. Every change is in the
//! audit log ([`crate::audit`]).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{self, Action, log_id, now_ms, page_of, page_query};
use crate::auth::{
    Admin, Auth, Signup, UserReply, UserView, email_and_password, hash_new_password, issue_token,
    verify_password,
};
use crate::clock::{now_secs, rfc3339};
use crate::config::SignupMode;
use crate::db::{Db, DbError, execute, on_pool};
use crate::error::{ApiError, FieldError};
use crate::reply::Reply;
use crate::request::{ClientIp, InviteId, Json, JsonOrEmpty, Param, Query, UserId};
use crate::state::AppState;
use crate::tokens;
use crate::users::{self, User, UserUpdate};
use crate::validate;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/auth/signup", post(signup))
        .route("/api/v2/me", axum::routing::patch(change_own_password))
        .route("/api/v2/admin/users/{id}/password", post(reset_password))
        .route(
            "/api/v2/admin/invites",
            post(create_invite).get(list_invites),
        )
        .route(
            "/api/v2/admin/invites/{id}",
            axum::routing::delete(revoke_invite),
        )
        .route("/api/v2/admin/audit", get(audit::list_route))
}

/// How long an invite is valid when the admin does not say.
pub const INVITE_TTL_DEFAULT_SECS: i64 = 7 * 24 * 3600;
/// The shortest an invite may be valid.
pub const INVITE_TTL_MIN_SECS: i64 = 60;
/// The longest an invite may be valid.
pub const INVITE_TTL_MAX_SECS: i64 = 30 * 24 * 3600;

/// May `email` sign up under `mode` (the invite is checked when it is used)?
pub fn signup_allowed(
    mode: &SignupMode,
    email: &str,
    invite: Option<&str>,
) -> Result<(), ApiError> {
    match mode {
        SignupMode::Open => Ok(()),
        SignupMode::Closed => Err(ApiError::forbidden(
            "signup_disabled",
            "Sign-up is closed here; ask an admin for an account.",
        )),
        SignupMode::Invite if invite.is_none() => Err(ApiError::forbidden(
            "invite_required",
            "Sign-up here needs an invite code (`invite_code`); ask an admin for one.",
        )),
        SignupMode::Invite => Ok(()),
        SignupMode::Domains(domains) => {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            if domains.iter().any(|d| d == domain) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    "signup_domain_not_allowed",
                    format!(
                        "Sign-up here is for addresses at {}; ask an admin for an account.",
                        domains.join(", ")
                    ),
                ))
            }
        }
    }
}

/// Creates the user, using the invite `code` in the same transaction when
/// one is given: a code works once, before it expires, unless revoked, and
/// for the address it names, if any. `Ok(None)`: the code cannot be used.
pub async fn create_user_with_invite(
    db: &Db,
    email: &str,
    password_hash: &str,
    code: Option<&str>,
    now: i64,
) -> Result<Option<(User, Option<String>)>, DbError> {
    let Some(code) = code else {
        return users::create_user(db, email, password_hash, false, now)
            .await
            .map(|u| Some((u, None)));
    };
    let code_hash = tokens::hash_hex(&tokens::hash_token(code));
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.to_owned(),
        is_admin: false,
        can_use_internal: false,
        max_sessions: None,
        created_at: now,
        disabled_at: None,
        session_policy: None,
    };
    let invite: Option<String> = on_pool!(db, |p| {
        let mut tx = p.begin().await?;
        let used: Option<(String,)> = sqlx::query_as(
            "UPDATE invites SET used_at = $2, used_by = $3 \
             WHERE code_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $2 \
                   AND (email IS NULL OR email = $4) \
             RETURNING id",
        )
        .bind(&code_hash)
        .bind(now)
        .bind(&user.id)
        .bind(&user.email)
        .fetch_optional(&mut *tx)
        .await?;
        if used.is_none() {
            tx.rollback().await?;
            Ok::<_, sqlx::Error>(None)
        } else {
            sqlx::query(
                "INSERT INTO users (id, email, password_hash, is_admin, can_use_internal, max_sessions, created_at) \
                 VALUES ($1, $2, $3, FALSE, FALSE, NULL, $4)",
            )
            .bind(&user.id)
            .bind(&user.email)
            .bind(password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(used.map(|(id,)| id))
        }
    })?;
    Ok(invite.map(|id| (user, Some(id))))
}

/// `POST /api/v2/auth/signup`: an account, as the signup mode allows, and
/// its first login.
async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Signup>,
) -> Result<impl IntoResponse, ApiError> {
    state
        .auth_limiter()
        .check(ip)
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    let mode = &state.config().auth.signup;
    if *mode == SignupMode::Closed {
        signup_allowed(mode, "", None)?;
    }
    let code = body.invite_code.as_deref();
    let code_error = code.and_then(|c| validate::INVITE_CODE.check("invite_code", c).err());
    let email = email_and_password(
        &body.email,
        &body.password,
        validate::NEW_PASSWORD,
        code_error.into_iter().collect(),
    )?;
    signup_allowed(mode, &email, code)?;
    // Only the invite mode uses a code; in the others it is ignored.
    let code = code.filter(|_| *mode == SignupMode::Invite);
    let hash = hash_new_password(&state, body.password).await?;
    let (user, invite) = match create_user_with_invite(state.db(), &email, &hash, code, now_secs())
        .await
    {
        Ok(Some(created)) => created,
        Ok(None) => {
            return Err(ApiError::forbidden(
                "invite_invalid",
                "This invite code cannot be used: it is unknown, used, expired, revoked or for another address.",
            ));
        }
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::conflict(
                "email_taken",
                "An account with this email exists; log in instead.",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    audit::record(
        state.db(),
        Some(&user.id),
        Action::SignedUp,
        Some(&user.id),
        serde_json::json!({"mode": mode.name(), "invite": invite}),
    )
    .await?;
    tracing::info!(user_id = %user.id, "user signed up");
    let cookie = issue_token(&state, &user).await?;
    Ok(Reply::created(UserReply {
        user: UserView::from(&user),
    })
    .cookies(cookie))
}

/// Body of `POST /api/v2/admin/users`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NewUser")]
pub struct NewUser {
    /// Login email.
    #[schemars(schema_with = "crate::validate::schema::email")]
    pub email: String,
    /// Initial password (tell the user; they change it with `PATCH /api/v2/me`).
    #[schemars(schema_with = "crate::validate::schema::new_password")]
    pub password: String,
    /// Make the account an admin (default false).
    #[serde(default)]
    pub is_admin: bool,
    /// May use the internal domain (default: as `is_admin`).
    #[serde(default)]
    pub can_use_internal: Option<bool>,
}

pub(crate) async fn create_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Json(body): Json<NewUser>,
) -> Result<Reply<UserReply>, ApiError> {
    let email = email_and_password(
        &body.email,
        &body.password,
        validate::NEW_PASSWORD,
        Vec::new(),
    )?;
    let hash = hash_new_password(&state, body.password).await?;
    let mut user =
        match users::create_user(state.db(), &email, &hash, body.is_admin, now_secs()).await {
            Ok(user) => user,
            Err(e) if e.is_unique_violation() => {
                return Err(ApiError::conflict(
                    "email_taken",
                    "An account with this email exists.",
                ));
            }
            Err(e) => return Err(e.into()),
        };
    if let Some(internal) = body
        .can_use_internal
        .filter(|v| *v != user.can_use_internal)
    {
        let update = UserUpdate {
            can_use_internal: Some(internal),
            ..UserUpdate::default()
        };
        user = users::update_user(state.db(), &user.id, &update)
            .await?
            .unwrap_or(user);
    }
    audit::record(
        state.db(),
        Some(&admin.user.id),
        Action::UserCreated,
        Some(&user.id),
        json!({"email": user.email, "is_admin": user.is_admin, "can_use_internal": user.can_use_internal}),
    )
    .await?;
    Ok(Reply::created(UserReply {
        user: UserView::from(&user),
    }))
}

/// Body of `PATCH /api/v2/me`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "PasswordChange")]
pub struct PasswordChange {
    /// The password now.
    #[schemars(schema_with = "crate::validate::schema::password")]
    pub current_password: String,
    /// The new password.
    #[schemars(schema_with = "crate::validate::schema::new_password")]
    pub new_password: String,
}

/// `PATCH /api/v2/me`: a new password, given the current one. Every other
/// login of the account ends; this one goes on. Wrong guesses count
/// against the account as failed logins do.
async fn change_own_password(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Json(body): Json<PasswordChange>,
) -> Result<Reply<UserReply>, ApiError> {
    let mut errors = Vec::new();
    if let Err(e) = validate::PASSWORD.check("current_password", &body.current_password) {
        errors.push(e);
    }
    if let Err(e) = validate::NEW_PASSWORD.check("new_password", &body.new_password) {
        errors.push(FieldError::new("new_password", e.message));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let user = &principal.user;
    state
        .login_failures()
        .check(&user.email)
        .map_err(|retry_after_secs| ApiError::LoginDelayed { retry_after_secs })?;
    let stored = users::find_for_login(state.db(), &user.email)
        .await?
        .map(|u| u.password_hash);
    let params = state.config().auth.password_hashing;
    let slot = state.hash_slots().take()?;
    if !verify_password(params, body.current_password, stored, slot).await? {
        state.login_failures().failed(&user.email);
        return Err(ApiError::forbidden(
            "wrong_password",
            "The current password is not right.",
        ));
    }
    state.login_failures().succeeded(&user.email);
    let hash = hash_new_password(&state, body.new_password).await?;
    users::set_password_hash(state.db(), &user.id, &hash).await?;
    let keep = tokens::hash_hex(&principal.token_hash);
    let ended = users::delete_other_tokens(state.db(), &user.id, &keep).await?;
    state.tokens().forget_user(&user.id);
    audit::record(
        state.db(),
        Some(&user.id),
        Action::PasswordChanged,
        Some(&user.id),
        json!({"logins_ended": ended}),
    )
    .await?;
    Ok(Reply::ok(UserReply {
        user: UserView::from(user),
    }))
}

/// Body of `POST /api/v2/admin/users/{id}/password`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "PasswordReset")]
pub struct PasswordReset {
    /// The new password (tell the user; they change it with `PATCH /api/v2/me`).
    #[schemars(schema_with = "crate::validate::schema::new_password")]
    pub password: String,
}

/// Refuses an admin's account action on their own account.
/// Refuses an admin's action on their own account (409 `own_account`):
/// `what` says what was refused and what to do instead.
pub(crate) fn not_yourself(admin: &User, id: &str, what: &str) -> Result<(), ApiError> {
    if admin.id == id {
        return Err(ApiError::conflict(
            "own_account",
            format!("Admins cannot {what}."),
        ));
    }
    Ok(())
}

/// `POST /api/v2/admin/users/{id}/password`: sets the password and ends
/// every login of the account.
async fn reset_password(
    State(state): State<AppState>,
    Admin(admin): Admin,
    id: Param<UserId>,
    Json(body): Json<PasswordReset>,
) -> Result<Reply<UserReply>, ApiError> {
    let id = id.value;
    validate::NEW_PASSWORD
        .check("password", &body.password)
        .map_err(|e| ApiError::Validation(vec![e]))?;
    not_yourself(
        &admin.user,
        &id,
        "reset their own password here; use PATCH /api/v2/me",
    )?;
    let user = users::get_user(state.db(), &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found.".into()))?;
    let hash = hash_new_password(&state, body.password).await?;
    users::set_password_hash(state.db(), &id, &hash).await?;
    let ended = users::delete_user_tokens(state.db(), &id).await?;
    state.tokens().forget_user(&id);
    audit::record(
        state.db(),
        Some(&admin.user.id),
        Action::PasswordReset,
        Some(&id),
        json!({"logins_ended": ended}),
    )
    .await?;
    Ok(Reply::ok(UserReply {
        user: UserView::from(&user),
    }))
}

/// Disables (`true`) or enables an account for [`crate::admin`]'s user
/// change: disabling ends every login and stops every session of the
/// account. The caller writes the flag.
pub async fn on_disabled_changed(
    state: &AppState,
    admin: &User,
    user: &User,
    disabled: bool,
) -> Result<(), ApiError> {
    if disabled {
        let ended = users::delete_user_tokens(state.db(), &user.id).await?;
        state.tokens().forget_user(&user.id);
        let mut stopped = Vec::new();
        for s in state.backend().list(Some(&user.id)).await? {
            if s.spec.state == medforge_crds::DesiredState::Running
                && let Some(name) = s.metadata.name.as_deref()
            {
                let written = state
                    .backend()
                    .set_state(name, medforge_crds::DesiredState::Stopped)
                    .await?;
                state.index().apply_written(written);
                stopped.push(name.to_owned());
            }
        }
        audit::record(
            state.db(),
            Some(&admin.id),
            Action::UserDisabled,
            Some(&user.id),
            json!({"logins_ended": ended, "sessions_stopped": stopped}),
        )
        .await?;
    } else {
        audit::record(
            state.db(),
            Some(&admin.id),
            Action::UserEnabled,
            Some(&user.id),
            json!({}),
        )
        .await?;
    }
    Ok(())
}

/// An invite as the api shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Invite")]
pub struct InviteView {
    /// The invite's id.
    #[schemars(schema_with = "crate::validate::schema::log_id")]
    pub id: String,
    /// The code to sign up with: shown once, when the invite is created (only its hash is kept).
    pub code: Option<String>,
    /// The only address that may use it, if any.
    pub email: Option<String>,
    /// The admin who made it.
    pub created_by: String,
    /// Creation time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: String,
    /// Expiry (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub expires_at: String,
    /// `unused`, `used`, `expired` or `revoked`.
    #[schemars(extend("enum" = ["unused", "used", "expired", "revoked"]))]
    pub state: String,
    /// The account created with it.
    pub used_by: Option<String>,
}

#[derive(sqlx::FromRow)]
struct InviteRow {
    id: String,
    email: Option<String>,
    created_by: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    used_by: Option<String>,
    revoked_at: Option<i64>,
}

impl InviteRow {
    fn view(self, now: i64, code: Option<String>) -> InviteView {
        let state = if self.revoked_at.is_some() {
            "revoked"
        } else if self.used_at.is_some() {
            "used"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "unused"
        };
        InviteView {
            id: self.id,
            code,
            email: self.email,
            created_by: self.created_by,
            created_at: rfc3339(self.created_at),
            expires_at: rfc3339(self.expires_at),
            state: state.into(),
            used_by: self.used_by,
        }
    }
}

/// Body of `POST /api/v2/admin/invites`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "NewInvite")]
pub struct NewInvite {
    /// How long the code works, in seconds (default 604800: 7 days; 60 to 2592000: 30 days).
    #[serde(default, deserialize_with = "validate::int::body_i64")]
    #[schemars(range(min = INVITE_TTL_MIN_SECS, max = INVITE_TTL_MAX_SECS))]
    pub expires_in: Option<i64>,
    /// Only this address may use it.
    #[serde(default)]
    #[schemars(schema_with = "crate::validate::schema::optional_email")]
    pub email: Option<String>,
}

/// The body of an invite reply.
#[derive(Serialize, JsonSchema)]
pub struct InviteReply {
    /// The invite.
    pub invite: InviteView,
}

async fn create_invite(
    State(state): State<AppState>,
    Admin(admin): Admin,
    JsonOrEmpty(body): JsonOrEmpty<NewInvite>,
) -> Result<Reply<InviteReply>, ApiError> {
    let mut errors = Vec::new();
    let ttl = body.expires_in.unwrap_or(INVITE_TTL_DEFAULT_SECS);
    if !(INVITE_TTL_MIN_SECS..=INVITE_TTL_MAX_SECS).contains(&ttl) {
        errors.push(FieldError::new(
            "expires_in",
            format!("must be between {INVITE_TTL_MIN_SECS} and {INVITE_TTL_MAX_SECS} seconds"),
        ));
    }
    let email = match body.email.as_deref() {
        None => None,
        Some(e) => match validate::email("email", e) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let code = tokens::new_token();
    let now = now_secs();
    let row = InviteRow {
        id: log_id(now_ms()),
        email,
        created_by: admin.user.id.clone(),
        created_at: now,
        expires_at: now + ttl,
        used_at: None,
        used_by: None,
        revoked_at: None,
    };
    execute!(
        state.db(),
        "INSERT INTO invites (id, code_hash, email, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &row.id,
        tokens::hash_hex(&tokens::hash_token(&code)),
        &row.email,
        &row.created_by,
        row.created_at,
        row.expires_at
    )
    .map_err(DbError::from)?;
    audit::record(
        state.db(),
        Some(&admin.user.id),
        Action::InviteCreated,
        Some(&row.id),
        json!({"email": row.email, "expires_at": rfc3339(row.expires_at)}),
    )
    .await?;
    Ok(Reply::created(InviteReply {
        invite: row.view(now, Some(code)),
    }))
}

/// Query of `GET /api/v2/admin/invites`.
#[derive(Debug, Default, Deserialize)]
pub struct InvitesQuery {
    /// Page size.
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// `meta.next_cursor` of the previous page.
    pub cursor: Option<String>,
}

async fn list_invites(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(query): Query<InvitesQuery>,
) -> Result<Reply<Vec<InviteView>>, ApiError> {
    let (limit, cursor) = page_query(query.limit, query.cursor.as_deref(), Vec::new())?;
    let before = cursor.unwrap_or_else(|| "99999999999999".into());
    let rows: Vec<InviteRow> = on_pool!(state.db(), |p| sqlx::query_as::<_, InviteRow>(
        "SELECT id, email, created_by, created_at, expires_at, used_at, used_by, revoked_at \
         FROM invites WHERE id < $1 ORDER BY id DESC LIMIT $2"
    )
    .bind(&before)
    .bind(i64::from(limit) + 1)
    .fetch_all(p)
    .await)
    .map_err(DbError::from)?;
    let now = now_secs();
    let (rows, page) = page_of(rows, limit, |r| r.id.clone());
    Ok(Reply::ok(rows.into_iter().map(|r| r.view(now, None)).collect()).page(page))
}

/// `DELETE /api/v2/admin/invites/{id}`: the code no longer works. A used
/// invite cannot be revoked (409); revoking twice is not an error.
async fn revoke_invite(
    State(state): State<AppState>,
    Admin(admin): Admin,
    id: Param<InviteId>,
) -> Result<StatusCode, ApiError> {
    let id = id.value;
    let now = now_secs();
    let changed = execute!(
        state.db(),
        "UPDATE invites SET revoked_at = $2 WHERE id = $1 AND used_at IS NULL AND revoked_at IS NULL",
        &id,
        now
    )
    .map_err(DbError::from)?;
    if changed == 0 {
        let used: Option<(Option<i64>,)> = on_pool!(state.db(), |p| sqlx::query_as(
            "SELECT used_at FROM invites WHERE id = $1"
        )
        .bind(&id)
        .fetch_optional(p)
        .await)
        .map_err(DbError::from)?;
        return match used {
            None => Err(ApiError::NotFound("Invite not found.".into())),
            Some((Some(_),)) => Err(ApiError::conflict(
                "invite_used",
                "This invite was used already; disable the account it created instead.",
            )),
            Some((None,)) => Ok(StatusCode::NO_CONTENT),
        };
    }
    audit::record(
        state.db(),
        Some(&admin.user.id),
        Action::InviteRevoked,
        Some(&id),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
