//! Which addresses a hostport Service publishes, and which port clashes to report (pure).

use crate::daemonset::{SVCNAME, SVCNAMESPACE};
use k8s_openapi::api::core::v1::Pod;
use portway_provider::{
    IpFamily, LbIngress, LbNode, LbService, LbStatus, ProviderError, ServiceKey,
};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// What status computation needs of an svclb pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// The Service the pod serves (from its labels).
    pub service: ServiceKey,
    /// The node it is bound to, if scheduled.
    pub node: Option<String>,
    /// The node a pending DaemonSet pod is meant for (its node affinity).
    pub target: Option<String>,
    /// Ready condition true and a pod IP assigned.
    pub ready: bool,
    /// (hostPort, protocol) pairs it binds.
    pub host_ports: Vec<(u16, String)>,
}

/// A pending pod of this Service and the Service whose pod holds its port on that node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClashingPod {
    /// The node.
    pub node: String,
    /// The contested port, e.g. `TCP/80`.
    pub port: String,
    /// The Service holding it.
    pub holder: ServiceKey,
}

impl PodView {
    /// The view of a pod, if it carries the svclb labels.
    pub fn of(pod: &Pod) -> Option<PodView> {
        let labels = pod.metadata.labels.as_ref()?;
        let service = ServiceKey::new(
            labels.get(SVCNAMESPACE)?.clone(),
            labels.get(SVCNAME)?.clone(),
        );
        let spec = pod.spec.as_ref()?;
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            && status
                .and_then(|s| s.pod_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty());
        let target = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .and_then(|r| {
                r.node_selector_terms.iter().find_map(|t| {
                    t.match_fields.as_ref()?.iter().find_map(|f| {
                        (f.key == "metadata.name" && f.operator == "In")
                            .then(|| f.values.as_ref().and_then(|v| v.first().cloned()))
                            .flatten()
                    })
                })
            });
        let host_ports = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let hp = u16::try_from(p.host_port?).ok()?;
                Some((hp, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
            })
            .collect();
        Some(PodView {
            service,
            node: spec.node_name.clone().filter(|n| !n.is_empty()),
            target,
            ready,
            host_ports,
        })
    }
}

/// For `Local` policy, the nodes with a ready local endpoint, as k3s counts them: an
/// endpoint backed by a pod whose `ready` condition is explicitly true (an unknown state
/// or a hand-written endpoint does not count); `None` for `Cluster` policy.
pub fn local_nodes(svc: &LbService) -> Option<BTreeSet<String>> {
    (svc.external_traffic_policy == portway_provider::TrafficPolicy::Local).then(|| {
        svc.endpoints
            .iter()
            .filter(|e| e.pod && e.ready == Some(true))
            .filter_map(|e| e.node.clone())
            .collect()
    })
}

/// The status of `svc` from the svclb pods (all of the namespace), the eligible nodes and,
/// for `Local` policy, the nodes with a ready local endpoint. Clashes become warnings.
pub fn compute_status(
    svc: &LbService,
    pods: &[PodView],
    eligible: &[LbNode],
    local_nodes: Option<&BTreeSet<String>>,
) -> (LbStatus, Vec<ClashingPod>) {
    let mut hosting: BTreeSet<&str> = BTreeSet::new();
    for p in pods.iter().filter(|p| p.service == svc.key && p.ready) {
        if let Some(n) = &p.node
            && local_nodes.is_none_or(|l| l.contains(n))
        {
            hosting.insert(n);
        }
    }
    let nodes: Vec<&LbNode> = eligible
        .iter()
        .filter(|n| hosting.contains(n.name.as_str()))
        .collect();
    let any_external = nodes.iter().any(|n| !n.external_ips.is_empty());
    let mut ips: BTreeSet<IpAddr> = BTreeSet::new();
    for n in &nodes {
        let list = if any_external {
            &n.external_ips
        } else {
            &n.internal_ips
        };
        ips.extend(list.iter().copied());
    }
    let families: Vec<IpFamily> = if svc.ip_families.is_empty() {
        vec![IpFamily::V4, IpFamily::V6]
    } else {
        svc.ip_families.clone()
    };
    // Grouped by spec.ipFamilies, numerically inside a family (k3s sorted them as strings).
    let mut ingress = Vec::new();
    for f in &families {
        ingress.extend(
            ips.iter()
                .filter(|ip| IpFamily::of(ip) == *f)
                .map(|ip| LbIngress::vip(*ip)),
        );
    }
    let mut clashes = Vec::new();
    for p in pods
        .iter()
        .filter(|p| p.service == svc.key && p.node.is_none())
    {
        let Some(target) = &p.target else { continue };
        for (port, proto) in &p.host_ports {
            let holder = pods.iter().find(|o| {
                o.service != svc.key
                    && o.node.as_deref() == Some(target.as_str())
                    && o.host_ports
                        .iter()
                        .any(|(hp, pr)| hp == port && pr == proto)
            });
            if let Some(h) = holder {
                clashes.push(ClashingPod {
                    node: target.clone(),
                    port: format!("{proto}/{port}"),
                    holder: h.service.clone(),
                });
            }
        }
    }
    let warnings = clashes
        .iter()
        .map(|c| ProviderError::Conflict {
            what: format!("port {} on node {}", c.port, c.node),
            holder: format!("Service {}/{}", c.holder.namespace, c.holder.name),
        })
        .collect();
    (
        LbStatus {
            ingress,
            warnings,
            notes: Vec::new(),
        },
        clashes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, internal: &str, external: Option<&str>) -> LbNode {
        LbNode {
            name: name.into(),
            internal_ips: vec![internal.parse().expect("ip")],
            external_ips: external
                .map(|e| vec![e.parse().expect("ip")])
                .unwrap_or_default(),
            ready: true,
            ..Default::default()
        }
    }

    fn pod(svc: &str, node: Option<&str>, target: &str, ready: bool) -> PodView {
        PodView {
            service: ServiceKey::new("default", svc),
            node: node.map(String::from),
            target: Some(target.into()),
            ready,
            host_ports: vec![(80, "TCP".into())],
        }
    }

    fn svc(name: &str) -> LbService {
        LbService {
            key: ServiceKey::new("default", name),
            ip_families: vec![IpFamily::V4],
            ..Default::default()
        }
    }

    #[test]
    fn ready_pods_on_eligible_nodes_sorted_numerically() {
        let nodes = [
            node("a", "10.0.0.10", None),
            node("b", "10.0.0.9", None),
            node("c", "10.0.0.11", None),
        ];
        let pods = [
            pod("web", Some("a"), "a", true),
            pod("web", Some("b"), "b", true),
            pod("web", Some("c"), "c", false),
        ];
        let (st, clashes) = compute_status(&svc("web"), &pods, &nodes, None);
        let ips: Vec<String> = st.ingress.iter().map(|i| i.ip.to_string()).collect();
        assert_eq!(ips, vec!["10.0.0.9", "10.0.0.10"]);
        assert!(clashes.is_empty());
        let local: BTreeSet<String> = ["a".to_string()].into();
        let (st, _) = compute_status(&svc("web"), &pods, &nodes, Some(&local));
        assert_eq!(st.ingress.len(), 1);
    }

    #[test]
    fn external_ips_win_when_any_node_has_one() {
        let nodes = [
            node("a", "10.0.0.1", Some("203.0.113.1")),
            node("b", "10.0.0.2", None),
        ];
        let pods = [
            pod("web", Some("a"), "a", true),
            pod("web", Some("b"), "b", true),
        ];
        let (st, _) = compute_status(&svc("web"), &pods, &nodes, None);
        let ips: Vec<String> = st.ingress.iter().map(|i| i.ip.to_string()).collect();
        assert_eq!(ips, vec!["203.0.113.1"]);
    }

    #[test]
    fn clash_names_the_holder() {
        let nodes = [node("a", "10.0.0.1", None)];
        let pods = [
            pod("first", Some("a"), "a", true),
            pod("second", None, "a", false),
        ];
        let (st, clashes) = compute_status(&svc("second"), &pods, &nodes, None);
        assert!(st.ingress.is_empty());
        assert_eq!(clashes[0].holder, ServiceKey::new("default", "first"));
        assert!(
            st.warnings[0].to_string().contains("default/first"),
            "{}",
            st.warnings[0]
        );
    }

    /// Issue 16 #15: as k3s, only endpoints backed by a pod whose `ready` is explicitly
    /// true count under `Local` policy; an unknown state or a hand-written endpoint does not.
    #[test]
    fn local_nodes_need_a_ready_pod() {
        use portway_provider::{LbEndpoint, TrafficPolicy};
        let ep = |node: &str, ready: Option<bool>, pod: bool| LbEndpoint {
            node: Some(node.into()),
            ready,
            pod,
            serving: true,
            ..Default::default()
        };
        let mut svc = LbService {
            external_traffic_policy: TrafficPolicy::Local,
            endpoints: vec![
                ep("a", Some(true), true),
                ep("b", None, true),
                ep("c", Some(true), false),
                ep("d", Some(false), true),
            ],
            ..Default::default()
        };
        assert_eq!(local_nodes(&svc), Some(["a".to_string()].into()));
        svc.external_traffic_policy = TrafficPolicy::Cluster;
        assert_eq!(local_nodes(&svc), None);
    }
}
