//! The audit log: one JSON line per request that reached authorization, in
//! the shape of kube-apiserver's `audit.k8s.io/v1` Events at level
//! `Metadata` (user, verb, object reference, the authorization decision in
//! the annotations), so that a tool reading kube-apiserver's audit log reads
//! this one too (see `medforge rbac-report`). Written only when the server is
//! started with an audit log path.

use std::fs::{File, OpenOptions};
use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde_json::json;

use super::rbac::{Attributes, Decision};
use super::user::User;

/// An append-only audit log file.
pub struct AuditLog {
    file: Mutex<LineWriter<File>>,
}

impl AuditLog {
    /// Opens (appending) or creates the log, mode 0600: it names users.
    pub fn open(path: &Path) -> Result<AuditLog, crate::error::Error> {
        let io = |source| crate::error::Error::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io)?;
        Ok(AuditLog {
            file: Mutex::new(LineWriter::new(file)),
        })
    }

    /// Records one decision.
    pub fn record(&self, user: &User, a: &Attributes, uri: &str, decision: &Decision) {
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "RequestReceived",
            "requestURI": uri,
            "verb": a.verb,
            "user": { "username": user.name, "groups": user.groups },
            "requestReceivedTimestamp": crate::object_meta::now(),
            "annotations": {
                "authorization.k8s.io/decision": if decision.allowed { "allow" } else { "forbid" },
                "authorization.k8s.io/reason": decision.reason,
            },
        });
        if let Some(r) = &a.resource {
            let mut object = json!({ "resource": r.resource, "apiGroup": r.group });
            for (k, v) in [
                ("namespace", &r.namespace),
                ("name", &r.name),
                ("subresource", &r.subresource),
            ] {
                if !v.is_empty() {
                    object[k] = json!(v);
                }
            }
            event["objectRef"] = object;
        }
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, "could not write the audit log");
        }
    }
}
