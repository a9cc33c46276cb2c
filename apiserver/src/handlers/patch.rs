//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply.

use axum::response::Response;

use crate::object_meta::now;
use crate::request::options::WriteOpts;
use crate::request::target::ResourceRequest;
use crate::response::object_response;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, Cause};
use crate::write::patch::{PatchKind, apply_patch, parse};
use crate::write::update::update_object;

/// Patches the object (or its status); server-side apply creates a missing one.
pub async fn patch(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let opts = WriteOpts::from_request(req, "PatchOptions")?;
    let kind = PatchKind::from_content_type(rt, &req.content_type)?;
    let force = req.query.flag("force");
    if kind == PatchKind::Apply {
        // kube-apiserver's ValidatePatchOptions: 422 Invalid, not 400.
        if req.query.get("fieldManager").is_none() {
            return Err(ApiError::invalid_patch_options(Cause::new(
                "FieldValueRequired",
                "fieldManager",
                "Required value: is required for apply patch",
            )));
        }
    } else if force {
        return Err(ApiError::invalid_patch_options(Cause::new(
            "FieldValueForbidden",
            "force",
            "Forbidden: may not be specified for non-apply patch",
        )));
    }
    let parsed = parse(rt, kind, &req.body)?;
    let name = req.name().to_string();
    let now_ts = now();
    let scope = req.scope();
    let (code, json, warnings) = update_object(
        st,
        rt,
        req.ns(),
        &name,
        scope,
        &opts,
        kind == PatchKind::Apply,
        |current| {
            apply_patch(
                rt,
                &parsed,
                current,
                &name,
                &opts.manager,
                force,
                scope,
                &now_ts,
            )
        },
    )
    .await?;
    Ok(object_response(rt, code, json, req.transform(), &warnings))
}
