//! OpenAPI v3 documents, one per group version, as kube-apiserver publishes
//! them under `/openapi/v3`: component schemas carrying
//! `x-kubernetes-group-version-kind` (what `kubectl explain` reads) and paths
//! whose PATCH operations list the patch media types and the `fieldValidation`
//! parameter (what `kubectl apply` checks before it relies on server-side
//! field validation).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::registry::{Builtin, Registry, ResourceType};

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The component name kube-apiserver gives a kind: `dev.medforge.v1alpha1.Session`.
pub fn component_name(rt: &ResourceType) -> String {
    match rt.builtin {
        Some(Builtin::Namespace) => "io.k8s.api.core.v1.Namespace".into(),
        Some(Builtin::Event) => "io.k8s.api.events.v1.Event".into(),
        Some(Builtin::CoreEvent) => "io.k8s.api.core.v1.Event".into(),
        Some(Builtin::Lease) => "io.k8s.api.coordination.v1.Lease".into(),
        Some(Builtin::ServiceAccount) => "io.k8s.api.core.v1.ServiceAccount".into(),
        Some(Builtin::Role) => "io.k8s.api.rbac.v1.Role".into(),
        Some(Builtin::ClusterRole) => "io.k8s.api.rbac.v1.ClusterRole".into(),
        Some(Builtin::RoleBinding) => "io.k8s.api.rbac.v1.RoleBinding".into(),
        Some(Builtin::ClusterRoleBinding) => "io.k8s.api.rbac.v1.ClusterRoleBinding".into(),
        Some(Builtin::SelfSubjectAccessReview) => {
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview".into()
        }
        Some(Builtin::SelfSubjectRulesReview) => {
            "io.k8s.api.authorization.v1.SelfSubjectRulesReview".into()
        }
        None => {
            let reversed: Vec<&str> = rt.group.split('.').rev().collect();
            format!("{}.{}.{}", reversed.join("."), rt.version, rt.kind)
        }
    }
}

fn gvk(rt: &ResourceType, kind: &str) -> Value {
    json!([{ "group": rt.group, "version": rt.version, "kind": kind }])
}

/// Definitions of the built-in kinds and the metadata types, from k8s-openapi.
fn builtin_definitions() -> Map<String, Value> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace};
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        DeleteOptions, ListMeta, ObjectMeta, Status,
    };
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    generator.subschema_for::<Namespace>();
    generator.subschema_for::<Event>();
    generator.subschema_for::<CoreEvent>();
    generator.subschema_for::<Lease>();
    generator.subschema_for::<k8s_openapi::api::core::v1::ServiceAccount>();
    generator.subschema_for::<k8s_openapi::api::rbac::v1::Role>();
    generator.subschema_for::<k8s_openapi::api::rbac::v1::ClusterRole>();
    generator.subschema_for::<k8s_openapi::api::rbac::v1::RoleBinding>();
    generator.subschema_for::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>();
    generator.subschema_for::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>();
    generator.subschema_for::<k8s_openapi::api::authorization::v1::SelfSubjectRulesReview>();
    generator.subschema_for::<ObjectMeta>();
    generator.subschema_for::<ListMeta>();
    generator.subschema_for::<Status>();
    generator.subschema_for::<DeleteOptions>();
    let mut defs = generator.take_definitions(true);
    defs.insert(
        format!("{META}.Patch"),
        json!({ "type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body." }),
    );
    defs
}

fn crd_component(rt: &ResourceType) -> Value {
    let mut schema = rt
        .schema
        .clone()
        .unwrap_or_else(|| json!({ "type": "object" }));
    if let Some(obj) = schema.as_object_mut() {
        let props = obj
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut all = Map::new();
        all.insert("apiVersion".into(), json!({
            "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
            "type": "string",
        }));
        all.insert("kind".into(), json!({
            "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
            "type": "string",
        }));
        all.insert("metadata".into(), json!({
            "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
            "allOf": [reference(&format!("{META}.ObjectMeta"))],
            "default": {},
        }));
        all.extend(props);
        obj.insert("properties".into(), Value::Object(all));
        obj.insert("x-kubernetes-group-version-kind".into(), gvk(rt, &rt.kind));
    }
    schema
}

fn list_component(rt: &ResourceType, item: &str) -> Value {
    json!({
        "description": format!("{} is a list of {}", rt.list_kind, rt.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." },
            "kind": { "type": "string", "description": "Kind is a string value representing the REST resource this object represents." },
            "items": { "type": "array", "items": reference(item), "description": format!("List of {}.", rt.plural) },
            "metadata": { "allOf": [reference(&format!("{META}.ListMeta"))], "default": {}, "description": "Standard list metadata." },
        },
        "x-kubernetes-group-version-kind": gvk(rt, &rt.list_kind),
    })
}

fn query_param(name: &str, description: &str, type_: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": type_, "uniqueItems": true },
    })
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut p = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
            "string",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            "string",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
            "string",
        ),
    ];
    if patch {
        p.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
            "boolean",
        ));
    }
    p
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "boolean"),
        ("continue", "string"),
        ("fieldSelector", "string"),
        ("labelSelector", "string"),
        ("limit", "integer"),
        ("resourceVersion", "string"),
        ("resourceVersionMatch", "string"),
        ("sendInitialEvents", "boolean"),
        ("timeoutSeconds", "integer"),
        ("watch", "boolean"),
    ]
    .iter()
    .map(|(n, t)| query_param(n, n, t))
    .collect()
}

fn ok_response(schema: &str) -> Value {
    json!({
        "200": { "description": "OK", "content": { "application/json": { "schema": reference(schema) } } },
        "401": { "description": "Unauthorized" },
    })
}

fn operation(rt: &ResourceType, action: &str, id: &str, kind: &str, response: &str) -> Value {
    json!({
        "tags": [format!("{}_{}", rt.group.replace('.', ""), rt.version)],
        "operationId": id,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": { "group": rt.group, "version": rt.version, "kind": kind },
        "responses": ok_response(response),
    })
}

fn body(schema: &str) -> Value {
    json!({ "content": { "application/json": { "schema": reference(schema) } }, "required": true })
}

fn patch_body(rt: &ResourceType) -> Value {
    let patch = reference(&format!("{META}.Patch"));
    let mut content = Map::new();
    for t in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        content.insert(t.into(), json!({ "schema": patch }));
    }
    if rt.builtin.is_some() {
        content.insert(
            "application/strategic-merge-patch+json".into(),
            json!({ "schema": patch }),
        );
    }
    json!({ "content": content, "required": true })
}

fn paths_for(rt: &ResourceType, item: &str, list: &str, paths: &mut BTreeMap<String, Value>) {
    let prefix = rt.group_version_prefix();
    let scope = if rt.namespaced { "Namespaced" } else { "" };
    let op_kind = format!("{}{}", scope, rt.kind);
    let path_params = |with_name: bool| {
        let mut p = Vec::new();
        if with_name {
            p.push(json!({ "name": "name", "in": "path", "required": true, "description": format!("name of the {}", rt.kind), "schema": { "type": "string", "uniqueItems": true } }));
        }
        if rt.namespaced {
            p.push(json!({ "name": "namespace", "in": "path", "required": true, "description": "object name and auth scope, such as for teams and projects", "schema": { "type": "string", "uniqueItems": true } }));
        }
        p
    };
    let collection = if rt.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", rt.plural)
    } else {
        format!("{prefix}/{}", rt.plural)
    };
    let mut list_op = operation(rt, "list", &format!("list{op_kind}"), &rt.kind, list);
    list_op["parameters"] = json!(list_params());
    // An operation that writes the object (`patch`: by a patch of it).
    let write = |verb: &str, id: String, patch: bool| {
        let mut op = operation(rt, verb, &id, &rt.kind, item);
        op["parameters"] = json!(write_params(patch));
        op["requestBody"] = if patch { patch_body(rt) } else { body(item) };
        op
    };
    let create = write("post", format!("create{op_kind}"), false);
    let mut delete_collection = operation(
        rt,
        "deletecollection",
        &format!("deleteCollection{op_kind}"),
        &rt.kind,
        &format!("{META}.Status"),
    );
    delete_collection["parameters"] = json!(list_params());
    paths.insert(
        collection.clone(),
        json!({ "get": list_op, "post": create, "delete": delete_collection, "parameters": path_params(false) }),
    );

    let one = format!("{collection}/{{name}}");
    // Read, replace and patch of the object (`suffix` "") or of its status ("Status").
    let read_write = |suffix: &str| {
        let replace = write("put", format!("replace{op_kind}{suffix}"), false);
        let patch = write("patch", format!("patch{op_kind}{suffix}"), true);
        json!({
            "get": operation(rt, "get", &format!("read{op_kind}{suffix}"), &rt.kind, item),
            "put": replace,
            "patch": patch,
            "parameters": path_params(true),
        })
    };
    let mut delete = operation(rt, "delete", &format!("delete{op_kind}"), &rt.kind, item);
    delete["parameters"] = json!([query_param("dryRun", "dry run", "string")]);
    let mut one_ops = read_write("");
    one_ops["delete"] = delete;
    paths.insert(one.clone(), one_ops);
    if rt.status_subresource {
        paths.insert(format!("{one}/status"), read_write("Status"));
    }
    if rt.namespaced {
        let mut all = operation(
            rt,
            "list",
            &format!("list{}ForAllNamespaces", rt.kind),
            &rt.kind,
            list,
        );
        all["parameters"] = json!(list_params());
        paths.insert(format!("{prefix}/{}", rt.plural), json!({ "get": all }));
    }
}

/// Paths of one document, by URL template.
type Paths = BTreeMap<String, Value>;

/// The documents, keyed by their path under `/openapi/v3/` (`apis/medforge.dev/v1alpha1`).
pub struct OpenApi {
    pub documents: BTreeMap<String, (String, Vec<u8>)>,
}

impl OpenApi {
    pub fn build(reg: &Registry) -> OpenApi {
        let builtin = builtin_definitions();
        let mut docs: BTreeMap<String, (Map<String, Value>, Paths)> = BTreeMap::new();
        for rt in &reg.types {
            let key = rt
                .group_version_prefix()
                .trim_start_matches('/')
                .to_string();
            let (components, paths) = docs.entry(key).or_default();
            let item = component_name(rt);
            let list = format!("{item}List");
            if rt.builtin.is_some() {
                for (k, v) in &builtin {
                    let mut v = v.clone();
                    if *k == item {
                        v["x-kubernetes-group-version-kind"] = gvk(rt, &rt.kind);
                    } else if *k == list {
                        v["x-kubernetes-group-version-kind"] = gvk(rt, &rt.list_kind);
                    }
                    components.entry(k.clone()).or_insert(v);
                }
                // Our own gvk tags win over an earlier copy without them.
                if let Some(v) = builtin.get(&item) {
                    let mut v = v.clone();
                    v["x-kubernetes-group-version-kind"] = gvk(rt, &rt.kind);
                    components.insert(item.clone(), v);
                }
                components.insert(list.clone(), list_component(rt, &item));
            } else {
                components.insert(item.clone(), crd_component(rt));
                components.insert(list.clone(), list_component(rt, &item));
                for name in ["ObjectMeta", "ListMeta", "Status", "DeleteOptions", "Patch"] {
                    let full = format!("{META}.{name}");
                    if let Some(v) = builtin.get(&full) {
                        components.entry(full).or_insert_with(|| v.clone());
                    }
                }
                // ObjectMeta refers to further meta types; bring them along.
                for (k, v) in &builtin {
                    if k.starts_with(META) {
                        components.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
            paths_for(rt, &item, &list, paths);
        }
        let documents = docs
            .into_iter()
            .map(|(key, (components, paths))| {
                let doc = json!({
                    "openapi": "3.0.0",
                    "info": { "title": "Kubernetes", "version": format!("v{}.{}.0", crate::discovery::KUBE_MAJOR, crate::discovery::KUBE_MINOR) },
                    "paths": paths,
                    "components": { "schemas": components },
                });
                let bytes = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = hex::encode(sha2::Sha512::digest(&bytes)).to_uppercase();
                (key, (hash, bytes))
            })
            .collect();
        OpenApi { documents }
    }

    /// The `/openapi/v3` index.
    pub fn index(&self) -> Value {
        let paths: Map<String, Value> = self
            .documents
            .iter()
            .map(|(k, (hash, _))| {
                (
                    k.clone(),
                    json!({ "serverRelativeURL": format!("/openapi/v3/{k}?hash={hash}") }),
                )
            })
            .collect();
        json!({ "paths": paths })
    }
}
