use std::collections::HashMap;

use super::*;
use crate::isolation::error::{BRIDGE_NAME_OPTION, CHAIN};

fn br(name: &str) -> Bridge {
    Bridge::new(name).unwrap()
}

#[test]
fn bridge_names_are_checked() {
    assert_eq!(br("br-0123456789ab").as_str(), "br-0123456789ab");
    assert_eq!(br("docker0").as_str(), "docker0");
    for bad in [
        "",
        "br-0123456789abc",
        "br 1",
        "br;x",
        "a\"b",
        "..",
        "br/x",
        "é",
    ] {
        assert!(Bridge::new(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn bridge_of_a_network_uses_the_option_then_the_id() {
    let id = "55088beacfcf0123456789abcdef";
    assert_eq!(
        Bridge::of_network(id, None).unwrap().as_str(),
        "br-55088beacfcf"
    );
    let options = HashMap::from([(BRIDGE_NAME_OPTION.to_string(), "mf0".to_string())]);
    assert_eq!(
        Bridge::of_network(id, Some(&options)).unwrap().as_str(),
        "mf0"
    );
    let empty = HashMap::from([(BRIDGE_NAME_OPTION.to_string(), String::new())]);
    assert_eq!(
        Bridge::of_network(id, Some(&empty)).unwrap().as_str(),
        "br-55088beacfcf"
    );
    assert!(Bridge::of_network("short", None).is_err());
    assert!(Bridge::of_network("zzzzzzzzzzzzzz", None).is_err());
}

#[test]
fn rules_without_allowed_sources_drop_everything_on_the_bridge() {
    let rules = rules_for(&br("br-abc"), &[]);
    let text: Vec<String> = rules.iter().map(|r| r.spec(CHAIN)).collect();
    assert_eq!(
        text,
        [
            "-A MEDFORGE-ISOLATION -i br-abc -o br-abc -m comment --comment medforge-isolation:br-abc -j DROP"
        ]
    );
}

#[test]
fn allowed_sources_come_before_the_drop_sorted_and_deduplicated() {
    let a: Ipv4Addr = "172.18.0.9".parse().unwrap();
    let b: Ipv4Addr = "172.18.0.2".parse().unwrap();
    let rules = rules_for(&br("br-abc"), &[a, b, a]);
    let text: Vec<String> = rules.iter().map(|r| r.spec(CHAIN)).collect();
    let tag = "-m comment --comment medforge-isolation:br-abc";
    assert_eq!(
        text,
        [
            format!("-A MEDFORGE-ISOLATION -s 172.18.0.2/32 -i br-abc -o br-abc {tag} -j ACCEPT"),
            format!(
                "-A MEDFORGE-ISOLATION -d 172.18.0.2/32 -i br-abc -o br-abc -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"
            ),
            format!("-A MEDFORGE-ISOLATION -s 172.18.0.9/32 -i br-abc -o br-abc {tag} -j ACCEPT"),
            format!(
                "-A MEDFORGE-ISOLATION -d 172.18.0.9/32 -i br-abc -o br-abc -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"
            ),
            format!("-A MEDFORGE-ISOLATION -i br-abc -o br-abc {tag} -j DROP"),
        ]
    );
}

/// What iptables 1.8 (nf_tables) prints for the rules `rules_for` builds.
const LISTING: &str = "-N MEDFORGE-ISOLATION\n\
-A MEDFORGE-ISOLATION -s 172.18.0.2/32 -i br-abc -o br-abc -m comment --comment \"medforge-isolation:br-abc\" -j ACCEPT\n\
-A MEDFORGE-ISOLATION -d 172.18.0.2/32 -i br-abc -o br-abc -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"medforge-isolation:br-abc\" -j ACCEPT\n\
-A MEDFORGE-ISOLATION -i br-xyz -o br-xyz -m comment --comment \"medforge-isolation:br-xyz\" -j DROP\n\
-A MEDFORGE-ISOLATION -i br-abc -o br-abc -m comment --comment \"medforge-isolation:br-abc\" -j DROP\n";

#[test]
fn the_listing_parses_back_into_the_built_rules() {
    let rules = parse_chain(CHAIN, LISTING);
    assert_eq!(rules.len(), 4);
    let abc: Vec<Rule> = rules
        .iter()
        .filter(|r| r.is_for(&br("br-abc")))
        .cloned()
        .collect();
    assert_eq!(
        abc,
        rules_for(&br("br-abc"), &["172.18.0.2".parse().unwrap()])
    );
    assert_eq!(rules[2].bridge(), Some(br("br-xyz")));
}

/// The change that puts `bridge`'s rules for `allowed` in place over
/// [`LISTING`]; `None` when they are already.
fn plan_over_listing(bridge: &str, allowed: &[&str]) -> Option<String> {
    let current = parse_chain(CHAIN, LISTING);
    let allowed: Vec<Ipv4Addr> = allowed.iter().map(|a| a.parse().unwrap()).collect();
    plan(
        CHAIN,
        &current,
        &br(bridge),
        &rules_for(&br(bridge), &allowed),
    )
}

#[test]
fn plan_is_empty_when_the_rules_are_in_place() {
    assert_eq!(plan_over_listing("br-abc", &["172.18.0.2"]), None);
    assert_eq!(plan_over_listing("br-xyz", &[]), None);
}

#[test]
fn plan_replaces_only_the_bridges_own_rules() {
    let script = plan_over_listing("br-xyz", &["10.0.0.1"]).expect("a change");
    let tag = "-m comment --comment medforge-isolation:br-xyz";
    assert_eq!(
        script,
        format!(
            "*filter\n\
-D MEDFORGE-ISOLATION -i br-xyz -o br-xyz {tag} -j DROP\n\
-A MEDFORGE-ISOLATION -s 10.0.0.1/32 -i br-xyz -o br-xyz {tag} -j ACCEPT\n\
-A MEDFORGE-ISOLATION -d 10.0.0.1/32 -i br-xyz -o br-xyz -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT\n\
-A MEDFORGE-ISOLATION -i br-xyz -o br-xyz {tag} -j DROP\n\
COMMIT\n"
        )
    );
}

#[test]
fn plan_for_a_new_bridge_only_appends_and_removal_only_deletes() {
    let current = parse_chain(CHAIN, LISTING);
    let new = plan_over_listing("br-new", &[]).unwrap();
    assert!(!new.contains("-D "), "{new}");
    assert_eq!(new.matches("-A ").count(), 1, "{new}");
    let removal = plan(CHAIN, &current, &br("br-abc"), &[]).unwrap();
    assert_eq!(removal.matches("-D ").count(), 3, "{removal}");
    assert!(!removal.contains("-A "), "{removal}");
    assert_eq!(plan(CHAIN, &current, &br("br-gone"), &[]), None);
}

#[test]
fn rules_of_other_chains_and_policies_are_ignored() {
    let listing = "-P FORWARD ACCEPT\n-N DOCKER-USER\n-A DOCKER-USER -j MEDFORGE-ISOLATION\n-A MEDFORGE-ISOLATION-X -j DROP\n";
    assert!(parse_chain(CHAIN, listing).is_empty());
}

/// `iptables -S FORWARD` of Docker 20.10 with two bridges, our jump
/// ahead of br-abc's ACCEPT (it came after the network) but behind
/// br-new's (created later, inserted at the top).
const FORWARD: &str = "-P FORWARD DROP\n\
-A FORWARD -j DOCKER-USER\n\
-A FORWARD -i br-new -o br-new -j ACCEPT\n\
-A FORWARD -j MEDFORGE-ISOLATION\n\
-A FORWARD -i br-abc -o br-abc -j ACCEPT\n\
-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n\
-A FORWARD -o br-abc -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A FORWARD -o br-abc -j DOCKER\n\
-A FORWARD -i br-abc ! -o br-abc -j ACCEPT\n\
-A FORWARD -o br-new -j DOCKER\n\
-A FORWARD -i br-new ! -o br-new -j ACCEPT\n";

#[test]
fn the_forward_jump_must_come_before_the_bridges_accept() {
    assert!(forward_jump_in_place(FORWARD, CHAIN, &br("br-abc")));
    // Behind br-new's ACCEPT: out of place for br-new only.
    assert!(!forward_jump_in_place(FORWARD, CHAIN, &br("br-new")));
    // A bridge Docker has no rule for yet: the jump is enough.
    assert!(forward_jump_in_place(FORWARD, CHAIN, &br("br-other")));
    // Another chain's jump is not ours.
    assert!(!forward_jump_in_place(FORWARD, "MFISO-T", &br("br-abc")));
    assert!(!forward_jump_in_place(
        "-P FORWARD DROP\n",
        CHAIN,
        &br("br-abc")
    ));
}

#[test]
fn the_forward_jump_moves_to_the_top_in_one_transaction() {
    assert_eq!(
        forward_jump_script(FORWARD, CHAIN),
        "*filter\n-D FORWARD -j MEDFORGE-ISOLATION\n-I FORWARD 1 -j MEDFORGE-ISOLATION\nCOMMIT\n"
    );
    assert_eq!(
        forward_jump_script(FORWARD, "MFISO-T"),
        "*filter\n-I FORWARD 1 -j MFISO-T\nCOMMIT\n"
    );
}

#[test]
fn scripts_name_their_chain() {
    let bridge = br("br-abc");
    let script = plan("MFISO-T", &[], &bridge, &rules_for(&bridge, &[])).unwrap();
    assert_eq!(
        script,
        "*filter\n-A MFISO-T -i br-abc -o br-abc -m comment --comment medforge-isolation:br-abc -j DROP\nCOMMIT\n"
    );
    // Rules listed under another chain are not this chain's.
    assert!(parse_chain("MFISO-T", LISTING).is_empty());
}
