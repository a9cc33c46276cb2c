//! Field paths and sets in the `FieldsV1` encoding: the fields a
//! configuration sets, reading and removing the value at a path, and the
//! merge of an applied configuration, lists by their `x-kubernetes-list-type`.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::registry::{ListType, ResourceType};

/// One path element in `FieldsV1` encoding: `f:name`, `k:{"type":"Ready"}`, `v:"x"`.
pub type Element = String;

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

    pub fn insert(&mut self, path: &[Element]) {
        match path.split_first() {
            None => self.member = true,
            Some((head, rest)) => self.children.entry(head.clone()).or_default().insert(rest),
        }
    }

    pub fn contains(&self, path: &[Element]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((head, rest)) => self.children.get(head).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn remove(&mut self, path: &[Element]) {
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

    pub fn union(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, c) in &other.children {
            self.children.entry(k.clone()).or_default().union(c);
        }
    }

    pub fn subtract(&mut self, other: &FieldSet) {
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

pub fn key_element(item: &Value, keys: &[String]) -> Element {
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
pub fn value_at<'a>(v: &'a Value, path: &[Element]) -> Option<&'a Value> {
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
pub fn remove_at(v: &mut Value, path: &[Element]) {
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
pub fn merge(rt: &ResourceType, live: &mut Value, applied: &Value, pattern: &str) {
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
