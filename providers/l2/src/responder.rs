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

use crate::frame::{self, Mac, Solicitation};
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

#[derive(Clone, Copy, Debug)]
struct Schedule {
    next: Instant,
    burst_left: u32,
}

/// The responder state machine.
#[derive(Debug)]
pub struct ArpNdpResponder {
    timing: AnnounceTiming,
    interfaces: BTreeMap<String, InterfaceInfo>,
    owned: BTreeMap<IpAddr, BTreeSet<String>>,
    schedule: BTreeMap<(IpAddr, String), Schedule>,
    /// Frames to send, each with the IP it speaks for, so frames for an IP
    /// lost before they went out are dropped.
    queue: VecDeque<(IpAddr, Transmit)>,
    stats: BTreeMap<String, InterfaceStats>,
}

impl ArpNdpResponder {
    /// A responder that owns nothing yet.
    pub fn new(timing: AnnounceTiming) -> Self {
        Self {
            timing,
            interfaces: BTreeMap::new(),
            owned: BTreeMap::new(),
            schedule: BTreeMap::new(),
            queue: VecDeque::new(),
            stats: BTreeMap::new(),
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
        for ((_, iface), s) in self.schedule.iter_mut() {
            if changed.contains(iface) {
                *s = Schedule {
                    next: now,
                    burst_left: self.timing.burst,
                };
            }
        }
    }

    /// Sets the IPs to answer for and the interfaces to answer on. New
    /// (IP, interface) pairs are announced at once; removed ones are
    /// forgotten at once, so the next request for them goes unanswered.
    pub fn set_owned(&mut self, now: Instant, owned: BTreeMap<IpAddr, BTreeSet<String>>) {
        let pairs: BTreeSet<(IpAddr, String)> = owned
            .iter()
            .flat_map(|(ip, ifaces)| ifaces.iter().map(move |i| (*ip, i.clone())))
            .collect();
        self.schedule.retain(|k, _| pairs.contains(k));
        for pair in pairs {
            self.schedule.entry(pair).or_insert(Schedule {
                next: now,
                burst_left: self.timing.burst,
            });
        }
        self.owned = owned;
        // Replies queued for an IP we just lost must not go out.
        let owned = &self.owned;
        self.queue
            .retain(|(ip, t)| owned.get(ip).is_some_and(|i| i.contains(&t.iface)));
    }

    /// The IPs answered for now, with their interfaces.
    pub fn owned(&self) -> &BTreeMap<IpAddr, BTreeSet<String>> {
        &self.owned
    }

    /// Handles one frame received on `iface`; queues an answer if it asks
    /// for an IP owned on that interface.
    pub fn handle_frame(&mut self, now: Instant, iface: &str, bytes: &[u8]) {
        let _ = now; // answers are immediate; kept for a uniform core API
        let Some(info) = self.interfaces.get(iface) else {
            return;
        };
        let Some(question) = frame::parse(bytes, info.mac) else {
            return;
        };
        let stats = self.stats.entry(iface.to_string()).or_default();
        let answered_here = self
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

    /// Sends the announcements that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timing = self.timing;
        for ((ip, iface), s) in self.schedule.iter_mut() {
            if s.next > now {
                continue;
            }
            s.burst_left = s.burst_left.saturating_sub(1);
            s.next = now
                + if s.burst_left > 0 {
                    timing.burst_interval
                } else {
                    timing.refresh
                };
            let Some(info) = self.interfaces.get(iface) else {
                continue; // the interface is gone; announce when it returns
            };
            let stats = self.stats.entry(iface.clone()).or_default();
            match ip {
                IpAddr::V4(v4) => {
                    stats.garp_sent += 2;
                    for frame in [
                        frame::garp_request(info.mac, *v4),
                        frame::garp_reply(info.mac, *v4),
                    ] {
                        self.queue.push_back((
                            *ip,
                            Transmit {
                                iface: iface.clone(),
                                frame,
                            },
                        ));
                    }
                }
                IpAddr::V6(v6) => {
                    stats.unsolicited_na_sent += 1;
                    let source = info.link_local.unwrap_or(*v6);
                    self.queue.push_back((
                        *ip,
                        Transmit {
                            iface: iface.clone(),
                            frame: frame::neighbor_advertisement(info.mac, source, *v6, None),
                        },
                    ));
                }
            }
        }
    }

    /// The next frame to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.queue.pop_front().map(|(_, t)| t)
    }

    /// When [`Self::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.schedule.values().map(|s| s.next).min()
    }

    /// Counters per interface.
    pub fn stats(&self) -> &BTreeMap<String, InterfaceStats> {
        &self.stats
    }
}

#[cfg(test)]
#[path = "responder_tests.rs"]
mod tests;
