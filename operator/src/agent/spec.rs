//! Names, the desired container and whether a Session is this agent's,
//! computed without I/O from a Session, its Pack and the agent's
//! configuration.

use std::collections::BTreeMap;
use std::path::Path;

use kube::ResourceExt;
use medforge_crds::keys;
use medforge_crds::policy::{Amounts, PolicyOverrides, SessionPolicy, Violation, resolve};
use medforge_crds::quantity::parse_bytes;
use medforge_crds::{Pack, Session, SessionReason, WorkspaceSnapshot};

use super::config::AgentConfig;
use super::runtime::{ContainerSpec, labels};

/// Environment variables the agent sets itself; a Pack cannot override them.
const RESERVED_ENV_PREFIXES: &[&str] = &["MEDFORGE_", "NVIDIA_"];

/// `<prefix>mf-session-<slug>`.
pub fn container_name(prefix: &str, slug: &str) -> String {
    format!("{prefix}mf-session-{slug}")
}

/// A user id as one ZFS dataset component: characters ZFS refuses become `_`.
pub fn owner_component(owner: &str) -> String {
    let safe: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe == "." || safe == ".." {
        format!("_{safe}")
    } else {
        safe
    }
}

/// The parent dataset of one owner's workspaces: `<root>/<owner>`.
pub fn owner_dataset(root: &str, owner: &str) -> String {
    format!("{root}/{}", owner_component(owner))
}

/// `<root>/<owner>/<session uid>`.
pub fn dataset_name(root: &str, owner: &str, uid: &str) -> String {
    format!("{}/{uid}", owner_dataset(root, owner))
}

/// The session's dataset, when it has a uid.
pub fn session_dataset(config: &AgentConfig, s: &Session) -> Option<String> {
    Some(dataset_name(
        &config.dataset_root,
        &s.spec.owner,
        &s.metadata.uid.clone()?,
    ))
}

/// A spec the agent cannot run, and why (shown in the Session's status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSpec {
    /// `InvalidSpec`, or `PolicyViolation` for a value above a maximum.
    pub reason: SessionReason,
    pub message: String,
}

impl InvalidSpec {
    fn invalid(message: impl Into<String>) -> Self {
        InvalidSpec {
            reason: SessionReason::InvalidSpec,
            message: message.into(),
        }
    }
}

/// What the session runs with ([`resolve`]: its spec, its Pack, the
/// operator's policy, this node's capacity), or why it cannot run.
pub fn amounts(config: &AgentConfig, s: &Session, pack: &Pack) -> Result<Amounts, InvalidSpec> {
    let policy = account_policy(config, s)?;
    let resolved = resolve(
        &s.spec,
        Some((&pack.name_any(), &pack.spec)),
        &policy,
        config.capacity.as_ref(),
    );
    let amounts = resolved.map_err(|errors| {
        let above = errors
            .iter()
            .any(|e| matches!(e, Violation::AboveMaximum { .. }));
        InvalidSpec {
            reason: if above {
                SessionReason::PolicyViolation
            } else {
                SessionReason::InvalidSpec
            },
            message: errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        }
    })?;
    if amounts.memory < MIN_MEMORY {
        return Err(InvalidSpec::invalid(
            "resources.memory: Docker needs at least 6Mi",
        ));
    }
    // The bottom of the Pack's GPU range (the top is among its maxima).
    let min = pack.spec.min_gpus();
    if s.spec.gpus < min {
        return Err(InvalidSpec {
            reason: SessionReason::PolicyViolation,
            message: format!(
                "gpus: {} is below the minimum {min} of pack {:?}",
                s.spec.gpus,
                pack.name_any()
            ),
        });
    }
    Ok(amounts)
}

/// The operator's policy with the owner's own limits (the api writes them
/// into the annotation [`keys::SESSION_POLICY_ANNOTATION`]) in place.
fn account_policy(config: &AgentConfig, s: &Session) -> Result<SessionPolicy, InvalidSpec> {
    let Some(text) = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(keys::SESSION_POLICY_ANNOTATION))
    else {
        return Ok(config.policy);
    };
    serde_json::from_str::<PolicyOverrides>(text)
        .map_err(|e| e.to_string())
        .and_then(|o| config.policy.for_account(&o))
        .map_err(|e| {
            InvalidSpec::invalid(format!(
                "annotation {}: {e}",
                keys::SESSION_POLICY_ANNOTATION
            ))
        })
}

/// Docker refuses a memory limit below this.
const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// The workspace quota in bytes: what the agent recorded when the session
/// started (`status.limits`), else the spec's own.
pub fn quota_bytes(s: &Session) -> Result<Option<u64>, InvalidSpec> {
    let recorded = s
        .status
        .as_ref()
        .and_then(|st| st.limits.as_ref())
        .map(|l| l.workspace_quota.as_str());
    let asked = s.spec.workspace.as_ref().and_then(|w| w.quota.as_deref());
    match recorded.or(asked) {
        None => Ok(None),
        Some(q) => parse_bytes(q)
            .map(Some)
            .map_err(|e| InvalidSpec::invalid(format!("workspace.quota: {e}"))),
    }
}

/// Checks what can be checked without I/O: every value against the policy,
/// the Pack and the node ([`amounts`]).
pub fn validate(config: &AgentConfig, s: &Session, pack: &Pack) -> Result<Amounts, InvalidSpec> {
    amounts(config, s, pack)
}

/// The ZFS snapshot a session restores from, from the record its
/// `restoreFrom` names (`None`: no such record): the record must be ready,
/// the session owner's, on this node, and name a snapshot of one of that
/// owner's workspaces. Otherwise the reason and message to fail with.
pub fn restore_source(
    config: &AgentConfig,
    s: &Session,
    record: Option<&WorkspaceSnapshot>,
) -> Result<String, InvalidSpec> {
    let name = restore_from(s).unwrap_or_default();
    let not_found = |why: String| InvalidSpec {
        reason: SessionReason::SnapshotNotFound,
        message: format!("workspace.restoreFrom: WorkspaceSnapshot {name:?} {why}"),
    };
    let Some(r) = record else {
        return Err(not_found(format!(
            "does not exist in namespace {}",
            s.namespace().unwrap_or_default()
        )));
    };
    if r.spec.owner != s.spec.owner {
        return Err(InvalidSpec {
            reason: SessionReason::SnapshotNotOwned,
            message: format!(
                "workspace.restoreFrom: WorkspaceSnapshot {name:?} belongs to another user; \
                 a session restores only its own owner's snapshots"
            ),
        });
    }
    if !r.is_ready() {
        return Err(not_found(
            "is not ready to use (being taken, failed or being deleted)".into(),
        ));
    }
    if r.spec.node != config.node_name {
        return Err(not_found(format!(
            "is on node {}, not on node {} where the session was bound",
            r.spec.node, config.node_name
        )));
    }
    let mine = format!("{}/", owner_dataset(&config.dataset_root, &s.spec.owner));
    let (dataset, snap) = r.dataset_and_name();
    if !dataset.starts_with(&mine) || snap.is_empty() || dataset.contains("..") {
        return Err(InvalidSpec {
            reason: SessionReason::SnapshotNotOwned,
            message: format!(
                "workspace.restoreFrom: WorkspaceSnapshot {name:?} names {}, which is not under \
                 this owner's workspaces ({mine})",
                r.spec.snapshot
            ),
        });
    }
    Ok(r.spec.snapshot.clone())
}

/// `spec.workspace.restoreFrom`.
pub fn restore_from(s: &Session) -> Option<&str> {
    s.spec
        .workspace
        .as_ref()
        .and_then(|w| w.restore_from.as_deref())
}

/// The container a Session runs: hardened, limited, labelled with the
/// Session's identity, its workspace at `/workspace`, its GPUs by UUID.
pub fn container_spec(
    config: &AgentConfig,
    s: &Session,
    pack: &Pack,
    workspace: &Path,
) -> Result<ContainerSpec, InvalidSpec> {
    let status = s.status.clone().unwrap_or_default();
    let slug = status
        .slug
        .clone()
        .ok_or_else(|| InvalidSpec::invalid("the session has no slug yet"))?;
    let uid = s
        .metadata
        .uid
        .clone()
        .ok_or_else(|| InvalidSpec::invalid("the session has no uid"))?;
    let limits = amounts(config, s, pack)?;
    let gpus: Vec<String> = status.gpus.iter().map(|g| g.uuid.clone()).collect();

    let mut labels_map: BTreeMap<String, String> = config
        .extra_labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        (labels::SESSION_UID, uid.clone()),
        (labels::SESSION_NAMESPACE, s.namespace().unwrap_or_default()),
        (labels::SESSION_NAME, s.name_any()),
        (labels::NODE, config.node_name.clone()),
        (labels::SLUG, slug.clone()),
        (labels::PORT, pack.spec.port.to_string()),
    ] {
        labels_map.insert(k.to_string(), v);
    }

    let mut env: Vec<String> = pack
        .spec
        .env
        .iter()
        .filter(|e| !RESERVED_ENV_PREFIXES.iter().any(|p| e.name.starts_with(p)))
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    env.push(format!("MEDFORGE_SESSION={}", s.name_any()));
    env.push(format!("MEDFORGE_SESSION_UID={uid}"));
    env.push(format!("MEDFORGE_SLUG={slug}"));
    env.push(format!("MEDFORGE_OWNER={}", s.spec.owner));
    // `void`: the NVIDIA runtime exposes no GPU at all to a session without one.
    env.push(format!(
        "NVIDIA_VISIBLE_DEVICES={}",
        if gpus.is_empty() {
            "void".to_string()
        } else {
            gpus.join(",")
        }
    ));

    Ok(ContainerSpec {
        name: container_name(&config.container_prefix, &slug),
        image: pack.pinned_image().unwrap_or(&pack.spec.image).to_string(),
        cmd: pack.spec.command.clone(),
        env,
        labels: labels_map,
        hostname: format!("s-{slug}"),
        user: format!("{}:{}", config.container_uid, config.container_gid),
        workspace: workspace.to_path_buf(),
        memory_bytes: Some(i64::try_from(limits.memory).unwrap_or(i64::MAX)),
        nano_cpus: Some(limits.nano_cpus),
        pids_limit: Some(limits.pids),
        shm_bytes: Some(i64::try_from(limits.shm).unwrap_or(i64::MAX)),
        tmp_bytes: config.tmp_bytes,
        device_requests: config.gpu_device_requests && !gpus.is_empty(),
        gpus,
        network: config.network.clone(),
        cgroup_parent: config.cgroup_parent.clone(),
        stop_timeout: config.stop_timeout,
    })
}

/// Whether this agent is responsible for the session.
pub fn bound_here(s: &Session, node: &str) -> bool {
    s.bound_node() == Some(node)
}

/// The field selector of the Sessions bound to `node` (the CRD declares
/// `.status.nodeName` selectable), with `\`, `,` and `=` escaped as
/// kube-apiserver's field selector grammar wants.
pub fn node_selector(node: &str) -> String {
    let mut value = String::with_capacity(node.len());
    for c in node.chars() {
        if matches!(c, '\\' | ',' | '=') {
            value.push('\\');
        }
        value.push(c);
    }
    format!("status.nodeName={value}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing as fixtures;
    use medforge_crds::SessionResources;

    #[test]
    fn node_selector_escapes_what_the_grammar_reserves() {
        assert_eq!(node_selector("gpu-1"), "status.nodeName=gpu-1");
        assert_eq!(node_selector("a,b=c\\d"), "status.nodeName=a\\,b\\=c\\\\d");
    }

    #[test]
    fn names() {
        assert_eq!(container_name("", "ab12cd34"), "mf-session-ab12cd34");
        assert_eq!(container_name("t1-", "ab12cd34"), "t1-mf-session-ab12cd34");
        assert_eq!(owner_component("alice"), "alice");
        assert_eq!(owner_component("a b/c@d"), "a_b_c_d");
        assert_eq!(owner_component(""), "_");
        assert_eq!(owner_component(".."), "_..");
        assert_eq!(dataset_name("tank/mf", "bob", "u-1"), "tank/mf/bob/u-1");
    }

    #[test]
    fn the_container_is_hardened_labelled_and_limited() {
        let config = fixtures::config();
        let mut s = fixtures::bound_session("s1", 2);
        s.spec.resources = Some(SessionResources {
            memory: Some("1Gi".into()),
            ..Default::default()
        });
        let mut pack = fixtures::pack("default");
        pack.spec.resources = Some(SessionResources {
            memory: Some("8Gi".into()),
            cpu: Some("1500m".into()),
            shm: Some("256Mi".into()),
            pids: Some(512),
        });
        pack.spec.env = vec![
            medforge_crds::EnvVar {
                name: "JUPYTER_TOKEN".into(),
                value: "x".into(),
            },
            medforge_crds::EnvVar {
                name: "NVIDIA_VISIBLE_DEVICES".into(),
                value: "all".into(),
            },
        ];
        let spec = container_spec(&config, &s, &pack, Path::new("/pool/ws")).unwrap();
        assert_eq!(spec.name, "mf-session-abcd1234");
        assert_eq!(spec.user, "1000:1000");
        assert_eq!(
            spec.memory_bytes,
            Some(1 << 30),
            "the session's own limit wins"
        );
        assert_eq!(
            spec.nano_cpus,
            Some(1_500_000_000),
            "the pack fills the rest"
        );
        assert_eq!(spec.shm_bytes, Some(256 << 20));
        assert_eq!(spec.pids_limit, Some(512));
        assert_eq!(spec.labels[labels::SESSION_UID], "uid-s1");
        assert_eq!(spec.labels[labels::SESSION_NAMESPACE], "ns");
        assert_eq!(spec.labels[labels::SESSION_NAME], "s1");
        assert_eq!(spec.labels[labels::NODE], "node-a");
        assert_eq!(spec.labels[labels::PORT], "8080");
        assert!(spec.env.contains(&"JUPYTER_TOKEN=x".to_string()));
        assert!(
            spec.env
                .contains(&"NVIDIA_VISIBLE_DEVICES=GPU-0,GPU-1".to_string()),
            "{:?}",
            spec.env
        );
        assert!(
            !spec.env.contains(&"NVIDIA_VISIBLE_DEVICES=all".to_string()),
            "a pack cannot widen the GPUs"
        );
        assert!(!spec.device_requests, "static inventory: environment only");

        let mut config = config;
        config.gpu_device_requests = true;
        let spec = container_spec(&config, &s, &pack, Path::new("/pool/ws")).unwrap();
        assert!(spec.device_requests);
        let no_gpu = fixtures::bound_session("s2", 0);
        let spec = container_spec(&config, &no_gpu, &pack, Path::new("/pool/ws")).unwrap();
        assert!(!spec.device_requests);
        assert!(
            spec.env
                .contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string())
        );
    }

    #[test]
    fn validation_names_the_field_and_refuses_foreign_snapshots() {
        let config = fixtures::config();
        let pack = fixtures::pack("default");
        let mut s = fixtures::bound_session("s1", 0);
        assert!(validate(&config, &s, &pack).is_ok());

        s.spec.idle_timeout = Some("10 minutes".into());
        let e = validate(&config, &s, &pack).unwrap_err();
        assert!(e.message.starts_with("idleTimeout:"), "{e}");
        assert_eq!(e.reason, SessionReason::InvalidSpec);
        s.spec.idle_timeout = None;

        s.spec.resources = Some(SessionResources {
            memory: Some("1Ki".into()),
            ..Default::default()
        });
        let e = validate(&config, &s, &pack).unwrap_err();
        assert!(e.message.contains("resources.memory"), "{e}");
        s.spec.resources = None;
    }

    #[test]
    fn a_restore_needs_a_ready_record_of_the_same_owner_on_this_node() {
        use medforge_crds::{SnapshotReason, SnapshotStatusReason};
        let config = fixtures::config();
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.workspace = Some(medforge_crds::WorkspaceSpec {
            quota: None,
            restore_from: Some("old-stop-1".into()),
        });
        let of = crate::agent::plan::SnapshotOf {
            namespace: "ns".into(),
            session: "old".into(),
            uid: "u-0".into(),
            owner: s.spec.owner.clone(),
            retention: None,
        };
        let mine = owner_dataset(&config.dataset_root, &s.spec.owner);
        let now = k8s_openapi::jiff::Timestamp::now();
        let record = |of: &crate::agent::plan::SnapshotOf, dataset: &str, node: &str| {
            crate::agent::plan::snapshot_record(of, dataset, "stop-1", node, None, now).unwrap()
        };
        let good = record(&of, &format!("{mine}/u-0"), &config.node_name);
        assert_eq!(good.spec.reason, SnapshotReason::Stop);
        assert_eq!(
            restore_source(&config, &s, Some(&good)).unwrap(),
            format!("{mine}/u-0@stop-1")
        );
        let reason = |r: Option<&WorkspaceSnapshot>| restore_source(&config, &s, r).unwrap_err();
        let e = reason(None);
        assert_eq!(e.reason, SessionReason::SnapshotNotFound);
        assert!(e.message.contains("does not exist"), "{e}");
        // Another owner's record, or a record whose dataset is another owner's.
        let mallory = crate::agent::plan::SnapshotOf {
            owner: "mallory".into(),
            ..of.clone()
        };
        let theirs = record(&mallory, &format!("{mine}/u-0"), &config.node_name);
        assert_eq!(
            reason(Some(&theirs)).reason,
            SessionReason::SnapshotNotOwned
        );
        let forged = record(&of, "pool/mf/mallory/u-9", &config.node_name);
        assert_eq!(
            reason(Some(&forged)).reason,
            SessionReason::SnapshotNotOwned
        );
        // Elsewhere, or not ready.
        let elsewhere = record(&of, &format!("{mine}/u-0"), "other-node");
        assert!(reason(Some(&elsewhere)).message.contains("other-node"));
        let mut pending = good.clone();
        pending.status = Some(crate::agent::plan::snapshot_status(
            None,
            None,
            false,
            SnapshotStatusReason::Pending,
            "",
            None,
            now,
        ));
        assert_eq!(
            reason(Some(&pending)).reason,
            SessionReason::SnapshotNotFound
        );
        let mut deleting = good.clone();
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert!(reason(Some(&deleting)).message.contains("not ready"));
    }

    #[test]
    fn a_session_below_its_packs_gpu_minimum_is_refused() {
        let config = fixtures::config();
        let mut pack = fixtures::pack("default");
        pack.spec.minima = Some(medforge_crds::pack::PackMinima { gpus: Some(2) });
        let e = validate(&config, &fixtures::bound_session("s1", 1), &pack).unwrap_err();
        assert_eq!(e.reason, SessionReason::PolicyViolation);
        assert_eq!(
            e.message,
            "gpus: 1 is below the minimum 2 of pack \"default\""
        );
        assert!(validate(&config, &fixtures::bound_session("s1", 2), &pack).is_ok());
    }

    #[test]
    fn a_spec_above_the_policy_or_the_node_is_refused_as_a_policy_violation() {
        let mut config = fixtures::config();
        config.capacity = Some(medforge_crds::policy::Capacity {
            nano_cpus: 4_000_000_000,
            memory: 16 << 30,
        });
        let pack = fixtures::pack("default");
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.resources = Some(SessionResources {
            memory: Some("1000Ti".into()),
            pids: Some(1_000_000),
            cpu: Some("5".into()),
            shm: None,
        });
        let e = validate(&config, &s, &pack).unwrap_err();
        assert_eq!(e.reason, SessionReason::PolicyViolation);
        assert_eq!(
            e.message,
            "resources.cpu: 5 is above the maximum 4 (this node's capacity); \
             resources.memory: 1000Ti is above the maximum 16Gi (this node's capacity); \
             resources.pids: 1000000 is above the maximum 32768 (the operator's policy)"
        );
        // The container spec is refused the same way: nothing reaches Docker.
        let e = container_spec(&config, &s, &pack, Path::new("/pool/ws")).unwrap_err();
        assert_eq!(e.reason, SessionReason::PolicyViolation);
    }

    #[test]
    fn the_owners_own_limits_from_the_annotation_hold() {
        let mut config = fixtures::config();
        config.capacity = None;
        let pack = fixtures::pack("default");
        let mut s = fixtures::bound_session("s1", 0);
        s.spec.resources = Some(SessionResources {
            memory: Some("300Gi".into()),
            ..Default::default()
        });
        assert_eq!(
            validate(&config, &s, &pack).unwrap_err().reason,
            SessionReason::PolicyViolation
        );
        s.metadata.annotations = Some(BTreeMap::from([(
            keys::SESSION_POLICY_ANNOTATION.to_string(),
            r#"{"maxima":{"memory":"512Gi"}}"#.to_string(),
        )]));
        assert_eq!(validate(&config, &s, &pack).unwrap().memory, 300 << 30);
        s.metadata.annotations = Some(BTreeMap::from([(
            keys::SESSION_POLICY_ANNOTATION.to_string(),
            "not json".to_string(),
        )]));
        let e = validate(&config, &s, &pack).unwrap_err();
        assert_eq!(e.reason, SessionReason::InvalidSpec);
        assert!(e.message.contains("medforge.dev/session-policy"), "{e}");
    }

    #[test]
    fn a_session_that_asks_for_nothing_gets_every_limit() {
        let config = fixtures::config();
        let pack = fixtures::pack("default");
        let s = fixtures::bound_session("s1", 0);
        let spec = container_spec(&config, &s, &pack, Path::new("/pool/ws")).unwrap();
        let d = config.policy.defaults;
        let node = config.capacity.unwrap();
        assert_eq!(spec.nano_cpus, Some(d.nano_cpus.min(node.nano_cpus)));
        assert_eq!(spec.memory_bytes, Some(d.memory.min(node.memory) as i64));
        assert_eq!(spec.shm_bytes, Some(d.shm as i64));
        assert_eq!(spec.pids_limit, Some(d.pids));
    }
}
