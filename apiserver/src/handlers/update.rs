//! PUT of a whole object (or of its status).

use axum::response::Response;

use crate::object_meta::meta_str;
use crate::request::body::decode_body;
use crate::request::options::WriteOpts;
use crate::request::target::ResourceRequest;
use crate::response::object_response;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, Cause};
use crate::write::update::{Mutation, update_object};

/// Replaces the object (or its status) with the body; the body's
/// `resourceVersion` must be the stored one (required for custom resources).
pub async fn update(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let opts = WriteOpts::from_request(req, "UpdateOptions")?;
    let body = decode_body(rt, &req.body, &req.content_type)?;
    let name = req.name();
    match meta_str(&body, "name") {
        Some(n) if n != name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
        _ => {}
    }
    if rt.namespaced
        && let Some(n) = meta_str(&body, "namespace").filter(|n| !n.is_empty())
        && n != req.ns()
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let required = meta_str(&body, "resourceVersion").map(str::to_string);
    if rt.builtin.is_none() && required.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::invalid(
            rt,
            name,
            vec![Cause::new(
                "FieldValueInvalid",
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            )],
        ));
    }
    let (code, json, warnings) =
        update_object(st, rt, req.ns(), name, req.scope(), &opts, false, |_| {
            Ok(Mutation {
                object: body.clone(),
                required_rv: required.clone(),
                managed_done: false,
            })
        })
        .await?;
    Ok(object_response(rt, code, json, req.transform(), &warnings))
}
