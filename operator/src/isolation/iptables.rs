//! Runs the isolation's commands (`iptables`, `iptables-restore`,
//! `sysctl`) in the network namespace dockerd runs in, and puts a bridge's
//! rules and the jumps to them in place.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::error::{
    BRIDGE_NF_SYSCTL, CHAIN, DOCKER_USER_CHAIN, FORWARD_CHAIN, IsolationError, Result,
};
use super::rules::{
    Bridge, Rule, forward_jump_in_place, forward_jump_script, parse_chain, plan, rules_for,
};

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

#[cfg(test)]
mod tests;
