//! One BGP-4 session to one peer, as a sans-IO state machine (RFC 4271 §8).
//!
//! ```text
//!   start ──► Connect ──tcp up / send OPEN──► OpenSent ──OPEN ok / send KEEPALIVE──► OpenConfirm
//!     ▲          │ tcp failed                    │                                      │ KEEPALIVE
//!     │          ▼                               │ error / NOTIFICATION / close          ▼
//!     │        Active ──ConnectRetry──► Connect  ▼                                 Established
//!     └───── Idle ◄──IdleHold (backoff)── any error: NOTIFICATION sent, Disconnect ◄───┘
//! ```
//!
//! The driver feeds events in (`handle_connected`, `handle_data`,
//! `handle_timeout`, ...) with the current time, and drains
//! [`Output`]s in order: open a connection, bytes to send, close. It sleeps
//! until [`Session::poll_timeout`]. Nothing here does I/O or reads a clock,
//! so tests run two sessions back to back on a virtual clock.
//!
//! The speaker only connects out (active side) and never listens, so it has
//! exactly one connection per peer and the collision detection of §6.8 has
//! nothing to choose between. What remains relevant: a peer that resolved a
//! collision against us (Cease / Connection Collision Resolution) is simply
//! retried after the backoff, and a peer answering with our own BGP
//! identifier on an iBGP session (a connection to ourselves) is refused.
//!
//! Routes: [`Session::set_routes`] takes the full desired set; once
//! Established the session keeps an Adj-RIB-Out (what the peer has from
//! us) and sends only the difference, packed. On (re)establishment it sends
//! everything followed by an End-of-RIB per family ([`rib`]).

use crate::route::{Family, Routes};
use crate::timer::{Backoff, Timer, TimerTable};
use crate::update::{UpdateBuilder, is_advertisable};
use crate::wire::{self, LocalOpen, Message, Notification, PeerOpen, cease};
use ipnet::IpNet;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

mod rib;
mod types;

pub use types::{Output, SessionConfig, SessionStats, State};

/// Parameters agreed with the peer's OPEN.
#[derive(Debug, Clone)]
struct Negotiated {
    hold: Option<Duration>,
    keepalive: Option<Duration>,
    families: Vec<Family>,
    builder: UpdateBuilder,
}

/// The state machine; see the module docs.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    admin_up: bool,
    timers: TimerTable,
    backoff: Backoff,
    rx: Vec<u8>,
    out: VecDeque<Output>,
    local_addr: Option<SocketAddr>,
    negotiated: Option<Negotiated>,
    desired: Routes,
    advertised: Routes,
    stats: SessionStats,
}

impl Session {
    /// A session in Idle; nothing happens until [`Session::start`].
    pub fn new(cfg: SessionConfig) -> Self {
        let backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
        Self {
            cfg,
            state: State::Idle,
            admin_up: false,
            timers: TimerTable::default(),
            backoff,
            rx: Vec::new(),
            out: VecDeque::new(),
            local_addr: None,
            negotiated: None,
            desired: Routes::new(),
            advertised: Routes::new(),
            stats: SessionStats::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Counters for status and metrics.
    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    /// What the peer has from us (the Adj-RIB-Out).
    pub fn advertised(&self) -> &Routes {
        &self.advertised
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When `handle_timeout` must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// ManualStart: connect now, and keep reconnecting until stopped.
    pub fn start(&mut self, now: Instant) {
        self.admin_up = true;
        if self.state == State::Idle {
            self.timers.stop(Timer::IdleHold);
            self.enter_connect(now);
        }
    }

    /// ManualStop: withdraw what the peer has, send Cease (Administrative
    /// Shutdown) and close. The peer removes our routes at once.
    pub fn stop(&mut self, _now: Instant) {
        self.admin_up = false;
        match self.state {
            State::Established => {
                if let Some(n) = self.negotiated.clone() {
                    for family in Family::ALL {
                        let nets: Vec<IpNet> = self
                            .advertised
                            .keys()
                            .filter(|p| Family::of(p) == family)
                            .copied()
                            .collect();
                        if !nets.is_empty() {
                            let msgs = n.builder.withdraw(family, &nets);
                            self.send_updates(msgs);
                        }
                    }
                }
                self.shutdown_connection(Some(Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN)));
            }
            State::OpenSent | State::OpenConfirm => {
                self.shutdown_connection(Some(Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN)));
            }
            State::Connect => self.out.push_back(Output::Disconnect),
            State::Idle | State::Active => {}
        }
        self.enter_idle();
        self.timers.clear();
    }

    /// The TCP connection is up; `local` is our end (the next hop we advertise).
    pub fn handle_connected(&mut self, now: Instant, local: SocketAddr) {
        if self.state != State::Connect {
            return;
        }
        self.local_addr = Some(local);
        self.timers.stop(Timer::ConnectRetry);
        let open = LocalOpen {
            asn: self.cfg.local_asn,
            hold_time: self.cfg.hold_time,
            bgp_id: self.cfg.router_id,
            graceful_restart: self.cfg.graceful_restart_time,
        };
        match wire::encode_open(&open) {
            Ok(bytes) => self.out.push_back(Output::Transmit(bytes)),
            Err(e) => return self.fail(now, None, format!("cannot encode OPEN: {e}")),
        }
        self.timers.set(Timer::Hold, now + self.cfg.open_hold_time);
        self.state = State::OpenSent;
    }

    /// The TCP connection attempt failed.
    pub fn handle_connect_failed(&mut self, now: Instant, reason: &str) {
        if self.state != State::Connect {
            return;
        }
        self.stats.last_error = Some(format!("connect failed: {reason}"));
        self.state = State::Active;
        self.timers
            .set(Timer::ConnectRetry, now + self.backoff.next_delay());
    }

    /// The peer closed the connection (or it broke).
    pub fn handle_closed(&mut self, now: Instant) {
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.fail(now, None, "connection closed by peer".to_string());
        }
    }

    /// Bytes arrived from the peer.
    pub fn handle_data(&mut self, now: Instant, data: &[u8]) {
        if !matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            return;
        }
        self.rx.extend_from_slice(data);
        let mut consumed = 0;
        loop {
            match wire::decode(&self.rx[consumed..]) {
                Ok(None) => break,
                Ok(Some((msg, n))) => {
                    consumed += n;
                    self.handle_message(now, msg);
                    if self.state == State::Idle {
                        // The session failed; the connection's bytes are gone.
                        return;
                    }
                }
                Err(notification) => {
                    let why = format!("malformed message from peer: {}", notification.describe());
                    return self.fail(now, Some(notification), why);
                }
            }
        }
        self.rx.drain(..consumed);
    }

    /// The BFD session with this peer went down: the path is gone, so is the BGP session
    /// (RFC 5882 §4.3). Cease "BFD Down" (RFC 9384) goes out in case the peer still
    /// hears; reconnecting follows the usual backoff.
    pub fn handle_bfd_down(&mut self, now: Instant) {
        if matches!(
            self.state,
            State::OpenSent | State::OpenConfirm | State::Established
        ) {
            self.fail(
                now,
                Some(Notification::cease(cease::BFD_DOWN)),
                "BFD session went down".to_string(),
            );
        }
    }

    /// A deadline from [`Session::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(t) = self.timers.pop_expired(now) {
            match (t, self.state) {
                (Timer::IdleHold, State::Idle) | (Timer::ConnectRetry, State::Active)
                    if self.admin_up =>
                {
                    self.enter_connect(now)
                }
                (Timer::ConnectRetry, State::Connect) => {
                    self.out.push_back(Output::Disconnect);
                    self.handle_connect_failed(now, "timed out");
                }
                (Timer::Hold, State::OpenSent | State::OpenConfirm | State::Established) => self
                    .fail(
                        now,
                        Some(Notification::hold_timer_expired()),
                        "hold timer expired".to_string(),
                    ),
                (Timer::Keepalive, State::OpenConfirm | State::Established) => {
                    self.out.push_back(Output::Transmit(wire::keepalive()));
                    self.arm_keepalive(now);
                }
                _ => {}
            }
        }
    }

    /// Replaces the desired routes. Prefixes are normalized (host bits
    /// cleared); multicast/broadcast prefixes are dropped. When
    /// Established, the difference goes out at once.
    pub fn set_routes(&mut self, _now: Instant, routes: Routes) {
        self.desired = routes
            .into_iter()
            .map(|(p, a)| (p.trunc(), a))
            .filter(|(p, _)| is_advertisable(p))
            .collect();
        if self.state == State::Established {
            self.sync();
        }
    }

    fn enter_connect(&mut self, now: Instant) {
        self.state = State::Connect;
        self.rx.clear();
        self.out.push_back(Output::Connect);
        self.timers
            .set(Timer::ConnectRetry, now + self.cfg.connect_timeout);
    }

    fn enter_idle(&mut self) {
        self.state = State::Idle;
        self.rx.clear();
        self.negotiated = None;
        self.advertised.clear();
        self.stats.prefixes_advertised = 0;
        self.stats.hold_time = None;
        self.stats.families.clear();
    }

    fn shutdown_connection(&mut self, notification: Option<Notification>) {
        if let Some(n) = notification {
            self.stats.notifications_sent += 1;
            self.out.push_back(Output::Transmit(n.encode()));
        }
        self.out.push_back(Output::Disconnect);
    }

    /// Error path: optional NOTIFICATION, close, Idle, reconnect after backoff.
    fn fail(&mut self, now: Instant, notification: Option<Notification>, why: String) {
        tracing::debug!(state = %self.state, %why, "BGP session failed");
        if self.state == State::Established {
            self.stats.flaps += 1;
        }
        self.shutdown_connection(notification);
        self.stats.last_error = Some(why);
        self.enter_idle();
        self.timers.clear();
        if self.admin_up {
            self.timers
                .set(Timer::IdleHold, now + self.backoff.next_delay());
        }
    }

    fn arm_keepalive(&mut self, now: Instant) {
        match self.negotiated.as_ref().and_then(|n| n.keepalive) {
            Some(k) => self.timers.set(Timer::Keepalive, now + k),
            None => self.timers.stop(Timer::Keepalive),
        }
    }

    fn restart_hold(&mut self, now: Instant) {
        if let Some(h) = self.negotiated.as_ref().and_then(|n| n.hold) {
            self.timers.set(Timer::Hold, now + h);
        }
    }

    fn handle_message(&mut self, now: Instant, msg: Message) {
        if let Message::Notification(n) = &msg {
            self.stats.notifications_received += 1;
            let why = format!("peer sent NOTIFICATION {}", n.describe());
            return self.fail(now, None, why);
        }
        match (self.state, msg) {
            (State::OpenSent, Message::Open(o)) => self.handle_open(now, &o),
            (State::OpenSent, _) => self.fail(
                now,
                Some(Notification::fsm(1)),
                "unexpected message in OpenSent".into(),
            ),
            (State::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(now);
                self.establish();
            }
            (State::OpenConfirm, _) => self.fail(
                now,
                Some(Notification::fsm(2)),
                "unexpected message in OpenConfirm".into(),
            ),
            (State::Established, Message::Open(_)) => self.fail(
                now,
                Some(Notification::fsm(3)),
                "OPEN in Established".into(),
            ),
            (State::Established, Message::RouteRefresh { afi, safi }) => {
                self.restart_hold(now);
                if let Some(family) = Family::from_afi_safi(afi, safi) {
                    self.resend(family);
                }
            }
            (State::Established, _) => self.restart_hold(now),
            _ => {}
        }
    }

    fn handle_open(&mut self, now: Instant, o: &PeerOpen) {
        let open_error = |sub: u8, data: Vec<u8>| Some(Notification::new(2, sub, data));
        if o.asn() != self.cfg.peer_asn {
            let why = format!(
                "peer presented AS {}, expected {}",
                o.asn(),
                self.cfg.peer_asn
            );
            return self.fail(now, open_error(2, o.my_as.to_be_bytes().to_vec()), why);
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            let why = format!("peer proposed hold time {}s", o.hold_time);
            return self.fail(now, open_error(6, o.hold_time.to_be_bytes().to_vec()), why);
        }
        let id = o.bgp_id;
        let ibgp = self.cfg.peer_asn == self.cfg.local_asn;
        if id.is_unspecified()
            || id.is_multicast()
            || id.is_broadcast()
            || (ibgp && id == self.cfg.router_id)
        {
            let why = format!("peer BGP identifier {id} is invalid or ours");
            return self.fail(now, open_error(3, id.octets().to_vec()), why);
        }
        let hold = self.cfg.hold_time.min(o.hold_time);
        let (hold, keepalive) = if hold == 0 {
            (None, None)
        } else {
            let ka = self.cfg.keepalive_time.min(hold / 3).max(1);
            (
                Some(Duration::from_secs(hold.into())),
                Some(Duration::from_secs(ka.into())),
            )
        };
        let local = self.local_addr.map(|a| a.ip());
        let next_hop_v4 = match local {
            Some(IpAddr::V4(a)) => Some(a),
            Some(IpAddr::V6(a)) => a.to_ipv4_mapped().or(self.cfg.node_ipv4),
            None => self.cfg.node_ipv4,
        };
        let next_hop_v6 = match local {
            Some(IpAddr::V6(a)) if a.to_ipv4_mapped().is_none() => Some(a),
            _ => self.cfg.node_ipv6,
        };
        let builder = UpdateBuilder {
            local_asn: self.cfg.local_asn,
            ibgp,
            asn4: o.asn4.is_some(),
            next_hop_v4,
            next_hop_v6,
        };
        let families = o.families();
        self.stats.hold_time = Some(hold.map_or(0, |h| h.as_secs() as u16));
        self.stats.families = families.clone();
        self.stats.four_octet_as = builder.asn4;
        self.negotiated = Some(Negotiated {
            hold,
            keepalive,
            families,
            builder,
        });
        self.out.push_back(Output::Transmit(wire::keepalive()));
        self.timers.stop(Timer::Hold);
        self.restart_hold(now);
        self.arm_keepalive(now);
        self.state = State::OpenConfirm;
    }
}

#[cfg(test)]
#[path = "../session_tests.rs"]
mod tests;
