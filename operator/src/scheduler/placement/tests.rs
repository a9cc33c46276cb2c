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
        node: None,
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
fn a_resumed_session_goes_only_to_the_node_of_its_workspace() {
    let mut v = view_of(&[("a", 1), ("b", 4)]);
    let mut r = req("s1", "u", 1);
    r.node = Some("a".into());
    // "b" has more room, but the workspace is on "a".
    assert_eq!(
        v.decide(&r, MANY, Policy::Spread),
        Decision::Bind {
            node: "a".into(),
            gpus: vec![ChosenGpu {
                index: 0,
                uuid: "GPU-a-0".into()
            }]
        }
    );
    // Its node full: no GPU, even though "b" has four.
    bind(&mut v, &req("other", "v", 1), MANY);
    assert_eq!(v.holder_of("GPU-a-0"), Some("other"));
    match v.decide(&r, MANY, Policy::Pack) {
        Decision::Refuse {
            reason: RefuseReason::NoGpuAvailable,
            message,
        } => assert!(message.contains("node a"), "{message}"),
        other => panic!("{other:?}"),
    }
    // Its node cordoned, not Ready, or gone: the node is named as the reason.
    for (change, words) in [
        ("cordon", "is cordoned"),
        ("unready", "is not Ready"),
        ("remove", "is gone"),
    ] {
        let mut v = view_of(&[("a", 1), ("b", 4)]);
        match change {
            "cordon" => v.upsert_node(NodeView {
                unschedulable: true,
                ..node("a", 1)
            }),
            "unready" => v.upsert_node(NodeView {
                ready: false,
                ..node("a", 1)
            }),
            _ => v.remove_node("a"),
        }
        match v.decide(&r, MANY, Policy::Pack) {
            Decision::Refuse {
                reason: RefuseReason::WorkspaceNodeUnavailable,
                message,
            } => assert!(
                message.contains(words) && message.contains("node a"),
                "{message}"
            ),
            other => panic!("{change}: {other:?}"),
        }
    }
    // The owner's limits hold for a resume as for a create.
    let mut v = view_of(&[("a", 2)]);
    bind(&mut v, &req("running", "u", 1), Limits::default());
    assert!(matches!(
        v.decide(&r, Limits::default(), Policy::Pack),
        Decision::Refuse {
            reason: RefuseReason::UserLimitReached,
            ..
        }
    ));
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
