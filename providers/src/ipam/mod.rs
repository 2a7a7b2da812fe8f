//! Address pools and the allocator shared by the l2, bgp and f5 providers.
//!
//! Three providers hand out virtual IPs from one set of pools configured
//! under `pools:` (see [`PoolConfig`], shaped like MetalLB's
//! `IPAddressPool`). The truth about who holds which address lives in the
//! API server (each Service's `status.loadBalancer.ingress`), not here: after
//! a restart the allocator is rebuilt from every Service's status
//! ([`Allocator::adopt`]) before anything new is handed out.
//!
//! ```text
//!   config pools ──validate_pools──> Allocator ──(shared, Mutex)──> VipManager per provider
//!   Service status ──adopt──────────────^   ^──allocate/release── ensure/ensure_deleted
//! ```
//!
//! - [`validate_pools`] / [`validate_pool_refs`] check [`PoolConfig`]s and
//!   report every problem with its key path (`pools[1].addresses[0]`).
//! - [`Allocator`] is a plain synchronous struct; every operation is
//!   O(log n) (free space is a map of intervals, so a /64 costs the same as a
//!   /30) and all-or-nothing.
//! - [`VipManager`] wraps it for providers and maps refusals to
//!   [`ProviderError`](crate::ProviderError) naming the field to fix.
//!
//! Addresses are never moved silently: a Service keeps what it holds while
//! it may (even if its pool leaves the configuration — then it is reported
//! as an orphan), and a requested address is honoured exactly or refused.

mod addr;
mod allocator;
mod config;
mod error;
mod holding;
mod index;
mod invariants;
mod manager;
mod plan;
mod pool;
mod provider;
mod reserved;
mod selector;
pub use crate::testkit;

#[cfg(test)]
mod tests;

pub use addr::AddrRange;
pub use allocator::{Allocator, PoolStats, Scope};
pub use config::{
    PoolConfig, PoolError, ServiceAllocation, parse_pools, validate_pool_refs, validate_pools,
};
pub use error::{
    AllocError, IPS_ANNOTATIONS, POOL_ANNOTATIONS, SHARING_ANNOTATIONS, pool_field, requested_field,
};
pub use manager::{Contest, VipManager};
pub use provider::VipProvider;
pub use reserved::NodeOverlap;
pub use selector::{LabelSelector, LabelSelectorRequirement, OPERATORS};
