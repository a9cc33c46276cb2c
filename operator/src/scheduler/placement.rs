//! Where a session goes: pure placement logic, no I/O.
//!
//! [`ClusterView`] is the scheduler's picture of the fleet: the nodes with
//! their GPUs, and which active session holds which GPU. The controller feeds
//! it from the watch cache and asks it for a [`Decision`] per pending Session;
//! it records a binding in the view only after the binding was written, so a
//! crash between choosing and recording leaves nothing held.

use medforge_crds::keys::MAX_SESSIONS_ANNOTATION;
use medforge_crds::{Session, SessionReason};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How to choose among nodes that fit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Policy {
    /// Fill nodes up: the fitting node with the fewest free GPUs, so whole
    /// nodes stay free for large sessions. Ties go to the lowest name.
    #[default]
    Pack,
    /// Spread load: the fitting node with the most free GPUs.
    Spread,
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pack" => Ok(Policy::Pack),
            "spread" => Ok(Policy::Spread),
            other => Err(format!(
                "unknown placement policy {other:?}: expected \"pack\" or \"spread\""
            )),
        }
    }
}

/// Per-user limits. A user's own override (set by the api) replaces
/// `max_sessions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Active sessions one user may hold at once.
    pub max_sessions_per_user: u32,
    /// GPUs one user may hold at once, over all their sessions.
    pub max_gpus_per_user: u32,
    /// Whether a session may ask for no GPU at all. Off in production (a
    /// GPU host is for GPU work); the quickstart turns it on so that a
    /// machine without GPUs can try MedForge.
    pub allow_cpu_only: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions_per_user: 1,
            max_gpus_per_user: 8,
            allow_cpu_only: false,
        }
    }
}

/// One GPU as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuView {
    pub index: u32,
    pub uuid: String,
    /// NVML (or the inventory) says it works.
    pub healthy: bool,
    /// An admin cordoned it (`spec.disabledGpus`).
    pub disabled: bool,
}

impl GpuView {
    fn schedulable(&self) -> bool {
        self.healthy && !self.disabled
    }
}

/// One node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    /// `Ready=True` and a fresh heartbeat.
    pub ready: bool,
    /// An admin cordoned the whole node (`spec.unschedulable`).
    pub unschedulable: bool,
    /// Sorted by index.
    pub gpus: Vec<GpuView>,
}

/// A session that holds (or asks for) resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The Session's uid: the key of everything it holds.
    pub session_uid: String,
    pub owner: String,
    pub gpus: u32,
    /// The owner's own session limit, when the api set one.
    pub max_sessions_override: Option<u32>,
    /// The only node it may go to: a resumed session's workspace lives
    /// there, or the snapshot a new session restores from.
    pub node: Option<String>,
}

impl Request {
    /// What a Session asks for: its GPUs, its owner, and the owner's limit
    /// override the api wrote as an annotation.
    pub fn of(s: &Session) -> Request {
        Request {
            session_uid: s.metadata.uid.clone().unwrap_or_default(),
            owner: s.spec.owner.clone(),
            gpus: s.spec.gpus,
            max_sessions_override: s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MAX_SESSIONS_ANNOTATION))
                .and_then(|v| v.parse().ok()),
            node: s.workspace_node().map(str::to_string),
        }
    }
}

/// A GPU chosen for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChosenGpu {
    pub index: u32,
    pub uuid: String,
}

/// Why a session cannot be bound now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// No Ready, schedulable node has enough free healthy GPUs.
    NoGpuAvailable,
    /// The owner is at their session or GPU limit.
    UserLimitReached,
    /// The session asks for no GPU and this installation does not allow that.
    CpuOnlyNotAllowed,
    /// The node holding a resumed session's workspace is gone, not Ready or cordoned.
    WorkspaceNodeUnavailable,
    /// The snapshot a new session restores from has no ready record.
    SnapshotNotFound,
}

impl RefuseReason {
    /// The condition reason as it appears in `status.conditions`.
    pub fn reason(self) -> SessionReason {
        match self {
            RefuseReason::NoGpuAvailable => SessionReason::NoGpuAvailable,
            RefuseReason::UserLimitReached => SessionReason::UserLimitReached,
            RefuseReason::CpuOnlyNotAllowed => SessionReason::CpuOnlyNotAllowed,
            RefuseReason::WorkspaceNodeUnavailable => SessionReason::WorkspaceNodeUnavailable,
            RefuseReason::SnapshotNotFound => SessionReason::SnapshotNotFound,
        }
    }

    /// [`RefuseReason::reason`] as written.
    pub fn as_str(self) -> &'static str {
        self.reason().as_str()
    }
}

/// The scheduler's answer for one pending session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Bind {
        node: String,
        gpus: Vec<ChosenGpu>,
    },
    Refuse {
        reason: RefuseReason,
        message: String,
    },
}

/// What one active session holds.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holding {
    owner: String,
    node: String,
    gpus: Vec<String>,
}

/// The fleet and its allocations.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    nodes: BTreeMap<String, NodeView>,
    /// session uid → what it holds.
    holdings: HashMap<String, Holding>,
    /// GPU uuid → session uid holding it.
    held_gpus: HashMap<String, String>,
    /// owner → (sessions, gpus) held.
    per_user: HashMap<String, (u32, u32)>,
}

/// A binding that cannot be recorded because it would give a GPU twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GPU {uuid} is already held by session {holder}")]
pub struct DoubleAllocation {
    pub uuid: String,
    pub holder: String,
}

impl ClusterView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node (from a GpuNode watch event).
    pub fn upsert_node(&mut self, mut node: NodeView) {
        node.gpus.sort_by_key(|g| g.index);
        self.nodes.insert(node.name.clone(), node);
    }

    /// Removes a node. Sessions bound to it keep their holdings until they end.
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn node(&self, name: &str) -> Option<&NodeView> {
        self.nodes.get(name)
    }

    /// Records that an active session holds `gpus` on `node`. Idempotent for
    /// the same session; refuses a GPU another session holds.
    pub fn record(
        &mut self,
        session_uid: &str,
        owner: &str,
        node: &str,
        gpus: &[String],
    ) -> Result<(), DoubleAllocation> {
        for uuid in gpus {
            if let Some(holder) = self.held_gpus.get(uuid)
                && holder != session_uid
            {
                return Err(DoubleAllocation {
                    uuid: uuid.clone(),
                    holder: holder.clone(),
                });
            }
        }
        self.release(session_uid);
        for uuid in gpus {
            self.held_gpus.insert(uuid.clone(), session_uid.to_string());
        }
        let entry = self.per_user.entry(owner.to_string()).or_default();
        entry.0 += 1;
        entry.1 += gpus.len() as u32;
        self.holdings.insert(
            session_uid.to_string(),
            Holding {
                owner: owner.to_string(),
                node: node.to_string(),
                gpus: gpus.to_vec(),
            },
        );
        Ok(())
    }

    /// Frees whatever a session holds (it stopped, failed or was deleted).
    /// Releasing a session that holds nothing is a no-op.
    pub fn release(&mut self, session_uid: &str) {
        let Some(h) = self.holdings.remove(session_uid) else {
            return;
        };
        for uuid in &h.gpus {
            if self.held_gpus.get(uuid).map(String::as_str) == Some(session_uid) {
                self.held_gpus.remove(uuid);
            }
        }
        if let Some(entry) = self.per_user.get_mut(&h.owner) {
            entry.0 = entry.0.saturating_sub(1);
            entry.1 = entry.1.saturating_sub(h.gpus.len() as u32);
            if *entry == (0, 0) {
                self.per_user.remove(&h.owner);
            }
        }
    }

    /// Whether a session holds something.
    pub fn holds(&self, session_uid: &str) -> bool {
        self.holdings.contains_key(session_uid)
    }

    /// The session holding a GPU, if any.
    pub fn holder_of(&self, gpu_uuid: &str) -> Option<&str> {
        self.held_gpus.get(gpu_uuid).map(String::as_str)
    }

    /// Sessions and GPUs the user holds.
    pub fn user_usage(&self, owner: &str) -> (u32, u32) {
        self.per_user.get(owner).copied().unwrap_or((0, 0))
    }

    /// Free, schedulable GPUs of a node, lowest index first.
    pub fn free_gpus<'a>(&'a self, node: &'a NodeView) -> impl Iterator<Item = &'a GpuView> + 'a {
        node.gpus
            .iter()
            .filter(|g| g.schedulable() && !self.held_gpus.contains_key(&g.uuid))
    }

    /// Decides where a pending session goes. Does not record anything.
    pub fn decide(&self, req: &Request, limits: Limits, policy: Policy) -> Decision {
        if let Some(h) = self.holdings.get(&req.session_uid) {
            // Already bound (a repeated pass): the same answer again.
            let node = self.nodes.get(&h.node);
            let gpus = h
                .gpus
                .iter()
                .map(|uuid| ChosenGpu {
                    index: node
                        .and_then(|n| n.gpus.iter().find(|g| &g.uuid == uuid))
                        .map(|g| g.index)
                        .unwrap_or_default(),
                    uuid: uuid.clone(),
                })
                .collect();
            return Decision::Bind {
                node: h.node.clone(),
                gpus,
            };
        }

        if req.gpus == 0 && !limits.allow_cpu_only {
            return Decision::Refuse {
                reason: RefuseReason::CpuOnlyNotAllowed,
                message: "sessions without GPUs are not allowed here (an admin allows them with `medforge up --allow-cpu-only`)".into(),
            };
        }
        let (sessions, gpus) = self.user_usage(&req.owner);
        let max_sessions = req
            .max_sessions_override
            .unwrap_or(limits.max_sessions_per_user);
        if sessions >= max_sessions {
            return Decision::Refuse {
                reason: RefuseReason::UserLimitReached,
                message: format!(
                    "user {} already has {sessions} active session(s); the limit is {max_sessions}",
                    req.owner
                ),
            };
        }
        if gpus + req.gpus > limits.max_gpus_per_user {
            return Decision::Refuse {
                reason: RefuseReason::UserLimitReached,
                message: format!(
                    "user {} holds {gpus} GPU(s) and asks for {} more; the limit is {}",
                    req.owner, req.gpus, limits.max_gpus_per_user
                ),
            };
        }

        if let Some(name) = req.node.as_deref() {
            let why = match self.nodes.get(name) {
                None => Some("is gone"),
                Some(n) if !n.ready => Some("is not Ready"),
                Some(n) if n.unschedulable => Some("is cordoned"),
                Some(_) => None,
            };
            if let Some(why) = why {
                return Decision::Refuse {
                    reason: RefuseReason::WorkspaceNodeUnavailable,
                    message: format!(
                        "the session's workspace (or the snapshot it restores) lives on node {name}, which {why}; it can run only there"
                    ),
                };
            }
        }
        let mut best: Option<(&NodeView, usize)> = None;
        for node in self.nodes.values() {
            if !node.ready || node.unschedulable {
                continue;
            }
            if req.node.as_deref().is_some_and(|only| only != node.name) {
                continue;
            }
            let free = self.free_gpus(node).count();
            if free < req.gpus as usize {
                continue;
            }
            let better = match (best, policy) {
                (None, _) => true,
                (Some((_, b)), Policy::Pack) => free < b,
                (Some((_, b)), Policy::Spread) => free > b,
            };
            if better {
                best = Some((node, free));
            }
        }
        match best {
            Some((node, _)) => Decision::Bind {
                node: node.name.clone(),
                gpus: self
                    .free_gpus(node)
                    .take(req.gpus as usize)
                    .map(|g| ChosenGpu {
                        index: g.index,
                        uuid: g.uuid.clone(),
                    })
                    .collect(),
            },
            None => Decision::Refuse {
                reason: RefuseReason::NoGpuAvailable,
                message: match req.node.as_deref().and_then(|n| self.nodes.get(n)) {
                    Some(node) => format!(
                        "asked for {} GPU(s) on node {}, which holds the session's workspace; it has {} free healthy GPU(s)",
                        req.gpus,
                        node.name,
                        self.free_gpus(node).count()
                    ),
                    None => self.why_no_fit(req.gpus),
                },
            },
        }
    }

    fn why_no_fit(&self, wanted: u32) -> String {
        let ready: Vec<&NodeView> = self
            .nodes
            .values()
            .filter(|n| n.ready && !n.unschedulable)
            .collect();
        if ready.is_empty() {
            return format!(
                "no Ready, schedulable GPU node ({} known)",
                self.nodes.len()
            );
        }
        let most = ready
            .iter()
            .map(|n| self.free_gpus(n).count())
            .max()
            .unwrap_or(0);
        format!("asked for {wanted} GPU(s); the most free healthy GPUs on one Ready node is {most}")
    }

    /// Sanity check used by tests and the scheduler's debug assertions: no GPU
    /// is held by two sessions.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = HashSet::new();
        for (uid, h) in &self.holdings {
            for uuid in &h.gpus {
                if !seen.insert(uuid) {
                    return Err(format!("GPU {uuid} held twice (one holder is {uid})"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
