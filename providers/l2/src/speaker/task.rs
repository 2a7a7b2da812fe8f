//! The task that owns one node's membership and announcer: it re-elects on every change
//! and tells the announcer what to answer for, handing addresses over from live owners
//! make-before-break ([`super::handover`]). A netlink watch re-reads the interfaces the
//! moment a link or an address changes, so a dead link moves its addresses within the
//! gossip's propagation time rather than at the next periodic scan.

use super::handover::Handover;
use super::types::*;
use crate::announcer::{Announcer, AnnouncerStatus, OwnedDelta};
use crate::election::{ElectionInput, ScoreCache, VipInput, elect_cached, elect_some};
use crate::gossip::{Membership, MembershipView};
use crate::iface::{self, InterfaceChoice};
use crate::membership::{Allowed, MembershipEvent};
use crate::sys::LinkWatch;
use crate::wire::{GossipKeys, Refused};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What the handle asks of the task.
pub(super) enum Cmd {
    Nodes(BTreeMap<String, NodeInput>),
    Vips(Vec<VipInput>),
    VipDelta(Vec<VipInput>, Vec<IpAddr>),
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
    pub(super) vips: BTreeMap<IpAddr, VipInput>,
    /// Each Node's labels (from `nodes`), as the election reads them.
    pub(super) labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The live speakers and their networks at the last whole election: a VIP's own
    /// election between two is made against the same view.
    pub(super) live_nets: BTreeMap<String, Vec<IpNet>>,
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
                        let vips: BTreeMap<IpAddr, VipInput> =
                            vips.into_iter().map(|v| (v.ip, v)).collect();
                        if vips != self.vips {
                            self.vips = vips;
                            self.elect().await;
                        }
                    }
                    Some(Cmd::VipDelta(set, remove)) => {
                        let touched = self.change_vips(set, remove);
                        if !touched.is_empty() {
                            self.elect_some(&touched).await;
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
                                self.apply(&BTreeMap::new(), None, Some(&BTreeSet::new())).await;
                            }
                            continue;
                        }
                    });
                }
                _ = sleep_until(deadline) => self.apply(&BTreeMap::new(), None, Some(&BTreeSet::new())).await,
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
        self.labels = nodes
            .iter()
            .map(|(n, i)| (n.clone(), i.labels.clone()))
            .collect();
        self.nodes = nodes;
    }

    /// Applies a VIP delta; returns the addresses whose input changed.
    fn change_vips(&mut self, set: Vec<VipInput>, remove: Vec<IpAddr>) -> BTreeSet<IpAddr> {
        let mut touched = BTreeSet::new();
        for ip in remove {
            if self.vips.remove(&ip).is_some() {
                self.scores.forget(&ip);
                touched.insert(ip);
            }
        }
        for v in set {
            if self.vips.get(&v.ip) != Some(&v) {
                touched.insert(v.ip);
                self.vips.insert(v.ip, v);
            }
        }
        touched
    }

    /// Elects the `touched` VIPs alone and hands the announcer only what changed. An owner
    /// depends on its VIP and the nodes only (rendezvous hashing), so the others keep
    /// theirs; the quorum depends on the membership, which did not change. Until this
    /// node trusts its view (startup, back from a minority) the whole election runs.
    async fn elect_some(&mut self, touched: &BTreeSet<IpAddr>) {
        if !self.trusted_view || self.status.starting || self.status.quorum.is_none() {
            return self.elect().await;
        }
        let me = self.config.node_name.clone();
        let changed: Vec<VipInput> = touched
            .iter()
            .filter_map(|ip| self.vips.get(ip).cloned())
            .collect();
        let election = elect_some(
            &ElectionInput {
                me: &me,
                config: &self.config.l2,
                nodes: &self.labels,
                live: &self.live_nets,
                known: &self.status.known,
                api_reachable: self.api_reachable,
                vips: &changed,
            },
            &mut self.scores,
        );
        if Some(election.quorum) != self.status.quorum {
            return self.elect().await;
        }
        let may_announce = election.quorum.may_announce;
        let mut owners_of = election.owners;
        let owners = Arc::make_mut(&mut self.status.owners);
        let mut previous = BTreeMap::new();
        for ip in touched {
            let now = owners_of.remove(ip);
            let mine = may_announce && now.as_ref().is_some_and(|o| o.as_deref() == Some(&me));
            let before = match now {
                Some(owner) => owners.insert(*ip, owner),
                None => owners.remove(ip),
            };
            previous.insert(*ip, before.flatten());
            // Never this node's own address (see `elect`).
            let local = mine && self.local_addrs.contains(ip);
            if local && self.status.refused_local.insert(*ip) {
                tracing::warn!(%ip, "l2 address is this node's own; not announced");
            } else if !local {
                self.status.refused_local.remove(ip);
            }
            match mine && !local {
                true => self.owned.insert(*ip),
                false => self.owned.remove(ip),
            };
        }
        self.apply(&previous, None, Some(touched)).await;
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
                    // The announcer places later changes on the interfaces it listed
                    // last: it lists them again now.
                    if let Some(a) = &self.announcer {
                        a.rescan().await;
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
        let vips: Vec<VipInput> = self.vips.values().cloned().collect();
        let input = ElectionInput {
            me: &me,
            config: &self.config.l2,
            nodes: &self.labels,
            live: &live,
            known: &known,
            api_reachable: self.api_reachable,
            vips: &vips,
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
        let previous = std::mem::replace(&mut self.status.owners, Arc::new(election.owners));
        let previous = without_me.unwrap_or_else(|| Arc::unwrap_or_clone(previous));
        self.owned = owned;
        self.status.quorum = Some(election.quorum);
        self.status.live = live.keys().cloned().collect();
        self.live_nets = live;
        self.status.known = known;
        self.status.starting = starting;
        self.apply(&previous, Some(&view), None).await;
    }

    /// Announces what this node owns, less the addresses still waiting for their live
    /// previous owner's release; releases what it lost and tells the peers. `touched`: the
    /// addresses whose owner or input changed (their interface choice is looked at again,
    /// and the announcer gets only the change); `None` after a whole election, which hands
    /// the announcer the whole set (it lists the interfaces again).
    async fn apply(
        &mut self,
        previous: &BTreeMap<IpAddr, Option<String>>,
        view: Option<&MembershipView>,
        touched: Option<&BTreeSet<IpAddr>>,
    ) {
        let me = self.config.node_name.clone();
        let live = &self.status.live;
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
        let added: Vec<IpAddr> = announce
            .difference(&self.status.announcing)
            .copied()
            .collect();
        let released: Vec<IpAddr> = self
            .status
            .announcing
            .difference(&announce)
            .copied()
            .collect();
        // An address nobody in the cluster announced before may be held by a host
        // outside it: probed first (a handover from a peer is not).
        let probe: BTreeSet<IpAddr> = added
            .iter()
            .filter(|ip| previous.get(*ip).cloned().flatten().is_none())
            .filter(|ip| !self.handover.is_resolved(ip))
            .copied()
            .collect();
        match touched {
            None => self.hand_over_all(&announce, probe).await,
            Some(touched) => {
                let delta = self.delta(touched, &added, &released, &announce, probe);
                if let Some(a) = &self.announcer {
                    a.update(delta).await;
                }
            }
        }
        if !added.is_empty() || !released.is_empty() {
            // Only now that the announcer stopped answering may the new owner start.
            if let Some(m) = &self.membership {
                m.release(released.clone());
            }
            for ip in &added {
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
            self.status.announcing = Arc::new(announce);
        }
        self.handover.clear_resolved();
        self.publish();
    }

    /// After a whole election: the announcer gets every address to answer for, on the
    /// interfaces it lists again, when the set or an interface choice changed.
    async fn hand_over_all(&mut self, announce: &BTreeSet<IpAddr>, probe: BTreeSet<IpAddr>) {
        let choices: BTreeMap<IpAddr, InterfaceChoice> = announce
            .iter()
            .map(|ip| (*ip, self.choice_of(ip)))
            .collect();
        let same_set = *announce == *self.status.announcing;
        if same_set && choices == self.choices {
            return;
        }
        self.choices = choices.clone();
        if let Some(a) = &self.announcer {
            // Same addresses, other interfaces (a policy's `interfaces` edited), or a new set.
            a.set_owned_probing(choices, probe).await;
        }
    }

    /// What the announcer must change for the `touched` addresses: the new ones and those
    /// whose interface choice changed, and the released ones.
    fn delta(
        &mut self,
        touched: &BTreeSet<IpAddr>,
        added: &[IpAddr],
        released: &[IpAddr],
        announce: &BTreeSet<IpAddr>,
        probe: BTreeSet<IpAddr>,
    ) -> OwnedDelta {
        let mut set = BTreeMap::new();
        for ip in released {
            self.choices.remove(ip);
        }
        let again = touched.iter().filter(|ip| announce.contains(*ip));
        for ip in again.chain(added) {
            let choice = self.choice_of(ip);
            if self.choices.get(ip) != Some(&choice) {
                self.choices.insert(*ip, choice.clone());
                set.insert(*ip, choice);
            }
        }
        OwnedDelta {
            set,
            remove: released.iter().copied().collect(),
            probe,
        }
    }

    /// Where `ip` is answered: its policies' interfaces, else the node's default choice.
    fn choice_of(&self, ip: &IpAddr) -> InterfaceChoice {
        self.vips
            .get(ip)
            .and_then(|v| v.scope.as_ref())
            .map_or(InterfaceChoice::Auto, |s| s.interface_choice())
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
            self.status.announcing = Arc::default();
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
