//! Create: write a Session resource, wait (bounded) for the scheduler's decision
//! as the watch reports it, and optionally for the session to be Ready.
//! [`create_session`] is the whole workflow, without HTTP; the handler only
//! reads the request and shapes the answer.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use medforge_crds::keys::{
    MAX_SESSIONS_ANNOTATION, OWNER_EMAIL_ANNOTATION, OWNER_LABEL, SESSION_POLICY_ANNOTATION,
    SLUG_KEY, SNAPSHOT_RETENTION_ANNOTATION, URL_ANNOTATION,
};
use medforge_crds::{
    Exposure, Session, SessionCondition, SessionPhase, SessionReason, SessionSpec, conditions,
};
use serde::Deserialize;
use tokio::time::Instant;

use super::body::{CreateSession, within_policy};
use super::idempotency::{self, IdempotencyKey};
use super::view::{SessionReply, phase_name, view_indexed};
use crate::account_policy::{overrides_of, policy_for};
use crate::auth::Auth;
use crate::backend::BackendError;
use crate::error::ApiError;
use crate::index::{IndexedSession, SessionIndex};
use crate::packs::catalogue::may_start_new;
use crate::reply::Reply;
use crate::request::{JsonOrEmpty, Query};
use crate::snapshots::access::check_restore;
use crate::state::AppState;
use crate::tokens::Principal;

/// A new slug, not taken in the index.
pub fn new_slug(index: &SessionIndex) -> String {
    medforge_crds::slug::Slug::unused(|s| index.slug_taken(s)).into_string()
}

/// The scheduler's refusals the api knows: the condition's reason, the
/// problem `code` it becomes (409), and advice. Any other reason is
/// `scheduler_refused`, with the scheduler's message.
pub const SCHEDULER_REFUSALS: &[(SessionReason, &str, &str)] = &[
    (
        SessionReason::NoGpuAvailable,
        "no_gpu_available",
        "No GPU is free for this session now; ask for fewer GPUs or try later.",
    ),
    (
        SessionReason::UserLimitReached,
        "user_limit_reached",
        "You have reached your limit of active sessions; stop one first.",
    ),
    (
        SessionReason::WorkspaceNodeUnavailable,
        "workspace_node_unavailable",
        "The node holding this session's workspace cannot take it now (gone, not ready or cordoned); try later or ask an admin.",
    ),
    (
        SessionReason::CpuOnlyNotAllowed,
        "cpu_only_not_allowed",
        "Sessions without GPUs are not allowed here; ask for at least one GPU.",
    ),
    (
        SessionReason::SnapshotNotFound,
        "snapshot_not_found",
        "The snapshot to restore from is gone or no longer ready (deleted meanwhile); restore another one.",
    ),
];

/// The code of any other refusal.
pub const OTHER_REFUSAL: &str = "scheduler_refused";

pub(super) fn refusal(reason: &str, message: &str) -> ApiError {
    let (code, advice) = SCHEDULER_REFUSALS
        .iter()
        .find(|(r, _, _)| *reason == *r)
        .map(|(_, code, advice)| (*code, *advice))
        .unwrap_or((OTHER_REFUSAL, "The scheduler refused this session."));
    let detail = if message.is_empty() {
        advice.to_owned()
    } else {
        format!("{advice} ({message})")
    };
    ApiError::conflict(code, detail)
}

/// Query of `POST …/sessions`.
#[derive(Debug, Default, Deserialize)]
pub struct CreateQuery {
    /// `ready`: answer once the session is Ready.
    pub wait: Option<String>,
}

/// How a create ended, short of an error.
#[derive(Debug)]
pub enum Created {
    /// The scheduler bound the session (create did not wait for Ready).
    Scheduled(Arc<IndexedSession>),
    /// Bound and Ready.
    Ready(Arc<IndexedSession>),
    /// Bound, but not Ready within the configured wait.
    NotReadyYet(Arc<IndexedSession>),
}

enum Decision {
    Bound(Arc<IndexedSession>),
    Refused { reason: String, message: String },
    Vanished,
}

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    Query(query): Query<CreateQuery>,
    headers: HeaderMap,
    JsonOrEmpty(body): JsonOrEmpty<CreateSession>,
) -> Result<Response, ApiError> {
    // The permission is checked before the query, as it always was.
    may_create(&principal, exposure)?;
    let wait_ready = match query.wait.as_deref() {
        None => false,
        Some("ready") => true,
        Some(_) => return Err(ApiError::invalid("wait", "must be `ready` or absent")),
    };
    let key = idempotency::key_of(&headers)?;
    let (created, replayed) = create_session_once(
        &state,
        &principal,
        exposure,
        body,
        wait_ready,
        key.as_deref(),
    )
    .await?;
    let reply = |message: &str, entry: &IndexedSession| SessionReply {
        message: message.into(),
        session: view_indexed(&state, entry),
    };
    let reply = match created {
        Created::Scheduled(entry) => Reply::created(reply("Session scheduled.", &entry)),
        Created::Ready(entry) => Reply::created(reply("Session ready.", &entry)),
        Created::NotReadyYet(entry) => {
            Reply::accepted(reply("Session scheduled; not ready yet.", &entry))
        }
    };
    Ok(if replayed {
        reply.header(
            HeaderName::from_static("idempotent-replayed"),
            HeaderValue::from_static("true"),
        )
    } else {
        reply
    }
    .into_response())
}

/// Creates a session for `principal` from a create body: checks it, the
/// Pack it names (which must exist, not be deprecated and offer the
/// exposure; 422 naming `pack`) and the snapshot it is restored from, if
/// any, writes the Session, waits for the
/// scheduler (a refusal or no decision in time deletes it again) and, with
/// `wait_ready`, for the session to be Ready.
pub async fn create_session(
    state: &AppState,
    principal: &Principal,
    exposure: Exposure,
    body: CreateSession,
    wait_ready: bool,
) -> Result<Created, ApiError> {
    create_session_once(state, principal, exposure, body, wait_ready, None)
        .await
        .map(|(created, _)| created)
}

/// [`create_session`] with an idempotency key (`Idempotency-Key`): the
/// Session is named after the caller and the key
/// ([`IdempotencyKey::session_name`]), so a retry, on any replica, finds the
/// one an earlier request wrote and answers with it (`true`: a replay), as
/// that request would have, waiting for the scheduler and, with
/// `wait_ready`, for Ready. A retry asking for something else (body or
/// exposure) is 409 `idempotency_key_reused`. Without a key, every call
/// creates a new session.
pub async fn create_session_once(
    state: &AppState,
    principal: &Principal,
    exposure: Exposure,
    body: CreateSession,
    wait_ready: bool,
    key: Option<&str>,
) -> Result<(Created, bool), ApiError> {
    may_create(principal, exposure)?;
    let key = key.map(|k| IdempotencyKey::new(&principal.user.id, k, exposure, &body));
    // A retry: answered with what the first request created, checks and all
    // (they held when it was created).
    if let Some(key) = &key
        && let Some(existing) = state.backend().get(key.session_name()).await?
    {
        return replay(state, key, &existing, wait_ready)
            .await
            .map(|c| (c, true));
    }
    let config = &state.config().sessions;
    let gpus_given = body.gpus.is_some();
    let mut spec = body.into_spec(&principal.user.id, exposure, config)?;
    let restore_from = spec.workspace.as_ref().and_then(|w| w.restore_from.clone());
    // An admin who restores a user's snapshot restores it for that user:
    // the session is theirs (the node agent restores only an owner's own
    // snapshot), under their limits.
    let on_behalf = match &restore_from {
        Some(from) => for_snapshot_owner(state, principal, from).await?,
        None => None,
    };
    let owner = on_behalf.as_ref().unwrap_or(principal);
    if on_behalf.is_some() {
        may_create(owner, exposure)?;
        spec.owner = owner.user.id.clone();
    }
    if let Some(from) = &restore_from {
        check_restore(state, principal, &spec.owner, from)?;
    }
    let admin_id = principal.user.id.as_str();
    let principal = owner;
    let pack = state.backend().get_pack(&spec.pack).await?;
    let pack = may_start_new(&spec.pack, pack.as_ref(), exposure)
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let policy = policy_for(&config.policy, &principal.user)?;
    within_policy(&mut spec, gpus_given, Some(pack), &policy)?;
    let slug = new_slug(state.index());
    let mut session = new_session(state, principal, spec, &slug);
    if let Some(key) = &key {
        session.metadata.name = Some(key.session_name().to_owned());
        if let Some(annotations) = session.metadata.annotations.as_mut() {
            annotations.insert(idempotency::ANNOTATION.to_owned(), key.stamp().to_owned());
        }
    }
    let name = session.metadata.name.clone().unwrap_or_default();
    match (state.backend().create(session).await, &key) {
        (Ok(_), _) => {}
        // Another request with this key (a retry on another replica) wrote
        // it between our look and our create: answer as a retry.
        (Err(BackendError::Conflict(_)), Some(key)) => {
            let existing = state.backend().get(&name).await?.ok_or_else(|| {
                ApiError::conflict(
                    "session_deleted",
                    "The session made with this Idempotency-Key was deleted meanwhile.",
                )
            })?;
            return replay(state, key, &existing, wait_ready)
                .await
                .map(|c| (c, true));
        }
        (Err(err), _) => return Err(err.into()),
    }
    if let (Some(admin), Some(from)) = (on_behalf.as_ref().map(|_| admin_id), &restore_from) {
        crate::audit::record(
            state.db(),
            Some(admin),
            crate::audit::Action::SnapshotRestoredForUser,
            Some(&principal.user.id),
            serde_json::json!({"session": name, "snapshot": from}),
        )
        .await
        .map_err(ApiError::internal)?;
    }
    tracing::info!(session = %name, slug = %slug, user_id = %principal.user.id, "session created; waiting for the scheduler");

    let bound = scheduled(state, &name).await?;
    follow_given_slug(state, &name, &slug, &bound).await;
    if !wait_ready {
        return Ok((Created::Scheduled(bound), false));
    }
    ready(state, &name, bound).await.map(|c| (c, false))
}

/// The answer to a retry of a keyed create whose Session `existing` exists:
/// the create's own answer, once the request is known to be the same.
async fn replay(
    state: &AppState,
    key: &IdempotencyKey,
    existing: &Session,
    wait_ready: bool,
) -> Result<Created, ApiError> {
    key.check(existing)?;
    let name = key.session_name();
    if existing.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::conflict(
            "session_deleted",
            "The session made with this Idempotency-Key is being deleted; use a new key for a new session.",
        ));
    }
    tracing::info!(session = %name, "idempotent create retried; answering with its session");
    let bound = scheduled(state, name).await?;
    if let Some(chosen) = existing
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SLUG_KEY))
    {
        follow_given_slug(state, name, chosen, &bound).await;
    }
    if !wait_ready {
        return Ok(Created::Scheduled(bound));
    }
    ready(state, name, bound).await
}

/// The owner of the snapshot `from`, as the principal a session is created
/// for, when an admin names another user's snapshot; `None` otherwise (the
/// caller's own, or one the caller may not see: [`check_restore`] says so).
async fn for_snapshot_owner(
    state: &AppState,
    principal: &Principal,
    from: &str,
) -> Result<Option<Principal>, ApiError> {
    if !principal.is_admin() {
        return Ok(None);
    }
    let Some(entry) = state.snapshots().get(from) else {
        return Ok(None);
    };
    if entry.owner == principal.user.id {
        return Ok(None);
    }
    let user = crate::users::get_user(state.db(), &entry.owner)
        .await
        .map_err(ApiError::internal)?;
    match user {
        Some(user) if user.disabled_at.is_none() => Ok(Some(Principal {
            user,
            token_hash: principal.token_hash,
        })),
        Some(_) => Err(ApiError::conflict(
            "owner_disabled",
            format!(
                "restore_from: snapshot `{from}` belongs to a disabled account; enable it first."
            ),
        )),
        None => Err(ApiError::conflict(
            "snapshot_not_owned",
            format!("restore_from: the owner of snapshot `{from}` has no account any more."),
        )),
    }
}

/// Everyone may create external sessions; internal ones need the permission (or an admin).
fn may_create(principal: &Principal, exposure: Exposure) -> Result<(), ApiError> {
    if exposure == Exposure::Internal && !(principal.user.can_use_internal || principal.is_admin())
    {
        return Err(ApiError::forbidden(
            "internal_not_allowed",
            "You may not create sessions on the internal domain; ask an admin.",
        ));
    }
    Ok(())
}

/// The Session resource for a checked spec, under a new name and `slug`.
fn new_session(state: &AppState, principal: &Principal, spec: SessionSpec, slug: &str) -> Session {
    let url = format!(
        "{}://{}/",
        state.config().public_scheme,
        state.hosts().host_for(slug, spec.exposure)
    );
    // Denormalised for people reading `kubectl get sessions`: emails cannot
    // change, and the URL follows from the slug and exposure, which cannot either.
    let mut annotations = BTreeMap::from([
        (SLUG_KEY.to_owned(), slug.to_owned()),
        (
            OWNER_EMAIL_ANNOTATION.to_owned(),
            principal.user.email.clone(),
        ),
        (URL_ANNOTATION.to_owned(), url),
    ]);
    if let Some(limit) = principal.user.max_sessions {
        annotations.insert(MAX_SESSIONS_ANNOTATION.to_owned(), limit.to_string());
    }
    // The node agent holds the session to the same account policy.
    if let Some(overrides) = overrides_of(&principal.user) {
        if let Ok(json) = serde_json::to_string(&overrides) {
            annotations.insert(SESSION_POLICY_ANNOTATION.to_owned(), json);
        }
        // …and keeps its snapshots as the account's retention says.
        if let Some(json) = overrides
            .retention
            .and_then(|r| serde_json::to_string(&r).ok())
        {
            annotations.insert(SNAPSHOT_RETENTION_ANNOTATION.to_owned(), json);
        }
    }
    Session {
        metadata: ObjectMeta {
            name: Some(uuid::Uuid::new_v4().to_string()),
            labels: Some(BTreeMap::from([
                (OWNER_LABEL.to_owned(), principal.user.id.clone()),
                (SLUG_KEY.to_owned(), slug.to_owned()),
            ])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    }
}

/// Waits for the scheduler's decision on a new Session: the session once
/// bound; otherwise the Session is deleted again and the error says why.
async fn scheduled(state: &AppState, name: &str) -> Result<Arc<IndexedSession>, ApiError> {
    let config = &state.config().sessions;
    let mut seen = false;
    let deadline = Instant::now() + config.schedule_timeout;
    let decision = state
        .index()
        .wait_for(name, deadline, |entry| {
            let Some(entry) = entry else {
                return seen.then_some(Decision::Vanished);
            };
            seen = true;
            let scheduled = entry.session.condition(SessionCondition::Scheduled);
            match scheduled.map(|c| (c, c.status.as_str())) {
                Some((_, s)) if s == conditions::status_str(Some(true)) => {
                    Some(Decision::Bound(entry.clone()))
                }
                Some((c, s)) if s == conditions::status_str(Some(false)) => {
                    Some(Decision::Refused {
                        reason: c.reason.clone(),
                        message: c.message.clone(),
                    })
                }
                _ if entry.phase() != SessionPhase::Pending => Some(Decision::Bound(entry.clone())),
                _ => None,
            }
        })
        .await;

    match decision {
        Some(Decision::Bound(entry)) => Ok(entry),
        Some(Decision::Refused { reason, message }) => {
            delete_quietly(state, name).await;
            tracing::info!(session = %name, reason = %reason, "scheduler refused the session");
            Err(refusal(&reason, &message))
        }
        Some(Decision::Vanished) => Err(ApiError::conflict(
            "session_deleted",
            "The session was deleted before the scheduler decided.",
        )),
        None => {
            delete_quietly(state, name).await;
            Err(ApiError::Unavailable {
                code: "scheduler_timeout",
                detail: format!(
                    "The scheduler did not decide within {} s; nothing was created. Retry shortly.",
                    config.schedule_timeout.as_secs_f64()
                ),
                retry_after_secs: Some(5),
            })
        }
    }
}

/// The scheduler keeps the slug the api chose unless another session took
/// it meanwhile; then the URL annotation must follow the slug it gave.
async fn follow_given_slug(state: &AppState, name: &str, chosen: &str, bound: &IndexedSession) {
    if let Some(given) = bound.slug.as_deref().filter(|g| *g != chosen) {
        let url = format!(
            "{}://{}/",
            state.config().public_scheme,
            state.hosts().host_for(given, bound.exposure)
        );
        if let Err(e) = state.backend().annotate(name, URL_ANNOTATION, &url).await {
            tracing::warn!(session = %name, error = %e, "could not correct the URL annotation");
        }
    }
}

/// Waits, bounded, for a bound session to be Ready.
async fn ready(
    state: &AppState,
    name: &str,
    bound: Arc<IndexedSession>,
) -> Result<Created, ApiError> {
    let deadline = Instant::now() + state.config().sessions.ready_timeout;
    let outcome = state
        .index()
        .wait_for(name, deadline, |entry| match entry {
            None => Some(None),
            Some(e) if e.upstream.is_some() || e.phase().is_terminal() => Some(Some(e.clone())),
            Some(_) => None,
        })
        .await;
    match outcome {
        Some(Some(entry)) if entry.upstream.is_some() => Ok(Created::Ready(entry)),
        Some(Some(entry)) => Err(ApiError::conflict(
            "session_failed",
            format!(
                "The session did not start: {}",
                entry
                    .session
                    .status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| phase_name(entry.phase()))
            ),
        )),
        Some(None) => Err(ApiError::conflict(
            "session_deleted",
            "The session was deleted while starting.",
        )),
        None => Ok(Created::NotReadyYet(
            state.index().get(name).unwrap_or(bound),
        )),
    }
}

async fn delete_quietly(state: &AppState, name: &str) {
    if let Err(err) = state.backend().delete(name).await {
        tracing::error!(session = %name, error = %err, "could not delete a refused session");
    }
}
