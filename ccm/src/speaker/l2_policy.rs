//! Which nodes and interfaces may announce each l2 address: the `L2AnnouncementPolicy`
//! resources' `nodeSelectors` and `interfaces`, per pool (issue 23), as MetalLB's
//! `L2Advertisement` does.
//!
//! An address belongs to the pool whose range holds it (the merged pools of
//! [`crate::pools::merge`]); the policies covering that pool (those naming it, and those
//! naming no pool) give its [`VipScope`], which rides in the address's `VipInput` so every
//! speaker restricts the election the same way. Rules (docs/l2.md#announcement-policies):
//! - several policies covering one pool are a union: any of them selecting a node lets it
//!   announce, and the owner answers on every interface any of them lists; one with no
//!   selector (or no interface) means every node (or interface);
//! - the configuration file's `l2` section is the implicit policy of the pools no resource
//!   covers (`l2.nodeSelector`, `l2.interfaces`: no scope, exactly the behaviour without
//!   resources). When a resource covers a pool the file's `l2.pools` also lists, the
//!   resources decide its nodes and interfaces: a policy is how a pool's announcement is
//!   changed live, so it refines the file's default rather than being widened by it (the
//!   file's section would otherwise absorb any narrower policy whenever it has no
//!   `nodeSelector`). The file still decides which pools exist and that the pool is l2.
//!
//! The election still needs the node to reach the address's subnet (or to have a usable
//! `l2.interfaces` entry); a policy's `interfaces` narrow where the owner answers, so
//! listing an interface the address is not reachable on makes the owner answer there only.

use crate::crd::L2AnnouncementPolicy;
use crate::pools::merge::selector;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use portway_l2::{VipInput, VipScope};
use portway_provider::ipam::{AddrRange, PoolConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The scope of every pool some policy covers, by address range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scopes {
    ranges: Vec<(AddrRange, Arc<VipScope>)>,
}

impl Scopes {
    /// From the merged pools and the policies (in any order).
    pub fn new(pools: &[PoolConfig], policies: &[L2AnnouncementPolicy]) -> Self {
        let mut live: Vec<&L2AnnouncementPolicy> = policies
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        // The store's order is not stable; a stable scope keeps equal VIP lists equal.
        live.sort_by_key(|p| p.name_any());
        let mut ranges = Vec::new();
        for pool in pools {
            let covering: Vec<&&L2AnnouncementPolicy> = live
                .iter()
                .filter(|p| p.spec.pools.is_empty() || p.spec.pools.contains(&pool.name))
                .collect();
            if covering.is_empty() {
                continue;
            }
            let mut scope = VipScope::default();
            for p in covering {
                let nodes = (!p.spec.node_selectors.is_empty()).then(|| {
                    p.spec
                        .node_selectors
                        .iter()
                        .map(|s| selector(Some(s)))
                        .collect()
                });
                scope.union(&p.name_any(), nodes, set(&p.spec.interfaces));
            }
            let scope = Arc::new(scope);
            ranges.extend(
                pool.addresses
                    .iter()
                    .filter_map(|a| AddrRange::parse(a).ok())
                    .map(|r| (r, scope.clone())),
            );
        }
        Self { ranges }
    }

    /// The scope of `ip`, if a policy covers its pool.
    pub fn scope_of(&self, ip: IpAddr) -> Option<&Arc<VipScope>> {
        self.ranges
            .iter()
            .find(|(r, _)| r.contains(ip))
            .map(|(_, s)| s)
    }

    /// Gives every VIP its scope.
    pub fn stamp(&self, vips: &mut [VipInput]) {
        if self.ranges.is_empty() {
            return;
        }
        for v in vips {
            v.scope = self.scope_of(v.ip).cloned();
        }
    }

    /// The scopes that select no node able to announce (from the API's view: every node
    /// the speakers would consider), each with the text of the Warning.
    pub fn unselected(&self, nodes: &[Arc<Node>]) -> Vec<(Arc<VipScope>, String)> {
        let eligible: Vec<&Arc<Node>> = nodes
            .iter()
            .filter(|n| super::desired::speaker_eligible(n))
            .collect();
        let mut out: Vec<(Arc<VipScope>, String)> = Vec::new();
        for (_, scope) in &self.ranges {
            if out.iter().any(|(s, _)| Arc::ptr_eq(s, scope)) {
                continue;
            }
            if !eligible.iter().any(|n| scope.selects(n.labels())) {
                out.push((scope.clone(), no_node_note(scope)));
            }
        }
        out
    }
}

fn set(names: &[String]) -> Option<BTreeSet<String>> {
    (!names.is_empty()).then(|| names.iter().cloned().collect())
}

/// What the Warning says when no node may announce an address of this scope.
pub fn no_node_note(scope: &VipScope) -> String {
    let named: Vec<String> = scope
        .policies
        .iter()
        .map(|p| format!("L2AnnouncementPolicy {p}"))
        .collect();
    format!(
        "no ready node matches the node selectors of {} (the announcement policies of this \
         address's pool), so no node announces it over ARP/NDP; fix \
         spec.nodeSelectors of the policy or label a node to match",
        named.join(", ")
    )
}

/// For the addresses of `vips` whose scope is one of `unselected`, the Warning's text.
pub fn unselected_vips<'a>(
    vips: impl Iterator<Item = &'a VipInput>,
    unselected: &[(Arc<VipScope>, String)],
) -> BTreeMap<IpAddr, String> {
    if unselected.is_empty() {
        return BTreeMap::new();
    }
    vips.filter_map(|v| {
        let scope = v.scope.as_ref()?;
        unselected
            .iter()
            .find(|(s, _)| Arc::ptr_eq(s, scope) || **s == **scope)
            .map(|(_, note)| (v.ip, note.clone()))
    })
    .collect()
}

#[cfg(test)]
mod tests;
