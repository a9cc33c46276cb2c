//! Integers as JSON Schema counts them: `4` and `4.0` alike (a generator of
//! documented-valid bodies may send either). For query strings, the decimal
//! text of one (`4`, `4.0`). Used with `#[serde(deserialize_with = …)]`.

use std::fmt;

use serde::de::{Deserialize, Deserializer, Error, Unexpected, Visitor};

/// An integer read from JSON (`text: false`) or from a query string (`text: true`).
struct Int<const TEXT: bool>(i128);

struct IntVisitor<const TEXT: bool>;

impl<'de, const TEXT: bool> Visitor<'de> for IntVisitor<TEXT> {
    type Value = Int<TEXT>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Int(i128::from(v)))
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Int(i128::from(v)))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
        if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e30 {
            Ok(Int(v as i128))
        } else {
            Err(E::invalid_type(Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
        if !TEXT {
            return Err(E::invalid_type(Unexpected::Str(v), &self));
        }
        parse_text(v)
            .map(Int)
            .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
    }
}

/// `4`, `+4`, `-4`, `4.0`: the decimal text of an integer.
pub fn parse_text(v: &str) -> Option<i128> {
    if let Ok(n) = v.parse::<i128>() {
        return Some(n);
    }
    let (whole, zeros) = v.split_once('.')?;
    (!zeros.is_empty() && zeros.bytes().all(|b| b == b'0'))
        .then(|| whole.parse::<i128>().ok())
        .flatten()
}

impl<'de, const TEXT: bool> Deserialize<'de> for Int<TEXT> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if TEXT {
            d.deserialize_str(IntVisitor::<TEXT>)
        } else {
            d.deserialize_any(IntVisitor::<TEXT>)
        }
    }
}

fn narrow<T: TryFrom<i128>, E: Error>(v: i128) -> Result<T, E> {
    T::try_from(v).map_err(|_| {
        E::invalid_value(
            Unexpected::Other("an integer out of range"),
            &"a smaller integer",
        )
    })
}

/// An optional `u32` in a JSON body (`null` is absent).
pub fn body_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Option::<Int<false>>::deserialize(d)?
        .map(|Int(v)| narrow(v))
        .transpose()
}

/// An optional `i64` in a JSON body (`null` is absent).
pub fn body_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Option::<Int<false>>::deserialize(d)?
        .map(|Int(v)| narrow(v))
        .transpose()
}

/// An `i64` or `null` in a JSON body, told apart from an absent field
/// (`Some(None)` for `null`; use with `#[serde(default)]`).
pub fn body_nullable_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
    body_i64(d).map(Some)
}

/// An optional `u32` in a query string.
pub fn query_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Int::<true>(v) = Int::deserialize(d)?;
    narrow(v).map(Some)
}
