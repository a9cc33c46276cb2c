//! Deleting an object: preconditions, then `deletionTimestamp` while
//! finalizers hold it, or removal.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::object_meta::{meta_mut, now, pending_finalizers};
use crate::registry::{Builtin, ResourceType};
use crate::request::options::DeleteOpts;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, write_error};
use crate::store::{Precondition, StoredObject, WriteError, WriteOp};

/// Deletes one object: marks it with `deletionTimestamp` when finalizers
/// hold it, removes it otherwise. Returns the object as the response shows it.
pub async fn delete_object(
    st: &AppState,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> ApiResult<Arc<StoredObject>> {
    for _ in 0..64 {
        let current = st
            .store
            .get(rt.id, ns, name)
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if let Some(uid) = &opts.uid
            && *uid != current.uid
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    current.uid
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && rv.parse::<u64>().ok() != Some(current.rv)
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    current.rv
                ),
            ));
        }
        let mut v = current.value();
        let op = if pending_finalizers(rt, &v) {
            if current.deleting {
                return Ok(current);
            }
            let meta = meta_mut(&mut v)?;
            meta.insert("deletionTimestamp".into(), json!(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            // As kube-apiserver's BeforeDelete: an object that tracks its
            // generation gets a new one when its deletion starts, so
            // controllers that filter on generation changes see it.
            if let Some(g) = meta
                .get("generation")
                .and_then(Value::as_i64)
                .filter(|g| *g > 0)
            {
                meta.insert("generation".into(), json!(g + 1));
            }
            if rt.builtin == Some(Builtin::Namespace) {
                v["status"] = json!({ "phase": "Terminating" });
            }
            if opts.dry_run {
                let json = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                return Ok(Arc::new(StoredObject::new(rt, &v, json)));
            }
            WriteOp::Put {
                resource: rt.id,
                object: v,
                precondition: Precondition::Rv(current.rv),
            }
        } else {
            if opts.dry_run {
                return Ok(current);
            }
            WriteOp::Delete {
                resource: rt.id,
                key: current.key(),
                precondition: Precondition::Rv(current.rv),
                last_state: None,
            }
        };
        match st.store.write(op).await {
            Ok(so) => return Ok(so),
            Err(WriteError::Conflict) if opts.rv.is_none() => continue,
            Err(WriteError::NotFound) => return Err(ApiError::not_found(rt, name)),
            Err(e) => return Err(write_error(rt, name, e)),
        }
    }
    Err(ApiError::modified_too_often(rt, name))
}
