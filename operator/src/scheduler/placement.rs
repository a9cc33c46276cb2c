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
}

impl RefuseReason {
    /// The condition reason as it appears in `status.conditions`.
    pub fn reason(self) -> SessionReason {
        match self {
            RefuseReason::NoGpuAvailable => SessionReason::NoGpuAvailable,
            RefuseReason::UserLimitReached => SessionReason::UserLimitReached,
            RefuseReason::CpuOnlyNotAllowed => SessionReason::CpuOnlyNotAllowed,
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

        let mut best: Option<(&NodeView, usize)> = None;
        for node in self.nodes.values() {
            if !node.ready || node.unschedulable {
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
                message: self.why_no_fit(req.gpus),
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(name: &str, n: u32) -> NodeView {
        NodeView {
            name: name.into(),
            ready: true,
            unschedulable: false,
            gpus: (0..n)
                .map(|i| GpuView {
                    index: i,
                    uuid: format!("GPU-{name}-{i}"),
                    healthy: true,
                    disabled: false,
                })
                .collect(),
        }
    }

    fn req(uid: &str, owner: &str, gpus: u32) -> Request {
        Request {
            session_uid: uid.into(),
            owner: owner.into(),
            gpus,
            max_sessions_override: None,
        }
    }

    fn bind(view: &mut ClusterView, r: &Request, limits: Limits) -> Decision {
        let d = view.decide(r, limits, Policy::Pack);
        if let Decision::Bind { node, gpus } = &d {
            let uuids: Vec<String> = gpus.iter().map(|g| g.uuid.clone()).collect();
            view.record(&r.session_uid, &r.owner, node, &uuids).unwrap();
        }
        d
    }

    const MANY: Limits = Limits {
        max_sessions_per_user: 100,
        max_gpus_per_user: 100,
        allow_cpu_only: true,
    };

    /// A view of ready nodes, each `(name, GPUs)`.
    fn view_of(nodes: &[(&str, u32)]) -> ClusterView {
        let mut v = ClusterView::new();
        for (name, gpus) in nodes {
            v.upsert_node(node(name, *gpus));
        }
        v
    }

    /// A CPU-only session bound to `node`.
    fn no_gpus_on(node: &str) -> Decision {
        Decision::Bind {
            node: node.into(),
            gpus: vec![],
        }
    }

    #[test]
    fn cpu_only_sessions_need_the_policy() {
        let v = view_of(&[("a", 0)]);
        let refused = v.decide(&req("s1", "u", 0), Limits::default(), Policy::Pack);
        assert!(
            matches!(
                refused,
                Decision::Refuse {
                    reason: RefuseReason::CpuOnlyNotAllowed,
                    ..
                }
            ),
            "{refused:?}"
        );
        let allowed = Limits {
            allow_cpu_only: true,
            ..Limits::default()
        };
        assert_eq!(
            v.decide(&req("s1", "u", 0), allowed, Policy::Pack),
            no_gpus_on("a")
        );
    }

    #[test]
    fn pack_fills_lowest_index_on_fullest_node_first() {
        let mut v = view_of(&[("a", 4), ("b", 4)]);
        let d = bind(&mut v, &req("s1", "u1", 1), MANY);
        assert_eq!(
            d,
            Decision::Bind {
                node: "a".into(),
                gpus: vec![ChosenGpu {
                    index: 0,
                    uuid: "GPU-a-0".into()
                }]
            }
        );
        // a now has 3 free, b 4: packing keeps choosing a.
        let d = bind(&mut v, &req("s2", "u2", 2), MANY);
        assert!(
            matches!(&d, Decision::Bind { node, gpus } if node == "a" && gpus[0].index == 1 && gpus[1].index == 2)
        );
        // 3 GPUs fit only on b.
        let d = bind(&mut v, &req("s3", "u3", 3), MANY);
        assert!(matches!(&d, Decision::Bind { node, .. } if node == "b"));
    }

    #[test]
    fn spread_prefers_the_emptiest_node() {
        let mut v = view_of(&[("a", 4), ("b", 4)]);
        v.record("s0", "u0", "a", &["GPU-a-0".into()]).unwrap();
        let d = v.decide(&req("s1", "u1", 1), MANY, Policy::Spread);
        assert!(matches!(&d, Decision::Bind { node, .. } if node == "b"));
    }

    #[test]
    fn seven_gpus_eight_sessions() {
        let mut v = view_of(&[("a", 4), ("b", 3)]);
        let mut bound = 0;
        let mut refused = 0;
        for i in 0..8 {
            match bind(
                &mut v,
                &req(&format!("s{i}"), &format!("u{i}"), 1),
                Limits::default(),
            ) {
                Decision::Bind { .. } => bound += 1,
                Decision::Refuse { reason, .. } => {
                    assert_eq!(reason, RefuseReason::NoGpuAvailable);
                    refused += 1;
                }
            }
        }
        assert_eq!((bound, refused), (7, 1));
        v.check_invariants().unwrap();
    }

    #[test]
    fn user_limits_count_sessions_and_gpus() {
        let mut v = view_of(&[("a", 8)]);
        assert!(matches!(
            bind(&mut v, &req("s1", "u", 1), Limits::default()),
            Decision::Bind { .. }
        ));
        let d = bind(&mut v, &req("s2", "u", 1), Limits::default());
        assert!(
            matches!(d, Decision::Refuse { reason: RefuseReason::UserLimitReached, ref message } if message.contains("limit is 1"))
        );
        // The api's per-user override lifts the session limit.
        let mut r = req("s2", "u", 1);
        r.max_sessions_override = Some(2);
        assert!(matches!(
            bind(&mut v, &r, Limits::default()),
            Decision::Bind { .. }
        ));
        // GPU limit.
        let limits = Limits {
            max_sessions_per_user: 10,
            max_gpus_per_user: 3,
            allow_cpu_only: false,
        };
        let d = v.decide(&req("s3", "u", 2), limits, Policy::Pack);
        assert!(matches!(
            d,
            Decision::Refuse {
                reason: RefuseReason::UserLimitReached,
                ..
            }
        ));
        // Stopping one session frees its slot.
        v.release("s1");
        assert!(matches!(
            v.decide(&req("s3", "u", 1), limits, Policy::Pack),
            Decision::Bind { .. }
        ));
    }

    #[test]
    fn cordons_unhealthy_gpus_and_stale_nodes_are_skipped() {
        let mut v = ClusterView::new();
        let mut a = node("a", 2);
        a.gpus[0].disabled = true;
        a.gpus[1].healthy = false;
        v.upsert_node(a.clone());
        v.upsert_node(node("b", 1));
        let d = v.decide(&req("s1", "u1", 1), MANY, Policy::Pack);
        assert!(matches!(&d, Decision::Bind { node, .. } if node == "b"));

        let mut b = node("b", 1);
        b.ready = false;
        v.upsert_node(b);
        let d = v.decide(&req("s1", "u1", 1), MANY, Policy::Pack);
        assert!(matches!(
            d,
            Decision::Refuse {
                reason: RefuseReason::NoGpuAvailable,
                ..
            }
        ));

        // Uncordon GPU 0 of a: it is used again.
        a.gpus[0].disabled = false;
        v.upsert_node(a);
        let d = v.decide(&req("s1", "u1", 1), MANY, Policy::Pack);
        assert!(matches!(&d, Decision::Bind { node, gpus } if node == "a" && gpus[0].index == 0));

        let mut c = node("c", 8);
        c.unschedulable = true;
        v.upsert_node(c);
        let d = v.decide(&req("s2", "u2", 2), MANY, Policy::Pack);
        assert!(
            matches!(d, Decision::Refuse { reason: RefuseReason::NoGpuAvailable, ref message } if message.contains("is 1"))
        );
    }

    #[test]
    fn zero_gpu_sessions_still_need_a_ready_node() {
        let mut v = ClusterView::new();
        let d = v.decide(&req("s1", "u1", 0), MANY, Policy::Pack);
        assert!(
            matches!(d, Decision::Refuse { reason: RefuseReason::NoGpuAvailable, ref message } if message.contains("no Ready"))
        );
        v.upsert_node(node("a", 0));
        let d = v.decide(&req("s1", "u1", 0), MANY, Policy::Pack);
        assert_eq!(d, no_gpus_on("a"));
    }

    #[test]
    fn recording_is_idempotent_and_refuses_double_allocation() {
        let mut v = view_of(&[("a", 2)]);
        v.record("s1", "u1", "a", &["GPU-a-0".into()]).unwrap();
        v.record("s1", "u1", "a", &["GPU-a-0".into()]).unwrap();
        assert_eq!(v.user_usage("u1"), (1, 1));
        let err = v.record("s2", "u2", "a", &["GPU-a-0".into()]).unwrap_err();
        assert_eq!(err.holder, "s1");
        assert_eq!(v.holder_of("GPU-a-0"), Some("s1"));
        // A repeated decision for a bound session gives the same binding.
        let d = v.decide(&req("s1", "u1", 1), Limits::default(), Policy::Pack);
        assert!(matches!(&d, Decision::Bind { gpus, .. } if gpus[0].uuid == "GPU-a-0"));
        v.release("s1");
        v.release("s1");
        assert_eq!(v.user_usage("u1"), (0, 0));
        assert_eq!(v.holder_of("GPU-a-0"), None);
    }

    #[test]
    fn policy_parses_with_a_clear_error() {
        assert_eq!("pack".parse::<Policy>().unwrap(), Policy::Pack);
        assert_eq!("spread".parse::<Policy>().unwrap(), Policy::Spread);
        assert!(
            "best"
                .parse::<Policy>()
                .unwrap_err()
                .contains("\"pack\" or \"spread\"")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever sequence of binds and releases happens, no GPU is ever held
        /// twice and usage counts match the holdings.
        #[test]
        fn never_gives_a_gpu_twice(ops in proptest::collection::vec((0u8..3, 0u32..4, 0u8..6), 1..120)) {
            let mut v = view_of(&[("a", 4), ("b", 3)]);
            let mut live: Vec<String> = Vec::new();
            for (i, (op, gpus, user)) in ops.into_iter().enumerate() {
                if op == 0 && !live.is_empty() {
                    let uid = live.remove(i % live.len());
                    v.release(&uid);
                } else {
                    let uid = format!("s{i}");
                    if let Decision::Bind { .. } = bind(&mut v, &req(&uid, &format!("u{user}"), gpus), Limits { max_sessions_per_user: 3, max_gpus_per_user: 5, allow_cpu_only: true }) {
                        live.push(uid);
                    }
                }
                prop_assert!(v.check_invariants().is_ok());
                let held: usize = v.holdings.values().map(|h| h.gpus.len()).sum();
                prop_assert_eq!(held, v.held_gpus.len());
                prop_assert!(v.held_gpus.len() <= 7);
                for (user, (s, g)) in &v.per_user {
                    prop_assert!(*s <= 3 && *g <= 5, "user {} over limit", user);
                }
            }
        }
    }
}
