//! Users, login tokens and event tokens in SQL. Tokens are stored only as SHA-256
//! hashes; times are Unix seconds.

use serde::Serialize;

use crate::db::{Db, DbError, execute, on_pool};

/// A user as the rest of the API sees it (no password hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    /// Stable id (a UUID), the `owner` of the user's Sessions.
    pub id: String,
    /// Login email, lower case.
    pub email: String,
    /// Sees and manages everything.
    pub is_admin: bool,
    /// May create sessions on the internal domain.
    pub can_use_internal: bool,
    /// Per-user override of the scheduler's session limit (`None`: the cluster default).
    pub max_sessions: Option<i64>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// When an admin disabled the account (Unix seconds); `None` while it may log in.
    pub disabled_at: Option<i64>,
    /// The account's own session defaults and maxima (JSON of
    /// [`medforge_crds::policy::PolicyOverrides`]); `None`: the operator's.
    pub session_policy: Option<String>,
}

/// `SELECT <the columns of User> FROM users <rest>`, as one static string.
macro_rules! select_users {
    ($rest:literal) => {
        concat!(
            "SELECT id, email, is_admin, can_use_internal, max_sessions, created_at, disabled_at, \
             session_policy",
            $rest
        )
    };
}

/// A user with the password hash, for login.
#[derive(Clone, Debug, sqlx::FromRow)]
pub(crate) struct UserWithPassword {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
}

/// A login token's row joined with its user.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TokenRecord {
    /// The user the token belongs to.
    #[sqlx(flatten)]
    pub user: User,
    /// When the token was issued (Unix seconds).
    pub token_created_at: i64,
    /// When the token was last used, as last written back (Unix seconds).
    pub last_used_at: i64,
    /// When the token expires whatever its use (Unix seconds).
    pub expires_at: i64,
}

/// Flags an admin may change on a user. `None` leaves a field alone.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    /// New admin flag.
    pub is_admin: Option<bool>,
    /// New internal-domain permission.
    pub can_use_internal: Option<bool>,
    /// New session limit override (`Some(None)` clears it).
    pub max_sessions: Option<Option<i64>>,
    /// Disable (`Some(Some(now))`) or enable (`Some(None)`) the account.
    pub disabled_at: Option<Option<i64>>,
    /// Set (`Some(Some(json))`) or clear (`Some(None)`) the account's own
    /// session policy.
    pub session_policy: Option<Option<String>>,
}

/// Creates a user. A taken email is a unique violation ([`DbError::is_unique_violation`]).
pub async fn create_user(
    db: &Db,
    email: &str,
    password_hash: &str,
    is_admin: bool,
    now: i64,
) -> Result<User, DbError> {
    let user = User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.to_owned(),
        is_admin,
        can_use_internal: is_admin,
        max_sessions: None,
        created_at: now,
        disabled_at: None,
        session_policy: None,
    };
    on_pool!(db, |p| {
        sqlx::query(
        "INSERT INTO users (id, email, password_hash, is_admin, can_use_internal, max_sessions, created_at) \
         VALUES ($1, $2, $3, $4, $5, NULL, $6)"
    )
    .bind(&user.id)
    .bind(&user.email)
    .bind(password_hash)
    .bind(user.is_admin)
    .bind(user.can_use_internal)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(user)
}

/// The user with this email and the password hash, for login.
pub(crate) async fn find_for_login(
    db: &Db,
    email: &str,
) -> Result<Option<UserWithPassword>, DbError> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, UserWithPassword>(
        select_users!(", password_hash FROM users WHERE email = $1")
    )
    .bind(email)
    .fetch_optional(p)
    .await)?)
}

/// The stored password hash of the account with this email, if any (to
/// check a password outside the login route: `auth::verify_password`).
pub async fn password_hash_of(db: &Db, email: &str) -> Result<Option<String>, DbError> {
    Ok(find_for_login(db, email).await?.map(|u| u.password_hash))
}

/// A user by id.
pub async fn get_user(db: &Db, id: &str) -> Result<Option<User>, DbError> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, User>(select_users!(" FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(p)
            .await
    })?)
}

/// A user by email.
pub async fn get_user_by_email(db: &Db, email: &str) -> Result<Option<User>, DbError> {
    Ok(find_for_login(db, email).await?.map(|u| u.user))
}

/// Users ordered by email, after `after_email`, at most `limit`.
pub async fn list_users(
    db: &Db,
    after_email: Option<&str>,
    limit: i64,
) -> Result<Vec<User>, DbError> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, User>(select_users!(
        " FROM users WHERE email > $1 ORDER BY email LIMIT $2"
    ))
    .bind(after_email.unwrap_or(""))
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// Applies an admin's change to a user's flags; `None` when there is no such user.
pub async fn update_user(db: &Db, id: &str, update: &UserUpdate) -> Result<Option<User>, DbError> {
    let Some(mut user) = get_user(db, id).await? else {
        return Ok(None);
    };
    if let Some(v) = update.is_admin {
        user.is_admin = v;
    }
    if let Some(v) = update.can_use_internal {
        user.can_use_internal = v;
    }
    if let Some(v) = update.max_sessions {
        user.max_sessions = v;
    }
    if let Some(v) = update.session_policy.clone() {
        user.session_policy = v;
    }
    if let Some(v) = update.disabled_at {
        // Disabling an account that is disabled keeps the first time.
        user.disabled_at = v.map(|at| user.disabled_at.unwrap_or(at));
    }
    execute!(
        db,
        "UPDATE users SET is_admin = $2, can_use_internal = $3, max_sessions = $4, \
         disabled_at = $5, session_policy = $6 WHERE id = $1",
        &user.id,
        user.is_admin,
        user.can_use_internal,
        user.max_sessions,
        user.disabled_at,
        &user.session_policy
    )?;
    Ok(Some(user))
}

/// Sets a user's password hash.
pub async fn set_password_hash(db: &Db, id: &str, password_hash: &str) -> Result<(), DbError> {
    execute!(
        db,
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        id,
        password_hash
    )?;
    Ok(())
}

/// Ends every login of a user (and their unredeemed event tokens); how many
/// login tokens there were.
pub async fn delete_user_tokens(db: &Db, user_id: &str) -> Result<u64, DbError> {
    let removed = execute!(db, "DELETE FROM auth_tokens WHERE user_id = $1", user_id)?;
    execute!(db, "DELETE FROM event_tokens WHERE user_id = $1", user_id)?;
    Ok(removed)
}

/// Ends every login of a user but one (the one changing the password), and
/// their unredeemed event tokens; how many login tokens were ended.
pub async fn delete_other_tokens(db: &Db, user_id: &str, keep_hash: &str) -> Result<u64, DbError> {
    let removed = execute!(
        db,
        "DELETE FROM auth_tokens WHERE user_id = $1 AND token_hash <> $2",
        user_id,
        keep_hash
    )?;
    execute!(
        db,
        "DELETE FROM event_tokens WHERE user_id = $1 AND (login_token_hash IS NULL OR login_token_hash <> $2)",
        user_id,
        keep_hash
    )?;
    Ok(removed)
}

/// Stores a new login token's hash.
pub async fn insert_token(
    db: &Db,
    token_hash: &str,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    execute!(
        db,
        "INSERT INTO auth_tokens (token_hash, user_id, created_at, last_used_at, expires_at) \
         VALUES ($1, $2, $3, $3, $4)",
        token_hash,
        user_id,
        now,
        expires_at
    )?;
    Ok(())
}

/// A token's record and its user, by token hash.
pub async fn find_token(db: &Db, token_hash: &str) -> Result<Option<TokenRecord>, DbError> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, TokenRecord>(
        "SELECT u.id, u.email, u.is_admin, u.can_use_internal, u.max_sessions, u.created_at, \
                u.disabled_at, u.session_policy, t.created_at AS token_created_at, \
                t.last_used_at, t.expires_at \
         FROM auth_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND u.disabled_at IS NULL"
    )
    .bind(token_hash)
    .fetch_optional(p)
    .await)?)
}

/// The most token hashes [`find_tokens`] and [`delete_tokens`] take in one
/// query: a request's bearer token and its first four login-cookie values.
pub const TOKENS_PER_QUERY: usize = 5;

/// The placeholders' values for `IN ($1, …, $5)`: `hashes`, the last one
/// repeated to fill the list (a repeat matches nothing new).
fn in_list(hashes: &[String]) -> [&str; TOKENS_PER_QUERY] {
    assert!(
        !hashes.is_empty() && hashes.len() <= TOKENS_PER_QUERY,
        "1 to {TOKENS_PER_QUERY} token hashes, not {}",
        hashes.len()
    );
    std::array::from_fn(|i| hashes[i.min(hashes.len() - 1)].as_str())
}

/// A token's hash with its record and user.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct HashedTokenRecord {
    pub token_hash: String,
    #[sqlx(flatten)]
    pub record: TokenRecord,
}

/// The records of those of 1 to [`TOKENS_PER_QUERY`] token hashes that
/// exist, in one query.
pub async fn find_tokens(db: &Db, hashes: &[String]) -> Result<Vec<HashedTokenRecord>, DbError> {
    let [a, b, c, d, e] = in_list(hashes);
    Ok(on_pool!(db, |p| sqlx::query_as::<_, HashedTokenRecord>(
        "SELECT t.token_hash, u.id, u.email, u.is_admin, u.can_use_internal, u.max_sessions, \
                u.created_at, u.disabled_at, u.session_policy, t.created_at AS token_created_at, \
                t.last_used_at, t.expires_at \
         FROM auth_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash IN ($1, $2, $3, $4, $5) AND u.disabled_at IS NULL"
    )
    .bind(a)
    .bind(b)
    .bind(c)
    .bind(d)
    .bind(e)
    .fetch_all(p)
    .await)?)
}

/// Revokes 1 to [`TOKENS_PER_QUERY`] tokens in one statement; unknown ones
/// are not an error.
pub async fn delete_tokens(db: &Db, hashes: &[String]) -> Result<(), DbError> {
    let [a, b, c, d, e] = in_list(hashes);
    execute!(
        db,
        "DELETE FROM auth_tokens WHERE token_hash IN ($1, $2, $3, $4, $5)",
        a,
        b,
        c,
        d,
        e
    )?;
    Ok(())
}

/// Writes back the last use of many tokens in one transaction.
pub async fn touch_tokens(db: &Db, uses: &[(String, i64)]) -> Result<(), DbError> {
    if uses.is_empty() {
        return Ok(());
    }
    on_pool!(db, |p| {
        let mut tx = p.begin().await?;
        for (hash, at) in uses {
            sqlx::query(
                "UPDATE auth_tokens SET last_used_at = $2 WHERE token_hash = $1 AND last_used_at < $2",
            )
            .bind(hash)
            .bind(*at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })?;
    Ok(())
}

/// Deletes tokens past their absolute expiry or idle longer than `idle_secs`, and stale event tokens.
pub async fn delete_expired_tokens(db: &Db, now: i64, idle_secs: i64) -> Result<u64, DbError> {
    let removed = execute!(
        db,
        "DELETE FROM auth_tokens WHERE expires_at <= $1 OR last_used_at <= $2",
        now,
        now - idle_secs
    )?;
    execute!(db, "DELETE FROM event_tokens WHERE expires_at <= $1", now)?;
    Ok(removed)
}

/// Stores a single-use event token's hash, with the hash of the login token
/// it was issued under.
pub async fn insert_event_token(
    db: &Db,
    token_hash: &str,
    user_id: &str,
    login_token_hash: &str,
    expires_at: i64,
) -> Result<(), DbError> {
    execute!(
        db,
        "INSERT INTO event_tokens (token_hash, user_id, login_token_hash, expires_at) \
         VALUES ($1, $2, $3, $4)",
        token_hash,
        user_id,
        login_token_hash,
        expires_at
    )?;
    Ok(())
}

/// A redeemed event token: its user, and the login it was issued under
/// (`None` for tokens issued before that was recorded).
#[derive(Debug)]
pub struct RedeemedEventToken {
    /// The user the stream is for.
    pub user: User,
    /// The hash (hex) of the login token the event token was issued under.
    pub login_token_hash: Option<String>,
}

/// Redeems an event token: deletes it and returns its user when it had not expired.
/// Deleting in the same statement makes it single-use across api replicas.
pub async fn redeem_event_token(
    db: &Db,
    token_hash: &str,
    now: i64,
) -> Result<Option<RedeemedEventToken>, DbError> {
    type Row = (String, i64, Option<String>);
    let row: Option<Row> = on_pool!(db, |p| sqlx::query_as::<_, Row>(
        "DELETE FROM event_tokens WHERE token_hash = $1 \
         RETURNING user_id, expires_at, login_token_hash"
    )
    .bind(token_hash)
    .fetch_optional(p)
    .await)?;
    let Some((user_id, expires_at, login_token_hash)) = row else {
        return Ok(None);
    };
    if expires_at <= now {
        return Ok(None);
    }
    Ok(get_user(db, &user_id)
        .await?
        .filter(|user| user.disabled_at.is_none())
        .map(|user| RedeemedEventToken {
            user,
            login_token_hash,
        }))
}

/// Number of admins.
pub async fn count_admins(db: &Db) -> Result<i64, DbError> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, (i64,)>(
        "SELECT COUNT(*) FROM users WHERE is_admin = TRUE"
    )
    .fetch_one(p)
    .await)?
    .0)
}

/// Overwrites a token's times. For tests of expiry and for admin tooling that ends logins early.
pub async fn set_token_times(
    db: &Db,
    token_hash: &str,
    last_used_at: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    execute!(
        db,
        "UPDATE auth_tokens SET last_used_at = $2, expires_at = $3 WHERE token_hash = $1",
        token_hash,
        last_used_at,
        expires_at
    )?;
    Ok(())
}
