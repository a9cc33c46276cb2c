//! The audit log: an append-only record of admin and account actions
//! (accounts created, changed, disabled, passwords changed and reset,
//! invites made, used and revoked, Packs written and deleted), readable by admins at
//! `GET /api/v2/admin/audit`, newest first, cursor-paginated and filterable.
//!
//! Nothing in the api updates or deletes an entry: this module has no such
//! function. Ids sort by time ([`log_id`]), so an id is also a cursor.

use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::clock::rfc3339;
use crate::db::{Db, DbError, execute, on_pool};
use crate::error::ApiError;
use crate::reply::{Page, Reply};
use crate::request::Query;
use crate::state::AppState;
use crate::validate;

/// What was done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Someone signed up (`detail.mode`: the signup mode; `detail.invite`: the invite used).
    SignedUp,
    /// A user changed their own password (their other logins ended).
    PasswordChanged,
    /// An admin created an account.
    UserCreated,
    /// An admin changed a user's flags (`detail`: the new values).
    UserUpdated,
    /// An admin disabled an account (its logins ended, its sessions stopped).
    UserDisabled,
    /// An admin enabled a disabled account.
    UserEnabled,
    /// An admin set a user's password (their logins ended).
    PasswordReset,
    /// An admin created an invite.
    InviteCreated,
    /// An admin revoked an invite.
    InviteRevoked,
    /// An admin created a Pack (`target`: its name; `detail`: the body).
    PackCreated,
    /// An admin replaced a Pack's spec (`detail`: the body).
    PackReplaced,
    /// An admin deleted a Pack.
    PackDeleted,
    /// An admin restored a user's snapshot into a new session of that user
    /// (`target`: the user; `detail`: the session and the snapshot).
    SnapshotRestoredForUser,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 13] = [
        Action::SignedUp,
        Action::PasswordChanged,
        Action::UserCreated,
        Action::UserUpdated,
        Action::UserDisabled,
        Action::UserEnabled,
        Action::PasswordReset,
        Action::InviteCreated,
        Action::InviteRevoked,
        Action::PackCreated,
        Action::PackReplaced,
        Action::PackDeleted,
        Action::SnapshotRestoredForUser,
    ];

    /// The entry's `action`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SignedUp => "account.signed_up",
            Action::PasswordChanged => "account.password_changed",
            Action::UserCreated => "user.created",
            Action::UserUpdated => "user.updated",
            Action::UserDisabled => "user.disabled",
            Action::UserEnabled => "user.enabled",
            Action::PasswordReset => "user.password_reset",
            Action::InviteCreated => "invite.created",
            Action::InviteRevoked => "invite.revoked",
            Action::PackCreated => "pack.created",
            Action::PackReplaced => "pack.replaced",
            Action::PackDeleted => "pack.deleted",
            Action::SnapshotRestoredForUser => "snapshot.restored_for_user",
        }
    }
}

/// An id that sorts by time: the milliseconds, zero-padded to 13 digits, a
/// dash and a random UUID.
pub fn log_id(at_ms: i64) -> String {
    format!("{at_ms:013}-{}", uuid::Uuid::new_v4())
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Appends one entry. `actor` is the user who acted (`None`: the system),
/// `target` what it acted on (a user id, an invite id, a Pack name).
pub async fn record(
    db: &Db,
    actor: Option<&str>,
    action: Action,
    target: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), DbError> {
    let at_ms = now_ms();
    execute!(
        db,
        "INSERT INTO audit_log (id, at_ms, actor_id, action, target, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        log_id(at_ms),
        at_ms,
        actor,
        action.as_str(),
        target,
        detail.to_string()
    )?;
    tracing::info!(action = action.as_str(), actor = ?actor, target = ?target, "audit");
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    at_ms: i64,
    actor_id: Option<String>,
    action: String,
    target: Option<String>,
    detail: String,
}

/// One audit entry as the api shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "AuditEntry")]
pub struct AuditEntry {
    /// The entry's id; ids sort by time.
    #[schemars(schema_with = "crate::validate::schema::log_id")]
    pub id: String,
    /// When (RFC 3339, milliseconds).
    #[schemars(extend("format" = "date-time"))]
    pub at: String,
    /// The user who acted; `null` for the system.
    pub actor: Option<String>,
    /// What was done (`user.disabled`, …).
    pub action: String,
    /// What it was done to (a user id, an invite id, a Pack name).
    pub target: Option<String>,
    /// More about it (the values changed, the signup mode…).
    pub detail: serde_json::Value,
}

impl From<Row> for AuditEntry {
    fn from(r: Row) -> Self {
        let at = jiff::Timestamp::from_millisecond(r.at_ms)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| rfc3339(r.at_ms / 1000));
        AuditEntry {
            id: r.id,
            at,
            actor: r.actor_id,
            action: r.action,
            target: r.target,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Which entries to list; an empty filter matches every entry.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    /// Only this action.
    pub action: &'a str,
    /// Only entries by this user.
    pub actor: &'a str,
    /// Only entries about this target.
    pub target: &'a str,
}

/// Entries older than `before` (an id), newest first, at most `limit`.
pub async fn list(
    db: &Db,
    filter: &Filter<'_>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, DbError> {
    // 14 characters sort after every id (13 digits and a dash).
    let before = before.unwrap_or("99999999999999");
    let rows: Vec<Row> = on_pool!(db, |p| sqlx::query_as::<_, Row>(
        "SELECT id, at_ms, actor_id, action, target, detail FROM audit_log \
         WHERE id < $1 AND ($2 = '' OR action = $2) AND ($3 = '' OR actor_id = $3) \
               AND ($4 = '' OR target = $4) \
         ORDER BY id DESC LIMIT $5"
    )
    .bind(before)
    .bind(filter.action)
    .bind(filter.actor)
    .bind(filter.target)
    .bind(limit)
    .fetch_all(p)
    .await)?;
    Ok(rows.into_iter().map(AuditEntry::from).collect())
}

/// Query of `GET /api/v2/admin/audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Page size.
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// `meta.next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries by this user id.
    pub actor: Option<String>,
    /// Only entries about this target.
    pub target: Option<String>,
}

/// A page size and a cursor of a newest-first list whose ids are
/// [`log_id`]s, or the 422 naming what is wrong (with `more` errors).
pub fn page_query(
    limit: Option<u32>,
    cursor: Option<&str>,
    mut more: Vec<crate::error::FieldError>,
) -> Result<(u32, Option<String>), ApiError> {
    let limit = limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        more.push(validate::limit_error());
    }
    if let Some(c) = cursor
        && let Err(e) = validate::LOG_ID.check("cursor", c)
    {
        more.push(e);
    }
    if !more.is_empty() {
        return Err(ApiError::Validation(more));
    }
    Ok((limit, cursor.map(str::to_owned)))
}

/// Cuts a list fetched with `limit + 1` to `limit` and says where the next
/// page starts.
pub fn page_of<T>(mut found: Vec<T>, limit: u32, id: impl Fn(&T) -> String) -> (Vec<T>, Page) {
    let has_more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_cursor = has_more.then(|| found.last().map(&id)).flatten();
    (
        found,
        Page {
            limit: Some(limit),
            next_cursor,
            has_more: Some(has_more),
        },
    )
}

/// `GET /api/v2/admin/audit`.
pub(crate) async fn list_route(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(query): Query<AuditQuery>,
) -> Result<Reply<Vec<AuditEntry>>, ApiError> {
    let mut errors = Vec::new();
    if let Some(a) = query.action.as_deref()
        && let Err(e) = validate::AUDIT_ACTION.check("action", a)
    {
        errors.push(e);
    }
    if let Some(a) = query.actor.as_deref()
        && let Err(e) = validate::USER_ID.check("actor", a)
    {
        errors.push(e);
    }
    if let Some(t) = query.target.as_deref()
        && let Err(e) = validate::AUDIT_TARGET.check("target", t)
    {
        errors.push(e);
    }
    let (limit, cursor) = page_query(query.limit, query.cursor.as_deref(), errors)?;
    let filter = Filter {
        action: query.action.as_deref().unwrap_or(""),
        actor: query.actor.as_deref().unwrap_or(""),
        target: query.target.as_deref().unwrap_or(""),
    };
    let found = list(state.db(), &filter, cursor.as_deref(), i64::from(limit) + 1).await?;
    let (entries, page) = page_of(found, limit, |e| e.id.clone());
    Ok(Reply::ok(entries).page(page))
}
