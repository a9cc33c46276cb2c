//! The kinds this server serves: MedForge's CRDs, registered generically from
//! their definitions, and the few built-in kinds the controllers need
//! (`v1` Namespace, `events.k8s.io/v1` Event and its core `v1` view,
//! `coordination.k8s.io/v1` Lease).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

use crate::json::{items, str_or, strings_at};
use crate::jsonpath::JsonPath;

/// Index of a [`ResourceType`] in the [`Registry`].
pub type ResourceId = usize;

/// The built-in kinds, which get typed validation and a little special behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Namespace,
    Event,
    /// The core `v1` view of the `events.k8s.io/v1` Events (see `events.rs`).
    CoreEvent,
    Lease,
    ServiceAccount,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
    /// `authorization.k8s.io/v1`: answered, never stored (create only).
    SelfSubjectAccessReview,
    SelfSubjectRulesReview,
}

impl Builtin {
    /// Whether the server speaks Kubernetes protobuf for this kind (see
    /// `protobuf/kinds.rs`); the others are JSON only, as custom resources are.
    pub fn protobuf(self) -> bool {
        matches!(
            self,
            Builtin::Namespace
                | Builtin::Event
                | Builtin::CoreEvent
                | Builtin::Lease
                | Builtin::SelfSubjectAccessReview
                | Builtin::SelfSubjectRulesReview
        )
    }

    /// A review: created to get an answer, never stored.
    pub fn is_review(self) -> bool {
        matches!(
            self,
            Builtin::SelfSubjectAccessReview | Builtin::SelfSubjectRulesReview
        )
    }
}

/// One column of `kubectl get`'s table.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub path: JsonPath,
    /// Paths tried in order when `path` finds nothing (built-in columns only,
    /// such as an Event's "Last Seen").
    pub fallbacks: Vec<JsonPath>,
}

/// How lists inside a kind merge (from `x-kubernetes-list-type`), keyed by the
/// dotted path of the list with `[]` for list items (`status.conditions`).
#[derive(Debug, Clone, PartialEq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// Everything the server knows about one served resource.
#[derive(Debug)]
pub struct ResourceType {
    pub id: ResourceId,
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// The CRD's `openAPIV3Schema` (CRDs only).
    pub schema: Option<Value>,
    /// The compiled CEL rules of `schema`.
    pub cel: Option<Arc<kube::core::cel::CompiledSchema>>,
    pub printer_columns: Vec<PrinterColumn>,
    /// Field-selector labels besides `metadata.name` and `metadata.namespace`,
    /// in the order their values are kept on each stored object.
    pub selectable_fields: Vec<(String, JsonPath)>,
    pub builtin: Option<Builtin>,
    /// Where in the store and the database this kind lives: `<group>/<plural>`.
    pub storage_key: String,
    /// List types by path (`status.conditions` → `Map(["type"])`).
    pub list_types: HashMap<String, ListType>,
    /// For a view of another kind's objects (the core `v1` Events), the kind
    /// whose objects it shows: the store keeps them once, under that kind.
    pub alias_of: Option<ResourceId>,
}

/// Every verb a stored kind serves.
pub const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl ResourceType {
    /// The verbs served on this kind (a review: `create` only).
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.builtin.is_some_and(Builtin::is_review) {
            &["create"]
        } else {
            &VERBS
        }
    }

    /// Whether the server speaks protobuf for this kind.
    pub fn protobuf(&self) -> bool {
        self.builtin.is_some_and(Builtin::protobuf)
    }

    /// `medforge.dev/v1alpha1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `sessions.medforge.dev` or `namespaces`, as error messages name a resource.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The list type of the list at `path`, atomic when the schema says nothing.
    pub fn list_type(&self, path: &str) -> ListType {
        self.list_types
            .get(path)
            .cloned()
            .unwrap_or(ListType::Atomic)
    }

    /// The path prefix of this resource's collection, `/apis/<g>/<v>` or `/api/v1`.
    pub fn group_version_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

/// The served kinds, looked up by `(group, version, plural)`.
#[derive(Debug, Default)]
pub struct Registry {
    pub types: Vec<ResourceType>,
    by_path: HashMap<(String, String, String), ResourceId>,
}

/// Errors in a CRD given to the server.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("CRD {name}: {problem}")]
    BadCrd { name: String, problem: String },
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

impl Registry {
    /// The built-in kinds plus every served version of every CRD.
    pub fn new(crds: &[CustomResourceDefinition]) -> Result<Registry, RegistryError> {
        let mut reg = Registry::default();
        for b in [
            Builtin::Namespace,
            Builtin::Event,
            Builtin::Lease,
            Builtin::CoreEvent,
            Builtin::ServiceAccount,
            Builtin::Role,
            Builtin::ClusterRole,
            Builtin::RoleBinding,
            Builtin::ClusterRoleBinding,
            Builtin::SelfSubjectAccessReview,
            Builtin::SelfSubjectRulesReview,
        ] {
            reg.add(builtin_type(b));
        }
        let stored_events = reg
            .lookup("events.k8s.io", "v1", "events")
            .map(|t| t.id)
            .expect("events.k8s.io/v1 is registered before its core view");
        for t in reg.types.iter_mut() {
            if t.builtin == Some(Builtin::CoreEvent) {
                t.alias_of = Some(stored_events);
            }
        }
        for crd in crds {
            for rt in crd_types(crd)? {
                reg.add(rt);
            }
        }
        Ok(reg)
    }

    fn add(&mut self, mut rt: ResourceType) {
        rt.id = self.types.len();
        self.by_path.insert(
            (rt.group.clone(), rt.version.clone(), rt.plural.clone()),
            rt.id,
        );
        self.types.push(rt);
    }

    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceType> {
        self.by_path
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .map(|id| &self.types[*id])
    }

    pub fn get(&self, id: ResourceId) -> &ResourceType {
        &self.types[id]
    }

    /// The kind whose objects are stored under `key` (never a view).
    pub fn by_storage_key(&self, key: &str) -> Option<&ResourceType> {
        self.types
            .iter()
            .find(|t| t.storage_key == key && t.alias_of.is_none())
    }

    pub fn namespace_type(&self) -> &ResourceType {
        &self.types[0]
    }

    /// Whether any resource is served under this group and version.
    pub fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.group == group && t.version == version)
    }

    /// Groups other than core, each with its versions, in registration order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some((_, versions)) => {
                    if !versions.contains(&t.version) {
                        versions.push(t.version.clone());
                    }
                }
                None => out.push((t.group.clone(), vec![t.version.clone()])),
            }
        }
        out
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceType> + 'a {
        self.types
            .iter()
            .filter(move |t| t.group == group && t.version == version)
    }
}

fn column(name: &str, type_: &str, path: &str, description: &str, priority: i64) -> PrinterColumn {
    PrinterColumn {
        name: name.to_string(),
        type_: type_.to_string(),
        format: String::new(),
        description: description.to_string(),
        priority,
        path: JsonPath::parse(path).expect("built-in printer column paths parse"),
        fallbacks: Vec::new(),
    }
}

fn age_column() -> PrinterColumn {
    column(
        "Age",
        "date",
        ".metadata.creationTimestamp",
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
        0,
    )
}

/// The columns both Event versions show: type, reason, the name of the
/// object (at `object`) and the message (at `message`).
fn event_columns(object: &str, message: &str) -> Vec<PrinterColumn> {
    vec![
        column("Type", "string", ".type", "Type of this event", 0),
        column("Reason", "string", ".reason", "Why the action was taken", 0),
        column(
            "Object",
            "string",
            object,
            "The object this event is about",
            0,
        ),
        column(
            "Message",
            "string",
            message,
            "A human-readable description",
            0,
        ),
    ]
}

/// kube-apiserver's selectable fields of an Event version: every field of the
/// object reference at `regarding`, the reason, the reporter and the type.
fn event_fields(regarding: &str, reporter: &str) -> Vec<(String, JsonPath)> {
    let reference = [
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ]
    .map(|f| format!("{regarding}.{f}"));
    let mut paths: Vec<&str> = reference.iter().map(String::as_str).collect();
    paths.extend(["reason", reporter, "type"]);
    selectable(&paths)
}

fn selectable(paths: &[&str]) -> Vec<(String, JsonPath)> {
    paths
        .iter()
        .map(|p| {
            (
                p.to_string(),
                JsonPath::parse(&format!(".{p}")).expect("built-in field paths parse"),
            )
        })
        .collect()
}

/// The RBAC API group.
pub const RBAC: &str = "rbac.authorization.k8s.io";
/// The group of the access reviews.
pub const AUTHORIZATION: &str = "authorization.k8s.io";

fn rbac_type(mut t: ResourceType) -> ResourceType {
    t.categories = vec![];
    t.printer_columns = vec![column(
        "Created At",
        "date",
        ".metadata.creationTimestamp",
        "When the role was created",
        0,
    )];
    t
}

fn binding_type(mut t: ResourceType) -> ResourceType {
    t.printer_columns = vec![
        column(
            "Role",
            "string",
            ".roleRef.name",
            "The role the subjects get",
            0,
        ),
        age_column(),
    ];
    t
}

fn builtin_type(b: Builtin) -> ResourceType {
    let base =
        |group: &str, version: &str, kind: &str, plural: &str, namespaced: bool| ResourceType {
            id: 0,
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            list_kind: format!("{kind}List"),
            plural: plural.to_string(),
            singular: kind.to_lowercase(),
            short_names: vec![],
            categories: vec![],
            namespaced,
            status_subresource: false,
            schema: None,
            cel: None,
            printer_columns: vec![],
            selectable_fields: vec![],
            builtin: Some(b),
            storage_key: format!(
                "{}/{}",
                if group.is_empty() { "core" } else { group },
                plural
            ),
            list_types: HashMap::new(),
            alias_of: None,
        };
    match b {
        Builtin::Namespace => {
            let mut t = base("", "v1", "Namespace", "namespaces", false);
            t.short_names = vec!["ns".into()];
            t.status_subresource = true;
            t.printer_columns = vec![
                column(
                    "Status",
                    "string",
                    ".status.phase",
                    "The status of the namespace",
                    0,
                ),
                age_column(),
            ];
            t.selectable_fields = selectable(&["status.phase"]);
            t
        }
        Builtin::Event => {
            let mut t = base("events.k8s.io", "v1", "Event", "events", true);
            t.short_names = vec!["ev".into()];
            t.printer_columns = event_columns(".regarding.name", ".note");
            t.printer_columns.push(age_column());
            t.selectable_fields = event_fields("regarding", "reportingController");
            t
        }
        Builtin::CoreEvent => {
            let mut t = base("", "v1", "Event", "events", true);
            // Stored once, with the events.k8s.io/v1 Events.
            t.storage_key = "events.k8s.io/events".into();
            t.short_names = vec!["ev".into()];
            let mut last_seen = column(
                "Last Seen",
                "date",
                ".series.lastObservedTime",
                "When the event was last observed",
                0,
            );
            last_seen.fallbacks = [
                ".lastTimestamp",
                ".eventTime",
                ".metadata.creationTimestamp",
            ]
            .iter()
            .map(|p| JsonPath::parse(p).expect("built-in printer column paths parse"))
            .collect();
            t.printer_columns = vec![last_seen];
            t.printer_columns
                .extend(event_columns(".involvedObject.name", ".message"));
            t.printer_columns.extend([
                column(
                    "Source",
                    "string",
                    ".reportingComponent",
                    "The controller that reported the event",
                    1,
                ),
                column(
                    "Count",
                    "integer",
                    ".series.count",
                    "How often it happened",
                    1,
                ),
            ]);
            // kube-apiserver's selectable fields of core v1 Events.
            t.selectable_fields = event_fields("involvedObject", "reportingComponent");
            t.selectable_fields.push((
                "source".into(),
                JsonPath::parse(".source.component").expect("built-in field paths parse"),
            ));
            t
        }
        Builtin::ServiceAccount => {
            let mut t = base("", "v1", "ServiceAccount", "serviceaccounts", true);
            t.short_names = vec!["sa".into()];
            t.printer_columns = vec![age_column()];
            t
        }
        Builtin::Role => rbac_type(base(RBAC, "v1", "Role", "roles", true)),
        Builtin::ClusterRole => rbac_type(base(RBAC, "v1", "ClusterRole", "clusterroles", false)),
        Builtin::RoleBinding => binding_type(base(RBAC, "v1", "RoleBinding", "rolebindings", true)),
        Builtin::ClusterRoleBinding => binding_type(base(
            RBAC,
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        )),
        Builtin::SelfSubjectAccessReview => base(
            AUTHORIZATION,
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
        ),
        Builtin::SelfSubjectRulesReview => base(
            AUTHORIZATION,
            "v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
        ),
        Builtin::Lease => {
            let mut t = base("coordination.k8s.io", "v1", "Lease", "leases", true);
            t.printer_columns = vec![
                column(
                    "Holder",
                    "string",
                    ".spec.holderIdentity",
                    "The holder of the lease",
                    0,
                ),
                age_column(),
            ];
            t
        }
    }
}

fn crd_types(crd: &CustomResourceDefinition) -> Result<Vec<ResourceType>, RegistryError> {
    let v = serde_json::to_value(crd).map_err(|e| RegistryError::BadCrd {
        name: crd.metadata.name.clone().unwrap_or_default(),
        problem: e.to_string(),
    })?;
    let name = crd.metadata.name.clone().unwrap_or_default();
    let bad = |problem: &str| RegistryError::BadCrd {
        name: name.clone(),
        problem: problem.to_string(),
    };
    let group = str_at(&v, "/spec/group").ok_or_else(|| bad("no spec.group"))?;
    let kind = str_at(&v, "/spec/names/kind").ok_or_else(|| bad("no spec.names.kind"))?;
    let plural = str_at(&v, "/spec/names/plural").ok_or_else(|| bad("no spec.names.plural"))?;
    let singular = str_at(&v, "/spec/names/singular")
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let list_kind = str_at(&v, "/spec/names/listKind")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}List"));
    let namespaced = str_at(&v, "/spec/scope") != Some("Cluster");
    let mut out = Vec::new();
    for ver in v
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if ver.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let version = ver
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a version without a name"))?;
        let schema = ver.pointer("/schema/openAPIV3Schema").cloned();
        let mut printer_columns = Vec::new();
        for c in items(ver, "additionalPrinterColumns") {
            let path_str = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
            let path = JsonPath::parse(path_str)
                .map_err(|e| bad(&format!("printer column path {path_str:?}: {e}")))?;
            printer_columns.push(PrinterColumn {
                name: str_or(c, "name", ""),
                type_: str_or(c, "type", "string"),
                format: str_or(c, "format", ""),
                description: str_or(c, "description", ""),
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                path,
                fallbacks: Vec::new(),
            });
        }
        if printer_columns.is_empty() {
            printer_columns.push(age_column());
        }
        let mut selectable_fields = Vec::new();
        for f in items(ver, "selectableFields") {
            let p = f.get("jsonPath").and_then(Value::as_str).unwrap_or("");
            let path =
                JsonPath::parse(p).map_err(|e| bad(&format!("selectable field {p:?}: {e}")))?;
            selectable_fields.push((p.trim_start_matches('.').to_string(), path));
        }
        let mut list_types = HashMap::new();
        if let Some(s) = &schema {
            collect_list_types(s, "", &mut list_types);
        }
        let cel = schema
            .as_ref()
            .map(|s| Arc::new(kube::core::cel::compile_schema(s)));
        out.push(ResourceType {
            id: 0,
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            list_kind: list_kind.clone(),
            plural: plural.to_string(),
            singular: singular.clone(),
            short_names: strings_at(&v, "/spec/names/shortNames"),
            categories: strings_at(&v, "/spec/names/categories"),
            namespaced,
            status_subresource: ver.pointer("/subresources/status").is_some(),
            schema,
            cel,
            printer_columns,
            selectable_fields,
            builtin: None,
            storage_key: format!("{group}/{plural}"),
            list_types,
            alias_of: None,
        });
    }
    Ok(out)
}

/// Walks a structural schema and records every list's merge type.
fn collect_list_types(schema: &Value, path: &str, out: &mut HashMap<String, ListType>) {
    let join = |p: &str, k: &str| {
        if p.is_empty() {
            k.to_string()
        } else {
            format!("{p}.{k}")
        }
    };
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            collect_list_types(s, &join(path, k), out);
        }
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        collect_list_types(ap, &join(path, "*"), out);
    }
    if let Some(items) = schema.get("items") {
        let lt = match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(strings_at(schema, "/x-kubernetes-list-map-keys")),
            _ => ListType::Atomic,
        };
        out.insert(path.to_string(), lt);
        collect_list_types(items, &format!("{path}[]"), out);
    }
}
