//! POST of a new object.

use axum::response::Response;
use http::StatusCode;

use crate::request::body::decode_body;
use crate::request::options::WriteOpts;
use crate::request::target::ResourceRequest;
use crate::response::object_response;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult};
use crate::write::create::create_object;

/// Creates the object in the body; 201 with the object as stored.
pub async fn create(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    if req.target.status {
        return Err(ApiError::method_not_allowed_here());
    }
    let opts = WriteOpts::from_request(req, "CreateOptions")?;
    let v = decode_body(rt, &req.body, &req.content_type)?;
    let (json, warnings) = create_object(st, rt, req.ns(), v, &opts, false).await?;
    Ok(object_response(
        rt,
        StatusCode::CREATED,
        json,
        req.transform(),
        &warnings,
    ))
}
