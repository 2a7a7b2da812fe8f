//! The controller's one EndpointSlice cache: providers that need a Service's endpoints
//! (hostport under `Local` policy, pool members that are pods) get them in
//! [`LbService::endpoints`] instead of watching EndpointSlices themselves, and are called
//! again, quietly, when they change.
//!
//! ```text
//!  EndpointSlice watch ──► store ──► endpoints_of(ns, service) ──► LbService.endpoints
//!          └─ touched slice of service S ──► digest(S) changed? ──► forced reconcile of S
//! ```

use crate::k8s::{ObjectRef, ResourceExt, Service, Store};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use portway_provider::{LbEndpoint, LbEndpointPort, LbService, Protocol, SERVICE_NAME_LABEL};
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The endpoints of `namespace/service`, from every slice labelled with its name, in a
/// stable order.
pub fn endpoints_of(
    slices: &Store<EndpointSlice>,
    namespace: &str,
    service: &str,
) -> Vec<LbEndpoint> {
    let mut mine: Vec<_> = slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(namespace)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(service)
        })
        .collect();
    mine.sort_by_key(|s| s.name_any());
    let mut out = Vec::new();
    for slice in mine {
        let ports: Vec<LbEndpointPort> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(LbEndpointPort {
                    name: p.name.clone().unwrap_or_default(),
                    port: u16::try_from(p.port?).ok()?,
                    protocol: match p.protocol.as_deref() {
                        Some("UDP") => Some(Protocol::Udp),
                        Some("SCTP") => Some(Protocol::Sctp),
                        Some("TCP") | None => Some(Protocol::Tcp),
                        Some(_) => None,
                    },
                })
            })
            .collect();
        for e in &slice.endpoints {
            let cond = e.conditions.clone().unwrap_or_default();
            out.push(LbEndpoint {
                node: e.node_name.clone(),
                addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                ready: cond.ready,
                // The API: an unknown serving state is read as the ready state.
                serving: cond.serving.or(cond.ready).unwrap_or(true),
                terminating: cond.terminating.unwrap_or(false),
                pod: e
                    .target_ref
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("Pod")),
                ports: ports.clone(),
            });
        }
    }
    out
}

/// Remembers a digest of each Service's endpoints, so a slice event that changed nothing
/// a provider reads (a label, a hint, a resync) calls no provider.
#[derive(Default)]
pub struct Digests {
    seen: HashMap<ObjectRef<Service>, u64>,
}

impl Digests {
    /// Whether the endpoints of `key` differ from the last time they were looked at.
    pub fn changed(&mut self, key: &ObjectRef<Service>, endpoints: &[LbEndpoint]) -> bool {
        let mut h = DefaultHasher::new();
        endpoints.hash(&mut h);
        let digest = h.finish();
        self.seen.insert(key.clone(), digest) != Some(digest)
    }

    /// Forgets a Service that is gone.
    pub fn forget(&mut self, key: &ObjectRef<Service>) {
        self.seen.remove(key);
    }
}

/// Fills `view.endpoints` when its provider reads them.
pub fn fill(view: &mut LbService, slices: Option<&Store<EndpointSlice>>, wanted: bool) {
    if let (Some(store), true) = (slices, wanted) {
        view.endpoints = endpoints_of(store, &view.key.namespace, &view.key.name);
    }
}
