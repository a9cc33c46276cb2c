//! East-west isolation of session containers: sessions on one Docker bridge
//! network cannot reach each other on any port, in either direction, while
//! the host side of the bridge (where the proxy runs) still reaches every
//! session.
//!
//! The rules live in a chain of our own, [`CHAIN`]. Per bridge `br` and
//! allowed source `a` (a proxy container on the same bridge; none when the
//! proxy runs on the host, whose traffic to the containers never crosses
//! `FORWARD`):
//!
//! ```text
//! -A MEDFORGE-ISOLATION -s a/32 -i br -o br -m comment --comment medforge-isolation:br -j ACCEPT
//! -A MEDFORGE-ISOLATION -d a/32 -i br -o br -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment medforge-isolation:br -j ACCEPT
//! -A MEDFORGE-ISOLATION -i br -o br -m comment --comment medforge-isolation:br -j DROP
//! ```
//!
//! Everything else falls through to Docker's own rules. Traffic between two
//! containers of one bridge is bridged, so iptables sees it only when
//! `net.bridge.bridge-nf-call-iptables` is 1 in the namespace dockerd runs in;
//! [`Isolation::apply`] checks it and sets it when it can.
//!
//! Two jumps lead into the chain:
//!
//! - from `DOCKER-USER`, Docker's chain for user rules: Docker keeps its
//!   contents across restarts and puts the jump to it first in `FORWARD`;
//! - from `FORWARD` itself, ahead of Docker's `-i br -o br -j ACCEPT` for the
//!   bridge. Docker re-creates its `FORWARD -j DOCKER-USER` jump whenever a
//!   network is created or removed, by deleting it and inserting it again:
//!   for that moment (seen in about 3 % of `iptables -S FORWARD` samples
//!   taken while networks were created) `DOCKER-USER` is skipped, and without
//!   the second jump sessions could reach each other.
//!
//! Everything is idempotent and keyed by the bridge: [`Isolation::apply`]
//! changes only what differs (atomically, through `iptables-restore
//! --noflush`) and restores the chain and both jumps when they are gone or
//! out of place (after a dockerd restart or a firewall reload);
//! [`Isolation::remove`] drops a deleted network's rules. The commands run
//! through a [`CommandPrefix`], so the same code works on the host and inside
//! another network namespace (`nsenter --net=…`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use bollard::Docker;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// The chain that holds the isolation rules of every bridge.
pub const CHAIN: &str = "MEDFORGE-ISOLATION";
/// Docker's chain for user rules, evaluated first in `FORWARD`.
pub const DOCKER_USER_CHAIN: &str = "DOCKER-USER";
/// The built-in chain bridged and routed traffic crosses.
pub const FORWARD_CHAIN: &str = "FORWARD";
/// The sysctl that makes bridged traffic pass through iptables.
pub const BRIDGE_NF_SYSCTL: &str = "net.bridge.bridge-nf-call-iptables";
/// Docker's network option naming the bridge interface.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Prefix of the comment that tags each rule with its bridge.
const TAG_PREFIX: &str = "medforge-isolation:";
/// Longest Linux interface name.
const IFNAMSIZ_MAX: usize = 15;

/// What went wrong, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum IsolationError {
    #[error("invalid bridge interface name {name:?}: {reason}")]
    InvalidBridge { name: String, reason: &'static str },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "bridge netfilter is not available in the network namespace of dockerd ({detail}); \
         load the module on the host (`modprobe br_netfilter`) and retry: without it, \
         sessions on one bridge are not isolated from each other"
    )]
    BridgeNetfilterUnavailable { detail: String },
    #[error(
        "{BRIDGE_NF_SYSCTL} is {value} and could not be set to 1 ({detail}); set it \
         (`sysctl -w {BRIDGE_NF_SYSCTL}=1` in dockerd's network namespace) and retry: \
         without it, sessions on one bridge are not isolated from each other"
    )]
    BridgeNetfilterOff { value: String, detail: String },
    #[error(
        "the iptables chain {DOCKER_USER_CHAIN} does not exist: start dockerd (with its \
         iptables management on, the default) before applying isolation"
    )]
    NoDockerUserChain,
    #[error(
        "invalid iptables chain name {chain:?}: 1 to 28 characters of [A-Za-z0-9_-], not DOCKER-USER or FORWARD"
    )]
    InvalidChain { chain: String },
    #[error("Docker network {network}: {source}")]
    Docker {
        network: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "Docker network {network} uses the {driver:?} driver; isolation needs a bridge network"
    )]
    NotABridge { network: String, driver: String },
}

pub type Result<T, E = IsolationError> = std::result::Result<T, E>;

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

/// Looks up the bridge interface of a user-defined Docker bridge network
/// (by name or id).
pub async fn bridge_of_network(docker: &Docker, network: &str) -> Result<Bridge> {
    let info = docker
        .inspect_network(network, None)
        .await
        .map_err(|source| IsolationError::Docker {
            network: network.to_string(),
            source,
        })?;
    let driver = info.driver.unwrap_or_default();
    if driver != "bridge" {
        return Err(IsolationError::NotABridge {
            network: network.to_string(),
            driver,
        });
    }
    Bridge::of_network(
        info.id.as_deref().unwrap_or_default(),
        info.options.as_ref(),
    )
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
    fn is_for(&self, bridge: &Bridge) -> bool {
        let tag = bridge.tag();
        self.0
            .windows(2)
            .any(|w| w[0] == "--comment" && w[1] == tag)
    }

    /// The bridge whose tag the rule carries.
    fn bridge(&self) -> Option<Bridge> {
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

/// How to run a command in the network namespace whose firewall is managed:
/// nothing on the host, `nsenter --net=PATH` for another namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandPrefix(Vec<OsString>);

impl CommandPrefix {
    /// Run commands as they are (in this process's namespace).
    pub fn host() -> CommandPrefix {
        CommandPrefix(Vec::new())
    }

    /// Run commands inside the network namespace at `path`
    /// (`/var/run/netns/NAME` or `/proc/PID/ns/net`) through `nsenter`.
    pub fn nsenter_net(path: impl AsRef<Path>) -> CommandPrefix {
        let mut net = OsString::from("--net=");
        net.push(path.as_ref());
        CommandPrefix(vec!["nsenter".into(), net])
    }

    /// Any prefix: the program and arguments put before every command.
    pub fn new<I: IntoIterator<Item = S>, S: Into<OsString>>(words: I) -> CommandPrefix {
        CommandPrefix(words.into_iter().map(Into::into).collect())
    }

    fn command(&self, program: &str, args: &[&str]) -> tokio::process::Command {
        let mut words = self.0.iter().map(OsString::as_os_str);
        let mut cmd = match words.next() {
            Some(first) => {
                let mut cmd = tokio::process::Command::new(first);
                cmd.args(words).arg(program);
                cmd
            }
            None => tokio::process::Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    fn command_line(&self, program: &str, args: &[&str]) -> String {
        self.0
            .iter()
            .map(|w| w.to_string_lossy().into_owned())
            .chain(std::iter::once(program.to_string()))
            .chain(args.iter().map(|a| a.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What [`Isolation::apply`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The bridge's rules were added or replaced.
    pub rules_changed: bool,
    /// The chain, or a jump to it (from `DOCKER-USER` or `FORWARD`), was
    /// (re-)created or moved back ahead of Docker's rules.
    pub jump_restored: bool,
    /// `net.bridge.bridge-nf-call-iptables` was 0 and is now 1.
    pub bridge_netfilter_enabled: bool,
}

impl Applied {
    /// Whether anything changed.
    pub fn changed(&self) -> bool {
        self.rules_changed || self.jump_restored || self.bridge_netfilter_enabled
    }
}

/// The isolation manager of one network namespace (the one dockerd runs in).
/// Its calls are serialised, so the node agent may share one.
#[derive(Debug)]
pub struct Isolation {
    prefix: CommandPrefix,
    chain: String,
    iptables: String,
    iptables_restore: String,
    lock: Mutex<()>,
}

struct Output {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

impl Isolation {
    /// A manager that runs `iptables`, `iptables-restore` and `sysctl` from
    /// the PATH through `prefix`.
    pub fn new(prefix: CommandPrefix) -> Isolation {
        Isolation {
            prefix,
            chain: CHAIN.into(),
            iptables: "iptables".into(),
            iptables_restore: "iptables-restore".into(),
            lock: Mutex::new(()),
        }
    }

    /// Uses other `iptables` / `iptables-restore` programs (the pair dockerd
    /// uses, e.g. `iptables-legacy`).
    pub fn with_programs(mut self, iptables: &str, iptables_restore: &str) -> Isolation {
        self.iptables = iptables.into();
        self.iptables_restore = iptables_restore.into();
        self
    }

    /// Keeps the rules in another chain than [`CHAIN`] (1 to 28 characters
    /// of `[A-Za-z0-9_-]`): lets tests that share a namespace keep apart.
    pub fn with_chain(mut self, chain: &str) -> Result<Isolation> {
        let valid = (1..=28).contains(&chain.len())
            && chain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            && chain != DOCKER_USER_CHAIN
            && chain != FORWARD_CHAIN;
        if !valid {
            return Err(IsolationError::InvalidChain {
                chain: chain.to_string(),
            });
        }
        self.chain = chain.into();
        Ok(self)
    }

    /// The chain the rules live in.
    pub fn chain(&self) -> &str {
        &self.chain
    }

    async fn output(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<Output> {
        let command = self.prefix.command_line(program, args);
        let spawn_error = |source| IsolationError::Spawn {
            command: command.clone(),
            source,
        };
        let mut cmd = self.prefix.command(program, args);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().map_err(spawn_error)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(spawn_error)?;
            drop(pipe);
        }
        let out = child.wait_with_output().await.map_err(spawn_error)?;
        Ok(Output {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let out = self.output(program, args, stdin).await?;
        if out.success {
            Ok(out.stdout)
        } else {
            Err(IsolationError::Command {
                command: self.prefix.command_line(program, args),
                status: out.status,
                stderr: out.stderr,
            })
        }
    }

    /// `iptables -S CHAIN`, or `None` when the chain does not exist.
    async fn list_chain(&self, chain: &str) -> Result<Option<String>> {
        let out = self
            .output(&self.iptables, &["-w", "-S", chain], None)
            .await?;
        Ok(out.success.then_some(out.stdout))
    }

    /// Makes sure bridged traffic passes through iptables in the namespace:
    /// reads `net.bridge.bridge-nf-call-iptables` and sets it to 1 when it is
    /// 0. Returns whether it had to be set.
    pub async fn ensure_bridge_netfilter(&self) -> Result<bool> {
        let read = self
            .output("sysctl", &["-n", BRIDGE_NF_SYSCTL], None)
            .await?;
        if !read.success {
            return Err(IsolationError::BridgeNetfilterUnavailable {
                detail: read.stderr,
            });
        }
        let value = read.stdout.trim().to_string();
        if value == "1" {
            return Ok(false);
        }
        let assignment = format!("{BRIDGE_NF_SYSCTL}=1");
        let set = self.output("sysctl", &["-w", &assignment], None).await?;
        let now = self
            .output("sysctl", &["-n", BRIDGE_NF_SYSCTL], None)
            .await?;
        if set.success && now.success && now.stdout.trim() == "1" {
            tracing::info!(sysctl = BRIDGE_NF_SYSCTL, "enabled bridge netfilter");
            Ok(true)
        } else {
            Err(IsolationError::BridgeNetfilterOff {
                value,
                detail: if set.stderr.is_empty() {
                    now.stderr
                } else {
                    set.stderr
                },
            })
        }
    }

    /// Creates the chain unless it exists; returns whether it had to.
    async fn ensure_chain(&self) -> Result<bool> {
        if self.list_chain(&self.chain).await?.is_some() {
            return Ok(false);
        }
        self.run(&self.iptables, &["-w", "-N", &self.chain], None)
            .await?;
        Ok(true)
    }

    /// Makes `DOCKER-USER` jump to the chain (first); returns whether the
    /// jump had to be (re-)created.
    async fn ensure_jump(&self) -> Result<bool> {
        let jump = self
            .output(
                &self.iptables,
                &["-w", "-C", DOCKER_USER_CHAIN, "-j", &self.chain],
                None,
            )
            .await?;
        if jump.success {
            return Ok(false);
        }
        if self.list_chain(DOCKER_USER_CHAIN).await?.is_none() {
            return Err(IsolationError::NoDockerUserChain);
        }
        self.run(
            &self.iptables,
            &["-w", "-I", DOCKER_USER_CHAIN, "1", "-j", &self.chain],
            None,
        )
        .await?;
        Ok(true)
    }

    /// Makes `FORWARD` jump to the chain ahead of the rules that accept
    /// `bridge`'s traffic; returns whether the jump had to be added or moved.
    async fn ensure_forward_jump(&self, bridge: &Bridge) -> Result<bool> {
        let forward = self
            .run(&self.iptables, &["-w", "-S", FORWARD_CHAIN], None)
            .await?;
        if forward_jump_in_place(&forward, &self.chain, bridge) {
            return Ok(false);
        }
        let script = forward_jump_script(&forward, &self.chain);
        self.run(&self.iptables_restore, &["-w", "--noflush"], Some(&script))
            .await?;
        Ok(true)
    }

    /// Isolates the sessions on `bridge` from each other, letting `allowed`
    /// sources on the same bridge reach them (pass none when the proxy runs
    /// on the host). Idempotent: a second call with the same arguments
    /// changes nothing; after a dockerd restart it restores what is missing.
    pub async fn apply(&self, bridge: &Bridge, allowed: &[Ipv4Addr]) -> Result<Applied> {
        let _guard = self.lock.lock().await;
        let bridge_netfilter_enabled = self.ensure_bridge_netfilter().await?;
        let chain_created = self.ensure_chain().await?;
        let current = parse_chain(
            &self.chain,
            &self.list_chain(&self.chain).await?.unwrap_or_default(),
        );
        let desired = rules_for(bridge, allowed);
        let rules_changed = match plan(&self.chain, &current, bridge, &desired) {
            Some(script) => {
                self.run(&self.iptables_restore, &["-w", "--noflush"], Some(&script))
                    .await?;
                true
            }
            None => false,
        };
        // The jumps last: the chain is complete before traffic enters it.
        let docker_user_jump = self.ensure_jump().await?;
        let forward_jump = self.ensure_forward_jump(bridge).await?;
        let jump_restored = chain_created || docker_user_jump || forward_jump;
        let applied = Applied {
            rules_changed,
            jump_restored,
            bridge_netfilter_enabled,
        };
        if applied.changed() {
            tracing::info!(
                bridge = %bridge,
                allowed = ?allowed,
                rules_changed,
                jump_restored,
                bridge_netfilter_enabled,
                "east-west isolation applied"
            );
        }
        Ok(applied)
    }

    /// Removes the rules of `bridge` (a deleted network). Returns whether
    /// there were any; the chain and its jumps stay.
    pub async fn remove(&self, bridge: &Bridge) -> Result<bool> {
        let _guard = self.lock.lock().await;
        let Some(listing) = self.list_chain(&self.chain).await? else {
            return Ok(false);
        };
        let current = parse_chain(&self.chain, &listing);
        match plan(&self.chain, &current, bridge, &[]) {
            Some(script) => {
                self.run(&self.iptables_restore, &["-w", "--noflush"], Some(&script))
                    .await?;
                tracing::info!(bridge = %bridge, "east-west isolation removed");
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The bridges that have rules in the chain, sorted.
    pub async fn isolated_bridges(&self) -> Result<Vec<Bridge>> {
        let listing = self.list_chain(&self.chain).await?.unwrap_or_default();
        let mut bridges: Vec<Bridge> = parse_chain(&self.chain, &listing)
            .iter()
            .filter_map(Rule::bridge)
            .collect();
        bridges.sort();
        bridges.dedup();
        Ok(bridges)
    }

    /// Takes everything out: the jumps, then the chain and all its rules.
    /// Returns whether there was anything to remove.
    pub async fn uninstall(&self) -> Result<bool> {
        let _guard = self.lock.lock().await;
        let mut removed = false;
        for from in [DOCKER_USER_CHAIN, FORWARD_CHAIN] {
            let jump = ["-w", "-D", from, "-j", self.chain.as_str()];
            // `-D` removes one copy per call; a copy added by hand goes too.
            while self.output(&self.iptables, &jump, None).await?.success {
                removed = true;
            }
        }
        if self.list_chain(&self.chain).await?.is_some() {
            self.run(&self.iptables, &["-w", "-F", &self.chain], None)
                .await?;
            self.run(&self.iptables, &["-w", "-X", &self.chain], None)
                .await?;
            removed = true;
        }
        Ok(removed)
    }

    /// The rules of the chain as `iptables -S` prints them (empty when the
    /// chain does not exist), for diagnostics.
    pub async fn listing(&self) -> Result<String> {
        Ok(self.list_chain(&self.chain).await?.unwrap_or_default())
    }
}

/// Keeps a network isolated for as long as the future runs: applies the
/// rules at start and every `period` after (idempotent: a pass that finds
/// the rules in place changes nothing), which also restores them after a
/// dockerd restart or a network re-creation. A network that does not exist
/// yet (the node agent creates it) is waited for; a failure is logged and
/// tried again at the next pass.
pub async fn keep_applied(
    docker: Docker,
    network: String,
    isolation: Isolation,
    allowed: Vec<Ipv4Addr>,
    period: std::time::Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = String::new();
    loop {
        tick.tick().await;
        let result = match bridge_of_network(&docker, &network).await {
            Ok(bridge) => isolation
                .apply(&bridge, &allowed)
                .await
                .map(|a| (bridge, a)),
            Err(e) => Err(e),
        };
        match result {
            Ok((bridge, applied)) => {
                if applied.changed() {
                    tracing::info!(%network, %bridge, ?applied, "east-west isolation applied");
                }
                last_error.clear();
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_error {
                    tracing::warn!(%network, error = %msg, "east-west isolation not applied yet; will try again");
                    last_error = msg;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                format!(
                    "-A MEDFORGE-ISOLATION -s 172.18.0.2/32 -i br-abc -o br-abc {tag} -j ACCEPT"
                ),
                format!(
                    "-A MEDFORGE-ISOLATION -d 172.18.0.2/32 -i br-abc -o br-abc -m conntrack --ctstate RELATED,ESTABLISHED {tag} -j ACCEPT"
                ),
                format!(
                    "-A MEDFORGE-ISOLATION -s 172.18.0.9/32 -i br-abc -o br-abc {tag} -j ACCEPT"
                ),
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

    #[test]
    fn plan_is_empty_when_the_rules_are_in_place() {
        let current = parse_chain(CHAIN, LISTING);
        let allowed = ["172.18.0.2".parse().unwrap()];
        assert_eq!(
            plan(
                CHAIN,
                &current,
                &br("br-abc"),
                &rules_for(&br("br-abc"), &allowed)
            ),
            None
        );
        assert_eq!(
            plan(
                CHAIN,
                &current,
                &br("br-xyz"),
                &rules_for(&br("br-xyz"), &[])
            ),
            None
        );
    }

    #[test]
    fn plan_replaces_only_the_bridges_own_rules() {
        let current = parse_chain(CHAIN, LISTING);
        let script = plan(
            CHAIN,
            &current,
            &br("br-xyz"),
            &rules_for(&br("br-xyz"), &["10.0.0.1".parse().unwrap()]),
        )
        .expect("a change");
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
        let new = plan(
            CHAIN,
            &current,
            &br("br-new"),
            &rules_for(&br("br-new"), &[]),
        )
        .unwrap();
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
    fn chain_names_are_checked() {
        let isolation = || Isolation::new(CommandPrefix::host());
        assert_eq!(isolation().chain(), CHAIN);
        let own = isolation().with_chain("MFISO-t1234567").unwrap();
        assert_eq!(own.chain(), "MFISO-t1234567");
        let long = "X".repeat(29);
        for bad in ["", "DOCKER-USER", "FORWARD", "a b", "a;b", long.as_str()] {
            assert!(isolation().with_chain(bad).is_err(), "{bad:?} accepted");
        }
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

    #[test]
    fn command_prefixes() {
        let ns = CommandPrefix::nsenter_net("/var/run/netns/t1");
        assert_eq!(
            ns.command_line("iptables", &["-w", "-S", CHAIN]),
            "nsenter --net=/var/run/netns/t1 iptables -w -S MEDFORGE-ISOLATION"
        );
        assert_eq!(
            CommandPrefix::host().command_line("sysctl", &["-n", BRIDGE_NF_SYSCTL]),
            "sysctl -n net.bridge.bridge-nf-call-iptables"
        );
        assert_eq!(
            CommandPrefix::new(["ip", "netns", "exec", "x"]).command_line("iptables", &[]),
            "ip netns exec x iptables"
        );
    }
}
