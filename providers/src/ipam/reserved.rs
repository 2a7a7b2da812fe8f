//! Nodes' own addresses inside pools: never handed out, and reported.
//!
//! A pool that overlaps a node's address (a /24 written for "the LAN" that also holds the
//! nodes) makes MetalLB hand the node's address to a Service, and the speaker then answers
//! ARP for the node: the node drops off the network (metallb#306, kube-vip#572). Here the
//! controller tells the allocator every node's InternalIP and ExternalIP as nodes come and
//! change; such an address leaves the pool's free space (no auto-assignment picks it, a
//! request for it is refused naming the node) without counting as in use. A Service that
//! already holds one keeps it (an allocation is never taken away silently) and is reported
//! with the node, so the user can move it.

use super::addr::{AddrRange, to_u128};
use super::allocator::Allocator;
use crate::ServiceKey;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// A node's own address that lies in a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOverlap {
    /// The address.
    pub ip: IpAddr,
    /// The node whose address it is.
    pub node: String,
    /// The pool containing it.
    pub pool: String,
    /// Where the address is configured: `pools[i].addresses[j]`.
    pub key_path: String,
    /// Services holding the address anyway (they keep it; the speakers refuse to
    /// announce it).
    pub holders: Vec<ServiceKey>,
}

impl Allocator {
    /// Replaces the set of nodes' own addresses (address -> node name) and returns every
    /// one of them that lies in a pool, ordered by address. O(changes x log n).
    pub fn set_node_addresses(&mut self, addrs: BTreeMap<IpAddr, String>) -> Vec<NodeOverlap> {
        let old = std::mem::replace(&mut self.node_addrs, addrs);
        for ip in old.keys().filter(|ip| !self.node_addrs.contains_key(*ip)) {
            if let Some(p) = self.locate(*ip)
                && !self.addrs.contains_key(ip)
            {
                let (f, v) = to_u128(*ip);
                self.pools[p].return_free(f, v);
            }
        }
        self.reserve_all();
        self.node_overlaps()
    }

    /// Takes every node address that lies in a pool and no Service holds out of free
    /// space (idempotent; after new node addresses or a new pool list).
    pub(super) fn reserve_all(&mut self) {
        let ips: Vec<IpAddr> = self.node_addrs.keys().copied().collect();
        for ip in ips {
            if let Some(p) = self.locate(ip)
                && !self.addrs.contains_key(&ip)
            {
                let (f, v) = to_u128(ip);
                self.pools[p].remove_free(f, v);
            }
        }
    }

    /// The node whose own address `ip` is, when it lies in a pool.
    pub(super) fn node_owning(&self, ip: IpAddr) -> Option<&str> {
        self.locate(ip)?;
        self.node_addrs.get(&ip).map(String::as_str)
    }

    /// Every node address inside a pool, with its holders, ordered by address.
    pub fn node_overlaps(&self) -> Vec<NodeOverlap> {
        self.node_addrs
            .iter()
            .filter_map(|(ip, node)| {
                let p = self.locate(*ip)?;
                let range = self.configs[p]
                    .addresses
                    .iter()
                    .position(|a| AddrRange::parse(a).is_ok_and(|r| r.contains(*ip)))
                    .unwrap_or_default();
                Some(NodeOverlap {
                    ip: *ip,
                    node: node.clone(),
                    pool: self.pools[p].name().to_string(),
                    key_path: format!("pools[{p}].addresses[{range}]"),
                    holders: self.holders(*ip).into_iter().cloned().collect(),
                })
            })
            .collect()
    }

    /// Node addresses in pools that no Service holds, per pool and family, for the
    /// free-space check of [`Allocator::check_invariants`].
    pub(super) fn reserved_unheld(&self) -> Vec<(usize, IpAddr)> {
        self.node_addrs
            .keys()
            .filter(|ip| !self.addrs.contains_key(*ip))
            .filter_map(|ip| Some((self.locate(*ip)?, *ip)))
            .collect()
    }
}
