//! The node's BGP routes kept Service by Service, and what the watches changed since the
//! last pass.
//!
//! The speaker loop used to recompute every route from every Service on every change: at
//! 10,000 Services that is a full walk (and a full diff in the BGP handle) for each one that
//! changed. Here each Service's routes are stored with it; a change replaces that
//! Service's routes only and yields the prefixes whose attribute sets changed, which go to
//! the sessions through [`portway_bgp::SpeakerHandle::update`]. Several Services may share
//! a prefix (an aggregation length below the host length), so each prefix keeps its
//! contributors and its attribute sets are merged from them in Service order.

use super::ready::Key;
use ipnet::IpNet;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use portway_bgp::route::{RouteAttrs, RouteSet};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// The routes of every Service; see the module docs.
#[derive(Default)]
pub struct BgpTable {
    by_svc: HashMap<Key, Vec<IpNet>>,
    by_prefix: BTreeMap<IpNet, BTreeMap<Key, Vec<RouteAttrs>>>,
    routes: RouteSet,
    /// How many advertised prefixes have each (family, length): the lengths an address
    /// may be covered at ([`Self::covers`]), without a walk over every route.
    lens: BTreeMap<(bool, u8), usize>,
}

impl BgpTable {
    /// Replaces the routes of Service `key` (empty: it has none); returns the prefixes
    /// whose attribute sets changed, each with its new sets (empty: withdrawn).
    pub fn set(
        &mut self,
        key: &Key,
        routes: Vec<(IpNet, RouteAttrs)>,
    ) -> Vec<(IpNet, Vec<RouteAttrs>)> {
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        for p in self.by_svc.remove(key).unwrap_or_default() {
            if let Some(m) = self.by_prefix.get_mut(&p) {
                m.remove(key);
                if m.is_empty() {
                    self.by_prefix.remove(&p);
                }
            }
            touched.insert(p);
        }
        let mut mine: BTreeMap<IpNet, Vec<RouteAttrs>> = BTreeMap::new();
        for (p, a) in routes {
            let list = mine.entry(p).or_default();
            if !list.contains(&a) {
                list.push(a);
            }
        }
        if !mine.is_empty() {
            self.by_svc
                .insert(key.clone(), mine.keys().copied().collect());
        }
        for (p, list) in mine {
            self.by_prefix
                .entry(p)
                .or_default()
                .insert(key.clone(), list);
            touched.insert(p);
        }
        let mut changes = Vec::new();
        for p in touched {
            let mut merged: Vec<RouteAttrs> = Vec::new();
            for a in self.by_prefix.get(&p).into_iter().flat_map(|m| m.values()) {
                for a in a {
                    if !merged.contains(a) {
                        merged.push(a.clone());
                    }
                }
            }
            let before = self.routes.get(&p).unwrap_or_default();
            if before != merged.as_slice() {
                let len = (p.addr().is_ipv6(), p.prefix_len());
                match (before.is_empty(), merged.is_empty()) {
                    (true, false) => *self.lens.entry(len).or_default() += 1,
                    (false, true) => {
                        if let Some(n) = self.lens.get_mut(&len) {
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                self.lens.remove(&len);
                            }
                        }
                    }
                    _ => {}
                }
                self.routes.set(p, merged.clone());
                changes.push((p, merged));
            }
        }
        changes
    }

    /// Every route, as the sessions get them.
    pub fn routes(&self) -> &RouteSet {
        &self.routes
    }

    /// Whether some advertised prefix holds `ip` (a host route or an aggregate): a
    /// lookup per prefix length in use, not a walk over the routes.
    pub fn covers(&self, ip: &IpAddr) -> bool {
        self.lens
            .keys()
            .filter(|(v6, _)| *v6 == ip.is_ipv6())
            .filter_map(|(_, len)| IpNet::new(*ip, *len).ok())
            .any(|net| self.routes.get(&net.trunc()).is_some())
    }
}

/// What the watches reported since the last pass.
#[derive(Default)]
pub struct Dirty {
    /// A watch (re)listed, or the loop has not run yet: recompute everything.
    pub all: bool,
    /// Some Node changed.
    pub nodes: bool,
    /// Services created, changed or deleted.
    pub services: BTreeSet<Key>,
    /// Slices in the order they changed: `true` applied, `false` deleted.
    pub slices: Vec<(EndpointSlice, bool)>,
}

impl Dirty {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        !self.all && !self.nodes && self.services.is_empty() && self.slices.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Key {
        ("default".into(), n.into())
    }

    fn attrs(c: u32) -> RouteAttrs {
        RouteAttrs {
            communities: vec![portway_bgp::route::Community(c)],
            ..Default::default()
        }
    }

    #[test]
    fn shared_prefixes_keep_their_contributors_and_only_changes_come_out() {
        let mut t = BgpTable::default();
        let agg: IpNet = "192.0.2.0/24".parse().expect("net");
        let host: IpNet = "198.51.100.1/32".parse().expect("net");
        // a and b share the aggregate; a also has a host route.
        let ch = t.set(&key("a"), vec![(agg, attrs(1)), (host, attrs(1))]);
        assert_eq!(ch.len(), 2);
        let ch = t.set(&key("b"), vec![(agg, attrs(1))]);
        assert!(
            ch.is_empty(),
            "same attributes on a shared prefix: no change"
        );
        let ch = t.set(&key("b"), vec![(agg, attrs(2))]);
        assert_eq!(ch, vec![(agg, vec![attrs(1), attrs(2)])]);
        // a goes: the aggregate stays for b, the host route is withdrawn.
        let ch = t.set(&key("a"), vec![]);
        assert_eq!(ch, vec![(agg, vec![attrs(2)]), (host, vec![])]);
        assert_eq!(t.routes().len(), 1);
        let ch = t.set(&key("b"), vec![]);
        assert_eq!(ch, vec![(agg, vec![])]);
        assert!(t.routes().is_empty());
    }

    /// Fed change by change (random Service, slice and delete events), the table and the
    /// slice index always equal a recomputation from everything: the incremental state
    /// does not drift.
    #[test]
    fn change_by_change_equals_recomputing_everything() {
        use super::super::desired::{ReadyNodes, RouteRules, bgp_routes};
        use super::super::ready::key_of;
        use k8s_openapi::api::core::v1::{Node, Service};
        use serde_json::json;
        use std::sync::Arc;

        let pools = portway_provider::ipam::parse_pools(&[
            json!({"name": "dc", "addresses": ["198.51.100.0/26"]}),
            json!({"name": "agg", "addresses": ["192.0.2.0/26"]}),
        ])
        .expect("pools");
        let bgp = portway_bgp::BgpConfig::from_value(json!({"localASN": 64512,
        "peers": [{"address": "10.0.0.254", "asn": 64500}],
        "advertisements": [
            {"pools": ["dc"], "communities": ["64512:100"]},
            {"pools": ["dc"], "communities": ["64512:200"], "peers": ["10.0.0.254"]},
            {"pools": ["agg"], "aggregationLength": 28}
        ]}))
        .expect("bgp");
        let me: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .expect("node");
        let class = crate::providers::BGP;
        let rules = RouteRules::new(&me, class, &pools, &bgp);
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut services: BTreeMap<String, Arc<Service>> = BTreeMap::new();
        let mut slices: BTreeMap<String, Arc<EndpointSlice>> = BTreeMap::new();
        let (mut table, mut ready) = (BgpTable::default(), ReadyNodes::default());
        for step in 0..2000 {
            let name = format!("s{}", next(40));
            let mut keys = vec![];
            match next(4) {
                0 | 1 => {
                    let ip = match next(2) {
                        0 => format!("198.51.100.{}", next(64)),
                        _ => format!("192.0.2.{}", next(64)),
                    };
                    let policy = if next(3) == 0 { "Local" } else { "Cluster" };
                    let svc: Service = serde_json::from_value(json!({
                        "metadata": {"name": name, "namespace": "default"},
                        "spec": {"type": "LoadBalancer", "loadBalancerClass": class,
                            "externalTrafficPolicy": policy},
                        "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}))
                    .expect("svc");
                    keys.push(key_of(&svc));
                    services.insert(name, Arc::new(svc));
                }
                2 => {
                    let slice_name = format!("{name}-{}", next(2));
                    let node = format!("n{}", next(3));
                    let s: EndpointSlice = serde_json::from_value(json!({
                        "metadata": {"name": slice_name, "namespace": "default",
                            "labels": {"kubernetes.io/service-name": name}},
                        "addressType": "IPv4",
                        "endpoints": [{"addresses": ["10.42.0.1"], "nodeName": node,
                            "conditions": {"ready": next(4) != 0}}]}))
                    .expect("slice");
                    keys.extend(ready.apply(&s));
                    slices.insert(slice_name, Arc::new(s));
                }
                _ => {
                    if let Some(s) = services.remove(&name) {
                        keys.push(key_of(&s));
                    }
                    let slice_name = format!("{name}-{}", next(2));
                    if let Some(s) = slices.remove(&slice_name) {
                        keys.extend(ready.remove(&s));
                    }
                }
            }
            for k in &keys {
                let routes = services
                    .get(&k.1)
                    .map(|s| rules.of(s, &ready))
                    .unwrap_or_default();
                table.set(k, routes);
            }
            let all_svcs: Vec<Arc<Service>> = services.values().cloned().collect();
            let all_slices: Vec<Arc<EndpointSlice>> = slices.values().cloned().collect();
            let full = ReadyNodes::index(&all_slices);
            for s in &all_svcs {
                assert_eq!(
                    ready.of(s),
                    full.of(s),
                    "step {step}: ready nodes of {:?}",
                    key_of(s)
                );
            }
            let want = bgp_routes(&all_svcs, &full, &me, class, &pools, &bgp);
            assert_eq!(table.routes(), &want, "step {step}");
        }
    }

    #[test]
    fn covers_host_routes_and_aggregates_of_either_family_and_forgets_withdrawn_ones() {
        let mut t = BgpTable::default();
        for (i, n) in ["198.51.100.7/32", "203.0.113.0/24", "2001:db8::/64"]
            .iter()
            .enumerate()
        {
            t.set(
                &key(&i.to_string()),
                vec![(n.parse().expect("net"), attrs(1))],
            );
        }
        let ip = |s: &str| -> IpAddr { s.parse().expect("ip") };
        for a in ["198.51.100.7", "203.0.113.200", "2001:db8::1234"] {
            assert!(t.covers(&ip(a)), "{a}");
        }
        for a in [
            "198.51.100.8",
            "203.0.114.1",
            "2001:db8:0:1::1",
            "::ffff:203.0.113.1",
        ] {
            assert!(!t.covers(&ip(a)), "{a}");
        }
        t.set(&key("1"), vec![]);
        assert!(!t.covers(&ip("203.0.113.200")), "withdrawn");
        assert!(t.covers(&ip("198.51.100.7")));
    }
}
