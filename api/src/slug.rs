//! The slug of a Session as the api reads it.

use medforge_crds::Session;
use medforge_crds::keys::SLUG_KEY;

/// `status.slug`, or the slug the api chose (the label) until the operator copies it.
pub fn session_slug(session: &Session) -> Option<String> {
    session
        .status
        .as_ref()
        .and_then(|s| s.slug.clone())
        .or_else(|| {
            session
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SLUG_KEY).cloned())
        })
}
