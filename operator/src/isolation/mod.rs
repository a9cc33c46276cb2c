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
//!
//! The parts: [`rules`] is the rule model (pure), [`iptables`] runs the
//! commands, [`task`] keeps a network isolated while the node agent runs.

mod error;
pub mod iptables;
pub mod rules;
pub mod task;

pub use error::{
    BRIDGE_NAME_OPTION, BRIDGE_NF_SYSCTL, CHAIN, DOCKER_USER_CHAIN, FORWARD_CHAIN, IsolationError,
    Result,
};
pub use iptables::{Applied, CommandPrefix, Isolation};
pub use rules::{
    Bridge, Rule, forward_jump_in_place, forward_jump_script, parse_chain, plan, restore_script,
    rules_for,
};
pub use task::{IsolationGate, IsolationStatus, bridge_of_network, keep_applied};
