//! Pool configuration: the `pools:` section of the config file, and its checks.
//!
//! The types mirror MetalLB's `IPAddressPool` so a migration is a copy with a
//! rename. Validation runs over the whole list and returns every problem with
//! the key path to fix (`pools[1].addresses[0]`), because `portway
//! check-config` should let a user fix a file in one round.

use super::addr::{AddrRange, fam_name};
use super::selector::LabelSelector;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One address pool, as written under `pools:`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    /// How Services (`portway.dev/address-pool`) and providers (`l2.pools`)
    /// refer to the pool; unique.
    pub name: String,
    /// CIDRs, `first-last` ranges and single addresses, IPv4 and IPv6 mixed.
    /// A pool holding both families can serve dual-stack Services.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// `false` keeps the pool for Services that ask for it by annotation or
    /// by address, e.g. a small pool of public addresses.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255`, which some old client
    /// firmwares take for broadcast addresses.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some namespaces/Services and orders it before
    /// general pools; absent means any Service may use it.
    #[serde(default)]
    pub service_allocation: Option<ServiceAllocation>,
}

fn default_true() -> bool {
    true
}

impl PoolConfig {
    /// A pool with the given addresses and every default; handy in tests and
    /// for building configurations in code.
    pub fn new(name: impl Into<String>, addresses: &[&str]) -> Self {
        Self {
            name: name.into(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            auto_assign: true,
            avoid_buggy_ips: false,
            service_allocation: None,
        }
    }
}

/// Which Services may use a pool, and how strongly it is preferred.
///
/// All conditions must hold. Pools with a `serviceAllocation` that admits a
/// Service are tried before pools without one, as in MetalLB, so a team's
/// dedicated pool is used before the shared fallback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAllocation {
    /// As in MetalLB: a lower positive number is tried first (1 is the
    /// highest priority); 0 (unset) comes after every positive priority.
    /// Ties are broken by pool name, so the order is always deterministic.
    #[serde(default)]
    pub priority: i32,
    /// Namespaces allowed to use the pool, beside those [`Self::namespace_selector`]
    /// selects; both empty allow all.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Labels that let a namespace use the pool, beside the [`Self::namespaces`] listed
    /// (a union, as MetalLB's `namespaces` and `namespaceSelectors`); both empty allow all.
    #[serde(default)]
    pub namespace_selector: LabelSelector,
    /// Labels the Service must carry; empty allows all.
    #[serde(default)]
    pub service_selector: LabelSelector,
}

impl ServiceAllocation {
    /// Whether a Service with these namespace, namespace labels and labels may
    /// use the pool.
    pub fn admits(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        // A union, as MetalLB's: a namespace listed or one the selector selects. (MetalLB
        // resolves its selectors to a list of names and, when none matches, is left with an
        // empty list that admits every namespace; here a selector matching nothing admits
        // nothing beyond the names listed.)
        let listed = self.namespaces.iter().any(|n| n == namespace);
        let selected = !self.namespace_selector.is_empty()
            && self.namespace_selector.matches(namespace_labels);
        let open = self.namespaces.is_empty() && self.namespace_selector.is_empty();
        (open || listed || selected) && self.service_selector.matches(labels)
    }
}

/// One configuration problem in the pools: the contract's [`ConfigIssue`], with paths in
/// the file's spelling, e.g. `pools[1].addresses[0]`.
pub type PoolError = crate::ConfigIssue;

/// Deserializes the raw `pools:` entries and validates them, returning every
/// problem with its key path. For configuration loaders that keep the pools
/// as untyped JSON until a provider needs them.
pub fn parse_pools(values: &[serde_json::Value]) -> Result<Vec<PoolConfig>, Vec<PoolError>> {
    let mut pools = Vec::new();
    let mut errors = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match crate::parse_section::<PoolConfig, _>(&format!("pools[{i}]"), v) {
            Ok(p) => pools.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let errors = validate_pools(&pools);
    if errors.is_empty() {
        Ok(pools)
    } else {
        Err(errors)
    }
}

/// Whether a pool name can be written in an annotation and a config list:
/// a DNS-1123 subdomain, like the MetalLB object names users migrate from.
fn name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 253
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks the whole pool list and returns every problem (empty when valid):
/// malformed or reversed or mixed-family addresses, empty pools, overlapping
/// addresses within or across pools (naming both), duplicate or malformed
/// names, negative priorities and bad selectors.
pub fn validate_pools(pools: &[PoolConfig]) -> Vec<PoolError> {
    let mut errors = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    // (range, pool index, address index) of every parsed entry, for the overlap sweep.
    let mut all: Vec<(AddrRange, usize, usize)> = Vec::new();
    for (i, pool) in pools.iter().enumerate() {
        let at = format!("pools[{i}]");
        if !name_ok(&pool.name) {
            errors.push(PoolError::new(
                format!("{at}.name"),
                format!(
                    "{:?} is not a valid pool name: use lowercase letters, digits, '-' and '.', \
                     starting and ending with a letter or digit (e.g. lan-v4)",
                    pool.name
                ),
            ));
        } else if let Some(first) = seen.get(pool.name.as_str()) {
            errors.push(PoolError::new(
                format!("{at}.name"),
                format!(
                    "pool name {:?} is already used by pools[{first}]: pool names must be unique; \
                     rename one or merge their addresses",
                    pool.name
                ),
            ));
        } else {
            seen.insert(&pool.name, i);
        }
        if pool.addresses.is_empty() {
            errors.push(PoolError::new(
                format!("{at}.addresses"),
                "the pool is empty: list at least one CIDR, range or address",
            ));
        }
        let mut usable: u128 = 0;
        let mut parsed_all = true;
        for (j, text) in pool.addresses.iter().enumerate() {
            match AddrRange::parse(text) {
                Ok(r) => {
                    usable = usable.saturating_add(r.usable(pool.avoid_buggy_ips));
                    all.push((r, i, j));
                }
                Err(msg) => {
                    parsed_all = false;
                    errors.push(PoolError::new(format!("{at}.addresses[{j}]"), msg));
                }
            }
        }
        if parsed_all && !pool.addresses.is_empty() && usable == 0 {
            errors.push(PoolError::new(
                format!("{at}.addresses"),
                "the pool has no usable address: avoidBuggyIPs excludes every IPv4 address \
                 ending in .0 or .255; add addresses or set avoidBuggyIPs: false",
            ));
        }
        if let Some(sa) = &pool.service_allocation {
            let sa_at = format!("{at}.serviceAllocation");
            if sa.priority < 0 {
                errors.push(PoolError::new(
                    format!("{sa_at}.priority"),
                    format!(
                        "priority {} is negative: use 1 for the highest priority, larger \
                         numbers for lower ones, or 0 (unset) for the lowest",
                        sa.priority
                    ),
                ));
            }
            for (j, ns) in sa.namespaces.iter().enumerate() {
                if ns.is_empty() {
                    errors.push(PoolError::new(
                        format!("{sa_at}.namespaces[{j}]"),
                        "empty namespace name: remove the entry or name a namespace",
                    ));
                }
            }
            for (field, sel) in [
                ("namespaceSelector", &sa.namespace_selector),
                ("serviceSelector", &sa.service_selector),
            ] {
                for (suffix, msg) in sel.problems() {
                    errors.push(PoolError::new(format!("{sa_at}.{field}.{suffix}"), msg));
                }
            }
        }
    }
    overlaps(pools, &mut all, &mut errors);
    errors
}

/// Reports every entry that overlaps an earlier-starting one, naming both.
/// A sort and one sweep: O(n log n) in the number of entries.
fn overlaps(
    pools: &[PoolConfig],
    all: &mut [(AddrRange, usize, usize)],
    errors: &mut Vec<PoolError>,
) {
    all.sort();
    // The entry with the greatest `last` so far in the current family.
    let mut reach: Option<(AddrRange, usize, usize)> = None;
    for &(r, i, j) in all.iter() {
        if let Some((prev, pi, pj)) = reach
            && prev.family == r.family
            && r.first <= prev.last
        {
            let whose = if pi == i {
                "the same pool".to_string()
            } else {
                format!("pool {:?}", pools[pi].name)
            };
            errors.push(PoolError::new(
                format!("pools[{i}].addresses[{j}]"),
                format!(
                    "{} ({}) overlaps {} of {whose} (pools[{pi}].addresses[{pj}]): an address \
                     may belong to one pool entry only; remove or shrink one of them",
                    pools[i].addresses[j].trim(),
                    fam_name(r.family),
                    pools[pi].addresses[pj].trim(),
                ),
            ));
            if r.last > prev.last {
                reach = Some((r, i, j));
            }
            continue;
        }
        reach = Some((r, i, j));
    }
}

/// Checks a provider's list of pool names (`l2.pools`,
/// `bgp.advertisements[0].pools`, `f5.pools`) against the defined pools;
/// `path` is the list's key and each error names the entry, e.g. `l2.pools[1]`.
pub fn validate_pool_refs(path: &str, refs: &[String], pools: &[PoolConfig]) -> Vec<PoolError> {
    refs.iter()
        .enumerate()
        .filter(|(_, r)| !pools.iter().any(|p| &p.name == *r))
        .map(|(i, r)| {
            let known: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
            PoolError::new(
                format!("{path}[{i}]"),
                if known.is_empty() {
                    format!("unknown pool {r:?}: no pools are defined; add it under pools:")
                } else {
                    format!(
                        "unknown pool {r:?}: define it under pools: or use one of {}",
                        known.join(", ")
                    )
                },
            )
        })
        .collect()
}
