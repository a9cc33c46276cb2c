//! Discovery documents: `/version`, `/api`, `/apis`, the group and version
//! documents, and aggregated discovery (`apidiscovery.k8s.io/v2`), which
//! kubectl and kube's discovery ask for first.

use serde_json::{Value, json};

use crate::registry::{Builtin, Registry, ResourceType};

/// The Kubernetes version this server reports.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "34";

/// Media type of aggregated discovery responses.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

const SUB_VERBS: [&str; 3] = ["get", "patch", "update"];

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "emulationMajor": KUBE_MAJOR,
        "emulationMinor": KUBE_MINOR,
        "minCompatibilityMajor": KUBE_MAJOR,
        "minCompatibilityMinor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-medforge.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "n/a (medforge-apiserver, Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

pub fn group_list(reg: &Registry) -> Value {
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": reg.groups().iter().map(|(g, vs)| group_doc(g, vs)).collect::<Vec<_>>(),
    })
}

pub fn group(reg: &Registry, name: &str) -> Option<Value> {
    reg.groups()
        .into_iter()
        .find(|(g, _)| g == name)
        .map(|(g, vs)| {
            let mut d = group_doc(&g, &vs);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

/// The kind's short names and categories, each only when it has some.
fn add_names(entry: &mut Value, rt: &ResourceType) {
    if !rt.short_names.is_empty() {
        entry["shortNames"] = json!(rt.short_names);
    }
    if !rt.categories.is_empty() {
        entry["categories"] = json!(rt.categories);
    }
}

fn resource_entries(rt: &ResourceType) -> Vec<Value> {
    let mut main = json!({
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": rt.verbs(),
    });
    add_names(&mut main, rt);
    let mut out = vec![main];
    if rt.builtin == Some(Builtin::ServiceAccount) {
        out.push(json!({
            "name": "serviceaccounts/token",
            "singularName": "",
            "namespaced": true,
            "group": "authentication.k8s.io",
            "version": "v1",
            "kind": "TokenRequest",
            "verbs": ["create"],
        }));
    }
    if rt.status_subresource {
        out.push(json!({
            "name": format!("{}/status", rt.plural),
            "singularName": "",
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": SUB_VERBS,
        }));
    }
    out
}

/// The `APIResourceList` of a group version, `None` when nothing is served there.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    if !reg.serves_group_version(group, version) {
        return None;
    }
    let resources: Vec<Value> = reg
        .in_group_version(group, version)
        .flat_map(resource_entries)
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

fn aggregated_resource(rt: &ResourceType) -> Value {
    let kind = json!({ "group": rt.group, "version": rt.version, "kind": rt.kind });
    let mut r = json!({
        "resource": rt.plural,
        "responseKind": kind,
        "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": rt.singular,
        "verbs": rt.verbs(),
    });
    add_names(&mut r, rt);
    if rt.builtin == Some(Builtin::ServiceAccount) {
        r["subresources"] = json!([{
            "subresource": "token",
            "responseKind": { "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest" },
            "verbs": ["create"],
        }]);
    }
    if rt.status_subresource {
        r["subresources"] = json!([{
            "subresource": "status",
            "responseKind": kind,
            "verbs": SUB_VERBS,
        }]);
    }
    r
}

/// Aggregated discovery for `/api` (`core` true) or `/apis`.
pub fn aggregated(reg: &Registry, core: bool, api_version: &str) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({
            "metadata": { "creationTimestamp": null },
            "versions": [{
                "version": "v1",
                "resources": reg.in_group_version("", "v1").map(aggregated_resource).collect::<Vec<_>>(),
                "freshness": "Current",
            }],
        })]
    } else {
        reg.groups()
            .iter()
            .map(|(g, vs)| {
                json!({
                    "metadata": { "name": g, "creationTimestamp": null },
                    "versions": vs.iter().map(|v| json!({
                        "version": v,
                        "resources": reg.in_group_version(g, v).map(aggregated_resource).collect::<Vec<_>>(),
                        "freshness": "Current",
                    })).collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

/// Which aggregated discovery version the `Accept` header asks for, if any.
pub fn wants_aggregated(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    for part in accept.split(',') {
        let p = part.replace(' ', "");
        if p.contains("as=APIGroupDiscoveryList") && p.contains("g=apidiscovery.k8s.io") {
            if p.contains("v=v2beta1") {
                return Some("v2beta1");
            }
            if p.contains("v=v2") {
                return Some("v2");
            }
        } else if p.starts_with("application/json") || p.starts_with("*/*") {
            return None;
        }
    }
    None
}
