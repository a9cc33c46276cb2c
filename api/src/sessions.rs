//! Sessions: `POST/GET /api/v2/{external,internal}/sessions`, `GET …/{id}`,
//! `POST …/{id}/stop`, `DELETE …/{id}` (admins).
//!
//! Create writes a `Session` resource and waits, bounded, for the scheduler's
//! decision as the watch reports it: bound → 201; refused (`Scheduled=False`) →
//! the resource is deleted and the caller gets 409 with the reason as `code`;
//! no decision in time → deleted, 503. Reads come from the watch-fed index.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use medforge_crds::{
    DesiredState, Exposure, Session, SessionCondition, SessionPhase, SessionReason,
    SessionResources, SessionSpec,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::AppState;
use crate::auth::{Admin, Auth};
use crate::backend::{MAX_SESSIONS_ANNOTATION, OWNER_LABEL, SLUG_KEY};
use crate::config::SessionsConfig;
use crate::error::{ApiError, FieldError};
use crate::index::{IndexedSession, SessionIndex, routable_upstream};
use crate::reply::{Page, Reply};
use crate::request::{JsonOrEmpty, Param, Query, SessionId};
use crate::tokens::Principal;
use crate::validate;
use medforge_crds::keys::{OWNER_EMAIL_ANNOTATION, URL_ANNOTATION};

/// The routes for one exposure, to be nested under `/api/v2/<exposure>`.
pub fn router(exposure: Exposure) -> Router<AppState> {
    Router::new()
        .route("/sessions", post(create).get(list))
        .route("/sessions/{id}", get(get_one).delete(delete_one))
        .route("/sessions/{id}/stop", post(stop))
        .layer(Extension(exposure))
}

/// A GPU of a session.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema)]
#[schemars(rename = "SessionGpu")]
pub struct GpuView {
    /// Index on its node.
    pub index: u32,
    /// UUID.
    pub uuid: String,
}

/// A session as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Session")]
pub struct SessionView {
    /// The session's id (the Session resource's name).
    #[schemars(schema_with = "crate::openapi::kube_name")]
    pub id: String,
    /// 8 characters of `[a-z0-9]`; the host is `s-<slug>.<domain>`.
    #[schemars(regex(pattern = medforge_crds::schema::SLUG_PATTERN))]
    pub slug: Option<String>,
    /// `external` or `internal`.
    #[schemars(extend("enum" = ["external", "internal"]))]
    pub exposure: String,
    /// The owner's user id.
    pub owner: String,
    /// The Pack the session runs.
    pub pack: String,
    /// Desired state: `running` or `stopped`.
    #[schemars(extend("enum" = ["running", "stopped"]))]
    pub state: String,
    /// Observed phase: `pending`, `scheduled`, `starting`, `running`, `stopping`, `stopped`, `failed`.
    #[schemars(extend("enum" = ["pending", "scheduled", "starting", "running", "stopping", "stopped", "failed"]))]
    pub phase: String,
    /// Whether the proxy routes to it now.
    pub ready: bool,
    /// GPUs requested.
    pub gpu_count: u32,
    /// GPUs given.
    pub gpus: Vec<GpuView>,
    /// The node it is bound to.
    pub node: Option<String>,
    /// Where to open it.
    pub url: Option<String>,
    /// CamelCase reason of the phase (`NoGpuAvailable`, `ContainerExited`, …).
    pub reason: Option<String>,
    /// What went wrong, when something did.
    pub error_message: Option<String>,
    /// Idle timeout (`30m`).
    pub idle_timeout: Option<String>,
    /// Maximum lifetime (`12h`).
    pub max_lifetime: Option<String>,
    /// Creation time (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub created_at: Option<String>,
    /// When it last started running.
    #[schemars(extend("format" = "date-time"))]
    pub started_at: Option<String>,
    /// When it last stopped.
    #[schemars(extend("format" = "date-time"))]
    pub stopped_at: Option<String>,
    /// Last request through the proxy.
    #[schemars(extend("format" = "date-time"))]
    pub last_activity_at: Option<String>,
}

fn time(t: Option<&Time>) -> Option<String> {
    t.map(|t| t.0.to_string())
}

fn phase_name(phase: SessionPhase) -> String {
    format!("{phase:?}").to_ascii_lowercase()
}

/// Renders a session; `activity` is the index's in-memory last activity (Unix seconds).
pub fn view(state: &AppState, session: &Session, activity: i64) -> SessionView {
    let status = session.status.as_ref();
    let slug = status.and_then(|s| s.slug.clone()).or_else(|| {
        session
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SLUG_KEY).cloned())
    });
    let phase = session.phase();
    let refused = session
        .condition(SessionCondition::Scheduled)
        .is_some_and(|c| c.status == "False");
    let recorded = status
        .and_then(|s| s.last_activity_at.as_ref())
        .map_or(0, |t| t.0.as_second());
    let last_activity = recorded.max(activity);
    SessionView {
        id: session.metadata.name.clone().unwrap_or_default(),
        url: slug.as_ref().map(|slug| {
            format!(
                "{}://{}/",
                state.config().public_scheme,
                state.hosts().host_for(slug, session.spec.exposure)
            )
        }),
        slug,
        exposure: session.spec.exposure.as_str().to_owned(),
        owner: session.spec.owner.clone(),
        pack: session.spec.pack.clone(),
        state: match session.spec.state {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
        .to_owned(),
        phase: phase_name(phase),
        ready: routable_upstream(session).is_some(),
        gpu_count: session.spec.gpus,
        gpus: status
            .map(|s| {
                s.gpus
                    .iter()
                    .map(|g| GpuView {
                        index: g.index,
                        uuid: g.uuid.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        node: status.and_then(|s| s.node_name.clone()),
        reason: status.and_then(|s| s.reason.clone()),
        error_message: (phase == SessionPhase::Failed || refused)
            .then(|| status.and_then(|s| s.message.clone()))
            .flatten(),
        idle_timeout: session.spec.idle_timeout.clone(),
        max_lifetime: session.spec.max_lifetime.clone(),
        created_at: time(session.metadata.creation_timestamp.as_ref()),
        started_at: time(status.and_then(|s| s.started_at.as_ref())),
        stopped_at: time(status.and_then(|s| s.stopped_at.as_ref())),
        last_activity_at: (last_activity > 0)
            .then(|| jiff::Timestamp::from_second(last_activity).ok())
            .flatten()
            .map(|t| t.to_string()),
    }
}

fn view_indexed(state: &AppState, entry: &IndexedSession) -> SessionView {
    view(state, &entry.session, entry.last_activity())
}

/// Body of `POST …/sessions`. Every field is optional; `null` is the same as absent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// Pack name (default: the configured default pack).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::pack_name")]
    pub pack: Option<String>,
    /// Whole GPUs, 0 to the configured maximum (default: the configured default).
    #[serde(default, deserialize_with = "validate::int::body_u32")]
    pub gpus: Option<u32>,
    /// Stop after this long without a request (`30m`, `2h`).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::duration")]
    pub idle_timeout: Option<String>,
    /// Stop this long after starting (`12h`).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::duration")]
    pub max_lifetime: Option<String>,
    /// Container limits (unset ones come from the Pack).
    #[serde(default, deserialize_with = "validate::object_or_null")]
    pub resources: Option<ResourcesBody>,
}

/// Container limits in a create body; `null` is the same as absent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Resources")]
pub struct ResourcesBody {
    /// CPU cores (`2`, `500m`).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::cpu")]
    pub cpu: Option<String>,
    /// Memory (`16Gi`).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::size")]
    pub memory: Option<String>,
    /// /dev/shm size (`2Gi`).
    #[serde(default)]
    #[schemars(schema_with = "crate::openapi::size")]
    pub shm: Option<String>,
    /// Process limit.
    #[serde(default, deserialize_with = "validate::int::body_i64")]
    #[schemars(range(min = validate::PIDS_MIN, max = validate::PIDS_MAX))]
    pub pids: Option<i64>,
}

impl CreateSession {
    /// Checks the body and builds the spec; every invalid field is named.
    pub fn into_spec(
        self,
        owner: &str,
        exposure: Exposure,
        config: &SessionsConfig,
    ) -> Result<SessionSpec, ApiError> {
        let mut errors = Vec::new();
        let pack = self.pack.unwrap_or_else(|| config.default_pack.clone());
        if let Err(e) = validate::PACK_NAME.check("pack", &pack) {
            errors.push(e);
        }
        let gpus = self.gpus.unwrap_or(config.default_gpus);
        if gpus > config.max_gpus {
            errors.push(FieldError::new(
                "gpus",
                format!("must be between 0 and {}", config.max_gpus),
            ));
        }
        for (field, value) in [
            ("idle_timeout", &self.idle_timeout),
            ("max_lifetime", &self.max_lifetime),
        ] {
            if let Some(v) = value
                && let Err(e) = validate::duration(field, v)
            {
                errors.push(e);
            }
        }
        let resources = self.resources.map(|r| {
            if let Some(v) = &r.cpu
                && let Err(e) = validate::cpu("resources.cpu", v)
            {
                errors.push(e);
            }
            for (field, value) in [("resources.memory", &r.memory), ("resources.shm", &r.shm)] {
                if let Some(v) = value
                    && let Err(e) = validate::size(field, v)
                {
                    errors.push(e);
                }
            }
            if let Some(p) = r.pids
                && !(validate::PIDS_MIN..=validate::PIDS_MAX).contains(&p)
            {
                errors.push(FieldError::new(
                    "resources.pids",
                    format!(
                        "must be between {} and {}",
                        validate::PIDS_MIN,
                        validate::PIDS_MAX
                    ),
                ));
            }
            SessionResources {
                cpu: r.cpu,
                memory: r.memory,
                shm: r.shm,
                pids: r.pids,
            }
        });
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(SessionSpec {
            owner: owner.to_owned(),
            pack,
            exposure,
            gpus,
            state: DesiredState::Running,
            resources,
            workspace: None,
            idle_timeout: self.idle_timeout,
            max_lifetime: self.max_lifetime,
        })
    }
}

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
        SessionReason::CpuOnlyNotAllowed,
        "cpu_only_not_allowed",
        "Sessions without GPUs are not allowed here; ask for at least one GPU.",
    ),
];

/// The code of any other refusal.
pub const OTHER_REFUSAL: &str = "scheduler_refused";

fn refusal(reason: &str, message: &str) -> ApiError {
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

/// Body of create and stop.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SessionReply {
    /// What happened.
    pub message: String,
    /// The session.
    pub session: SessionView,
}

enum Decision {
    Bound(Arc<IndexedSession>),
    Refused { reason: String, message: String },
    Vanished,
}

async fn create(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    Query(query): Query<CreateQuery>,
    JsonOrEmpty(body): JsonOrEmpty<CreateSession>,
) -> Result<Response, ApiError> {
    if exposure == Exposure::Internal && !(principal.user.can_use_internal || principal.is_admin())
    {
        return Err(ApiError::forbidden(
            "internal_not_allowed",
            "You may not create sessions on the internal domain; ask an admin.",
        ));
    }
    let wait_ready = match query.wait.as_deref() {
        None => false,
        Some("ready") => true,
        Some(_) => return Err(ApiError::invalid("wait", "must be `ready` or absent")),
    };
    let config = &state.config().sessions;
    let spec = body.into_spec(&principal.user.id, exposure, config)?;

    let name = uuid::Uuid::new_v4().to_string();
    let slug = new_slug(state.index());
    let url = format!(
        "{}://{}/",
        state.config().public_scheme,
        state.hosts().host_for(&slug, spec.exposure)
    );
    // Denormalised for people reading `kubectl get sessions`: emails cannot
    // change, and the URL follows from the slug and exposure, which cannot either.
    let mut annotations = BTreeMap::from([
        (SLUG_KEY.to_owned(), slug.clone()),
        (
            OWNER_EMAIL_ANNOTATION.to_owned(),
            principal.user.email.clone(),
        ),
        (URL_ANNOTATION.to_owned(), url),
    ]);
    if let Some(limit) = principal.user.max_sessions {
        annotations.insert(MAX_SESSIONS_ANNOTATION.to_owned(), limit.to_string());
    }
    let session = Session {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                (OWNER_LABEL.to_owned(), principal.user.id.clone()),
                (SLUG_KEY.to_owned(), slug.clone()),
            ])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    state.backend().create(session).await?;
    tracing::info!(session = %name, slug = %slug, user_id = %principal.user.id, "session created; waiting for the scheduler");

    let mut seen = false;
    let deadline = Instant::now() + config.schedule_timeout;
    let decision = state
        .index()
        .wait_for(&name, deadline, |entry| {
            let Some(entry) = entry else {
                return seen.then_some(Decision::Vanished);
            };
            seen = true;
            match entry.session.condition(SessionCondition::Scheduled) {
                Some(c) if c.status == "True" => Some(Decision::Bound(entry.clone())),
                Some(c) if c.status == "False" => Some(Decision::Refused {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                }),
                _ if entry.phase() != SessionPhase::Pending => Some(Decision::Bound(entry.clone())),
                _ => None,
            }
        })
        .await;

    let bound = match decision {
        Some(Decision::Bound(entry)) => entry,
        Some(Decision::Refused { reason, message }) => {
            delete_quietly(&state, &name).await;
            tracing::info!(session = %name, reason = %reason, "scheduler refused the session");
            return Err(refusal(&reason, &message));
        }
        Some(Decision::Vanished) => {
            return Err(ApiError::conflict(
                "session_deleted",
                "The session was deleted before the scheduler decided.",
            ));
        }
        None => {
            delete_quietly(&state, &name).await;
            return Err(ApiError::Unavailable {
                code: "scheduler_timeout",
                detail: format!(
                    "The scheduler did not decide within {} s; nothing was created. Retry shortly.",
                    config.schedule_timeout.as_secs_f64()
                ),
                retry_after_secs: Some(5),
            });
        }
    };

    // The scheduler keeps the slug the api chose unless another session took
    // it meanwhile; then the URL annotation must follow the slug it gave.
    if let Some(given) = bound.slug.as_deref().filter(|g| *g != slug) {
        let url = format!(
            "{}://{}/",
            state.config().public_scheme,
            state.hosts().host_for(given, bound.exposure)
        );
        if let Err(e) = state.backend().annotate(&name, URL_ANNOTATION, &url).await {
            tracing::warn!(session = %name, error = %e, "could not correct the URL annotation");
        }
    }

    if !wait_ready {
        return Ok(Reply::created(SessionReply {
            message: "Session scheduled.".into(),
            session: view_indexed(&state, &bound),
        })
        .into_response());
    }
    let deadline = Instant::now() + config.ready_timeout;
    let outcome = state
        .index()
        .wait_for(&name, deadline, |entry| match entry {
            None => Some(None),
            Some(e) if e.upstream.is_some() || e.phase().is_terminal() => Some(Some(e.clone())),
            Some(_) => None,
        })
        .await;
    match outcome {
        Some(Some(entry)) if entry.upstream.is_some() => Ok(Reply::created(SessionReply {
            message: "Session ready.".into(),
            session: view_indexed(&state, &entry),
        })
        .into_response()),
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
        None => {
            let current = state.index().get(&name).unwrap_or(bound);
            Ok(Reply::accepted(SessionReply {
                message: "Session scheduled; not ready yet.".into(),
                session: view_indexed(&state, &current),
            })
            .into_response())
        }
    }
}

async fn delete_quietly(state: &AppState, name: &str) {
    if let Err(err) = state.backend().delete(name).await {
        tracing::error!(session = %name, error = %err, "could not delete a refused session");
    }
}

/// The session `id` when the caller may see it on this exposure's routes; 404 otherwise
/// (another user's session is indistinguishable from a missing one, and a session
/// being deleted is gone as far as the api is concerned).
fn visible(
    state: &AppState,
    principal: &Principal,
    exposure: Option<Exposure>,
    id: &str,
) -> Result<Arc<IndexedSession>, ApiError> {
    state
        .index()
        .get(id)
        .filter(|e| !e.is_deleting())
        .filter(|e| exposure.is_none_or(|x| e.exposure == x))
        .filter(|e| principal.is_admin() || e.owner == principal.user.id)
        .ok_or_else(|| ApiError::NotFound("Session not found.".into()))
}

async fn get_one(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionView>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    Ok(Reply::ok(view_indexed(&state, &entry)))
}

async fn stop(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    id: Param<SessionId>,
) -> Result<Reply<SessionReply>, ApiError> {
    let id = id.value;
    let entry = visible(&state, &principal, Some(exposure), &id)?;
    let terminal = entry.phase().is_terminal();
    let session = if entry.session.spec.state == DesiredState::Stopped {
        entry.session.clone()
    } else {
        state
            .backend()
            .set_state(&id, DesiredState::Stopped)
            .await?
    };
    tracing::info!(session = %id, user_id = %principal.user.id, "stop requested");
    let message = if terminal {
        "Session is already terminal."
    } else {
        "Session stop requested."
    };
    Ok(Reply::accepted(SessionReply {
        message: message.into(),
        session: view(&state, &session, entry.last_activity()),
    }))
}

async fn delete_one(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Admin(principal): Admin,
    id: Param<SessionId>,
) -> Result<Response, ApiError> {
    let id = id.value;
    visible(&state, &principal, Some(exposure), &id)?;
    if !state.backend().delete(&id).await? {
        return Err(ApiError::NotFound("Session not found.".into()));
    }
    tracing::info!(session = %id, admin = %principal.user.id, "session deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Query of the list routes.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    /// A phase (`running`, `stopped`, …) or `active` (not stopped or failed).
    pub state: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// Opaque cursor from the previous page's `meta.next_cursor`.
    pub cursor: Option<String>,
    /// Admins only: one owner's sessions.
    pub owner: Option<String>,
}

const PHASES: [SessionPhase; 7] = [
    SessionPhase::Pending,
    SessionPhase::Scheduled,
    SessionPhase::Starting,
    SessionPhase::Running,
    SessionPhase::Stopping,
    SessionPhase::Stopped,
    SessionPhase::Failed,
];

/// A position in the newest-first order: `<creation time in ns>_<name>`.
/// Any string `SESSION_CURSOR` admits is one, whether or not a page gave it.
fn encode_cursor(entry: &IndexedSession) -> String {
    let ts = entry
        .session
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_nanosecond())
        .max(0);
    format!("{ts}_{}", entry.name)
}

fn decode_cursor(cursor: &str) -> Option<(i128, String)> {
    if !validate::SESSION_CURSOR.matches(cursor) {
        return None;
    }
    let (ts, name) = cursor.split_once('_')?;
    Some((ts.parse().ok()?, name.to_owned()))
}

/// Lists the sessions `filter` accepts, paginated per `query`.
pub fn list_sessions(
    state: &AppState,
    query: &ListQuery,
    filter: impl Fn(&IndexedSession) -> bool,
) -> Result<Reply<Vec<SessionView>>, ApiError> {
    let mut errors = Vec::new();
    let phase_filter: Option<Option<SessionPhase>> = match query.state.as_deref() {
        None => None,
        Some("active") => Some(None),
        Some(s) => match PHASES.iter().find(|p| phase_name(**p) == s) {
            Some(p) => Some(Some(*p)),
            None => {
                errors.push(FieldError::new(
                    "state",
                    format!("must be one of {}", validate::LIST_STATES.join(", ")),
                ));
                None
            }
        },
    };
    let limit = query.limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(crate::admin::limit_error());
    }
    if let Some(owner) = query.owner.as_deref()
        && let Err(e) = validate::USER_ID.check("owner", owner)
    {
        errors.push(e);
    }
    let cursor = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match decode_cursor(c) {
            Some(c) => Some(c),
            None => {
                errors.push(FieldError::new(
                    "cursor",
                    "is not a cursor this API returns (meta.next_cursor); start again without one",
                ));
                None
            }
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let all = state.index().list(|e| {
        !e.is_deleting()
            && filter(e)
            && match phase_filter {
                None => true,
                Some(None) => !e.phase().is_terminal(),
                Some(Some(p)) => e.phase() == p,
            }
    });
    let start = match &cursor {
        None => 0,
        Some((ts, name)) => all
            .iter()
            .position(|e| {
                let ets = e
                    .session
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_nanosecond());
                ets < *ts || (ets == *ts && e.name.as_str() > name.as_str())
            })
            .unwrap_or(all.len()),
    };
    let page: Vec<&Arc<IndexedSession>> = all.iter().skip(start).take(limit as usize).collect();
    let has_more = start + page.len() < all.len();
    let next_cursor = if has_more {
        page.last().map(|e| encode_cursor(e))
    } else {
        None
    };
    let data = page.iter().map(|e| view_indexed(state, e)).collect();
    Ok(Reply::ok(data).page(Page {
        limit: Some(limit),
        next_cursor,
        has_more: Some(has_more),
    }))
}

async fn list(
    State(state): State<AppState>,
    Extension(exposure): Extension<Exposure>,
    Auth(principal): Auth,
    Query(query): Query<ListQuery>,
) -> Result<Reply<Vec<SessionView>>, ApiError> {
    if query.owner.is_some() && !principal.is_admin() {
        return Err(ApiError::invalid(
            "owner",
            "only admins may filter by owner",
        ));
    }
    let owner = query.owner.clone();
    list_sessions(&state, &query, |e| {
        e.exposure == exposure
            && (principal.is_admin() || e.owner == principal.user.id)
            && owner.as_deref().is_none_or(|o| e.owner == o)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_become_codes() {
        let code = |reason| match refusal(reason, "") {
            ApiError::Conflict { code, .. } => code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code(SessionReason::NoGpuAvailable.as_str()),
            "no_gpu_available"
        );
        assert_eq!(
            code(SessionReason::UserLimitReached.as_str()),
            "user_limit_reached"
        );
        assert_eq!(code("SomethingNew"), OTHER_REFUSAL);
    }

    #[test]
    fn every_cursor_the_pattern_admits_is_a_position() {
        use proptest::prelude::*;
        let inner = validate::SESSION_CURSOR
            .pattern
            .unwrap()
            .strip_prefix('^')
            .unwrap()
            .strip_suffix('$')
            .unwrap();
        proptest!(|(c in proptest::string::string_regex(inner).unwrap())| {
            prop_assert!(c.is_empty() || decode_cursor(&c).is_some(), "{c}");
        });
        assert!(decode_cursor("!!").is_none());
    }
}
