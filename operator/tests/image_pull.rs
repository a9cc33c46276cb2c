//! The node agent pulls a Pack's image from a real registry (Debian's
//! `docker-registry`, run by the test inside the harness's network
//! namespace) when its node lacks it: progress on the Session, one pull for
//! two sessions, the registry's own reasons when it fails, recovery without
//! a new create, credentials from a Docker config file, and pre-pulls with
//! each node's state on the Pack.
//!
//! Every image here is built by the test (the workload image plus random
//! bytes), pushed to the test's registry and removed from dockerd again, so
//! the node lacks it and no other test uses it.

mod agent_support;

use std::time::Duration;

use agent_support::{Env, is_running_and_ready};
use kube::Api;
use kube::api::{Patch, PatchParams};
use medforge_crds::conditions;
use medforge_crds::{ImageState, Pack, Session, SessionCondition, SessionReason};
use medforge_testkit::Registry;

const DEADLINE: Duration = Duration::from_secs(120);

/// The session's condition of `type_`, as (status, reason, message).
fn condition(s: &Session, type_: SessionCondition) -> Option<(String, String, String)> {
    let st = s.status.as_ref()?;
    conditions::find(&st.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn ready_reason(s: &Session) -> Option<String> {
    condition(s, SessionCondition::Ready).map(|c| c.1)
}

/// The image reference the session's container was created from.
async fn image_of(env: &Env, s: &Session) -> String {
    let c = env.only_container_of(s).await;
    c.config.unwrap().image.unwrap()
}

/// Pulls that ended with `result`, from the agent's own /metrics.
async fn pulls_ended(agent: &medforge_operator::agent::testing::Agent, result: &str) -> u64 {
    let addr = agent.state.borrow().metrics_addr.expect("metrics address");
    let body = medforge_operator::agent::testing::http_get(addr, "/metrics").await;
    let line = format!("medforge_agent_image_pulls_total{{result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&line))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_image_pulls_it_once_for_two_sessions() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, None).await.unwrap();
    let image = registry.push_unique("mf-pull-once", 8 << 20).await.unwrap();
    let present = env.docker.inspect_image(&image).await;
    assert!(
        present.is_err(),
        "the node must lack the image before the test"
    );
    env.put_pack("pulled", &image, Vec::new()).await;
    let mut config = env.config();
    config.packs_period = Duration::from_millis(500);
    let agent = env.spawn_agent(config);

    env.create_bound("one", Env::spec("pulled", 0)).await;
    env.create_bound("two", Env::spec("pulled", 0)).await;
    // The pull shows on the session while it runs.
    let pulling = env
        .wait_for("one", "ImagePulling=True", DEADLINE, |s| {
            condition(s, SessionCondition::ImagePulling).is_some_and(|c| c.0 == "True")
                || is_running_and_ready(s)
        })
        .await;
    if let Some((status, reason, message)) = condition(&pulling, SessionCondition::ImagePulling)
        && status == "True"
    {
        assert_eq!(reason, "Pulling");
        assert!(message.contains(&image), "{message}");
        assert_eq!(ready_reason(&pulling).as_deref(), Some("Pulling"));
    } else {
        panic!(
            "session one ran without ever showing ImagePulling=True: {:?}",
            pulling.status
        );
    }
    for name in ["one", "two"] {
        let s = env
            .wait_for(name, "Running and Ready", DEADLINE, is_running_and_ready)
            .await;
        let (status, reason, _) = condition(&s, SessionCondition::ImagePulling)
            .unwrap_or_else(|| panic!("{name}: no ImagePulling condition: {:?}", s.status));
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "Pulled"),
            "{name}"
        );
    }
    // One pull for both: the agent counts one, and the registry served the
    // manifest once.
    assert_eq!(pulls_ended(&agent, "Pulled").await, 1);
    assert_eq!(
        registry.log_lines(&["GET /v2/mf-pull-once/manifests/"]),
        1,
        "manifest fetches"
    );

    // The node's entry on the Pack says the image is there.
    let packs: Api<Pack> = Api::all(env.client.clone());
    medforge_testkit::eventually(
        "the image Present on the Pack for this node",
        DEADLINE,
        || async {
            let p = packs.get("pulled").await.unwrap();
            let entry = p
                .status
                .unwrap_or_default()
                .nodes
                .into_iter()
                .find(|n| n.node == env.node);
            entry.filter(|e| e.state == ImageState::Present && e.image == image)
        },
    )
    .await;

    let docker = env.docker.clone();

    env.finish(agent).await;
    medforge_testkit::remove_image(&docker, &image)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_fails_the_pull_with_its_reason_and_the_session_recovers() {
    let env = Env::new().await;
    let mut registry = Registry::start(&env.harness, None).await.unwrap();
    let image = registry.push_unique("mf-pull-down", 1 << 20).await.unwrap();
    env.put_pack("pulled", &image, Vec::new()).await;
    registry.kill();
    let mut config = env.config();
    config.pulls.backoff_min = Duration::from_millis(500);
    config.pulls.backoff_max = Duration::from_secs(1);
    let agent = env.spawn_agent(config);

    env.create_bound("s", Env::spec("pulled", 0)).await;
    let failed = env
        .wait_for("s", "ImagePullFailed", DEADLINE, |s| {
            ready_reason(s).as_deref() == Some(SessionReason::ImagePullFailed.as_str())
        })
        .await;
    let (status, _, message) = condition(&failed, SessionCondition::ImagePulling).unwrap();
    assert_eq!(status, "False");
    // The registry's (Docker's) own words: nothing listens on its port.
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains(&registry.host()), "{message}");
    assert_ne!(
        failed.phase(),
        medforge_crds::SessionPhase::Failed,
        "a failed pull is retried, not final"
    );

    // The registry comes back: a later attempt pulls, no new create.
    registry.start_again().await.unwrap();
    let s = env
        .wait_for("s", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(s.metadata.generation, failed.metadata.generation);
    assert!(pulls_ended(&agent, "ImagePullFailed").await >= 1);
    assert_eq!(pulls_ended(&agent, "Pulled").await, 1);

    let docker = env.docker.clone();

    env.finish(agent).await;
    medforge_testkit::remove_image(&docker, &image)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_the_registry_lacks_is_image_not_found() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, None).await.unwrap();
    let image = registry
        .push_unique("mf-pull-wrong", 1 << 20)
        .await
        .unwrap();
    // The same repository, another digest.
    let (repo, _) = image.split_once('@').unwrap();
    let wrong = format!("{repo}@sha256:{}", "0123456789abcdef".repeat(4));
    env.put_pack("wrong", &wrong, Vec::new()).await;
    let agent = env.spawn_agent(env.config());

    env.create_bound("s", Env::spec("wrong", 0)).await;
    let s = env
        .wait_for("s", "ImageNotFound", DEADLINE, |s| {
            ready_reason(s).as_deref() == Some(SessionReason::ImageNotFound.as_str())
        })
        .await;
    let (status, reason, message) = condition(&s, SessionCondition::ImagePulling).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ImageNotFound")
    );
    assert!(
        message.contains("manifest unknown") || message.contains("not found"),
        "{message}"
    );
    assert!(message.contains(&wrong), "{message}");
    assert!(env.containers_of(&s).await.is_empty(), "nothing made");

    let docker = env.docker.clone();

    env.finish(agent).await;
    medforge_testkit::remove_image(&docker, &image)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_unauthorized_and_fixed_ones_pull_without_a_new_create() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, Some(("medforge", "right-password")))
        .await
        .unwrap();
    let image = registry.push_unique("mf-pull-auth", 1 << 20).await.unwrap();
    env.put_pack("private", &image, Vec::new()).await;
    // The node's credentials file has the wrong password.
    let file = registry.auth_file("medforge", "wrong-password");
    let mut config = env.config();
    config.pulls.auth_file = Some(file.clone());
    config.pulls.backoff_min = Duration::from_millis(500);
    config.pulls.backoff_max = Duration::from_secs(1);
    let agent = env.spawn_agent(config);

    env.create_bound("s", Env::spec("private", 0)).await;
    let s = env
        .wait_for("s", "Unauthorized", DEADLINE, |s| {
            ready_reason(s).as_deref() == Some(SessionReason::Unauthorized.as_str())
        })
        .await;
    let (_, reason, message) = condition(&s, SessionCondition::ImagePulling).unwrap();
    assert_eq!(reason, "Unauthorized");
    assert!(message.to_lowercase().contains("unauthorized"), "{message}");
    assert!(
        !message.contains("wrong-password"),
        "the secret never shows: {message}"
    );

    // The file is read at every pull: the right password lets the next
    // attempt through.
    let good = registry.auth_file("medforge", "right-password");
    std::fs::copy(&good, &file).unwrap();
    env.wait_for("s", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;

    let docker = env.docker.clone();

    env.finish(agent).await;
    medforge_testkit::remove_image(&docker, &image)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_pulled_pack_is_pulled_before_any_session_and_every_node_says_so() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, None).await.unwrap();
    let image = registry.push_unique("mf-pre-pull", 1 << 20).await.unwrap();
    env.put_pack("eager", &image, Vec::new()).await;
    // Two node agents (on the harness's one dockerd): each writes its own
    // entry on the Pack, neither overwrites the other's.
    let mut first = env.config();
    first.packs_period = Duration::from_millis(500);
    let mut second = first.clone();
    second.node_name = format!("{}-b", env.node);
    second.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let agents = [env.spawn_agent(first), env.spawn_agent(second.clone())];
    let packs: Api<Pack> = Api::all(env.client.clone());
    let nodes = [env.node.clone(), second.node_name.clone()];
    let states = || async {
        let p = packs.get("eager").await.unwrap();
        let entries = p.status.unwrap_or_default().nodes;
        nodes
            .iter()
            .map(|n| entries.iter().find(|e| &e.node == n).map(|e| e.state))
            .collect::<Vec<_>>()
    };
    // Not pre-pulled: nothing pulls it; both nodes say Absent.
    medforge_testkit::eventually("both nodes report the image Absent", DEADLINE, || async {
        states().await == [Some(ImageState::Absent); 2]
    })
    .await;
    assert!(
        env.docker.inspect_image(&image).await.is_err(),
        "pulled without prePull"
    );

    // prePull: the image comes onto the node with no session asking.
    packs
        .patch(
            "eager",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"prePull": true}})),
        )
        .await
        .unwrap();
    medforge_testkit::eventually("both nodes report the image Present", DEADLINE, || async {
        states().await == [Some(ImageState::Present); 2]
    })
    .await;
    assert!(env.docker.inspect_image(&image).await.is_ok());
    assert!(
        env.sessions()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    let [a, b] = agents;
    b.kill().await;
    let docker = env.docker.clone();
    env.finish(a).await;
    medforge_testkit::remove_image(&docker, &image)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_resolved_once_per_pack_change_and_sessions_run_that_digest() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, None).await.unwrap();
    let first = registry
        .push_unique_as("mf-tagged", "stable", 1 << 20)
        .await
        .unwrap();
    let tag = format!("{}/mf-tagged:stable", registry.host());
    env.put_pack("tagged", &tag, Vec::new()).await;
    let mut config = env.config();
    config.packs_period = Duration::from_millis(300);
    let agent = env.spawn_agent(config);
    let packs: Api<Pack> = Api::all(env.client.clone());
    let resolved = || async {
        let p = packs.get("tagged").await.unwrap();
        let st = p.status.clone().unwrap_or_default();
        (st.observed_generation == p.metadata.generation)
            .then_some(st.resolved_image)
            .flatten()
    };
    let got =
        medforge_testkit::eventually("the tag resolved", DEADLINE, || async { resolved().await })
            .await;
    assert_eq!(got, first);
    let p = packs.get("tagged").await.unwrap();
    let c = conditions::find(
        &p.status.unwrap().conditions,
        medforge_crds::PackCondition::Resolved,
    )
    .cloned()
    .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "TagResolved")
    );

    // A session runs the digest, not the tag.
    env.create_bound("one", Env::spec("tagged", 0)).await;
    let one = env
        .wait_for("one", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(image_of(&env, &one).await, first);

    // The tag moves in the registry; the Pack did not change, so nothing
    // resolves it again: a new session runs the same bytes as the first.
    let second = registry
        .push_unique_as("mf-tagged", "stable", 1 << 20)
        .await
        .unwrap();
    assert_ne!(first, second);
    env.create_bound("two", Env::spec("tagged", 0)).await;
    let two = env
        .wait_for("two", "Running and Ready", DEADLINE, is_running_and_ready)
        .await;
    assert_eq!(image_of(&env, &two).await, first);
    assert_eq!(resolved().await.as_deref(), Some(first.as_str()));

    // Changing the Pack resolves its tag again, to where it points now.
    packs
        .patch(
            "tagged",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"description": "moved on"}})),
        )
        .await
        .unwrap();
    medforge_testkit::eventually("the tag resolved again", DEADLINE, || async {
        resolved().await.as_deref() == Some(second.as_str())
    })
    .await;

    let docker = env.docker.clone();
    env.finish(agent).await;
    for image in [&first, &second] {
        medforge_testkit::remove_image(&docker, image)
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_the_registry_lacks_keeps_sessions_waiting_with_the_reason() {
    let env = Env::new().await;
    let registry = Registry::start(&env.harness, None).await.unwrap();
    let tag = format!("{}/mf-no-such:tag", registry.host());
    env.put_pack("missing", &tag, Vec::new()).await;
    let mut config = env.config();
    config.packs_period = Duration::from_millis(300);
    let agent = env.spawn_agent(config);
    env.create_bound("s", Env::spec("missing", 0)).await;
    let s = env
        .wait_for(
            "s",
            "ImageUnresolved with the registry's reason",
            DEADLINE,
            |s| {
                condition(s, SessionCondition::Ready).is_some_and(|c| {
                    c.1 == SessionReason::ImageUnresolved.as_str() && c.2.contains("no image")
                })
            },
        )
        .await;
    assert!(env.containers_of(&s).await.is_empty(), "nothing made");
    let packs: Api<Pack> = Api::all(env.client.clone());
    let p = packs.get("missing").await.unwrap();
    let c = conditions::find(
        &p.status.unwrap().conditions,
        medforge_crds::PackCondition::Resolved,
    )
    .cloned()
    .unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ImageNotFound")
    );
    env.finish(agent).await;
}
