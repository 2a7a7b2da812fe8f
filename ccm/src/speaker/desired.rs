//! What this node should announce, from the cluster state (pure, no IO).
//!
//! L2: every l2-class Service address with the nodes that may own it (the speakers elect
//! one owner among them). BGP: the host routes of the bgp-class addresses this node may
//! serve — all of them while it is eligible for Cluster policy, only those with a ready
//! local endpoint for Local policy — with the attributes of the advertisement of the pool
//! the address came from.

use crate::service::rules::{effective_class, is_load_balancer, node_eligible};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use portway_bgp::BgpConfig;
use portway_bgp::route::Routes;
use portway_l2::{NodeInput, VipInput};
use portway_provider::TrafficPolicy;
use portway_provider::ipam::{AddrRange, PoolConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The l2 class.
pub const L2: &str = "portway.dev/l2";
/// The bgp class.
pub const BGP: &str = "portway.dev/bgp";

/// The published addresses of a Service.
pub fn status_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

fn policy(svc: &Service) -> TrafficPolicy {
    match svc
        .spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
    {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    }
}

/// Nodes with a ready endpoint of the Service, from its EndpointSlices.
pub fn ready_nodes(svc: &Service, slices: &[Arc<EndpointSlice>]) -> BTreeSet<String> {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    slices
        .iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get("kubernetes.io/service-name") == Some(&name)
        })
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

fn of_class<'a>(
    services: &'a [Arc<Service>],
    class: &'a str,
    default_class: &'a str,
) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
    services.iter().filter(move |s| {
        is_load_balancer(s)
            && s.metadata.deletion_timestamp.is_none()
            && effective_class(s, default_class) == Some(class)
    })
}

/// The l2 addresses to elect owners for.
pub fn vip_inputs(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    default_class: &str,
) -> Vec<VipInput> {
    let mut out = Vec::new();
    for svc in of_class(services, L2, default_class) {
        let ready = ready_nodes(svc, slices);
        for ip in status_ips(svc) {
            out.push(VipInput {
                ip,
                traffic_policy: policy(svc),
                ready_nodes: ready.clone(),
            });
        }
    }
    out
}

/// The eligible nodes as the l2 speaker sees them (labels, InternalIPs first).
pub fn node_inputs(nodes: &[Arc<Node>]) -> BTreeMap<String, NodeInput> {
    nodes
        .iter()
        .filter(|n| node_eligible(n))
        .map(|n| {
            let addrs = node_addrs(n);
            (
                n.name_any(),
                NodeInput {
                    labels: n.labels().clone(),
                    addrs,
                },
            )
        })
        .collect()
}

/// A node's addresses: InternalIPs (IPv4 first), then ExternalIPs.
pub fn node_addrs(n: &Node) -> Vec<IpAddr> {
    let addrs = n
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .unwrap_or_default();
    let mut internal: Vec<IpAddr> = addrs
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    internal.sort_by_key(|ip| ip.is_ipv6());
    internal.extend(
        addrs
            .iter()
            .filter(|a| a.type_ == "ExternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok()),
    );
    internal
}

/// The routes this node advertises over BGP.
pub fn bgp_routes(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    me: &Node,
    default_class: &str,
    pools: &[PoolConfig],
    bgp: &BgpConfig,
) -> Routes {
    let mut routes = Routes::new();
    if !node_eligible(me) {
        return routes;
    }
    let name = me.name_any();
    for svc in of_class(services, BGP, default_class) {
        if policy(svc) == TrafficPolicy::Local && !ready_nodes(svc, slices).contains(&name) {
            continue;
        }
        for ip in status_ips(svc) {
            let Some(pool) = pools.iter().find(|p| {
                p.addresses
                    .iter()
                    .filter_map(|a| AddrRange::parse(a).ok())
                    .any(|r| r.contains(ip))
            }) else {
                continue;
            };
            for adv in bgp
                .advertisements
                .iter()
                .filter(|a| a.pools.contains(&pool.name))
            {
                routes.insert(adv.prefix_for(ip), adv.route_attrs());
            }
        }
    }
    routes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(name: &str, class: &str, ip: &str, local: bool) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "loadBalancerClass": class,
                    "externalTrafficPolicy": if local { "Local" } else { "Cluster" }},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}
            }))
            .expect("svc"),
        )
    }

    fn node(name: &str, ready: bool) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                    "addresses": [{"type": "InternalIP", "address": "fd00::1"}, {"type": "InternalIP", "address": "10.0.0.1"}]}
            }))
            .expect("node"),
        )
    }

    fn slice(svc: &str, node: &str) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": format!("{svc}-x"), "namespace": "default",
                    "labels": {"kubernetes.io/service-name": svc}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.42.0.1"], "conditions": {"ready": true}, "nodeName": node}]
            }))
            .expect("slice"),
        )
    }

    fn config() -> (Vec<PoolConfig>, BgpConfig) {
        let pools = portway_provider::ipam::parse_pools(&[
            json!({"name": "dc", "addresses": ["198.51.100.0/28"]}),
            json!({"name": "other", "addresses": ["203.0.113.0/28"]}),
        ])
        .expect("pools");
        let bgp = BgpConfig::from_value(json!({"localASN": 64512,
            "peers": [{"address": "10.0.0.254", "asn": 64500}],
            "advertisements": [{"pools": ["dc"], "communities": ["64512:100"]}]}))
        .expect("bgp");
        (pools, bgp)
    }

    #[test]
    fn l2_inputs_only_for_l2_services_with_addresses() {
        let services = vec![
            svc("a", L2, "192.168.1.10", false),
            svc("b", BGP, "198.51.100.1", false),
            svc("c", L2, "192.168.1.11", true),
        ];
        let slices = vec![slice("c", "n2")];
        let vips = vip_inputs(&services, &slices, "portway.dev/hostport");
        assert_eq!(vips.len(), 2);
        assert_eq!(vips[1].traffic_policy, TrafficPolicy::Local);
        assert_eq!(vips[1].ready_nodes, ["n2".to_string()].into());
    }

    #[test]
    fn bgp_routes_follow_pool_policy_and_eligibility() {
        let (pools, bgp) = config();
        let services = vec![
            svc("a", BGP, "198.51.100.1", false),
            svc("b", BGP, "198.51.100.2", true),
            svc("c", BGP, "203.0.113.5", false),
            svc("d", L2, "198.51.100.3", false),
        ];
        let me = node("n1", true);
        let routes = bgp_routes(&services, &[], &me, "x", &pools, &bgp);
        let nets: Vec<String> = routes.keys().map(ToString::to_string).collect();
        assert_eq!(
            nets,
            vec!["198.51.100.1/32"],
            "Local without endpoint, unadvertised pool and l2 are skipped"
        );
        let routes = bgp_routes(&services, &[slice("b", "n1")], &me, "x", &pools, &bgp);
        assert_eq!(routes.len(), 2);
        // A node excluded from load balancers advertises nothing.
        let mut excluded = (*node("n1", true)).clone();
        excluded.metadata.labels = Some(
            [(
                "node.kubernetes.io/exclude-from-external-load-balancers".to_string(),
                String::new(),
            )]
            .into(),
        );
        assert!(bgp_routes(&services, &[], &excluded, "x", &pools, &bgp).is_empty());
    }

    #[test]
    fn node_addresses_prefer_ipv4() {
        let addrs = node_addrs(&node("n1", true));
        assert_eq!(addrs[0].to_string(), "10.0.0.1");
    }
}
