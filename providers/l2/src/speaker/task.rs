//! The task that owns one node's membership and announcer: it re-elects on every change
//! and tells the announcer what to answer for, handing addresses over from live owners
//! make-before-break ([`super::handover`]). A netlink watch re-reads the interfaces the
//! moment a link or an address changes, so a dead link moves its addresses within the
//! gossip's propagation time rather than at the next periodic scan.

use super::handover::Handover;
use super::types::*;
use crate::announcer::{Announcer, AnnouncerStatus};
use crate::election::{ElectionInput, ScoreCache, VipInput, elect_cached};
use crate::gossip::{Membership, MembershipView};
use crate::iface::{self, InterfaceChoice};
use crate::membership::{Allowed, MembershipEvent};
use crate::sys::LinkWatch;
use crate::wire::{GossipKeys, Refused};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What the handle asks of the task.
pub(super) enum Cmd {
    Nodes(BTreeMap<String, NodeInput>),
    Vips(Vec<VipInput>),
    Allowed(Option<Allowed>),
    Keys(GossipKeys),
    Api(bool),
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct Task {
    pub(super) config: SpeakerConfig,
    pub(super) started: Instant,
    pub(super) membership: Option<Membership>,
    pub(super) announcer: Option<Announcer>,
    pub(super) view: watch::Receiver<MembershipView>,
    pub(super) member_events: broadcast::Receiver<MembershipEvent>,
    pub(super) announcer_status: watch::Receiver<AnnouncerStatus>,
    pub(super) nodes: BTreeMap<String, NodeInput>,
    pub(super) nodes_known: bool,
    pub(super) vips: Vec<VipInput>,
    pub(super) api_reachable: bool,
    pub(super) nets: Vec<IpNet>,
    pub(super) local_addrs: BTreeSet<IpAddr>,
    pub(super) refused: watch::Receiver<BTreeMap<Refused, u64>>,
    pub(super) handover: Handover,
    pub(super) scores: ScoreCache,
    /// What the last election gave this node (before the handover waits).
    pub(super) owned: BTreeSet<IpAddr>,
    /// Where the announcer was last told to answer for each announced address.
    pub(super) choices: BTreeMap<IpAddr, InterfaceChoice>,
    /// The last election let this node announce (past the startup grace, with quorum).
    /// Until one did, this node's own record of owners is no record of who answered (it
    /// just came back, or it sat in a minority): the previous owner of an address is then
    /// whoever owns it without this node.
    pub(super) trusted_view: bool,
    pub(super) status: SpeakerStatus,
    pub(super) status_tx: watch::Sender<SpeakerStatus>,
    pub(super) events: broadcast::Sender<SpeakerEvent>,
}

impl Task {
    pub(super) async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut rescan = tokio::time::interval(self.config.rescan);
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let grace_end = tokio::time::Instant::from_std(self.started + self.config.startup_grace);
        let mut grace_pending = true;
        let mut announcer_alive = true;
        let links = match LinkWatch::open_async() {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, every = ?self.config.rescan, "no netlink link watch; interfaces are only read periodically");
                None
            }
        };
        let mut refused_alive = true;
        loop {
            let deadline = self.handover.deadline().map(tokio::time::Instant::from_std);
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
                    Some(Cmd::Allowed(allowed)) => {
                        if let Some(m) = &self.membership {
                            m.allow(allowed);
                        }
                    }
                    Some(Cmd::Keys(keys)) => {
                        if let Some(m) = &self.membership {
                            m.set_keys(keys);
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
                        MembershipEvent::Released { from, ips } => {
                            if self.handover.released(Instant::now(), &from, &ips) {
                                self.apply(&BTreeMap::new(), None).await;
                            }
                            continue;
                        }
                    });
                }
                _ = sleep_until(deadline) => self.apply(&BTreeMap::new(), None).await,
                res = self.refused.changed(), if refused_alive => {
                    if res.is_ok() {
                        self.status.gossip_refused = self.refused.borrow_and_update().clone();
                        self.publish();
                    } else {
                        refused_alive = false;
                    }
                }
                ready = readable(links.as_ref()) => {
                    // Wait a moment for the rest of a burst (a link going down removes
                    // its routes and addresses too), then read the interfaces once.
                    if let Some(mut guard) = ready {
                        let _ = guard.get_inner().drain();
                        guard.clear_ready();
                    }
                    tokio::time::sleep(LINK_SETTLE).await;
                    if let Some(l) = &links {
                        let _ = l.get_ref().drain();
                    }
                    self.rescan().await;
                }
                res = self.view.changed() => {
                    if res.is_err() {
                        return; // membership task gone: nothing sane left to do
                    }
                    self.elect().await;
                }
                res = self.announcer_status.changed(), if announcer_alive => {
                    if res.is_ok() {
                        let announcer = self.announcer_status.borrow_and_update().clone();
                        self.conflict_events(&announcer);
                        self.status.announcer = announcer;
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
                let local = iface::local_addrs(&ifaces);
                if nets != self.nets || local != self.local_addrs {
                    self.local_addrs = local;
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
        let input = ElectionInput {
            me: &me,
            config: &self.config.l2,
            nodes: &labels,
            live: &live,
            known: &known,
            api_reachable: self.api_reachable,
            vips: &self.vips,
        };
        let election = elect_cached(&input, &mut self.scores);
        let starting = view.live.is_empty() && self.started.elapsed() < self.config.startup_grace;
        let mut owned = if starting {
            BTreeSet::new()
        } else {
            election.owned_by(&me)
        };
        // Never this node's own address (a VIP equal to an interface address would
        // steal it from the kernel that already answers for it).
        let refused: BTreeSet<IpAddr> = owned.intersection(&self.local_addrs).copied().collect();
        for ip in refused.difference(&self.status.refused_local) {
            tracing::warn!(%ip, "l2 address is this node's own; not announced");
        }
        owned.retain(|ip| !refused.contains(ip));
        self.status.refused_local = refused;
        // Right after (re)start, or back from a minority, this node has no record of who
        // answered: the owner without it is the one to hand over from.
        let may_announce = !starting && election.quorum.may_announce;
        let without_me = (may_announce && !self.trusted_view).then(|| {
            let mut others = live.clone();
            others.remove(&me);
            elect_cached(
                &ElectionInput {
                    live: &others,
                    ..input
                },
                &mut self.scores,
            )
            .owners
        });
        self.trusted_view = may_announce;
        if self.status.quorum != Some(election.quorum) {
            let _ = self.events.send(SpeakerEvent::Quorum(election.quorum));
        }
        let previous = std::mem::replace(&mut self.status.owners, election.owners);
        let previous = without_me.unwrap_or(previous);
        self.owned = owned;
        self.status.quorum = Some(election.quorum);
        self.status.live = live.keys().cloned().collect();
        self.status.known = known;
        self.status.starting = starting;
        self.apply(&previous, Some(&view)).await;
    }

    /// Announces what this node owns, less the addresses still waiting for their live
    /// previous owner's release; releases what it lost and tells the peers.
    async fn apply(
        &mut self,
        previous: &BTreeMap<IpAddr, Option<String>>,
        view: Option<&MembershipView>,
    ) {
        let me = self.config.node_name.clone();
        let live = self.status.live.clone();
        let now = Instant::now();
        let prev_of = |ip: &IpAddr| previous.get(ip).cloned().flatten().filter(|p| *p != me);
        let announce = self.handover.plan(
            now,
            &self.owned,
            &self.status.announcing,
            prev_of,
            |n: &str| n != me && live.contains(n),
        );
        self.status.waiting_release = self.handover.waiting();
        let choices = self.interface_choices(&announce);
        if announce == self.status.announcing && choices != self.choices {
            // Same addresses, other interfaces (a policy's `interfaces` edited).
            if let Some(a) = &self.announcer {
                a.set_owned(choices.clone()).await;
            }
        }
        self.choices = choices.clone();
        if announce != self.status.announcing {
            // An address nobody in the cluster announced before may be held by a host
            // outside it: probed first (a handover from a peer is not).
            let probe: BTreeSet<IpAddr> = announce
                .difference(&self.status.announcing)
                .filter(|ip| previous.get(*ip).cloned().flatten().is_none())
                .filter(|ip| !self.handover.is_resolved(ip))
                .copied()
                .collect();
            if let Some(a) = &self.announcer {
                a.set_owned_probing(choices.clone(), probe).await;
            }
            let released: Vec<IpAddr> = self
                .status
                .announcing
                .difference(&announce)
                .copied()
                .collect();
            // Only now that the announcer stopped answering may the new owner start.
            if let Some(m) = &self.membership {
                m.release(released.clone());
            }
            for ip in announce.difference(&self.status.announcing) {
                let previous_owner = self.handover.take_resolved(ip).or_else(|| prev_of(ip));
                let departure = previous_owner
                    .as_ref()
                    .and_then(|p| view.and_then(|v| v.departed.get(p)));
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
            for ip in released {
                let new_owner = self.status.owners.get(&ip).cloned().flatten();
                tracing::info!(%ip, new_owner = ?new_owner, "l2 release");
                let _ = self.events.send(SpeakerEvent::Released { ip, new_owner });
            }
        }
        self.handover.clear_resolved();
        self.status.announcing = announce;
        self.publish();
    }

    /// Where each announced address is answered: its policies' interfaces, else the
    /// node's default choice.
    fn interface_choices(&self, announce: &BTreeSet<IpAddr>) -> BTreeMap<IpAddr, InterfaceChoice> {
        let mut out: BTreeMap<IpAddr, InterfaceChoice> = announce
            .iter()
            .map(|ip| (*ip, InterfaceChoice::Auto))
            .collect();
        for v in &self.vips {
            if let (Some(choice), Some(scope)) = (out.get_mut(&v.ip), &v.scope) {
                *choice = scope.interface_choice();
            }
        }
        out
    }

    /// Conflicts that started or ended since the last announcer status, as events.
    fn conflict_events(&self, new: &AnnouncerStatus) {
        let old = &self.status.announcer.conflicts;
        for (ip, c) in &new.conflicts {
            if old.get(ip) != Some(c) {
                let _ = self.events.send(SpeakerEvent::Conflict {
                    ip: *ip,
                    mac: c.mac,
                    iface: c.iface.clone(),
                });
            }
        }
        for ip in old.keys().filter(|ip| !new.conflicts.contains_key(ip)) {
            let _ = self.events.send(SpeakerEvent::ConflictCleared { ip: *ip });
        }
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

/// How long a burst of link and address notifications is gathered before the interfaces
/// are read again.
const LINK_SETTLE: Duration = Duration::from_millis(5);

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn readable(
    links: Option<&AsyncFd<LinkWatch>>,
) -> Option<tokio::io::unix::AsyncFdReadyGuard<'_, LinkWatch>> {
    match links {
        Some(l) => l.readable().await.ok(),
        None => std::future::pending().await,
    }
}
