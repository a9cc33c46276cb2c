//! The image pulls of one node. Sessions (and pre-pulled Packs) that need
//! the same image share one pull; at most `max_concurrent` run at once, the
//! rest wait for a slot; a failed pull is tried again, with a backoff that
//! doubles, only when something asks for the image again after it; progress
//! is readable while a pull runs. Pulls run in their own tasks, so a
//! reconcile only looks at them and never waits on one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::{Semaphore, watch};

use super::config::PullPolicy;
use super::metrics::Metrics;
use super::runtime::{Containers, PullError, PullProgress, RegistryCredentials};

/// How long a finished pull is remembered as done: the session that waited
/// for it sees the image on its next look.
const DONE_FOR: Duration = Duration::from_secs(30);

/// Where one image's pull stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullState {
    /// Running, or waiting for a slot.
    Pulling(PullProgress),
    /// The last attempt failed; the next starts when asked after `retry_in`.
    Failed {
        error: PullError,
        attempts: u32,
        retry_in: Duration,
    },
    /// Pulled just now.
    Done,
}

#[derive(Debug)]
enum Entry {
    Running(watch::Receiver<PullProgress>),
    Failed {
        error: PullError,
        attempts: u32,
        retry_at: Instant,
    },
    Done(Instant),
}

/// The node's pulls.
#[derive(Debug, Clone)]
pub struct Pulls {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    slots: Arc<Semaphore>,
    policy: PullPolicy,
}

impl Pulls {
    pub fn new(policy: PullPolicy) -> Pulls {
        Pulls {
            entries: Arc::default(),
            slots: Arc::new(Semaphore::new(policy.max_concurrent.max(1))),
            policy,
        }
    }

    /// The image's pull as it stands, starting one when none runs (and a
    /// failed one's backoff has passed). Call it only for an image the node
    /// lacks.
    pub fn ensure<C: Containers>(
        &self,
        containers: &C,
        image: &str,
        metrics: &Arc<Metrics>,
    ) -> PullState {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap();
        let attempts = match entries.get(image) {
            Some(Entry::Running(rx)) => return PullState::Pulling(*rx.borrow()),
            Some(Entry::Done(at)) if now.duration_since(*at) < DONE_FOR => return PullState::Done,
            Some(Entry::Failed {
                error,
                attempts,
                retry_at,
            }) => {
                if now < *retry_at {
                    return PullState::Failed {
                        error: error.clone(),
                        attempts: *attempts,
                        retry_in: *retry_at - now,
                    };
                }
                *attempts
            }
            _ => 0,
        };
        let first = PullProgress {
            queued: true,
            ..PullProgress::default()
        };
        let (tx, rx) = watch::channel(first);
        entries.insert(image.to_string(), Entry::Running(rx));
        drop(entries);
        let pulls = self.clone();
        let containers = containers.clone();
        let image = image.to_string();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let outcome = pulls.run(&containers, &image, &tx).await;
            metrics.pull_ended(&outcome);
            let entry = match outcome {
                Ok(()) => {
                    tracing::info!(%image, "pulled");
                    Entry::Done(Instant::now())
                }
                Err(error) => {
                    let attempts = attempts + 1;
                    let wait = backoff(&pulls.policy, attempts);
                    tracing::warn!(%image, %error, attempts, retry_in = ?wait, "pull failed");
                    Entry::Failed {
                        error,
                        attempts,
                        retry_at: Instant::now() + wait,
                    }
                }
            };
            pulls.entries.lock().unwrap().insert(image, entry);
        });
        PullState::Pulling(first)
    }

    /// The node's credentials for the image's registry (from the policy's
    /// file, read now).
    pub fn credentials(&self, image: &str) -> Result<Option<RegistryCredentials>, String> {
        match &self.policy.auth_file {
            Some(file) => credentials_for(file, image),
            None => Ok(None),
        }
    }

    /// The image's pull as it stands, starting none.
    pub fn peek(&self, image: &str) -> Option<PullState> {
        let now = Instant::now();
        match self.entries.lock().unwrap().get(image)? {
            Entry::Running(rx) => Some(PullState::Pulling(*rx.borrow())),
            Entry::Done(at) => (now.duration_since(*at) < DONE_FOR).then_some(PullState::Done),
            Entry::Failed {
                error,
                attempts,
                retry_at,
            } => Some(PullState::Failed {
                error: error.clone(),
                attempts: *attempts,
                retry_in: retry_at.saturating_duration_since(now),
            }),
        }
    }

    async fn run<C: Containers>(
        &self,
        containers: &C,
        image: &str,
        progress: &watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        let _slot = self.slots.acquire().await.map_err(|_| PullError::Failed {
            image: image.to_string(),
            message: "the node agent is shutting down".to_string(),
        })?;
        progress.send_replace(PullProgress::default());
        let credentials = self
            .credentials(image)
            .map_err(|message| PullError::Failed {
                image: image.to_string(),
                message,
            })?;
        tracing::info!(%image, with_credentials = credentials.is_some(), "pulling");
        containers.pull(image, credentials.as_ref(), progress).await
    }
}

/// The wait before attempt `attempts + 1`.
fn backoff(policy: &PullPolicy, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    policy
        .backoff_min
        .saturating_mul(factor)
        .min(policy.backoff_max.max(policy.backoff_min))
}

/// Whether `image` names something a registry can serve: a local image id
/// (`sha256:…`) cannot be pulled.
pub fn pullable(image: &str) -> bool {
    !image.starts_with("sha256:")
}

/// The registry host of an image reference, as Docker reads it: the first
/// path component when it looks like a host (a `.` or `:` in it, or
/// `localhost`), Docker Hub otherwise.
pub fn registry_of(image: &str) -> &str {
    let name = image.split('@').next().unwrap_or(image);
    match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The credentials a Docker config file holds for the image's registry:
/// `auths.<host>` with `auth` (base64 of `user:password`), or `username`
/// and `password`, or `identitytoken`. Docker Hub is looked up under its
/// usual keys. A file that cannot be read or parsed is an error naming it.
pub fn credentials_for(file: &Path, image: &str) -> Result<Option<RegistryCredentials>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        format!(
            "cannot read the registry credentials {}: {e}",
            file.display()
        )
    })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "the registry credentials {} are not a Docker config file: {e}",
            file.display()
        )
    })?;
    let host = registry_of(image);
    let keys: Vec<String> = if host == "docker.io" {
        [
            "https://index.docker.io/v1/",
            "index.docker.io",
            "docker.io",
            "registry-1.docker.io",
        ]
        .map(String::from)
        .to_vec()
    } else {
        vec![
            host.to_string(),
            format!("https://{host}"),
            format!("http://{host}"),
        ]
    };
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some(entry) = keys.iter().find_map(|k| {
        auths
            .get(k)
            .or_else(|| auths.get(&format!("{k}/")))
            .and_then(|e| e.as_object())
    }) else {
        return Ok(None);
    };
    let text = |k: &str| {
        entry
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let mut c = RegistryCredentials {
        server: host.to_string(),
        username: text("username"),
        password: text("password"),
        identity_token: text("identitytoken"),
    };
    if let Some(auth) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
            .ok_or_else(|| {
                format!(
                    "the registry credentials {}: auths.{host}.auth is not base64 of user:password",
                    file.display()
                )
            })?;
        c.username = Some(decoded.0);
        c.password = Some(decoded.1);
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::testing::FakeContainers;

    #[test]
    fn registry_hosts_are_read_as_docker_reads_them() {
        assert_eq!(
            registry_of("127.0.0.1:5000/a/b@sha256:00"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/x/y@sha256:00"), "ghcr.io");
        assert_eq!(registry_of("localhost/y"), "localhost");
        assert_eq!(registry_of("jupyter/base-notebook@sha256:00"), "docker.io");
        assert_eq!(registry_of("ubuntu"), "docker.io");
        assert!(!pullable(&format!("sha256:{}", "a".repeat(64))));
        assert!(pullable("ubuntu@sha256:00"));
    }

    #[test]
    fn credentials_come_from_a_docker_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with-colon");
        std::fs::write(
            &file,
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            }})
            .to_string(),
        )
        .unwrap();
        let c = credentials_for(&file, "127.0.0.1:5000/w@sha256:00")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                c.server.as_str(),
                c.username.as_deref(),
                c.password.as_deref()
            ),
            ("127.0.0.1:5000", Some("alice"), Some("s3cret:with-colon"))
        );
        let hub = credentials_for(&file, "library/ubuntu@sha256:00")
            .unwrap()
            .unwrap();
        assert_eq!(hub.username.as_deref(), Some("bob"));
        assert_eq!(credentials_for(&file, "ghcr.io/x@sha256:00").unwrap(), None);
        // Debug never shows the secret.
        assert!(!format!("{c:?}").contains("s3cret"));

        std::fs::write(&file, r#"{"auths": {"ghcr.io": {"auth": "%%%"}}}"#).unwrap();
        let e = credentials_for(&file, "ghcr.io/x@sha256:00").unwrap_err();
        assert!(e.contains("auths.ghcr.io.auth"), "{e}");
        std::fs::write(&file, "not json").unwrap();
        let e = credentials_for(&file, "ghcr.io/x@sha256:00").unwrap_err();
        assert!(e.contains("not a Docker config file"), "{e}");
        let e = credentials_for(&dir.path().join("missing"), "x").unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let p = PullPolicy {
            backoff_min: Duration::from_secs(10),
            backoff_max: Duration::from_secs(45),
            ..PullPolicy::default()
        };
        let waits: Vec<u64> = (1..=5).map(|a| backoff(&p, a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 45, 45]);
    }

    async fn settle(pulls: &Pulls, c: &FakeContainers, image: &str, m: &Arc<Metrics>) -> PullState {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match pulls.ensure(c, image, m) {
                // Polls the spawned pull with a deadline.
                PullState::Pulling(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                other => return other,
            }
        }
    }

    #[tokio::test]
    async fn one_pull_per_image_and_failures_wait_their_backoff() {
        let c = FakeContainers::default();
        let m = Arc::new(Metrics::default());
        let policy = |backoff| PullPolicy {
            backoff_min: backoff,
            backoff_max: backoff,
            ..PullPolicy::default()
        };
        let image = "127.0.0.1:5000/w@sha256:00";
        // Nothing serves it: NotFound, and asking again within the backoff
        // starts no second pull.
        let slow = Pulls::new(policy(Duration::from_secs(3600)));
        let st = settle(&slow, &c, image, &m).await;
        assert!(
            matches!(
                &st,
                PullState::Failed {
                    error: PullError::NotFound { .. },
                    attempts: 1,
                    ..
                }
            ),
            "{st:?}"
        );
        assert!(matches!(
            slow.ensure(&c, image, &m),
            PullState::Failed { .. }
        ));
        assert_eq!(c.pulls(), 1);
        assert_eq!(
            m.pulls_ended(medforge_crds::SessionReason::ImageNotFound),
            1
        );
        // Once the backoff has passed (none here), the next ask tries
        // again, and the image now served is pulled.
        let quick = Pulls::new(policy(Duration::ZERO));
        c.publish(image);
        assert_eq!(settle(&quick, &c, image, &m).await, PullState::Done);
        assert_eq!(c.pulls(), 2);
        // Done is remembered: more asks start nothing.
        for _ in 0..5 {
            assert_eq!(quick.ensure(&c, image, &m), PullState::Done);
        }
        assert_eq!(c.pulls(), 2);
        assert_eq!(m.pulls_ended(medforge_crds::SessionReason::Pulled), 1);
    }
}
