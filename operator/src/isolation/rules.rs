//! The rule model: bridges, the rules that isolate one, and the
//! `iptables-restore` scripts that put them in place. Pure.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;

use super::error::{BRIDGE_NAME_OPTION, FORWARD_CHAIN, IsolationError, Result};

/// Prefix of the comment that tags each rule with its bridge.
const TAG_PREFIX: &str = "medforge-isolation:";
/// Longest Linux interface name.
const IFNAMSIZ_MAX: usize = 15;

/// A Linux bridge interface name, checked to be safe inside iptables rules
/// and comments (1 to 15 characters of `[A-Za-z0-9_.-]`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bridge(String);

impl Bridge {
    /// Checks `name`.
    pub fn new(name: impl Into<String>) -> Result<Bridge> {
        let name = name.into();
        let invalid = |reason| IsolationError::InvalidBridge {
            name: name.clone(),
            reason,
        };
        if name.is_empty() || name.len() > IFNAMSIZ_MAX {
            return Err(invalid("an interface name has 1 to 15 characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        {
            return Err(invalid(
                "only letters, digits, '_', '.' and '-' are allowed",
            ));
        }
        if name == "." || name == ".." {
            return Err(invalid("not an interface name"));
        }
        Ok(Bridge(name))
    }

    /// The bridge of a Docker network: the `com.docker.network.bridge.name`
    /// option when set, otherwise Docker's default `br-<first 12 of the id>`.
    pub fn of_network(
        network_id: &str,
        options: Option<&HashMap<String, String>>,
    ) -> Result<Bridge> {
        if let Some(name) = options
            .and_then(|o| o.get(BRIDGE_NAME_OPTION))
            .filter(|n| !n.is_empty())
        {
            return Bridge::new(name.clone());
        }
        let short: String = network_id.chars().take(12).collect();
        if short.len() < 12 || !short.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IsolationError::InvalidBridge {
                name: format!("br-{short}"),
                reason: "the network id is not 12 or more hexadecimal digits",
            });
        }
        Bridge::new(format!("br-{short}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The comment that tags this bridge's rules.
    fn tag(&self) -> String {
        format!("{TAG_PREFIX}{}", self.0)
    }
}

impl fmt::Display for Bridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One rule of an isolation chain, as the words `iptables -S` prints after
/// `-A <chain>` (canonical order, quotes removed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule(Vec<String>);

impl Rule {
    fn new(parts: &[&[&str]]) -> Rule {
        Rule(parts.concat().into_iter().map(str::to_string).collect())
    }

    /// The words after `-A <chain>`.
    pub fn words(&self) -> &[String] {
        &self.0
    }

    /// The rule as `iptables -S` prints it, quotes aside: `-A <chain> …`.
    pub fn spec(&self, chain: &str) -> String {
        format!("-A {chain} {}", self.0.join(" "))
    }

    /// Whether the rule carries the tag of `bridge`.
    pub(super) fn is_for(&self, bridge: &Bridge) -> bool {
        let tag = bridge.tag();
        self.0
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1] == tag)
    }

    /// The bridge whose tag the rule carries.
    pub(super) fn bridge(&self) -> Option<Bridge> {
        self.0
            .windows(2)
            .find(|w| w[0] == "--comment")
            .and_then(|w| w[1].strip_prefix(TAG_PREFIX))
            .and_then(|b| Bridge::new(b).ok())
    }
}

/// The rules that isolate the sessions on `bridge`, letting `allowed`
/// sources on the same bridge (a proxy container) open connections to them.
/// Pure; the order matters (the `DROP` comes last).
pub fn rules_for(bridge: &Bridge, allowed: &[Ipv4Addr]) -> Vec<Rule> {
    let br = bridge.as_str();
    let tag = bridge.tag();
    let on_bridge: &[&str] = &["-i", br, "-o", br];
    let tagged: &[&str] = &["-m", "comment", "--comment", &tag];
    let mut allowed = allowed.to_vec();
    allowed.sort();
    allowed.dedup();
    let mut rules = Vec::with_capacity(2 * allowed.len() + 1);
    for source in &allowed {
        let source = format!("{source}/32");
        rules.push(Rule::new(&[
            &["-s", &source],
            on_bridge,
            tagged,
            &["-j", "ACCEPT"],
        ]));
        rules.push(Rule::new(&[
            &["-d", &source],
            on_bridge,
            &["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"],
            tagged,
            &["-j", "ACCEPT"],
        ]));
    }
    rules.push(Rule::new(&[on_bridge, tagged, &["-j", "DROP"]]));
    rules
}

/// Whether `FORWARD` (its `iptables -S FORWARD` listing) jumps to `chain`
/// before any of its rules that accept traffic coming from `bridge`
/// (Docker's `-i br -o br -j ACCEPT` above all).
pub fn forward_jump_in_place(forward: &str, chain: &str, bridge: &Bridge) -> bool {
    let jump = format!("-A {FORWARD_CHAIN} -j {chain}");
    let from_bridge = format!(" -i {bridge} ");
    let mut rules = forward
        .lines()
        .map(str::trim_end)
        .filter(|l| l.starts_with("-A "));
    rules
        .find(|l| *l == jump || (l.contains(&from_bridge) && l.ends_with(" -j ACCEPT")))
        .is_some_and(|l| l == jump)
}

/// The `iptables-restore --noflush` input that moves (or adds) the
/// `FORWARD` jump to `chain` to the top, in one transaction.
pub fn forward_jump_script(forward: &str, chain: &str) -> String {
    let jump = format!("-A {FORWARD_CHAIN} -j {chain}");
    let present = forward.lines().any(|l| l.trim_end() == jump);
    let mut script = String::from("*filter\n");
    if present {
        script.push_str(&format!("-D {FORWARD_CHAIN} -j {chain}\n"));
    }
    script.push_str(&format!("-I {FORWARD_CHAIN} 1 -j {chain}\nCOMMIT\n"));
    script
}

/// Parses the output of `iptables -S <chain>` into the chain's rules.
pub fn parse_chain(chain: &str, listing: &str) -> Vec<Rule> {
    let head = format!("-A {chain} ");
    listing
        .lines()
        .filter_map(|line| line.trim_end().strip_prefix(&head))
        .map(|rest| {
            Rule(
                rest.split_whitespace()
                    .map(|w| w.trim_matches('"').to_string())
                    .collect(),
            )
        })
        .collect()
}

/// The `iptables-restore --noflush` input that deletes `delete` and appends
/// `append` to `chain` in one transaction.
pub fn restore_script(chain: &str, delete: &[Rule], append: &[Rule]) -> String {
    let mut script = String::from("*filter\n");
    for rule in delete {
        script.push_str(&format!("-D {chain} {}\n", rule.0.join(" ")));
    }
    for rule in append {
        script.push_str(&rule.spec(chain));
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    script
}

/// What must change so that `bridge`'s rules among `current` (the rules of
/// `chain`) become `desired`: the restore script, or `None` when they
/// already are.
pub fn plan(chain: &str, current: &[Rule], bridge: &Bridge, desired: &[Rule]) -> Option<String> {
    let existing: Vec<Rule> = current
        .iter()
        .filter(|r| r.is_for(bridge))
        .cloned()
        .collect();
    (existing != desired).then(|| restore_script(chain, &existing, desired))
}

#[cfg(test)]
mod tests;
