//! Pools against the nodes' own addresses, at run time.
//!
//! A pool written for "the LAN" that also holds a node's address would, in MetalLB, hand
//! that address to a Service, and the speaker would answer ARP for the node (metallb#306,
//! kube-vip#572). The controller tells the shared allocator every node's InternalIP and
//! ExternalIP before the first reconcile and whenever they change; the allocator never
//! hands those out (see `portway_provider::ipam`). Each overlap is said once: a Warning on
//! the Node naming the pool and its key path, a Warning on any Service that holds the
//! address anyway (it keeps it; the speakers refuse to announce it), a log line and the
//! `portway_ipam_node_address_overlaps` gauge. `portway check-config --cluster` reports
//! the same before a rollout.

use super::context::Context;
use crate::events::Reason;
use crate::k8s::{Node, ObjectRef, Service, Store};
use kube::Resource as _;
use portway_provider::ipam::{NodeOverlap, VipManager};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tracing::warn;

/// What was last applied and said, so that each overlap is reported once.
pub(super) struct PoolGuard {
    vips: VipManager,
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    addresses: Arc<BTreeMap<IpAddr, String>>,
    reported: BTreeSet<String>,
}

impl PoolGuard {
    pub(super) fn new(vips: VipManager) -> Self {
        Self {
            vips,
            seen: Mutex::default(),
        }
    }

    /// Hands `addresses` (every node's, from the node snapshot) to the allocator when they
    /// changed, and reports overlaps not reported before.
    pub(super) async fn apply(
        &self,
        ctx: &Context,
        addresses: &Arc<BTreeMap<IpAddr, String>>,
        nodes: &Store<Node>,
        services: &Store<Service>,
    ) {
        let fresh = {
            let mut seen = super::context::lock(&self.seen);
            if Arc::ptr_eq(&seen.addresses, addresses) || seen.addresses == *addresses {
                return;
            }
            seen.addresses = addresses.clone();
            let found = self.vips.set_node_addresses((**addresses).clone());
            ctx.metrics.set_node_overlaps(found.len());
            let keys: BTreeSet<String> = found.iter().map(describe).collect();
            let fresh: Vec<NodeOverlap> = found
                .into_iter()
                .filter(|o| !seen.reported.contains(&describe(o)))
                .collect();
            seen.reported = keys;
            fresh
        };
        for o in fresh {
            report(ctx, &o, nodes, services).await;
        }
    }
}

/// One overlap as it is said (a change of holders is said again).
fn describe(o: &NodeOverlap) -> String {
    let holders: Vec<String> = o.holders.iter().map(ToString::to_string).collect();
    format!("{} {} {} [{}]", o.ip, o.node, o.key_path, holders.join(","))
}

async fn report(ctx: &Context, o: &NodeOverlap, nodes: &Store<Node>, services: &Store<Service>) {
    warn!(
        ip = %o.ip, node = %o.node, pool = %o.pool, key = %o.key_path,
        "a pool contains a node's own address; it is never handed out"
    );
    if let Some(node) = nodes.get(&ObjectRef::new(&o.node)) {
        let note = format!(
            "pool {} ({}) contains this node's address {}: Portway never hands it out; take it \
             out of the pool's addresses",
            o.pool, o.key_path, o.ip
        );
        ctx.events
            .publish(&node.object_ref(&()), Reason::PoolOverlapsNode, &note)
            .await;
    }
    for key in &o.holders {
        let Some(svc) = services.get(&ObjectRef::new(&key.name).within(&key.namespace)) else {
            continue;
        };
        let note = format!(
            "address {} is node {}'s own address (pool {}, {}): the speakers do not announce \
             it; request another address (or drop the request) and take it out of the pool",
            o.ip, o.node, o.pool, o.key_path
        );
        ctx.events
            .publish(&svc.object_ref(&()), Reason::PoolOverlapsNode, &note)
            .await;
    }
}
