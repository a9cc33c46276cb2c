//! The conversions of the kinds this server encodes, and of the types they
//! are made of, field by field (see [`super::convert`] for the rules).

use k8s_openapi::api::authentication::v1 as authentication;
use k8s_openapi::api::authorization::v1 as authorization;
use k8s_openapi::api::coordination::v1 as coordination;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::api::authentication::v1 as pb_authentication;
use k8s_pb::api::authorization::v1 as pb_authorization;
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
        OmitEmpty: name, generate_name, namespace, self_link, uid, resource_version, generation;
        Time: creation_timestamp, deletion_timestamp;
        AsIs: deletion_grace_period_seconds;
        Values: labels, annotations, finalizers;
        Items: owner_references, managed_fields;
    }
}

to_proto! {
    meta::OwnerReference => pb_meta::OwnerReference {
        Required: api_version, kind, name, uid;
        AsIs: controller, block_owner_deletion;
    }
}

to_proto! {
    meta::ManagedFieldsEntry => pb_meta::ManagedFieldsEntry {
        OmitEmpty: manager, operation, api_version, fields_type, subresource;
        Time: time;
        FieldsJson: fields_v1;
    }
}

to_proto! {
    meta::ListMeta => pb_meta::ListMeta {
        OmitEmpty: self_link, resource_version;
        AsIs: remaining_item_count;
    }
    renamed { continue_ = r#continue: OmitEmpty }
}

to_proto! {
    meta::Status => pb_meta::Status {
        Object: metadata;
        OmitEmpty: status, message, reason, code;
        Nested: details;
    }
}

to_proto! {
    meta::StatusDetails => pb_meta::StatusDetails {
        OmitEmpty: name, group, kind, uid, retry_after_seconds;
        Items: causes;
    }
}

to_proto! {
    meta::StatusCause => pb_meta::StatusCause {
        OmitEmpty: reason, message, field;
    }
}

to_proto! {
    meta::DeleteOptions => pb_meta::DeleteOptions {
        AsIs: grace_period_seconds, orphan_dependents, propagation_policy,
            ignore_store_read_error_with_cluster_breaking_potential;
        Nested: preconditions;
        Values: dry_run;
    }
    // Set from the envelope by `decode`.
    absent { api_version, kind }
}

to_proto! {
    meta::Preconditions => pb_meta::Preconditions {
        AsIs: uid, resource_version;
    }
}

// core/v1

to_proto! {
    core::Namespace => pb_core::Namespace {
        Object: metadata;
        Nested: spec, status;
    }
}

to_proto! {
    core::NamespaceSpec => pb_core::NamespaceSpec {
        Values: finalizers;
    }
}

to_proto! {
    core::NamespaceStatus => pb_core::NamespaceStatus {
        OmitEmpty: phase;
        Items: conditions;
    }
}

to_proto! {
    core::NamespaceCondition => pb_core::NamespaceCondition {
        Required: status;
        Time: last_transition_time;
        OmitEmpty: reason, message;
    }
    renamed { type_ = r#type: Required }
}

to_proto! {
    core::ObjectReference => pb_core::ObjectReference {
        OmitEmpty: kind, namespace, name, uid, api_version, resource_version, field_path;
    }
}

to_proto! {
    core::EventSource => pb_core::EventSource {
        OmitEmpty: component, host;
    }
}

to_proto! {
    core::EventSeries => pb_core::EventSeries {
        OmitEmpty: count;
        Time: last_observed_time;
    }
}

to_proto! {
    core::Event => pb_core::Event {
        Object: metadata, involved_object;
        OmitEmpty: reason, message, count, action;
        Nested: source, series, related;
        Time: first_timestamp, last_timestamp, event_time;
        // Not omitempty in Go: kept as sent, even empty.
        AsIs: reporting_component, reporting_instance;
    }
    renamed { type_ = r#type: OmitEmpty }
}

// coordination.k8s.io/v1

to_proto! {
    coordination::Lease => pb_coordination::Lease {
        Object: metadata;
        Nested: spec;
    }
}

// Every field is a pointer in Go: values pass as they are.
to_proto! {
    coordination::LeaseSpec => pb_coordination::LeaseSpec {
        AsIs: holder_identity, lease_duration_seconds, lease_transitions, strategy,
            preferred_holder;
        Time: acquire_time, renew_time;
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
        Object: metadata;
        Time: event_time, deprecated_first_timestamp, deprecated_last_timestamp;
        Nested: series, regarding, related, deprecated_source;
        OmitEmpty: reporting_controller, reporting_instance, action, reason, note, deprecated_count;
    }
    renamed { type_ = r#type: OmitEmpty }
}

// authentication.k8s.io/v1: a TokenRequest (`kubectl create token` sends
// and reads it in protobuf).

to_proto! {
    authentication::TokenRequest => pb_authentication::TokenRequest {
        Object: metadata, spec;
        Nested: status;
    }
}

to_proto! {
    authentication::TokenRequestSpec => pb_authentication::TokenRequestSpec {
        AsIs: audiences, expiration_seconds;
        Nested: bound_object_ref;
    }
}

to_proto! {
    authentication::BoundObjectReference => pb_authentication::BoundObjectReference {
        OmitEmpty: kind, api_version, name;
    }
    renamed { uid = u_id: OmitEmpty }
}

to_proto! {
    authentication::TokenRequestStatus => pb_authentication::TokenRequestStatus {
        Required: token;
        Object: expiration_timestamp;
    }
}

// authorization.k8s.io/v1: the self-subject reviews (`kubectl auth can-i`
// sends and reads them in protobuf).

to_proto! {
    authorization::SelfSubjectAccessReview => pb_authorization::SelfSubjectAccessReview {
        Object: metadata, spec;
        Nested: status;
    }
}

to_proto! {
    authorization::SelfSubjectAccessReviewSpec => pb_authorization::SelfSubjectAccessReviewSpec {
        Nested: resource_attributes, non_resource_attributes;
    }
}

// By hand: the field and label selectors of an access review are not
// authorized on by this server, so they are not read (and never written).
impl ToProto for authorization::ResourceAttributes {
    type Pb = pb_authorization::ResourceAttributes;
    fn to_pb(&self) -> pb_authorization::ResourceAttributes {
        pb_authorization::ResourceAttributes {
            namespace: self.namespace.clone(),
            verb: self.verb.clone(),
            group: self.group.clone(),
            version: self.version.clone(),
            resource: self.resource.clone(),
            subresource: self.subresource.clone(),
            name: self.name.clone(),
            field_selector: None,
            label_selector: None,
        }
    }
    fn from_pb(pb: pb_authorization::ResourceAttributes) -> Result<Self, String> {
        Ok(authorization::ResourceAttributes {
            namespace: pb.namespace,
            verb: pb.verb,
            group: pb.group,
            version: pb.version,
            resource: pb.resource,
            subresource: pb.subresource,
            name: pb.name,
            field_selector: None,
            label_selector: None,
        })
    }
}

to_proto! {
    authorization::NonResourceAttributes => pb_authorization::NonResourceAttributes {
        AsIs: path, verb;
    }
}

to_proto! {
    authorization::SubjectAccessReviewStatus => pb_authorization::SubjectAccessReviewStatus {
        Required: allowed;
        AsIs: denied;
        OmitEmpty: reason, evaluation_error;
    }
}

to_proto! {
    authorization::SelfSubjectRulesReview => pb_authorization::SelfSubjectRulesReview {
        Object: metadata, spec;
        Nested: status;
    }
}

to_proto! {
    authorization::SelfSubjectRulesReviewSpec => pb_authorization::SelfSubjectRulesReviewSpec {
        AsIs: namespace;
    }
}

impl ToProto for authorization::SubjectRulesReviewStatus {
    type Pb = pb_authorization::SubjectRulesReviewStatus;
    fn to_pb(&self) -> pb_authorization::SubjectRulesReviewStatus {
        pb_authorization::SubjectRulesReviewStatus {
            resource_rules: self.resource_rules.iter().map(ToProto::to_pb).collect(),
            non_resource_rules: self.non_resource_rules.iter().map(ToProto::to_pb).collect(),
            incomplete: Some(self.incomplete),
            evaluation_error: self.evaluation_error.clone().filter(|e| !e.is_empty()),
        }
    }
    fn from_pb(pb: pb_authorization::SubjectRulesReviewStatus) -> Result<Self, String> {
        Ok(authorization::SubjectRulesReviewStatus {
            resource_rules: pb
                .resource_rules
                .into_iter()
                .map(ToProto::from_pb)
                .collect::<Result<_, _>>()?,
            non_resource_rules: pb
                .non_resource_rules
                .into_iter()
                .map(ToProto::from_pb)
                .collect::<Result<_, _>>()?,
            incomplete: pb.incomplete.unwrap_or_default(),
            evaluation_error: pb.evaluation_error,
        })
    }
}

to_proto! {
    authorization::ResourceRule => pb_authorization::ResourceRule {
        AsIs: verbs;
        Values: api_groups, resources, resource_names;
    }
}

to_proto! {
    authorization::NonResourceRule => pb_authorization::NonResourceRule {
        AsIs: verbs;
    }
    renamed { non_resource_urls = non_resource_ur_ls: Values }
}

// The list kinds.

pb_list!(pb_core::NamespaceList, pb_core::Namespace);
pb_list!(pb_core::EventList, pb_core::Event);
pb_list!(pb_coordination::LeaseList, pb_coordination::Lease);
pb_list!(pb_events::EventList, pb_events::Event);
