//! The views of Services and Nodes that providers work on.
//!
//! The controller builds them once per reconcile from the Kubernetes objects,
//! after validating annotations, so that providers never parse Kubernetes
//! objects and never see a value the controller could not make sense of.

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// Identifies a Service across reconciles and provider triggers.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
}

impl ServiceKey {
    /// Builds a key; the common case in tests and provider triggers.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An L4 protocol of a Service port, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `TCP`, the Kubernetes default.
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// The Kubernetes spelling (`TCP`), used in status and object names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP family, as in `spec.ipFamilies`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }
}

/// `spec.ipFamilyPolicy`: how many families a Service wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IpFamilyPolicy {
    /// One address, of the first family in `ipFamilies`.
    #[default]
    SingleStack,
    /// Both families when the pool has them, else one.
    PreferDualStack,
    /// Both families or a needs-a-fix error.
    RequireDualStack,
}

/// `spec.externalTrafficPolicy`: whether any node may receive traffic
/// (`Cluster`) or only nodes with a ready local endpoint (`Local`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TrafficPolicy {
    /// Any node forwards to any endpoint (source NAT).
    #[default]
    Cluster,
    /// Only nodes with a local endpoint; the client source is preserved.
    Local,
}

/// One Service port, with the node port the API server allocated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LbPort {
    /// The port's name; empty for a single unnamed port.
    pub name: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port clients connect to on the load balancer.
    pub port: u16,
    /// Where the port is exposed on every node, if allocated
    /// (`allocateLoadBalancerNodePorts: false` leaves it out).
    pub node_port: Option<u16>,
}

/// What a provider knows of a Service: everything that decides its load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbService {
    /// namespace/name.
    pub key: ServiceKey,
    /// `metadata.uid`; names external objects and tags them as ours.
    pub uid: String,
    /// The class this Service was dispatched by (after `defaultClass`).
    pub class: String,
    /// RFC 3339 creation time; the oldest of two claimants keeps an address.
    pub created: String,
    /// `spec.ports`, in order.
    pub ports: Vec<LbPort>,
    /// `spec.clusterIPs`.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ipFamilies`, in order (the first is the primary family).
    pub ip_families: Vec<IpFamily>,
    /// `spec.ipFamilyPolicy`.
    pub ip_family_policy: IpFamilyPolicy,
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.healthCheckNodePort`, set for `Local` policy.
    pub health_check_node_port: Option<u16>,
    /// `spec.loadBalancerSourceRanges`, else the
    /// `service.beta.kubernetes.io/load-balancer-source-ranges` annotation;
    /// empty means no restriction.
    pub source_ranges: Vec<IpNet>,
    /// Requested addresses: `portway.dev/load-balancer-ips` (or the MetalLB
    /// alias), else `spec.loadBalancerIP`. At most one per family.
    pub requested_ips: Vec<IpAddr>,
    /// `portway.dev/allow-shared-ip` (or the MetalLB alias).
    pub sharing_key: Option<String>,
    /// `portway.dev/address-pool` (or the MetalLB alias).
    pub pool: Option<String>,
    /// `spec.selector`: Services with Local policy may share an address only
    /// when they select the same pods.
    pub selector: BTreeMap<String, String>,
    /// The addresses currently published in `status.loadBalancer.ingress`;
    /// the allocator adopts them on restart.
    pub current_ips: Vec<IpAddr>,
    /// `metadata.labels` (pool service selectors, k3s `lbpool`).
    pub labels: BTreeMap<String, String>,
    /// The labels of the Service's namespace (pool namespace selectors).
    pub namespace_labels: BTreeMap<String, String>,
    /// `metadata.annotations`, for provider-specific settings.
    pub annotations: BTreeMap<String, String>,
    /// The Service's endpoints from its EndpointSlices, filled only for providers whose
    /// [`crate::LoadBalancerProvider::wants_endpoints`] says so (Local policy, pool
    /// members that are pods): providers never read EndpointSlices themselves.
    pub endpoints: Vec<LbEndpoint>,
}

/// One endpoint of a Service, as its EndpointSlice says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbEndpoint {
    /// `nodeName`: where the endpoint runs, if known.
    pub node: Option<String>,
    /// `addresses` (a pod's IPs).
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready` as written: `None` is the API's "unknown", which most consumers
    /// read as ready and k3s's ServiceLB does not.
    pub ready: Option<bool>,
    /// `conditions.serving` (unknown read as `ready`).
    pub serving: bool,
    /// `conditions.terminating`.
    pub terminating: bool,
    /// `targetRef` names a Pod (not a manually written endpoint).
    pub pod: bool,
    /// The ports of its EndpointSlice.
    pub ports: Vec<LbEndpointPort>,
}

/// A port of an EndpointSlice: where a Service port's traffic goes on the endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbEndpointPort {
    /// Matches the Service port's name.
    pub name: String,
    /// The target port on the endpoint.
    pub port: u16,
    /// Its protocol.
    pub protocol: Option<Protocol>,
}

/// A node the controller found eligible for load-balancer traffic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbNode {
    /// `metadata.name`.
    pub name: String,
    /// `spec.providerID`; part of the identity the controller diffs on.
    pub provider_id: String,
    /// InternalIP addresses, in `status.addresses` order.
    pub internal_ips: Vec<IpAddr>,
    /// ExternalIP addresses, in `status.addresses` order.
    pub external_ips: Vec<IpAddr>,
    /// `metadata.labels` (node selectors of pools and peers).
    pub labels: BTreeMap<String, String>,
    /// The Ready condition; informative, since eligibility does not require it.
    pub ready: bool,
}

/// One `status.loadBalancer.ingress` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LbIngress {
    /// The address clients use.
    pub ip: IpAddr,
    /// `true` when the load balancer proxies to nodeIP:nodePort (ipMode
    /// `Proxy`); `false` (ipMode `VIP`) when nodes receive traffic for the IP.
    pub proxy: bool,
}

impl LbIngress {
    /// A `VIP`-mode entry, the common case.
    pub fn vip(ip: IpAddr) -> Self {
        Self { ip, proxy: false }
    }
}

/// What the controller publishes in `status.loadBalancer`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbStatus {
    /// The ingress entries, in publishing order (ordered by `spec.ipFamilies`).
    pub ingress: Vec<LbIngress>,
    /// Problems that did not stop the load balancer but need a user's eye
    /// (a port that clashes on some nodes, an address kept from a removed
    /// pool); the controller turns each into a Warning event on the Service
    /// while still publishing `ingress`.
    pub warnings: Vec<crate::ProviderError>,
    /// What the provider did that a user may like to see (k3s's `AppliedDaemonSet`);
    /// the controller records each as a Normal event.
    pub notes: Vec<String>,
}

impl LbStatus {
    /// A status of `VIP`-mode entries for the given addresses.
    pub fn vips(ips: impl IntoIterator<Item = IpAddr>) -> Self {
        Self {
            ingress: ips.into_iter().map(LbIngress::vip).collect(),
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }
}
