use k8s_pb::api::coordination::v1 as pb_coordination;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use prost::Message;
use serde_json::{Value, json};

use super::{MAGIC, decode, encode, encode_watch_event};

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

/// The reference both event versions make to the Session they are about.
fn session_ref(field_path: &str) -> Value {
    json!({
        "apiVersion": "medforge.dev/v1alpha1",
        "kind": "Session",
        "namespace": "team-a",
        "name": "s1",
        "uid": "0b1e2d3c-0000-4000-8000-000000000001",
        "resourceVersion": "41",
        "fieldPath": field_path
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
        "regarding": session_ref("spec.gpus"),
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
        "involvedObject": session_ref("spec"),
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
    super::envelope(api_version, kind, raw).unwrap()
}

/// What `decode` makes of `raw` sent in an envelope as `api_version`, `kind`.
fn decoded(api_version: &str, kind: &str, raw: Vec<u8>) -> Value {
    decode(&envelope(api_version, kind, raw)).unwrap()
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
    assert_eq!(
        decoded("v1", "Namespace", ns.encode_to_vec()),
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
    assert_eq!(
        decoded("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
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
    assert_eq!(
        decoded("meta.k8s.io/v1", "DeleteOptions", opts.encode_to_vec()),
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "DeleteOptions",
                   "preconditions": {"uid": "u-1"}, "propagationPolicy": "Background",
                   "dryRun": ["All"]})
    );

    // An object with no raw bytes at all is an empty object of its kind.
    assert_eq!(
        decoded("v1", "Namespace", vec![]),
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

    let status = crate::status::ApiError::expired("too old resource version: 1 (5)").to_status();
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
    let e = encode(&json!({"apiVersion": "medforge.dev/v1alpha1", "kind": "Session"})).unwrap_err();
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
