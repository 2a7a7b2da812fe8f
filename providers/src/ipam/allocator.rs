//! The allocator: who holds which address, and the pools' free space.
//!
//! A plain synchronous struct (MetalLB's `internal/allocator` is the model):
//! [`Allocator::assign`] and [`Allocator::adopt`] take addresses Services
//! already hold (rebuild from status after a restart), [`Allocator::allocate`]
//! converges a Service to the addresses it should hold, [`Allocator::release`]
//! forgets it. Every operation is all-or-nothing: a refusal leaves no trace.
//!
//! ```text
//!   services: key -> [ip]            (what each Service holds, in family order; hashed)
//!   addrs:    ip  -> Holding         (pool, sharing key, backend, holders+ports; hashed)
//!   by_sharing_key: key -> {ip}      (addresses a new sharer may join)
//!   pools[i].free: start -> end      (free intervals; lowest free is the first key)
//!   index:   start -> (end, pool)    (which pool an address belongs to)
//! ```
//!
//! Every lookup is a `BTreeMap` operation, O(log n), or a hash lookup by
//! Service key (string keys make B-tree searches memcmp-bound); no pool is
//! ever scanned.
//! The only loop over data is the sharing candidates of one sharing key.

use super::addr::to_u128;
use super::config::{PoolConfig, PoolError, validate_pools};
use super::error::AllocError;
use super::holding::{Assignment, Claim, Holders, Holding};
use super::index::{age_key, build, dedup, locate_in};
use super::pool::PoolState;
use crate::{LbService, ServiceKey};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Which pools a caller may draw new addresses from, and who it is.
///
/// The allocator is shared by the l2, bgp and f5 providers so that one address
/// is never handed out twice; each provider allocates only from the pools its
/// configuration lists (`l2.pools`, ...). `owner` (the class) lets a provider
/// release only what it allocated when a Service changes class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// The class allocating, e.g. `portway.dev/l2`; `None` for tests and tools.
    pub owner: Option<String>,
    /// The pools it may allocate from; `None` allows every pool.
    pub pools: Option<BTreeSet<String>>,
}

impl Scope {
    /// Every pool, no owner.
    pub fn all() -> Self {
        Self::default()
    }

    /// The given owner restricted to the named pools.
    pub fn new(
        owner: impl Into<String>,
        pools: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            owner: Some(owner.into()),
            pools: Some(pools.into_iter().map(Into::into).collect()),
        }
    }

    /// Whether the named pool may be drawn from.
    pub fn admits_pool(&self, name: &str) -> bool {
        self.pools.as_ref().is_none_or(|p| p.contains(name))
    }
}

/// Per-pool figures for metrics (`portway_pool_addresses_total`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// The pool's name (metric label).
    pub name: String,
    /// Allocatable addresses (IPv4 and IPv6 together; `avoidBuggyIPs` excluded).
    pub total: u128,
    /// Addresses held by at least one Service.
    pub in_use: u64,
    /// Allocations the pool could not satisfy since start.
    pub failures: u64,
    /// `total` split by family, `[IPv4, IPv6]`, for a pool's status per family.
    pub total_by_family: [u128; 2],
    /// `in_use` split by family, `[IPv4, IPv6]`.
    pub in_use_by_family: [u64; 2],
}

/// The address allocator shared by the l2, bgp and f5 providers.
#[derive(Debug)]
pub struct Allocator {
    pub(super) configs: Vec<PoolConfig>,
    pub(super) pools: Vec<PoolState>,
    pub(super) by_name: BTreeMap<String, usize>,
    /// Pool indices in auto-assign preference order.
    pub(super) order: Vec<usize>,
    pub(super) index: [BTreeMap<u128, (u128, usize)>; 2],
    pub(super) addrs: HashMap<IpAddr, Holding>,
    pub(super) by_sharing_key: BTreeMap<String, BTreeSet<IpAddr>>,
    pub(super) services: HashMap<Arc<ServiceKey>, Assignment>,
    /// Every node's own addresses (address -> node name), as the controller last saw them;
    /// those inside a pool are never handed out (see [`Allocator::set_node_addresses`]).
    pub(super) node_addrs: BTreeMap<IpAddr, String>,
    /// Addresses a speaker found another host using, taken from a Service that asked to
    /// move (address -> who uses it); never handed out again by this process.
    pub(super) foreign: BTreeMap<IpAddr, String>,
}

impl Allocator {
    /// Builds an allocator over the pools, or returns every configuration
    /// problem (the same checks as [`validate_pools`]).
    pub fn new(pools: &[PoolConfig]) -> Result<Self, Vec<PoolError>> {
        let errors = validate_pools(pools);
        if !errors.is_empty() {
            return Err(errors);
        }
        let b = build(pools);
        Ok(Self {
            configs: pools.to_vec(),
            pools: b.pools,
            by_name: b.by_name,
            order: b.order,
            index: b.index,
            addrs: HashMap::new(),
            by_sharing_key: BTreeMap::new(),
            services: HashMap::new(),
            node_addrs: BTreeMap::new(),
            foreign: BTreeMap::new(),
        })
    }

    /// The configuration the allocator runs with.
    pub fn pool_configs(&self) -> &[PoolConfig] {
        &self.configs
    }

    /// The index of the pool containing the address, if any.
    pub(super) fn locate(&self, ip: IpAddr) -> Option<usize> {
        locate_in(&self.index, ip)
    }

    /// The name of the pool containing the address, if any.
    pub fn pool_of(&self, ip: IpAddr) -> Option<&str> {
        self.locate(ip).map(|p| self.pools[p].name())
    }

    /// The addresses a Service holds, in `spec.ipFamilies` order.
    pub fn assigned(&self, key: &ServiceKey) -> Option<&[IpAddr]> {
        self.services.get(key).map(|a| a.ips.as_slice())
    }

    /// The class that allocated a Service's addresses (`Some(None)` when
    /// assigned without an owner; `None` when it holds nothing).
    pub fn owner(&self, key: &ServiceKey) -> Option<Option<&str>> {
        self.services.get(key).map(|a| a.owner.as_deref())
    }

    /// Every Service and its addresses, ordered by key (sorted on each call:
    /// O(n log n), for inspection and tests).
    pub fn assignments(&self) -> impl Iterator<Item = (&ServiceKey, &[IpAddr])> {
        let mut all: Vec<(&ServiceKey, &[IpAddr])> = self
            .services
            .iter()
            .map(|(k, a)| (&**k, a.ips.as_slice()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all.into_iter()
    }

    /// How many Services hold addresses.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether no Service holds an address.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The Services holding an address (several when shared).
    pub fn holders(&self, ip: IpAddr) -> Vec<&ServiceKey> {
        self.addrs
            .get(&ip)
            .map(|h| h.holders.keys().collect())
            .unwrap_or_default()
    }

    /// Held addresses that lie in no configured pool, with their holders, for
    /// Warning events after a configuration reload, ordered by address.
    /// O(held addresses).
    pub fn orphans(&self) -> Vec<(ServiceKey, IpAddr)> {
        let mut out: Vec<(ServiceKey, IpAddr)> = self
            .addrs
            .iter()
            .filter(|(_, h)| h.pool.is_none())
            .flat_map(|(ip, h)| h.holders.keys().map(|k| (k.clone(), *ip)))
            .collect();
        out.sort_unstable_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        out
    }

    /// Per-pool figures, in configuration order.
    pub fn stats(&self) -> Vec<PoolStats> {
        self.pools
            .iter()
            .map(|p| PoolStats {
                name: p.name().to_string(),
                total: p.total[0].saturating_add(p.total[1]),
                in_use: p.in_use[0] + p.in_use[1],
                failures: p.failures,
                total_by_family: p.total,
                in_use_by_family: p.in_use,
            })
            .collect()
    }

    /// Forgets a Service; each address is freed when its last holder goes.
    /// Returns the addresses it held (empty if none).
    pub fn release(&mut self, key: &ServiceKey) -> Vec<IpAddr> {
        let Some(a) = self.services.remove(key) else {
            return Vec::new();
        };
        for ip in &a.ips {
            self.drop_holder(*ip, key);
        }
        a.ips
    }

    /// Adopts addresses a Service already holds (rebuild from status).
    ///
    /// Refuses, changing nothing, when an address lies outside every pool or
    /// is held by a Service it may not share with. Pool lists and selectors
    /// are not checked: the status is the truth of what is held, and keeping
    /// it held is what prevents a second hand-out. Replaces what the Service
    /// held before.
    pub fn assign(
        &mut self,
        svc: &LbService,
        ips: &[IpAddr],
        scope: &Scope,
    ) -> Result<(), AllocError> {
        let claim = self.claim(svc, scope);
        let ips = dedup(ips);
        let held = claim.held.clone();
        let mut take = Vec::new();
        for &ip in &ips {
            let pool = self.locate(ip);
            if pool.is_none() && !held.contains(&ip) {
                return Err(AllocError::OutsidePools {
                    ip,
                    where_: "any configured pool".to_string(),
                });
            }
            self.check_share(ip, &claim)?;
            if !held.contains(&ip) {
                take.push((ip, pool));
            }
        }
        let release = held.into_iter().filter(|ip| !ips.contains(ip)).collect();
        self.apply(&claim, scope, ips, take, release);
        Ok(())
    }

    /// Rebuilds from every Service's published addresses before any new
    /// allocation. Services are processed oldest first (creation time, then
    /// namespace/name), so when two claim one address they may not share, the
    /// oldest keeps it and the other gets `InUse` and holds nothing. An
    /// address in no configured pool is kept and reported as `Orphaned`.
    pub fn adopt(
        &mut self,
        services: &[LbService],
        scope: &Scope,
    ) -> Vec<(ServiceKey, AllocError)> {
        let mut todo: Vec<&LbService> = services
            .iter()
            .filter(|s| !s.current_ips.is_empty())
            .collect();
        todo.sort_by(|a, b| age_key(a).cmp(&age_key(b)));
        let mut report = Vec::new();
        'svc: for svc in todo {
            let claim = self.claim(svc, scope);
            let ips = dedup(&svc.current_ips);
            let held = claim.held.clone();
            let mut take = Vec::new();
            let mut orphans = Vec::new();
            for &ip in &ips {
                if let Err(e) = self.check_share(ip, &claim) {
                    report.push((svc.key.clone(), e));
                    continue 'svc;
                }
                if held.contains(&ip) {
                    continue;
                }
                let pool = self.locate(ip);
                if pool.is_none() {
                    orphans.push(ip);
                }
                take.push((ip, pool));
            }
            let release = held.into_iter().filter(|ip| !ips.contains(ip)).collect();
            self.apply(&claim, scope, ips, take, release);
            for ip in orphans {
                report.push((svc.key.clone(), AllocError::Orphaned { ip }));
            }
        }
        report
    }

    /// Switches to a new pool list, keeping every assignment: addresses are
    /// re-homed to whichever new pool contains them, and those in none are
    /// kept as orphans and returned (with their holders) for Warning events.
    /// On invalid configuration nothing changes.
    pub fn reconfigure(
        &mut self,
        pools: &[PoolConfig],
    ) -> Result<Vec<(ServiceKey, IpAddr)>, Vec<PoolError>> {
        let errors = validate_pools(pools);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut b = build(pools);
        for p in &mut b.pools {
            if let Some(&old) = self.by_name.get(p.name()) {
                p.failures = self.pools[old].failures;
            }
        }
        for (ip, h) in &mut self.addrs {
            let pool = locate_in(&b.index, *ip);
            if let Some(p) = pool {
                let (f, v) = to_u128(*ip);
                b.pools[p].take(f, v);
            }
            h.pool = pool;
        }
        self.configs = pools.to_vec();
        self.pools = b.pools;
        self.by_name = b.by_name;
        self.order = b.order;
        self.index = b.index;
        self.reserve_all();
        Ok(self.orphans())
    }

    /// Err when the address is held by a Service `claim` may not share with.
    pub(super) fn check_share(&self, ip: IpAddr, claim: &Claim) -> Result<(), AllocError> {
        match self.addrs.get(&ip) {
            Some(h) => h
                .compatible(claim)
                .map_err(|(holder, reason)| AllocError::InUse { ip, holder, reason }),
            None => Ok(()),
        }
    }

    /// Commits a plan: releases, takes, refreshes the Service's holder data
    /// on kept addresses and records the assignment. Callers have checked
    /// every address, so this cannot fail.
    pub(super) fn apply(
        &mut self,
        claim: &Claim,
        scope: &Scope,
        ips: Vec<IpAddr>,
        take: Vec<(IpAddr, Option<usize>)>,
        release: Vec<IpAddr>,
    ) {
        for ip in release {
            self.drop_holder(ip, &claim.key);
        }
        for &ip in &ips {
            let pool = take.iter().find(|(t, _)| *t == ip).map(|(_, p)| *p);
            self.hold(ip, pool, claim);
        }
        match self.services.get_mut(&*claim.key) {
            Some(a) => {
                a.ips = ips;
                if a.owner != scope.owner {
                    a.owner.clone_from(&scope.owner);
                }
            }
            None => {
                self.services.insert(
                    Arc::clone(&claim.key),
                    Assignment {
                        ips,
                        owner: scope.owner.clone(),
                    },
                );
            }
        }
    }

    /// The claim of a Service, with its record read once (one hash lookup)
    /// and the key's allocation shared with the record.
    pub(super) fn claim(&self, svc: &LbService, scope: &Scope) -> Claim {
        match self.services.get_key_value(&svc.key) {
            Some((k, a)) => {
                let mut c = Claim::of(svc, Arc::clone(k));
                c.held.clone_from(&a.ips);
                c.known = true;
                c.class_changed = a.owner != scope.owner;
                c
            }
            None => Claim::of(svc, Arc::new(svc.key.clone())),
        }
    }

    /// Adds or refreshes `claim` as a holder; `new_pool` is `Some` when the
    /// address was not held by this Service before (its pool, if any).
    fn hold(&mut self, ip: IpAddr, new_pool: Option<Option<usize>>, claim: &Claim) {
        if let Some(h) = self.addrs.get_mut(&ip) {
            let alone = h.holders.keys().all(|k| *k == *claim.key);
            h.holders.insert(&claim.key, claim.ports.clone());
            if alone && (h.sharing_key != claim.sharing_key || h.backend != claim.backend) {
                let old = std::mem::replace(&mut h.sharing_key, claim.sharing_key.clone());
                h.backend = claim.backend.clone();
                self.unindex_sharing(old, ip);
                self.index_sharing(ip, claim);
            }
            return;
        }
        // Not held by anyone: a fresh holding.
        let pool = new_pool.flatten().or_else(|| self.locate(ip));
        if let Some(p) = pool {
            let (f, v) = to_u128(ip);
            self.pools[p].take(f, v);
        }
        self.addrs.insert(
            ip,
            Holding {
                pool,
                sharing_key: claim.sharing_key.clone(),
                backend: claim.backend.clone(),
                holders: Holders::one(Arc::clone(&claim.key), claim.ports.clone()),
            },
        );
        self.index_sharing(ip, claim);
    }

    fn index_sharing(&mut self, ip: IpAddr, claim: &Claim) {
        if let Some(k) = &claim.sharing_key {
            self.by_sharing_key.entry(k.clone()).or_default().insert(ip);
        }
    }

    fn unindex_sharing(&mut self, key: Option<String>, ip: IpAddr) {
        if let Some(k) = key
            && let Some(set) = self.by_sharing_key.get_mut(&k)
        {
            set.remove(&ip);
            if set.is_empty() {
                self.by_sharing_key.remove(&k);
            }
        }
    }

    /// Removes one holder; the address goes back to its pool with the last.
    pub(super) fn drop_holder(&mut self, ip: IpAddr, key: &ServiceKey) {
        let Some(h) = self.addrs.get_mut(&ip) else {
            return;
        };
        h.holders.remove(key);
        if !h.holders.is_empty() {
            return;
        }
        if let Some(h) = self.addrs.remove(&ip) {
            self.unindex_sharing(h.sharing_key, ip);
            if let Some(p) = h.pool {
                let (f, v) = to_u128(ip);
                if self.is_reserved(ip) {
                    // A node's own address, or another host's: never back in free space.
                    self.pools[p].give_reserved(f);
                } else {
                    self.pools[p].give(f, v);
                }
            }
        }
    }
}
