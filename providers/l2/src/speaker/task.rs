//! The task that owns one node's membership and announcer: it re-elects on every change
//! and tells the announcer what to answer for.

use super::types::*;
use crate::announcer::{Announcer, AnnouncerStatus};
use crate::election::{ElectionInput, VipInput, elect};
use crate::gossip::{Membership, MembershipView};
use crate::iface::{self, InterfaceChoice};
use crate::membership::MembershipEvent;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// What the handle asks of the task.
pub(super) enum Cmd {
    Nodes(BTreeMap<String, NodeInput>),
    Vips(Vec<VipInput>),
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
