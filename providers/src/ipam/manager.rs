//! `VipManager`: the thread-safe face of the allocator for providers.
//!
//! The l2, bgp and f5 providers each hold a `VipManager` handle. All handles
//! made with [`VipManager::scoped`] share one [`Allocator`], so an address is
//! never handed out twice even when two classes list the same pool, while each
//! handle allocates only from its own provider's pools. The methods map
//! one-to-one onto the provider contract (`adopt`, `ensure`, `get`,
//! `ensure_deleted`), so providers stay thin:
//!
//! ```text
//!   l2 provider --VipManager(scope l2.pools)--\
//!   bgp provider --VipManager(scope bgp pools)--> Arc<Mutex<Allocator>>
//!   f5 provider --VipManager(scope f5.pools)--/
//! ```
//!
//! The lock is held only for one synchronous allocator call (microseconds);
//! no await happens under it.

use super::AllocError;
use super::allocator::{Allocator, PoolStats, Scope};
use super::config::{PoolConfig, PoolError};
use crate::{LbService, LbStatus, ProviderError, ServiceKey};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A provider's handle on the shared allocator.
#[derive(Debug)]
pub struct VipManager {
    inner: Arc<Mutex<Allocator>>,
    scope: Arc<Mutex<Scope>>,
    /// Per refused Service: the address it asked for (or published) and who holds it.
    /// Kept beside the allocator, not in it: a refusal leaves the allocator untouched,
    /// but a pool's status reports the contest until one side lets go.
    contests: Arc<Mutex<BTreeMap<ServiceKey, (IpAddr, ServiceKey)>>>,
}

/// An address claimed by two Services that may not share it: one holds it, the other was
/// refused (issue 23: a pool's status lists these among its conflicts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contest {
    /// The address both want.
    pub ip: IpAddr,
    /// The pool it lies in (`None`: in no pool, a held orphan).
    pub pool: Option<String>,
    /// The Service holding it.
    pub holder: ServiceKey,
    /// The Service refused it.
    pub claimant: ServiceKey,
}

/// Locks, recovering from poisoning: allocator methods check before they
/// mutate and cannot panic halfway, so the state behind a poisoned lock is
/// consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VipManager {
    /// An unscoped manager over the pools (every pool, no owner), or every
    /// configuration problem.
    pub fn new(pools: &[PoolConfig]) -> Result<Self, Vec<PoolError>> {
        Ok(Self {
            inner: Arc::new(Mutex::new(Allocator::new(pools)?)),
            scope: Arc::new(Mutex::new(Scope::all())),
            contests: Arc::default(),
        })
    }

    /// A handle for one provider sharing this manager's allocator: `owner` is
    /// its class (`portway.dev/l2`), `pools` the names its configuration lists.
    pub fn scoped(&self, owner: &str, pools: &[String]) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            scope: Arc::new(Mutex::new(Scope::new(owner, pools.iter().cloned()))),
            contests: Arc::clone(&self.contests),
        }
    }

    /// Another handle on the same allocator *and* the same scope: the pool watcher keeps
    /// one of each provider's handles to change the pools it draws from live
    /// ([`VipManager::set_pools`] on either is seen by both).
    pub fn share(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            scope: Arc::clone(&self.scope),
            contests: Arc::clone(&self.contests),
        }
    }

    /// Changes the pools this handle allocates from (configuration reload).
    /// Existing assignments are kept.
    pub fn set_pools(&self, pools: &[String]) {
        lock(&self.scope).pools = Some(pools.iter().cloned().collect());
    }

    fn scope(&self) -> Scope {
        lock(&self.scope).clone()
    }

    /// Rebuilds from the Services' published addresses (call before the
    /// first `ensure`). Returns problems per Service for Warning events: the
    /// younger of two Services claiming one address (it keeps nothing and
    /// gets a new address on its next `ensure`), and addresses kept although
    /// in no configured pool.
    pub fn adopt(&self, services: &[LbService]) -> Vec<(ServiceKey, ProviderError)> {
        let scope = self.scope();
        let problems = lock(&self.inner).adopt(services, &scope);
        {
            let mut contests = lock(&self.contests);
            for (k, e) in &problems {
                if let AllocError::InUse { ip, holder, .. } = e {
                    contests.insert(k.clone(), (*ip, holder.clone()));
                }
            }
        }
        let by_key: BTreeMap<&ServiceKey, &LbService> =
            services.iter().map(|s| (&s.key, s)).collect();
        problems
            .into_iter()
            .filter_map(|(k, e)| {
                let svc = by_key.get(&k)?;
                Some((k, e.to_provider_error(svc)))
            })
            .collect()
    }

    /// The addresses the Service should publish: the ones it holds while
    /// still valid, else newly allocated ones; VIP-mode ingress entries in
    /// `spec.ipFamilies` order.
    pub fn ensure(&self, svc: &LbService) -> Result<LbStatus, ProviderError> {
        let scope = self.scope();
        let result = {
            let mut allocator = lock(&self.inner);
            if let Some((ip, who)) = conflict_to_move(svc) {
                // Taken only from a Service that holds it and did not request it.
                allocator.move_off(svc, ip, who);
            }
            allocator.allocate(svc, &scope)
        };
        let mut contests = lock(&self.contests);
        match &result {
            Err(AllocError::InUse { ip, holder, .. }) => {
                contests.insert(svc.key.clone(), (*ip, holder.clone()));
            }
            // Served, or refused for another reason: it contests nothing now.
            _ => {
                contests.remove(&svc.key);
            }
        }
        result
            .map(LbStatus::vips)
            .map_err(|e| e.to_provider_error(svc))
    }

    /// Frees the Service's addresses, unless another class allocated them
    /// (the Service changed class and the new provider already took over).
    /// Returns the addresses freed from this Service.
    pub fn release(&self, key: &ServiceKey) -> Vec<IpAddr> {
        let scope = self.scope();
        // Gone as either side: a claimant stops claiming; a holder's address is free, and
        // its claimant is served on its next retry.
        lock(&self.contests).retain(|claimant, (_, holder)| claimant != key && holder != key);
        let mut a = lock(&self.inner);
        match a.owner(key) {
            Some(Some(owner)) if scope.owner.as_deref().is_some_and(|o| o != owner) => Vec::new(),
            _ => a.release(key),
        }
    }

    /// What the Service holds now, as a status; no side effects.
    pub fn get(&self, key: &ServiceKey) -> Option<LbStatus> {
        lock(&self.inner)
            .assigned(key)
            .map(|ips| LbStatus::vips(ips.iter().copied()))
    }

    /// Per-pool figures for the pools this handle may use (all when unscoped).
    pub fn stats(&self) -> Vec<PoolStats> {
        let scope = self.scope();
        lock(&self.inner)
            .stats()
            .into_iter()
            .filter(|s| scope.admits_pool(&s.name))
            .collect()
    }

    /// Applies a new pool list to the shared allocator, keeping every
    /// assignment. Returns the addresses now in no pool, as warnings per
    /// Service, or every configuration problem (nothing changed).
    pub fn reconfigure(
        &self,
        pools: &[PoolConfig],
    ) -> Result<Vec<(ServiceKey, ProviderError)>, Vec<PoolError>> {
        let orphans = lock(&self.inner).reconfigure(pools)?;
        Ok(orphan_warnings(orphans))
    }

    /// Addresses two Services claim, each with its pool, ordered by address; only those in
    /// pools this handle may use (all when unscoped), as [`VipManager::stats`].
    pub fn contests(&self) -> Vec<Contest> {
        let scope = self.scope();
        let a = lock(&self.inner);
        let mut out: Vec<Contest> = lock(&self.contests)
            .iter()
            .map(|(claimant, (ip, holder))| Contest {
                ip: *ip,
                pool: a.pool_of(*ip).map(str::to_string),
                holder: holder.clone(),
                claimant: claimant.clone(),
            })
            .filter(|c| c.pool.as_deref().is_none_or(|p| scope.admits_pool(p)))
            .collect();
        out.sort_unstable_by(|x, y| (x.ip, &x.claimant).cmp(&(y.ip, &y.claimant)));
        out
    }

    /// Addresses held although in no configured pool, as warnings per Service.
    pub fn orphans(&self) -> Vec<(ServiceKey, ProviderError)> {
        orphan_warnings(lock(&self.inner).orphans())
    }

    /// Tells the shared allocator every node's own addresses (address -> node): those in a
    /// pool are never handed out. Returns each one in a pool, with the Services holding it,
    /// for Warning events.
    pub fn set_node_addresses(&self, addrs: BTreeMap<IpAddr, String>) -> Vec<super::NodeOverlap> {
        lock(&self.inner).set_node_addresses(addrs)
    }

    /// Runs `f` on the allocator under the lock, for inspection in tests and
    /// debugging endpoints.
    pub fn with_allocator<R>(&self, f: impl FnOnce(&Allocator) -> R) -> R {
        f(&lock(&self.inner))
    }
}

fn orphan_warnings(orphans: Vec<(ServiceKey, IpAddr)>) -> Vec<(ServiceKey, ProviderError)> {
    orphans
        .into_iter()
        .map(|(k, ip)| {
            (
                k,
                super::AllocError::Orphaned { ip }.to_provider_error(&LbService::default()),
            )
        })
        .collect()
}

/// The address a speaker found another host using, and who, when the Service lets Portway
/// move it ([`crate::REALLOCATE_ANNOTATION`] true, [`crate::CONFLICT_ANNOTATION`] set). A
/// malformed conflict annotation (it is the speaker's, not the user's) moves nothing.
fn conflict_to_move(svc: &LbService) -> Option<(IpAddr, &str)> {
    let allowed = svc
        .annotations
        .get(crate::REALLOCATE_ANNOTATION)
        .is_some_and(|v| crate::GO_BOOL_TRUE.contains(&v.as_str()));
    if !allowed {
        return None;
    }
    let text = svc.annotations.get(crate::CONFLICT_ANNOTATION)?.trim();
    let (ip, who) = text.split_once(' ').unwrap_or((text, "another host"));
    Some((ip.parse().ok()?, who.trim()))
}
