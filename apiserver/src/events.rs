//! The two views of Events. They are stored once, as `events.k8s.io/v1`
//! Events (what kube-rs's `Recorder` writes); the core `v1` Event view that
//! `kubectl describe` and `kubectl get events` read is a conversion of the
//! same objects, field for field as kube-apiserver converts between the two
//! versions:
//!
//! | `events.k8s.io/v1`        | core `v1`             |
//! |---------------------------|-----------------------|
//! | `regarding`               | `involvedObject`      |
//! | `note`                    | `message`             |
//! | `reportingController`     | `reportingComponent`  |
//! | `deprecatedSource`        | `source`              |
//! | `deprecatedFirstTimestamp`| `firstTimestamp`      |
//! | `deprecatedLastTimestamp` | `lastTimestamp`       |
//! | `deprecatedCount`         | `count`               |
//!
//! Every other field (`metadata`, `reason`, `type`, `action`, `related`,
//! `eventTime`, `series`, `reportingInstance`) keeps its name. The conversion
//! is lossless both ways for every field the two versions share.

use serde_json::{Map, Value};

/// `(events.k8s.io/v1 name, core v1 name)` of the renamed fields.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Fields with the same name in both versions.
const SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "action",
    "related",
    "eventTime",
    "series",
    "reportingInstance",
];

fn convert(v: &Value, api_version: &str, to_core: bool) -> Value {
    let Some(src) = v.as_object() else {
        return v.clone();
    };
    let mut out = Map::new();
    out.insert("kind".into(), Value::String("Event".into()));
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    for k in SHARED {
        if let Some(x) = src.get(*k) {
            out.insert((*k).into(), x.clone());
        }
    }
    for (new, core) in RENAMED {
        let (from, to) = if to_core { (new, core) } else { (core, new) };
        if let Some(x) = src.get(*from) {
            out.insert((*to).into(), x.clone());
        }
    }
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event as the core `v1` view shows it.
pub fn to_core(v: &Value) -> Value {
    convert(v, "v1", true)
}

/// A core `v1` Event as it is stored (`events.k8s.io/v1`).
pub fn from_core(v: &Value) -> Value {
    convert(v, "events.k8s.io/v1", false)
}

/// When an Event was last written: the newest of its creation, its series'
/// last observation, its last timestamps and its managed-fields times. Events
/// expire a fixed time after this, as kube-apiserver's per-write etcd lease does.
pub fn last_written(v: &Value) -> Option<jiff::Timestamp> {
    let mut times: Vec<&str> = Vec::new();
    for p in [
        "/metadata/creationTimestamp",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/eventTime",
    ] {
        if let Some(s) = v.pointer(p).and_then(Value::as_str) {
            times.push(s);
        }
    }
    if let Some(entries) = v
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    {
        times.extend(
            entries
                .iter()
                .filter_map(|e| e.get("time").and_then(Value::as_str)),
        );
    }
    times
        .into_iter()
        .filter_map(|s| s.parse::<jiff::Timestamp>().ok())
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "s1.abc", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "eventTime": "2026-01-01T00:00:00.000001Z",
            "series": {"count": 3, "lastObservedTime": "2026-01-01T00:05:00.000000Z"},
            "reportingController": "medforge-node-agent",
            "reportingInstance": "node-a",
            "action": "Start",
            "reason": "Started",
            "regarding": {"apiVersion": "medforge.dev/v1alpha1", "kind": "Session", "name": "s1",
                          "namespace": "ns", "uid": "su"},
            "related": {"kind": "GpuNode", "name": "node-a"},
            "note": "container started",
            "type": "Normal",
            "deprecatedSource": {"component": "agent", "host": "node-a"},
            "deprecatedFirstTimestamp": "2026-01-01T00:00:00Z",
            "deprecatedLastTimestamp": "2026-01-01T00:05:00Z",
            "deprecatedCount": 3
        })
    }

    #[test]
    fn core_view_renames_and_round_trips() {
        let core = to_core(&stored());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["kind"], "Session");
        assert_eq!(core["message"], "container started");
        assert_eq!(core["reportingComponent"], "medforge-node-agent");
        assert_eq!(core["source"]["host"], "node-a");
        assert_eq!(core["firstTimestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(core["lastTimestamp"], "2026-01-01T00:05:00Z");
        assert_eq!(core["count"], 3);
        assert_eq!(core["series"]["count"], 3);
        assert!(core.get("regarding").is_none() && core.get("note").is_none());
        assert_eq!(from_core(&core), stored(), "lossless both ways");
    }

    #[test]
    fn absent_fields_stay_absent() {
        let core = to_core(&json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "reason": "R"}));
        assert_eq!(
            core,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"}, "reason": "R"})
        );
    }

    #[test]
    fn last_written_is_the_newest_time() {
        let t = last_written(&stored()).unwrap();
        assert_eq!(t.to_string(), "2026-01-01T00:05:00Z");
        let mut v = stored();
        v["metadata"]["managedFields"] = json!([{"manager": "m", "time": "2026-01-02T00:00:00Z"}]);
        assert_eq!(
            last_written(&v).unwrap().to_string(),
            "2026-01-02T00:00:00Z"
        );
    }
}
