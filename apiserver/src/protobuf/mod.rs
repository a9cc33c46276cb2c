//! Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`) for
//! the built-in kinds this server serves, translated to and from the JSON the
//! rest of the server works with (and stores).
//!
//! # Wire format
//!
//! An object is the four magic bytes `k8s\0` followed by a `runtime.Unknown`
//! message: `typeMeta {apiVersion, kind}`, `raw` (the object's own message,
//! e.g. `k8s.io.api.core.v1.Namespace`), `contentEncoding` and `contentType`
//! (both empty: `raw` is plain protobuf).
//!
//! A watch (`application/vnd.kubernetes.protobuf;stream=watch`) is a sequence
//! of frames, each a 4-byte big-endian length followed by that many bytes of
//! a *bare* `meta.v1.WatchEvent` message (no magic, no `Unknown` around it):
//! `type` (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`) and `object`,
//! a `runtime.RawExtension` whose `raw` holds the object's full encoding as
//! above (magic and `Unknown` included). This is how kube-apiserver writes it:
//! the watch handler encodes the event object with the negotiated (enveloping)
//! serializer into `WatchEvent.object.raw`, encodes the `WatchEvent` itself
//! with the stream serializer, which for protobuf is the `RawSerializer` (no
//! envelope), and writes it through the length-delimited framer (4-byte
//! big-endian length, then the bytes). client-go reads a frame, decodes it as
//! a bare `WatchEvent`, then decodes `object.raw` with the enveloping decoder.
//!
//! # Conversion
//!
//! Each kind goes through k8s-openapi's typed form: JSON → k8s-openapi
//! (serde) → k8s-pb (the field rules of [`convert`], listed per kind in
//! [`kinds`]) → bytes, and back. Going from protobuf to JSON follows Go's JSON encoding of the same object: fields Go
//! declares as plain `omitempty` values (strings, integers, maps, lists) are
//! left out when empty or zero, because a Go client always sends them;
//! pointer fields keep whatever value they carry (`deletionGracePeriodSeconds:
//! 0` stays); a zero `Time` (an empty message) is no time at all; `Time`
//! carries whole seconds only and `MicroTime` seconds and nanoseconds, as in
//! Go. A round trip JSON → protobuf → JSON of an object without empty values
//! gives back the same JSON.

mod convert;
mod kinds;

#[cfg(test)]
mod tests;

use k8s_openapi::List;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use convert::ToProto;

/// The media type of Kubernetes' protobuf encoding.
pub const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The media type of a protobuf watch stream.
pub const PROTOBUF_WATCH: &str = "application/vnd.kubernetes.protobuf;stream=watch";

/// The bytes every enveloped object starts with: `k8s` and encoding 0 (`Unknown`).
const MAGIC: [u8; 4] = [b'k', b'8', b's', 0];

/// The kinds this module translates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Namespace,
    NamespaceList,
    CoreEvent,
    CoreEventList,
    Lease,
    LeaseList,
    Event,
    EventList,
    Status,
    DeleteOptions,
    TokenRequest,
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
}

fn known(api_version: &str, kind: &str) -> Option<Known> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => Known::Namespace,
        ("v1", "NamespaceList") => Known::NamespaceList,
        ("v1", "Event") => Known::CoreEvent,
        ("v1", "EventList") => Known::CoreEventList,
        ("coordination.k8s.io/v1", "Lease") => Known::Lease,
        ("coordination.k8s.io/v1", "LeaseList") => Known::LeaseList,
        ("events.k8s.io/v1", "Event") => Known::Event,
        ("events.k8s.io/v1", "EventList") => Known::EventList,
        ("v1" | "meta.k8s.io/v1", "Status") => Known::Status,
        ("authentication.k8s.io/v1", "TokenRequest") => Known::TokenRequest,
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => Known::SelfSubjectAccessReview,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => Known::SelfSubjectRulesReview,
        // Like every meta/v1 option type, DeleteOptions is registered in every
        // group version: client-go labels it with the group of the resource.
        (_, "DeleteOptions") if !api_version.is_empty() => Known::DeleteOptions,
        _ => return None,
    })
}

const KNOWN_KINDS: &str = "v1 Namespace, NamespaceList, Event, EventList, Status; \
     coordination.k8s.io/v1 Lease, LeaseList; events.k8s.io/v1 Event, EventList; \
     authentication.k8s.io/v1 TokenRequest; authorization.k8s.io/v1 SelfSubjectAccessReview, \
     SelfSubjectRulesReview; DeleteOptions";

fn unknown_kind(api_version: &str, kind: &str) -> String {
    format!(
        "no kind {kind:?} is registered for version {api_version:?} in this server's protobuf encoding (it has {KNOWN_KINDS})"
    )
}

/// Calls `$f::<T>($arg)` with the k8s-openapi type `T` of a known kind.
macro_rules! for_known {
    ($which:expr, $f:ident, $arg:expr) => {
        match $which {
            Known::Namespace => $f::<core::Namespace>($arg),
            Known::NamespaceList => $f::<List<core::Namespace>>($arg),
            Known::CoreEvent => $f::<core::Event>($arg),
            Known::CoreEventList => $f::<List<core::Event>>($arg),
            Known::Lease => $f::<coordination::Lease>($arg),
            Known::LeaseList => $f::<List<coordination::Lease>>($arg),
            Known::Event => $f::<events::Event>($arg),
            Known::EventList => $f::<List<events::Event>>($arg),
            Known::Status => $f::<meta::Status>($arg),
            Known::DeleteOptions => $f::<meta::DeleteOptions>($arg),
            Known::TokenRequest => $f::<k8s_openapi::api::authentication::v1::TokenRequest>($arg),
            Known::SelfSubjectAccessReview => {
                $f::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>($arg)
            }
            Known::SelfSubjectRulesReview => {
                $f::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>($arg)
            }
        }
    };
}

/// Decodes an enveloped protobuf object into the JSON form of the object,
/// with `apiVersion` and `kind` from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Err("the protobuf body is empty".into());
    }
    let rest = body.strip_prefix(&MAGIC[..]).ok_or_else(|| {
        "the body does not appear to be a protobuf message: it does not start with the prefix k8s\\0"
            .to_string()
    })?;
    let unknown = Unknown::decode(rest).map_err(|e| {
        format!("the protobuf envelope (runtime.Unknown) could not be decoded: {e}")
    })?;
    if let Some(enc) = unknown
        .content_encoding
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        return Err(format!(
            "the protobuf envelope has content encoding {enc:?}, which is not supported"
        ));
    }
    if let Some(ct) = unknown
        .content_type
        .as_deref()
        .filter(|s| !s.is_empty() && *s != PROTOBUF)
    {
        return Err(format!(
            "the protobuf envelope holds content of type {ct:?}; only {PROTOBUF} is supported"
        ));
    }
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    if kind.is_empty() {
        return Err("the protobuf envelope names no kind".into());
    }
    if api_version.is_empty() {
        return Err(format!(
            "the protobuf envelope names no apiVersion for kind {kind:?}"
        ));
    }
    let which = known(&api_version, &kind).ok_or_else(|| unknown_kind(&api_version, &kind))?;
    let raw = unknown.raw.unwrap_or_default();
    let mut v = for_known!(which, from_raw, &raw).map_err(|e| {
        format!("{kind} in version {api_version:?} could not be decoded from protobuf: {e}")
    })?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert("apiVersion".into(), Value::String(api_version));
        obj.insert("kind".into(), Value::String(kind));
    }
    Ok(v)
}

/// Encodes the JSON form of an object (one of the kinds above, named by its
/// `apiVersion` and `kind`) as an enveloped protobuf object.
pub fn encode(v: &Value) -> Result<Vec<u8>, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "only a JSON object can be encoded as protobuf".to_string())?;
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let which = known(api_version, kind).ok_or_else(|| unknown_kind(api_version, kind))?;
    // apiVersion and kind travel in the envelope; k8s-openapi would also
    // refuse `meta.k8s.io/v1` for a Status.
    let mut body = obj.clone();
    body.remove("apiVersion");
    body.remove("kind");
    let body = Value::Object(body);
    let raw = for_known!(which, to_raw, body).map_err(|e| {
        format!("{kind} in version {api_version:?} could not be encoded as protobuf: {e}")
    })?;
    envelope(api_version, kind, raw)
}

/// The magic bytes and the `runtime.Unknown` around an object's own message.
fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.to_string()),
            kind: Some(kind.to_string()),
        }),
        raw: Some(raw),
        // Written, empty, as kube-apiserver writes them.
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = Vec::with_capacity(MAGIC.len() + unknown.encoded_len());
    out.extend_from_slice(&MAGIC);
    unknown
        .encode(&mut out)
        .map_err(|e| format!("the protobuf envelope could not be written: {e}"))?;
    Ok(out)
}

/// One frame of a protobuf watch stream: the 4-byte big-endian length of a
/// bare `WatchEvent`, then the event, whose object is enveloped (see the
/// module documentation).
pub fn encode_watch_event(event_type: &str, object: &Value) -> Result<Vec<u8>, String> {
    let event = pb_meta::WatchEvent {
        r#type: Some(event_type.to_string()),
        object: Some(RawExtension {
            raw: Some(encode(object)?),
        }),
    };
    let len = event.encoded_len();
    let len32 = u32::try_from(len)
        .map_err(|_| format!("a watch event of {len} bytes is too large for one frame"))?;
    let mut out = Vec::with_capacity(4 + len);
    out.extend_from_slice(&len32.to_be_bytes());
    event
        .encode(&mut out)
        .map_err(|e| format!("the watch event could not be written: {e}"))?;
    Ok(out)
}

fn to_raw<T: ToProto + DeserializeOwned>(body: Value) -> Result<Vec<u8>, String> {
    let typed: T = serde_json::from_value(body).map_err(|e| e.to_string())?;
    Ok(typed.to_pb().encode_to_vec())
}

fn from_raw<T: ToProto + Serialize>(raw: &[u8]) -> Result<Value, String> {
    let pb = T::Pb::decode(raw).map_err(|e| e.to_string())?;
    let typed = T::from_pb(pb)?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}
