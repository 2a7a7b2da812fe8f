//! Make before break: a node that wins an address from a *live* owner waits for that
//! owner's release (sent over the gossip once it stopped answering) before it answers,
//! so no ARP request is ever answered by two nodes (issue 19, defect 3). The wait is
//! bounded: an owner that never releases (its API watch is stuck, or a bug) is overridden
//! after [`Handover`]'s `wait`. A dead owner (not live in the gossip view) is taken over at
//! once, as before.
//!
//! ```text
//!   old owner A                               new owner B
//!   sees the change ── stops answering ──┐    sees the change: previous owner A is live
//!                                        └──> release(ip) ──> B announces
//!                                             (or A not live / `wait` passed: B announces)
//! ```
//!
//! A release heard *before* this node saw the change itself (A's watch was faster) is
//! remembered for [`RELEASE_MEMORY`], so B does not wait for one that already came.
//! Pure: time is an argument.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a release is remembered when nobody waits for it yet.
pub const RELEASE_MEMORY: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    from: String,
    until: Instant,
}

/// The waits of one speaker.
#[derive(Debug)]
pub(super) struct Handover {
    wait: Duration,
    pending: BTreeMap<IpAddr, Pending>,
    released: BTreeMap<IpAddr, (String, Instant)>,
    resolved: BTreeMap<IpAddr, String>,
}

impl Handover {
    pub(super) fn new(wait: Duration) -> Self {
        Self {
            wait,
            pending: BTreeMap::new(),
            released: BTreeMap::new(),
            resolved: BTreeMap::new(),
        }
    }

    fn released_by(&self, ip: &IpAddr, from: &str) -> bool {
        self.released.get(ip).is_some_and(|(f, _)| f == from)
    }

    /// Of the addresses this node `owned` (it announces `announcing` of them already),
    /// those it may announce now. `prev(ip)` is the node that answered for an address
    /// before this one won it, `live(node)` whether the gossip sees it alive.
    pub(super) fn plan(
        &mut self,
        now: Instant,
        owned: &BTreeSet<IpAddr>,
        announcing: &BTreeSet<IpAddr>,
        prev: impl Fn(&IpAddr) -> Option<String>,
        live: impl Fn(&str) -> bool,
    ) -> BTreeSet<IpAddr> {
        self.released
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < RELEASE_MEMORY);
        let done: Vec<IpAddr> = self
            .pending
            .iter()
            .filter(|(ip, p)| {
                !owned.contains(*ip)
                    || announcing.contains(*ip)
                    || !live(&p.from)
                    || p.until <= now
                    || self.released_by(ip, &p.from)
            })
            .map(|(ip, _)| *ip)
            .collect();
        for ip in done {
            if let Some(p) = self.pending.remove(&ip)
                && owned.contains(&ip)
            {
                if p.until <= now && live(&p.from) && !self.released_by(&ip, &p.from) {
                    tracing::warn!(%ip, previous = %p.from, "l2 previous owner did not release in time; announcing anyway");
                }
                self.resolved.insert(ip, p.from);
            }
        }
        for ip in owned.difference(announcing) {
            if self.pending.contains_key(ip) || self.resolved.contains_key(ip) {
                continue;
            }
            if let Some(from) = prev(ip)
                && live(&from)
                && !self.released_by(ip, &from)
            {
                self.pending.insert(
                    *ip,
                    Pending {
                        from,
                        until: now + self.wait,
                    },
                );
            }
        }
        owned
            .iter()
            .filter(|ip| !self.pending.contains_key(*ip))
            .copied()
            .collect()
    }

    /// Records a release from `from`; true when it ends a wait (plan again).
    pub(super) fn released(&mut self, now: Instant, from: &str, ips: &[IpAddr]) -> bool {
        let mut ends = false;
        for ip in ips {
            ends |= self.pending.get(ip).is_some_and(|p| p.from == from);
            self.released.insert(*ip, (from.to_string(), now));
        }
        ends
    }

    /// The previous owner of an address whose wait ended since the last call (for the
    /// takeover event), taken once.
    pub(super) fn take_resolved(&mut self, ip: &IpAddr) -> Option<String> {
        self.resolved.remove(ip)
    }

    /// Whether the wait for `ip`'s previous owner ended since the last call (a handover
    /// from a peer, not a new address).
    pub(super) fn is_resolved(&self, ip: &IpAddr) -> bool {
        self.resolved.contains_key(ip)
    }

    /// Forgets resolutions that produced no takeover (the address moved on meanwhile).
    pub(super) fn clear_resolved(&mut self) {
        self.resolved.clear();
    }

    /// When the earliest wait ends.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.values().map(|p| p.until).min()
    }

    /// The addresses waiting for a release.
    pub(super) fn waiting(&self) -> BTreeSet<IpAddr> {
        self.pending.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(1000);

    fn ip(i: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, i])
    }

    fn set(ips: &[IpAddr]) -> BTreeSet<IpAddr> {
        ips.iter().copied().collect()
    }

    fn from_a(_: &IpAddr) -> Option<String> {
        Some("a".to_string())
    }

    #[test]
    fn a_live_previous_owner_is_waited_for_until_it_releases() {
        let t0 = Instant::now();
        let mut h = Handover::new(WAIT);
        let owned = set(&[ip(1)]);
        let alive = |_: &str| true;
        assert!(h.plan(t0, &owned, &set(&[]), from_a, alive).is_empty());
        assert_eq!(h.waiting(), owned);
        assert_eq!(h.deadline(), Some(t0 + WAIT));
        // Another node's release changes nothing.
        assert!(!h.released(t0, "c", &[ip(1)]));
        assert!(h.plan(t0, &owned, &set(&[]), from_a, alive).is_empty());
        assert!(h.released(t0 + Duration::from_millis(30), "a", &[ip(1)]));
        let now = t0 + Duration::from_millis(30);
        assert_eq!(h.plan(now, &owned, &set(&[]), from_a, alive), owned);
        assert_eq!(h.take_resolved(&ip(1)).as_deref(), Some("a"));
    }

    #[test]
    fn a_dead_or_absent_previous_owner_is_taken_over_at_once() {
        let t0 = Instant::now();
        let mut h = Handover::new(WAIT);
        let owned = set(&[ip(1), ip(2)]);
        let dead = |_: &str| false;
        assert_eq!(h.plan(t0, &owned, &set(&[]), from_a, dead), owned);
        assert_eq!(h.plan(t0, &owned, &set(&[]), |_| None, |_| true), owned);
        // A wait in progress ends when the owner dies.
        let mut h = Handover::new(WAIT);
        assert!(h.plan(t0, &owned, &set(&[]), from_a, |_| true).is_empty());
        assert_eq!(h.plan(t0, &owned, &set(&[]), from_a, dead), owned);
    }

    #[test]
    fn the_wait_is_bounded() {
        let t0 = Instant::now();
        let mut h = Handover::new(WAIT);
        let owned = set(&[ip(1)]);
        let alive = |_: &str| true;
        assert!(h.plan(t0, &owned, &set(&[]), from_a, alive).is_empty());
        let before = t0 + WAIT - Duration::from_millis(1);
        assert!(h.plan(before, &owned, &set(&[]), from_a, alive).is_empty());
        assert_eq!(h.plan(t0 + WAIT, &owned, &set(&[]), from_a, alive), owned);
        // Announced now: no new wait for it.
        assert_eq!(h.plan(t0 + WAIT, &owned, &owned, from_a, alive), owned);
    }

    #[test]
    fn a_release_heard_first_is_remembered_for_a_while() {
        let t0 = Instant::now();
        let mut h = Handover::new(WAIT);
        let owned = set(&[ip(1)]);
        let alive = |_: &str| true;
        assert!(!h.released(t0, "a", &[ip(1)]));
        assert_eq!(
            h.plan(
                t0 + Duration::from_millis(200),
                &owned,
                &set(&[]),
                from_a,
                alive
            ),
            owned
        );
        let mut h = Handover::new(WAIT);
        h.released(t0, "a", &[ip(1)]);
        assert!(
            h.plan(t0 + RELEASE_MEMORY, &owned, &set(&[]), from_a, alive)
                .is_empty()
        );
    }

    #[test]
    fn losing_the_address_while_waiting_forgets_the_wait() {
        let t0 = Instant::now();
        let mut h = Handover::new(WAIT);
        let alive = |_: &str| true;
        assert!(
            h.plan(t0, &set(&[ip(1)]), &set(&[]), from_a, alive)
                .is_empty()
        );
        assert!(h.plan(t0, &set(&[]), &set(&[]), from_a, alive).is_empty());
        assert!(h.waiting().is_empty());
        assert_eq!(h.deadline(), None);
    }
}
