//! The conversions of the kinds this server encodes, and of the types they
//! are made of, field by field (see [`super::convert`] for the rules).

use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::api::coordination::v1 as pb_coordination;
use k8s_pb::api::core::v1 as pb_core;
use k8s_pb::api::events::v1 as pb_events;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pb_meta;

use super::convert::{
    AsIs, Field, FieldsJson, Items, ListItem, Nested, Object, OmitEmpty, PbList, Required, Time,
    ToProto, Values, pb_list, to_proto,
};

// meta/v1

to_proto! {
    meta::ObjectMeta => pb_meta::ObjectMeta {
        name: OmitEmpty,
        generate_name: OmitEmpty,
        namespace: OmitEmpty,
        self_link: OmitEmpty,
        uid: OmitEmpty,
        resource_version: OmitEmpty,
        generation: OmitEmpty,
        creation_timestamp: Time,
        deletion_timestamp: Time,
        deletion_grace_period_seconds: AsIs,
        labels: Values,
        annotations: Values,
        owner_references: Items,
        finalizers: Values,
        managed_fields: Items,
    }
}

to_proto! {
    meta::OwnerReference => pb_meta::OwnerReference {
        api_version: Required,
        kind: Required,
        name: Required,
        uid: Required,
        controller: AsIs,
        block_owner_deletion: AsIs,
    }
}

to_proto! {
    meta::ManagedFieldsEntry => pb_meta::ManagedFieldsEntry {
        manager: OmitEmpty,
        operation: OmitEmpty,
        api_version: OmitEmpty,
        time: Time,
        fields_type: OmitEmpty,
        fields_v1: FieldsJson,
        subresource: OmitEmpty,
    }
}

to_proto! {
    meta::ListMeta => pb_meta::ListMeta {
        self_link: OmitEmpty,
        resource_version: OmitEmpty,
        remaining_item_count: AsIs,
    }
    renamed { continue_ = r#continue: OmitEmpty }
}

to_proto! {
    meta::Status => pb_meta::Status {
        metadata: Object,
        status: OmitEmpty,
        message: OmitEmpty,
        reason: OmitEmpty,
        details: Nested,
        code: OmitEmpty,
    }
}

to_proto! {
    meta::StatusDetails => pb_meta::StatusDetails {
        name: OmitEmpty,
        group: OmitEmpty,
        kind: OmitEmpty,
        uid: OmitEmpty,
        causes: Items,
        retry_after_seconds: OmitEmpty,
    }
}

to_proto! {
    meta::StatusCause => pb_meta::StatusCause {
        reason: OmitEmpty,
        message: OmitEmpty,
        field: OmitEmpty,
    }
}

to_proto! {
    meta::DeleteOptions => pb_meta::DeleteOptions {
        grace_period_seconds: AsIs,
        preconditions: Nested,
        orphan_dependents: AsIs,
        propagation_policy: AsIs,
        dry_run: Values,
        ignore_store_read_error_with_cluster_breaking_potential: AsIs,
    }
    // Set from the envelope by `decode`.
    absent { api_version, kind }
}

to_proto! {
    meta::Preconditions => pb_meta::Preconditions {
        uid: AsIs,
        resource_version: AsIs,
    }
}

// core/v1

to_proto! {
    core::Namespace => pb_core::Namespace {
        metadata: Object,
        spec: Nested,
        status: Nested,
    }
}

to_proto! {
    core::NamespaceSpec => pb_core::NamespaceSpec {
        finalizers: Values,
    }
}

to_proto! {
    core::NamespaceStatus => pb_core::NamespaceStatus {
        phase: OmitEmpty,
        conditions: Items,
    }
}

to_proto! {
    core::NamespaceCondition => pb_core::NamespaceCondition {
        status: Required,
        last_transition_time: Time,
        reason: OmitEmpty,
        message: OmitEmpty,
    }
    renamed { type_ = r#type: Required }
}

to_proto! {
    core::ObjectReference => pb_core::ObjectReference {
        kind: OmitEmpty,
        namespace: OmitEmpty,
        name: OmitEmpty,
        uid: OmitEmpty,
        api_version: OmitEmpty,
        resource_version: OmitEmpty,
        field_path: OmitEmpty,
    }
}

to_proto! {
    core::EventSource => pb_core::EventSource {
        component: OmitEmpty,
        host: OmitEmpty,
    }
}

to_proto! {
    core::EventSeries => pb_core::EventSeries {
        count: OmitEmpty,
        last_observed_time: Time,
    }
}

to_proto! {
    core::Event => pb_core::Event {
        metadata: Object,
        involved_object: Object,
        reason: OmitEmpty,
        message: OmitEmpty,
        source: Nested,
        first_timestamp: Time,
        last_timestamp: Time,
        count: OmitEmpty,
        event_time: Time,
        series: Nested,
        action: OmitEmpty,
        related: Nested,
        // Not omitempty in Go: kept as sent, even empty.
        reporting_component: AsIs,
        reporting_instance: AsIs,
    }
    renamed { type_ = r#type: OmitEmpty }
}

// coordination.k8s.io/v1

to_proto! {
    coordination::Lease => pb_coordination::Lease {
        metadata: Object,
        spec: Nested,
    }
}

// Every field is a pointer in Go: values pass as they are.
to_proto! {
    coordination::LeaseSpec => pb_coordination::LeaseSpec {
        holder_identity: AsIs,
        lease_duration_seconds: AsIs,
        acquire_time: Time,
        renew_time: Time,
        lease_transitions: AsIs,
        strategy: AsIs,
        preferred_holder: AsIs,
    }
}

// events.k8s.io/v1

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
            last_observed_time: <Time as Field<Option<meta::MicroTime>, _>>::from_pb(
                pb.last_observed_time,
            )?
            .ok_or_else(|| "series.lastObservedTime is missing".to_string())?,
        })
    }
}

to_proto! {
    events::Event => pb_events::Event {
        metadata: Object,
        event_time: Time,
        series: Nested,
        reporting_controller: OmitEmpty,
        reporting_instance: OmitEmpty,
        action: OmitEmpty,
        reason: OmitEmpty,
        regarding: Nested,
        related: Nested,
        note: OmitEmpty,
        deprecated_source: Nested,
        deprecated_first_timestamp: Time,
        deprecated_last_timestamp: Time,
        deprecated_count: OmitEmpty,
    }
    renamed { type_ = r#type: OmitEmpty }
}

// The list kinds.

pb_list!(pb_core::NamespaceList, pb_core::Namespace);
pb_list!(pb_core::EventList, pb_core::Event);
pb_list!(pb_coordination::LeaseList, pb_coordination::Lease);
pb_list!(pb_events::EventList, pb_events::Event);
