//! Why the allocator refused, and how that reads to the user.
//!
//! [`AllocError`] keeps structured facts (the address, the holder, the
//! pools); [`AllocError::to_provider_error`] turns them into the contract's
//! [`ProviderError`] with the field named as the user wrote it, e.g.
//! `metadata.annotations[metallb.universe.tf/loadBalancerIPs]` when the
//! Service used the MetalLB alias.

use super::addr::fam_name;
use crate::{IpFamily, LbService, ProviderError, ServiceKey};
use std::net::IpAddr;

/// The annotation naming requested addresses, and its MetalLB aliases (old and new prefix).
pub const IPS_ANNOTATIONS: [&str; 3] = [
    "portway.dev/load-balancer-ips",
    "metallb.universe.tf/loadBalancerIPs",
    "metallb.io/loadBalancerIPs",
];
/// The annotation naming a pool, and its MetalLB aliases.
pub const POOL_ANNOTATIONS: [&str; 3] = [
    "portway.dev/address-pool",
    "metallb.universe.tf/address-pool",
    "metallb.io/address-pool",
];
/// The sharing-key annotation, and its MetalLB aliases.
pub const SHARING_ANNOTATIONS: [&str; 3] = [
    "portway.dev/allow-shared-ip",
    "metallb.universe.tf/allow-shared-ip",
    "metallb.io/allow-shared-ip",
];

/// Why an allocation or adoption was refused. Every variant but `Exhausted`
/// needs a change by the user (Service or configuration).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// A requested or adopted address lies in no pool this Service may use.
    #[error("address {ip} is not in {where_}")]
    OutsidePools {
        /// The address.
        ip: IpAddr,
        /// Which pools were considered, for the message ("any pool", "pool lan").
        where_: String,
    },
    /// The address belongs to a pool the Service may not draw from.
    #[error("address {ip} is in pool {pool}, which {reason}")]
    AddressNotAllowed {
        /// The address.
        ip: IpAddr,
        /// Its pool.
        pool: String,
        /// Why the pool is closed to the Service.
        reason: String,
    },
    /// The pool named by annotation does not exist.
    #[error("pool {pool} does not exist")]
    UnknownPool {
        /// The name given.
        pool: String,
    },
    /// The pool named by annotation exists but the Service may not use it.
    #[error("pool {pool} {reason}")]
    PoolNotAllowed {
        /// The name given.
        pool: String,
        /// Why the pool is closed to the Service.
        reason: String,
    },
    /// The address is held by a Service it may not be shared with.
    #[error("address {ip} is held by {holder}: {reason}")]
    InUse {
        /// The contested address.
        ip: IpAddr,
        /// One Service holding it.
        holder: ServiceKey,
        /// Why sharing is not possible.
        reason: String,
    },
    /// The address is excluded by the pool's `avoidBuggyIPs`.
    #[error("address {ip} ends in .0 or .255 and pool {pool} sets avoidBuggyIPs")]
    AvoidedAddress {
        /// The address.
        ip: IpAddr,
        /// Its pool.
        pool: String,
    },
    /// The requested addresses do not fit the Service's families.
    #[error("{reason}")]
    BadRequest {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A family the Service requires is in none of the pools it may use.
    #[error("no pool offers {}: {}", fam_name(*family), pools.join(", "))]
    FamilyUnavailable {
        /// The missing family.
        family: IpFamily,
        /// The pools considered.
        pools: Vec<String>,
    },
    /// Every pool the Service may use is full.
    #[error("no free address in {}", pools.join(", "))]
    Exhausted {
        /// The pools tried.
        pools: Vec<String>,
        /// The family that ran out, when one did.
        family: Option<IpFamily>,
    },
    /// No pool applies to the Service at all.
    #[error("no pool applies: {reason}")]
    NoPool {
        /// Why (no auto-assign pool, selectors, provider's pool list).
        reason: String,
    },
    /// The requested address is a node's own (InternalIP or ExternalIP).
    #[error("address {ip} is node {node}'s own address")]
    NodeAddress {
        /// The address.
        ip: IpAddr,
        /// The node.
        node: String,
    },
    /// The requested address was found in use by another host (a speaker saw it).
    #[error("address {ip} is used by another host ({who})")]
    ForeignHost {
        /// The address.
        ip: IpAddr,
        /// Who uses it, as the speaker saw it (MAC, node, interface).
        who: String,
    },
    /// Warning only: the Service keeps an address that is in no configured
    /// pool (its pool was removed or shrunk); it is never moved silently.
    #[error("address {ip} is kept but lies in no configured pool")]
    Orphaned {
        /// The address kept.
        ip: IpAddr,
    },
}

/// The annotation of `names` present on the Service (the first one found), as a field path.
fn annotation_field(svc: &LbService, names: [&str; 3]) -> Option<String> {
    names
        .iter()
        .find(|n| svc.annotations.contains_key(**n))
        .map(|n| format!("metadata.annotations[{n}]"))
}

/// Where the Service's requested addresses came from.
pub fn requested_field(svc: &LbService) -> String {
    annotation_field(svc, IPS_ANNOTATIONS).unwrap_or_else(|| "spec.loadBalancerIP".to_string())
}

/// Where the Service's pool choice came from.
pub fn pool_field(svc: &LbService) -> String {
    annotation_field(svc, POOL_ANNOTATIONS)
        .unwrap_or_else(|| format!("metadata.annotations[{}]", POOL_ANNOTATIONS[0]))
}

impl AllocError {
    /// The contract error for the controller, with the field to fix named
    /// the way this Service spells it.
    pub fn to_provider_error(&self, svc: &LbService) -> ProviderError {
        match self {
            AllocError::OutsidePools { .. }
            | AllocError::AddressNotAllowed { .. }
            | AllocError::AvoidedAddress { .. }
            | AllocError::NodeAddress { .. }
            | AllocError::ForeignHost { .. }
            | AllocError::BadRequest { .. } => ProviderError::invalid(
                requested_field(svc),
                format!(
                    "{self}; request an address from a pool this Service may use, or remove the request"
                ),
            ),
            AllocError::UnknownPool { .. } | AllocError::PoolNotAllowed { .. } => {
                ProviderError::invalid(
                    pool_field(svc),
                    format!("{self}; name a pool from the configuration that admits this Service"),
                )
            }
            AllocError::InUse { ip, holder, reason } => ProviderError::Conflict {
                what: format!("address {ip} ({reason})"),
                holder: holder.to_string(),
            },
            AllocError::FamilyUnavailable { family, .. } => ProviderError::invalid(
                "spec.ipFamilyPolicy",
                format!(
                    "{self}; a dual-stack Service needs one pool holding both families: add {} \
                     addresses to the pool or use PreferDualStack",
                    fam_name(*family)
                ),
            ),
            AllocError::Exhausted { pools, family } => ProviderError::Exhausted {
                pool: pools.join(","),
                reason: match family {
                    Some(f) => format!("no free {} address", fam_name(*f)),
                    None => "no free address".to_string(),
                },
            },
            AllocError::NoPool { reason } => ProviderError::Exhausted {
                pool: String::new(),
                reason: reason.clone(),
            },
            AllocError::Orphaned { ip } => ProviderError::Orphaned { ip: *ip },
        }
    }
}
