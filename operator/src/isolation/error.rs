//! The names isolation works with, and what goes wrong.

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
    #[error(
        "Docker network {network} has IPv6 on, which the isolation rules (iptables, IPv4) do not \
         cover; remove it while no session runs (docker network rm {network}): the node agent \
         creates it again without IPv6"
    )]
    Ipv6Enabled { network: String },
}

pub type Result<T, E = IsolationError> = std::result::Result<T, E>;
