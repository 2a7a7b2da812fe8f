//! The pools as the allocator reads them: run-time pool states built from the validated
//! configuration, the interval index that says which pool holds an address, the order in
//! which pools are tried, and the small helpers every planner shares.

use super::addr::{AddrRange, fam_idx, from_u128, to_u128};
use super::config::PoolConfig;
use super::pool::PoolState;
use crate::{IpFamily, LbService};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The order in which a Service's claim to an address is honoured on
/// rebuild: oldest first, then namespace/name; unknown creation times last.
pub(super) fn age_key(svc: &LbService) -> (bool, &str, &str, &str) {
    (
        svc.created.is_empty(),
        svc.created.as_str(),
        svc.key.namespace.as_str(),
        svc.key.name.as_str(),
    )
}

/// Parsed pools, their lookup index and their auto-assign order.
pub(super) struct Built {
    pub pools: Vec<PoolState>,
    pub by_name: BTreeMap<String, usize>,
    pub order: Vec<usize>,
    pub index: [BTreeMap<u128, (u128, usize)>; 2],
}

/// Builds run-time pools from a validated list.
pub(super) fn build(configs: &[PoolConfig]) -> Built {
    let mut pools = Vec::with_capacity(configs.len());
    let mut by_name = BTreeMap::new();
    let mut index = [BTreeMap::new(), BTreeMap::new()];
    for (i, c) in configs.iter().enumerate() {
        // Validated: every entry parses; a failing one would only be skipped.
        let ranges: Vec<AddrRange> = c
            .addresses
            .iter()
            .filter_map(|a| AddrRange::parse(a).ok())
            .collect();
        for r in &ranges {
            index[fam_idx(r.family)].insert(r.first, (r.last, i));
        }
        by_name.insert(c.name.clone(), i);
        pools.push(PoolState::new(c.clone(), ranges));
    }
    let mut order: Vec<usize> = (0..configs.len()).collect();
    order.sort_by_key(|&i| {
        let c = &configs[i];
        match &c.service_allocation {
            Some(sa) => (
                0u8,
                u8::from(sa.priority <= 0),
                sa.priority,
                c.name.as_str(),
            ),
            None => (1, 1, 0, c.name.as_str()),
        }
    });
    Built {
        pools,
        by_name,
        order,
        index,
    }
}

/// The pool whose range contains the address, by a floor lookup.
pub(super) fn locate_in(index: &[BTreeMap<u128, (u128, usize)>; 2], ip: IpAddr) -> Option<usize> {
    let (f, v) = to_u128(ip);
    index[fam_idx(f)]
        .range(..=v)
        .next_back()
        .filter(|(_, (e, _))| *e >= v)
        .map(|(_, (_, p))| *p)
}

/// The addresses in order without repeats.
pub(super) fn dedup(ips: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    out
}

/// The address of a pool's integer, for the planner.
pub(super) fn ip_of(family: IpFamily, v: u128) -> IpAddr {
    from_u128(family, v)
}
