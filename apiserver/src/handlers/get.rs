//! GET of one object.

use axum::response::Response;
use http::StatusCode;

use crate::request::target::ResourceRequest;
use crate::response::object_response;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult};

/// One object, as stored or as the Table or metadata the client asked for.
pub fn get(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let so = st
        .store
        .get(rt.id, req.ns(), req.name())
        .ok_or_else(|| ApiError::not_found(rt, req.name()))?;
    Ok(object_response(
        rt,
        StatusCode::OK,
        so.json.clone(),
        req.transform(),
        &[],
    ))
}
