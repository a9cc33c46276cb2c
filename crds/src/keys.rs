//! Labels and annotations that MedForge puts on its resources.

/// Label naming the owner (user id) of a Session.
pub const OWNER_LABEL: &str = "medforge.dev/owner";
/// Label and annotation carrying the slug the api chose, until the scheduler
/// copies it to `status.slug`.
pub const SLUG_KEY: &str = "medforge.dev/slug";
/// Annotation carrying the owner's per-user session limit override, for the scheduler.
pub const MAX_SESSIONS_ANNOTATION: &str = "medforge.dev/max-sessions";
/// Annotation with the owner's email, written by the api when it creates a
/// Session, so that `kubectl get sessions` shows a person rather than a user
/// id. Emails cannot change in MedForge, so the copy stays correct.
pub const OWNER_EMAIL_ANNOTATION: &str = "medforge.dev/owner-email";
/// Annotation with the URL the api serves the Session at
/// (`https://s-<slug>.<exposure>.<domain>/`), written when it creates the Session.
pub const URL_ANNOTATION: &str = "medforge.dev/url";
