//! What the node agent's caches drop from each object before keeping it.
//!
//! The speaker runs on every node and caches every Service, every EndpointSlice and every
//! Node of the cluster, so what it keeps per object is multiplied by the cluster's size on
//! each node (10,000 Services: 10,000 slices). It reads only a few fields of each: a
//! slice's Service label and its endpoints' node and conditions; a Node's labels, addresses
//! and conditions; a Service's spec, status and Portway's annotations. The rest (managed
//! fields, pod references and addresses, the Node's image list, kubectl's copy of the
//! applied object) is dropped as it arrives, before the store keeps it. Nodes and Services
//! are trimmed as the service controller trims them ([`crate::trim`]); slices here.

use crate::trim::meta;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Keeps what [`super::ready::ReadyNodes`] reads: the Service label, and each endpoint's
/// node and conditions.
pub(super) fn slice(s: &mut EndpointSlice) {
    meta(&mut s.metadata);
    s.metadata.owner_references = None;
    s.metadata.annotations = None;
    s.ports = None;
    for e in &mut s.endpoints {
        e.addresses = Vec::new();
        e.target_ref = None;
        e.hints = None;
        e.hostname = None;
        e.deprecated_topology = None;
        e.zone = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trim::{LAST_APPLIED, node};
    use k8s_openapi::api::core::v1::{Node, Service};
    use serde_json::json;

    #[test]
    fn a_trimmed_slice_keeps_what_the_ready_index_reads() {
        let mut s: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "x"},
                "managedFields": [{"manager": "kcm"}]},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.42.0.1"], "conditions": {"ready": true}, "nodeName": "n1",
                 "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}, "zone": "a"},
                {"addresses": ["10.42.0.2"], "conditions": {"ready": false, "serving": true, "terminating": true},
                 "nodeName": "n2"},
                {"addresses": ["10.42.0.3"], "conditions": {"ready": false}, "nodeName": "n3"}
            ],
            "ports": [{"port": 80, "protocol": "TCP"}]
        }))
        .expect("slice");
        let before = crate::speaker::ready::ReadyNodes::index(&[std::sync::Arc::new(s.clone())]);
        slice(&mut s);
        let after = crate::speaker::ready::ReadyNodes::index(&[std::sync::Arc::new(s.clone())]);
        let svc: Service =
            serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"}}))
                .expect("service");
        assert_eq!(before.of(&svc), after.of(&svc));
        assert_eq!(after.of(&svc).len(), 2);
        assert!(s.metadata.managed_fields.is_none() && s.ports.is_none());
        assert!(
            s.endpoints
                .iter()
                .all(|e| e.target_ref.is_none() && e.addresses.is_empty())
        );
    }

    #[test]
    fn a_trimmed_node_keeps_labels_addresses_and_conditions() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{}", "keep": "me"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry/x:1"], "sizeBytes": 1}]}
        }))
        .expect("node");
        node(&mut n);
        assert_eq!(crate::speaker::desired::node_addrs(&n).len(), 1);
        assert!(crate::speaker::desired::speaker_eligible(&n));
        let st = n.status.as_ref().expect("status");
        assert!(st.images.is_none() && st.conditions.is_some());
        let a = n.metadata.annotations.as_ref().expect("annotations");
        assert!(!a.contains_key(LAST_APPLIED) && a.contains_key("keep"));
    }
}
