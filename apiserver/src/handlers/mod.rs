//! The verbs on resources, one module each, and the choice of verb from the
//! method and path. Each handler parses what it needs of the request
//! ([`crate::request`]), reads the store or writes through
//! [`crate::write`], and answers through [`crate::response`].

pub mod create;
pub mod delete;
pub mod get;
pub mod list;
pub mod patch;
pub mod update;
pub mod watch;

use std::sync::Arc;

use axum::response::Response;
use http::Method;

use crate::request::target::ResourceRequest;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult};

/// Serves a request on a resource with the verb its method and path name.
pub async fn dispatch(
    st: Arc<AppState>,
    method: Method,
    rr: ResourceRequest,
) -> ApiResult<Response> {
    let rt = st.registry.get(rr.target.rt_id);
    let collection_namespaced_all = rt.namespaced && rr.target.namespace.is_none();
    let watch_prefix = rr.target.watch;
    match (method, rr.target.name.is_some()) {
        (Method::GET, false) => {
            if watch_prefix || rr.query.flag("watch") {
                watch::watch(st.clone(), &rr, None)
            } else {
                list::list(&st, &rr)
            }
        }
        (Method::GET, true) => {
            if watch_prefix {
                watch::watch(st.clone(), &rr, rr.target.name.clone())
            } else {
                get::get(&st, &rr)
            }
        }
        (Method::POST, false) if !collection_namespaced_all => create::create(&st, &rr).await,
        (Method::PUT, true) => update::update(&st, &rr).await,
        (Method::PATCH, true) => patch::patch(&st, &rr).await,
        (Method::DELETE, true) => delete::delete(&st, &rr).await,
        (Method::DELETE, false) if !collection_namespaced_all => {
            delete::delete_collection(&st, &rr).await
        }
        _ => Err(ApiError::method_not_allowed_here()),
    }
}
