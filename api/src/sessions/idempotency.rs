//! Idempotent creates: `POST …/sessions` with an `Idempotency-Key` header.
//!
//! Nothing is kept in the api: the Session's name is made from the caller's
//! user id and the key (a hash), and the control plane's create is atomic,
//! so a retry on any replica, after any crash, names the Session the first
//! request wrote. The Session carries the annotation [`ANNOTATION`]: the
//! caller's id and a hash of what was asked (the exposure and the body), so
//! a retry that asks for something else is told so instead of being given
//! the first request's session.

use axum::http::{HeaderMap, StatusCode};
use medforge_crds::{Exposure, Session};
use sha2::{Digest, Sha256};

use super::body::CreateSession;
use crate::error::{ApiError, FieldError};
use crate::validate;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";

/// On a Session created with a key: `<caller's user id>/<hex SHA-256 of the
/// exposure and the body>`.
pub const ANNOTATION: &str = "medforge.dev/idempotency";

/// Sent as `Idempotent-Replayed: true` on the answer to a retry: the session
/// is the one an earlier request with the same key created.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";

/// The key of a create, once checked.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    /// The Session's name: a UUID made from the caller's id and the key.
    name: String,
    /// The [`ANNOTATION`]'s value for this request.
    stamp: String,
}

/// The request's `Idempotency-Key`, if it has one: 400
/// `invalid_idempotency_key` (naming the header) for one that does not
/// follow [`validate::IDEMPOTENCY_KEY`] or is sent twice.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let bad = |message: String| ApiError::Rejected {
        status: StatusCode::BAD_REQUEST,
        code: "invalid_idempotency_key",
        detail: format!("The {HEADER} header {message}."),
        errors: vec![FieldError::new(HEADER, message)],
    };
    if values.next().is_some() {
        return Err(bad("must be sent once".into()));
    }
    let text = value
        .to_str()
        .map_err(|_| bad(validate::IDEMPOTENCY_KEY.error(HEADER).message))?;
    validate::IDEMPOTENCY_KEY
        .check(HEADER, text)
        .map_err(|e| bad(e.message))?;
    Ok(Some(text.to_owned()))
}

impl IdempotencyKey {
    /// The key `key` of `caller` (a user id) for a create of `body` on `exposure`.
    pub fn new(caller: &str, key: &str, exposure: Exposure, body: &CreateSession) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"medforge session name v1\0");
        digest.update(caller.as_bytes());
        digest.update(b"\0");
        digest.update(key.as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest.finalize()[..16]);
        // A version 8 (custom) UUID: shaped like every other session id,
        // never equal to a random (version 4) one.
        bytes[6] = (bytes[6] & 0x0f) | 0x80;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let name = uuid::Uuid::from_bytes(bytes).to_string();
        let mut request = Sha256::new();
        request.update(b"medforge create v1\0");
        request.update(exposure.as_str().as_bytes());
        request.update(b"\0");
        // Every field, in declaration order, absent ones as null: `4` and
        // `4.0`, absent and `null`, key order and spacing are the same body.
        request.update(serde_json::to_vec(body).unwrap_or_default());
        let stamp = format!("{caller}/{}", hex::encode(request.finalize()));
        Self { name, stamp }
    }

    /// The name of the Session this key creates.
    pub fn session_name(&self) -> &str {
        &self.name
    }

    /// The [`ANNOTATION`]'s value for this request.
    pub fn stamp(&self) -> &str {
        &self.stamp
    }

    /// Whether `existing` (the Session of this key's name) was created by the
    /// same caller asking the same: otherwise 409 `idempotency_key_reused`
    /// (which says nothing of the session).
    pub fn check(&self, existing: &Session) -> Result<(), ApiError> {
        let stamp = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION));
        if stamp.is_some_and(|s| *s == self.stamp) {
            return Ok(());
        }
        Err(ApiError::conflict(
            "idempotency_key_reused",
            format!(
                "This {HEADER} was used for another request (another body or exposure); use a new key for a new session."
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_is_a_session_id_of_the_caller_and_key_alone() {
        let body = CreateSession::default();
        let a = IdempotencyKey::new("user-a", "k1", Exposure::External, &body);
        assert!(validate::KUBE_NAME.matches(a.session_name()));
        let parsed = uuid::Uuid::parse_str(a.session_name()).unwrap();
        assert_eq!(parsed.get_version_num(), 8);
        let other_body = CreateSession {
            gpus: Some(2),
            ..CreateSession::default()
        };
        let again = IdempotencyKey::new("user-a", "k1", Exposure::Internal, &other_body);
        assert_eq!(again.session_name(), a.session_name());
        assert_ne!(again.stamp(), a.stamp());
        let b = IdempotencyKey::new("user-b", "k1", Exposure::External, &body);
        assert_ne!(b.session_name(), a.session_name());
        let k2 = IdempotencyKey::new("user-a", "k2", Exposure::External, &body);
        assert_ne!(k2.session_name(), a.session_name());
    }
}
