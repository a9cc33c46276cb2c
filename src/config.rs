//! From flags to the crates' configurations: what `cli` parsed becomes a
//! `SchedulerConfig`, an `ApiConfig` or an `AgentConfig`. The one I/O here is
//! what a configuration needs to exist: the GPU inventory (NVML) and the
//! network namespace the agent dials into.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medforge_crds::policy::SessionPolicy;
use medforge_operator::agent::AgentConfig;
use medforge_operator::isolation::CommandPrefix;
use medforge_operator::scheduler::controller::SchedulerConfig;
use medforge_operator::scheduler::placement::Limits;

use crate::cli::{AgentArgs, ApiSettings, PolicyArgs, SchedulerArgs};

impl SchedulerArgs {
    /// The scheduler's configuration, electing itself as `identity`.
    pub fn config(&self, identity: &str) -> SchedulerConfig {
        let mut c = SchedulerConfig::new(identity);
        c.limits = Limits {
            max_sessions_per_user: self.max_sessions_per_user,
            max_gpus_per_user: self.max_gpus_per_user,
            allow_cpu_only: self.allow_cpu_only,
        };
        c.policy = self.placement;
        c.heartbeat_timeout = Duration::from_secs(self.heartbeat_timeout_secs);
        c.lease.duration = self.lease_duration;
        c.history = (!self.session_history.is_zero()).then_some(self.session_history);
        c
    }
}

impl PolicyArgs {
    /// The operator's session policy: the built-in one with these values
    /// set. Refused when a value cannot be read or a default is above its
    /// maximum.
    pub fn policy(&self) -> anyhow::Result<SessionPolicy> {
        let mut policy = SessionPolicy::default();
        for (maximum, pairs, flag) in [
            (false, &self.defaults, "--session-default"),
            (true, &self.maxima, "--session-maximum"),
        ] {
            for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
                policy
                    .set(maximum, pair)
                    .map_err(|e| anyhow::anyhow!("{flag} {pair}: {e}"))?;
            }
        }
        policy
            .check()
            .map_err(|e| anyhow::anyhow!("the session policy: {e}"))?;
        Ok(policy)
    }
}

impl ApiSettings {
    /// Who may sign up, from `--signup-mode` and `--signup-domains`.
    pub fn signup(&self) -> anyhow::Result<medforge_api::SignupMode> {
        medforge_api::SignupMode::parse(&self.signup_mode, &self.signup_domains)
            .map_err(|e| anyhow::anyhow!("--signup-mode/--signup-domains: {e}"))
    }

    /// The Pack a create without one gets (`--default-pack`), refused when
    /// a create could not name it.
    pub fn default_pack(&self) -> anyhow::Result<&str> {
        if !crate::packs::is_pack_name(&self.default_pack) {
            anyhow::bail!(
                "--default-pack {:?}: a Pack's name is 1 to 63 of a-z, 0-9 and -",
                self.default_pack
            );
        }
        Ok(&self.default_pack)
    }

    /// The api's configuration, its default database under `data_dir`. An
    /// admin email needs its password in MEDFORGE_ADMIN_PASSWORD.
    pub fn config(
        &self,
        data_dir: &Path,
        policy: SessionPolicy,
    ) -> anyhow::Result<medforge_api::ApiConfig> {
        let mut c = medforge_api::ApiConfig::new(&self.domain, data_dir);
        c.sessions.policy = policy;
        c.auth.signup = self.signup()?;
        if self.token_idle_ttl > self.token_max_ttl {
            anyhow::bail!(
                "--token-idle-ttl ({:?}) is longer than --token-max-ttl ({:?})",
                self.token_idle_ttl,
                self.token_max_ttl
            );
        }
        c.auth.idle_ttl = self.token_idle_ttl;
        c.auth.max_ttl = self.token_max_ttl;
        c.rate_limit.burst = self.login_burst;
        c.rate_limit.per_minute = self.login_per_minute;
        c.trusted_proxies = self.trusted_proxies.clone();
        c.cookie.same_site = self
            .cookie_same_site
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--cookie-same-site: {e}"))?;
        if c.cookie.same_site == medforge_api::config::SameSite::None && self.insecure_cookies {
            anyhow::bail!("--cookie-same-site none needs Secure cookies: drop --insecure-cookies");
        }
        c.database_url = self.database_url.clone();
        c.sessions.namespace = self.namespace.clone();
        c.sessions.default_pack = self.default_pack()?.to_string();
        c.sessions.ready_timeout = self.session_ready_timeout;
        c.sessions.expiry_warning = self.expiry_warning;
        if self.insecure_cookies {
            c.cookie.insecure();
            c.public_scheme = "http".into();
        }
        if let Some(email) = &self.admin_email {
            let password = std::env::var("MEDFORGE_ADMIN_PASSWORD")
                .context("--admin-email needs the admin's password in MEDFORGE_ADMIN_PASSWORD")?;
            c.bootstrap_admin = Some(medforge_api::AdminBootstrap {
                email: email.clone(),
                password,
            });
        }
        Ok(c)
    }
}

impl AgentArgs {
    /// The node agent's configuration, with its GPU inventory: NVML for
    /// `auto` when a driver answers (else none), or the static list given.
    pub fn config(&self, policy: SessionPolicy) -> anyhow::Result<AgentConfig> {
        use medforge_operator::agent::WorkspaceOnDelete;
        use medforge_operator::agent::dialer::NetnsDialer;
        use medforge_operator::gpu::{GpuInventory, NvmlInventory, StaticInventory};
        let node = self.node_name.clone().unwrap_or_else(hostname);
        let mut c = AgentConfig::new(&node, &self.zfs_root);
        c.policy = policy;
        c.docker_socket = self.docker_socket.clone();
        c.zfs_binary = self.zfs_binary.clone();
        c.network = self.network.clone();
        c.metrics_addr = self.agent_metrics;
        c.extra_labels.extend(self.container_labels.iter().cloned());
        if self.destroy_workspaces {
            c.workspace_on_delete = WorkspaceOnDelete::Destroy;
        }
        if self.pull_backoff > self.pull_backoff_max {
            anyhow::bail!(
                "--pull-backoff ({:?}) is longer than --pull-backoff-max ({:?})",
                self.pull_backoff,
                self.pull_backoff_max
            );
        }
        c.pulls = medforge_operator::agent::PullPolicy {
            max_concurrent: self.max_concurrent_pulls as usize,
            backoff_min: self.pull_backoff,
            backoff_max: self.pull_backoff_max,
            auth_file: self.registry_auth_file.clone(),
        };
        c.retention = medforge_crds::Retention {
            keep_last: self.snapshot_keep_last,
            keep_days: self.snapshot_keep_days,
        };
        // East-west isolation runs inside the agent, in the network namespace
        // where dockerd's bridge is.
        c.isolation = Some(match &self.netns {
            Some(path) => CommandPrefix::nsenter_net(path),
            None => CommandPrefix::host(),
        });
        if let Some(path) = &self.netns {
            c.dialer =
                Arc::new(NetnsDialer::new(path).with_context(|| {
                    format!("opening the network namespace {}", path.display())
                })?);
        }
        let inventory: Arc<dyn GpuInventory> = match self.gpus.as_str() {
            "auto" => match NvmlInventory::init() {
                Ok(nvml) => {
                    c.gpu_device_requests = true;
                    Arc::new(nvml)
                }
                Err(e) => {
                    tracing::warn!(
                        "no NVIDIA GPUs: {e}. The node runs sessions without GPUs; pass --gpus static:N to simulate N GPUs"
                    );
                    Arc::new(StaticInventory::new(Vec::new()))
                }
            },
            spec => Arc::new(StaticInventory::parse(&node, spec)?),
        };
        c.inventory = inventory;
        Ok(c)
    }
}

/// This process's name in the scheduler's election: `<host>-<pid>`.
pub fn identity() -> String {
    format!("{}-{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}
