//! Server-side printing: `meta.k8s.io/v1 Table` responses built from a kind's
//! printer columns (what `kubectl get` shows), and `PartialObjectMetadata`.

use serde_json::{Value, json};

use crate::registry::ResourceType;

/// What a client asked to get back instead of plain objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// `as=Table`: rows of printer columns.
    Table(IncludeObject),
    /// `as=PartialObjectMetadata(List)`: metadata only.
    Metadata,
}

/// The `includeObject` parameter of a Table request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> IncludeObject {
        match s {
            Some("None") => IncludeObject::None,
            Some("Object") => IncludeObject::Object,
            _ => IncludeObject::Metadata,
        }
    }
}

/// Reads the `Accept` header: which transform the client prefers, if any.
pub fn negotiate(accept: Option<&str>, include: IncludeObject) -> Option<Transform> {
    let accept = accept?;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if !(p.starts_with("application/json") || p.starts_with("*/*")) {
            continue;
        }
        if p.contains("as=Table") {
            return Some(Transform::Table(include));
        }
        if p.contains("as=PartialObjectMetadata") {
            return Some(Transform::Metadata);
        }
        // The first acceptable plain media type wins.
        return None;
    }
    None
}

/// A duration as kubectl shows ages: `45s`, `3m12s`, `5h`, `2d3h`.
pub fn human_duration(secs: i64) -> String {
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        return two_units(minutes, 'm', secs % 60, 's');
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return two_units(hours, 'h', minutes % 60, 'm');
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return two_units(hours / 24, 'd', hours % 24, 'h');
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return two_units(hours / 24 / 365, 'y', (hours / 24) % 365, 'd');
    }
    format!("{}y", hours / 24 / 365)
}

/// `3m12s`: the major unit, then the minor one unless it is zero (`3m`).
fn two_units(major: i64, major_unit: char, minor: i64, minor_unit: char) -> String {
    if minor == 0 {
        format!("{major}{major_unit}")
    } else {
        format!("{major}{major_unit}{minor}{minor_unit}")
    }
}

fn age(value: &Value) -> Value {
    match value
        .as_str()
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => {
            let secs = jiff::Timestamp::now().as_second() - t.as_second();
            Value::String(human_duration(secs))
        }
        None => Value::String("<unknown>".into()),
    }
}

fn column_definitions(rt: &ResourceType) -> Vec<Value> {
    let mut cols = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0,
    })];
    for c in &rt.printer_columns {
        cols.push(json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        }));
    }
    cols
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn row(rt: &ResourceType, obj: &Value, include: IncludeObject) -> Value {
    let mut cells = vec![
        obj.pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    ];
    for c in &rt.printer_columns {
        let path = std::iter::once(&c.path)
            .chain(&c.fallbacks)
            .find(|p| !p.find(obj).is_empty())
            .unwrap_or(&c.path);
        let found = path.find(obj);
        let cell = match found.first() {
            None => Value::Null,
            Some(first) => match c.type_.as_str() {
                "date" => age(first),
                "string" => path
                    .find_text(obj)
                    .map(Value::String)
                    .unwrap_or(Value::Null),
                _ => (*first).clone(),
            },
        };
        cells.push(cell);
    }
    let mut r = json!({ "cells": cells });
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => r["object"] = partial_metadata(obj),
        IncludeObject::Object => r["object"] = obj.clone(),
    }
    r
}

/// A Table of `objects`; `headers` false leaves out the column definitions
/// (watch events after the first).
pub fn table(
    rt: &ResourceType,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
    headers: bool,
) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": objects.iter().map(|o| row(rt, o, include)).collect::<Vec<_>>(),
    });
    if headers {
        t["columnDefinitions"] = Value::Array(column_definitions(rt));
    } else {
        t["columnDefinitions"] = Value::Null;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(185), "3m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3600 * 5 + 60 * 7), "5h7m");
        assert_eq!(human_duration(3600 * 30), "30h");
        assert_eq!(human_duration(3600 * 24 * 3 + 3600), "3d1h");
    }

    #[test]
    fn negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(kubectl), IncludeObject::Metadata),
            Some(Transform::Table(IncludeObject::Metadata))
        );
        assert_eq!(
            negotiate(Some("application/json"), IncludeObject::Metadata),
            None
        );
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                IncludeObject::Metadata
            ),
            Some(Transform::Metadata)
        );
    }
}
