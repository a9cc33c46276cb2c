//! `GET /api/v2/packs`, `PUT` and `DELETE /api/v2/admin/packs/{name}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medforge_crds::Pack;
use serde::Deserialize;

use crate::account_policy::policy_for;
use crate::audit::{self, Action};
use crate::auth::{Admin, Auth};
use crate::error::ApiError;
use crate::packs::body::PackBody;
use crate::packs::catalogue::listed_for;
use crate::packs::view::{PackReply, PackView, view};
use crate::reply::{Page, Reply};
use crate::request::{Json, PackName, Param, Query};
use crate::state::AppState;
use crate::validate;

/// Query of `GET /api/v2/packs`.
#[derive(Debug, Default, Deserialize)]
pub struct PacksQuery {
    /// Page size.
    #[serde(default, deserialize_with = "validate::int::query_u32")]
    pub limit: Option<u32>,
    /// `meta.next_cursor` of the previous page: the last name it listed.
    pub cursor: Option<String>,
}

/// `GET /api/v2/packs`: the Packs the caller may use (every Pack for
/// admins), by name, in pages.
pub(super) async fn list(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Query(query): Query<PacksQuery>,
) -> Result<Reply<Vec<PackView>>, ApiError> {
    let mut errors = Vec::new();
    let limit = query.limit.unwrap_or(validate::LIMIT_DEFAULT);
    if !(validate::LIMIT_MIN..=validate::LIMIT_MAX).contains(&limit) {
        errors.push(validate::limit_error());
    }
    if let Some(c) = query.cursor.as_deref()
        && let Err(e) = validate::PACK_CURSOR.check("cursor", c)
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let policy = policy_for(&state.config().sessions.policy, &principal.user)?;
    let after = query.cursor.unwrap_or_default();
    let mut packs: Vec<Pack> = state
        .backend()
        .list_packs()
        .await?
        .into_iter()
        .filter(|p| p.metadata.name.as_deref().unwrap_or_default() > after.as_str())
        .filter(|p| listed_for(p, &principal))
        .collect();
    packs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let has_more = packs.len() > limit as usize;
    packs.truncate(limit as usize);
    let next_cursor = has_more
        .then(|| packs.last().and_then(|p| p.metadata.name.clone()))
        .flatten();
    Ok(
        Reply::ok(packs.iter().map(|p| view(p, &policy)).collect()).page(Page {
            limit: Some(limit),
            next_cursor,
            has_more: Some(has_more),
        }),
    )
}

/// `PUT /api/v2/admin/packs/{name}`: creates the Pack (201) or replaces its
/// spec (200) with the body's.
pub(super) async fn put(
    State(state): State<AppState>,
    Admin(admin): Admin,
    name: Param<PackName>,
    Json(body): Json<PackBody>,
) -> Result<Response, ApiError> {
    let name = name.value;
    let detail = serde_json::to_value(&body).map_err(ApiError::internal)?;
    let spec = body.into_spec()?;
    let (stored, created) = state.backend().replace_pack(Pack::new(&name, spec)).await?;
    let action = if created {
        Action::PackCreated
    } else {
        Action::PackReplaced
    };
    audit::record(
        state.db(),
        Some(&admin.user.id),
        action,
        Some(&name),
        detail,
    )
    .await?;
    tracing::info!(pack = %name, created, admin = %admin.user.id, "pack written");
    let policy = policy_for(&state.config().sessions.policy, &admin.user)?;
    let reply = PackReply {
        pack: view(&stored, &policy),
    };
    Ok(if created {
        Reply::created(reply).into_response()
    } else {
        Reply::ok(reply).into_response()
    })
}

/// `DELETE /api/v2/admin/packs/{name}`: 204 once gone; 409 while a
/// session that is neither stopped nor failed uses it.
pub(super) async fn delete(
    State(state): State<AppState>,
    Admin(admin): Admin,
    name: Param<PackName>,
) -> Result<StatusCode, ApiError> {
    let name = name.value;
    let not_found = || ApiError::NotFound(format!("No Pack is named `{name}`."));
    if state.backend().get_pack(&name).await?.is_none() {
        return Err(not_found());
    }
    let in_use = state
        .index()
        .list(|e| e.session.spec.pack == name && !e.phase().is_terminal())
        .len();
    if in_use > 0 {
        return Err(ApiError::conflict(
            "pack_in_use",
            format!(
                "Pack `{name}` is used by {in_use} session{} that {} neither stopped nor failed; \
                 deprecate it (no new sessions), stop {} and delete it then.",
                if in_use == 1 { "" } else { "s" },
                if in_use == 1 { "is" } else { "are" },
                if in_use == 1 { "it" } else { "them" },
            ),
        ));
    }
    if !state.backend().delete_pack(&name).await? {
        return Err(not_found());
    }
    audit::record(
        state.db(),
        Some(&admin.user.id),
        Action::PackDeleted,
        Some(&name),
        serde_json::json!({}),
    )
    .await?;
    tracing::info!(pack = %name, admin = %admin.user.id, "pack deleted");
    Ok(StatusCode::NO_CONTENT)
}
