//! ServiceAccount tokens: what `POST …/serviceaccounts/<name>/token` (a
//! TokenRequest, `kubectl create token`) hands out and what the server
//! accepts as that ServiceAccount.
//!
//! A token is `mfsa1.<claims>.<mac>`: the claims (namespace, name and uid of
//! the ServiceAccount, issue and expiry times, in Unix seconds) as base64url
//! JSON, and an HMAC-SHA256 over them with a key only the server holds
//! (`<data-dir>/sa-signing.key`, created on first start). The token is bound
//! to the ServiceAccount's uid: deleting the ServiceAccount (or recreating
//! one of the same name) revokes every token given for it, as on
//! kube-apiserver. See docs/decisions/0021-rbac-in-the-embedded-control-plane.md.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

const PREFIX: &str = "mfsa1";
const KEY_FILE: &str = "sa-signing.key";

/// kube-apiserver's bounds on a TokenRequest's `expirationSeconds`: at least
/// ten minutes; the default is an hour.
pub const MIN_EXPIRATION_SECS: i64 = 600;
pub const DEFAULT_EXPIRATION_SECS: i64 = 3600;
/// The longest a token may live here (kube-apiserver's
/// `--service-account-max-token-expiration` is unset by default; a bound is
/// the safe choice): 48 hours. Longer asks get this, as kube-apiserver
/// shortens them to its maximum.
pub const MAX_EXPIRATION_SECS: i64 = 48 * 3600;

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// Signs and checks tokens with the server's key.
pub struct Signer {
    key: hmac::Key,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

impl Signer {
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// The key in `dir`, created (32 random bytes, mode 0600) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Signer, crate::error::Error> {
        let path = dir.join(KEY_FILE);
        let secret = match std::fs::read(&path) {
            Ok(b) if b.len() >= 32 => b,
            _ => {
                let mut b = vec![0u8; 32];
                rand::fill(&mut b[..]);
                crate::pki::write_private(&path, &b)?;
                b
            }
        };
        Ok(Signer::new(&secret))
    }

    /// A token carrying `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signed = format!("{PREFIX}.{body}");
        let mac = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
    }

    /// The claims of a token this server signed that has not expired at
    /// `now`; `None` for anything else (a forged or altered token, another
    /// server's, an expired one, garbage).
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let (signed, mac) = token.rsplit_once('.')?;
        let body = signed.strip_prefix(PREFIX)?.strip_prefix('.')?;
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        hmac::verify(&self.key, signed.as_bytes(), &mac).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (now < claims.exp).then_some(claims)
    }
}

/// Whether a bearer token looks like a ServiceAccount token of this server.
pub fn is_service_account_token(token: &str) -> bool {
    token.starts_with(PREFIX) && token[PREFIX.len()..].starts_with('.')
}

/// The lifetime a TokenRequest gets for the `expirationSeconds` it asked
/// for: the default when unset, an error below the minimum, the maximum
/// when above it.
pub fn lifetime(asked: Option<i64>) -> Result<i64, String> {
    match asked {
        None => Ok(DEFAULT_EXPIRATION_SECS),
        Some(s) if s < MIN_EXPIRATION_SECS => Err(format!(
            "may not specify a duration less than {} minutes",
            MIN_EXPIRATION_SECS / 60
        )),
        Some(s) => Ok(s.min(MAX_EXPIRATION_SECS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            namespace: "medforge-system".into(),
            name: "medforge-agent".into(),
            uid: "u-1".into(),
            iat: 100,
            exp,
        }
    }

    #[test]
    fn a_minted_token_verifies_until_it_expires() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let t = s.mint(&claims(1000));
        assert!(is_service_account_token(&t));
        assert_eq!(s.verify(&t, 999), Some(claims(1000)));
        assert_eq!(s.verify(&t, 1000), None, "expired at exp");
    }

    #[test]
    fn altered_forged_and_foreign_tokens_are_refused() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let other = Signer::new(b"another key, another server......");
        let t = s.mint(&claims(1000));
        // Another server's token.
        assert_eq!(s.verify(&other.mint(&claims(1000)), 0), None);
        // The claims changed (another ServiceAccount, a later expiry), the MAC kept.
        let (_, mac) = t.rsplit_once('.').unwrap();
        let mut forged = claims(9_999_999);
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.verify(&format!("{PREFIX}.{body}.{mac}"), 0), None);
        forged.exp = 1000;
        forged.name = "medforge-api".into();
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(s.verify(&format!("{PREFIX}.{body}.{mac}"), 0), None);
        // Truncated, no MAC, empty, garbage.
        for bad in [
            &t[..t.len() - 1],
            signed_part(&t),
            "",
            "mfsa1.",
            "mfsa1..",
            "x.y.z",
        ] {
            assert_eq!(s.verify(bad, 0), None, "{bad:?}");
        }
    }

    fn signed_part(t: &str) -> &str {
        t.rsplit_once('.').unwrap().0
    }

    #[test]
    fn lifetimes_are_bounded() {
        assert_eq!(lifetime(None), Ok(3600));
        assert_eq!(lifetime(Some(600)), Ok(600));
        assert!(lifetime(Some(599)).unwrap_err().contains("10 minutes"));
        assert_eq!(lifetime(Some(10 * 365 * 86400)), Ok(MAX_EXPIRATION_SECS));
    }
}
