//! The eligible node set, kept current from a Node watch.
//!
//! Every reconcile reads the latest [`NodeSet`] snapshot instead of walking
//! the Node cache. The snapshot's `generation` only moves when the set of
//! (name, providerID) pairs that upstream syncs on changes, which is exactly when
//! upstream calls `UpdateLoadBalancer`; a changed address, readiness or the cluster
//! autoscaler's taint refreshes the views without bumping it (the tainted node is left
//! out of the next update made for another reason, so its connections drain). A
//! changed address or label is announced on its own, for providers that follow node
//! details (hostport lists addresses and selects nodes by label). Changes are debounced so a rolling reboot of many nodes costs one update
//! per Service, not one per node.

use super::rules::{node_counts_for_sync, node_eligible, node_identity};
use super::view::node_view;
use crate::k8s::{Node, ObjectRef, Service, Store};
use futures::{Stream, StreamExt};
use portway_provider::LbNode;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The eligible nodes at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeSet {
    /// Views of the eligible nodes, sorted by name.
    pub nodes: Arc<Vec<LbNode>>,
    /// The (name, providerID) identities upstream syncs on (see the module's header).
    pub ids: BTreeSet<(String, String)>,
    /// Bumped whenever `ids` changes.
    pub generation: u64,
    /// Every node's own addresses (InternalIP, ExternalIP) -> node name, eligible or
    /// not: a pool must never hand one out (see [`super::overlaps`]).
    pub addresses: Arc<BTreeMap<IpAddr, String>>,
}

impl NodeSet {
    /// Computes the eligible set from every known node, keeping `generation`
    /// from `previous` unless the identities changed.
    pub fn compute(all: &[Arc<Node>], previous: &NodeSet) -> NodeSet {
        let mut eligible: Vec<&Node> = all
            .iter()
            .map(|n| &**n)
            .filter(|n| node_eligible(n))
            .collect();
        eligible.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        let ids: BTreeSet<_> = all
            .iter()
            .filter(|n| node_counts_for_sync(n))
            .map(|n| node_identity(n))
            .collect();
        let generation = if ids == previous.ids {
            previous.generation
        } else {
            previous.generation + 1
        };
        let addresses = super::rules::node_addresses(all);
        NodeSet {
            nodes: Arc::new(eligible.into_iter().map(node_view).collect()),
            ids,
            generation,
            addresses: Arc::new(addresses),
        }
    }
}

/// Keeps `tx` current from node events; when the eligible set changes, asks
/// for a reconcile of every LoadBalancer Service (each decides on its own
/// whether it must `update`); when an eligible node's addresses or labels changed, says so
/// on `details`, after the new snapshot is in place.
pub async fn sync_nodes(
    nodes: Store<Node>,
    mut events: impl Stream<Item = ()> + Unpin,
    services: Store<Service>,
    tx: watch::Sender<NodeSet>,
    queue: Arc<super::queue::WorkQueue<ObjectRef<Service>>>,
    details: mpsc::UnboundedSender<()>,
    debounce: Duration,
) {
    while events.next().await.is_some() {
        // Gather a burst of changes: wait until the stream is quiet for
        // `debounce`, at most ten debounce periods in all.
        let deadline = tokio::time::Instant::now() + debounce * 10;
        loop {
            match tokio::time::timeout_at(
                (tokio::time::Instant::now() + debounce).min(deadline),
                events.next(),
            )
            .await
            {
                Ok(Some(())) if tokio::time::Instant::now() < deadline => continue,
                Ok(None) => return,
                _ => break,
            }
        }
        let previous = tx.borrow().clone();
        let next = NodeSet::compute(&nodes.state(), &previous);
        if next == previous {
            continue;
        }
        let set_changed = next.generation != previous.generation;
        let details_changed = details_of(&next) != details_of(&previous);
        tx.send_replace(next);
        if details_changed {
            // The controller outlives this task; a closed channel means shutdown.
            let _ = details.send(());
        }
        if set_changed {
            for svc in services.state() {
                if super::rules::is_load_balancer(&svc) {
                    queue.add(super::view::object_key(&svc));
                }
            }
        }
    }
}

/// Each eligible node's addresses and labels: what a change of, unlike readiness, is
/// announced to providers that follow node details.
type Details<'a> = (
    &'a str,
    &'a [std::net::IpAddr],
    &'a [std::net::IpAddr],
    &'a std::collections::BTreeMap<String, String>,
);

fn details_of(set: &NodeSet) -> Vec<Details<'_>> {
    set.nodes
        .iter()
        .map(|n| {
            (
                n.name.as_str(),
                n.internal_ips.as_slice(),
                n.external_ips.as_slice(),
                &n.labels,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::ObjectMeta;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    fn node(name: &str, ip: &str, excluded: bool) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: excluded.then(|| {
                    [(
                        super::super::rules::EXCLUDE_LABEL.to_string(),
                        "true".to_string(),
                    )]
                    .into()
                }),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                provider_id: Some(format!("portway://{name}")),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.into(),
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn generation_moves_only_with_identities() {
        let a = NodeSet::compute(
            &[node("b", "10.0.0.2", false), node("a", "10.0.0.1", false)],
            &NodeSet::default(),
        );
        assert_eq!(a.generation, 1);
        assert_eq!(
            a.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        // An address change refreshes the view but is not a new node set.
        let b = NodeSet::compute(
            &[node("a", "10.0.0.9", false), node("b", "10.0.0.2", false)],
            &a,
        );
        assert_eq!(b.generation, 1);
        assert_ne!(a, b);
        // Excluding a node is.
        let c = NodeSet::compute(
            &[node("a", "10.0.0.9", true), node("b", "10.0.0.2", false)],
            &b,
        );
        assert_eq!(c.generation, 2);
        assert_eq!(c.nodes.len(), 1);
    }
}
