//! Per-test isolation: a random prefix that names the test's dataset,
//! containers, labels and Kubernetes namespace, and a cleanup for all of them.

use std::collections::HashMap;
use std::path::PathBuf;

use bollard::query_parameters::ListContainersOptions;
use rand::Rng;

use crate::dockerd;
use bollard::models::{ContainerCreateBody, HostConfig};

use crate::error::{HarnessError, Result};
use crate::harness::Harness;
use crate::zfs;

/// Label every container of a scope carries (value: the prefix).
pub const SCOPE_LABEL: &str = "dev.medforge.test/scope";

/// A new random prefix: `t` and 7 characters of `[a-z0-9]` (valid as a
/// dataset component, container name and DNS-1123 label).
pub fn random_prefix() -> String {
    const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let tail: String = (0..7)
        .map(|_| char::from(CHARSET[rng.random_range(0..CHARSET.len())]))
        .collect();
    format!("t{tail}")
}

/// A dataset created under a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    pub name: String,
    pub mountpoint: PathBuf,
}

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub containers_removed: Vec<String>,
    pub datasets_destroyed: Vec<String>,
}

impl Harness {
    /// A fresh scope for one test: a unique prefix, its root dataset
    /// `<pool>/<prefix>` (created), and cleanup of everything labelled with it.
    pub async fn scope(&self) -> Result<TestScope> {
        TestScope::create(self.clone()).await
    }

    /// Creates and starts the workload image as `scope.name(suffix)`, as a
    /// session runs it: user 1000, every capability dropped, an init,
    /// `MEDFORGE_SESSION` set to its name, the scope's labels; on `network`
    /// when one is given. Returns the container's name.
    pub async fn start_workload_container(
        &self,
        scope: &TestScope,
        suffix: &str,
        network: Option<&str>,
    ) -> Result<String> {
        let name = scope.name(suffix);
        let config = ContainerCreateBody {
            image: Some(self.workload_image().await?),
            user: Some("1000:1000".into()),
            env: Some(vec![format!("MEDFORGE_SESSION={name}")]),
            labels: Some(scope.labels()),
            host_config: Some(HostConfig {
                network_mode: network.map(str::to_string),
                cap_drop: Some(vec!["ALL".into()]),
                init: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.create_and_start(&name, config).await?;
        Ok(name)
    }
}

/// One test's share of the harness. Call [`TestScope::cleanup`] at the end;
/// if the test panics first, dropping the scope cleans up (best effort, blocking).
pub struct TestScope {
    harness: Harness,
    prefix: String,
    cleaned: bool,
}

impl std::fmt::Debug for TestScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestScope")
            .field("prefix", &self.prefix)
            .field("dataset", &self.dataset())
            .finish()
    }
}

impl TestScope {
    async fn create(harness: Harness) -> Result<TestScope> {
        let prefix = random_prefix();
        let scope = TestScope {
            harness,
            prefix,
            cleaned: false,
        };
        scope
            .harness
            .zfs(["create", "-p", scope.dataset().as_str()])
            .await?;
        Ok(scope)
    }

    /// The harness this scope belongs to.
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// The unique prefix, e.g. `tq3k9z0a`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<prefix>-<suffix>`: a container (or other object) name owned by this scope.
    pub fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// The Kubernetes namespace for this test (the prefix itself).
    pub fn namespace(&self) -> &str {
        &self.prefix
    }

    /// Labels to put on every container of this scope.
    pub fn labels(&self) -> HashMap<String, String> {
        HashMap::from([(SCOPE_LABEL.to_string(), self.prefix.clone())])
    }

    /// The scope's root dataset, `<pool>/<prefix>` (it exists).
    pub fn dataset(&self) -> String {
        format!("{}/{}", self.harness.layout().pool, self.prefix)
    }

    /// Where the scope's root dataset is mounted.
    pub fn dataset_mountpoint(&self) -> PathBuf {
        self.harness.layout().pool_mountpoint.join(&self.prefix)
    }

    /// Creates `<pool>/<prefix>/<name>` (parents too) with `-o` properties
    /// such as `("quota", "64M")`.
    pub async fn create_dataset(&self, name: &str, properties: &[(&str, &str)]) -> Result<Dataset> {
        let full = format!("{}/{name}", self.dataset());
        let mut args = vec!["create".to_string(), "-p".to_string()];
        for (k, v) in properties {
            args.push("-o".to_string());
            args.push(format!("{k}={v}"));
        }
        args.push(full.clone());
        self.harness.zfs(&args).await?;
        let mountpoint = self
            .harness
            .zfs(["get", "-H", "-o", "value", "mountpoint", full.as_str()])
            .await?
            .trim()
            .into();
        Ok(Dataset {
            name: full,
            mountpoint,
        })
    }

    /// Whether a dataset exists (any name, not only this scope's).
    pub async fn dataset_exists(&self, dataset: &str) -> Result<bool> {
        zfs::dataset_exists(self.harness.zfs_binary(), dataset).await
    }

    /// IDs of this scope's containers: labelled with it, or named `<prefix>-…`.
    pub async fn containers(&self) -> Result<Vec<String>> {
        let docker = self.harness.docker();
        let mut ids = Vec::new();
        for filter in [
            ("label", format!("{SCOPE_LABEL}={}", self.prefix)),
            ("name", format!("^/{}-", self.prefix)),
        ] {
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(HashMap::from([(
                        filter.0.to_string(),
                        vec![filter.1.clone()],
                    )])),
                    ..Default::default()
                }))
                .await
                .map_err(HarnessError::docker(format!(
                    "list containers ({})",
                    filter.1
                )))?;
            for c in list {
                if let Some(id) = c.id
                    && !ids.contains(&id)
                {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Removes the scope's containers (forced) and destroys its datasets
    /// (unmounted first, "dataset is busy" retried). Idempotent.
    pub async fn cleanup(&mut self) -> Result<CleanupReport> {
        let report = cleanup_scope(&self.harness, &self.prefix).await?;
        self.cleaned = true;
        Ok(report)
    }
}

async fn cleanup_scope(harness: &Harness, prefix: &str) -> Result<CleanupReport> {
    let scope_view = TestScope {
        harness: harness.clone(),
        prefix: prefix.to_string(),
        cleaned: true,
    };
    let mut report = CleanupReport::default();
    for id in scope_view.containers().await? {
        match dockerd::force_remove(harness.docker(), &id).await {
            Ok(()) => report.containers_removed.push(id),
            // Already gone (removed concurrently): fine.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => return Err(HarnessError::docker(format!("remove container {id}"))(e)),
        }
    }
    report.datasets_destroyed =
        zfs::destroy_tree(harness.zfs_binary(), &scope_view.dataset()).await?;
    Ok(report)
}

impl Drop for TestScope {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        // Best effort, on a thread with its own runtime (we may be inside one).
        let harness = self.harness.clone();
        let prefix = self.prefix.clone();
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async move {
                // The handle's client belongs to the test's runtime: use a fresh one.
                let harness = harness.with_fresh_client().map_err(|e| e.to_string())?;
                cleanup_scope(&harness, &prefix)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => eprintln!("medforge-testkit: cleanup of scope {}: {e}", self.prefix),
            Err(_) => eprintln!(
                "medforge-testkit: cleanup of scope {} panicked",
                self.prefix
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_short_unique_dns_labels() {
        let a = random_prefix();
        let b = random_prefix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8);
        assert!(a.starts_with('t'));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }
}
