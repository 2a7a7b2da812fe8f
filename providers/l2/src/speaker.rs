//! [`L2Speaker`]: membership + election + announcer for one node, the part
//! of `portway speaker` that the integrator drives from Kubernetes watches.
//!
//! ```text
//!   set_nodes(name -> labels, IPs)   ─┐                       ┌─> status(): owner per IP,
//!   set_vips([VipInput])              ├─> task: elect() ──────┤   quorum, counters
//!   set_api_reachable(bool)          ─┤    on every change    ├─> events(): takeovers,
//!   Membership view (gossip)         ─┘         │             │   releases, members
//!                                               v             │
//!                                  Announcer.set_owned(owned) ┘
//! ```
//!
//! Startup: a new speaker sees only itself and would claim every IP, so it
//! announces nothing until it has heard from a peer or `startup_grace` has
//! passed (a lone speaker, or the first of a cluster). Shutdown stops
//! answering first, then says goodbye, so peers take over within
//! milliseconds.

use crate::announcer::{Announcer, AnnouncerConfig, AnnouncerStatus};
use crate::config::L2Config;
use crate::election::{ElectionInput, VipInput, elect};
use crate::gossip::{Membership, MembershipConfig, MembershipView};
use crate::iface::{self, InterfaceChoice};
use crate::membership::{MembershipEvent, MembershipTuning};
use crate::owner::Quorum;
use crate::responder::AnnounceTiming;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

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
    /// How often interfaces are listed again.
    pub rescan: Duration,
}

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
}

/// The speaker's current state, for metrics, status and the
/// `portway.dev/announced-by` annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpeakerStatus {
    /// Owner of every VIP in this node's view.
    pub owners: BTreeMap<IpAddr, Option<String>>,
    /// VIPs this node announces now.
    pub announcing: BTreeSet<IpAddr>,
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

enum Cmd {
    Nodes(BTreeMap<String, NodeInput>),
    Vips(Vec<VipInput>),
    Api(bool),
    Shutdown(oneshot::Sender<()>),
}

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
        let (events, _) = broadcast::channel(1024);
        let task = Task {
            started: Instant::now(),
            view: membership.view(),
            member_events: membership.events(),
            announcer_status: announcer.status(),
            membership: Some(membership),
            announcer: Some(announcer),
            nodes: BTreeMap::new(),
            nodes_known: false,
            vips: Vec::new(),
            api_reachable: false,
            nets,
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

    /// Replaces the VIPs to place.
    pub fn set_vips(&self, vips: Vec<VipInput>) {
        let _ = self.cmd.send(Cmd::Vips(vips));
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

struct Task {
    config: SpeakerConfig,
    started: Instant,
    membership: Option<Membership>,
    announcer: Option<Announcer>,
    view: watch::Receiver<MembershipView>,
    member_events: broadcast::Receiver<MembershipEvent>,
    announcer_status: watch::Receiver<AnnouncerStatus>,
    nodes: BTreeMap<String, NodeInput>,
    nodes_known: bool,
    vips: Vec<VipInput>,
    api_reachable: bool,
    nets: Vec<IpNet>,
    status: SpeakerStatus,
    status_tx: watch::Sender<SpeakerStatus>,
    events: broadcast::Sender<SpeakerEvent>,
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut rescan = tokio::time::interval(self.config.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let grace_end = tokio::time::Instant::from_std(self.started + self.config.startup_grace);
        let mut grace_pending = true;
        let mut announcer_alive = true;
        loop {
            tokio::select! {
                biased;
                cmd = cmds.recv() => match cmd {
                    // The integrator hands in its whole view on every pass; an unchanged
                    // input changes no owner, so it is not worth an election (the
                    // membership repeats its own joins).
                    Some(Cmd::Nodes(nodes)) => {
                        if !self.nodes_known || nodes != self.nodes {
                            self.set_nodes(nodes);
                            self.elect().await;
                        }
                    }
                    Some(Cmd::Vips(vips)) => {
                        if vips != self.vips {
                            self.vips = vips;
                            self.elect().await;
                        }
                    }
                    Some(Cmd::Api(up)) => {
                        if up != self.api_reachable {
                            self.api_reachable = up;
                            self.elect().await;
                        }
                    }
                    Some(Cmd::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ev = self.member_events.recv() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        // The membership task is gone: nothing sane is left to do.
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    let _ = self.events.send(match ev {
                        MembershipEvent::Up(id) => SpeakerEvent::MemberUp { name: id.name },
                        MembershipEvent::Down(id, d) => SpeakerEvent::MemberDown {
                            name: id.name,
                            graceful: d.graceful,
                            silent_for: d.last_heard.map(|h| d.at.saturating_duration_since(h)),
                        },
                    });
                }
                res = self.view.changed() => {
                    if res.is_err() {
                        return; // membership task gone: nothing sane left to do
                    }
                    self.elect().await;
                }
                res = self.announcer_status.changed(), if announcer_alive => {
                    if res.is_ok() {
                        self.status.announcer = self.announcer_status.borrow_and_update().clone();
                        self.publish();
                    } else {
                        tracing::error!("l2 announcer task ended; nothing is answered any more");
                        announcer_alive = false;
                    }
                }
                _ = tokio::time::sleep_until(grace_end), if grace_pending => {
                    grace_pending = false;
                    self.elect().await;
                }
                _ = rescan.tick() => self.rescan().await,
            }
        }
    }

    fn set_nodes(&mut self, nodes: BTreeMap<String, NodeInput>) {
        self.nodes_known = true;
        let port = self.config.l2.gossip_port;
        let seeds: Vec<(String, SocketAddr)> = nodes
            .iter()
            .filter_map(|(name, n)| {
                n.addrs
                    .first()
                    .map(|ip| (name.clone(), SocketAddr::new(*ip, port)))
            })
            .collect();
        if let Some(m) = &self.membership {
            for gone in self.nodes.keys().filter(|n| !nodes.contains_key(*n)) {
                m.forget(gone);
            }
            m.join(seeds);
        }
        self.nodes = nodes;
    }

    async fn rescan(&mut self) {
        match iface::scan() {
            Ok(ifaces) => {
                let nets = iface::announce_nets(&self.config.l2.interfaces, &ifaces);
                if nets != self.nets {
                    self.nets = nets.clone();
                    if let Some(m) = &self.membership {
                        m.set_nets(nets);
                    }
                    self.elect().await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing interfaces"),
        }
    }

    async fn elect(&mut self) {
        let view = self.view.borrow_and_update().clone();
        let me = self.config.node_name.clone();
        let mut live: BTreeMap<String, Vec<IpNet>> = view
            .live
            .iter()
            .map(|(n, id)| (n.clone(), id.nets.clone()))
            .collect();
        live.insert(me.clone(), self.nets.clone());
        let mut known = view.known.clone();
        if self.nodes_known {
            known.retain(|n| self.nodes.contains_key(n));
        }
        known.insert(me.clone());
        let labels: BTreeMap<String, BTreeMap<String, String>> = self
            .nodes
            .iter()
            .map(|(n, i)| (n.clone(), i.labels.clone()))
            .collect();
        let election = elect(&ElectionInput {
            me: &me,
            config: &self.config.l2,
            nodes: &labels,
            live: &live,
            known: &known,
            api_reachable: self.api_reachable,
            vips: &self.vips,
        });
        let starting = view.live.is_empty() && self.started.elapsed() < self.config.startup_grace;
        let owned = if starting {
            BTreeSet::new()
        } else {
            election.owned_by(&me)
        };
        if self.status.quorum != Some(election.quorum) {
            let _ = self.events.send(SpeakerEvent::Quorum(election.quorum));
        }
        if owned != self.status.announcing {
            if let Some(a) = &self.announcer {
                a.set_owned(
                    owned
                        .iter()
                        .map(|ip| (*ip, InterfaceChoice::Auto))
                        .collect(),
                )
                .await;
            }
            let now = Instant::now();
            for ip in owned.difference(&self.status.announcing) {
                let previous_owner = self
                    .status
                    .owners
                    .get(ip)
                    .cloned()
                    .flatten()
                    .filter(|p| *p != me);
                let departure = previous_owner.as_ref().and_then(|p| view.departed.get(p));
                let t = Takeover {
                    ip: *ip,
                    previous_owner,
                    since_last_heard: departure
                        .and_then(|d| d.last_heard)
                        .map(|h| now.saturating_duration_since(h)),
                    since_detected: departure.map(|d| now.saturating_duration_since(d.at)),
                };
                tracing::info!(ip = %t.ip, previous = ?t.previous_owner, since_last_heard = ?t.since_last_heard, "l2 takeover");
                self.status.takeovers_total += 1;
                self.status.last_takeover = Some(t.clone());
                let _ = self.events.send(SpeakerEvent::Takeover(t));
            }
            for ip in self.status.announcing.difference(&owned) {
                let new_owner = election.owners.get(ip).cloned().flatten();
                tracing::info!(%ip, new_owner = ?new_owner, "l2 release");
                let _ = self
                    .events
                    .send(SpeakerEvent::Released { ip: *ip, new_owner });
            }
        }
        self.status.owners = election.owners;
        self.status.announcing = owned;
        self.status.quorum = Some(election.quorum);
        self.status.live = live.keys().cloned().collect();
        self.status.known = known;
        self.status.starting = starting;
        self.publish();
    }

    fn publish(&self) {
        let status = self.status.clone();
        self.status_tx.send_if_modified(|s| {
            if *s == status {
                false
            } else {
                *s = status;
                true
            }
        });
    }

    async fn shutdown(&mut self) {
        if let Some(a) = self.announcer.take() {
            a.set_owned(BTreeMap::new()).await;
            self.status.announcing.clear();
            if let Some(m) = self.membership.take() {
                m.leave().await;
            }
            a.shutdown().await;
        }
        self.publish();
    }
}
