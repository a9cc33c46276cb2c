//! What a resource request is about: the kind, namespace, name and
//! subresource its path names, and the request on one kind after routing.

use bytes::Bytes;

use super::query::Query;
use crate::managed::Scope;
use crate::registry::{Registry, ResourceType};
use crate::status::{ApiError, ApiResult};
use crate::table::{self, IncludeObject, Transform};

/// Where a resource path points. `rest` is the path after `/api/<version>`
/// or `/apis/<group>/<version>`, decoded, split at `/`:
/// `[watch/]<plural>[/<name>[/status]]`, or the same after
/// `namespaces/<namespace>/` for a namespaced kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub rt_id: usize,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `status` subresource.
    pub status: bool,
    /// The old `/watch/` path prefix.
    pub watch: bool,
}

impl Target {
    /// Resolves a path against the served kinds; 404 for anything they do not serve.
    pub fn parse(reg: &Registry, group: &str, version: &str, rest: &[&str]) -> ApiResult<Target> {
        let (watch, rest) = match rest.split_first() {
            Some((&"watch", r)) => (true, r),
            _ => (false, rest),
        };
        let namespaced_form = rest.len() >= 3
            && rest[0] == "namespaces"
            && reg
                .lookup(group, version, rest[2])
                .is_some_and(|t| t.namespaced);
        let (namespace, parts) = if namespaced_form {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
        if parts.is_empty() || parts.len() > 3 {
            return Err(ApiError::path_not_found());
        }
        let rt = reg
            .lookup(group, version, parts[0])
            .ok_or_else(ApiError::path_not_found)?;
        let name = parts.get(1).map(|s| s.to_string());
        let status = match parts.get(2) {
            None => false,
            Some(&"status") if rt.status_subresource => true,
            Some(_) => return Err(ApiError::path_not_found()),
        };
        if rt.namespaced && namespace.is_none() && name.is_some() {
            return Err(ApiError::path_not_found());
        }
        Ok(Target {
            rt_id: rt.id,
            namespace,
            name,
            status,
            watch,
        })
    }
}

/// A request on one kind, after routing: its target and what the handlers
/// read of its headers, query and body.
pub struct ResourceRequest {
    pub target: Target,
    pub query: Query,
    pub body: Bytes,
    pub content_type: String,
    /// The media range chosen from the `Accept` header when the answer is
    /// JSON (it may ask for a Table); `None` for a protobuf answer.
    pub accept: Option<String>,
    pub user_agent: Option<String>,
    /// Whether the answer is written in protobuf (a watch writes its frames so).
    pub protobuf: bool,
}

impl ResourceRequest {
    /// The namespace, `""` for none.
    pub fn ns(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    /// The object's name, `""` for a collection.
    pub fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    /// The namespace a list or watch of kind `rt` is limited to: `None` for
    /// every namespace, and for a cluster-scoped kind.
    pub fn namespace_filter(&self, rt: &ResourceType) -> Option<&str> {
        if rt.namespaced {
            self.target.namespace.as_deref()
        } else {
            None
        }
    }

    /// The part of the object a write may touch.
    pub fn scope(&self) -> Scope {
        if self.target.status {
            Scope::Status
        } else {
            Scope::Main
        }
    }

    /// The conversion of the answer the client asked for (`;as=Table`, …).
    pub fn transform(&self) -> Option<Transform> {
        table::negotiate(
            self.accept.as_deref(),
            IncludeObject::parse(self.query.get("includeObject")),
        )
    }
}
