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
use medforge_crds::{ImageState, Pack, PackNodeImage};

use super::metrics::Metrics;
use super::pulls::{PullState, Pulls, pullable};
use super::runtime::Containers;

/// A pass runs every `packs_period`, and every 2 s while a pull runs.
const PULLING_PERIOD: Duration = Duration::from_secs(2);
/// A pull's progress is written to the Pack at most this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The field manager of a node's entries.
pub fn field_manager(node: &str) -> String {
    format!("medforge-agent.{node}")
}

/// What this node says of one Pack's image, and whether a pull runs.
pub fn observe(
    node: &str,
    pack: &Pack,
    present: bool,
    pull: Option<PullState>,
) -> (PackNodeImage, bool) {
    let image = pack.spec.image.clone();
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
            let image = &pack.spec.image;
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
            let (mut entry, running) = observe(&node, &pack, present, pull);
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
        let (e, running) = observe("n1", &pack(), true, None);
        assert_eq!(
            (e.node.as_str(), e.state, running),
            ("n1", ImageState::Present, false)
        );
        let (e, _) = observe("n1", &pack(), false, None);
        assert_eq!(e.state, ImageState::Absent);
        let progress = PullProgress {
            queued: false,
            done: 512,
            total: 2048,
        };
        let (e, running) = observe("n1", &pack(), false, Some(PullState::Pulling(progress)));
        assert_eq!((e.state, running), (ImageState::Pulling, true));
        assert!(e.message.unwrap().contains("512 B of 2.0 KiB (25%)"));
        let error = PullError::Unauthorized {
            image: "x".into(),
            message: "unauthorized: authentication required".into(),
        };
        let (e, running) = observe(
            "n1",
            &pack(),
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
