//! `Allocator::allocate`: which addresses a Service should hold now.
//!
//! Planning reads the allocator and decides (keep, take, release) before
//! anything changes, so a refusal leaves no trace. The rules, in order:
//!
//! 1. The pool annotation, if any, must name an existing pool this provider
//!    may use and whose `serviceAllocation` admits the Service.
//! 2. Requested addresses (at most one per family) are honoured exactly or
//!    refused naming the address and its holder; nothing else is allocated
//!    in their place.
//! 3. Otherwise the Service keeps what it holds while the address is still
//!    usable (family wanted, pool unchanged by annotation, sharing still
//!    allowed), even if its pool left the configuration; then missing
//!    families are taken from one pool: the annotated one, the pool of the
//!    kept address, or the first auto-assign pool admitting the Service
//!    (serviceAllocation pools by priority, then the others, ties by name).
//! 4. Within a pool a Service with a sharing key first joins the lowest
//!    address it may share, then takes the lowest free address.

use super::addr::{fam_name, is_buggy, to_u128};
use super::allocator::{Allocator, Scope};
use super::error::AllocError;
use super::holding::Claim;
use super::index::ip_of;
use crate::{IpFamily, IpFamilyPolicy, LbService};
use std::net::IpAddr;

/// Which families a Service wants and how many addresses at most. Fixed
/// arrays: allocation is on the hot path and never wants more than two.
#[derive(Clone, Copy)]
struct Want {
    /// In `spec.ipFamilies` order; `true` when the family is required.
    list: [(IpFamily, bool); 2],
    /// How many entries of `list` are used.
    n: usize,
    /// 1 for single-stack, 2 for dual-stack.
    max: usize,
}

impl Want {
    fn new(list: &[(IpFamily, bool)], max: usize) -> Self {
        let mut out = Self {
            list: [(IpFamily::V4, false); 2],
            n: 0,
            max,
        };
        for (i, e) in list.iter().take(2).enumerate() {
            out.list[i] = *e;
            out.n = i + 1;
        }
        out
    }

    fn of(svc: &LbService) -> Self {
        use IpFamily::{V4, V6};
        let mut fams = [V4; 2];
        let mut n = 0;
        for f in &svc.ip_families {
            if n < 2 && !fams[..n].contains(f) {
                fams[n] = *f;
                n += 1;
            }
        }
        let other = |f: IpFamily| if f == V4 { V6 } else { V4 };
        match (svc.ip_family_policy, &fams[..n]) {
            // No ipFamilies (not defaulted by an API server): any one, IPv4 first.
            (IpFamilyPolicy::SingleStack, []) => Self::new(&[(V4, false), (V6, false)], 1),
            (IpFamilyPolicy::PreferDualStack, []) => Self::new(&[(V4, false), (V6, false)], 2),
            (IpFamilyPolicy::RequireDualStack, []) => Self::new(&[(V4, true), (V6, true)], 2),
            (IpFamilyPolicy::SingleStack, [f, ..]) => Self::new(&[(*f, true)], 1),
            // An address of a family the Service has no cluster IP for would
            // not be forwarded by kube-proxy, so only listed families.
            (IpFamilyPolicy::PreferDualStack, [f]) => Self::new(&[(*f, true)], 1),
            (IpFamilyPolicy::PreferDualStack, [f, g, ..]) => {
                Self::new(&[(*f, true), (*g, false)], 2)
            }
            (IpFamilyPolicy::RequireDualStack, [f, ..]) => {
                Self::new(&[(*f, true), (other(*f), true)], 2)
            }
        }
    }

    fn families(&self) -> &[(IpFamily, bool)] {
        &self.list[..self.n]
    }

    fn wants(&self, f: IpFamily) -> bool {
        self.families().iter().any(|(g, _)| *g == f)
    }

    fn rank(&self, ip: &IpAddr) -> usize {
        let f = IpFamily::of(ip);
        self.families()
            .iter()
            .position(|(g, _)| *g == f)
            .unwrap_or(usize::MAX)
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.families().iter().map(|(f, _)| fam_name(*f)).collect();
        format!("[{}]", names.join(", "))
    }

    /// The wanted families not among `kept`, none when `kept` is full.
    fn missing(&self, kept: &[IpAddr]) -> Want {
        let mut out = Want::new(&[], self.max);
        if kept.len() >= self.max {
            return out;
        }
        for &(f, required) in self.families() {
            if !kept.iter().any(|k| IpFamily::of(k) == f) {
                out.list[out.n] = (f, required);
                out.n += 1;
            }
        }
        out
    }
}

/// A decided change: the final addresses and how to get there.
struct Plan {
    ips: Vec<IpAddr>,
    take: Vec<(IpAddr, Option<usize>)>,
    release: Vec<IpAddr>,
}

impl Allocator {
    /// Converges the Service to the addresses it should hold and returns
    /// them in `spec.ipFamilies` order. Calling it again for a Service that
    /// holds valid addresses returns them unchanged. On error nothing changes
    /// (only the pools' failure counters move).
    pub fn allocate(&mut self, svc: &LbService, scope: &Scope) -> Result<Vec<IpAddr>, AllocError> {
        let claim = self.claim(svc, scope);
        let want = Want::of(svc);
        let pinned = match &svc.pool {
            Some(name) if !name.is_empty() => Some(self.pinned(name, svc, scope)?),
            _ => None,
        };
        let plan = if svc.requested_ips.is_empty() {
            self.plan_auto(svc, &claim, &want, pinned, scope)
        } else {
            self.plan_requested(svc, &claim, &want, pinned, scope)
        };
        match plan {
            Ok(mut p) => {
                p.ips.sort_by_key(|ip| want.rank(ip));
                let ips = p.ips.clone();
                self.apply(&claim, scope, p.ips, p.take, p.release);
                Ok(ips)
            }
            Err(e) => {
                self.count_failure(&e);
                Err(e)
            }
        }
    }

    /// Counts a failed allocation against the pools it concerns.
    fn count_failure(&mut self, e: &AllocError) {
        let pools: Vec<usize> = match e {
            AllocError::Exhausted { pools, .. } | AllocError::FamilyUnavailable { pools, .. } => {
                pools
                    .iter()
                    .filter_map(|n| self.by_name.get(n).copied())
                    .collect()
            }
            AllocError::InUse { ip, .. } => self.locate(*ip).into_iter().collect(),
            _ => Vec::new(),
        };
        for p in pools {
            self.pools[p].failures += 1;
        }
    }

    /// Why the pool is closed to the Service, if it is.
    fn closed(&self, p: usize, svc: &LbService, scope: &Scope) -> Option<String> {
        let pool = &self.pools[p];
        if !scope.admits_pool(pool.name()) {
            let who = scope.owner.as_deref().unwrap_or("this provider");
            return Some(format!("is not in the pool list of {who}"));
        }
        match &pool.config.service_allocation {
            Some(sa) if !sa.admits(&svc.key.namespace, &svc.namespace_labels, &svc.labels) => Some(
                "does not admit this Service (its serviceAllocation limits namespaces or labels)"
                    .to_string(),
            ),
            _ => None,
        }
    }

    fn pinned(&self, name: &str, svc: &LbService, scope: &Scope) -> Result<usize, AllocError> {
        let p = *self
            .by_name
            .get(name)
            .ok_or_else(|| AllocError::UnknownPool {
                pool: name.to_string(),
            })?;
        match self.closed(p, svc, scope) {
            Some(reason) => Err(AllocError::PoolNotAllowed {
                pool: name.to_string(),
                reason,
            }),
            None => Ok(p),
        }
    }

    fn plan_requested(
        &self,
        svc: &LbService,
        claim: &Claim,
        want: &Want,
        pinned: Option<usize>,
        scope: &Scope,
    ) -> Result<Plan, AllocError> {
        let requested = super::index::dedup(&svc.requested_ips);
        for (i, a) in requested.iter().enumerate() {
            if let Some(b) = requested[i + 1..]
                .iter()
                .find(|b| a.is_ipv4() == b.is_ipv4())
            {
                return Err(AllocError::BadRequest {
                    reason: format!(
                        "{a} and {b} are both {}: request at most one address per family",
                        fam_name(IpFamily::of(a))
                    ),
                });
            }
            if !want.wants(IpFamily::of(a)) {
                return Err(AllocError::BadRequest {
                    reason: format!(
                        "{a} is {} but the Service takes {} (spec.ipFamilies and \
                         spec.ipFamilyPolicy): request an address of those families",
                        fam_name(IpFamily::of(a)),
                        want.describe()
                    ),
                });
            }
        }
        if requested.len() > want.max {
            return Err(AllocError::BadRequest {
                reason: "a single-stack Service takes one address: request one".to_string(),
            });
        }
        for (f, required) in want.families() {
            if *required && !requested.iter().any(|ip| IpFamily::of(ip) == *f) {
                return Err(AllocError::BadRequest {
                    reason: format!(
                        "the Service requires {} but no {} address is requested: request one \
                         address per required family",
                        want.describe(),
                        fam_name(*f)
                    ),
                });
            }
        }
        let held = claim.held.as_slice();
        let mut take = Vec::new();
        for &ip in &requested {
            let already = held.contains(&ip);
            let pool = self.locate(ip);
            match (pool, pinned) {
                (_, Some(pin)) if pool != Some(pin) => {
                    return Err(AllocError::OutsidePools {
                        ip,
                        where_: format!(
                            "pool {} named by the address-pool annotation",
                            self.pools[pin].name()
                        ),
                    });
                }
                (None, _) if !already => {
                    return Err(AllocError::OutsidePools {
                        ip,
                        where_: "any configured pool".to_string(),
                    });
                }
                _ => {}
            }
            if let (Some(p), false) = (pool, already) {
                if let Some(reason) = self.closed(p, svc, scope) {
                    return Err(AllocError::AddressNotAllowed {
                        ip,
                        pool: self.pools[p].name().to_string(),
                        reason,
                    });
                }
                let (f, v) = to_u128(ip);
                if self.pools[p].config.avoid_buggy_ips && is_buggy(f, v) {
                    return Err(AllocError::AvoidedAddress {
                        ip,
                        pool: self.pools[p].name().to_string(),
                    });
                }
                if let Some(e) = self.reserved_refusal(ip) {
                    return Err(e);
                }
            }
            self.check_share(ip, claim)?;
            if !already {
                take.push((ip, pool));
            }
        }
        let release = held
            .iter()
            .filter(|ip| !requested.contains(ip))
            .copied()
            .collect();
        Ok(Plan {
            ips: requested,
            take,
            release,
        })
    }

    /// The addresses of the Service to keep: held ones (or, for a Service the
    /// allocator does not know, its published ones) that are still usable.
    fn keepable(
        &self,
        svc: &LbService,
        claim: &Claim,
        want: &Want,
        pinned: Option<usize>,
        scope: &Scope,
    ) -> (Vec<IpAddr>, Vec<(IpAddr, Option<usize>)>) {
        let mut kept: Vec<IpAddr> = Vec::new();
        let mut take = Vec::new();
        let known = claim.known;
        let candidates: &[IpAddr] = if known { &claim.held } else { &svc.current_ips };
        let class_changed = claim.class_changed;
        for &ip in candidates {
            let f = IpFamily::of(&ip);
            if !want.wants(f) || kept.iter().any(|k| IpFamily::of(k) == f) || kept.len() >= want.max
            {
                continue;
            }
            let pool = if known {
                self.addrs.get(&ip).and_then(|h| h.pool)
            } else {
                self.locate(ip)
            };
            // A different annotated pool moves the Service; an orphan (in no
            // pool any more) stays put until an address is requested.
            if pinned.is_some() && pool.is_some() && pool != pinned {
                continue;
            }
            if !known || class_changed {
                // Only a pool this provider may use: a published address the
                // allocator never adopted, or one another class allocated.
                let Some(p) = pool else { continue };
                let (fa, v) = to_u128(ip);
                if !scope.admits_pool(self.pools[p].name()) || !self.pools[p].allocatable(fa, v) {
                    continue;
                }
            }
            if self.check_share(ip, claim).is_err() {
                continue;
            }
            // A node's or another host's address is kept by its holder, never newly taken.
            if !known && self.is_reserved(ip) {
                continue;
            }
            kept.push(ip);
            if !known {
                take.push((ip, pool));
            }
        }
        (kept, take)
    }

    fn plan_auto(
        &self,
        svc: &LbService,
        claim: &Claim,
        want: &Want,
        pinned: Option<usize>,
        scope: &Scope,
    ) -> Result<Plan, AllocError> {
        let (kept, mut take) = self.keepable(svc, claim, want, pinned, scope);
        let release: Vec<IpAddr> = claim
            .held
            .iter()
            .filter(|ip| !kept.contains(ip))
            .copied()
            .collect();
        let missing = want.missing(&kept);
        if missing.n == 0 && !kept.is_empty() {
            return Ok(Plan {
                ips: kept,
                take,
                release,
            });
        }
        // Dual-stack addresses come from one pool: the annotated one, else
        // the kept address's, else the auto-assign pools in order.
        let fixed = pinned.or_else(|| {
            kept.iter()
                .find_map(|ip| self.addrs.get(ip).and_then(|h| h.pool).or(self.locate(*ip)))
        });
        let candidates = || {
            fixed
                .into_iter()
                .chain(self.order.iter().copied().filter(move |&p| {
                    fixed.is_none()
                        && self.pools[p].config.auto_assign
                        && self.closed(p, svc, scope).is_none()
                }))
        };
        let mut ips = kept;
        let kept_len = ips.len();
        for p in candidates() {
            let mut ok = true;
            for &(f, required) in missing.families() {
                if ips.len() >= want.max {
                    break;
                }
                match self.pick(p, f, claim) {
                    Some(ip) => ips.push(ip),
                    None if required => {
                        ok = false;
                        break;
                    }
                    None => {}
                }
            }
            if ok && !ips.is_empty() {
                take.extend(ips[kept_len..].iter().map(|ip| (*ip, Some(p))));
                return Ok(Plan { ips, take, release });
            }
            ips.truncate(kept_len);
        }
        if !ips.is_empty() && missing.families().iter().all(|(_, required)| !required) {
            // PreferDualStack falls back to the family it has.
            return Ok(Plan { ips, take, release });
        }
        let candidates: Vec<usize> = candidates().collect();
        let names: Vec<String> = candidates
            .iter()
            .map(|&p| self.pools[p].name().to_string())
            .collect();
        if candidates.is_empty() {
            let who = scope.owner.as_deref().unwrap_or("this provider");
            return Err(AllocError::NoPool {
                reason: format!(
                    "no auto-assign pool of {who} admits this Service; name a pool with the \
                     portway.dev/address-pool annotation, request an address, or widen a pool's \
                     serviceAllocation"
                ),
            });
        }
        for &(f, required) in missing.families() {
            if required && !candidates.iter().any(|&p| self.pools[p].has_family(f)) {
                return Err(AllocError::FamilyUnavailable {
                    family: f,
                    pools: names,
                });
            }
        }
        // The required family no candidate can give (None when each could
        // be had, but not together from one pool).
        let family = missing
            .families()
            .iter()
            .find(|(f, required)| {
                *required
                    && candidates
                        .iter()
                        .all(|&p| self.pick(p, *f, claim).is_none())
            })
            .map(|(f, _)| *f);
        Err(AllocError::Exhausted {
            pools: names,
            family,
        })
    }

    /// An address of family `f` in pool `p` for the claim: the lowest one it
    /// may share (same sharing key), else the lowest free one.
    fn pick(&self, p: usize, f: IpFamily, claim: &Claim) -> Option<IpAddr> {
        if let Some(k) = &claim.sharing_key
            && let Some(set) = self.by_sharing_key.get(k)
        {
            let shared = set.iter().find(|ip| {
                IpFamily::of(ip) == f
                    && self.addrs.get(ip).is_some_and(|h| {
                        h.pool == Some(p)
                            && !h.holders.contains_key(&claim.key)
                            && h.compatible(claim).is_ok()
                    })
            });
            if let Some(ip) = shared {
                return Some(*ip);
            }
        }
        self.pools[p].lowest_free(f).map(|v| ip_of(f, v))
    }
}
