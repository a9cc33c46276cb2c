//! DELETE of one object, and of every object a selector matches
//! (deletecollection).

use axum::response::Response;
use http::StatusCode;
use serde_json::json;

use super::list::select;
use crate::request::options::{DeleteOpts, ListParams};
use crate::request::selectors::Selectors;
use crate::request::target::ResourceRequest;
use crate::response::{json_response, value_response};
use crate::state::AppState;
use crate::status::{ApiError, ApiResult};
use crate::write::delete::delete_object;

/// Deletes the object; answers with it as it is after the call (marked for
/// deletion while finalizers hold it).
pub async fn delete(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    if req.target.status {
        return Err(ApiError::method_not_allowed_here());
    }
    let opts = DeleteOpts::from_request(rt, req)?;
    let so = delete_object(st, rt, req.ns(), req.name(), &opts).await?;
    Ok(json_response(StatusCode::OK, so.json.clone(), &[]))
}

/// Deletes every object the selectors match; answers with the list of them.
pub async fn delete_collection(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let sel = Selectors::from_query(rt, &req.query)?;
    let opts = DeleteOpts::from_request(rt, req)?;
    let result = select(st, req, &sel, &ListParams::default())?;
    let mut items = Vec::new();
    for o in result.items {
        match delete_object(st, rt, &o.namespace, &o.name, &opts).await {
            Ok(so) => items.push(so.value()),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let list = json!({
        "kind": rt.list_kind,
        "apiVersion": rt.api_version(),
        "metadata": { "resourceVersion": st.store.current_rv().to_string() },
        "items": items,
    });
    Ok(value_response(StatusCode::OK, &list, &[]))
}
