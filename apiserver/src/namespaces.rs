//! Namespace lifecycle: the namespaces every cluster has, and the work of
//! kube-controller-manager's namespace controller: a namespace being deleted
//! has its contents deleted (finalizers respected), and goes away when empty.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::request::options::{DeleteOpts, WriteOpts};
use crate::state::AppState;
use crate::status::ApiError;
use crate::store::{Precondition, WriteOp};
use crate::write::create::create_object;
use crate::write::delete::delete_object;

/// The namespaces created on first start.
pub const INITIAL: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the standard namespaces that do not exist yet.
pub async fn ensure_initial(st: &AppState) -> Result<(), ApiError> {
    let rt = st.registry.namespace_type();
    for ns in INITIAL {
        if st.store.get(rt.id, "", ns).is_some() {
            continue;
        }
        let v = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        match create_object(
            st,
            rt,
            "",
            v,
            &WriteOpts::internal("medforge-apiserver"),
            false,
        )
        .await
        {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs until shutdown: finishes the deletion of terminating namespaces.
pub async fn run(st: Arc<AppState>) {
    let mut published = st.store.subscribe();
    loop {
        if let Err(e) = sweep(&st).await {
            tracing::warn!(error = %e, "namespace cleanup failed; retrying");
        }
        tokio::select! {
            _ = published.changed() => {
                // Let a burst of writes settle before looking again.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            _ = st.shutdown.cancelled() => return,
        }
    }
}

async fn sweep(st: &AppState) -> Result<(), ApiError> {
    let ns_rt = st.registry.namespace_type();
    let (namespaces, _) = st.store.snapshot(ns_rt.id, None);
    for ns in namespaces.iter().filter(|n| n.deleting) {
        let mut remaining = 0;
        // Views (core v1 Events) show objects their stored kind already holds.
        for rt in st
            .registry
            .types
            .iter()
            .filter(|t| t.namespaced && t.alias_of.is_none())
        {
            let (objects, _) = st.store.snapshot(rt.id, Some(&ns.name));
            for o in objects {
                remaining += 1;
                if o.deleting {
                    continue;
                }
                match delete_object(st, rt, &o.namespace, &o.name, &DeleteOpts::default()).await {
                    Ok(_) => {}
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        if remaining > 0 {
            continue;
        }
        // Empty: drop the "kubernetes" finalizer, and the namespace with it.
        let mut v = ns.value();
        let had_spec_finalizers = v
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .and_then(|spec| spec.remove("finalizers"))
            .is_some();
        let finalizers_left = v
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let op = if finalizers_left {
            if !had_spec_finalizers {
                // Waiting for someone else's metadata finalizer.
                continue;
            }
            WriteOp::Put {
                resource: ns_rt.id,
                object: v,
                precondition: Precondition::Rv(ns.rv),
            }
        } else {
            WriteOp::Delete {
                resource: ns_rt.id,
                key: ns.key(),
                precondition: Precondition::Rv(ns.rv),
                last_state: Some(v),
            }
        };
        if let Err(e) = st.store.write(op).await {
            tracing::debug!(namespace = %ns.name, error = %e, "namespace changed while finishing its deletion");
        } else {
            tracing::info!(namespace = %ns.name, "namespace deleted");
        }
    }
    Ok(())
}
