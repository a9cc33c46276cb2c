//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A pragmatic subset of Kubernetes' structured-merge-diff: field sets in the
//! `FieldsV1` encoding; lists merge by their `x-kubernetes-list-type` (atomic,
//! set, or map keyed by `x-kubernetes-list-map-keys`); an apply merges the
//! applied configuration into the live object, removes fields the manager
//! applied before and no longer applies (unless another manager owns them),
//! and reports conflicts with other managers that set a field to a different
//! value, unless forced. Non-apply writes take ownership of the fields they
//! change.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::registry::{ListType, ResourceType};
use crate::status::Cause;

/// One path element in `FieldsV1` encoding: `f:name`, `k:{"type":"Ready"}`, `v:"x"`.
type Element = String;

/// A set of field paths, as a tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<Element, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        if let Some(m) = v.as_object() {
            for (k, child) in m {
                if k == "." {
                    set.member = true;
                    continue;
                }
                let mut c = FieldSet::from_fields_v1(child);
                if child.as_object().is_some_and(Map::is_empty) {
                    c.member = true;
                }
                set.children.insert(k.clone(), c);
            }
        }
        set
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for (k, c) in &self.children {
            if c.is_empty() {
                continue;
            }
            let mut v = c.to_fields_v1();
            if c.member
                && !c.children.values().all(FieldSet::is_empty)
                && let Some(o) = v.as_object_mut()
            {
                o.insert(".".into(), json!({}));
            }
            m.insert(k.clone(), v);
        }
        Value::Object(m)
    }

    fn insert(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    fn contains(&self, path: &[Element]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.contains(rest)),
        }
    }

    fn remove(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.member = false,
            Some((head, rest)) => {
                if let Some(c) = self.children.get_mut(head) {
                    c.remove(rest);
                    if c.is_empty() {
                        self.children.remove(head);
                    }
                }
            }
        }
    }

    /// Every member path, parents before children.
    pub fn paths(&self) -> Vec<Vec<Element>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Element>, out: &mut Vec<Vec<Element>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (k, c) in &self.children {
            prefix.push(k.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    fn subtract(&mut self, other: &FieldSet) {
        for p in other.paths() {
            self.remove(&p);
        }
    }
}

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `status` when the kind has a status subresource.
    Main,
    /// The `/status` subresource: only `status`.
    Status,
}

fn list_type(rt: &ResourceType, pattern: &str) -> ListType {
    match pattern {
        "metadata.finalizers" => ListType::Set,
        "metadata.ownerReferences" => ListType::Map(vec!["uid".into()]),
        _ => rt.list_type(pattern),
    }
}

fn key_element(item: &Value, keys: &[String]) -> Element {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k).cloned().unwrap_or(Value::Null));
    }
    format!("k:{}", Value::Object(m))
}

/// The fields a configuration sets, as a field set.
pub fn fields_of(rt: &ResourceType, value: &Value, scope: Scope) -> FieldSet {
    let mut set = FieldSet::default();
    let Some(obj) = value.as_object() else {
        return set;
    };
    for (k, v) in obj {
        let included = match k.as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => scope == Scope::Main,
            "status" => scope == Scope::Status || !rt.status_subresource,
            _ => scope == Scope::Main,
        };
        if !included {
            continue;
        }
        let mut path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Some(m) = v.as_object() {
                for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                    if let Some(mv) = m.get(mk) {
                        path.push(format!("f:{mk}"));
                        walk(rt, mv, &format!("metadata.{mk}"), &mut path, &mut set);
                        path.pop();
                    }
                }
            }
        } else {
            walk(rt, v, k, &mut path, &mut set);
        }
    }
    set
}

fn walk(rt: &ResourceType, v: &Value, pattern: &str, path: &mut Vec<Element>, set: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                walk(rt, c, &format!("{pattern}.{k}"), path, set);
                path.pop();
            }
        }
        Value::Array(items) => match list_type(rt, pattern) {
            ListType::Atomic => set.insert(path),
            ListType::Set => {
                if items.is_empty() {
                    set.insert(path);
                }
                for item in items {
                    path.push(format!("v:{item}"));
                    set.insert(path);
                    path.pop();
                }
            }
            ListType::Map(keys) => {
                if items.is_empty() {
                    set.insert(path);
                }
                for item in items {
                    path.push(key_element(item, &keys));
                    set.insert(path);
                    if let Some(m) = item.as_object() {
                        for (k, c) in m {
                            path.push(format!("f:{k}"));
                            walk(rt, c, &format!("{pattern}[].{k}"), path, set);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
        },
        _ => set.insert(path),
    }
}

fn item_matches(item: &Value, element: &str) -> bool {
    if let Some(k) = element.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        keys.iter()
            .all(|(kk, kv)| item.get(kk).unwrap_or(&Value::Null) == kv)
    } else if let Some(v) = element.strip_prefix("v:") {
        serde_json::from_str::<Value>(v).is_ok_and(|x| &x == item)
    } else {
        false
    }
}

/// The value at a field path, if present.
fn value_at<'a>(v: &'a Value, path: &[Element]) -> Option<&'a Value> {
    let mut cur = v;
    for e in path {
        cur = if let Some(f) = e.strip_prefix("f:") {
            cur.get(f)?
        } else {
            cur.as_array()?.iter().find(|i| item_matches(i, e))?
        };
    }
    Some(cur)
}

/// Removes the value at a field path, if present.
fn remove_at(v: &mut Value, path: &[Element]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for e in parents {
        let next = if let Some(f) = e.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|i| item_matches(i, e)))
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(a) = cur.as_array_mut() {
        a.retain(|i| !item_matches(i, last));
    }
}

/// Merges an applied configuration into the live object, lists by their type.
fn merge(rt: &ResourceType, live: &mut Value, applied: &Value, pattern: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) => {
            for (k, av) in a {
                let child_pattern = if pattern.is_empty() {
                    k.clone()
                } else {
                    format!("{pattern}.{k}")
                };
                match l.get_mut(k) {
                    Some(lv) if !av.is_null() => merge(rt, lv, av, &child_pattern),
                    _ => {
                        l.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (live @ Value::Array(_), Value::Array(a)) => match list_type(rt, pattern) {
            ListType::Atomic => *live = Value::Array(a.clone()),
            ListType::Set => {
                if let Value::Array(l) = live {
                    for item in a {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
            }
            ListType::Map(keys) => {
                if let Value::Array(l) = live {
                    for item in a {
                        let e = key_element(item, &keys);
                        match l.iter_mut().find(|i| item_matches(i, &e)) {
                            Some(li) => merge(rt, li, item, &format!("{pattern}[]")),
                            None => l.push(item.clone()),
                        }
                    }
                }
            }
        },
        (live, applied) => *live = applied.clone(),
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl Manager {
    fn same(&self, name: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == name
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

/// The managers recorded on an object.
pub fn read_managers(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| Manager {
            manager: e
                .get("manager")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            operation: e
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or("Update")
                .to_string(),
            api_version: e
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: e
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            subresource: e
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: e
                .get("fieldsV1")
                .map(FieldSet::from_fields_v1)
                .unwrap_or_default(),
        })
        .collect()
}

/// Writes managers back into `metadata.managedFields` (dropping empty ones).
pub fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": m.fields.to_fields_v1(),
            });
            if let Some(s) = &m.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

fn subresource_name(scope: Scope) -> Option<&'static str> {
    match scope {
        Scope::Main => None,
        Scope::Status => Some("status"),
    }
}

/// Records a non-apply write by `manager`: it takes the fields it changed;
/// fields that disappeared leave every manager.
pub fn record_update(
    rt: &ResourceType,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    now: &str,
) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let new_fields = fields_of(rt, new, scope);
    let mut changed = FieldSet::default();
    for p in new_fields.paths() {
        let before = old.and_then(|o| value_at(o, &p));
        if before != value_at(new, &p) {
            changed.insert(&p);
        }
    }
    let mut removed = FieldSet::default();
    if let Some(o) = old {
        for p in fields_of(rt, o, scope).paths() {
            if value_at(new, &p).is_none() {
                removed.insert(&p);
            }
        }
    }
    for m in managers.iter_mut() {
        m.fields.subtract(&removed);
        if !m.same(manager, "Update", subresource_name(scope)) {
            m.fields.subtract(&changed);
        }
    }
    if !changed.is_empty() {
        match managers
            .iter_mut()
            .find(|m| m.same(manager, "Update", subresource_name(scope)))
        {
            Some(m) => {
                m.fields.union(&changed);
                m.time = now.to_string();
            }
            None => managers.push(Manager {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: rt.api_version(),
                time: now.to_string(),
                subresource: subresource_name(scope).map(str::to_string),
                fields: changed,
            }),
        }
    }
    write_managers(new, &managers);
}

fn display_path(path: &[Element]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

/// Server-side apply: the live object with `applied` merged in, or the
/// conflicts that stop it. `live` is `None` when the object does not exist.
pub fn apply(
    rt: &ResourceType,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    now: &str,
) -> Result<Value, Vec<Cause>> {
    let mut managers = live.map(read_managers).unwrap_or_default();
    let new_set = fields_of(rt, applied, scope);
    let sub = subresource_name(scope);
    if let Some(live) = live {
        let mut conflicts = Vec::new();
        for m in managers.iter_mut() {
            if m.manager == manager {
                continue;
            }
            let mut lost = Vec::new();
            for p in new_set.paths() {
                if m.fields.contains(&p) && value_at(live, &p) != value_at(applied, &p) {
                    lost.push(p);
                }
            }
            if force {
                for p in &lost {
                    m.fields.remove(p);
                }
            } else {
                for p in lost {
                    conflicts.push(Cause::new(
                        "FieldManagerConflict",
                        display_path(&p),
                        format!(
                            "conflict with \"{}\"{}: {}",
                            m.manager,
                            if m.operation == "Apply" {
                                String::new()
                            } else {
                                format!(" using {}", m.api_version)
                            },
                            display_path(&p)
                        ),
                    ));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
    }
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let mut applied_body = applied.clone();
    if let Some(o) = applied_body.as_object_mut() {
        if scope == Scope::Status {
            o.retain(|k, _| k == "status");
        } else if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            // Only these metadata fields are the applier's to set.
            m.retain(|k, _| {
                matches!(
                    k.as_str(),
                    "labels"
                        | "annotations"
                        | "finalizers"
                        | "ownerReferences"
                        | "name"
                        | "namespace"
                        | "generateName"
                )
            });
        }
    }
    merge(rt, &mut result, &applied_body, "");
    let previous = managers
        .iter()
        .find(|m| m.same(manager, "Apply", sub))
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let mut dropped = previous.clone();
    dropped.subtract(&new_set);
    for p in dropped.paths() {
        let owned_elsewhere = managers
            .iter()
            .any(|m| !m.same(manager, "Apply", sub) && m.fields.contains(&p));
        if !owned_elsewhere {
            remove_at(&mut result, &p);
        }
    }
    match managers.iter_mut().find(|m| m.same(manager, "Apply", sub)) {
        Some(m) => {
            m.fields = new_set;
            m.time = now.to_string();
        }
        None => managers.push(Manager {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: rt.api_version(),
            time: now.to_string(),
            subresource: sub.map(str::to_string),
            fields: new_set,
        }),
    }
    write_managers(&mut result, &managers);
    Ok(result)
}

/// The manager name kube-apiserver derives from a User-Agent when a request
/// names none: the part before the first `/`.
pub fn manager_from_user_agent(ua: Option<&str>) -> String {
    let ua = ua.unwrap_or("");
    let name: String = ua
        .split('/')
        .next()
        .unwrap_or("")
        .chars()
        .take(128)
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn rt() -> Registry {
        Registry::new(&medforge_crds::all_crds()).unwrap()
    }

    #[test]
    fn fields_v1_round_trip() {
        let reg = rt();
        let s = reg.lookup("medforge.dev", "v1alpha1", "sessions").unwrap();
        let v = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a", "labels": {"x": "1"}, "finalizers": ["a/b"]},
            "spec": {"owner": "u", "gpus": 1}});
        let set = fields_of(s, &v, Scope::Main);
        let enc = set.to_fields_v1();
        assert_eq!(
            enc,
            json!({"f:metadata": {"f:labels": {"f:x": {}}, "f:finalizers": {"v:\"a/b\"": {}}},
            "f:spec": {"f:gpus": {}, "f:owner": {}}})
        );
        assert_eq!(FieldSet::from_fields_v1(&enc), set);
    }

    #[test]
    fn apply_conflicts_merges_and_removes() {
        let reg = rt();
        let s = reg.lookup("medforge.dev", "v1alpha1", "sessions").unwrap();
        let base = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"owner": "u", "pack": "p", "gpus": 1}});
        let created = apply(s, None, &base, "one", false, Scope::Main, "t").unwrap();
        // Another applier changing gpus conflicts, unless forced.
        let other = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"gpus": 2}});
        let err = apply(s, Some(&created), &other, "two", false, Scope::Main, "t").unwrap_err();
        assert_eq!(err[0].field, ".spec.gpus");
        let forced = apply(s, Some(&created), &other, "two", true, Scope::Main, "t").unwrap();
        assert_eq!(forced["spec"]["gpus"], json!(2));
        // "one" stops applying pack: it goes; owner stays with "one".
        let less = json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session",
            "metadata": {"name": "a"}, "spec": {"owner": "u"}});
        let after = apply(s, Some(&forced), &less, "one", false, Scope::Main, "t").unwrap();
        assert_eq!(after["spec"].get("pack"), None);
        assert_eq!(after["spec"]["gpus"], json!(2));
        assert_eq!(read_managers(&after).len(), 2);
    }
}
