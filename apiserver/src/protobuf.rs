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
//! (serde) → k8s-pb (hand-written below) → bytes, and back. Going from
//! protobuf to JSON follows Go's JSON encoding of the same object: fields Go
//! declares as plain `omitempty` values (strings, integers, maps, lists) are
//! left out when empty or zero, because a Go client always sends them;
//! pointer fields keep whatever value they carry (`deletionGracePeriodSeconds:
//! 0` stays); a zero `Time` (an empty message) is no time at all; `Time`
//! carries whole seconds only and `MicroTime` seconds and nanoseconds, as in
//! Go. A round trip JSON → protobuf → JSON of an object without empty values
//! gives back the same JSON.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::jiff::Timestamp;
use k8s_pb::api::coordination::v1 as pb_coordination;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::api::events::v1 as pb_events;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{RawExtension, TypeMeta, Unknown};
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

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
        // Like every meta/v1 option type, DeleteOptions is registered in every
        // group version: client-go labels it with the group of the resource.
        (_, "DeleteOptions") if !api_version.is_empty() => Known::DeleteOptions,
        _ => return None,
    })
}

const KNOWN_KINDS: &str = "v1 Namespace, NamespaceList, Event, EventList, Status; \
     coordination.k8s.io/v1 Lease, LeaseList; events.k8s.io/v1 Event, EventList; DeleteOptions";

fn unknown_kind(api_version: &str, kind: &str) -> String {
    format!(
        "no kind {kind:?} is registered for version {api_version:?} in this server's protobuf encoding (it has {KNOWN_KINDS})"
    )
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
    let mut v = match which {
        Known::Namespace => from_raw::<core::Namespace>(&raw),
        Known::NamespaceList => from_raw::<k8s_openapi::List<core::Namespace>>(&raw),
        Known::CoreEvent => from_raw::<core::Event>(&raw),
        Known::CoreEventList => from_raw::<k8s_openapi::List<core::Event>>(&raw),
        Known::Lease => from_raw::<coordination::Lease>(&raw),
        Known::LeaseList => from_raw::<k8s_openapi::List<coordination::Lease>>(&raw),
        Known::Event => from_raw::<events::Event>(&raw),
        Known::EventList => from_raw::<k8s_openapi::List<events::Event>>(&raw),
        Known::Status => from_raw::<meta::Status>(&raw),
        Known::DeleteOptions => from_raw::<meta::DeleteOptions>(&raw),
    }
    .map_err(|e| {
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
    let raw = match which {
        Known::Namespace => to_raw::<core::Namespace>(body),
        Known::NamespaceList => to_raw::<k8s_openapi::List<core::Namespace>>(body),
        Known::CoreEvent => to_raw::<core::Event>(body),
        Known::CoreEventList => to_raw::<k8s_openapi::List<core::Event>>(body),
        Known::Lease => to_raw::<coordination::Lease>(body),
        Known::LeaseList => to_raw::<k8s_openapi::List<coordination::Lease>>(body),
        Known::Event => to_raw::<events::Event>(body),
        Known::EventList => to_raw::<k8s_openapi::List<events::Event>>(body),
        Known::Status => to_raw::<meta::Status>(body),
        Known::DeleteOptions => to_raw::<meta::DeleteOptions>(body),
    }
    .map_err(|e| {
        format!("{kind} in version {api_version:?} could not be encoded as protobuf: {e}")
    })?;
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

/// A k8s-openapi type with its k8s-pb counterpart.
trait ToProto: Sized {
    type Pb: Message + Default;
    fn to_pb(&self) -> Self::Pb;
    fn from_pb(pb: Self::Pb) -> Result<Self, String>;
}

// Go's zero values, which Go's JSON leaves out for `omitempty` fields.

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn nonzero<N: Default + PartialEq>(n: Option<N>) -> Option<N> {
    n.filter(|n| *n != N::default())
}

fn nonempty_vec<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn nonempty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

fn list_to_pb<T: ToProto>(v: &Option<Vec<T>>) -> Vec<T::Pb> {
    v.iter().flatten().map(ToProto::to_pb).collect()
}

fn list_from_pb<T: ToProto>(v: Vec<T::Pb>) -> Result<Option<Vec<T>>, String> {
    Ok(nonempty_vec(
        v.into_iter()
            .map(T::from_pb)
            .collect::<Result<Vec<_>, _>>()?,
    ))
}

fn opt_to_pb<T: ToProto>(v: &Option<T>) -> Option<T::Pb> {
    v.as_ref().map(ToProto::to_pb)
}

fn opt_from_pb<T: ToProto>(v: Option<T::Pb>) -> Result<Option<T>, String> {
    v.map(T::from_pb).transpose()
}

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// Seconds and non-negative nanoseconds, as protobuf timestamps count.
fn split(t: Timestamp) -> (i64, i32) {
    let ns = t.as_nanosecond();
    (
        ns.div_euclid(NANOS_PER_SECOND) as i64,
        ns.rem_euclid(NANOS_PER_SECOND) as i32,
    )
}

fn join(seconds: i64, nanos: i32) -> Result<Timestamp, String> {
    Timestamp::from_nanosecond(i128::from(seconds) * NANOS_PER_SECOND + i128::from(nanos))
        .map_err(|e| format!("timestamp out of range: {e}"))
}

impl ToProto for meta::Time {
    type Pb = pb_meta::Time;
    // Whole seconds only, as Go writes a metav1.Time.
    fn to_pb(&self) -> pb_meta::Time {
        pb_meta::Time {
            seconds: Some(split(self.0).0),
            nanos: Some(0),
        }
    }
    fn from_pb(pb: pb_meta::Time) -> Result<Self, String> {
        Ok(meta::Time(join(pb.seconds.unwrap_or(0), 0)?))
    }
}

/// A `Time` field: an empty message is Go's zero time, which is no time.
fn time_from_pb(t: Option<pb_meta::Time>) -> Result<Option<meta::Time>, String> {
    match t {
        Some(t) if t.seconds.is_some() => meta::Time::from_pb(t).map(Some),
        _ => Ok(None),
    }
}

impl ToProto for meta::MicroTime {
    type Pb = pb_meta::MicroTime;
    fn to_pb(&self) -> pb_meta::MicroTime {
        let (seconds, nanos) = split(self.0);
        pb_meta::MicroTime {
            seconds: Some(seconds),
            nanos: Some(nanos),
        }
    }
    fn from_pb(pb: pb_meta::MicroTime) -> Result<Self, String> {
        Ok(meta::MicroTime(join(
            pb.seconds.unwrap_or(0),
            pb.nanos.unwrap_or(0),
        )?))
    }
}

fn micro_from_pb(t: Option<pb_meta::MicroTime>) -> Result<Option<meta::MicroTime>, String> {
    match t {
        Some(t) if t.seconds.is_some() => meta::MicroTime::from_pb(t).map(Some),
        _ => Ok(None),
    }
}

impl ToProto for meta::ObjectMeta {
    type Pb = pb_meta::ObjectMeta;
    fn to_pb(&self) -> pb_meta::ObjectMeta {
        pb_meta::ObjectMeta {
            name: self.name.clone(),
            generate_name: self.generate_name.clone(),
            namespace: self.namespace.clone(),
            self_link: self.self_link.clone(),
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
            generation: self.generation,
            creation_timestamp: opt_to_pb(&self.creation_timestamp),
            deletion_timestamp: opt_to_pb(&self.deletion_timestamp),
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            labels: self.labels.clone().unwrap_or_default(),
            annotations: self.annotations.clone().unwrap_or_default(),
            owner_references: list_to_pb(&self.owner_references),
            finalizers: self.finalizers.clone().unwrap_or_default(),
            managed_fields: list_to_pb(&self.managed_fields),
        }
    }
    fn from_pb(pb: pb_meta::ObjectMeta) -> Result<Self, String> {
        Ok(meta::ObjectMeta {
            name: nonempty(pb.name),
            generate_name: nonempty(pb.generate_name),
            namespace: nonempty(pb.namespace),
            self_link: nonempty(pb.self_link),
            uid: nonempty(pb.uid),
            resource_version: nonempty(pb.resource_version),
            generation: nonzero(pb.generation),
            creation_timestamp: time_from_pb(pb.creation_timestamp)?,
            deletion_timestamp: time_from_pb(pb.deletion_timestamp)?,
            deletion_grace_period_seconds: pb.deletion_grace_period_seconds,
            labels: nonempty_map(pb.labels),
            annotations: nonempty_map(pb.annotations),
            owner_references: list_from_pb(pb.owner_references)?,
            finalizers: nonempty_vec(pb.finalizers),
            managed_fields: list_from_pb(pb.managed_fields)?,
        })
    }
}

impl ToProto for meta::OwnerReference {
    type Pb = pb_meta::OwnerReference;
    fn to_pb(&self) -> pb_meta::OwnerReference {
        pb_meta::OwnerReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: Some(self.name.clone()),
            uid: Some(self.uid.clone()),
            controller: self.controller,
            block_owner_deletion: self.block_owner_deletion,
        }
    }
    fn from_pb(pb: pb_meta::OwnerReference) -> Result<Self, String> {
        Ok(meta::OwnerReference {
            api_version: pb.api_version.unwrap_or_default(),
            kind: pb.kind.unwrap_or_default(),
            name: pb.name.unwrap_or_default(),
            uid: pb.uid.unwrap_or_default(),
            controller: pb.controller,
            block_owner_deletion: pb.block_owner_deletion,
        })
    }
}

impl ToProto for meta::ManagedFieldsEntry {
    type Pb = pb_meta::ManagedFieldsEntry;
    fn to_pb(&self) -> pb_meta::ManagedFieldsEntry {
        pb_meta::ManagedFieldsEntry {
            manager: self.manager.clone(),
            operation: self.operation.clone(),
            api_version: self.api_version.clone(),
            time: opt_to_pb(&self.time),
            fields_type: self.fields_type.clone(),
            // FieldsV1 travels as its JSON text.
            fields_v1: self.fields_v1.as_ref().map(|f| pb_meta::FieldsV1 {
                raw: Some(serde_json::to_vec(&f.0).unwrap_or_default()),
            }),
            subresource: self.subresource.clone(),
        }
    }
    fn from_pb(pb: pb_meta::ManagedFieldsEntry) -> Result<Self, String> {
        let fields_v1 = match pb.fields_v1.and_then(|f| f.raw).filter(|r| !r.is_empty()) {
            Some(raw) => Some(meta::FieldsV1(
                serde_json::from_slice(&raw)
                    .map_err(|e| format!("managedFields: fieldsV1 is not JSON: {e}"))?,
            )),
            None => None,
        };
        Ok(meta::ManagedFieldsEntry {
            manager: nonempty(pb.manager),
            operation: nonempty(pb.operation),
            api_version: nonempty(pb.api_version),
            time: time_from_pb(pb.time)?,
            fields_type: nonempty(pb.fields_type),
            fields_v1,
            subresource: nonempty(pb.subresource),
        })
    }
}

impl ToProto for meta::ListMeta {
    type Pb = pb_meta::ListMeta;
    fn to_pb(&self) -> pb_meta::ListMeta {
        pb_meta::ListMeta {
            self_link: self.self_link.clone(),
            resource_version: self.resource_version.clone(),
            r#continue: self.continue_.clone(),
            remaining_item_count: self.remaining_item_count,
        }
    }
    fn from_pb(pb: pb_meta::ListMeta) -> Result<Self, String> {
        Ok(meta::ListMeta {
            self_link: nonempty(pb.self_link),
            resource_version: nonempty(pb.resource_version),
            continue_: nonempty(pb.r#continue),
            remaining_item_count: pb.remaining_item_count,
        })
    }
}

/// The list kinds: `metadata` and `items`.
macro_rules! list_to_proto {
    ($item:ty, $pb:ty) => {
        impl ToProto for k8s_openapi::List<$item> {
            type Pb = $pb;
            fn to_pb(&self) -> $pb {
                <$pb>::from_parts(
                    self.metadata.to_pb(),
                    self.items.iter().map(ToProto::to_pb).collect(),
                )
            }
            fn from_pb(pb: $pb) -> Result<Self, String> {
                let (metadata, items) = pb.into_parts();
                Ok(k8s_openapi::List {
                    metadata: meta::ListMeta::from_pb(metadata.unwrap_or_default())?,
                    items: items
                        .into_iter()
                        .map(<$item>::from_pb)
                        .collect::<Result<Vec<_>, _>>()?,
                })
            }
        }
    };
}

/// Access to the two fields every k8s-pb list type has.
trait PbList: Sized {
    type Item;
    fn from_parts(metadata: pb_meta::ListMeta, items: Vec<Self::Item>) -> Self;
    fn into_parts(self) -> (Option<pb_meta::ListMeta>, Vec<Self::Item>);
}

macro_rules! pb_list {
    ($list:ty, $item:ty) => {
        impl PbList for $list {
            type Item = $item;
            fn from_parts(metadata: pb_meta::ListMeta, items: Vec<$item>) -> Self {
                Self {
                    metadata: Some(metadata),
                    items,
                }
            }
            fn into_parts(self) -> (Option<pb_meta::ListMeta>, Vec<$item>) {
                (self.metadata, self.items)
            }
        }
    };
}

pb_list!(pb_core::NamespaceList, pb_core::Namespace);
pb_list!(pb_core::EventList, pb_core::Event);
pb_list!(pb_coordination::LeaseList, pb_coordination::Lease);
pb_list!(pb_events::EventList, pb_events::Event);
list_to_proto!(core::Namespace, pb_core::NamespaceList);
list_to_proto!(core::Event, pb_core::EventList);
list_to_proto!(coordination::Lease, pb_coordination::LeaseList);
list_to_proto!(events::Event, pb_events::EventList);

impl ToProto for core::Namespace {
    type Pb = pb_core::Namespace;
    fn to_pb(&self) -> pb_core::Namespace {
        pb_core::Namespace {
            metadata: Some(self.metadata.to_pb()),
            spec: opt_to_pb(&self.spec),
            status: opt_to_pb(&self.status),
        }
    }
    fn from_pb(pb: pb_core::Namespace) -> Result<Self, String> {
        Ok(core::Namespace {
            metadata: meta::ObjectMeta::from_pb(pb.metadata.unwrap_or_default())?,
            spec: opt_from_pb(pb.spec)?,
            status: opt_from_pb(pb.status)?,
        })
    }
}

impl ToProto for core::NamespaceSpec {
    type Pb = pb_core::NamespaceSpec;
    fn to_pb(&self) -> pb_core::NamespaceSpec {
        pb_core::NamespaceSpec {
            finalizers: self.finalizers.clone().unwrap_or_default(),
        }
    }
    fn from_pb(pb: pb_core::NamespaceSpec) -> Result<Self, String> {
        Ok(core::NamespaceSpec {
            finalizers: nonempty_vec(pb.finalizers),
        })
    }
}

impl ToProto for core::NamespaceStatus {
    type Pb = pb_core::NamespaceStatus;
    fn to_pb(&self) -> pb_core::NamespaceStatus {
        pb_core::NamespaceStatus {
            phase: self.phase.clone(),
            conditions: list_to_pb(&self.conditions),
        }
    }
    fn from_pb(pb: pb_core::NamespaceStatus) -> Result<Self, String> {
        Ok(core::NamespaceStatus {
            phase: nonempty(pb.phase),
            conditions: list_from_pb(pb.conditions)?,
        })
    }
}

impl ToProto for core::NamespaceCondition {
    type Pb = pb_core::NamespaceCondition;
    fn to_pb(&self) -> pb_core::NamespaceCondition {
        pb_core::NamespaceCondition {
            r#type: Some(self.type_.clone()),
            status: Some(self.status.clone()),
            last_transition_time: opt_to_pb(&self.last_transition_time),
            reason: self.reason.clone(),
            message: self.message.clone(),
        }
    }
    fn from_pb(pb: pb_core::NamespaceCondition) -> Result<Self, String> {
        Ok(core::NamespaceCondition {
            type_: pb.r#type.unwrap_or_default(),
            status: pb.status.unwrap_or_default(),
            last_transition_time: time_from_pb(pb.last_transition_time)?,
            reason: nonempty(pb.reason),
            message: nonempty(pb.message),
        })
    }
}

impl ToProto for core::ObjectReference {
    type Pb = pb_core::ObjectReference;
    fn to_pb(&self) -> pb_core::ObjectReference {
        pb_core::ObjectReference {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            api_version: self.api_version.clone(),
            resource_version: self.resource_version.clone(),
            field_path: self.field_path.clone(),
        }
    }
    fn from_pb(pb: pb_core::ObjectReference) -> Result<Self, String> {
        Ok(core::ObjectReference {
            kind: nonempty(pb.kind),
            namespace: nonempty(pb.namespace),
            name: nonempty(pb.name),
            uid: nonempty(pb.uid),
            api_version: nonempty(pb.api_version),
            resource_version: nonempty(pb.resource_version),
            field_path: nonempty(pb.field_path),
        })
    }
}

impl ToProto for core::EventSource {
    type Pb = pb_core::EventSource;
    fn to_pb(&self) -> pb_core::EventSource {
        pb_core::EventSource {
            component: self.component.clone(),
            host: self.host.clone(),
        }
    }
    fn from_pb(pb: pb_core::EventSource) -> Result<Self, String> {
        Ok(core::EventSource {
            component: nonempty(pb.component),
            host: nonempty(pb.host),
        })
    }
}

impl ToProto for core::EventSeries {
    type Pb = pb_core::EventSeries;
    fn to_pb(&self) -> pb_core::EventSeries {
        pb_core::EventSeries {
            count: self.count,
            last_observed_time: opt_to_pb(&self.last_observed_time),
        }
    }
    fn from_pb(pb: pb_core::EventSeries) -> Result<Self, String> {
        Ok(core::EventSeries {
            count: nonzero(pb.count),
            last_observed_time: micro_from_pb(pb.last_observed_time)?,
        })
    }
}

impl ToProto for core::Event {
    type Pb = pb_core::Event;
    fn to_pb(&self) -> pb_core::Event {
        pb_core::Event {
            metadata: Some(self.metadata.to_pb()),
            involved_object: Some(self.involved_object.to_pb()),
            reason: self.reason.clone(),
            message: self.message.clone(),
            source: opt_to_pb(&self.source),
            first_timestamp: opt_to_pb(&self.first_timestamp),
            last_timestamp: opt_to_pb(&self.last_timestamp),
            count: self.count,
            r#type: self.type_.clone(),
            event_time: opt_to_pb(&self.event_time),
            series: opt_to_pb(&self.series),
            action: self.action.clone(),
            related: opt_to_pb(&self.related),
            reporting_component: self.reporting_component.clone(),
            reporting_instance: self.reporting_instance.clone(),
        }
    }
    fn from_pb(pb: pb_core::Event) -> Result<Self, String> {
        Ok(core::Event {
            metadata: meta::ObjectMeta::from_pb(pb.metadata.unwrap_or_default())?,
            involved_object: core::ObjectReference::from_pb(
                pb.involved_object.unwrap_or_default(),
            )?,
            reason: nonempty(pb.reason),
            message: nonempty(pb.message),
            source: opt_from_pb(pb.source)?,
            first_timestamp: time_from_pb(pb.first_timestamp)?,
            last_timestamp: time_from_pb(pb.last_timestamp)?,
            count: nonzero(pb.count),
            type_: nonempty(pb.r#type),
            event_time: micro_from_pb(pb.event_time)?,
            series: opt_from_pb(pb.series)?,
            action: nonempty(pb.action),
            related: opt_from_pb(pb.related)?,
            // Not omitempty in Go: kept as sent, even empty.
            reporting_component: pb.reporting_component,
            reporting_instance: pb.reporting_instance,
        })
    }
}

impl ToProto for coordination::Lease {
    type Pb = pb_coordination::Lease;
    fn to_pb(&self) -> pb_coordination::Lease {
        pb_coordination::Lease {
            metadata: Some(self.metadata.to_pb()),
            spec: opt_to_pb(&self.spec),
        }
    }
    fn from_pb(pb: pb_coordination::Lease) -> Result<Self, String> {
        Ok(coordination::Lease {
            metadata: meta::ObjectMeta::from_pb(pb.metadata.unwrap_or_default())?,
            spec: opt_from_pb(pb.spec)?,
        })
    }
}

impl ToProto for coordination::LeaseSpec {
    type Pb = pb_coordination::LeaseSpec;
    // Every field is a pointer in Go: values pass as they are.
    fn to_pb(&self) -> pb_coordination::LeaseSpec {
        pb_coordination::LeaseSpec {
            holder_identity: self.holder_identity.clone(),
            lease_duration_seconds: self.lease_duration_seconds,
            acquire_time: opt_to_pb(&self.acquire_time),
            renew_time: opt_to_pb(&self.renew_time),
            lease_transitions: self.lease_transitions,
            strategy: self.strategy.clone(),
            preferred_holder: self.preferred_holder.clone(),
        }
    }
    fn from_pb(pb: pb_coordination::LeaseSpec) -> Result<Self, String> {
        Ok(coordination::LeaseSpec {
            holder_identity: pb.holder_identity,
            lease_duration_seconds: pb.lease_duration_seconds,
            acquire_time: micro_from_pb(pb.acquire_time)?,
            renew_time: micro_from_pb(pb.renew_time)?,
            lease_transitions: pb.lease_transitions,
            strategy: pb.strategy,
            preferred_holder: pb.preferred_holder,
        })
    }
}

impl ToProto for events::EventSeries {
    type Pb = pb_events::EventSeries;
    fn to_pb(&self) -> pb_events::EventSeries {
        pb_events::EventSeries {
            count: Some(self.count),
            last_observed_time: Some(self.last_observed_time.to_pb()),
        }
    }
    fn from_pb(pb: pb_events::EventSeries) -> Result<Self, String> {
        Ok(events::EventSeries {
            count: pb.count.unwrap_or_default(),
            last_observed_time: micro_from_pb(pb.last_observed_time)?
                .ok_or_else(|| "series.lastObservedTime is missing".to_string())?,
        })
    }
}

impl ToProto for events::Event {
    type Pb = pb_events::Event;
    fn to_pb(&self) -> pb_events::Event {
        pb_events::Event {
            metadata: Some(self.metadata.to_pb()),
            event_time: opt_to_pb(&self.event_time),
            series: opt_to_pb(&self.series),
            reporting_controller: self.reporting_controller.clone(),
            reporting_instance: self.reporting_instance.clone(),
            action: self.action.clone(),
            reason: self.reason.clone(),
            regarding: opt_to_pb(&self.regarding),
            related: opt_to_pb(&self.related),
            note: self.note.clone(),
            r#type: self.type_.clone(),
            deprecated_source: opt_to_pb(&self.deprecated_source),
            deprecated_first_timestamp: opt_to_pb(&self.deprecated_first_timestamp),
            deprecated_last_timestamp: opt_to_pb(&self.deprecated_last_timestamp),
            deprecated_count: self.deprecated_count,
        }
    }
    fn from_pb(pb: pb_events::Event) -> Result<Self, String> {
        Ok(events::Event {
            metadata: meta::ObjectMeta::from_pb(pb.metadata.unwrap_or_default())?,
            event_time: micro_from_pb(pb.event_time)?,
            series: opt_from_pb(pb.series)?,
            reporting_controller: nonempty(pb.reporting_controller),
            reporting_instance: nonempty(pb.reporting_instance),
            action: nonempty(pb.action),
            reason: nonempty(pb.reason),
            regarding: opt_from_pb(pb.regarding)?,
            related: opt_from_pb(pb.related)?,
            note: nonempty(pb.note),
            type_: nonempty(pb.r#type),
            deprecated_source: opt_from_pb(pb.deprecated_source)?,
            deprecated_first_timestamp: time_from_pb(pb.deprecated_first_timestamp)?,
            deprecated_last_timestamp: time_from_pb(pb.deprecated_last_timestamp)?,
            deprecated_count: nonzero(pb.deprecated_count),
        })
    }
}

impl ToProto for meta::Status {
    type Pb = pb_meta::Status;
    fn to_pb(&self) -> pb_meta::Status {
        pb_meta::Status {
            metadata: Some(self.metadata.to_pb()),
            status: self.status.clone(),
            message: self.message.clone(),
            reason: self.reason.clone(),
            details: opt_to_pb(&self.details),
            code: self.code,
        }
    }
    fn from_pb(pb: pb_meta::Status) -> Result<Self, String> {
        Ok(meta::Status {
            metadata: meta::ListMeta::from_pb(pb.metadata.unwrap_or_default())?,
            status: nonempty(pb.status),
            message: nonempty(pb.message),
            reason: nonempty(pb.reason),
            details: opt_from_pb(pb.details)?,
            code: nonzero(pb.code),
        })
    }
}

impl ToProto for meta::StatusDetails {
    type Pb = pb_meta::StatusDetails;
    fn to_pb(&self) -> pb_meta::StatusDetails {
        pb_meta::StatusDetails {
            name: self.name.clone(),
            group: self.group.clone(),
            kind: self.kind.clone(),
            uid: self.uid.clone(),
            causes: list_to_pb(&self.causes),
            retry_after_seconds: self.retry_after_seconds,
        }
    }
    fn from_pb(pb: pb_meta::StatusDetails) -> Result<Self, String> {
        Ok(meta::StatusDetails {
            name: nonempty(pb.name),
            group: nonempty(pb.group),
            kind: nonempty(pb.kind),
            uid: nonempty(pb.uid),
            causes: list_from_pb(pb.causes)?,
            retry_after_seconds: nonzero(pb.retry_after_seconds),
        })
    }
}

impl ToProto for meta::StatusCause {
    type Pb = pb_meta::StatusCause;
    fn to_pb(&self) -> pb_meta::StatusCause {
        pb_meta::StatusCause {
            reason: self.reason.clone(),
            message: self.message.clone(),
            field: self.field.clone(),
        }
    }
    fn from_pb(pb: pb_meta::StatusCause) -> Result<Self, String> {
        Ok(meta::StatusCause {
            reason: nonempty(pb.reason),
            message: nonempty(pb.message),
            field: nonempty(pb.field),
        })
    }
}

impl ToProto for meta::DeleteOptions {
    type Pb = pb_meta::DeleteOptions;
    fn to_pb(&self) -> pb_meta::DeleteOptions {
        pb_meta::DeleteOptions {
            grace_period_seconds: self.grace_period_seconds,
            preconditions: opt_to_pb(&self.preconditions),
            orphan_dependents: self.orphan_dependents,
            propagation_policy: self.propagation_policy.clone(),
            dry_run: self.dry_run.clone().unwrap_or_default(),
            ignore_store_read_error_with_cluster_breaking_potential: self
                .ignore_store_read_error_with_cluster_breaking_potential,
        }
    }
    fn from_pb(pb: pb_meta::DeleteOptions) -> Result<Self, String> {
        Ok(meta::DeleteOptions {
            // Set from the envelope by `decode`.
            api_version: None,
            kind: None,
            grace_period_seconds: pb.grace_period_seconds,
            preconditions: opt_from_pb(pb.preconditions)?,
            orphan_dependents: pb.orphan_dependents,
            propagation_policy: pb.propagation_policy,
            dry_run: nonempty_vec(pb.dry_run),
            ignore_store_read_error_with_cluster_breaking_potential: pb
                .ignore_store_read_error_with_cluster_breaking_potential,
        })
    }
}

impl ToProto for meta::Preconditions {
    type Pb = pb_meta::Preconditions;
    fn to_pb(&self) -> pb_meta::Preconditions {
        pb_meta::Preconditions {
            uid: self.uid.clone(),
            resource_version: self.resource_version.clone(),
        }
    }
    fn from_pb(pb: pb_meta::Preconditions) -> Result<Self, String> {
        Ok(meta::Preconditions {
            uid: pb.uid,
            resource_version: pb.resource_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(namespace: Option<&str>) -> Value {
        let mut m = json!({
            "name": "demo",
            "generateName": "demo-",
            "uid": "6f1c1a52-5c1e-4c3e-9a7e-0d6b5f0e8a11",
            "resourceVersion": "42",
            "creationTimestamp": "2024-05-06T07:08:09Z",
            "deletionTimestamp": "2024-05-06T08:00:00Z",
            "deletionGracePeriodSeconds": 0,
            "labels": {"app": "notebook", "team": "radiology"},
            "annotations": {"medforge.dev/note": "a \"quoted\" value", "empty": ""},
            "finalizers": ["medforge.dev/agent", "kubernetes"],
            "ownerReferences": [{
                "apiVersion": "medforge.dev/v1alpha1",
                "kind": "Session",
                "name": "s1",
                "uid": "0b1e2d3c-0000-4000-8000-000000000001",
                "controller": true,
                "blockOwnerDeletion": false
            }, {
                "apiVersion": "v1",
                "kind": "Namespace",
                "name": "team-a",
                "uid": "0b1e2d3c-0000-4000-8000-000000000002"
            }],
            "managedFields": [{
                "manager": "kubectl-create",
                "operation": "Update",
                "apiVersion": "v1",
                "time": "2024-05-06T07:08:09Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
            }, {
                "manager": "medforge-operator",
                "operation": "Apply",
                "apiVersion": "v1",
                "time": "2024-05-06T07:09:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:status": {"f:phase": {}}},
                "subresource": "status"
            }]
        });
        if let Some(ns) = namespace {
            m["namespace"] = json!(ns);
        }
        m
    }

    fn namespace() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": metadata(None),
            "spec": {"finalizers": ["kubernetes"]},
            "status": {
                "phase": "Terminating",
                "conditions": [{
                    "type": "NamespaceDeletionContentFailure",
                    "status": "False",
                    "lastTransitionTime": "2024-05-06T08:00:01Z",
                    "reason": "ContentDeleted",
                    "message": "All content successfully deleted"
                }]
            }
        })
    }

    fn lease() -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata(Some("medforge-system")),
            "spec": {
                "holderIdentity": "operator-7d9f",
                "leaseDurationSeconds": 15,
                "acquireTime": "2024-05-06T07:08:09.123456Z",
                "renewTime": "2024-05-06T07:08:24.000001Z",
                "leaseTransitions": 3,
                "strategy": "OldestEmulationVersion",
                "preferredHolder": "operator-8a1b"
            }
        })
    }

    fn event() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": metadata(Some("team-a")),
            "eventTime": "2024-05-06T07:08:09.654321Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-06T07:10:00.000100Z"},
            "reportingController": "medforge.dev/operator",
            "reportingInstance": "operator-7d9f",
            "action": "Scheduling",
            "reason": "Scheduled",
            "regarding": {
                "apiVersion": "medforge.dev/v1alpha1",
                "kind": "Session",
                "namespace": "team-a",
                "name": "s1",
                "uid": "0b1e2d3c-0000-4000-8000-000000000001",
                "resourceVersion": "41",
                "fieldPath": "spec.gpus"
            },
            "related": {"apiVersion": "v1", "kind": "Node", "name": "gpu-1"},
            "note": "placed on gpu-1",
            "type": "Normal",
            "deprecatedSource": {"component": "operator", "host": "gpu-1"},
            "deprecatedFirstTimestamp": "2024-05-06T07:08:09Z",
            "deprecatedLastTimestamp": "2024-05-06T07:10:00Z",
            "deprecatedCount": 4
        })
    }

    fn core_event() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": metadata(Some("team-a")),
            "involvedObject": {
                "apiVersion": "medforge.dev/v1alpha1",
                "kind": "Session",
                "namespace": "team-a",
                "name": "s1",
                "uid": "0b1e2d3c-0000-4000-8000-000000000001",
                "resourceVersion": "41",
                "fieldPath": "spec"
            },
            "reason": "Scheduled",
            "message": "placed on gpu-1",
            "source": {"component": "operator", "host": "gpu-1"},
            "firstTimestamp": "2024-05-06T07:08:09Z",
            "lastTimestamp": "2024-05-06T07:10:00Z",
            "count": 4,
            "type": "Warning",
            "eventTime": "2024-05-06T07:08:09.654321Z",
            "series": {"count": 4, "lastObservedTime": "2024-05-06T07:10:00.000100Z"},
            "action": "Scheduling",
            "related": {"apiVersion": "v1", "kind": "Node", "name": "gpu-1"},
            "reportingComponent": "medforge.dev/operator",
            "reportingInstance": "operator-7d9f"
        })
    }

    fn status() -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "message": "Lease.coordination.k8s.io \"l\" is invalid: spec.leaseDurationSeconds: Invalid value",
            "reason": "Invalid",
            "details": {
                "name": "l",
                "group": "coordination.k8s.io",
                "kind": "Lease",
                "uid": "0b1e2d3c-0000-4000-8000-000000000003",
                "causes": [
                    {"reason": "FieldValueInvalid", "message": "Invalid value", "field": "spec.leaseDurationSeconds"},
                    {"reason": "FieldValueRequired", "message": "Required value"}
                ],
                "retryAfterSeconds": 2
            },
            "code": 422
        })
    }

    fn list(api_version: &str, kind: &str, item: Value) -> Value {
        let mut second = item.clone();
        second["metadata"]["name"] = json!("second");
        second["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "resourceVersion": "977",
                "continue": "eyJydiI6OTc3fQ",
                "remainingItemCount": 12
            },
            "items": [item, second]
        })
    }

    fn round_trip(v: &Value) -> Value {
        let bytes = encode(v).unwrap_or_else(|e| panic!("encode {v}: {e}"));
        assert_eq!(&bytes[..4], b"k8s\0");
        decode(&bytes).unwrap_or_else(|e| panic!("decode {v}: {e}"))
    }

    #[test]
    fn every_kind_round_trips_with_every_field() {
        let mut delete_options = Vec::new();
        for api_version in ["v1", "meta.k8s.io/v1", "coordination.k8s.io/v1"] {
            delete_options.push(json!({
                "apiVersion": api_version,
                "kind": "DeleteOptions",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": "0b1e2d3c-0000-4000-8000-000000000001", "resourceVersion": "41"},
                "orphanDependents": false,
                "propagationPolicy": "Foreground",
                "dryRun": ["All"],
                "ignoreStoreReadErrorWithClusterBreakingPotential": false
            }));
        }
        let mut meta_status = status();
        meta_status["apiVersion"] = json!("meta.k8s.io/v1");
        let cases = [
            namespace(),
            list("v1", "NamespaceList", namespace()),
            lease(),
            list("coordination.k8s.io/v1", "LeaseList", lease()),
            event(),
            list("events.k8s.io/v1", "EventList", event()),
            core_event(),
            list("v1", "EventList", core_event()),
            status(),
            meta_status,
            json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success"}),
            // What the server sends for unknown paths: empty details stay.
            json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                   "message": "the server could not find the requested resource",
                   "reason": "NotFound", "details": {}, "code": 404}),
            // Lists without items or continuation.
            json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "7"}, "items": []}),
        ]
        .into_iter()
        .chain(delete_options);
        for v in cases {
            assert_eq!(round_trip(&v), v);
        }
    }

    #[test]
    fn sparse_objects_stay_sparse() {
        // Absent fields stay absent: no nulls, empty strings or maps appear.
        for v in [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "l", "namespace": "default"}, "spec": {}}),
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "l", "namespace": "default"},
                   "spec": {"holderIdentity": "", "leaseDurationSeconds": 0}}),
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"name": "e", "namespace": "default"},
                   "eventTime": "2024-05-06T07:08:09.000000Z"}),
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions"}),
            // A watch bookmark.
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                   "metadata": {"resourceVersion": "12"}}),
        ] {
            assert_eq!(round_trip(&v), v);
        }
        let bookmark = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"resourceVersion": "12", "creationTimestamp": null}});
        assert_eq!(
            round_trip(&bookmark),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"resourceVersion": "12"}})
        );
    }

    #[test]
    fn encoding_is_the_kubernetes_envelope() {
        let bytes = encode(&lease()).unwrap();
        assert_eq!(&bytes[..4], &MAGIC);
        let unknown = Unknown::decode(&bytes[4..]).unwrap();
        let type_meta = unknown.type_meta.unwrap();
        assert_eq!(
            type_meta.api_version.as_deref(),
            Some("coordination.k8s.io/v1")
        );
        assert_eq!(type_meta.kind.as_deref(), Some("Lease"));
        let lease = pb_coordination::Lease::decode(unknown.raw.unwrap().as_slice()).unwrap();
        let meta = lease.metadata.unwrap();
        assert_eq!(meta.name.as_deref(), Some("demo"));
        assert_eq!(meta.namespace.as_deref(), Some("medforge-system"));
        assert_eq!(meta.labels["team"], "radiology");
        assert_eq!(meta.deletion_grace_period_seconds, Some(0));
        // Time: whole seconds. 2024-05-06T07:08:09Z is 1714979289.
        assert_eq!(
            meta.creation_timestamp.unwrap().seconds,
            Some(1_714_979_289)
        );
        let fields = meta.managed_fields[0]
            .fields_v1
            .clone()
            .unwrap()
            .raw
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&fields).unwrap(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
        );
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("operator-7d9f"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        // MicroTime: seconds and nanoseconds.
        let acquired = spec.acquire_time.unwrap();
        assert_eq!(
            (acquired.seconds, acquired.nanos),
            (Some(1_714_979_289), Some(123_456_000))
        );
    }

    fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        }
        .encode(&mut out)
        .unwrap();
        out
    }

    /// ObjectMeta as Go writes it: every plain field present, even empty.
    fn go_meta(name: &str, namespace: &str) -> pb_meta::ObjectMeta {
        pb_meta::ObjectMeta {
            name: Some(name.into()),
            generate_name: Some(String::new()),
            namespace: Some(namespace.into()),
            self_link: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            // A zero time.Time is an empty message.
            creation_timestamp: Some(pb_meta::Time::default()),
            labels: [("app".to_string(), "notebook".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_what_a_go_client_sends() {
        // `kubectl create namespace demo`.
        let ns = pb_core::Namespace {
            metadata: Some(go_meta("demo", "")),
            spec: Some(pb_core::NamespaceSpec::default()),
            status: Some(pb_core::NamespaceStatus {
                phase: Some(String::new()),
                conditions: vec![],
            }),
        };
        let v = decode(&envelope("v1", "Namespace", ns.encode_to_vec())).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "demo", "labels": {"app": "notebook"}},
                   "spec": {}, "status": {}})
        );

        // A leader-election Lease: pointer fields keep their values, even zero.
        let lease = pb_coordination::Lease {
            metadata: Some(go_meta("operator", "medforge-system")),
            spec: Some(pb_coordination::LeaseSpec {
                holder_identity: Some("operator-7d9f".into()),
                lease_duration_seconds: Some(15),
                acquire_time: Some(pb_meta::MicroTime {
                    seconds: Some(1_714_979_289),
                    nanos: Some(500_000_000),
                }),
                renew_time: Some(pb_meta::MicroTime {
                    seconds: Some(1_714_979_289),
                    nanos: Some(500_000_000),
                }),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        let v = decode(&envelope(
            "coordination.k8s.io/v1",
            "Lease",
            lease.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "operator", "namespace": "medforge-system",
                                "labels": {"app": "notebook"}},
                   "spec": {"holderIdentity": "operator-7d9f", "leaseDurationSeconds": 15,
                            "acquireTime": "2024-05-06T07:08:09.500000Z",
                            "renewTime": "2024-05-06T07:08:09.500000Z",
                            "leaseTransitions": 0}})
        );

        // DeleteOptions as client-go sends them with a DELETE.
        let opts = pb_meta::DeleteOptions {
            preconditions: Some(pb_meta::Preconditions {
                uid: Some("u-1".into()),
                resource_version: None,
            }),
            propagation_policy: Some("Background".into()),
            dry_run: vec!["All".into()],
            ..Default::default()
        };
        let v = decode(&envelope(
            "meta.k8s.io/v1",
            "DeleteOptions",
            opts.encode_to_vec(),
        ))
        .unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
                   "preconditions": {"uid": "u-1"}, "propagationPolicy": "Background",
                   "dryRun": ["All"]})
        );

        // An object with no raw bytes at all is an empty object of its kind.
        let v = decode(&envelope("v1", "Namespace", vec![])).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}})
        );
    }

    #[test]
    fn a_watch_frame_is_a_length_and_a_bare_watch_event() {
        let frame = encode_watch_event("ADDED", &lease()).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        // No magic before the event: it is a bare WatchEvent.
        let event = pb_meta::WatchEvent::decode(&frame[4..]).unwrap();
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let raw = event.object.unwrap().raw.unwrap();
        assert_eq!(&raw[..4], &MAGIC);
        assert_eq!(decode(&raw).unwrap(), lease());

        let status =
            crate::status::ApiError::expired("too old resource version: 1 (5)").to_status();
        let frame = encode_watch_event("ERROR", &status).unwrap();
        let event = pb_meta::WatchEvent::decode(&frame[4..]).unwrap();
        assert_eq!(event.r#type.as_deref(), Some("ERROR"));
        assert_eq!(decode(&event.object.unwrap().raw.unwrap()).unwrap(), status);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        let err = |body: &[u8]| decode(body).unwrap_err();
        assert!(err(b"").contains("empty"), "{}", err(b""));
        let e = err(br#"{"apiVersion": "v1", "kind": "Namespace"}"#);
        assert!(e.contains("prefix k8s\\0"), "{e}");
        // Truncated: a valid encoding cut short.
        let good = encode(&lease()).unwrap();
        let e = err(&good[..good.len() - 7]);
        assert!(e.contains("could not be decoded"), "{e}");
        // Garbage after the magic.
        let e = err(b"k8s\0\xff\xff\xff\xff\xff\xff");
        assert!(e.contains("could not be decoded"), "{e}");
        // A kind this server does not encode.
        let e = err(&envelope("v1", "Pod", vec![]));
        assert!(
            e.contains("no kind \"Pod\" is registered for version \"v1\""),
            "{e}"
        );
        let e = err(&envelope("medforge.dev/v1alpha1", "Session", vec![]));
        assert!(e.contains("\"Session\""), "{e}");
        let e = err(&envelope("", "", vec![]));
        assert!(e.contains("names no kind"), "{e}");
        // Raw bytes that are not the named kind's message.
        let e = err(&envelope("v1", "Namespace", vec![0x0a, 0x05, 0x01]));
        assert!(
            e.contains("Namespace in version \"v1\" could not be decoded"),
            "{e}"
        );
        // managedFields whose fieldsV1 is not JSON.
        let mut meta = go_meta("x", "");
        meta.managed_fields = vec![pb_meta::ManagedFieldsEntry {
            fields_v1: Some(pb_meta::FieldsV1 {
                raw: Some(b"{not json".to_vec()),
            }),
            ..Default::default()
        }];
        let ns = pb_core::Namespace {
            metadata: Some(meta),
            ..Default::default()
        };
        let e = err(&envelope("v1", "Namespace", ns.encode_to_vec()));
        assert!(e.contains("fieldsV1 is not JSON"), "{e}");
        // A compressed envelope.
        let mut compressed = MAGIC.to_vec();
        Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
            }),
            raw: Some(vec![]),
            content_encoding: Some("gzip".into()),
            content_type: None,
        }
        .encode(&mut compressed)
        .unwrap();
        assert!(err(&compressed).contains("content encoding \"gzip\""));

        // Encoding: only the kinds above, only well-typed values.
        let e =
            encode(&json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session"})).unwrap_err();
        assert!(e.contains("no kind \"Session\""), "{e}");
        assert!(encode(&json!([1, 2])).unwrap_err().contains("JSON object"));
        let mut bad = lease();
        bad["spec"]["leaseDurationSeconds"] = json!("fifteen");
        let e = encode(&bad).unwrap_err();
        assert!(
            e.contains("Lease in version \"coordination.k8s.io/v1\" could not be encoded"),
            "{e}"
        );
    }
}
