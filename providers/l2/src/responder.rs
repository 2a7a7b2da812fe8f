//! The sans-IO ARP/NDP responder: which frames to send, and when.
//!
//! The driver ([`crate::announcer`]) feeds it received frames and the owned
//! set, and sends what [`ArpNdpResponder::poll_transmit`] yields; time is an
//! argument, so tests drive it on a virtual clock.
//!
//! ```text
//!   set_owned(now, {ip -> interfaces}) ─┐        ┌─> poll_transmit(): replies,
//!   handle_frame(now, iface, bytes) ────┼─> core ┤   gratuitous ARP, unsolicited NA
//!   handle_timeout(now) ────────────────┘        └─> poll_timeout(): next burst/refresh
//! ```
//!
//! On takeover of an (IP, interface) pair it announces at once, then
//! `burst - 1` more times `burst_interval` apart, then every `refresh`.
//! Losing an IP removes it at once: the next request for it is ignored.
//!
//! Conflicts ([`crate::claim`]): an address first announced by this cluster (no previous
//! owner) is probed before it is answered ([`PROBE_COUNT`] probes, a decision after
//! [`PROBE_WAIT`]); every owned address is probed again with each `refresh`; and any frame
//! in which another MAC uses an owned address counts. A conflict quarantines the address:
//! it is not answered nor announced, and [`ArpNdpResponder::poll_conflict`] reports it.
//! The quarantine lifts after a re-probe (every `refresh`) that nobody answers.

use crate::claim::{self, Claim};
use crate::frame::{self, Mac, Solicitation};
use crate::timetable::{Schedule, Timetable};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Timing of gratuitous announcements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnounceTiming {
    /// Announcements sent on takeover (the first at once). More than one
    /// covers a lost frame; they are cheap.
    pub burst: u32,
    /// Spacing of the takeover burst.
    pub burst_interval: Duration,
    /// Period of the announcements after the burst (`l2.garpRefresh`).
    pub refresh: Duration,
}

impl Default for AnnounceTiming {
    fn default() -> Self {
        Self {
            burst: 3,
            burst_interval: Duration::from_millis(500),
            refresh: crate::config::DEFAULT_GARP_REFRESH,
        }
    }
}

/// What the responder needs to know about one local interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    /// Interface name, the key used everywhere else.
    pub name: String,
    /// Its MAC: the answer to every question asked on it.
    pub mac: Mac,
    /// Its IPv6 link-local address: the source of unsolicited NAs (RFC 4861
    /// wants an address of the sending interface); `None` uses the VIP.
    pub link_local: Option<Ipv6Addr>,
}

/// One frame to send on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Interface to send on.
    pub iface: String,
    /// The complete Ethernet frame.
    pub frame: Vec<u8>,
}

/// Counters per interface, for the speaker's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceStats {
    /// ARP requests for an owned IP answered.
    pub arp_answered: u64,
    /// Neighbour solicitations for an owned IP answered.
    pub ns_answered: u64,
    /// Gratuitous ARP frames sent (a request and a reply per round).
    pub garp_sent: u64,
    /// Unsolicited neighbour advertisements sent.
    pub unsolicited_na_sent: u64,
    /// Well-formed requests for an IP this node does not own here.
    pub not_ours: u64,
}

/// Probes sent before a new address is first announced.
pub const PROBE_COUNT: u32 = 2;
/// Spacing of those probes.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// From the first probe to the decision. RFC 5227 waits seconds (it is written for
/// DHCP clients on any link); a holder on a LAN answers within a millisecond, and a new
/// Service should not wait long for its address.
pub const PROBE_WAIT: Duration = Duration::from_millis(50);

/// Another host uses an owned address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Its MAC.
    pub mac: Mac,
    /// The interface it was seen on.
    pub iface: String,
    /// When it was first seen.
    pub since: Instant,
    last_seen: Instant,
    checked_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Probing {
    sent: u32,
    next: Instant,
    decide: Instant,
}

/// The responder state machine.
#[derive(Debug)]
pub struct ArpNdpResponder {
    timing: AnnounceTiming,
    interfaces: BTreeMap<String, InterfaceInfo>,
    owned: BTreeMap<IpAddr, BTreeSet<String>>,
    schedule: Timetable,
    /// Frames to send, each with the IP it speaks for, so frames for an IP
    /// lost before they went out are dropped.
    queue: VecDeque<(IpAddr, Transmit)>,
    stats: BTreeMap<String, InterfaceStats>,
    probe_first: BTreeSet<IpAddr>,
    probing: BTreeMap<IpAddr, Probing>,
    quarantined: BTreeMap<IpAddr, Conflict>,
    recheck: BTreeMap<IpAddr, Instant>,
    new_conflicts: VecDeque<(IpAddr, Conflict)>,
}

impl ArpNdpResponder {
    /// A responder that owns nothing yet.
    pub fn new(timing: AnnounceTiming) -> Self {
        Self {
            timing,
            interfaces: BTreeMap::new(),
            owned: BTreeMap::new(),
            schedule: Timetable::default(),
            queue: VecDeque::new(),
            stats: BTreeMap::new(),
            probe_first: BTreeSet::new(),
            probing: BTreeMap::new(),
            quarantined: BTreeMap::new(),
            recheck: BTreeMap::new(),
            new_conflicts: VecDeque::new(),
        }
    }

    /// Addresses to probe before they are first answered, if the next
    /// [`Self::set_owned`] adds them (addresses nobody in the cluster announced before).
    pub fn probe_before_announcing(&mut self, ips: BTreeSet<IpAddr>) {
        self.probe_first = ips;
    }

    fn silenced(&self, ip: &IpAddr) -> bool {
        self.probing.contains_key(ip) || self.quarantined.contains_key(ip)
    }

    /// Addresses quarantined now, with who holds them.
    pub fn conflicts(&self) -> &BTreeMap<IpAddr, Conflict> {
        &self.quarantined
    }

    /// The next conflict found (each once, when it starts).
    pub fn poll_conflict(&mut self) -> Option<(IpAddr, Conflict)> {
        self.new_conflicts.pop_front()
    }

    fn conflict(&mut self, now: Instant, c: Claim, iface: &str) {
        if let Some(q) = self.quarantined.get_mut(&c.ip) {
            q.last_seen = now;
            return;
        }
        let conflict = Conflict {
            mac: c.mac,
            iface: iface.to_string(),
            since: now,
            last_seen: now,
            checked_at: None,
        };
        self.probing.remove(&c.ip);
        self.recheck.insert(c.ip, now + self.timing.refresh);
        self.queue.retain(|(ip, _)| *ip != c.ip);
        self.quarantined.insert(c.ip, conflict.clone());
        self.new_conflicts.push_back((c.ip, conflict));
    }

    fn send_probe(&mut self, ip: IpAddr) {
        let ifaces: Vec<String> = self.owned.get(&ip).into_iter().flatten().cloned().collect();
        for iface in ifaces {
            if let Some(info) = self.interfaces.get(&iface) {
                let frame = claim::probe(info.mac, ip);
                self.queue.push_back((ip, Transmit { iface, frame }));
            }
        }
    }

    /// Probes, re-checks and lifts; restarts the announcements of an address that may be
    /// answered again.
    fn conflict_timers(&mut self, now: Instant) {
        let due: Vec<IpAddr> = self
            .probing
            .iter()
            .filter(|(_, p)| p.next <= now || p.decide <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in due {
            let Some(mut p) = self.probing.get(&ip).copied() else {
                continue;
            };
            if p.decide <= now {
                self.probing.remove(&ip);
                self.restart_announcing(now, ip);
                continue;
            }
            if p.sent < PROBE_COUNT {
                self.send_probe(ip);
                p.sent += 1;
            }
            p.next = if p.sent < PROBE_COUNT {
                now + PROBE_INTERVAL
            } else {
                p.decide
            };
            self.probing.insert(ip, p);
        }
        let recheck: Vec<IpAddr> = self
            .recheck
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in recheck {
            self.send_probe(ip);
            self.recheck.insert(ip, now + self.timing.refresh);
            if let Some(q) = self.quarantined.get_mut(&ip) {
                q.checked_at = Some(now);
            }
        }
        // A re-probe's wait ended: nobody used the address since it went out, lift;
        // otherwise the holder is still there, wait for the next re-probe.
        let mut lift = Vec::new();
        for (ip, q) in self.quarantined.iter_mut() {
            if let Some(c) = q.checked_at.filter(|c| now >= *c + PROBE_WAIT) {
                if q.last_seen < c {
                    lift.push(*ip);
                } else {
                    q.checked_at = None;
                }
            }
        }
        for ip in lift {
            self.quarantined.remove(&ip);
            self.recheck.remove(&ip);
            self.restart_announcing(now, ip);
        }
    }

    fn restart_announcing(&mut self, now: Instant, ip: IpAddr) {
        for pair in self.schedule.pairs_of(ip) {
            self.schedule.set(pair, self.restarted(now));
        }
    }

    /// A schedule that announces at `now`, then the rest of the burst.
    fn restarted(&self, now: Instant) -> Schedule {
        Schedule {
            next: now,
            burst_left: self.timing.burst,
        }
    }

    /// Replaces the known interfaces. An owned IP on an interface that
    /// (re)appears or changed MAC is announced again from the start.
    pub fn set_interfaces(&mut self, now: Instant, interfaces: Vec<InterfaceInfo>) {
        let new: BTreeMap<String, InterfaceInfo> = interfaces
            .into_iter()
            .map(|i| (i.name.clone(), i))
            .collect();
        let changed: Vec<String> = new
            .iter()
            .filter(|(name, info)| self.interfaces.get(*name) != Some(info))
            .map(|(name, _)| name.clone())
            .collect();
        self.interfaces = new;
        for pair in self
            .schedule
            .pairs_on(|iface| changed.iter().any(|c| c == iface))
        {
            self.schedule.set(pair, self.restarted(now));
        }
    }

    /// Sets the IPs to answer for and the interfaces to answer on. New
    /// (IP, interface) pairs are announced at once; removed ones are
    /// forgotten at once, so the next request for them goes unanswered.
    pub fn set_owned(&mut self, now: Instant, owned: BTreeMap<IpAddr, BTreeSet<String>>) {
        let gone: BTreeSet<IpAddr> = self
            .owned
            .keys()
            .filter(|ip| !owned.contains_key(*ip))
            .copied()
            .collect();
        self.update_owned(now, owned, &gone);
    }

    /// As [`Self::set_owned`] for the IPs named only: those in `set` are answered on their
    /// interfaces (added, or moved to other interfaces), those in `remove` no longer; the
    /// others stay as they are. One changed address costs its own work, not a pass over
    /// every address owned.
    pub fn update_owned(
        &mut self,
        now: Instant,
        set: BTreeMap<IpAddr, BTreeSet<String>>,
        remove: &BTreeSet<IpAddr>,
    ) {
        let first = std::mem::take(&mut self.probe_first);
        for ip in remove.iter().filter(|ip| !set.contains_key(*ip)) {
            self.owned.remove(ip);
            self.probing.remove(ip);
            self.quarantined.remove(ip);
            self.recheck.remove(ip);
            self.drop_pairs(ip, |_| true);
        }
        for (ip, ifaces) in &set {
            if !self.owned.contains_key(ip) && first.contains(ip) {
                self.probing.insert(
                    *ip,
                    Probing {
                        sent: 0,
                        next: now,
                        decide: now + PROBE_WAIT,
                    },
                );
            }
            self.drop_pairs(ip, |i| !ifaces.contains(i));
            for iface in ifaces {
                let start = self.restarted(now);
                self.schedule.set_if_absent((*ip, iface.clone()), start);
            }
        }
        self.owned.extend(set);
        // Replies queued for an IP we just lost must not go out.
        if !self.queue.is_empty() {
            let owned = &self.owned;
            self.queue
                .retain(|(ip, t)| owned.get(ip).is_some_and(|i| i.contains(&t.iface)));
        }
    }

    /// Forgets the schedule of `ip` on the interfaces `gone` picks.
    fn drop_pairs(&mut self, ip: &IpAddr, gone: impl Fn(&str) -> bool) {
        for pair in self.schedule.pairs_of(*ip) {
            if gone(&pair.1) {
                self.schedule.remove(&pair);
            }
        }
    }

    /// The IPs answered for now, with their interfaces.
    pub fn owned(&self) -> &BTreeMap<IpAddr, BTreeSet<String>> {
        &self.owned
    }

    /// Handles one frame received on `iface`; queues an answer if it asks
    /// for an IP owned on that interface.
    pub fn handle_frame(&mut self, now: Instant, iface: &str, bytes: &[u8]) {
        let Some(info) = self.interfaces.get(iface) else {
            return;
        };
        let mac = info.mac;
        if let Some(c) = claim::parse_claim(bytes, mac)
            && self.owned.get(&c.ip).is_some_and(|i| i.contains(iface))
        {
            if c.tentative {
                // A DAD probe asks, as an ARP probe does (RFC 4862 5.4.3): an address
                // answered here is defended with an advertisement, which makes the prober
                // back off. One this node is probing too is a race: with a peer that
                // owned it for a moment (two speakers each alone at start), which the
                // election settles, or with a host whose own DAD now sees ours. Taking
                // either for a holder quarantined the address for a whole refresh.
                if !self.silenced(&c.ip) {
                    self.announce(c.ip, iface);
                }
                return;
            }
            self.conflict(now, c, iface);
            return;
        }
        let Some(question) = frame::parse(bytes, mac) else {
            return;
        };
        let silenced = self.silenced(&question.target());
        let Some(info) = self.interfaces.get(iface) else {
            return;
        };
        let stats = self.stats.entry(iface.to_string()).or_default();
        let answered_here = !silenced
            && self
                .owned
                .get(&question.target())
                .is_some_and(|ifaces| ifaces.contains(iface));
        if !answered_here {
            stats.not_ours += 1;
            return;
        }
        let frame = match question {
            Solicitation::Arp {
                sender_mac,
                sender_ip,
                target,
            } => {
                stats.arp_answered += 1;
                frame::arp_reply(info.mac, target, sender_mac, sender_ip)
            }
            Solicitation::Ns {
                source,
                reply_mac,
                target,
            } => {
                stats.ns_answered += 1;
                frame::neighbor_advertisement(info.mac, target, target, Some((source, reply_mac)))
            }
        };
        let ip = question.target();
        self.queue.push_back((
            ip,
            Transmit {
                iface: iface.to_string(),
                frame,
            },
        ));
    }

    /// Announces `ip` on `iface` once: a gratuitous ARP request and reply for IPv4, an
    /// unsolicited neighbour advertisement to all nodes for IPv6. The schedule's rounds and
    /// the defence against a DAD probe both send this.
    fn announce(&mut self, ip: IpAddr, iface: &str) {
        let Some(info) = self.interfaces.get(iface) else {
            return; // the interface is gone; announced when it returns
        };
        let frames = match ip {
            IpAddr::V4(v4) => vec![
                frame::garp_request(info.mac, v4),
                frame::garp_reply(info.mac, v4),
            ],
            IpAddr::V6(v6) => {
                let source = info.link_local.unwrap_or(v6);
                vec![frame::neighbor_advertisement(info.mac, source, v6, None)]
            }
        };
        let stats = self.stats.entry(iface.to_string()).or_default();
        match ip {
            IpAddr::V4(_) => stats.garp_sent += 2,
            IpAddr::V6(_) => stats.unsolicited_na_sent += 1,
        }
        for frame in frames {
            self.queue.push_back((
                ip,
                Transmit {
                    iface: iface.to_string(),
                    frame,
                },
            ));
        }
    }

    /// Sends the announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.conflict_timers(now);
        let timing = self.timing;
        // Only the due pairs: the time index gives them without a walk over all.
        for ((ip, iface), mut s) in self.schedule.due(now) {
            if self.silenced(&ip) {
                // Announced again from the start once it may be answered.
                s.next = now + timing.refresh;
                self.schedule.set((ip, iface), s);
                continue;
            }
            // After the burst, each refresh also probes: a host that took the address
            // meanwhile and only answers (never announces) is found within `refresh`.
            let refresh_round = s.burst_left == 0;
            s.burst_left = s.burst_left.saturating_sub(1);
            s.next = now
                + if s.burst_left > 0 {
                    timing.burst_interval
                } else {
                    timing.refresh
                };
            self.schedule.set((ip, iface.clone()), s);
            let Some(info) = self.interfaces.get(&iface) else {
                continue; // the interface is gone; announce when it returns
            };
            if refresh_round {
                let frame = claim::probe(info.mac, ip);
                self.queue.push_back((
                    ip,
                    Transmit {
                        iface: iface.clone(),
                        frame,
                    },
                ));
            }
            self.announce(ip, &iface);
        }
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front().map(|(_, t)| t)
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lifts = self
            .quarantined
            .values()
            .filter_map(|q| q.checked_at.map(|c| c + PROBE_WAIT));
        self.schedule
            .next_due()
            .into_iter()
            .chain(self.probing.values().map(|p| p.next.min(p.decide)))
            .chain(self.recheck.values().copied())
            .chain(lifts)
            .min()
    }

    /// Counters per interface.
    pub fn stats(&self) -> &BTreeMap<String, InterfaceStats> {
        &self.stats
    }
}

#[cfg(test)]
#[path = "responder_tests.rs"]
mod tests;
