//! Reading and editing an object's `metadata` (and the few other places
//! kube-apiserver's object semantics look at) on its JSON form.

use serde_json::{Map, Value, json};

use crate::json::strings_at;
use crate::registry::{Builtin, ResourceType};
use crate::status::{ApiError, ApiResult};

/// The current time as Kubernetes writes timestamps (`2024-01-02T03:04:05Z`).
pub fn now() -> String {
    let t = jiff::Timestamp::now();
    jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// The object's `metadata`, created empty when absent or `null`.
pub fn meta_mut(v: &mut Value) -> ApiResult<&mut Map<String, Value>> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| ApiError::bad_request("the object is not a JSON object"))?;
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be an object"))
}

/// A string field of `metadata`.
pub fn meta_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get("metadata")?.get(key)?.as_str()
}

/// `metadata.finalizers`.
pub fn finalizers(v: &Value) -> Vec<String> {
    strings_at(v, "/metadata/finalizers")
}

/// Whether deleting the object must wait: metadata finalizers, or a
/// namespace's `spec.finalizers`.
pub fn pending_finalizers(rt: &ResourceType, v: &Value) -> bool {
    !finalizers(v).is_empty()
        || (rt.builtin == Some(Builtin::Namespace)
            && v.pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()))
}

/// Sets `metadata.name` when the object has metadata.
pub fn set_name(v: &mut Value, name: &str) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("name".into(), json!(name));
    }
}

/// A name for `generateName`: the prefix (cut to 58 characters) and five
/// random characters, as kube-apiserver makes them.
pub fn generated_name(prefix: &str) -> String {
    format!("{}{}", truncate(prefix, 58), random_suffix())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_keep_58_characters_of_the_prefix() {
        let long = "é".repeat(70);
        let name = generated_name(&long);
        assert_eq!(name.chars().count(), 63);
        assert!(name.starts_with(&"é".repeat(58)));
        let short = generated_name("demo-");
        assert_eq!(short.len(), 10);
        assert!(short.starts_with("demo-"));
        assert!(
            short[5..]
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }

    #[test]
    fn meta_mut_replaces_null_and_refuses_non_objects() {
        let mut v = json!({"metadata": null});
        meta_mut(&mut v).unwrap().insert("name".into(), json!("a"));
        assert_eq!(v, json!({"metadata": {"name": "a"}}));
        assert_eq!(meta_mut(&mut json!([1])).unwrap_err().code, 400);
        assert_eq!(meta_mut(&mut json!({"metadata": 3})).unwrap_err().code, 400);
    }
}
