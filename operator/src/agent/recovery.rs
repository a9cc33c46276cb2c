//! What the agent finds on its node that no Session accounts for.
//!
//! Containers of live Sessions are adopted by the reconciler itself (it finds
//! them by name and uid label and never creates a second one). Containers
//! labelled with this node whose Session is gone, or bound elsewhere, are
//! orphans: the sweep removes them once they are older than a grace period
//! (a container just created may belong to a Session the cache has not shown
//! yet), with an Event on the GpuNode.

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::runtime::{ContainerError, ContainerSummary, Containers, labels};

/// The containers to remove: labelled with no live session's uid, and
/// created more than `grace` ago.
pub fn orphans<'a>(
    containers: &'a [ContainerSummary],
    live_uids: &HashSet<String>,
    grace: Duration,
    now: Timestamp,
) -> Vec<&'a ContainerSummary> {
    containers
        .iter()
        .filter(|c| c.session_uid().is_none_or(|uid| !live_uids.contains(uid)))
        .filter(|c| {
            c.created.is_some_and(|t| {
                now.as_millisecond() - t.as_millisecond() >= grace.as_millis() as i64
            })
        })
        .collect()
}

/// What one sweep saw and did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sweep {
    /// Containers of live sessions.
    pub adopted: usize,
    /// Orphans removed.
    pub removed: Vec<ContainerSummary>,
    /// Orphans still inside their grace period.
    pub waiting: usize,
}

/// Lists this node's containers and removes the orphans.
pub async fn sweep<C: Containers>(
    containers: &C,
    node: &str,
    live_uids: &HashSet<String>,
    grace: Duration,
    now: Timestamp,
) -> Result<Sweep, ContainerError> {
    let all = containers
        .list(&[(labels::NODE.to_string(), node.to_string())])
        .await?;
    let adopted = all
        .iter()
        .filter(|c| c.session_uid().is_some_and(|u| live_uids.contains(u)))
        .count();
    let doomed = orphans(&all, live_uids, grace, now);
    let mut out = Sweep {
        adopted,
        removed: Vec::new(),
        waiting: all.len() - adopted - doomed.len(),
    };
    for c in doomed {
        containers.remove(&c.id).await?;
        out.removed.push(c.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn summary(id: &str, uid: Option<&str>, created: i64) -> ContainerSummary {
        let mut labels = BTreeMap::new();
        if let Some(u) = uid {
            labels.insert(labels::SESSION_UID.to_string(), u.to_string());
        }
        ContainerSummary {
            id: id.into(),
            name: format!("mf-session-{id}"),
            labels,
            created: Some(Timestamp::from_second(created).unwrap()),
            running: true,
        }
    }

    #[test]
    fn only_old_containers_of_gone_sessions_are_orphans() {
        let all = vec![
            summary("live", Some("u1"), 0),
            summary("gone-old", Some("u2"), 0),
            summary("gone-young", Some("u3"), 95),
            summary("unlabelled", None, 0),
        ];
        let live = HashSet::from(["u1".to_string()]);
        let now = Timestamp::from_second(100).unwrap();
        let ids: Vec<&str> = orphans(&all, &live, Duration::from_secs(30), now)
            .into_iter()
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(ids, vec!["gone-old", "unlabelled"]);
    }
}
