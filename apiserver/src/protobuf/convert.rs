//! The conversion between a k8s-openapi type and its k8s-pb message, by Go's
//! rules for each field: fields Go declares as plain `omitempty` values are
//! left out when empty or zero, pointer fields keep what they carry, a zero
//! `Time` (an empty message) is no time. Each field names its rule (a
//! [`Field`] mode); [`to_proto!`] writes the two struct literals from the list
//! of fields, which stay exhaustive: a field left out is a compile error.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::jiff::Timestamp;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use prost::Message;

/// A k8s-openapi type with its k8s-pb counterpart.
pub trait ToProto: Sized {
    type Pb: Message + Default;
    fn to_pb(&self) -> Self::Pb;
    fn from_pb(pb: Self::Pb) -> Result<Self, String>;
}

/// How one field converts: `J` on the k8s-openapi side, `P` on the k8s-pb side.
pub trait Field<J, P> {
    fn to_pb(j: &J) -> P;
    fn from_pb(p: P) -> Result<J, String>;
}

/// A plain `omitempty` value in Go (string, integer): Go's zero value is absence.
pub struct OmitEmpty;

impl<T: Clone + Default + PartialEq> Field<Option<T>, Option<T>> for OmitEmpty {
    fn to_pb(j: &Option<T>) -> Option<T> {
        j.clone()
    }
    fn from_pb(p: Option<T>) -> Result<Option<T>, String> {
        Ok(p.filter(|v| *v != T::default()))
    }
}

/// A pointer in Go, or a value Go writes even when empty: passes as it is.
pub struct AsIs;

impl<T: Clone> Field<T, T> for AsIs {
    fn to_pb(j: &T) -> T {
        j.clone()
    }
    fn from_pb(p: T) -> Result<T, String> {
        Ok(p)
    }
}

/// A field k8s-openapi requires: always written, the zero value when absent.
pub struct Required;

impl<T: Clone + Default> Field<T, Option<T>> for Required {
    fn to_pb(j: &T) -> Option<T> {
        Some(j.clone())
    }
    fn from_pb(p: Option<T>) -> Result<T, String> {
        Ok(p.unwrap_or_default())
    }
}

/// An optional nested message.
pub struct Nested;

impl<T: ToProto> Field<Option<T>, Option<T::Pb>> for Nested {
    fn to_pb(j: &Option<T>) -> Option<T::Pb> {
        j.as_ref().map(ToProto::to_pb)
    }
    fn from_pb(p: Option<T::Pb>) -> Result<Option<T>, String> {
        p.map(T::from_pb).transpose()
    }
}

/// A nested message k8s-openapi requires (`metadata`): an absent one is empty.
pub struct Object;

impl<T: ToProto> Field<T, Option<T::Pb>> for Object {
    fn to_pb(j: &T) -> Option<T::Pb> {
        Some(j.to_pb())
    }
    fn from_pb(p: Option<T::Pb>) -> Result<T, String> {
        T::from_pb(p.unwrap_or_default())
    }
}

/// A list of messages; an empty one is absence.
pub struct Items;

impl<T: ToProto> Field<Option<Vec<T>>, Vec<T::Pb>> for Items {
    fn to_pb(j: &Option<Vec<T>>) -> Vec<T::Pb> {
        j.iter().flatten().map(ToProto::to_pb).collect()
    }
    fn from_pb(p: Vec<T::Pb>) -> Result<Option<Vec<T>>, String> {
        let items = p
            .into_iter()
            .map(T::from_pb)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((!items.is_empty()).then_some(items))
    }
}

/// A list of strings or a string map; an empty one is absence.
pub struct Values;

impl<C: Clone + Default + PartialEq> Field<Option<C>, C> for Values {
    fn to_pb(j: &Option<C>) -> C {
        j.clone().unwrap_or_default()
    }
    fn from_pb(p: C) -> Result<Option<C>, String> {
        Ok((p != C::default()).then_some(p))
    }
}

/// A `Time` or `MicroTime`: an empty message is Go's zero time, which is no time.
pub struct Time;

impl<T: ToProto> Field<Option<T>, Option<T::Pb>> for Time
where
    T::Pb: PbTime,
{
    fn to_pb(j: &Option<T>) -> Option<T::Pb> {
        Nested::to_pb(j)
    }
    fn from_pb(p: Option<T::Pb>) -> Result<Option<T>, String> {
        match p {
            Some(t) if t.seconds().is_some() => T::from_pb(t).map(Some),
            _ => Ok(None),
        }
    }
}

/// The protobuf time messages.
pub trait PbTime {
    fn seconds(&self) -> Option<i64>;
}

impl PbTime for pb_meta::Time {
    fn seconds(&self) -> Option<i64> {
        self.seconds
    }
}

impl PbTime for pb_meta::MicroTime {
    fn seconds(&self) -> Option<i64> {
        self.seconds
    }
}

/// `managedFields[].fieldsV1`, which travels as its JSON text.
pub struct FieldsJson;

impl Field<Option<meta::FieldsV1>, Option<pb_meta::FieldsV1>> for FieldsJson {
    fn to_pb(j: &Option<meta::FieldsV1>) -> Option<pb_meta::FieldsV1> {
        j.as_ref().map(|f| pb_meta::FieldsV1 {
            raw: Some(serde_json::to_vec(&f.0).unwrap_or_default()),
        })
    }
    fn from_pb(p: Option<pb_meta::FieldsV1>) -> Result<Option<meta::FieldsV1>, String> {
        match p.and_then(|f| f.raw).filter(|r| !r.is_empty()) {
            Some(raw) => Ok(Some(meta::FieldsV1(
                serde_json::from_slice(&raw)
                    .map_err(|e| format!("managedFields: fieldsV1 is not JSON: {e}"))?,
            ))),
            None => Ok(None),
        }
    }
}

/// `impl ToProto` from the fields grouped by their [`Field`] mode:
/// `Mode: field, field;` for fields named alike on both sides, `renamed {
/// json_name = pb_name: Mode }` for the others, `absent { name }` for
/// k8s-openapi fields the message does not carry (left at their default).
macro_rules! to_proto {
    (
        $($json:ident)::+ => $($pb:ident)::+ {
            $($mode:ident: $($field:ident),+;)*
        }
        $(renamed { $($jf:ident = $pf:ident: $rmode:ident),* $(,)? })?
        $(absent { $($af:ident),* $(,)? })?
    ) => {
        impl ToProto for $($json)::+ {
            type Pb = $($pb)::+;
            fn to_pb(&self) -> $($pb)::+ {
                $($pb)::+ {
                    $($($field: <$mode as Field<_, _>>::to_pb(&self.$field),)+)*
                    $($($pf: <$rmode as Field<_, _>>::to_pb(&self.$jf),)*)?
                }
            }
            fn from_pb(pb: $($pb)::+) -> Result<Self, String> {
                Ok($($json)::+ {
                    $($($field: <$mode as Field<_, _>>::from_pb(pb.$field)?,)+)*
                    $($($jf: <$rmode as Field<_, _>>::from_pb(pb.$pf)?,)*)?
                    $($($af: Default::default(),)*)?
                })
            }
        }
    };
}
pub(super) use to_proto;

// Go's `Time` carries whole seconds, `MicroTime` seconds and nanoseconds.

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

/// Access to the two fields every k8s-pb list type has.
pub trait PbList: Sized {
    type Item;
    fn from_parts(metadata: pb_meta::ListMeta, items: Vec<Self::Item>) -> Self;
    fn into_parts(self) -> (Option<pb_meta::ListMeta>, Vec<Self::Item>);
}

/// A list kind (`metadata` and `items`) from its item kind.
impl<T> ToProto for k8s_openapi::List<T>
where
    T: ToProto + k8s_openapi::ListableResource,
    T::Pb: ListItem,
{
    type Pb = <T::Pb as ListItem>::List;
    fn to_pb(&self) -> Self::Pb {
        <Self::Pb as PbList>::from_parts(
            self.metadata.to_pb(),
            self.items.iter().map(ToProto::to_pb).collect(),
        )
    }
    fn from_pb(pb: Self::Pb) -> Result<Self, String> {
        let (metadata, items) = pb.into_parts();
        Ok(k8s_openapi::List {
            metadata: meta::ListMeta::from_pb(metadata.unwrap_or_default())?,
            items: items
                .into_iter()
                .map(T::from_pb)
                .collect::<Result<Vec<_>, _>>()?,
        })
    }
}

/// The list message of an item message.
pub trait ListItem: Sized {
    type List: PbList<Item = Self> + Message + Default;
}

/// `PbList` and `ListItem` for a k8s-pb list message and its item.
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
        impl ListItem for $item {
            type List = $list;
        }
    };
}
pub(super) use pb_list;
