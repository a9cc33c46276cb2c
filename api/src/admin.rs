//! Admin routes: GPU nodes (free and used GPUs, cordon and uncordon of a node or
//! one GPU), every session, and users' flags.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use base64::Engine;
use medforge_crds::{GpuHealth, GpuNode, NodeCondition, conditions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::accounts::not_yourself;
use crate::auth::{Admin, UserReply, UserView};
use crate::error::ApiError;
use crate::reply::{Page, Reply};
use crate::request::{GpuRef, Json, NodeName, Param, Query, UserId};
use crate::sessions::{ListQuery, SessionView, list_sessions};
use crate::state::AppState;
use crate::users::{self, UserUpdate};
use crate::validate;

const CORDON_NODE: &str = "/api/v2/admin/nodes/{node}/cordon";
const UNCORDON_NODE: &str = "/api/v2/admin/nodes/{node}/uncordon";
const CORDON_GPU: &str = "/api/v2/admin/nodes/{node}/gpus/{gpu}/cordon";
const UNCORDON_GPU: &str = "/api/v2/admin/nodes/{node}/gpus/{gpu}/uncordon";

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v2/admin/nodes", get(list_nodes))
        .route(CORDON_NODE, post(cordon_node::<true>))
        .route(UNCORDON_NODE, post(cordon_node::<false>))
        .route(CORDON_GPU, post(cordon_gpu::<true>))
        .route(UNCORDON_GPU, post(cordon_gpu::<false>))
        .route("/api/v2/admin/sessions", get(all_sessions))
        .route(
            "/api/v2/admin/users",
            get(list_users).post(crate::accounts::create_user),
        )
        .route(
            "/api/v2/admin/users/{id}",
            axum::routing::patch(update_user),
        )
}

/// One GPU of a node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "NodeGpu")]
pub struct NodeGpuView {
    /// Index on the node.
    pub index: u32,
    /// UUID.
    pub uuid: String,
    /// Product name.
    pub model: String,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// `healthy`, `unhealthy` or `unknown`.
    #[schemars(extend("enum" = ["healthy", "unhealthy", "unknown"]))]
    pub health: String,
    /// Cordoned by an admin.
    pub cordoned: bool,
    /// The session holding it (`namespace/name`), if any.
    pub session: Option<String>,
}

/// A GPU node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
#[schemars(rename = "Node")]
pub struct NodeView {
    /// Node name.
    #[schemars(schema_with = "crate::validate::schema::kube_name")]
    pub name: String,
    /// The agent reports the node Ready.
    pub ready: bool,
    /// The whole node is cordoned.
    pub unschedulable: bool,
    /// Agent's last heartbeat (RFC 3339).
    #[schemars(extend("format" = "date-time"))]
    pub last_heartbeat: Option<String>,
    /// GPUs on the node.
    pub total: u32,
    /// GPUs held by sessions.
    pub used: u32,
    /// GPUs a new session could get now (healthy, not cordoned, not held, node schedulable).
    pub free: u32,
    /// The GPUs.
    pub gpus: Vec<NodeGpuView>,
}

/// Renders a node.
pub fn node_view(node: &GpuNode) -> NodeView {
    let status = node.status.clone().unwrap_or_default();
    let gpus: Vec<NodeGpuView> = status
        .gpus
        .iter()
        .map(|g| NodeGpuView {
            index: g.index,
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_bytes: g.memory_bytes,
            health: format!("{:?}", g.health).to_ascii_lowercase(),
            cordoned: node.spec.disabled_gpus.contains(&g.uuid),
            session: status
                .allocated
                .iter()
                .find(|a| a.uuid == g.uuid)
                .map(|a| a.session.clone()),
        })
        .collect();
    let used = gpus.iter().filter(|g| g.session.is_some()).count() as u32;
    let free = if node.spec.unschedulable {
        0
    } else {
        status
            .gpus
            .iter()
            .zip(&gpus)
            .filter(|(g, v)| g.health == GpuHealth::Healthy && !v.cordoned && v.session.is_none())
            .count() as u32
    };
    NodeView {
        name: node.metadata.name.clone().unwrap_or_default(),
        ready: conditions::is_true(&status.conditions, NodeCondition::Ready),
        unschedulable: node.spec.unschedulable,
        last_heartbeat: status.last_heartbeat_time.map(|t| t.0.to_string()),
        total: gpus.len() as u32,
        used,
        free,
        gpus,
    }
}

async fn list_nodes(
    State(state): State<AppState>,
    Admin(_): Admin,
) -> Result<Reply<Vec<NodeView>>, ApiError> {
    let mut nodes = state.backend().list_nodes().await?;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    Ok(Reply::ok(nodes.iter().map(node_view).collect()))
}

async fn set_node(
    state: &AppState,
    node: &str,
    unschedulable: bool,
) -> Result<Reply<NodeView>, ApiError> {
    let updated = state
        .backend()
        .set_node_unschedulable(node, unschedulable)
        .await?;
    tracing::info!(node = %node, unschedulable, "node cordon changed");
    Ok(Reply::ok(node_view(&updated)))
}

/// `…/cordon` (`CORDON`) and `…/uncordon` of a whole node.
async fn cordon_node<const CORDON: bool>(
    State(state): State<AppState>,
    Admin(_): Admin,
    node: Param<NodeName>,
) -> Result<Reply<NodeView>, ApiError> {
    set_node(&state, node.as_str(), CORDON).await
}

async fn set_gpu(
    state: &AppState,
    node: &str,
    gpu: &str,
    disabled: bool,
) -> Result<Reply<NodeView>, ApiError> {
    let nodes = state.backend().list_nodes().await?;
    let found = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(node))
        .ok_or_else(|| ApiError::NotFound("Node not found.".into()))?;
    let uuid = found
        .status
        .as_ref()
        .and_then(|s| {
            s.gpus
                .iter()
                .find(|g| g.uuid == gpu || gpu.parse::<u32>().is_ok_and(|i| i == g.index))
        })
        .map(|g| g.uuid.clone())
        .ok_or_else(|| ApiError::NotFound("No GPU with this index or UUID on this node.".into()))?;
    let updated = state
        .backend()
        .set_gpu_disabled(node, &uuid, disabled)
        .await?;
    tracing::info!(node = %node, gpu = %uuid, disabled, "GPU cordon changed");
    Ok(Reply::ok(node_view(&updated)))
}

/// `…/cordon` (`CORDON`) and `…/uncordon` of one GPU.
async fn cordon_gpu<const CORDON: bool>(
    State(state): State<AppState>,
    Admin(_): Admin,
    node: Param<NodeName>,
    gpu: Param<GpuRef>,
) -> Result<Reply<NodeView>, ApiError> {
    set_gpu(&state, node.as_str(), gpu.as_str(), CORDON).await
}

async fn all_sessions(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(query): Query<ListQuery>,
) -> Result<Reply<Vec<SessionView>>, ApiError> {
    let owner = query.owner.clone();
    list_sessions(&state, &query, |e| {
        owner.as_deref().is_none_or(|o| e.owner == o)
    })
}

/// Query of `GET /api/v2/admin/users`.
#[derive(Debug, Default, Deserialize)]
pub struct UsersQuery {
    /// Page size.
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// `meta.next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Base64url without padding, decoding whatever trailing bits a cursor has, so
/// that every string `USERS_CURSOR` admits is a position in the list.
const CURSOR_B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// The email a users cursor points after, or a 422 naming `cursor`.
fn users_cursor(cursor: &str) -> Result<String, ApiError> {
    validate::USERS_CURSOR
        .check("cursor", cursor)
        .map_err(|e| ApiError::Validation(vec![e]))?;
    let bytes = CURSOR_B64
        .decode(cursor)
        .map_err(|_| ApiError::Validation(vec![validate::USERS_CURSOR.error("cursor")]))?;
    // Emails hold no NUL (and PostgreSQL's text cannot): cutting at the first
    // one keeps the position, since no email sorts between the two.
    let after = String::from_utf8_lossy(&bytes);
    Ok(after.split('\0').next().unwrap_or_default().to_owned())
}

async fn list_users(
    State(state): State<AppState>,
    Admin(_): Admin,
    Query(query): Query<UsersQuery>,
) -> Result<Reply<Vec<UserView>>, ApiError> {
    let mut errors = Vec::new();
    let limit = query.limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(validate::limit_error());
    }
    let after = match query.cursor.as_deref() {
        None | Some("") => None,
        Some(c) => match users_cursor(c) {
            Ok(after) => Some(after),
            Err(ApiError::Validation(mut e)) => {
                errors.append(&mut e);
                None
            }
            Err(other) => return Err(other),
        },
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut found = users::list_users(state.db(), after.as_deref(), i64::from(limit) + 1).await?;
    let has_more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| found.last().map(|u| CURSOR_B64.encode(&u.email)))
        .flatten();
    Ok(
        Reply::ok(found.iter().map(UserView::from).collect()).page(Page {
            limit: Some(limit),
            next_cursor,
            has_more: Some(has_more),
        }),
    )
}

/// Body of `PATCH /api/v2/admin/users/{id}`; absent fields stay as they are.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// Admin flag (`null`: unchanged).
    pub is_admin: Option<bool>,
    /// Internal-domain permission (`null`: unchanged).
    pub can_use_internal: Option<bool>,
    /// Session limit override; `null` clears it (the cluster default applies).
    #[serde(default, deserialize_with = "validate::int::body_nullable_i64")]
    #[schemars(with = "Option<i64>", range(min = validate::MAX_SESSIONS_MIN, max = validate::MAX_SESSIONS_MAX))]
    pub max_sessions: Option<Option<i64>>,
    /// Disable (`true`: every login ends and every session stops) or enable
    /// the account (`null`: unchanged).
    pub disabled: Option<bool>,
    /// The account's own session defaults and maxima by key (`cpu`,
    /// `memory`, `shm`, `pids`, `gpus`, `workspace-quota`, `idle-timeout`,
    /// `max-lifetime`), in place of the operator's for its new sessions; a
    /// maximum may be above the operator's. `null` clears them; absent
    /// leaves them.
    #[serde(default, deserialize_with = "validate::object_or_null_present")]
    #[schemars(with = "Option<crate::account_policy::AccountPolicy>")]
    pub session_policy: Option<Option<crate::account_policy::AccountPolicy>>,
}

async fn update_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    id: Param<UserId>,
    Json(patch): Json<UserPatch>,
) -> Result<Reply<UserReply>, ApiError> {
    let id = id.value;
    if let Some(Some(n)) = patch.max_sessions
        && !(validate::MAX_SESSIONS_MIN..=validate::MAX_SESSIONS_MAX).contains(&n)
    {
        return Err(ApiError::invalid(
            "max_sessions",
            format!(
                "must be between {} and {}, or null",
                validate::MAX_SESSIONS_MIN,
                validate::MAX_SESSIONS_MAX
            ),
        ));
    }
    if admin.user.id == id && patch.is_admin == Some(false) {
        return Err(ApiError::conflict(
            "last_admin_guard",
            "Admins cannot remove their own admin flag; ask another admin.",
        ));
    }
    if patch.disabled == Some(true) {
        not_yourself(
            &admin.user,
            &id,
            "disable their own account; ask another admin",
        )?;
    }
    // An admin who could raise their own limits would be above the
    // operator's policy by their own say.
    if patch.session_policy.is_some() {
        not_yourself(
            &admin.user,
            &id,
            "set their own account's session policy; ask another admin",
        )?;
    }
    let before = users::get_user(state.db(), &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found.".into()))?;
    let session_policy = match &patch.session_policy {
        None => None,
        Some(None) => Some(None),
        Some(Some(p)) => Some(Some(p.to_overrides("session_policy")?)),
    };
    let update = UserUpdate {
        is_admin: patch.is_admin,
        can_use_internal: patch.can_use_internal,
        max_sessions: patch.max_sessions,
        disabled_at: patch.disabled.map(|d| d.then(crate::clock::now_secs)),
        session_policy: session_policy.map(|p| {
            p.filter(|o| !o.is_empty())
                .and_then(|o| serde_json::to_string(&o).ok())
        }),
    };
    let user = users::update_user(state.db(), &id, &update)
        .await?
        .ok_or_else(|| ApiError::NotFound("User not found.".into()))?;
    state.tokens().forget_user(&id);
    let flags = serde_json::json!({
        "is_admin": patch.is_admin,
        "can_use_internal": patch.can_use_internal,
        "max_sessions": patch.max_sessions,
        "session_policy": patch.session_policy,
    });
    if patch.is_admin.is_some()
        || patch.can_use_internal.is_some()
        || patch.max_sessions.is_some()
        || patch.session_policy.is_some()
    {
        crate::audit::record(
            state.db(),
            Some(&admin.user.id),
            crate::audit::Action::UserUpdated,
            Some(&id),
            flags,
        )
        .await?;
    }
    // Disabling again still ends logins and stops sessions (a retry after a
    // failure part-way); enabling an enabled account records nothing.
    match patch.disabled {
        Some(true) => {
            crate::accounts::on_disabled_changed(&state, &admin.user, &user, true).await?;
        }
        Some(false) if before.disabled_at.is_some() => {
            crate::accounts::on_disabled_changed(&state, &admin.user, &user, false).await?;
        }
        _ => {}
    }
    tracing::info!(user_id = %id, admin = %admin.user.id, "user flags changed");
    Ok(Reply::ok(UserReply {
        user: UserView::from(&user),
    }))
}
