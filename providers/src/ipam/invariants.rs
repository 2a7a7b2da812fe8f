//! The allocator's self-check, for tests and debugging.

use super::addr::{fam_idx, to_u128};
use super::allocator::Allocator;
use super::holding::clash;

impl Allocator {
    /// Checks every internal invariant (no address held by two Services that
    /// may not share it, free space and counters exact, indexes consistent).
    /// O(n); for tests and debugging, never on a hot path.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held_allocatable = vec![[0u128; 2]; self.pools.len()];
        let mut in_use = vec![[0u64; 2]; self.pools.len()];
        for (ip, h) in &self.addrs {
            if h.holders.is_empty() {
                return Err(format!("{ip} held by nobody"));
            }
            if h.pool != self.locate(*ip) {
                return Err(format!(
                    "{ip}: pool {:?} but located {:?}",
                    h.pool,
                    self.locate(*ip)
                ));
            }
            if h.holders.len() > 1 && h.sharing_key.is_none() {
                return Err(format!("{ip} shared without a sharing key"));
            }
            let holders: Vec<_> = h.holders.iter().collect();
            for (i, (a, pa)) in holders.iter().enumerate() {
                for (b, pb) in &holders[i + 1..] {
                    if let Some(c) = clash(pa, pb) {
                        return Err(format!("{ip}: {a} and {b} both use {c:?}"));
                    }
                }
                if !self.services.get(*a).is_some_and(|s| s.ips.contains(ip)) {
                    return Err(format!("{ip}: holder {a} does not list it"));
                }
            }
            if let Some(k) = &h.sharing_key
                && !self.by_sharing_key.get(k).is_some_and(|s| s.contains(ip))
            {
                return Err(format!("{ip} missing from sharing index {k}"));
            }
            if let Some(p) = h.pool {
                let (f, v) = to_u128(*ip);
                in_use[p][fam_idx(f)] += 1;
                if self.pools[p].allocatable(f, v) {
                    held_allocatable[p][fam_idx(f)] += 1;
                }
                if self.pools[p].is_free(f, v) {
                    return Err(format!("{ip} held and free"));
                }
            }
        }
        for (p, ip) in self.reserved_unheld() {
            // A node's own address is out of free space without a holder.
            let (f, v) = to_u128(ip);
            if self.pools[p].is_free(f, v) {
                return Err(format!("{ip} is a node's address and free"));
            }
            if self.pools[p].allocatable(f, v) {
                held_allocatable[p][fam_idx(f)] += 1;
            }
        }
        for (k, a) in &self.services {
            if a.ips.is_empty() {
                return Err(format!("{k} holds nothing"));
            }
            for ip in &a.ips {
                if !self
                    .addrs
                    .get(ip)
                    .is_some_and(|h| h.holders.contains_key(k))
                {
                    return Err(format!("{k} lists {ip} without holding it"));
                }
            }
        }
        for (k, set) in &self.by_sharing_key {
            for ip in set {
                if self.addrs.get(ip).and_then(|h| h.sharing_key.as_ref()) != Some(k) {
                    return Err(format!("sharing index {k} lists {ip} wrongly"));
                }
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.in_use != in_use[i] {
                return Err(format!(
                    "{}: in_use {:?} != {:?}",
                    p.name(),
                    p.in_use,
                    in_use[i]
                ));
            }
            p.check(held_allocatable[i])?;
        }
        Ok(())
    }
}
