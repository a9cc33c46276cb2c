//! ZFS in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::down::unless_down;
use crate::agent::runtime::{DatasetObs, Destroyed, Refusal, WorkspaceError, Workspaces};

#[derive(Debug, Clone)]
struct FakeDataset {
    mounted: bool,
    owner: (u32, u32),
    properties: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct ZfsState {
    datasets: BTreeMap<String, FakeDataset>,
    snapshots: BTreeSet<String>,
    down: bool,
}

/// ZFS in memory; mountpoints are `/fake/<dataset>`.
#[derive(Debug, Clone, Default)]
pub struct FakeWorkspaces {
    state: Arc<Mutex<ZfsState>>,
}

/// Where a fake clone keeps its origin (ZFS's `origin` property).
const ORIGIN: &str = "origin";

fn mountpoint(dataset: &str) -> PathBuf {
    Path::new("/fake").join(dataset)
}

impl FakeWorkspaces {
    pub fn datasets(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .datasets
            .keys()
            .cloned()
            .collect()
    }
    pub fn snapshots(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .iter()
            .cloned()
            .collect()
    }
    pub fn add_snapshot(&self, name: &str) {
        self.state
            .lock()
            .unwrap()
            .snapshots
            .insert(name.to_string());
    }
    pub fn property(&self, dataset: &str, key: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .datasets
            .get(dataset)?
            .properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }
    fn check(&self) -> Result<MutexGuard<'_, ZfsState>, WorkspaceError> {
        unless_down(
            &self.state,
            |st| st.down,
            || WorkspaceError::Unavailable {
                cause: "zfs-fuse is not running".into(),
            },
        )
    }
}

fn add_dataset(
    st: &mut ZfsState,
    dataset: &str,
    properties: &[(String, String)],
) -> Result<(), WorkspaceError> {
    if st.datasets.contains_key(dataset) {
        return Err(WorkspaceError::Refused {
            command: format!("zfs create {dataset}"),
            stderr: format!("cannot create '{dataset}': dataset already exists"),
            why: Refusal::AlreadyExists,
        });
    }
    if let Some((_, q)) = properties.iter().find(|(k, _)| k == "quota")
        && q.parse::<u64>().unwrap_or(0) < 1 << 20
    {
        return Err(WorkspaceError::Refused {
            command: format!("zfs create {dataset}"),
            stderr: format!("cannot create '{dataset}': out of space"),
            why: Refusal::Other,
        });
    }
    st.datasets.insert(
        dataset.to_string(),
        FakeDataset {
            mounted: true,
            owner: (0, 0),
            properties: properties.to_vec(),
        },
    );
    Ok(())
}

impl Workspaces for FakeWorkspaces {
    async fn inspect(&self, dataset: &str) -> Result<Option<DatasetObs>, WorkspaceError> {
        let st = self.check()?;
        let prefix = format!("{dataset}@");
        Ok(st.datasets.get(dataset).map(|d| DatasetObs {
            name: dataset.to_string(),
            mountpoint: Some(mountpoint(dataset)),
            mounted: d.mounted,
            owner: d.mounted.then_some(d.owner),
            snapshots: st
                .snapshots
                .iter()
                .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
                .collect(),
        }))
    }

    async fn snapshot_exists(&self, snapshot: &str) -> Result<bool, WorkspaceError> {
        Ok(self.check()?.snapshots.contains(snapshot))
    }

    async fn create(
        &self,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        add_dataset(&mut *self.check()?, dataset, properties)
    }

    async fn clone_from(
        &self,
        snapshot: &str,
        dataset: &str,
        properties: &[(String, String)],
    ) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        if !st.snapshots.contains(snapshot) {
            return Err(WorkspaceError::NotFound {
                what: format!("snapshot {snapshot}"),
            });
        }
        add_dataset(&mut st, dataset, properties)?;
        let d = st.datasets.get_mut(dataset).unwrap();
        d.owner = (1000, 1000);
        d.properties
            .push((ORIGIN.to_string(), snapshot.to_string()));
        Ok(())
    }

    async fn mount(&self, dataset: &str) -> Result<(), WorkspaceError> {
        if let Some(d) = self.check()?.datasets.get_mut(dataset) {
            d.mounted = true;
        }
        Ok(())
    }

    async fn chown(&self, path: &Path, uid: u32, gid: u32) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let name = st
            .datasets
            .keys()
            .find(|d| mountpoint(d) == path)
            .cloned()
            .ok_or_else(|| WorkspaceError::io(path, "no such directory"))?;
        st.datasets.get_mut(&name).unwrap().owner = (uid, gid);
        Ok(())
    }

    async fn snapshot(&self, snapshot: &str) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let dataset = snapshot.split('@').next().unwrap_or("");
        if !st.datasets.contains_key(dataset) {
            return Err(WorkspaceError::NotFound {
                what: dataset.to_string(),
            });
        }
        st.snapshots.insert(snapshot.to_string());
        Ok(())
    }

    async fn destroy(&self, dataset: &str) -> Result<Destroyed, WorkspaceError> {
        let mut st = self.check()?;
        if st.datasets.remove(dataset).is_none() {
            return Ok(Destroyed::AlreadyGone);
        }
        let prefix = format!("{dataset}@");
        st.snapshots.retain(|s| !s.starts_with(&prefix));
        Ok(Destroyed::Destroyed)
    }

    async fn destroy_snapshot(&self, snapshot: &str) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let clones: Vec<String> = st
            .datasets
            .iter()
            .filter(|(_, d)| {
                d.properties
                    .iter()
                    .any(|(k, v)| k == ORIGIN && v == snapshot)
            })
            .map(|(name, _)| name.clone())
            .collect();
        if !clones.is_empty() {
            return Err(WorkspaceError::Refused {
                command: format!("zfs destroy {snapshot}"),
                stderr: format!("cannot destroy '{snapshot}': snapshot has dependent clones"),
                why: Refusal::DependentClones(clones),
            });
        }
        st.snapshots.remove(snapshot);
        Ok(())
    }

    async fn user_property(
        &self,
        dataset: &str,
        key: &str,
    ) -> Result<Option<String>, WorkspaceError> {
        let st = self.check()?;
        Ok(st
            .datasets
            .get(dataset)
            .and_then(|d| d.properties.iter().find(|(k, _)| k == key))
            .map(|(_, v)| v.clone()))
    }

    async fn retire(&self, dataset: &str, stamp: &str) -> Result<(), WorkspaceError> {
        let mut st = self.check()?;
        let Some(d) = st.datasets.get_mut(dataset) else {
            return Err(WorkspaceError::NotFound {
                what: dataset.to_string(),
            });
        };
        d.mounted = false;
        d.properties
            .retain(|(k, _)| k != medforge_crds::keys::dataset::RETIRED);
        d.properties.push((
            medforge_crds::keys::dataset::RETIRED.to_string(),
            stamp.to_string(),
        ));
        Ok(())
    }

    async fn origins(&self, root: &str) -> Result<BTreeSet<String>, WorkspaceError> {
        let st = self.check()?;
        Ok(st
            .datasets
            .iter()
            .filter(|(name, _)| name.starts_with(root))
            .flat_map(|(_, d)| d.properties.iter())
            .filter(|(k, _)| k == ORIGIN)
            .map(|(_, v)| v.clone())
            .collect())
    }

    async fn snapshot_size(&self, snapshot: &str) -> Result<Option<i64>, WorkspaceError> {
        Ok(self.check()?.snapshots.contains(snapshot).then_some(0))
    }
}
