//! Which nodes serve each Service, from its EndpointSlices, kept slice by slice.
//!
//! Built once from every slice ([`ReadyNodes::index`]) and then changed one slice at a
//! time ([`ReadyNodes::apply`], [`ReadyNodes::remove`]) as the watch reports them, so an
//! endpoint change costs the slices of its own Service, not every slice in the cluster.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use portway_provider::SERVICE_NAME_LABEL;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A Service (or a slice) by namespace and name.
pub type Key = (String, String);

/// Nodes with an endpoint of the Service that takes traffic, from its EndpointSlices.
///
/// An endpoint counts when it is ready (an absent `ready` means ready, as the API
/// documents) or still serving while it terminates: kube-proxy falls back to
/// serving-terminating endpoints on a node that has no ready one (KEP-1669), so the node
/// still delivers traffic and must keep announcing until the pods stop serving.
///
/// A slice's nodes and a Service's slices are short sorted `Vec`s, not sets: a Service has
/// one slice or a few, and a `BTreeSet`'s first node alone is about 300 bytes for
/// `String`s and 550 for keys, megabytes at ten thousand Services (issue 21's RSS).
#[derive(Default)]
pub struct ReadyNodes {
    /// The union over the Service's slices.
    by_svc: HashMap<Key, BTreeSet<String>>,
    /// Each slice's Service and its nodes (sorted, each once).
    slices: HashMap<Key, (Key, Vec<String>)>,
    /// Each Service's slices (each once).
    of_svc: HashMap<Key, Vec<Key>>,
}

impl ReadyNodes {
    /// Reads every slice once.
    pub fn index(slices: &[Arc<EndpointSlice>]) -> Self {
        let mut out = Self::default();
        for s in slices {
            out.apply(s);
        }
        out
    }

    /// Takes a new or changed slice in; returns the Services whose nodes may have changed
    /// (the slice's, and the one it named before if its label changed).
    pub fn apply(&mut self, slice: &EndpointSlice) -> Vec<Key> {
        let mut touched = self.remove(slice);
        let (Some(ns), Some(svc)) = (slice.namespace(), slice.labels().get(SERVICE_NAME_LABEL))
        else {
            return touched;
        };
        let svc = (ns.clone(), svc.clone());
        let mut nodes: Vec<String> = slice
            .endpoints
            .iter()
            .filter(|e| {
                let c = e.conditions.as_ref();
                c.and_then(|c| c.ready).unwrap_or(true) || c.and_then(|c| c.serving) == Some(true)
            })
            .filter_map(|e| e.node_name.clone())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes.shrink_to_fit();
        let key = (ns, slice.name_any());
        // `remove` above took the slice out of its Service's list: it is not there now.
        self.of_svc
            .entry(svc.clone())
            .or_default()
            .push(key.clone());
        self.slices.insert(key, (svc.clone(), nodes));
        self.recompute(&svc);
        if !touched.contains(&svc) {
            touched.push(svc);
        }
        touched
    }

    /// Forgets a deleted slice; returns the Service it belonged to.
    pub fn remove(&mut self, slice: &EndpointSlice) -> Vec<Key> {
        let key = (slice.namespace().unwrap_or_default(), slice.name_any());
        let Some((svc, _)) = self.slices.remove(&key) else {
            return vec![];
        };
        if let Some(list) = self.of_svc.get_mut(&svc) {
            list.retain(|k| *k != key);
            if list.is_empty() {
                self.of_svc.remove(&svc);
            }
        }
        self.recompute(&svc);
        vec![svc]
    }

    fn recompute(&mut self, svc: &Key) {
        let nodes: BTreeSet<String> = self
            .of_svc
            .get(svc)
            .into_iter()
            .flatten()
            .filter_map(|k| self.slices.get(k))
            .flat_map(|(_, n)| n.iter().cloned())
            .collect();
        if nodes.is_empty() {
            self.by_svc.remove(svc);
        } else {
            self.by_svc.insert(svc.clone(), nodes);
        }
    }

    /// The nodes with a ready or serving endpoint of `svc`.
    pub fn of(&self, svc: &Service) -> &BTreeSet<String> {
        static NONE: BTreeSet<String> = BTreeSet::new();
        let key = (svc.namespace().unwrap_or_default(), svc.name_any());
        self.by_svc.get(&key).unwrap_or(&NONE)
    }
}

/// The store's reference for a Service's key (the loop and the annotation keeper look
/// Services up by it).
pub fn store_ref(key: &Key) -> kube::runtime::reflector::ObjectRef<Service> {
    kube::runtime::reflector::ObjectRef::new(&key.1).within(&key.0)
}

/// A Service's key.
pub fn key_of(svc: &Service) -> Key {
    (svc.namespace().unwrap_or_default(), svc.name_any())
}
