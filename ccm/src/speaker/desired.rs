//! What this node should announce, from the cluster state (pure, no IO).
//!
//! L2: every l2-class Service address with the nodes that may own it (the speakers elect
//! one owner among them). BGP: the host routes of the bgp-class addresses this node may
//! serve — all of them while it is eligible for Cluster policy, only those with a ready
//! local endpoint for Local policy — with the attributes of the advertisement of the pool
//! the address came from.
//!
//! Node eligibility is the controller's rule ([`node_eligible`]: not deleting, not excluded
//! by label, initialized) plus two conditions only a node agent cares about, see
//! [`speaker_eligible`].

use crate::providers::{BGP, L2};
use crate::service::rules::{effective_class, is_load_balancer, node_eligible};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::ResourceExt;
use portway_bgp::BgpConfig;
use portway_bgp::route::{RouteAttrs, RouteSet};
use portway_l2::{NodeInput, VipInput};
use portway_provider::TrafficPolicy;
use portway_provider::ipam::{AddrRange, PoolConfig};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

pub use crate::service::view::status_ips;
use crate::service::view::traffic_policy as policy;

/// Whether a node may announce: [`node_eligible`], and neither `Ready=False` nor
/// `NetworkUnavailable=True`.
///
/// `Ready=False` is the kubelet itself saying the node cannot run pods (container runtime
/// or CNI not ready) — typically a booting node whose host-network speaker starts before
/// the data path is up, which would otherwise attract traffic it drops. `Ready=Unknown`
/// (the kubelet stopped reaching the API) is deliberately not excluded: the gossip
/// membership and the BGP session know better whether the node still forwards, and a
/// partition from the API must not move every address (KEP-3458). `NetworkUnavailable`
/// is MetalLB's rule too: the node's pod network routes are not set up.
pub fn speaker_eligible(node: &Node) -> bool {
    let condition = |kind: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind))
            .map(|c| c.status.as_str())
    };
    node_eligible(node)
        && condition("Ready") != Some("False")
        && condition("NetworkUnavailable") != Some("True")
}

pub use super::ready::ReadyNodes;

/// Whether `svc` is a LoadBalancer of `class` that is not being deleted.
fn is_class(svc: &Service, class: &str, default_class: &str) -> bool {
    is_load_balancer(svc)
        && svc.metadata.deletion_timestamp.is_none()
        && effective_class(svc, default_class) == Some(class)
}

/// Whether `svc` is an l2 Service holding an address `known` does not have: a new
/// address, which the loop places at once instead of at the end of its pass window
/// (`pace.rs`), since its owner still has to probe it before answering.
pub fn brings_new_l2_address(
    svc: &Service,
    default_class: &str,
    known: impl Fn(&IpAddr) -> bool,
) -> bool {
    is_class(svc, L2, default_class) && status_ips(svc).iter().any(|ip| !known(ip))
}

fn of_class<'a>(
    services: &'a [Arc<Service>],
    class: &'a str,
    default_class: &'a str,
) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
    services
        .iter()
        .filter(move |s| is_class(s, class, default_class))
}

/// The l2 addresses to elect owners for.
pub fn vip_inputs(
    services: &[Arc<Service>],
    ready: &ReadyNodes,
    default_class: &str,
) -> Vec<VipInput> {
    let mut out = Vec::new();
    for svc in of_class(services, L2, default_class) {
        for ip in status_ips(svc) {
            out.push(VipInput {
                ip,
                traffic_policy: policy(svc),
                ready_nodes: ready.of(svc).clone(),
                scope: None,
            });
        }
    }
    // In address order, so an unchanged cluster gives an equal list (the store's order is
    // not stable) and the speaker skips the re-election.
    out.sort_by_key(|v| v.ip);
    out
}

/// The eligible nodes as the l2 speaker sees them (labels, InternalIPs first).
pub fn node_inputs(nodes: &[Arc<Node>]) -> BTreeMap<String, NodeInput> {
    nodes
        .iter()
        .filter(|n| speaker_eligible(n))
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
    ready: &ReadyNodes,
    me: &Node,
    default_class: &str,
    pools: &[PoolConfig],
    bgp: &BgpConfig,
) -> RouteSet {
    let rules = RouteRules::new(me, default_class, pools, bgp);
    let mut routes = RouteSet::default();
    for svc in services {
        for (prefix, attrs) in rules.of(svc, ready) {
            routes.add(prefix, attrs);
        }
    }
    routes
}

/// What decides one Service's routes on this node, prepared once per node and
/// configuration, so one changed Service costs its own routes only.
pub struct RouteRules<'a> {
    name: String,
    eligible: bool,
    default_class: &'a str,
    ranges: Vec<(&'a str, Vec<AddrRange>)>,
    bgp: &'a BgpConfig,
}

impl<'a> RouteRules<'a> {
    /// The rules for node `me`.
    pub fn new(
        me: &Node,
        default_class: &'a str,
        pools: &'a [PoolConfig],
        bgp: &'a BgpConfig,
    ) -> Self {
        // Parsed once (the configuration was validated at start).
        let ranges = pools
            .iter()
            .map(|p| {
                let parsed = p.addresses.iter().filter_map(|a| AddrRange::parse(a).ok());
                (p.name.as_str(), parsed.collect())
            })
            .collect();
        RouteRules {
            name: me.name_any(),
            eligible: speaker_eligible(me),
            default_class,
            ranges,
            bgp,
        }
    }

    /// The routes of one Service (none unless it is a bgp-class LoadBalancer this node
    /// may serve), each prefix with the attributes of every advertisement of its pool.
    pub fn of(&self, svc: &Service, ready: &ReadyNodes) -> Vec<(IpNet, RouteAttrs)> {
        let mut out = Vec::new();
        if !self.eligible || !is_class(svc, BGP, self.default_class) {
            return out;
        }
        // No ready endpoint anywhere: nothing would answer, so no router is sent there
        // (MetalLB withdraws too, and the l2 speaker does not announce such a Service).
        let serving = ready.of(svc);
        if serving.is_empty()
            || (policy(svc) == TrafficPolicy::Local && !serving.contains(&self.name))
        {
            return out;
        }
        for ip in status_ips(svc) {
            let Some((pool, _)) = self
                .ranges
                .iter()
                .find(|(_, rs)| rs.iter().any(|r| r.contains(ip)))
            else {
                continue;
            };
            for adv in self
                .bgp
                .advertisements
                .iter()
                .filter(|a| a.pools.iter().any(|p| p == pool))
            {
                out.push((adv.prefix_for(ip), adv.route_attrs()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::{Value, json};

    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).expect("fixture"))
    }

    /// A LoadBalancer Service; `class` "" leaves `loadBalancerClass` unset.
    fn svc_ips(name: &str, class: &str, ips: &[&str], local: bool) -> Arc<Service> {
        let mut spec = json!({"type": "LoadBalancer",
            "externalTrafficPolicy": if local { "Local" } else { "Cluster" }});
        if !class.is_empty() {
            spec["loadBalancerClass"] = json!(class);
        }
        let ingress: Vec<Value> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
        obj(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress}}
        }))
    }

    fn svc(name: &str, class: &str, ip: &str, local: bool) -> Arc<Service> {
        svc_ips(name, class, &[ip], local)
    }

    fn node_with(name: &str, conditions: Value, labels: Value) -> Arc<Node> {
        obj(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"conditions": conditions,
                "addresses": [{"type": "ExternalIP", "address": "203.0.113.9"},
                    {"type": "InternalIP", "address": "fd00::1"},
                    {"type": "InternalIP", "address": "10.0.0.1"},
                    {"type": "Hostname", "address": name}]}
        }))
    }

    fn node(name: &str, ready: bool) -> Arc<Node> {
        let status = if ready { "True" } else { "False" };
        node_with(
            name,
            json!([{"type": "Ready", "status": status}]),
            json!({}),
        )
    }

    /// An EndpointSlice of `svc` with one endpoint per `(node, ready, serving)`.
    fn slice_of(
        svc: &str,
        ns: &str,
        eps: &[(&str, Option<bool>, Option<bool>)],
    ) -> Arc<EndpointSlice> {
        let endpoints: Vec<Value> = eps
            .iter()
            .enumerate()
            .map(|(i, (node, ready, serving))| {
                let mut c = json!({});
                if let Some(r) = ready {
                    c["ready"] = json!(r);
                }
                if let Some(s) = serving {
                    c["serving"] = json!(s);
                    c["terminating"] = json!(!ready.unwrap_or(true));
                }
                json!({"addresses": [format!("10.42.0.{}", i + 1)], "conditions": c, "nodeName": node})
            })
            .collect();
        obj(json!({
            "metadata": {"name": format!("{svc}-{}", eps.first().map_or("none", |e| e.0)), "namespace": ns,
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": endpoints
        }))
    }

    fn slice(svc: &str, node: &str) -> Arc<EndpointSlice> {
        slice_of(svc, "default", &[(node, Some(true), None)])
    }

    /// A ready endpoint for each Service, on a node of its own (n9).
    fn serving(names: &[&str]) -> Vec<Arc<EndpointSlice>> {
        names.iter().map(|n| slice(n, "n9")).collect()
    }

    fn config() -> (Vec<PoolConfig>, BgpConfig) {
        let pools = portway_provider::ipam::parse_pools(&[
            json!({"name": "dc", "addresses": ["198.51.100.0/28", "2001:db8:64::/120"]}),
            json!({"name": "other", "addresses": ["203.0.113.0/28"]}),
            json!({"name": "agg", "addresses": ["192.0.2.0/24"]}),
        ])
        .expect("pools");
        let bgp = BgpConfig::from_value(json!({"localASN": 64512,
        "peers": [{"address": "10.0.0.254", "asn": 64500}],
        "advertisements": [
            {"pools": ["dc"], "communities": ["64512:100"]},
            {"pools": ["agg"], "aggregationLength": 24, "largeCommunities": ["64512:1:2"]}
        ]}))
        .expect("bgp");
        (pools, bgp)
    }

    fn nets(routes: &RouteSet) -> Vec<String> {
        routes.prefixes().map(ToString::to_string).collect()
    }

    #[test]
    fn l2_inputs_only_for_l2_services_with_addresses() {
        let services = vec![
            svc("a", L2, "192.168.1.10", false),
            svc("b", BGP, "198.51.100.1", false),
            svc("c", L2, "192.168.1.11", true),
        ];
        let slices = vec![slice("c", "n2")];
        let vips = vip_inputs(
            &services,
            &ReadyNodes::index(&slices),
            "portway.dev/hostport",
        );
        assert_eq!(vips.len(), 2);
        assert_eq!(vips[0].traffic_policy, TrafficPolicy::Cluster);
        assert!(vips[0].ready_nodes.is_empty(), "a has no endpoints");
        assert_eq!(vips[1].traffic_policy, TrafficPolicy::Local);
        assert_eq!(vips[1].ready_nodes, ["n2".to_string()].into());
    }

    #[test]
    fn services_without_class_follow_the_default_class() {
        let services = vec![svc("plain", "", "192.168.1.10", false)];
        assert_eq!(vip_inputs(&services, &ReadyNodes::index(&[]), L2).len(), 1);
        assert!(vip_inputs(&services, &ReadyNodes::index(&[]), BGP).is_empty());
        let (pools, bgp) = config();
        let me = node("n1", true);
        let plain = vec![svc("plain", "", "198.51.100.4", false)];
        assert_eq!(
            nets(&bgp_routes(
                &plain,
                &ReadyNodes::index(&serving(&["plain"])),
                &me,
                BGP,
                &pools,
                &bgp
            )),
            ["198.51.100.4/32"]
        );
        assert!(
            bgp_routes(
                &plain,
                &ReadyNodes::index(&serving(&["plain"])),
                &me,
                L2,
                &pools,
                &bgp
            )
            .is_empty()
        );
    }

    #[test]
    fn other_types_deleting_and_unaddressed_services_are_skipped() {
        let mut cluster_ip = (*svc("ci", L2, "192.168.1.10", false)).clone();
        if let Some(spec) = cluster_ip.spec.as_mut() {
            spec.type_ = Some("ClusterIP".into());
        }
        let deleting = obj::<Service>(json!({
            "metadata": {"name": "del", "namespace": "default",
                "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["x"]},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": L2},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.11"}]}}}));
        let pending = obj::<Service>(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": L2}}));
        let hostname = obj::<Service>(json!({"metadata": {"name": "h", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": L2},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example"}, {"ip": "not-an-ip"}]}}}));
        let services = vec![Arc::new(cluster_ip), deleting, pending, hostname];
        assert!(vip_inputs(&services, &ReadyNodes::index(&[]), L2).is_empty());
    }

    #[test]
    fn every_ingress_address_is_a_vip_dual_stack_included() {
        let services = vec![svc_ips("ds", L2, &["192.168.1.10", "fd00:1::10"], false)];
        let vips = vip_inputs(&services, &ReadyNodes::index(&[]), "x");
        let ips: Vec<String> = vips.iter().map(|v| v.ip.to_string()).collect();
        assert_eq!(ips, ["192.168.1.10", "fd00:1::10"]);
    }

    #[test]
    fn ready_nodes_reads_every_slice_of_the_service_and_only_its_own() {
        let s = svc("web", L2, "192.168.1.10", true);
        let slices = vec![
            slice_of(
                "web",
                "default",
                &[("n1", Some(true), None), ("n2", None, None)],
            ),
            slice_of(
                "web",
                "default",
                &[("n3", Some(false), None), ("n4", Some(false), Some(true))],
            ),
            slice_of("web", "default", &[("n5", Some(false), Some(false))]),
            // Same name in another namespace, and another Service here.
            slice_of("web", "other", &[("n6", Some(true), None)]),
            slice_of("api", "default", &[("n7", Some(true), None)]),
        ];
        let nodes: Vec<String> = ReadyNodes::index(&slices).of(&s).iter().cloned().collect();
        // n2: ready unset means ready; n4: terminating but serving; n3, n5: neither.
        assert_eq!(nodes, ["n1", "n2", "n4"]);
        // An endpoint without nodeName cannot make any node eligible.
        let anon: Arc<EndpointSlice> = obj(json!({
            "metadata": {"name": "web-anon", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.42.9.9"], "conditions": {"ready": true}}]}));
        assert!(ReadyNodes::index(&[anon]).of(&s).is_empty());
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
        let others = serving(&["a", "c", "d"]);
        let routes = bgp_routes(
            &services,
            &ReadyNodes::index(&others),
            &me,
            "x",
            &pools,
            &bgp,
        );
        assert_eq!(
            nets(&routes),
            vec!["198.51.100.1/32"],
            "Local without endpoint, unadvertised pool and l2 are skipped"
        );
        // A Cluster Service with no ready endpoint anywhere is not advertised.
        assert!(bgp_routes(&services, &ReadyNodes::index(&[]), &me, "x", &pools, &bgp).is_empty());
        let peer = "10.0.0.254".parse().expect("ip");
        let routes_to_peer = routes.for_peer(peer);
        let attrs = routes_to_peer.values().next().expect("one route");
        assert_eq!(attrs.communities.len(), 1, "the advertisement's community");
        // A ready endpoint on another node does not make this node serve a Local Service.
        let with = |s: Arc<EndpointSlice>| -> Vec<Arc<EndpointSlice>> {
            others.iter().cloned().chain([s]).collect()
        };
        let elsewhere = bgp_routes(
            &services,
            &ReadyNodes::index(&with(slice("b", "n2"))),
            &me,
            "x",
            &pools,
            &bgp,
        );
        assert_eq!(elsewhere.len(), 1);
        let here = bgp_routes(
            &services,
            &ReadyNodes::index(&with(slice("b", "n1"))),
            &me,
            "x",
            &pools,
            &bgp,
        );
        assert_eq!(nets(&here), ["198.51.100.1/32", "198.51.100.2/32"]);
    }

    #[test]
    fn bgp_routes_ipv6_host_routes_and_aggregates() {
        let (pools, bgp) = config();
        let services = vec![
            svc_ips("ds", BGP, &["198.51.100.5", "2001:db8:64::5"], false),
            svc("x", BGP, "192.0.2.7", false),
            svc("y", BGP, "192.0.2.200", false),
        ];
        let ready = serving(&["ds", "x", "y"]);
        let routes = bgp_routes(
            &services,
            &ReadyNodes::index(&ready),
            &node("n1", true),
            "x",
            &pools,
            &bgp,
        );
        // Two Services in the aggregated pool share one /24.
        assert_eq!(
            nets(&routes),
            ["192.0.2.0/24", "198.51.100.5/32", "2001:db8:64::5/128"]
        );
        let to_peer = routes.for_peer("10.0.0.254".parse().expect("ip"));
        let agg = to_peer
            .get(&"192.0.2.0/24".parse().expect("net"))
            .expect("aggregate");
        assert_eq!(agg.large_communities.len(), 1);
    }

    #[test]
    fn two_advertisements_of_one_pool_to_two_routers_both_hold() {
        let (pools, _) = config();
        let bgp = BgpConfig::from_value(json!({"localASN": 64512,
        "peers": [{"address": "10.0.0.1", "asn": 64500}, {"address": "10.0.0.2", "asn": 64501}],
        "advertisements": [
            {"pools": ["dc"], "communities": ["64512:1"], "peers": ["10.0.0.1"]},
            {"pools": ["dc"], "communities": ["64512:2"], "peers": ["10.0.0.2"]}
        ]}))
        .expect("bgp");
        let services = vec![svc("a", BGP, "198.51.100.1", false)];
        let ready = serving(&["a"]);
        let routes = bgp_routes(
            &services,
            &ReadyNodes::index(&ready),
            &node("n1", true),
            "x",
            &pools,
            &bgp,
        );
        let net = "198.51.100.1/32".parse().expect("net");
        for (peer, community) in [("10.0.0.1", 1), ("10.0.0.2", 2)] {
            let to_peer = routes.for_peer(peer.parse().expect("ip"));
            let attrs = to_peer.get(&net).expect("the route reaches both routers");
            assert_eq!(
                attrs.communities,
                vec![portway_bgp::Community((64512 << 16) + community)]
            );
        }
    }

    #[test]
    fn ineligible_nodes_advertise_nothing() {
        let (pools, bgp) = config();
        let services = vec![svc("a", BGP, "198.51.100.1", false)];
        let ready = serving(&["a"]);
        let check = |n: Arc<Node>| {
            bgp_routes(&services, &ReadyNodes::index(&ready), &n, "x", &pools, &bgp).is_empty()
        };
        assert!(!check(node("n1", true)));
        assert!(check(node("n1", false)), "Ready=False");
        let unknown = node_with(
            "n1",
            json!([{"type": "Ready", "status": "Unknown"}]),
            json!({}),
        );
        assert!(!check(unknown), "Ready=Unknown keeps announcing (KEP-3458)");
        let netdown = node_with(
            "n1",
            json!([{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "True"}]),
            json!({}),
        );
        assert!(check(netdown), "NetworkUnavailable");
        let excluded = node_with(
            "n1",
            json!([{"type": "Ready", "status": "True"}]),
            json!({"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
        );
        assert!(check(excluded), "excluded by label");
        let included = node_with(
            "n1",
            json!([{"type": "Ready", "status": "True"}]),
            json!({"node.kubernetes.io/exclude-from-external-load-balancers": "false"}),
        );
        assert!(!check(included), "the label set to false includes");
        let mut uninit = (*node("n1", true)).clone();
        uninit.spec = Some(
            serde_json::from_value(json!({"taints": [{"key":
            "node.cloudprovider.kubernetes.io/uninitialized", "effect": "NoSchedule"}]}))
            .expect("spec"),
        );
        assert!(check(Arc::new(uninit)), "uninitialized");
    }

    #[test]
    fn node_inputs_keep_eligible_nodes_with_labels_and_addresses() {
        let nodes = vec![
            node_with(
                "a",
                json!([{"type": "Ready", "status": "True"}]),
                json!({"zone": "z1"}),
            ),
            node("b", false),
            node_with("c", json!([]), json!({})),
        ];
        let inputs = node_inputs(&nodes);
        assert_eq!(
            inputs.keys().collect::<Vec<_>>(),
            ["a", "c"],
            "b is Ready=False"
        );
        let a = &inputs["a"];
        assert_eq!(a.labels.get("zone").map(String::as_str), Some("z1"));
        // The gossip seed is the first address: the IPv4 InternalIP.
        let addrs: Vec<String> = a.addrs.iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.0.0.1", "fd00::1", "203.0.113.9"]);
    }

    #[test]
    fn status_ips_skip_hostnames_and_garbage() {
        let s = obj::<Service>(json!({"metadata": {"name": "s"},
            "status": {"loadBalancer": {"ingress": [{"hostname": "h"}, {"ip": "192.0.2.1"}, {"ip": "x"}]}}}));
        assert_eq!(
            status_ips(&s),
            vec!["192.0.2.1".parse::<IpAddr>().expect("ip")]
        );
        assert!(status_ips(&obj::<Service>(json!({"metadata": {"name": "s"}}))).is_empty());
    }
}
