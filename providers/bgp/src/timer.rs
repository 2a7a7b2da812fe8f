//! The session's timers (RFC 4271 §8): an enum plus a small deadline table,
//! so the state machine never sleeps; the driver asks for the earliest
//! deadline and calls back when it passes.

use std::time::{Duration, Instant};

/// The timers a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Connect: give up on a TCP connect; Active: time for the next attempt.
    ConnectRetry,
    /// No message from the peer for the hold time ends the session.
    Hold,
    /// Time to send our next KEEPALIVE.
    Keepalive,
    /// Idle after an error: wait (with backoff) before reconnecting, so a
    /// broken peer is not hammered (RFC 4271 §8.1.1, IdleHoldTimer).
    IdleHold,
}

impl Timer {
    const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// Deadlines of the running timers.
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; 4],
}

impl TimerTable {
    /// (Re)starts `timer` to fire at `at`.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer.index()] = Some(at);
    }

    /// Stops `timer`.
    pub fn stop(&mut self, timer: Timer) {
        self.deadlines[timer.index()] = None;
    }

    /// Stops every timer.
    pub fn clear(&mut self) {
        self.deadlines = [None; 4];
    }

    /// The deadline of `timer`, if running.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer.index()]
    }

    /// The earliest deadline of all running timers.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Stops and returns the earliest timer whose deadline is not after `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let t = Timer::ALL
            .into_iter()
            .filter(|t| self.get(*t).is_some_and(|d| d <= now))
            .min_by_key(|t| self.get(*t))?;
        self.stop(t);
        Some(t)
    }
}

/// Exponential reconnect backoff, reset once a session is established.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `min`, doubles up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; later calls wait longer.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_expired_first() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Hold, t0 + Duration::from_secs(9));
        t.set(Timer::Keepalive, t0 + Duration::from_secs(3));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(t.pop_expired(t0), None);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(t.pop_expired(later), Some(Timer::Keepalive));
        assert_eq!(t.pop_expired(later), Some(Timer::Hold));
        assert_eq!(t.pop_expired(later), None);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn backoff_doubles_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let got: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
