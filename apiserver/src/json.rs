//! Reading fields of JSON objects that may be absent or of another type.

use serde_json::Value;

/// The string at `key`, or `default` when it is absent or not a string.
pub fn str_or(v: &Value, key: &str, default: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
        .to_string()
}

/// The elements of the array at `key`; none when it is absent or not an array.
pub fn items<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The strings of the array at the JSON pointer `ptr` (other elements are
/// skipped); empty when it is absent or not an array.
pub fn strings_at(v: &Value, ptr: &str) -> Vec<String> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
