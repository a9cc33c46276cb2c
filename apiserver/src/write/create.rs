//! Creating an object: admission, field ownership, and the write, with a new
//! generated name when a `generateName` collides.

use bytes::Bytes;
use serde_json::Value;

use crate::admission;
use crate::managed::{self, Scope};
use crate::object_meta::{generated_name, meta_mut, meta_str, now, set_name};
use crate::registry::ResourceType;
use crate::request::options::WriteOpts;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, write_error};
use crate::store::{Precondition, WriteError, WriteOp};
use crate::validation;

/// Creates an object (POST, or server-side apply of a missing object).
/// `managed_done` is true when the caller already recorded field ownership.
pub async fn create_object(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    mut v: Value,
    opts: &WriteOpts,
    managed_done: bool,
) -> ApiResult<(Bytes, Vec<String>)> {
    let kept_managed = if managed_done {
        v.pointer("/metadata/managedFields").cloned()
    } else {
        None
    };
    let generated = admission::prepare_create(rt, &mut v, ns)?;
    let name = meta_str(&v, "name").unwrap_or("").to_string();
    admission::admit_namespace(st, rt, ns, &name)?;
    let warnings = validation::validate(rt, &mut v, None, opts.validation)?;
    let when = now();
    match kept_managed {
        Some(m) => {
            meta_mut(&mut v)?.insert("managedFields".into(), m);
        }
        None => managed::record_update(rt, None, &mut v, &opts.manager, Scope::Main, &when),
    }
    if opts.dry_run {
        return Ok((
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            warnings,
        ));
    }
    for attempt in 0..8 {
        if attempt > 0 {
            let name = generated_name(meta_str(&v, "generateName").unwrap_or(""));
            set_name(&mut v, &name);
        }
        match st
            .store
            .write(WriteOp::Put {
                resource: rt.id,
                object: v.clone(),
                precondition: Precondition::MustNotExist,
            })
            .await
        {
            Ok(so) => {
                tracing::debug!(kind = %rt.kind, namespace = ns, name = %so.name, uid = %so.uid, "created");
                return Ok((so.json.clone(), warnings));
            }
            Err(WriteError::AlreadyExists) if generated => continue,
            Err(WriteError::AlreadyExists) => {
                return Err(ApiError::already_exists(
                    rt,
                    meta_str(&v, "name").unwrap_or(""),
                ));
            }
            Err(e) => return Err(write_error(rt, &name, e)),
        }
    }
    Err(ApiError::already_exists(
        rt,
        meta_str(&v, "name").unwrap_or(""),
    ))
}
