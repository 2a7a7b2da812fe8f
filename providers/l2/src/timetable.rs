//! The responder's announcement schedule, kept in two orders: by (address, interface) for
//! the changes one address makes, and by due time for the timer.
//!
//! A node answering for thousands of addresses has as many schedules (each refreshed on its
//! own clock), so its timer fires often; a walk over every schedule to find the next due
//! time or the due ones made each firing cost all addresses. Here the next due time is the
//! first entry of the time index, and a firing costs the schedules that are due.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

/// One (address, interface) pair announced.
pub(crate) type Pair = (IpAddr, String);

/// When a pair is announced next, and how many burst rounds it has left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) next: Instant,
    pub(crate) burst_left: u32,
}

/// The schedules, by pair and by due time.
#[derive(Debug, Default)]
pub(crate) struct Timetable {
    by_pair: BTreeMap<Pair, Schedule>,
    by_time: BTreeSet<(Instant, Pair)>,
}

impl Timetable {
    /// Sets the schedule of `pair` (added or replaced).
    pub(crate) fn set(&mut self, pair: Pair, s: Schedule) {
        if let Some(old) = self.by_pair.insert(pair.clone(), s) {
            self.by_time.remove(&(old.next, pair.clone()));
        }
        self.by_time.insert((s.next, pair));
    }

    /// Sets the schedule of `pair` unless it has one.
    pub(crate) fn set_if_absent(&mut self, pair: Pair, s: Schedule) {
        if !self.by_pair.contains_key(&pair) {
            self.set(pair, s);
        }
    }

    /// Forgets `pair`.
    pub(crate) fn remove(&mut self, pair: &Pair) {
        if let Some(old) = self.by_pair.remove(pair) {
            self.by_time.remove(&(old.next, pair.clone()));
        }
    }

    /// The pairs of `ip`, in interface order.
    pub(crate) fn pairs_of(&self, ip: IpAddr) -> Vec<Pair> {
        self.by_pair
            .range((ip, String::new())..)
            .take_while(|((i, _), _)| *i == ip)
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Every pair whose interface `pick` picks (a walk over all: interfaces change rarely).
    pub(crate) fn pairs_on(&self, pick: impl Fn(&str) -> bool) -> Vec<Pair> {
        self.by_pair
            .keys()
            .filter(|(_, iface)| pick(iface))
            .cloned()
            .collect()
    }

    /// The earliest due time.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.by_time.first().map(|(t, _)| *t)
    }

    /// The pairs due at `now`, earliest first, with their schedules; each stays in the
    /// table until [`Self::set`] gives it its next time.
    pub(crate) fn due(&self, now: Instant) -> Vec<(Pair, Schedule)> {
        self.by_time
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, p)| self.by_pair.get(p).map(|s| (p.clone(), *s)))
            .collect()
    }

    /// How many pairs are scheduled.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_pair.len(), self.by_time.len());
        self.by_pair.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair(ip: &str, iface: &str) -> Pair {
        (ip.parse().expect("ip"), iface.to_string())
    }

    #[test]
    fn the_next_due_time_and_the_due_pairs_follow_every_change() {
        let t0 = Instant::now();
        let at = |ms: u64| Schedule {
            next: t0 + Duration::from_millis(ms),
            burst_left: 1,
        };
        let mut t = Timetable::default();
        assert_eq!(t.next_due(), None);
        t.set(pair("10.0.0.2", "eth0"), at(30));
        t.set(pair("10.0.0.1", "eth0"), at(20));
        t.set(pair("10.0.0.1", "eth1"), at(10));
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(10)));
        // Earliest first, and only those due.
        let due: Vec<Pair> = t
            .due(t0 + Duration::from_millis(20))
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            due,
            vec![pair("10.0.0.1", "eth1"), pair("10.0.0.1", "eth0")]
        );
        // A new time replaces the old one in both orders.
        t.set(pair("10.0.0.1", "eth1"), at(40));
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(20)));
        t.set_if_absent(pair("10.0.0.1", "eth1"), at(0));
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(20)), "kept");
        assert_eq!(
            t.pairs_of("10.0.0.1".parse().expect("ip")),
            vec![pair("10.0.0.1", "eth0"), pair("10.0.0.1", "eth1")]
        );
        assert_eq!(t.pairs_on(|i| i == "eth1"), vec![pair("10.0.0.1", "eth1")]);
        t.remove(&pair("10.0.0.1", "eth0"));
        t.remove(&pair("10.0.0.9", "eth0"));
        assert_eq!(t.next_due(), Some(t0 + Duration::from_millis(30)));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn pairs_due_at_the_same_time_are_all_kept() {
        let t0 = Instant::now();
        let mut t = Timetable::default();
        for i in 0..100 {
            t.set(
                pair(&format!("10.0.0.{i}"), "eth0"),
                Schedule {
                    next: t0,
                    burst_left: 0,
                },
            );
        }
        assert_eq!(t.due(t0).len(), 100);
        assert_eq!(t.len(), 100);
    }
}
