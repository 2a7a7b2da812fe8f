//! [`L2Speaker`]: membership + election + announcer for one node, the part
//! of `portway speaker` that the integrator drives from Kubernetes watches.
//!
//! ```text
//!   set_nodes(name -> labels, IPs)   ─┐                       ┌─> status(): owner per IP,
//!   set_vips / update_vips            ├─> task: elect() ──────┤   quorum, counters
//!   set_api_reachable(bool)          ─┤    on every change    ├─> events(): takeovers,
//!   Membership view (gossip)         ─┘         │             │   releases, members
//!                                               v             │
//!                                  Announcer.set_owned(owned) ┘
//! ```
//!
//! Startup: a new speaker sees only itself and would claim every IP, so it
//! announces nothing until it has heard from a peer or `startup_grace` has
//! passed (a lone speaker, or the first of a cluster); then it takes over
//! from live owners make-before-break ([`handover`]). Shutdown stops
//! answering first, then says goodbye, so peers take over within
//! milliseconds.

mod handover;
mod task;
mod types;

use handover::Handover;
use task::{Cmd, Task};

pub use types::*;

use crate::announcer::{Announcer, AnnouncerConfig};
use crate::election::VipInput;
use crate::gossip::{Membership, MembershipConfig};
use crate::iface::{self};
use crate::membership::Allowed;
use crate::responder::AnnounceTiming;
use crate::wire::GossipKeys;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

/// Handle to a running speaker.
#[derive(Debug)]
pub struct L2Speaker {
    cmd: mpsc::UnboundedSender<Cmd>,
    status: watch::Receiver<SpeakerStatus>,
    events: broadcast::Sender<SpeakerEvent>,
    task: JoinHandle<()>,
}

impl L2Speaker {
    /// Binds the gossip socket and starts membership, announcer and the
    /// election task.
    pub async fn start(config: SpeakerConfig) -> Result<Self, SpeakerError> {
        let ifaces = iface::scan().map_err(SpeakerError::Interfaces)?;
        let nets = iface::announce_nets(&config.l2.interfaces, &ifaces);
        let local_addrs = iface::local_addrs(&ifaces);
        let port = config.l2.gossip_port;
        let bind = config.gossip_bind.unwrap_or_else(|| {
            let any: IpAddr = if config.node_addr.is_ipv6() {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            };
            SocketAddr::new(any, port)
        });
        let membership = Membership::start(MembershipConfig {
            name: config.node_name.clone(),
            bind,
            advertise: SocketAddr::new(config.node_addr, port),
            nets: nets.clone(),
            tuning: config.membership,
            keys: config.gossip_keys.clone(),
        })
        .await
        .map_err(|source| SpeakerError::Gossip { addr: bind, source })?;
        let announcer = Announcer::start(AnnouncerConfig {
            interfaces: config.l2.interfaces.clone(),
            timing: AnnounceTiming {
                burst: config.burst,
                burst_interval: config.burst_interval,
                refresh: config.l2.garp_refresh,
            },
            rescan: config.rescan,
        });
        let (cmd, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(SpeakerStatus {
            starting: true,
            ..SpeakerStatus::default()
        });
        // A takeover is one event per address: room for a node's share of 10,000.
        let (events, _) = broadcast::channel(16_384);
        let task = Task {
            started: Instant::now(),
            view: membership.view(),
            member_events: membership.events(),
            refused: membership.refused(),
            announcer_status: announcer.status(),
            membership: Some(membership),
            announcer: Some(announcer),
            nodes: BTreeMap::new(),
            nodes_known: false,
            vips: BTreeMap::new(),
            labels: BTreeMap::new(),
            live_nets: BTreeMap::new(),
            api_reachable: false,
            nets,
            local_addrs,
            handover: Handover::new(config.handover_wait),
            scores: crate::election::ScoreCache::default(),
            owned: BTreeSet::new(),
            choices: BTreeMap::new(),
            trusted_view: false,
            status: SpeakerStatus {
                starting: true,
                ..SpeakerStatus::default()
            },
            status_tx,
            events: events.clone(),
            config,
        };
        let task = tokio::spawn(task.run(rx));
        Ok(Self {
            cmd,
            status,
            events,
            task,
        })
    }

    /// Replaces the Node view (labels for the selector, addresses as gossip
    /// seeds); call on every Node change. Nodes absent here cannot own IPs.
    pub fn set_nodes(&self, nodes: BTreeMap<String, NodeInput>) {
        let _ = self.cmd.send(Cmd::Nodes(nodes));
    }

    /// Replaces the VIPs to place (each address once).
    pub fn set_vips(&self, vips: Vec<VipInput>) {
        let _ = self.cmd.send(Cmd::Vips(vips));
    }

    /// Changes only the VIPs named: `set` added or changed (endpoints, policy, scope),
    /// `remove` gone. Only those are elected and handed to the announcer, so one changed
    /// Service costs its own addresses' work whatever the number of VIPs.
    pub fn update_vips(&self, set: Vec<VipInput>, remove: Vec<IpAddr>) {
        if !set.is_empty() || !remove.is_empty() {
            let _ = self.cmd.send(Cmd::VipDelta(set, remove));
        }
    }

    /// The Nodes whose speakers may gossip with this one, each with the addresses it may
    /// send from: every Node from the API, eligible or not (an excluded node still hands
    /// its addresses over). `None` accepts any sender that holds the key.
    pub fn set_allowed(&self, allowed: Option<BTreeMap<String, BTreeSet<IpAddr>>>) {
        let _ = self.cmd.send(Cmd::Allowed(allowed.map(|a| a as Allowed)));
    }

    /// Replaces the gossip keys (rotation: the first signs, all verify).
    pub fn set_gossip_keys(&self, keys: GossipKeys) {
        let _ = self.cmd.send(Cmd::Keys(keys));
    }

    /// Whether the API server answered recently (the split-brain rule lets a
    /// speaker that reaches it keep announcing without a gossip majority).
    pub fn set_api_reachable(&self, reachable: bool) {
        let _ = self.cmd.send(Cmd::Api(reachable));
    }

    /// A live view of the speaker's state.
    pub fn status(&self) -> watch::Receiver<SpeakerStatus> {
        self.status.clone()
    }

    /// Every event from now on.
    pub fn events(&self) -> broadcast::Receiver<SpeakerEvent> {
        self.events.subscribe()
    }

    /// Stops answering, says goodbye to the peers and stops every task.
    pub async fn shutdown(self) {
        crate::actor::stop(&self.cmd, self.task, Cmd::Shutdown).await;
    }
}
