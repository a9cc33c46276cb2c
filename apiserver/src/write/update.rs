//! The read-modify-write loop behind update, patch and server-side apply.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use super::create::create_object;
use crate::admission;
use crate::managed::{self, Scope};
use crate::object_meta::{meta_mut, now, pending_finalizers, set_name};
use crate::registry::ResourceType;
use crate::request::options::WriteOpts;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, write_error};
use crate::store::{Precondition, WriteError, WriteOp};
use crate::validation;

/// What an update's mutation produced from the current object.
pub struct Mutation {
    pub object: Value,
    /// The resourceVersion the client required (from the body or the patch).
    pub required_rv: Option<String>,
    /// Field ownership already recorded (server-side apply).
    pub managed_done: bool,
}

/// The read-modify-write loop behind update, patch and apply: reads the
/// current object, lets `mutate` produce the new one, and writes it with the
/// read resourceVersion as precondition, retrying when another writer got in
/// first (unless the client asked for a specific resourceVersion).
#[allow(clippy::too_many_arguments)]
pub async fn update_object<F>(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    scope: Scope,
    opts: &WriteOpts,
    allow_create: bool,
    mut mutate: F,
) -> ApiResult<(StatusCode, Bytes, Vec<String>)>
where
    F: FnMut(Option<&Value>) -> ApiResult<Mutation>,
{
    for _ in 0..64 {
        let current = st.store.get(rt.id, ns, name);
        let Some(current) = current else {
            if !allow_create {
                return Err(ApiError::not_found(rt, name));
            }
            let m = mutate(None)?;
            if scope == Scope::Status {
                return Err(ApiError::not_found(rt, name));
            }
            let mut obj = m.object;
            set_name(&mut obj, name);
            match create_object(st, rt, ns, obj, opts, m.managed_done).await {
                Err(e) if e.reason == "AlreadyExists" => continue,
                Err(e) => return Err(e),
                Ok((json, w)) => return Ok((StatusCode::CREATED, json, w)),
            }
        };
        let old = current.value();
        let m = mutate(Some(&old))?;
        let required = m.required_rv.clone().filter(|s| !s.is_empty());
        if let Some(rv) = &required
            && rv.parse::<u64>().ok() != Some(current.rv)
        {
            if rv.parse::<u64>().is_err() {
                return Err(ApiError::bad_request(format!(
                    "invalid resource version: {rv}"
                )));
            }
            return Err(ApiError::stale(rt, name));
        }
        let mut new = admission::prepare_update(rt, &old, m.object, scope)?;
        let warnings = validation::validate(rt, &mut new, Some(&old), opts.validation)?;
        if !m.managed_done {
            let meta = meta_mut(&mut new)?;
            match old.pointer("/metadata/managedFields") {
                Some(mf) => meta.insert("managedFields".into(), mf.clone()),
                None => meta.remove("managedFields"),
            };
            managed::record_update(rt, Some(&old), &mut new, &opts.manager, scope, &now());
        }
        if admission::same_object(&old, &new) {
            return Ok((StatusCode::OK, current.json.clone(), warnings));
        }
        let finished = current.deleting && !pending_finalizers(rt, &new);
        if opts.dry_run {
            return Ok((
                StatusCode::OK,
                Bytes::from(serde_json::to_vec(&new).unwrap_or_default()),
                warnings,
            ));
        }
        let op = if finished {
            WriteOp::Delete {
                resource: rt.id,
                key: current.key(),
                precondition: Precondition::Rv(current.rv),
                last_state: Some(new),
            }
        } else {
            WriteOp::Put {
                resource: rt.id,
                object: new,
                precondition: Precondition::Rv(current.rv),
            }
        };
        match st.store.write(op).await {
            Ok(so) => {
                if finished {
                    tracing::debug!(kind = %rt.kind, namespace = ns, name, "last finalizer removed; deleted");
                }
                return Ok((StatusCode::OK, so.json.clone(), warnings));
            }
            Err(WriteError::Conflict) | Err(WriteError::NotFound) if required.is_none() => continue,
            Err(e) => return Err(write_error(rt, name, e)),
        }
    }
    Err(ApiError::modified_too_often(rt, name))
}
