//! Chainable builders of [`LbService`] for tests of the allocator and of every
//! provider: `svc("default", "web").ports([80]).sharing("k")`.
//!
//! Public (not `cfg(test)`) so that integration tests, benchmarks and the
//! provider crates share one builder instead of each writing their own.

use crate::{IpFamily, IpFamilyPolicy, LbPort, LbService, Protocol, ServiceKey, TrafficPolicy};
use std::net::IpAddr;

/// A Service of the given namespace and name: single-stack IPv4, TCP/80,
/// `Cluster` policy, created at the Unix epoch.
pub fn svc(namespace: &str, name: &str) -> LbService {
    LbService {
        key: ServiceKey::new(namespace, name),
        uid: format!("uid-{namespace}-{name}"),
        created: "1970-01-01T00:00:00Z".to_string(),
        ports: vec![port(Protocol::Tcp, 80)],
        ip_families: vec![IpFamily::V4],
        ..LbService::default()
    }
}

/// A Service port without a node port.
pub fn port(protocol: Protocol, port: u16) -> LbPort {
    LbPort {
        name: String::new(),
        protocol,
        port,
        node_port: None,
    }
}

/// Parses an address literal written in a test.
///
/// # Panics
/// On a malformed literal, which is a bug in the test.
pub fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("bad address literal {s:?} in test"))
}

/// Chainable setters on [`LbService`] for tests.
pub trait SvcExt: Sized {
    /// TCP ports.
    fn ports(self, ports: impl IntoIterator<Item = u16>) -> Self;
    /// Ports with protocols.
    fn proto_ports(self, ports: impl IntoIterator<Item = (Protocol, u16)>) -> Self;
    /// `portway.dev/allow-shared-ip`.
    fn sharing(self, key: &str) -> Self;
    /// `metadata.uid`.
    fn uid(self, uid: &str) -> Self;
    /// Named ports with node ports: `(name, protocol, port, nodePort)`.
    fn named_ports(self, ports: &[(&str, Protocol, u16, u16)]) -> Self;
    /// `spec.clusterIPs`.
    fn cluster_ips(self, ips: &[&str]) -> Self;
    /// Requested addresses, as `portway.dev/load-balancer-ips` would give them.
    fn request(self, ips: &[&str]) -> Self;
    /// `spec.loadBalancerIP` (no annotation, so errors name that field).
    fn load_balancer_ip(self, ip: &str) -> Self;
    /// `portway.dev/address-pool`.
    fn pool(self, name: &str) -> Self;
    /// `spec.ipFamilies` and `spec.ipFamilyPolicy`.
    fn families(self, policy: IpFamilyPolicy, families: &[IpFamily]) -> Self;
    /// `externalTrafficPolicy: Local` with this pod selector.
    fn local(self, selector: &[(&str, &str)]) -> Self;
    /// `metadata.labels`.
    fn label(self, key: &str, value: &str) -> Self;
    /// A label of the Service's namespace.
    fn ns_label(self, key: &str, value: &str) -> Self;
    /// `metadata.creationTimestamp`.
    fn created(self, rfc3339: &str) -> Self;
    /// `status.loadBalancer.ingress` addresses.
    fn current(self, ips: &[&str]) -> Self;
    /// A raw annotation.
    fn annotate(self, key: &str, value: &str) -> Self;
}

impl SvcExt for LbService {
    fn ports(self, ports: impl IntoIterator<Item = u16>) -> Self {
        self.proto_ports(ports.into_iter().map(|p| (Protocol::Tcp, p)))
    }
    fn proto_ports(mut self, ports: impl IntoIterator<Item = (Protocol, u16)>) -> Self {
        self.ports = ports.into_iter().map(|(pr, p)| port(pr, p)).collect();
        self
    }
    fn sharing(mut self, key: &str) -> Self {
        self.sharing_key = Some(key.to_string());
        self.annotate(crate::ipam::SHARING_ANNOTATIONS[0], key)
    }
    fn uid(mut self, uid: &str) -> Self {
        self.uid = uid.to_string();
        self
    }
    fn named_ports(mut self, ports: &[(&str, Protocol, u16, u16)]) -> Self {
        self.ports = ports
            .iter()
            .map(|(name, protocol, port, node_port)| LbPort {
                name: name.to_string(),
                protocol: *protocol,
                port: *port,
                node_port: Some(*node_port),
            })
            .collect();
        self
    }
    fn cluster_ips(mut self, ips: &[&str]) -> Self {
        self.cluster_ips = ips.iter().map(|s| ip(s)).collect();
        self
    }
    fn request(mut self, ips: &[&str]) -> Self {
        self.requested_ips = ips.iter().map(|s| ip(s)).collect();
        let joined = ips.join(",");
        self.annotate(crate::ipam::IPS_ANNOTATIONS[0], &joined)
    }
    fn load_balancer_ip(mut self, addr: &str) -> Self {
        self.requested_ips = vec![ip(addr)];
        self
    }
    fn pool(mut self, name: &str) -> Self {
        self.pool = Some(name.to_string());
        self.annotate(crate::ipam::POOL_ANNOTATIONS[0], name)
    }
    fn families(mut self, policy: IpFamilyPolicy, families: &[IpFamily]) -> Self {
        self.ip_family_policy = policy;
        self.ip_families = families.to_vec();
        self
    }
    fn local(mut self, selector: &[(&str, &str)]) -> Self {
        self.external_traffic_policy = TrafficPolicy::Local;
        self.selector = selector
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
    fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }
    fn ns_label(mut self, key: &str, value: &str) -> Self {
        self.namespace_labels
            .insert(key.to_string(), value.to_string());
        self
    }
    fn created(mut self, rfc3339: &str) -> Self {
        self.created = rfc3339.to_string();
        self
    }
    fn current(mut self, ips: &[&str]) -> Self {
        self.current_ips = ips.iter().map(|s| ip(s)).collect();
        self
    }
    fn annotate(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}
