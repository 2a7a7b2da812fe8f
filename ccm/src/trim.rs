//! What the controllers' caches drop from each object before keeping it, shared by the
//! service controller and the node agent.
//!
//! Both cache every Node (and the agent every Service) of the cluster, so what they keep
//! per object is multiplied by the cluster's size. They read a Node's name, labels, taints,
//! provider ID, addresses and conditions, and a Service's spec, status and the
//! annotations Portway and its providers understand. On a real cluster the rest is most of
//! each object: kubelet reports up to 50 images with every name and digest, and kubectl's
//! copy of the applied object is as large as the Service itself.

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::ObjectMeta;

/// kubectl's copy of the last applied object: as large as the object, never read. The
/// service controller's fingerprint skips it too, so an object trimmed here and the same
/// object as a write returns it fingerprint alike.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The metadata nobody reads: managed fields and kubectl's applied copy.
pub fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            m.annotations = None;
        }
    }
}

/// Drops the Node's image list, daemon endpoints, system info and volumes; labels,
/// taints, addresses and conditions stay.
pub fn node(n: &mut Node) {
    meta(&mut n.metadata);
    if let Some(st) = n.status.as_mut() {
        st.images = None;
        st.node_info = None;
        st.daemon_endpoints = None;
        st.volumes_attached = None;
        st.volumes_in_use = None;
    }
}

/// Services are read whole (spec, status, annotations) but for the metadata nobody reads.
pub fn service(s: &mut Service) {
    meta(&mut s.metadata);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_trimmed_node_keeps_what_the_controllers_read() {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": {"a": "b"},
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "managedFields": [{"manager": "kubelet"}]},
            "spec": {"providerID": "portway://n1",
                "taints": [{"key": "node.cloudprovider.kubernetes.io/uninitialized", "effect": "NoSchedule"}]},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "images": [{"names": ["registry/x:1"], "sizeBytes": 1}],
                "nodeInfo": {"architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                    "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                    "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}}
        }))
        .expect("node");
        let kept = n.clone();
        node(&mut n);
        assert_eq!(n.metadata.labels, kept.metadata.labels);
        assert_eq!(n.spec, kept.spec, "provider ID and taints");
        let (st, was) = (
            n.status.as_ref().expect("status"),
            kept.status.expect("status"),
        );
        assert_eq!(st.addresses, was.addresses);
        assert_eq!(st.conditions, was.conditions);
        assert!(st.images.is_none() && st.node_info.is_none());
        assert!(n.metadata.managed_fields.is_none());
        let a = n.metadata.annotations.as_ref().expect("annotations");
        assert!(!a.contains_key(LAST_APPLIED) && a.contains_key("keep"));
    }

    #[test]
    fn a_service_keeps_its_spec_status_and_other_annotations() {
        let mut s: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default",
                "annotations": {LAST_APPLIED: "{\"spec\":{}}"}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}
        }))
        .expect("service");
        let kept = s.clone();
        service(&mut s);
        assert_eq!(s.spec, kept.spec);
        assert!(
            s.metadata.annotations.is_none(),
            "an emptied map is dropped, not kept as an empty allocation"
        );
    }
}
