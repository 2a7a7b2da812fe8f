//! One pool at run time: its ranges and a map of free intervals per family.
//!
//! "Lowest free address" must be O(log n) even for an IPv6 /64, so free space
//! is kept as disjoint intervals (`end -> start`) in a `BTreeMap` instead of a
//! set of used addresses to scan: taking the lowest address shrinks the first
//! interval, taking a given address splits at most one interval, giving one
//! back merges with at most two neighbours. A fresh /64 is one interval.
//!
//! With `avoidBuggyIPs` every interval starts and ends on an allocatable
//! address (trimmed past `.255`/`.0`, runs of at most two), so the first key
//! of the map is always the answer and no interval of only excluded addresses
//! ever lingers at the front.

use super::addr::{AddrRange, fam_idx, fam_of_idx, is_buggy};
use super::config::PoolConfig;
use crate::IpFamily;
use std::collections::BTreeMap;

/// A pool's configuration, parsed ranges and live free space.
#[derive(Clone, Debug)]
pub(crate) struct PoolState {
    /// The configuration it was built from (kept to compare and report).
    pub config: PoolConfig,
    /// Parsed `addresses`, per family, sorted by first address.
    pub ranges: [Vec<AddrRange>; 2],
    /// Free allocatable intervals per family, keyed by their last address:
    /// end -> start (inclusive). Keyed by end so that taking an interval's
    /// first address updates a value in place instead of re-keying.
    free: [BTreeMap<u128, u128>; 2],
    /// Allocatable addresses per family (fixed by the configuration).
    pub total: [u128; 2],
    /// Addresses of this pool held by at least one Service, per family.
    pub in_use: [u64; 2],
    /// Allocations this pool could not satisfy.
    pub failures: u64,
}

impl PoolState {
    /// Builds the pool; `ranges` are the parsed `addresses` (validated, disjoint).
    pub fn new(config: PoolConfig, ranges: Vec<AddrRange>) -> Self {
        let mut state = Self {
            config,
            ranges: [Vec::new(), Vec::new()],
            free: [BTreeMap::new(), BTreeMap::new()],
            total: [0, 0],
            in_use: [0, 0],
            failures: 0,
        };
        let avoid = state.config.avoid_buggy_ips;
        for r in ranges {
            let f = fam_idx(r.family);
            state.total[f] = state.total[f].saturating_add(r.usable(avoid));
            state.ranges[f].push(r);
            state.insert_free(r.family, r.first, r.last);
        }
        for list in &mut state.ranges {
            list.sort();
        }
        state
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the pool holds allocatable addresses of the family at all.
    pub fn has_family(&self, family: IpFamily) -> bool {
        self.total[fam_idx(family)] > 0
    }

    /// Whether the address is in one of the pool's ranges.
    pub fn contains(&self, family: IpFamily, v: u128) -> bool {
        let list = &self.ranges[fam_idx(family)];
        let i = list.partition_point(|r| r.first <= v);
        i > 0 && list[i - 1].last >= v
    }

    /// Whether the allocator may hand the address out (in range, not excluded).
    pub fn allocatable(&self, family: IpFamily, v: u128) -> bool {
        self.contains(family, v) && !(self.config.avoid_buggy_ips && is_buggy(family, v))
    }

    /// The lowest free allocatable address of the family.
    pub fn lowest_free(&self, family: IpFamily) -> Option<u128> {
        self.free[fam_idx(family)]
            .first_key_value()
            .map(|(_, s)| *s)
    }

    /// Whether the address is free and allocatable (intervals may span
    /// excluded `.255`/`.0` addresses inside them; their ends never are).
    pub fn is_free(&self, family: IpFamily, v: u128) -> bool {
        !(self.config.avoid_buggy_ips && is_buggy(family, v))
            && self.free[fam_idx(family)]
                .range(v..)
                .next()
                .is_some_and(|(_, s)| *s <= v)
    }

    /// The first allocatable address in `s..=e`, if any.
    fn trim_start(&self, family: IpFamily, mut s: u128, e: u128) -> Option<u128> {
        if self.config.avoid_buggy_ips {
            while s <= e && is_buggy(family, s) {
                s = s.checked_add(1)?;
            }
        }
        (s <= e).then_some(s)
    }

    /// The last allocatable address in `s..=e`, if any.
    fn trim_end(&self, family: IpFamily, s: u128, mut e: u128) -> Option<u128> {
        if self.config.avoid_buggy_ips {
            while e >= s && is_buggy(family, e) {
                e = e.checked_sub(1)?;
            }
        }
        (s <= e).then_some(e)
    }

    /// Marks an address held: removes it from free space if it was there and
    /// counts it in use. The caller guarantees it was not held already.
    /// Taking the lowest address of an interval only moves its start, so a
    /// pool fill allocates nothing in the free map.
    pub fn take(&mut self, family: IpFamily, v: u128) {
        self.in_use[fam_idx(family)] += 1;
        self.remove_free(family, v);
    }

    /// Takes an address out of free space without counting it in use: a node's own
    /// address is never handed out, yet no Service holds it. No-op when not free.
    pub fn remove_free(&mut self, family: IpFamily, v: u128) {
        let f = fam_idx(family);
        let Some((&e, &s)) = self.free[f].range(v..).next() else {
            return;
        };
        if s > v {
            return;
        }
        let right = if v < e {
            self.trim_start(family, v + 1, e)
        } else {
            None
        };
        match right {
            Some(ns) => {
                if let Some(start) = self.free[f].get_mut(&e) {
                    *start = ns;
                }
            }
            None => {
                self.free[f].remove(&e);
            }
        }
        if s < v
            && let Some(ne) = self.trim_end(family, s, v - 1)
        {
            self.free[f].insert(ne, s);
        }
    }

    /// Marks an address no longer held: returns it to free space when the
    /// pool may hand it out, merging with adjacent free intervals.
    pub fn give(&mut self, family: IpFamily, v: u128) {
        let f = fam_idx(family);
        self.in_use[f] = self.in_use[f].saturating_sub(1);
        self.return_free(family, v);
    }

    /// Counts an address no longer in use while it stays out of free space (a node's own
    /// address whose last holder went).
    pub fn give_reserved(&mut self, family: IpFamily) {
        let f = fam_idx(family);
        self.in_use[f] = self.in_use[f].saturating_sub(1);
    }

    /// Returns an address to free space when the pool may hand it out, merging with
    /// adjacent free intervals; in-use counts are the caller's.
    pub fn return_free(&mut self, family: IpFamily, v: u128) {
        let f = fam_idx(family);
        if !self.allocatable(family, v) || self.is_free(family, v) {
            return;
        }
        let mut start = v;
        if v > 0
            && let Some(ps) = self.free[f].remove(&(v - 1))
        {
            start = ps;
        }
        if v < u128::MAX
            && let Some((_, ns)) = self.free[f].range_mut(v + 1..).next()
            && *ns == v + 1
        {
            *ns = start;
            return;
        }
        self.free[f].insert(v, start);
    }

    /// Inserts `s..=e` as free, trimmed so both ends are allocatable; nothing
    /// when no allocatable address remains.
    fn insert_free(&mut self, family: IpFamily, s: u128, e: u128) {
        if let Some(s) = self.trim_start(family, s, e)
            && let Some(e) = self.trim_end(family, s, e)
        {
            self.free[fam_idx(family)].insert(e, s);
        }
    }

    /// The first free address at or after `v`, for tests of the free map.
    #[cfg(test)]
    pub fn next_free(&self, family: IpFamily, v: u128) -> Option<u128> {
        if self.is_free(family, v) {
            return Some(v);
        }
        self.free[fam_idx(family)]
            .range(v..)
            .next()
            .map(|(_, s)| *s)
    }

    /// Checks the free map against the ranges: sorted, disjoint, non-adjacent
    /// ends allocatable, inside the ranges, and `free + in use == total` for
    /// allocatable held addresses counted by `held_allocatable`.
    pub fn check(&self, held_allocatable: [u128; 2]) -> Result<(), String> {
        for (f, held) in held_allocatable.iter().enumerate() {
            let family = fam_of_idx(f);
            let mut prev_end: Option<u128> = None;
            let mut free_count: u128 = 0;
            for (&e, &s) in &self.free[f] {
                if s > e {
                    return Err(format!("{}: interval {s}..{e} reversed", self.name()));
                }
                if prev_end.is_some_and(|p| p >= s) {
                    return Err(format!("{}: intervals overlap at {s}", self.name()));
                }
                if !self.allocatable(family, s) || !self.allocatable(family, e) {
                    return Err(format!("{}: interval {s}..{e} ends badly", self.name()));
                }
                let r = AddrRange {
                    family,
                    first: s,
                    last: e,
                };
                if !self.ranges[f].iter().any(|x| x.first <= s && e <= x.last) {
                    return Err(format!("{}: interval {r} outside ranges", self.name()));
                }
                free_count += r.usable(self.config.avoid_buggy_ips);
                prev_end = Some(e);
            }
            if free_count + held != self.total[f] {
                return Err(format!(
                    "{}: free {free_count} + held {held} != total {}",
                    self.name(),
                    self.total[f]
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(addrs: &[&str], avoid: bool) -> PoolState {
        let mut c = PoolConfig::new("p", addrs);
        c.avoid_buggy_ips = avoid;
        let ranges = addrs
            .iter()
            .map(|a| AddrRange::parse(a).expect("valid"))
            .collect();
        PoolState::new(c, ranges)
    }

    const V4: IpFamily = IpFamily::V4;

    #[test]
    fn take_give_keep_intervals_exact() {
        let mut p = pool(&["10.0.0.0-10.0.0.9"], false);
        let base = 0x0a00_0000u128;
        p.take(V4, base);
        p.take(V4, base + 5);
        assert_eq!(p.lowest_free(V4), Some(base + 1));
        assert!(!p.is_free(V4, base + 5));
        assert_eq!(p.next_free(V4, base + 5), Some(base + 6));
        p.check([2, 0]).expect("consistent");
        p.give(V4, base + 5);
        p.give(V4, base);
        assert_eq!(p.free[0].len(), 1, "merged back into one interval");
        p.check([0, 0]).expect("consistent");
    }

    #[test]
    fn buggy_addresses_never_lead_an_interval() {
        let mut p = pool(&["10.0.0.250-10.0.1.5"], true);
        let base = 0x0a00_0000u128;
        assert_eq!(p.total[0], 12 - 2);
        let mut got = Vec::new();
        while let Some(v) = p.lowest_free(V4) {
            p.take(V4, v);
            got.push(v - base);
        }
        assert_eq!(got, [250, 251, 252, 253, 254, 257, 258, 259, 260, 261]);
        for v in got.iter().rev() {
            p.give(V4, base + v);
        }
        p.check([0, 0]).expect("consistent");
        // An excluded address held anyway (adopted from status) is counted but never freed.
        p.take(V4, base + 255);
        p.give(V4, base + 255);
        assert!(!p.is_free(V4, base + 255));
        p.check([0, 0]).expect("consistent");
    }

    proptest::proptest! {
        /// The interval map agrees with a plain set of free addresses under
        /// any sequence of takes and gives, with and without avoidBuggyIPs.
        #[test]
        fn free_map_matches_a_set(
            avoid in proptest::bool::ANY,
            ops in proptest::collection::vec((proptest::bool::ANY, 0u128..40), 0..200),
        ) {
            let mut p = pool(&["10.0.0.240-10.0.1.15"], avoid);
            let base = 0x0a00_00f0u128;
            let mut free: std::collections::BTreeSet<u128> = (0..32)
                .map(|i| base + i)
                .filter(|v| !(avoid && is_buggy(V4, *v)))
                .collect();
            let mut held = std::collections::BTreeSet::new();
            for (take, off) in ops {
                let v = base + off;
                if take && !held.contains(&v) && p.contains(V4, v) {
                    p.take(V4, v);
                    held.insert(v);
                    free.remove(&v);
                } else if !take && held.remove(&v) {
                    p.give(V4, v);
                    if !(avoid && is_buggy(V4, v)) {
                        free.insert(v);
                    }
                }
                proptest::prop_assert_eq!(p.lowest_free(V4), free.first().copied());
                for o in 0..40 {
                    proptest::prop_assert_eq!(p.is_free(V4, base + o), free.contains(&(base + o)));
                }
                let allocatable_held =
                    held.iter().filter(|v| !(avoid && is_buggy(V4, **v))).count() as u128;
                if let Err(e) = p.check([allocatable_held, 0]) {
                    return Err(proptest::test_runner::TestCaseError::fail(e));
                }
            }
        }
    }
}
