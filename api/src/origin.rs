//! The `Origin` allowlist: a state-changing request (POST, PUT, PATCH, DELETE)
//! whose `Origin` header is present and not allowed is refused with 403 before any
//! handler runs. No `Origin` (programs, same-origin navigations in old browsers) passes.
//! Session hosts are never allowed: a session runs its owner's code.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The set of allowed origins, normalized (`scheme://host[:port]`, lower case).
#[derive(Clone, Debug, Default)]
pub struct OriginAllowlist {
    allowed: HashSet<String>,
}

impl OriginAllowlist {
    /// An allowlist of exact origins.
    pub fn new(origins: impl IntoIterator<Item = String>) -> Self {
        Self {
            allowed: origins
                .into_iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether an `Origin` header value is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let origin = origin
            .strip_suffix(":443")
            .filter(|o| o.starts_with("https://"))
            .unwrap_or(&origin);
        self.allowed.contains(origin)
    }
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// The middleware, over the allowlist of the state (shared, not copied per request).
pub async fn check_origin(
    State(origins): State<Arc<OriginAllowlist>>,
    req: Request,
    next: Next,
) -> Response {
    if changes_state(req.method())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let allowed = origin.to_str().is_ok_and(|o| origins.allows(o));
        if !allowed {
            return ApiError::OriginNotAllowed.into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_origins_only() {
        let list = OriginAllowlist::new([
            "https://medforge.example.org".to_owned(),
            "http://localhost:3000/".to_owned(),
        ]);
        assert!(list.allows("https://medforge.example.org"));
        assert!(list.allows("HTTPS://MedForge.Example.Org"));
        assert!(list.allows("https://medforge.example.org:443"));
        assert!(list.allows("http://localhost:3000"));
        assert!(!list.allows("http://medforge.example.org"));
        assert!(!list.allows("https://evil.example.org"));
        assert!(!list.allows("https://s-abcd1234.medforge.example.org"));
        assert!(!list.allows("null"));
        assert!(!list.allows("https://medforge.example.org.evil.com"));
    }
}
