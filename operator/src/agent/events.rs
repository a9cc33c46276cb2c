//! Docker's event stream, so that a container that dies is seen within a
//! second instead of at the next resync.
//!
//! Container events of this node's sessions (`start`, `die`, `oom`,
//! `destroy`) become reconcile requests for their Session, named by the
//! container's labels. When the stream breaks (dockerd restarting), the
//! watcher reconnects with backoff, asks Docker to replay what it missed
//! (`since` the last event seen) and asks for one reconcile of every session,
//! since a restarted daemon has forgotten its old events.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use medforge_crds::Session;
use tokio::sync::mpsc;

use super::metrics::{Health, Metrics};
use super::runtime::labels;

/// The events that can change what a session's container looks like.
const ACTIONS: &[&str] = &["start", "die", "oom", "destroy", "stop", "kill"];

/// The Session a container event is about, from the container's labels.
pub fn session_of(event: &EventMessage) -> Option<ObjectRef<Session>> {
    let attrs = event.actor.as_ref()?.attributes.as_ref()?;
    let ns = attrs.get(labels::SESSION_NAMESPACE)?;
    let name = attrs.get(labels::SESSION_NAME)?;
    Some(ObjectRef::new(name).within(ns))
}

/// Watches until the future is dropped. `sessions` gets one request per
/// event; `everyone` one request after each reconnection.
pub async fn watch(
    docker: Docker,
    node: String,
    sessions: mpsc::Sender<ObjectRef<Session>>,
    everyone: mpsc::Sender<()>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) {
    let min = Duration::from_millis(100);
    let max = Duration::from_secs(5);
    let mut delay = min;
    // Replays events from the agent's start: nothing between start-up and
    // the first subscription is lost.
    let mut since = Timestamp::now();
    let mut broke = false;
    loop {
        if let Err(e) = docker.ping().await {
            if health.docker_connected.swap(false, Ordering::Relaxed) || !broke {
                tracing::warn!(error = %e, "Docker is not answering; watching for it to come back");
            }
            broke = true;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(max);
            continue;
        }
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "label".to_string(),
                vec![format!("{}={node}", labels::NODE)],
            ),
            (
                "event".to_string(),
                ACTIONS.iter().map(|a| a.to_string()).collect(),
            ),
        ]);
        let mut stream = docker.events(Some(EventsOptions {
            since: Some(format!(
                "{}.{:09}",
                since.as_second(),
                since.subsec_nanosecond()
            )),
            until: None,
            filters: Some(filters),
        }));
        health.docker_connected.store(true, Ordering::Relaxed);
        if broke {
            tracing::info!("Docker answers again; looking at every session");
            let _ = everyone.try_send(());
        }
        delay = min;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    metrics.docker_events.inc();
                    if let Some(nanos) = event.time_nano
                        && let Ok(t) = Timestamp::from_nanosecond(i128::from(nanos))
                    {
                        since = t;
                    }
                    if let Some(target) = session_of(&event) {
                        tracing::debug!(action = ?event.action, session = %target, "container event");
                        if sessions.send(target).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the Docker event stream broke");
                    break;
                }
            }
        }
        health.docker_connected.store(false, Ordering::Relaxed);
        broke = true;
        // Events at the very second of the break are replayed rather than lost.
        since = Timestamp::from_second(since.as_second() - 1).unwrap_or(since);
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    #[test]
    fn events_name_their_session() {
        let event = EventMessage {
            action: Some("die".into()),
            actor: Some(EventActor {
                id: Some("abc".into()),
                attributes: Some(HashMap::from([
                    (labels::SESSION_NAMESPACE.to_string(), "ns".to_string()),
                    (labels::SESSION_NAME.to_string(), "s1".to_string()),
                    ("exitCode".to_string(), "137".to_string()),
                ])),
            }),
            ..Default::default()
        };
        assert_eq!(session_of(&event), Some(ObjectRef::new("s1").within("ns")));
        assert_eq!(session_of(&EventMessage::default()), None);
    }
}
