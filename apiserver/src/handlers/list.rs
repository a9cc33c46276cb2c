//! LIST of a kind, in one namespace or all: selectors, pages with continue
//! tokens, reads at an older resource version, and the Table and metadata
//! conversions.

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use crate::request::continue_token;
use crate::request::options::ListParams;
use crate::request::selectors::Selectors;
use crate::request::target::ResourceRequest;
use crate::response::{json_response, value_response};
use crate::state::AppState;
use crate::status::{ApiResult, read_error};
use crate::store::{ListResult, ReadError};
use crate::table::{self, Transform};

/// The objects of the request's kind (and namespace) that the selectors match,
/// one page of them.
pub fn select(
    st: &AppState,
    req: &ResourceRequest,
    sel: &Selectors,
    params: &ListParams,
) -> ApiResult<ListResult> {
    let rt = st.registry.get(req.target.rt_id);
    st.store
        .list(
            rt.id,
            req.namespace_filter(rt),
            &|o| sel.matches(rt, o),
            params.limit,
            params.after.as_ref(),
            params.at,
        )
        .map_err(read_error)
}

/// One page of the kind, as a list, a Table, or metadata only.
pub fn list(st: &AppState, req: &ResourceRequest) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let sel = Selectors::from_query(rt, &req.query)?;
    let params = ListParams::parse(&req.query)?;
    if let Some(n) = params.not_older_than {
        let cur = st.store.current_rv();
        if n > cur {
            return Err(read_error(ReadError::TooLarge {
                requested: n,
                current: cur,
            }));
        }
    }
    let result = select(st, req, &sel, &params)?;
    let mut list_meta = json!({ "resourceVersion": result.rv.to_string() });
    if let Some(next) = &result.next {
        list_meta["continue"] = json!(continue_token::encode(result.rv, next));
        list_meta["remainingItemCount"] = json!(result.remaining);
    }
    match req.transform() {
        Some(Transform::Table(include)) => {
            let objects: Vec<Value> = result.items.iter().map(|o| o.value()).collect();
            Ok(value_response(
                StatusCode::OK,
                &table::table(rt, &objects, list_meta, include, true),
                &[],
            ))
        }
        Some(Transform::Metadata) => {
            let items: Vec<Value> = result
                .items
                .iter()
                .map(|o| table::partial_metadata(&o.value()))
                .collect();
            Ok(value_response(
                StatusCode::OK,
                &json!({ "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "items": items }),
                &[],
            ))
        }
        None => {
            // Assemble the list from the stored bytes: no re-serialization of items.
            let head = json!({ "kind": rt.list_kind, "apiVersion": rt.api_version(), "metadata": list_meta });
            let mut out = serde_json::to_vec(&head).unwrap_or_default();
            out.pop();
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in result.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            Ok(json_response(StatusCode::OK, out, &[]))
        }
    }
}
