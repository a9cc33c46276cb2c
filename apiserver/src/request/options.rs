//! The options of each verb: where a list starts and how long its pages are,
//! where a watch starts, and for writes dry runs, the field manager, field
//! validation, and `DeleteOptions` from the body or the query.

use std::time::Duration;

use serde_json::Value;

use super::body::{decode_protobuf, media_type};
use super::continue_token;
use super::query::Query;
use super::target::ResourceRequest;
use crate::managed;
use crate::protobuf;
use crate::registry::ResourceType;
use crate::status::{ApiError, ApiResult, Cause};
use crate::store::ObjectKey;
use crate::validation::FieldValidation;

/// Options of a write request.
#[derive(Debug)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub manager: String,
    pub validation: FieldValidation,
}

impl WriteOpts {
    /// `options_kind` names the options object kube-apiserver validates for
    /// this verb (`CreateOptions`, `UpdateOptions`, `PatchOptions`,
    /// `DeleteOptions`), as its 422 messages do.
    pub fn from_request(req: &ResourceRequest, options_kind: &str) -> ApiResult<WriteOpts> {
        let dry_run = match req.query.0.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other:?}: supported values: \"All\""
                )));
            }
        };
        let manager = match req.query.get("fieldManager") {
            Some(m) if m.len() > 128 => {
                return Err(ApiError::invalid_kind(
                    "meta.k8s.io",
                    options_kind,
                    "",
                    vec![Cause::new(
                        "FieldValueTooLong",
                        "fieldManager",
                        "Too long: may not be more than 128 bytes",
                    )],
                ));
            }
            Some(m) => m.to_string(),
            None => managed::manager_from_user_agent(req.user_agent.as_deref()),
        };
        Ok(WriteOpts {
            dry_run,
            manager,
            validation: FieldValidation::parse(req.query.get("fieldValidation"))?,
        })
    }

    /// Options for writes the server makes itself.
    pub fn internal(manager: &str) -> WriteOpts {
        WriteOpts {
            dry_run: false,
            manager: manager.to_string(),
            validation: FieldValidation::Ignore,
        }
    }
}

/// `DeleteOptions`, from the body or the query.
#[derive(Debug, Default)]
pub struct DeleteOpts {
    pub uid: Option<String>,
    pub rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub fn from_request(rt: &ResourceType, req: &ResourceRequest) -> ApiResult<DeleteOpts> {
        let mut o = DeleteOpts {
            dry_run: WriteOpts::from_request(req, "DeleteOptions")?.dry_run,
            ..Default::default()
        };
        if !req.body.is_empty() {
            let v: Value = if media_type(&req.content_type) == protobuf::PROTOBUF {
                let v = decode_protobuf(rt, &req.body)?;
                let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
                if kind != "DeleteOptions" {
                    return Err(ApiError::bad_request(format!(
                        "the body of a delete request must be DeleteOptions, not {kind}"
                    )));
                }
                v
            } else {
                serde_json::from_slice(&req.body).map_err(|e| {
                    ApiError::bad_request(format!(
                        "couldn't get version/kind; json parse error: {e}"
                    ))
                })?
            };
            o.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.rv = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
                o.dry_run |= d.iter().any(|x| x == "All");
            }
        }
        Ok(o)
    }
}

/// Where a list starts and how long its pages are.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListParams {
    /// The most items in one page.
    pub limit: Option<usize>,
    /// The key the page starts after (from a continue token).
    pub after: Option<ObjectKey>,
    /// The resource version to list at: a continue token's, or
    /// `resourceVersion` with `resourceVersionMatch=Exact`.
    pub at: Option<u64>,
    /// Any other `resourceVersion` but `0`: the list must be at least this new.
    pub not_older_than: Option<u64>,
}

impl ListParams {
    pub fn parse(q: &Query) -> ApiResult<ListParams> {
        let mut p = ListParams {
            limit: match q.get("limit") {
                Some(l) => Some(
                    l.parse::<i64>()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit: {l:?}")))?
                        .max(0) as usize,
                ),
                None => None,
            },
            ..ListParams::default()
        };
        if let Some(c) = q.get("continue") {
            let (rv, key) = continue_token::decode(c)?;
            p.after = Some(key);
            p.at = Some(rv);
            return Ok(p);
        }
        match (q.get("resourceVersion"), q.get("resourceVersionMatch")) {
            (Some(rv), Some("Exact")) => p.at = Some(resource_version(rv)?),
            (Some(rv), _) if rv != "0" => p.not_older_than = Some(resource_version(rv)?),
            _ => {}
        }
        Ok(p)
    }
}

fn resource_version(rv: &str) -> ApiResult<u64> {
    rv.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// Send the current state as `ADDED`, then changes; `end_bookmark` marks
    /// the end of the initial events (`sendInitialEvents=true`).
    Initial { end_bookmark: bool },
    /// Changes after this resource version.
    After(u64),
}

/// The parameters of a watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchParams {
    pub start: WatchStart,
    /// `allowWatchBookmarks`.
    pub bookmarks: bool,
    /// `timeoutSeconds`, 30 minutes when absent.
    pub timeout: Duration,
}

impl WatchParams {
    pub fn parse(rt: &ResourceType, q: &Query) -> ApiResult<WatchParams> {
        let send_initial = match q.get("sendInitialEvents") {
            Some("true") => {
                if q.get("resourceVersionMatch") != Some("NotOlderThan") {
                    return Err(ApiError::invalid(
                        rt,
                        "",
                        vec![Cause::new(
                            "FieldValueForbidden",
                            "resourceVersionMatch",
                            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                        )],
                    ));
                }
                Some(true)
            }
            Some("false") => Some(false),
            _ => None,
        };
        let start = match (send_initial, q.get("resourceVersion")) {
            (Some(true), _) => WatchStart::Initial { end_bookmark: true },
            (_, None) | (_, Some("0")) => WatchStart::Initial {
                end_bookmark: false,
            },
            (_, Some(rv)) => WatchStart::After(resource_version(rv)?),
        };
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        Ok(WatchParams {
            start,
            bookmarks: q.flag("allowWatchBookmarks"),
            timeout,
        })
    }
}
