//! The upstream service controller's decisions, as pure functions.
//!
//! Which Services Portway handles, when a change is worth a provider call
//! (upstream `needsUpdate`), and which nodes may carry load-balancer traffic
//! (upstream `stableNodeSetPredicates`, KEP-3458). Kept free of I/O so the
//! table tests below pin them to the Go rules.

use crate::k8s::{Node, Service};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

pub use crate::names::{
    AUTOSCALER_TAINT, EXCLUDE_LABEL, FINALIZER, OWN_ANNOTATIONS, UNINITIALIZED_TAINT,
};

/// Whether the Service is of `type: LoadBalancer`.
pub fn is_load_balancer(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
}

/// The class a LoadBalancer Service is dispatched by: its own, else the
/// configured default. `None` for any other type.
pub fn effective_class<'a>(svc: &'a Service, default_class: &'a str) -> Option<&'a str> {
    if !is_load_balancer(svc) {
        return None;
    }
    Some(
        svc.spec
            .as_ref()
            .and_then(|s| s.load_balancer_class.as_deref())
            .unwrap_or(default_class),
    )
}

/// Whether the Service carries Portway's (the upstream) cleanup finalizer.
pub fn has_finalizer(svc: &Service) -> bool {
    svc.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether the Service is being deleted (waiting on finalizers).
pub fn is_deleting(svc: &Service) -> bool {
    svc.metadata.deletion_timestamp.is_some()
}

/// A fingerprint of everything that, changed, deserves a new `ensure`
/// (upstream `needsUpdate`): type, ports, source ranges, session affinity,
/// loadBalancerIP, externalIPs, annotations, uid, traffic policy, health
/// check port, IP families; and, unlike upstream, labels, which Portway's
/// providers read (pool `serviceSelector`s, k3s's `lbpool`), the selector
/// (address sharing under `Local` policy needs the same pods), `clusterIPs`
/// and `ipFamilyPolicy` (which families a Service gets). Status,
/// finalizers and the annotations Portway writes itself ([`OWN_ANNOTATIONS`])
/// are left out, so its own writes never re-trigger a provider; so is
/// kubectl's applied copy, which the cache drops ([`crate::trim`]): a write's
/// answer, which still carries it, fingerprints as the cached copy does.
pub fn lb_fingerprint(svc: &Service, class: &str) -> u64 {
    let mut h = DefaultHasher::new();
    class.hash(&mut h);
    svc.metadata.uid.hash(&mut h);
    svc.metadata.labels.hash(&mut h);
    for (k, v) in svc.metadata.annotations.iter().flatten() {
        // kubectl's applied copy changes only with what it copies, and the cache drops it.
        if !OWN_ANNOTATIONS.contains(&k.as_str()) && k != crate::trim::LAST_APPLIED {
            (k, v).hash(&mut h);
        }
    }
    if let Some(spec) = &svc.spec {
        spec.type_.hash(&mut h);
        for p in spec.ports.iter().flatten() {
            p.name.hash(&mut h);
            p.protocol.hash(&mut h);
            p.port.hash(&mut h);
            p.node_port.hash(&mut h);
            p.app_protocol.hash(&mut h);
            serde_json::to_string(&p.target_port)
                .unwrap_or_default()
                .hash(&mut h);
        }
        spec.load_balancer_source_ranges.hash(&mut h);
        spec.session_affinity.hash(&mut h);
        serde_json::to_string(&spec.session_affinity_config)
            .unwrap_or_default()
            .hash(&mut h);
        spec.load_balancer_ip.hash(&mut h);
        spec.external_ips.hash(&mut h);
        spec.external_traffic_policy.hash(&mut h);
        spec.health_check_node_port.hash(&mut h);
        spec.ip_families.hash(&mut h);
        spec.ip_family_policy.hash(&mut h);
        spec.selector.hash(&mut h);
        spec.cluster_ips.hash(&mut h);
    }
    h.finish()
}

/// Whether a node may carry load-balancer traffic (upstream `stableNodeSetPredicates`):
/// not being deleted, not excluded by label, not about to be removed by the cluster
/// autoscaler, and initialized (DESIGN §2). Readiness is deliberately not required
/// (KEP-3458): a flapping node must not reprogram every load balancer.
pub fn node_eligible(node: &Node) -> bool {
    node_counts_for_sync(node) && !has_taint(node, AUTOSCALER_TAINT)
}

/// Whether a node's presence decides when load balancers are updated (upstream
/// `shouldSyncUpdatedNode`): as [`node_eligible`], except that the autoscaler's taint being
/// added is not a reason to update ("We won't update the LBs just because the taint was
/// added"), so connections drain; the next update for another reason leaves the node out.
pub fn node_counts_for_sync(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if let Some(value) = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(EXCLUDE_LABEL))
    {
        // Upstream reads it with strconv.ParseBool: false includes; true and anything
        // unparsable exclude.
        if crate::names::parse_go_bool(value) != Some(false) {
            return false;
        }
    }
    !has_taint(node, UNINITIALIZED_TAINT)
}

fn has_taint(node: &Node, key: &str) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == key))
}

/// The identity the controller diffs node sets by: (name, providerID), as
/// upstream does. Readiness and addresses are not part of it.
pub fn node_identity(node: &Node) -> (String, String) {
    (
        node.metadata.name.clone().unwrap_or_default(),
        node.spec
            .as_ref()
            .and_then(|s| s.provider_id.clone())
            .unwrap_or_default(),
    )
}

/// Every node's own addresses (InternalIP and ExternalIP) with the node's name, eligible
/// or not: what no pool may hand out (the controller's guard and `check-config --cluster`).
pub fn node_addresses(
    nodes: &[std::sync::Arc<Node>],
) -> std::collections::BTreeMap<std::net::IpAddr, String> {
    nodes
        .iter()
        .flat_map(|n| {
            let name = n.metadata.name.clone().unwrap_or_default();
            n.status
                .iter()
                .flat_map(|s| s.addresses.iter().flatten())
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse::<std::net::IpAddr>().ok())
                .map(move |ip| (ip, name.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{ObjectMeta, ServicePort, ServiceSpec, Taint};
    use k8s_openapi::api::core::v1::NodeSpec;

    fn svc(type_: &str, class: Option<&str>) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(Into::into),
                ports: Some(vec![ServicePort {
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn node(labels: &[(&str, &str)], taints: &[&str]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|k| Taint {
                            key: k.to_string(),
                            effect: "NoSchedule".into(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn class_dispatch() {
        let d = "portway.dev/hostport";
        assert_eq!(effective_class(&svc("LoadBalancer", None), d), Some(d));
        assert_eq!(
            effective_class(&svc("LoadBalancer", Some("portway.dev/l2")), d),
            Some("portway.dev/l2")
        );
        assert_eq!(effective_class(&svc("ClusterIP", None), d), None);
        assert_eq!(effective_class(&svc("NodePort", None), d), None);
    }

    #[test]
    fn fingerprint_ignores_status_finalizers_and_own_annotations() {
        let a = svc("LoadBalancer", None);
        let mut b = a.clone();
        b.metadata.finalizers = Some(vec![FINALIZER.into()]);
        b.metadata.resource_version = Some("42".into());
        b.status = Some(Default::default());
        // The speaker's feedback annotation is Portway's own write, not input.
        b.metadata.annotations =
            Some([(crate::names::ANNOUNCED_BY.to_string(), "node-1".to_string())].into());
        assert_eq!(lb_fingerprint(&a, "c"), lb_fingerprint(&b, "c"));
        // kubectl's applied copy: the cache drops it, a write's answer still carries it;
        // were it seen, every finalizer write would look like a user's change.
        let mut answer = b.clone();
        answer.metadata.annotations.get_or_insert_default().insert(
            crate::trim::LAST_APPLIED.to_string(),
            "{\"spec\":{}}".to_string(),
        );
        let mut cached = answer.clone();
        crate::trim::service(&mut cached);
        assert_eq!(lb_fingerprint(&answer, "c"), lb_fingerprint(&cached, "c"));
        assert_eq!(lb_fingerprint(&answer, "c"), lb_fingerprint(&a, "c"));
    }

    #[test]
    fn fingerprint_sees_what_upstream_needs_update_sees() {
        let a = svc("LoadBalancer", None);
        type Change = Box<dyn Fn(&mut Service)>;
        let changes: Vec<Change> = vec![
            Box::new(|s| s.metadata.uid = Some("u2".into())),
            // A pool's serviceSelector and k3s's lbpool read labels.
            Box::new(|s| {
                s.metadata.labels = Some(
                    [(
                        "svccontroller.k3s.cattle.io/lbpool".to_string(),
                        "edge".to_string(),
                    )]
                    .into(),
                )
            }),
            Box::new(|s| {
                s.metadata.annotations = Some([("a".to_string(), "b".to_string())].into())
            }),
            Box::new(|s| s.spec.as_mut().map_or((), |p| p.ports = None)),
            Box::new(|s| {
                s.spec.as_mut().map_or((), |p| {
                    p.load_balancer_source_ranges = Some(vec!["10.0.0.0/8".into()])
                })
            }),
            Box::new(|s| {
                s.spec
                    .as_mut()
                    .map_or((), |p| p.external_traffic_policy = Some("Local".into()))
            }),
            Box::new(|s| {
                s.spec
                    .as_mut()
                    .map_or((), |p| p.load_balancer_ip = Some("1.2.3.4".into()))
            }),
            Box::new(|s| {
                s.spec.as_mut().map_or((), |p| {
                    p.ip_families = Some(vec!["IPv4".into(), "IPv6".into()])
                })
            }),
            Box::new(|s| {
                s.spec
                    .as_mut()
                    .map_or((), |p| p.health_check_node_port = Some(31000))
            }),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut b = a.clone();
            change(&mut b);
            assert_ne!(
                lb_fingerprint(&a, "c"),
                lb_fingerprint(&b, "c"),
                "change {i}"
            );
        }
        assert_ne!(lb_fingerprint(&a, "c"), lb_fingerprint(&a, "d"));
    }

    #[test]
    fn node_eligibility_follows_kep_3458() {
        assert!(node_eligible(&node(&[], &[])));
        for include in ["false", "False", "FALSE", "f", "F", "0"] {
            assert!(
                node_eligible(&node(&[(EXCLUDE_LABEL, include)], &[])),
                "{include}"
            );
        }
        for exclude in ["true", "1", "t", "", "maybe", "fAlSe", " false"] {
            assert!(
                !node_eligible(&node(&[(EXCLUDE_LABEL, exclude)], &[])),
                "{exclude:?}"
            );
        }
        assert!(!node_eligible(&node(&[], &[AUTOSCALER_TAINT])));
        assert!(node_counts_for_sync(&node(&[], &[AUTOSCALER_TAINT])));
        assert!(!node_eligible(&node(&[], &[UNINITIALIZED_TAINT])));
        assert!(node_eligible(&node(
            &[],
            &["node-role.kubernetes.io/control-plane"]
        )));
        let mut deleting = node(&[], &[]);
        deleting.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!node_eligible(&deleting));
    }
}
