//! Watch streams: newline-delimited `{"type", "object"}` events over a chunked
//! response (or length-delimited protobuf `WatchEvent` frames when the client
//! asks for `application/vnd.kubernetes.protobuf`), resuming after any
//! retained `resourceVersion`, with synthetic `ADDED` events for the current
//! state when no version is given (or with `sendInitialEvents`), periodic
//! bookmarks when asked, an `ERROR` event with a 410 `Expired` Status when the
//! version is older than the history, and `ADDED`/`DELETED` when an object
//! starts or stops matching the selectors.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::protobuf;
use crate::registry::ResourceType;
use crate::request::options::{WatchParams, WatchStart};
use crate::request::selectors::Selectors;
use crate::request::target::ResourceRequest;
use crate::selector::FieldRequirement;
use crate::state::AppState;
use crate::status::{ApiError, ApiResult, read_error};
use crate::store::{EventType, ReadError, StoredObject};
use crate::table::{self, Transform};

struct Encoder {
    transform: Option<Transform>,
    first: bool,
    /// Protobuf frames instead of JSON lines.
    protobuf: bool,
}

impl Encoder {
    fn line(&mut self, rt: &ResourceType, kind: &str, object: &StoredObject) -> Bytes {
        if self.protobuf {
            return Encoder::frame(kind, &object.value());
        }
        let mut out = Vec::with_capacity(object.json.len() + 32);
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"object\":");
        match self.transform {
            None => out.extend_from_slice(&object.json),
            Some(t) => {
                let v = object.value();
                let transformed = match t {
                    Transform::Table(include) => {
                        let headers = self.first;
                        self.first = false;
                        table::table(
                            rt,
                            &[v],
                            json!({ "resourceVersion": object.rv.to_string() }),
                            include,
                            headers,
                        )
                    }
                    Transform::Metadata => table::partial_metadata(&v),
                };
                out.extend_from_slice(&serde_json::to_vec(&transformed).unwrap_or_default());
            }
        }
        out.extend_from_slice(b"}\n");
        Bytes::from(out)
    }

    fn raw(&self, kind: &str, object: &Value) -> Bytes {
        if self.protobuf {
            return Encoder::frame(kind, object);
        }
        let mut out =
            serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
        out.push(b'\n');
        Bytes::from(out)
    }

    /// One protobuf frame; an object that cannot be encoded becomes an `ERROR` event.
    fn frame(kind: &str, object: &Value) -> Bytes {
        let frame = protobuf::encode_watch_event(kind, object).or_else(|e| {
            tracing::warn!(error = %e, "a watch event could not be encoded as protobuf");
            let status =
                ApiError::internal(format!("the object could not be encoded as protobuf: {e}"));
            protobuf::encode_watch_event("ERROR", &status.to_status())
        });
        Bytes::from(frame.unwrap_or_default())
    }

    fn bookmark(&self, rt: &ResourceType, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        self.raw(
            "BOOKMARK",
            &json!({ "kind": rt.kind, "apiVersion": rt.api_version(), "metadata": meta }),
        )
    }
}

/// Starts a watch and returns the streaming response.
pub fn watch(
    st: Arc<AppState>,
    req: &ResourceRequest,
    pinned_name: Option<String>,
) -> ApiResult<Response> {
    let rt = st.registry.get(req.target.rt_id);
    let q = &req.query;
    let mut sel = Selectors::from_query(rt, q)?;
    if let Some(name) = pinned_name {
        sel.fields.reqs.push(FieldRequirement {
            field: "metadata.name".into(),
            negate: false,
            value: name,
        });
    }
    let WatchParams {
        start,
        bookmarks,
        timeout,
    } = WatchParams::parse(rt, q)?;
    let namespace = req.namespace_filter(rt).map(str::to_string);
    let transform = req.transform();
    let as_protobuf = req.protobuf;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let rt_id = rt.id;
    tokio::spawn(async move {
        let rt = st.registry.get(rt_id);
        let mut enc = Encoder {
            transform,
            first: true,
            protobuf: as_protobuf,
        };
        let matches = |o: &StoredObject| {
            namespace.as_deref().is_none_or(|ns| o.namespace == ns) && sel.matches(rt, o)
        };
        let mut published = st.store.subscribe();
        published.borrow_and_update();
        let mut last = match start {
            WatchStart::Initial { end_bookmark } => {
                let (objects, rv) = st.store.snapshot(rt_id, namespace.as_deref());
                for o in objects.iter().filter(|o| matches(o)) {
                    if tx.send(enc.line(rt, "ADDED", o)).await.is_err() {
                        return;
                    }
                }
                if end_bookmark && tx.send(enc.bookmark(rt, rv, true)).await.is_err() {
                    return;
                }
                rv
            }
            WatchStart::After(rv) => rv,
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let mut tick = tokio::time::interval(st.bookmark_interval);
        tick.tick().await;
        loop {
            published.borrow_and_update();
            match st.store.events_since(rt_id, last) {
                Err(e) => {
                    let status = match e {
                        ReadError::Expired { requested, oldest } => ApiError::expired(format!(
                            "too old resource version: {requested} ({})",
                            oldest + 1
                        )),
                        ReadError::TooLarge { .. } => read_error(e),
                    };
                    let _ = tx.send(enc.raw("ERROR", &status.to_status())).await;
                    return;
                }
                Ok((events, upto)) => {
                    for ev in events {
                        if ev.rv <= last {
                            continue;
                        }
                        let now_matches = matches(&ev.object);
                        let before = match (&ev.prev, ev.prev_known) {
                            (Some(p), true) => matches(p),
                            (None, true) => false,
                            (_, false) => now_matches,
                        };
                        let kind = match (ev.kind, before, now_matches) {
                            (EventType::Added, _, true) => "ADDED",
                            (EventType::Modified, true, true) => "MODIFIED",
                            (EventType::Modified, false, true) => "ADDED",
                            (EventType::Modified, true, false) => "DELETED",
                            (EventType::Deleted, b, n) if b || n => "DELETED",
                            _ => continue,
                        };
                        if tx.send(enc.line(rt, kind, &ev.object)).await.is_err() {
                            return;
                        }
                    }
                    last = upto;
                }
            }
            tokio::select! {
                changed = published.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tick.tick(), if bookmarks => {
                    if tx.send(enc.bookmark(rt, last, false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(enc.bookmark(rt, last, false)).await;
                    }
                    return;
                }
                _ = st.shutdown.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if as_protobuf {
            protobuf::PROTOBUF_WATCH
        } else {
            "application/json"
        }),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}
