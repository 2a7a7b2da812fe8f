//! One BFD session in asynchronous mode (RFC 5880 §6.8), sans-IO.
//!
//! ```text
//!        remote Down                 remote Init/Up
//!  Down ─────────────► Init ──────────────────────► Up
//!   ▲ ▲  remote Init/Up (straight to Up)            │ detection time expired (diag 1),
//!   │ └─────────────────────────────────────────────┤ remote Down / AdminDown (diag 3)
//!   └───────────────────────────────────────────────┘
//! ```
//!
//! The driver feeds received packets ([`BfdSession::handle_packet`]) and expired deadlines
//! ([`BfdSession::handle_timeout`]) with the current time, sends what
//! [`BfdSession::poll_transmit`] yields and sleeps until [`BfdSession::poll_timeout`].
//! Randomness (the transmit jitter of §6.8.7) comes from a seed, so tests are exact.
//!
//! Timers (§6.8.3): while not Up we transmit no faster than once a second; on reaching Up
//! the configured interval applies and a Poll Sequence tells the peer. The detection time
//! is the peer's Detect Mult times the slower of our receive interval and its transmit
//! interval (§6.8.4).

use super::packet::{Control, WireState, diag};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The session state (the wire's states; we never hold a session AdminDown, but report a
/// peer's).
pub type BfdState = WireState;

/// The slowest transmit interval while the session is not Up (§6.8.3).
const SLOW: Duration = Duration::from_secs(1);

/// Timer settings of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdTimers {
    /// bfd.DesiredMinTxInterval once Up.
    pub desired_min_tx: Duration,
    /// bfd.RequiredMinRxInterval.
    pub required_min_rx: Duration,
    /// bfd.DetectMult.
    pub detect_mult: u8,
}

/// What a session reports, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BfdStatus {
    /// Current state.
    pub state: BfdState,
    /// Times the session reached Up.
    pub ups: u64,
    /// Times an Up session went down.
    pub downs: u64,
    /// Diagnostic of the last transition to Down (1: the router went silent, 3: it said
    /// down, 7: we stopped).
    pub last_diag: u8,
    /// The detection time while Up, in milliseconds: how long a silent router is trusted.
    pub detection_time_ms: Option<u64>,
}

/// The state machine; see the module docs.
#[derive(Debug)]
pub struct BfdSession {
    timers: BfdTimers,
    state: BfdState,
    local_discr: u32,
    remote_discr: u32,
    local_diag: u8,
    remote_min_rx: Duration,
    remote_min_tx: Duration,
    remote_mult: u8,
    polling: bool,
    next_tx: Option<Instant>,
    detect_at: Option<Instant>,
    rng: u64,
    out: VecDeque<Control>,
    status: BfdStatus,
}

impl Default for BfdStatus {
    /// A session that has not run yet: Down, nothing counted.
    fn default() -> Self {
        Self {
            state: BfdState::Down,
            ups: 0,
            downs: 0,
            last_diag: diag::NONE,
            detection_time_ms: None,
        }
    }
}

impl BfdSession {
    /// A Down session with discriminator `local_discr` (nonzero, unique on the node) that
    /// starts transmitting at `now`.
    pub fn new(timers: BfdTimers, local_discr: u32, seed: u64, now: Instant) -> Self {
        Self {
            timers,
            state: BfdState::Down,
            local_discr: local_discr.max(1),
            remote_discr: 0,
            local_diag: diag::NONE,
            // §6.8.1: initialized to 1 µs, so we transmit until the peer says otherwise.
            remote_min_rx: Duration::from_micros(1),
            remote_min_tx: Duration::ZERO,
            remote_mult: 0,
            polling: false,
            next_tx: Some(now),
            detect_at: None,
            rng: seed | 1,
            out: VecDeque::new(),
            status: BfdStatus::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> BfdState {
        self.state
    }

    /// Our discriminator: the peer's packets carry it as Your Discriminator.
    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    /// The peer's discriminator, 0 until heard.
    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    /// State and counters.
    pub fn status(&self) -> &BfdStatus {
        &self.status
    }

    /// The next packet to send.
    pub fn poll_transmit(&mut self) -> Option<Control> {
        self.out.pop_front()
    }

    /// When [`BfdSession::handle_timeout`] is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_tx, self.detect_at].into_iter().flatten().min()
    }

    /// A valid packet from the peer, already matched to this session (§6.8.6).
    pub fn handle_packet(&mut self, now: Instant, p: &Control) {
        if self.state == BfdState::AdminDown {
            return;
        }
        if p.your_discr == 0 && !matches!(p.state, WireState::Down | WireState::AdminDown) {
            return;
        }
        if p.your_discr != 0 && p.your_discr != self.local_discr {
            return;
        }
        self.remote_discr = p.my_discr;
        self.remote_min_rx = p.required_min_rx;
        self.remote_min_tx = p.desired_min_tx;
        self.remote_mult = p.detect_mult;
        if p.fin && self.polling {
            self.polling = false;
        }
        self.detect_at = Some(now + self.detection_time());
        match (self.state, p.state) {
            (_, WireState::AdminDown) if self.state != BfdState::Down => {
                self.go_down(now, diag::NEIGHBOR_DOWN);
            }
            (BfdState::Down, WireState::Down) => self.set_state(now, BfdState::Init),
            (BfdState::Down, WireState::Init)
            | (BfdState::Init, WireState::Init | WireState::Up) => {
                self.set_state(now, BfdState::Up)
            }
            (BfdState::Up, WireState::Down) => self.go_down(now, diag::NEIGHBOR_DOWN),
            _ => {}
        }
        if self.state == BfdState::Up {
            self.status.detection_time_ms = Some(self.detection_time().as_millis() as u64);
        }
        if p.poll {
            // The Final answers at once, outside the periodic schedule (§6.8.6).
            let mut fin = self.control();
            fin.poll = false;
            fin.fin = true;
            self.out.push_back(fin);
        }
        if self.remote_min_rx.is_zero() {
            self.next_tx = None;
        } else if self
            .next_tx
            .is_none_or(|t| t > now + self.desired_min_tx().max(self.remote_min_rx))
        {
            // The peer now accepts packets faster than we planned the next one (it sped up
            // after Up): a packet that late would expire its shorter detection time.
            self.schedule_tx(now);
        }
    }

    /// A deadline from [`BfdSession::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.detect_at.is_some_and(|d| d <= now) {
            self.detect_at = None;
            self.remote_discr = 0;
            if matches!(self.state, BfdState::Init | BfdState::Up) {
                self.remote_min_rx = Duration::from_micros(1);
                self.go_down(now, diag::DETECTION_TIME_EXPIRED);
            } else {
                self.remote_min_rx = Duration::from_micros(1);
            }
            if self.next_tx.is_none() {
                self.next_tx = Some(now);
            }
        }
        if self.next_tx.is_some_and(|t| t <= now) {
            let p = self.control();
            self.out.push_back(p);
            self.schedule_tx(now);
        }
    }

    /// We stop: one last packet saying AdminDown (diag 7), so the peer sees a planned stop
    /// rather than a failure; the session does nothing after.
    pub fn stop(&mut self, _now: Instant) {
        self.state = BfdState::AdminDown;
        self.local_diag = diag::ADMIN_DOWN;
        self.status.state = BfdState::AdminDown;
        self.status.detection_time_ms = None;
        let p = self.control();
        self.out.push_back(p);
        self.next_tx = None;
        self.detect_at = None;
    }

    /// The detection time of §6.8.4 (asynchronous mode).
    fn detection_time(&self) -> Duration {
        self.timers.required_min_rx.max(self.remote_min_tx) * u32::from(self.remote_mult.max(1))
    }

    fn desired_min_tx(&self) -> Duration {
        if self.state == BfdState::Up {
            self.timers.desired_min_tx
        } else {
            self.timers.desired_min_tx.max(SLOW)
        }
    }

    fn control(&self) -> Control {
        Control {
            diag: self.local_diag,
            state: self.state,
            poll: self.polling,
            fin: false,
            detect_mult: self.timers.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.desired_min_tx(),
            required_min_rx: self.timers.required_min_rx,
        }
    }

    /// The next periodic packet: the slower of our rate and the peer's, less 0–25 % jitter
    /// (0–10 % more with a multiplier of 1) so sessions do not synchronize (§6.8.7).
    fn schedule_tx(&mut self, now: Instant) {
        if self.remote_min_rx.is_zero() {
            self.next_tx = None;
            return;
        }
        let interval = self.desired_min_tx().max(self.remote_min_rx);
        // xorshift64: cheap, and seeded by the caller so tests are deterministic.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, span) = if self.timers.detect_mult == 1 {
            (75, 15)
        } else {
            (75, 25)
        };
        let pct = lo + (self.rng % (span + 1));
        self.next_tx = Some(now + interval * pct as u32 / 100);
    }

    fn set_state(&mut self, now: Instant, to: BfdState) {
        self.state = to;
        self.status.state = to;
        if to == BfdState::Up {
            self.local_diag = diag::NONE;
            self.status.ups += 1;
            self.status.detection_time_ms = Some(self.detection_time().as_millis() as u64);
            // Our transmit interval changes from the slow one: tell the peer (§6.8.3).
            self.polling = self.timers.desired_min_tx != SLOW;
        }
        // A state change goes out at once rather than at the next periodic packet.
        let p = self.control();
        self.out.push_back(p);
        self.schedule_tx(now);
    }

    fn go_down(&mut self, now: Instant, why: u8) {
        if self.state == BfdState::Up {
            self.status.downs += 1;
        }
        self.state = BfdState::Down;
        self.local_diag = why;
        self.polling = false;
        self.status.state = BfdState::Down;
        self.status.last_diag = why;
        self.status.detection_time_ms = None;
        let p = self.control();
        self.out.push_back(p);
        self.schedule_tx(now);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
