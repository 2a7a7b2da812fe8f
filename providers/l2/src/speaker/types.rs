//! What a speaker is told and tells: its settings, its inputs, its status and events.

use crate::announcer::AnnouncerStatus;
use crate::config::L2Config;
use crate::membership::MembershipTuning;
use crate::owner::Quorum;
use crate::responder::AnnounceTiming;
use crate::wire::{GossipKeys, Refused};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Settings of one node's speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// This node's name, as in the Node object.
    pub node_name: String,
    /// The address peers reach this speaker at (the node's InternalIP).
    pub node_addr: IpAddr,
    /// Local address of the gossip socket; `None` binds the unspecified
    /// address of `node_addr`'s family on `l2.gossipPort`.
    pub gossip_bind: Option<SocketAddr>,
    /// The `l2` section of the configuration.
    pub l2: L2Config,
    /// Failure-detector timing.
    pub membership: MembershipTuning,
    /// Takeover burst (the refresh period comes from `l2.garpRefresh`).
    pub burst: u32,
    /// Spacing of the takeover burst.
    pub burst_interval: Duration,
    /// How long a new speaker that has heard from no peer stays silent.
    pub startup_grace: Duration,
    /// How often interfaces are listed again (a netlink watch also triggers it on every
    /// link or address change).
    pub rescan: Duration,
    /// Keys of the gossip (from the gossip Secret); empty: unsigned gossip.
    pub gossip_keys: GossipKeys,
    /// How long a new owner waits for a live previous owner's release before it answers
    /// anyway (make before break; a dead owner is not waited for).
    pub handover_wait: Duration,
}

/// Default bound of the make-before-break wait: well above a release's round trip
/// (milliseconds) and an API watch's usual lag between nodes, well below what a user
/// notices in a planned move.
pub const DEFAULT_HANDOVER_WAIT: Duration = Duration::from_secs(1);

impl SpeakerConfig {
    /// Defaults for a node; only name, address and the l2 section vary.
    pub fn new(node_name: impl Into<String>, node_addr: IpAddr, l2: L2Config) -> Self {
        let timing = AnnounceTiming::default();
        Self {
            node_name: node_name.into(),
            node_addr,
            gossip_bind: None,
            l2,
            membership: MembershipTuning::default(),
            burst: timing.burst,
            burst_interval: timing.burst_interval,
            startup_grace: Duration::from_secs(2),
            rescan: Duration::from_secs(10),
            gossip_keys: GossipKeys::default(),
            handover_wait: DEFAULT_HANDOVER_WAIT,
        }
    }
}

/// What the speaker knows about one Node from the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInput {
    /// The Node's labels (matched against `l2.nodeSelector`).
    pub labels: BTreeMap<String, String>,
    /// Its addresses (InternalIP first); the first is where its speaker's
    /// gossip socket is expected.
    pub addrs: Vec<IpAddr>,
}

/// One takeover by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The IP now announced here.
    pub ip: IpAddr,
    /// The node that announced it before, if any did.
    pub previous_owner: Option<String>,
    /// Time since the previous owner was last heard from, if it departed:
    /// the failover time as this node can see it.
    pub since_last_heard: Option<Duration>,
    /// Time since its departure was detected: this speaker's reaction time.
    pub since_detected: Option<Duration>,
}

/// A change worth a metric, a log line or a Kubernetes event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpeakerEvent {
    /// This node started announcing an IP.
    Takeover(Takeover),
    /// This node stopped announcing an IP.
    Released {
        /// The IP.
        ip: IpAddr,
        /// Who owns it now, in this node's view.
        new_owner: Option<String>,
    },
    /// A peer speaker became live.
    MemberUp {
        /// Its node name.
        name: String,
    },
    /// A peer speaker left the live set.
    MemberDown {
        /// Its node name.
        name: String,
        /// It said goodbye.
        graceful: bool,
        /// How long it had been silent when declared down.
        silent_for: Option<Duration>,
    },
    /// The split-brain verdict changed.
    Quorum(Quorum),
    /// Another host uses an address this node owns: it is quarantined (neither answered
    /// nor announced) until a probe finds it free again.
    Conflict {
        /// The address.
        ip: IpAddr,
        /// The other host's MAC.
        mac: crate::frame::Mac,
        /// The interface of this node it was seen on.
        iface: String,
    },
    /// A quarantined address was found free and is announced again.
    ConflictCleared {
        /// The address.
        ip: IpAddr,
    },
}

/// The speaker's current state, for metrics, status and the
/// `portway.dev/announced-by` annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeakerStatus {
    /// Owner of every VIP in this node's view. Shared (`Arc`): every reader of a status
    /// snapshot (metrics, the annotation keeper) gets it without a copy of 10,000 entries.
    pub owners: Arc<BTreeMap<IpAddr, Option<String>>>,
    /// VIPs this node announces now (shared as `owners`).
    pub announcing: Arc<BTreeSet<IpAddr>>,
    /// The split-brain verdict (`None` before the first election).
    pub quorum: Option<Quorum>,
    /// Live speakers, this one included.
    pub live: BTreeSet<String>,
    /// Known speakers, this one included.
    pub known: BTreeSet<String>,
    /// Still in the startup grace (announcing nothing yet).
    pub starting: bool,
    /// Takeovers by this node since start.
    pub takeovers_total: u64,
    /// The latest takeover.
    pub last_takeover: Option<Takeover>,
    /// The announcer's sockets and counters.
    pub announcer: AnnouncerStatus,
    /// Owned addresses that are this node's own interface addresses: never announced.
    pub refused_local: BTreeSet<IpAddr>,
    /// Owned addresses waiting for their live previous owner's release.
    pub waiting_release: BTreeSet<IpAddr>,
    /// Gossip datagrams refused, by reason (unsigned, bad signature, unknown sender…).
    pub gossip_refused: BTreeMap<Refused, u64>,
}

/// Why the speaker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpeakerError {
    /// The gossip socket could not be bound (port in use, no permission).
    #[error("binding the gossip socket {addr}: {source}")]
    Gossip {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The interfaces could not be listed.
    #[error("listing network interfaces: {0}")]
    Interfaces(std::io::Error),
}
