//! Login tokens: generation, hashing, and the in-memory cache that lets
//! `session-proxy` authenticate without a database query per request. The
//! database is asked on a miss and again once an entry is older than the cache
//! TTL; unknown tokens are remembered briefly so that forged cookies do not turn
//! into one query each. Token use (for the idle expiry) is recorded in memory and
//! written back in batches by the flusher.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::db::{Db, DbError};
use crate::users::{self, TokenRecord, User};

/// SHA-256 of a token: what the database stores and the cache is keyed by.
pub type TokenHash = [u8; 32];

/// How long an unknown token is remembered as unknown (seconds).
const NEGATIVE_TTL_SECS: i64 = 10;
/// Most entries of each cache before stale ones are dropped.
const MAX_ENTRIES: usize = 100_000;

/// A new random token (32 bytes, base64url): what the cookie carries.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The hash of a token.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// The hash as stored in the database (lower-case hex).
pub fn hash_hex(hash: &TokenHash) -> String {
    hex::encode(hash)
}

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Principal {
    /// The user.
    pub user: User,
    /// Hash of the login token the request came with (for logout).
    pub token_hash: TokenHash,
}

impl Principal {
    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.user.is_admin
    }
}

struct CachedToken {
    principal: Arc<Principal>,
    expires_at: i64,
    fetched_at: i64,
    last_used: AtomicI64,
    flushed_used: AtomicI64,
}

/// Whether a lookup counts as a use of the token (for its idle expiry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    Record,
    Peek,
}

/// The token cache.
pub struct TokenCache {
    entries: RwLock<HashMap<TokenHash, Arc<CachedToken>>>,
    unknown: Mutex<HashMap<TokenHash, i64>>,
    ttl_secs: i64,
    idle_secs: i64,
}

impl TokenCache {
    /// A cache trusting entries for `ttl_secs`, enforcing an idle expiry of `idle_secs`.
    pub fn new(ttl_secs: i64, idle_secs: i64) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
            ttl_secs,
            idle_secs,
        }
    }

    /// The principal a token stands for, when it is valid now (Unix seconds); records its use.
    pub async fn resolve(
        &self,
        db: &Db,
        token: &str,
        now: i64,
    ) -> Result<Option<Arc<Principal>>, DbError> {
        self.resolve_key(db, hash_token(token), now, Use::Record)
            .await
    }

    /// Whether the login whose token hashes to `key` is still valid now
    /// (not logged out, expired or idle), without counting this as a use:
    /// what an open event stream checks. From the cache while it is fresh.
    pub async fn still_valid(&self, db: &Db, key: TokenHash, now: i64) -> Result<bool, DbError> {
        Ok(self.resolve_key(db, key, now, Use::Peek).await?.is_some())
    }

    async fn resolve_key(
        &self,
        db: &Db,
        key: TokenHash,
        now: i64,
        how: Use,
    ) -> Result<Option<Arc<Principal>>, DbError> {
        if let Some(answer) = self.cached_answer(&key, now, how) {
            return Ok(answer);
        }
        let record = users::find_token(db, &hash_hex(&key)).await?;
        Ok(self.store(key, record, now, how))
    }

    /// The principal of the first of `tokens` that is valid now, recording
    /// the use of that one only. Those the cache cannot answer are looked
    /// up together, in one query; at most [`users::TOKENS_PER_QUERY`]
    /// tokens are looked at.
    pub async fn resolve_first(
        &self,
        db: &Db,
        tokens: &[&str],
        now: i64,
    ) -> Result<Option<Arc<Principal>>, DbError> {
        // The usual request: one login the cache knows. Answered as before,
        // with nothing collected (this is forward_auth's path).
        if let Some(first) = tokens.first()
            && let Some(Some(principal)) = self.cached_answer(&hash_token(first), now, Use::Record)
        {
            return Ok(Some(principal));
        }
        let keys: Vec<TokenHash> = tokens
            .iter()
            .take(users::TOKENS_PER_QUERY)
            .map(|t| hash_token(t))
            .collect();
        let mut answers: Vec<Option<Option<Arc<Principal>>>> = keys
            .iter()
            .map(|k| self.cached_answer(k, now, Use::Peek))
            .collect();
        let missing: Vec<String> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(k, _)| hash_hex(k))
            .collect();
        if !missing.is_empty() {
            let found: HashMap<String, TokenRecord> = users::find_tokens(db, &missing)
                .await?
                .into_iter()
                .map(|r| (r.token_hash, r.record))
                .collect();
            for (key, answer) in keys.iter().zip(answers.iter_mut()) {
                if answer.is_none() {
                    // `get`, not `remove`: a request may carry one token
                    // twice (a bearer token and a cookie), and the second
                    // must not be stored as unknown.
                    let record = found.get(&hash_hex(key)).cloned();
                    *answer = Some(self.store(*key, record, now, Use::Peek));
                }
            }
        }
        let Some((key, principal)) = keys
            .iter()
            .zip(answers)
            .find_map(|(key, answer)| Some((key, answer.flatten()?)))
        else {
            return Ok(None);
        };
        // Record the use of the one chosen (it is in the cache now, fresh).
        let entry = self.cached(key);
        Ok(match entry {
            Some(entry) => self.check(&entry, now, Use::Record),
            None => Some(principal),
        })
    }

    /// The cache's entry for `key`, fresh or not.
    fn cached(&self, key: &TokenHash) -> Option<Arc<CachedToken>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// The answer the cache gives for `key` without the database: a fresh
    /// entry's (valid or not), or none for a recently unknown token;
    /// `None` when the database must be asked.
    fn cached_answer(&self, key: &TokenHash, now: i64, how: Use) -> Option<Option<Arc<Principal>>> {
        let cached = self.cached(key);
        if let Some(entry) = &cached
            && now - entry.fetched_at < self.ttl_secs
        {
            return Some(self.check(entry, now, how));
        }
        if cached.is_none()
            && self
                .unknown
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(key)
                .is_some_and(|until| *until > now)
        {
            return Some(None);
        }
        None
    }

    /// Caches what the database said of `key` (its record, or that it is
    /// unknown) and answers from it.
    fn store(
        &self,
        key: TokenHash,
        record: Option<TokenRecord>,
        now: i64,
        how: Use,
    ) -> Option<Arc<Principal>> {
        let cached = self.cached(&key);
        let Some(record) = record else {
            self.forget(&key);
            let mut unknown = self.unknown.lock().unwrap_or_else(|p| p.into_inner());
            if unknown.len() >= MAX_ENTRIES {
                unknown.retain(|_, until| *until > now);
                if unknown.len() >= MAX_ENTRIES {
                    unknown.clear();
                }
            }
            unknown.insert(key, now + NEGATIVE_TTL_SECS);
            return None;
        };
        let last_used = cached
            .as_ref()
            .map_or(0, |c| c.last_used.load(Ordering::Relaxed))
            .max(record.last_used_at);
        let entry = Arc::new(CachedToken {
            principal: Arc::new(Principal {
                user: record.user,
                token_hash: key,
            }),
            expires_at: record.expires_at,
            fetched_at: now,
            last_used: AtomicI64::new(last_used),
            flushed_used: AtomicI64::new(record.last_used_at),
        });
        let principal = self.check(&entry, now, how);
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if principal.is_some() {
            if entries.len() >= MAX_ENTRIES {
                let ttl = self.ttl_secs;
                entries.retain(|_, e| now - e.fetched_at < ttl);
                if entries.len() >= MAX_ENTRIES {
                    entries.clear();
                }
            }
            entries.insert(key, entry);
        } else {
            entries.remove(&key);
        }
        principal
    }

    fn check(&self, entry: &CachedToken, now: i64, how: Use) -> Option<Arc<Principal>> {
        let last = entry.last_used.load(Ordering::Relaxed);
        if now >= entry.expires_at || now - last >= self.idle_secs {
            return None;
        }
        if how == Use::Record && last < now {
            entry.last_used.store(now, Ordering::Relaxed);
        }
        Some(entry.principal.clone())
    }

    /// Drops a token from the cache (logout).
    pub fn forget(&self, key: &TokenHash) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Drops every cached token of a user (their flags changed).
    pub fn forget_user(&self, user_id: &str) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, e| e.principal.user.id != user_id);
    }

    /// Token uses not yet written back: `(hash hex, unix seconds)`.
    pub fn pending_uses(&self) -> Vec<(String, i64)> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(key, e)| {
                let last = e.last_used.load(Ordering::Relaxed);
                (last > e.flushed_used.load(Ordering::Relaxed)).then(|| (hash_hex(key), last))
            })
            .collect()
    }

    /// Marks token uses as written back.
    pub fn mark_flushed(&self, uses: &[(String, i64)]) {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        for (hex_hash, at) in uses {
            let mut key = [0u8; 32];
            if hex::decode_to_slice(hex_hash, &mut key).is_ok()
                && let Some(e) = entries.get(&key)
            {
                e.flushed_used.fetch_max(*at, Ordering::Relaxed);
            }
        }
    }

    /// Number of cached valid tokens.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
