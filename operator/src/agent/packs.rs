//! This node's side of every Pack: pulls the image of a Pack marked
//! `prePull` when the node lacks it, and keeps the node's entry in the
//! Pack's `status.nodes` true (`Present`, `Pulling`, `Failed`, `Absent`).
//! Each agent writes only its own entry, by server-side apply under its own
//! field manager, so agents never overwrite each other's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use medforge_crds::conditions::find;
use medforge_crds::{ImageState, Pack, PackCondition, PackNodeImage, SessionReason, is_pinned};

use super::metrics::Metrics;
use super::pulls::{PullState, Pulls, pullable};
use super::runtime::Containers;

/// A pass runs every `packs_period`, and every 2 s while a pull runs.
const PULLING_PERIOD: Duration = Duration::from_secs(2);
/// A pull's progress is written to the Pack at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// A failed resolution of the same generation is tried again this often.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);

/// Resolves a Pack's tag to a digest for its generation, unless a node
/// agent has (or this one tried lately), and writes it to the Pack's status
/// (`resolvedImage`, `Resolved`), guarded by the resourceVersion read: of
/// two agents resolving at once, one write lands and the other is refused,
/// so every node runs the same digest.
async fn resolve<C: Containers>(
    api: &Api<Pack>,
    containers: &C,
    pulls: &Pulls,
    node: &str,
    pack: &Pack,
    tried: &mut HashMap<String, (Option<i64>, Instant)>,
) {
    let name = pack.name_any();
    let generation = pack.metadata.generation;
    let st = pack.status.clone().unwrap_or_default();
    if st.observed_generation == generation && generation.is_some() {
        if st.resolved_image.is_some() {
            return;
        }
        if let Some((g, at)) = tried.get(&name)
            && *g == generation
            && at.elapsed() < RESOLVE_RETRY
        {
            return;
        }
    }
    tried.insert(name.clone(), (generation, Instant::now()));
    let image = &pack.spec.image;
    let outcome = match pulls.credentials(image) {
        Ok(credentials) => containers.resolve(image, credentials.as_ref()).await,
        Err(message) => Err(super::runtime::PullError::Failed {
            image: image.clone(),
            message,
        }),
    };
    let (resolved, status, reason, message) = match &outcome {
        Ok(pinned) => (
            Some(pinned.clone()),
            "True",
            SessionReason::TagResolved,
            format!("{image} named {pinned} when node {node} asked its registry"),
        ),
        Err(e) => (None, "False", e.reason(), e.to_string()),
    };
    let current = find(&st.conditions, PackCondition::Resolved);
    if st.observed_generation == generation
        && st.resolved_image == resolved
        && current.is_some_and(|c| {
            c.status == status && c.reason == reason.as_str() && c.message == message
        })
    {
        return;
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": pack.resource_version()},
        "status": {
            "observedGeneration": generation,
            "resolvedImage": resolved,
            "conditions": [{
                "type": PackCondition::Resolved.as_str(),
                "status": status,
                "reason": reason.as_str(),
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": Time(Timestamp::now()),
            }],
        },
    });
    match api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => match &outcome {
            Ok(pinned) => tracing::info!(pack = %name, %image, %pinned, "resolved the Pack's tag"),
            Err(e) => tracing::warn!(pack = %name, error = %e, "could not resolve the Pack's tag"),
        },
        // Another agent wrote first (409), or the Pack changed: the next
        // pass reads it again.
        Err(e) => {
            tracing::debug!(pack = %name, error = %e, "the Pack's resolution was not written")
        }
    }
}

/// The field manager of a node's entries.
pub fn field_manager(node: &str) -> String {
    format!("medforge-agent.{node}")
}

/// What this node says of one Pack's image, and whether a pull runs.
pub fn observe(
    node: &str,
    image: &str,
    present: bool,
    pull: Option<PullState>,
) -> (PackNodeImage, bool) {
    let image = image.to_string();
    let entry = |state, reason: Option<String>, message: Option<String>| PackNodeImage {
        node: node.to_string(),
        image: image.clone(),
        state,
        reason,
        message,
        last_transition_time: None,
    };
    match (present, pull) {
        (true, _) | (false, Some(PullState::Done)) => {
            (entry(ImageState::Present, None, None), false)
        }
        (false, Some(PullState::Pulling(p))) => (
            entry(
                ImageState::Pulling,
                None,
                Some(super::plan::pull_message(&image, &p)),
            ),
            true,
        ),
        (
            false,
            Some(PullState::Failed {
                error,
                attempts,
                retry_in,
            }),
        ) => (
            entry(
                ImageState::Failed,
                Some(error.reason().to_string()),
                Some(format!(
                    "{error} (attempt {attempts}; next in {}s when something needs it)",
                    retry_in.as_secs().max(1)
                )),
            ),
            false,
        ),
        (false, None) => (entry(ImageState::Absent, None, None), false),
    }
}

/// Runs until the agent stops.
pub async fn run<C: Containers>(
    client: Client,
    node: String,
    containers: C,
    pulls: Pulls,
    metrics: Arc<Metrics>,
    every: Duration,
) {
    let api = Api::<Pack>::all(client);
    let (reader, writer) = kube::runtime::reflector::store::<Pack>();
    let mut changes = Box::pin(kube::runtime::reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()),
    ));
    // What this agent last wrote per Pack (the entry, and when its progress
    // was last written).
    let mut written: HashMap<String, (PackNodeImage, Instant)> = HashMap::new();
    // When this agent last asked a registry about a Pack's tag, and for
    // which generation.
    let mut tried: HashMap<String, (Option<i64>, Instant)> = HashMap::new();
    let mut period = every;
    // The store holds every Pack once the first list is done (waiting on
    // the store here would stop the stream that fills it).
    let mut synced = false;
    loop {
        tokio::select! {
            event = changes.next() => match event {
                Some(Ok(watcher::Event::InitDone)) => synced = true,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "Pack watch");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                None => return,
            },
            _ = tokio::time::sleep(period) => {}
        }
        if !synced {
            continue;
        }
        let mut pulling = false;
        for pack in reader.state() {
            let name = pack.name_any();
            if !is_pinned(&pack.spec.image) {
                resolve(&api, &containers, &pulls, &node, &pack, &mut tried).await;
            }
            // A tag not resolved yet: nothing to pull or say of it.
            let Some(image) = pack.pinned_image() else {
                continue;
            };
            let present = match containers.image_present(image).await {
                Ok(p) => p,
                // Docker does not answer: the GpuNode says so; nothing to
                // say of the image.
                Err(_) => continue,
            };
            let pull = if present || !pullable(image) {
                None
            } else if pack.spec.pre_pull {
                Some(pulls.ensure(&containers, image, &metrics))
            } else {
                pulls.peek(image)
            };
            let (mut entry, running) = observe(&node, image, present, pull);
            pulling |= running;
            let current = pack
                .status
                .as_ref()
                .and_then(|st| st.nodes.iter().find(|n| n.node == node));
            let same_state = |e: &PackNodeImage| {
                e.image == entry.image && e.state == entry.state && e.reason == entry.reason
            };
            let last = written.get(&name);
            let due = match (current, last) {
                (Some(c), _) if !same_state(c) => true,
                (None, _) => true,
                (Some(c), Some((w, at))) => {
                    c.message != entry.message
                        && (w.message != entry.message)
                        && at.elapsed() >= PROGRESS_EVERY
                }
                (Some(c), None) => c.message != entry.message,
            };
            if !due {
                continue;
            }
            entry.last_transition_time = match current {
                Some(c) if same_state(c) => c.last_transition_time.clone(),
                _ => Some(Time(Timestamp::now())),
            };
            let patch = serde_json::json!({
                "apiVersion": "medforge.dev/v1alpha1",
                "kind": "Pack",
                "metadata": {"name": name},
                "status": {"nodes": [entry]},
            });
            let params = PatchParams::apply(&field_manager(&node)).force();
            match api
                .patch_status(&name, &params, &Patch::Apply(&patch))
                .await
            {
                Ok(_) => {
                    written.insert(name, (entry, Instant::now()));
                }
                Err(e) => {
                    tracing::debug!(pack = %name, error = %e, "could not write the node's image state")
                }
            }
        }
        period = if pulling {
            PULLING_PERIOD.min(every)
        } else {
            every
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::runtime::{PullError, PullProgress};

    fn pack() -> Pack {
        crate::agent::testing::pack("p")
    }

    #[test]
    fn the_entry_says_what_the_node_has() {
        let (e, running) = observe("n1", &pack().spec.image, true, None);
        assert_eq!(
            (e.node.as_str(), e.state, running),
            ("n1", ImageState::Present, false)
        );
        let (e, _) = observe("n1", &pack().spec.image, false, None);
        assert_eq!(e.state, ImageState::Absent);
        let progress = PullProgress {
            queued: false,
            done: 512,
            total: 2048,
        };
        let (e, running) = observe(
            "n1",
            &pack().spec.image,
            false,
            Some(PullState::Pulling(progress)),
        );
        assert_eq!((e.state, running), (ImageState::Pulling, true));
        assert!(e.message.unwrap().contains("512 B of 2.0 KiB (25%)"));
        let error = PullError::Unauthorized {
            image: "x".into(),
            message: "unauthorized: authentication required".into(),
        };
        let (e, running) = observe(
            "n1",
            &pack().spec.image,
            false,
            Some(PullState::Failed {
                error,
                attempts: 2,
                retry_in: Duration::from_secs(20),
            }),
        );
        assert_eq!(
            (e.state, e.reason.as_deref(), running),
            (ImageState::Failed, Some("Unauthorized"), false)
        );
        assert!(e.message.unwrap().contains("authentication required"));
    }
}
