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
use super::error::AllocError;
use crate::{LbService, ServiceKey};
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
        let gone: Vec<IpAddr> = old
            .into_keys()
            .filter(|ip| !self.is_reserved(*ip) && !self.addrs.contains_key(ip))
            .collect();
        for ip in gone {
            if let Some(p) = self.locate(ip) {
                let (f, v) = to_u128(ip);
                self.pools[p].return_free(f, v);
            }
        }
        self.reserve_all();
        self.node_overlaps()
    }

    /// Takes every node address that lies in a pool and no Service holds out of free
    /// space (idempotent; after new node addresses or a new pool list).
    pub(super) fn reserve_all(&mut self) {
        let ips: Vec<IpAddr> = self
            .node_addrs
            .keys()
            .chain(self.foreign.keys())
            .copied()
            .collect();
        for ip in ips {
            if let Some(p) = self.locate(ip)
                && !self.addrs.contains_key(&ip)
            {
                let (f, v) = to_u128(ip);
                self.pools[p].remove_free(f, v);
            }
        }
    }

    /// Whether `ip` is kept out of free space: a node's own address or another host's.
    pub(super) fn is_reserved(&self, ip: IpAddr) -> bool {
        self.node_addrs.contains_key(&ip) || self.foreign.contains_key(&ip)
    }

    /// Why `ip` may not be requested, when it is a node's or another host's address in a
    /// pool.
    pub(super) fn reserved_refusal(&self, ip: IpAddr) -> Option<AllocError> {
        self.locate(ip)?;
        if let Some(node) = self.node_addrs.get(&ip) {
            return Some(AllocError::NodeAddress {
                ip,
                node: node.clone(),
            });
        }
        self.foreign.get(&ip).map(|who| AllocError::ForeignHost {
            ip,
            who: who.clone(),
        })
    }

    /// Takes `ip` from the Service, which asked to move when another host uses one of its
    /// addresses (`portway.dev/reallocate-on-conflict`), and keeps it out of free space from
    /// now on; `who` says who uses it. Returns whether it was taken: a requested address
    /// (`spec.loadBalancerIP`, the ips annotation) is the user's choice and stays, as does
    /// an address the Service does not hold. The next allocation gives a new address.
    pub fn move_off(&mut self, svc: &LbService, ip: IpAddr, who: &str) -> bool {
        if !svc.requested_ips.is_empty() {
            return false;
        }
        let Some(a) = self.services.get_mut(&svc.key) else {
            return false;
        };
        if !a.ips.contains(&ip) {
            return false;
        }
        a.ips.retain(|held| *held != ip);
        if a.ips.is_empty() {
            self.services.remove(&svc.key);
        }
        self.foreign.insert(ip, who.to_string());
        self.drop_holder(ip, &svc.key);
        self.reserve_all();
        true
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
            .chain(
                self.foreign
                    .keys()
                    .filter(|ip| !self.node_addrs.contains_key(*ip)),
            )
            .filter(|ip| !self.addrs.contains_key(*ip))
            .filter_map(|ip| Some((self.locate(*ip)?, *ip)))
            .collect()
    }
}
