//! Docker in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::down::unless_down;
use crate::agent::runtime::{
    ContainerError, ContainerObs, ContainerSpec, ContainerState, ContainerSummary, Containers,
    PullError, PullProgress, RegistryCredentials,
};

#[derive(Debug, Default)]
struct DockerState {
    containers: BTreeMap<String, (ContainerObs, ContainerSpec)>,
    images: BTreeSet<String>,
    /// What a pull gives: images a registry serves, or the error every pull
    /// answers with.
    registry: BTreeSet<String>,
    pull_error: Option<PullError>,
    pulls: u32,
    networks: BTreeSet<String>,
    next: u32,
    down: bool,
    created: u32,
    started: u32,
    /// Open connections every running container reports.
    connections: u32,
}

/// Docker in memory.
#[derive(Debug, Clone, Default)]
pub struct FakeContainers {
    state: Arc<Mutex<DockerState>>,
}

impl FakeContainers {
    pub fn with_image(image: &str) -> FakeContainers {
        let f = FakeContainers::default();
        f.state.lock().unwrap().images.insert(image.to_string());
        f
    }

    /// A registry serves `image`: a pull of it succeeds.
    pub fn publish(&self, image: &str) {
        self.state
            .lock()
            .unwrap()
            .registry
            .insert(image.to_string());
    }

    /// Every pull fails with `error` (`None`: pulls work again).
    pub fn fail_pulls(&self, error: Option<PullError>) {
        self.state.lock().unwrap().pull_error = error;
    }

    /// Pulls asked for.
    pub fn pulls(&self) -> u32 {
        self.state.lock().unwrap().pulls
    }

    /// Every running container reports this many open connections.
    pub fn set_connections(&self, n: u32) {
        self.state.lock().unwrap().connections = n;
    }

    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    /// Containers labelled with this session uid.
    pub fn of_session(&self, uid: &str) -> Vec<ContainerObs> {
        self.state
            .lock()
            .unwrap()
            .containers
            .values()
            .filter(|(c, _)| c.session_uid() == Some(uid))
            .map(|(c, _)| c.clone())
            .collect()
    }

    pub fn spec_of(&self, id: &str) -> Option<ContainerSpec> {
        self.state
            .lock()
            .unwrap()
            .containers
            .get(id)
            .map(|(_, s)| s.clone())
    }

    /// How many creates and starts Docker was asked for.
    pub fn counts(&self) -> (u32, u32) {
        let st = self.state.lock().unwrap();
        (st.created, st.started)
    }

    /// The container's process dies.
    pub fn kill(&self, id: &str, code: i64) {
        let mut st = self.state.lock().unwrap();
        if let Some((c, _)) = st.containers.get_mut(id) {
            c.state = ContainerState::Exited;
            c.exit_code = Some(code);
            c.finished_at = Some(Timestamp::now());
        }
    }

    pub fn delete(&self, id: &str) {
        self.state.lock().unwrap().containers.remove(id);
    }

    fn check(&self) -> Result<MutexGuard<'_, DockerState>, ContainerError> {
        unless_down(
            &self.state,
            |st| st.down,
            || ContainerError::Unavailable {
                cause: "connection refused".into(),
            },
        )
    }
}

fn find<'a>(
    st: &'a mut DockerState,
    name_or_id: &str,
) -> Option<&'a mut (ContainerObs, ContainerSpec)> {
    st.containers
        .values_mut()
        .find(|(c, _)| c.id == name_or_id || c.name == name_or_id)
}

impl Containers for FakeContainers {
    async fn inspect(&self, name_or_id: &str) -> Result<Option<ContainerObs>, ContainerError> {
        let mut st = self.check()?;
        Ok(find(&mut st, name_or_id).map(|(c, _)| c.clone()))
    }

    async fn list(
        &self,
        labels: &[(String, String)],
    ) -> Result<Vec<ContainerSummary>, ContainerError> {
        let st = self.check()?;
        Ok(st
            .containers
            .values()
            .filter(|(c, _)| labels.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .map(|(c, _)| ContainerSummary {
                id: c.id.clone(),
                name: c.name.clone(),
                labels: c.labels.clone(),
                created: Some(Timestamp::UNIX_EPOCH),
                running: c.state == ContainerState::Running,
            })
            .collect())
    }

    async fn image_present(&self, image: &str) -> Result<bool, ContainerError> {
        Ok(self.check()?.images.contains(image))
    }

    async fn pull(
        &self,
        image: &str,
        _credentials: Option<&RegistryCredentials>,
        progress: &tokio::sync::watch::Sender<PullProgress>,
    ) -> Result<(), PullError> {
        let mut st = self.state.lock().unwrap();
        st.pulls += 1;
        if let Some(e) = st.pull_error.clone() {
            return Err(e);
        }
        if !st.registry.contains(image) {
            return Err(PullError::NotFound {
                image: image.to_string(),
                message: "manifest unknown".to_string(),
            });
        }
        st.images.insert(image.to_string());
        progress.send_replace(PullProgress {
            queued: false,
            done: 1,
            total: 1,
        });
        Ok(())
    }

    async fn resolve(
        &self,
        image: &str,
        _credentials: Option<&RegistryCredentials>,
    ) -> Result<String, PullError> {
        let st = self.state.lock().unwrap();
        if let Some(e) = st.pull_error.clone() {
            return Err(e);
        }
        let repo = crate::agent::runtime::repository_of(image);
        st.registry
            .iter()
            .find(|i| i.starts_with(&format!("{repo}@")))
            .cloned()
            .ok_or_else(|| PullError::NotFound {
                image: image.to_string(),
                message: "manifest unknown".to_string(),
            })
    }

    async fn ensure_network(&self, name: &str) -> Result<(), ContainerError> {
        self.check()?.networks.insert(name.to_string());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, ContainerError> {
        let mut st = self.check()?;
        if !st.images.contains(&spec.image) {
            return Err(ContainerError::NotFound {
                what: format!("image {}", spec.image),
            });
        }
        if st.containers.values().any(|(c, _)| c.name == spec.name) {
            return Err(ContainerError::Conflict {
                name: spec.name.clone(),
            });
        }
        st.next += 1;
        st.created += 1;
        let id = format!("c{:04}", st.next);
        let obs = ContainerObs {
            id: id.clone(),
            name: spec.name.clone(),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            error: None,
            ip: None,
            restart_count: 0,
            pid: None,
        };
        st.containers.insert(id.clone(), (obs, spec.clone()));
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        let n = st.next;
        st.started += 1;
        let Some((c, _)) = find(&mut st, id) else {
            return Err(ContainerError::NotFound {
                what: format!("container {id}"),
            });
        };
        c.state = ContainerState::Running;
        c.started_at = Some(Timestamp::now());
        c.ip = Some(IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            (n / 250) as u8,
            (n % 250) as u8 + 2,
        )));
        Ok(())
    }

    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        if let Some((c, _)) = find(&mut st, id)
            && c.state == ContainerState::Running
        {
            c.state = ContainerState::Exited;
            c.exit_code = Some(143);
            c.finished_at = Some(Timestamp::now());
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), ContainerError> {
        let mut st = self.check()?;
        let key = find(&mut st, id).map(|(c, _)| c.id.clone());
        if let Some(k) = key {
            st.containers.remove(&k);
        }
        Ok(())
    }

    async fn open_connections(&self, c: &ContainerObs, _port: u16) -> Result<u32, ContainerError> {
        let st = self.check()?;
        let running = st
            .containers
            .get(&c.id)
            .is_some_and(|(c, _)| c.state == ContainerState::Running);
        Ok(if running { st.connections } else { 0 })
    }
}
