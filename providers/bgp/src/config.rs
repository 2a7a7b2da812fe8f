//! The `bgp:` section of Portway's configuration file (DESIGN §7), as typed
//! serde structs plus a validation pass that names the offending key.
//!
//! Addresses and communities stay strings in the file model so that a typo is
//! reported by [`BgpConfig::validate`] with its full key path
//! (`bgp.peers[0].address`) together with every other problem, instead of
//! stopping at the first serde error. Durations use humantime (`"90s"`).

pub use crate::bfd::BfdConfig;
use crate::route::{Community, LargeCommunity, RouteAttrs};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// AS_TRANS (RFC 6793): stands in for a 4-byte ASN in 2-byte fields, so it
/// can never be anyone's real ASN.
pub const AS_TRANS: u32 = 23456;

/// The `bgp:` configuration section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfig {
    /// Our AS number, used by every node's speaker.
    #[serde(rename = "localASN", default = "default_local_asn")]
    pub local_asn: u32,
    /// BGP identifier; empty means the node's IPv4 address, which is unique
    /// per node without extra configuration.
    #[serde(rename = "routerID", default)]
    pub router_id: String,
    /// Routers to peer with.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// What to advertise, to whom, with which communities.
    #[serde(default)]
    pub advertisements: Vec<AdvertisementConfig>,
}

fn default_local_asn() -> u32 {
    64512
}

impl Default for BgpConfig {
    fn default() -> Self {
        Self {
            local_asn: default_local_asn(),
            router_id: String::new(),
            peers: Vec::new(),
            advertisements: Vec::new(),
        }
    }
}

/// One router the speakers peer with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConfig {
    /// The router's address; the speaker always connects to it (active side).
    pub address: String,
    /// The router's AS number; equal to `localASN` makes the session iBGP.
    pub asn: u32,
    /// Our AS number on this session, when it is not `bgp.localASN` (a BGPPeer resource's
    /// `myASN`, as MetalLB lets each peer have its own).
    #[serde(default, rename = "myASN", skip_serializing_if = "Option::is_none")]
    pub local_asn: Option<u32>,
    /// TCP port of the router's BGP listener.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Hold time we propose; 0 disables keepalives, otherwise at least 3s.
    #[serde(default = "default_hold", with = "humantime_serde")]
    pub hold_time: Duration,
    /// Interval between KEEPALIVEs; must be below the hold time.
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_time: Duration,
    /// Local address to connect from; empty lets the kernel choose. It is
    /// also the next hop we advertise, so it must be reachable by the router.
    #[serde(default)]
    pub source_address: String,
    /// IP TTL of eBGP packets; 1 keeps eBGP on the directly connected link.
    #[serde(default = "default_multihop")]
    pub ebgp_multihop: u8,
    /// Only nodes whose labels include all of these peer with this router.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// TCP MD5 password (RFC 2385), read from a Kubernetes Secret.
    #[serde(default)]
    pub password_secret: Option<SecretRef>,
    /// Announce graceful restart (RFC 4724), so the router keeps our routes as stale for
    /// `gracefulRestartTime` after the session drops. Off by default, as in MetalLB: a
    /// crashed speaker on a dead node must not blackhole traffic for minutes.
    #[serde(default)]
    pub graceful_restart: bool,
    /// The restart time announced with graceful restart: how long the router keeps our
    /// routes while we are away.
    #[serde(default = "default_restart_time", with = "humantime_serde")]
    pub graceful_restart_time: Duration,
    /// BFD (RFC 5880/5881, single hop) towards this router, so it drops a dead node's
    /// routes within a detection time instead of the hold time; absent means no BFD.
    #[serde(default)]
    pub bfd: Option<BfdConfig>,
}

fn default_port() -> u16 {
    179
}
fn default_hold() -> Duration {
    Duration::from_secs(90)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
fn default_multihop() -> u8 {
    1
}
fn default_restart_time() -> Duration {
    Duration::from_secs(120)
}

/// The longest restart time the capability can carry (12 bits, RFC 4724 §3).
pub const MAX_RESTART_TIME: u64 = 4095;

/// A key of a Kubernetes Secret, so passwords never live in the ConfigMap.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's data.
    pub key: String,
}

/// How addresses of some pools are advertised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdvertisementConfig {
    /// Pools whose addresses this applies to (checked against `pools` by the
    /// controller, which owns them).
    #[serde(default)]
    pub pools: Vec<String>,
    /// Prefix length advertised for an IPv4 address; below 32 aggregates.
    #[serde(default = "default_agg_v4")]
    pub aggregation_length: u8,
    /// Prefix length advertised for an IPv6 address; below 128 aggregates.
    #[serde(default = "default_agg_v6", rename = "aggregationLengthV6")]
    pub aggregation_length_v6: u8,
    /// Communities such as `"64512:100"` or `"no-export"`.
    #[serde(default)]
    pub communities: Vec<String>,
    /// Large communities such as `"64512:1:2"`.
    #[serde(default)]
    pub large_communities: Vec<String>,
    /// LOCAL_PREF for iBGP peers; 0 means the default (100).
    #[serde(default)]
    pub local_pref: u32,
    /// Peer addresses that get these routes; empty means all peers.
    #[serde(default)]
    pub peers: Vec<String>,
}

fn default_agg_v4() -> u8 {
    32
}
fn default_agg_v6() -> u8 {
    128
}

/// One problem in the configuration (key path such as `bgp.peers[0].holdTime`): the
/// contract's shared shape.
pub use portway_provider::ConfigIssue;

impl BgpConfig {
    /// Deserializes the `bgp:` value (e.g. the `serde_json::Value` the
    /// controller's config holds) and validates it; errors carry key paths
    /// starting with `bgp.`.
    pub fn from_value(value: serde_json::Value) -> Result<BgpConfig, Vec<ConfigIssue>> {
        let config: BgpConfig =
            portway_provider::parse_section("bgp", value).map_err(|e| vec![e])?;
        let issues = config.validate();
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(issues)
        }
    }

    /// Every problem serde cannot see; empty means the section is usable.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        check_asn("bgp.localASN", self.local_asn, &mut out);
        if !self.router_id.is_empty() {
            match self.router_id.parse::<Ipv4Addr>() {
                Ok(id) if id.is_unspecified() || id.is_multicast() || id.is_broadcast() => out
                    .push(ConfigIssue::new(
                        "bgp.routerID",
                        "must be a unicast IPv4 address, or empty for the node's IPv4",
                    )),
                Ok(_) => {}
                Err(_) => out.push(ConfigIssue::new(
                    "bgp.routerID",
                    format!(
                        "{:?} is not an IPv4 address; use e.g. 10.0.0.5 or leave empty",
                        self.router_id
                    ),
                )),
            }
        }
        let mut seen = BTreeMap::new();
        for (i, p) in self.peers.iter().enumerate() {
            let base = format!("bgp.peers[{i}]");
            validate_peer(&base, p, &mut out);
            if let Ok(addr) = p.address.parse::<IpAddr>()
                && let Some(first) = seen.insert((addr, p.port), i)
            {
                out.push(ConfigIssue::new(
                    format!("{base}.address"),
                    format!("duplicates bgp.peers[{first}]"),
                ));
            }
        }
        let known: Vec<IpAddr> = self
            .peers
            .iter()
            .filter_map(|p| p.address.parse().ok())
            .collect();
        for (i, a) in self.advertisements.iter().enumerate() {
            validate_advertisement(&format!("bgp.advertisements[{i}]"), a, &known, &mut out);
        }
        out
    }
}

fn check_asn(path: &str, asn: u32, out: &mut Vec<ConfigIssue>) {
    if asn == 0 || asn == AS_TRANS || asn == u32::MAX {
        out.push(ConfigIssue::new(
            path,
            format!("{asn} is reserved; use 1..=4294967294 except 23456 (AS_TRANS)"),
        ));
    }
}

fn validate_peer(base: &str, p: &PeerConfig, out: &mut Vec<ConfigIssue>) {
    if let Some(asn) = p.local_asn {
        check_asn(&format!("{base}.myASN"), asn, out);
    }
    let addr = p.address.parse::<IpAddr>();
    match addr {
        Ok(a) if a.is_unspecified() || a.is_multicast() => out.push(ConfigIssue::new(
            format!("{base}.address"),
            "must be a unicast address of the router",
        )),
        Ok(_) => {}
        Err(_) => out.push(ConfigIssue::new(
            format!("{base}.address"),
            format!("{:?} is not an IP address", p.address),
        )),
    }
    check_asn(&format!("{base}.asn"), p.asn, out);
    if p.port == 0 {
        out.push(ConfigIssue::new(
            format!("{base}.port"),
            "must be 1..=65535 (usually 179)",
        ));
    }
    let hold = p.hold_time;
    if hold.subsec_nanos() != 0 || hold.as_secs() > u64::from(u16::MAX) {
        out.push(ConfigIssue::new(
            format!("{base}.holdTime"),
            "must be whole seconds, at most 65535s",
        ));
    } else if hold.as_secs() == 1 || hold.as_secs() == 2 {
        out.push(ConfigIssue::new(
            format!("{base}.holdTime"),
            "must be 0 (no keepalives) or at least 3s (RFC 4271)",
        ));
    }
    let ka = p.keepalive_time;
    if ka.subsec_nanos() != 0 || ka.is_zero() {
        out.push(ConfigIssue::new(
            format!("{base}.keepaliveTime"),
            "must be whole seconds and at least 1s",
        ));
    } else if !hold.is_zero() && ka >= hold {
        out.push(ConfigIssue::new(
            format!("{base}.keepaliveTime"),
            "must be below holdTime (usually a third of it)",
        ));
    }
    if !p.source_address.is_empty() {
        match (p.source_address.parse::<IpAddr>(), &addr) {
            (Err(_), _) => out.push(ConfigIssue::new(
                format!("{base}.sourceAddress"),
                format!(
                    "{:?} is not an IP address; leave empty to let the kernel choose",
                    p.source_address
                ),
            )),
            (Ok(s), Ok(a)) if s.is_ipv4() != a.is_ipv4() => out.push(ConfigIssue::new(
                format!("{base}.sourceAddress"),
                "must be of the same family as address",
            )),
            _ => {}
        }
    }
    if p.ebgp_multihop == 0 {
        out.push(ConfigIssue::new(
            format!("{base}.ebgpMultihop"),
            "must be 1..=255",
        ));
    }
    let restart = p.graceful_restart_time;
    if restart.subsec_nanos() != 0 || restart.is_zero() || restart.as_secs() > MAX_RESTART_TIME {
        out.push(ConfigIssue::new(
            format!("{base}.gracefulRestartTime"),
            format!("must be whole seconds, 1s..={MAX_RESTART_TIME}s (RFC 4724's 12-bit field)"),
        ));
    }
    if let Some(bfd) = &p.bfd {
        bfd.validate(&format!("{base}.bfd"), out);
        if p.ebgp_multihop > 1 {
            out.push(ConfigIssue::new(
                format!("{base}.bfd"),
                "BFD is single-hop (RFC 5881): remove bfd, or ebgpMultihop, for a router more than one hop away",
            ));
        }
    }
    for (k, v) in &p.node_selector {
        if let Err(why) = check_label_key(k) {
            out.push(ConfigIssue::new(
                format!("{base}.nodeSelector.{k}"),
                format!("bad label key: {why}"),
            ));
        }
        if let Err(why) = check_label_value(v) {
            out.push(ConfigIssue::new(
                format!("{base}.nodeSelector.{k}"),
                format!("bad label value: {why}"),
            ));
        }
    }
    if let Some(s) = &p.password_secret {
        let b = format!("{base}.passwordSecret");
        if !is_dns_label(&s.namespace) {
            out.push(ConfigIssue::new(
                format!("{b}.namespace"),
                "must be a DNS-1123 label (a Namespace name)",
            ));
        }
        if !is_dns_subdomain(&s.name) {
            out.push(ConfigIssue::new(
                format!("{b}.name"),
                "must be a DNS-1123 subdomain (a Secret name)",
            ));
        }
        let key_ok = !s.key.is_empty()
            && s.key.len() <= 253
            && s.key
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c));
        if !key_ok {
            out.push(ConfigIssue::new(
                format!("{b}.key"),
                "must be a Secret data key: letters, digits, '-', '_' or '.'",
            ));
        }
    }
}

fn validate_advertisement(
    base: &str,
    a: &AdvertisementConfig,
    known: &[IpAddr],
    out: &mut Vec<ConfigIssue>,
) {
    for (j, pool) in a.pools.iter().enumerate() {
        if pool.is_empty() {
            out.push(ConfigIssue::new(
                format!("{base}.pools[{j}]"),
                "must name a pool",
            ));
        }
    }
    if a.aggregation_length > 32 {
        out.push(ConfigIssue::new(
            format!("{base}.aggregationLength"),
            "must be 0..=32",
        ));
    }
    if a.aggregation_length_v6 > 128 {
        out.push(ConfigIssue::new(
            format!("{base}.aggregationLengthV6"),
            "must be 0..=128",
        ));
    }
    for (j, c) in a.communities.iter().enumerate() {
        if let Err(e) = c.parse::<Community>() {
            out.push(ConfigIssue::new(
                format!("{base}.communities[{j}]"),
                format!("{c:?}: {e}"),
            ));
        }
    }
    for (j, c) in a.large_communities.iter().enumerate() {
        if let Err(e) = c.parse::<LargeCommunity>() {
            out.push(ConfigIssue::new(
                format!("{base}.largeCommunities[{j}]"),
                format!("{c:?}: {e}"),
            ));
        }
    }
    for (j, p) in a.peers.iter().enumerate() {
        match p.parse::<IpAddr>() {
            Ok(addr) if known.contains(&addr) => {}
            _ => out.push(ConfigIssue::new(
                format!("{base}.peers[{j}]"),
                format!("{p:?} is not the address of a configured peer"),
            )),
        }
    }
}

impl PeerConfig {
    /// Whether a node with these labels peers with this router.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

impl AdvertisementConfig {
    /// The attributes of routes made by this advertisement. Invalid strings
    /// are skipped: [`BgpConfig::validate`] has reported them already.
    pub fn route_attrs(&self) -> RouteAttrs {
        RouteAttrs {
            communities: self
                .communities
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            large_communities: self
                .large_communities
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect(),
            local_pref: (self.local_pref != 0).then_some(self.local_pref),
            peers: self.peers.iter().filter_map(|p| p.parse().ok()).collect(),
        }
    }

    /// The prefix advertised for a load-balancer address: the address itself
    /// (/32, /128) or the aggregate that contains it.
    pub fn prefix_for(&self, ip: IpAddr) -> IpNet {
        let len = match ip {
            IpAddr::V4(_) => self.aggregation_length.min(32),
            IpAddr::V6(_) => self.aggregation_length_v6.min(128),
        };
        // The length is clamped to the family's maximum just above, so
        // `IpNet::new` cannot fail; fall back to the host route regardless.
        IpNet::new(ip, len)
            .map(|n| n.trunc())
            .unwrap_or_else(|_| IpNet::from(ip))
    }
}

/// RFC 1123 label: lowercase alphanumerics and '-', 1..=63, alnum at the ends.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Kubernetes label name part: 1..=63, alphanumerics plus `-_.`, alnum at the ends.
fn is_label_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        && s.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn check_label_key(k: &str) -> Result<(), &'static str> {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && !is_dns_subdomain(p)
    {
        return Err("the prefix before '/' must be a DNS subdomain");
    }
    if !is_label_name(name) {
        return Err(
            "the name must be 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
        );
    }
    Ok(())
}

fn check_label_value(v: &str) -> Result<(), &'static str> {
    if v.is_empty() || is_label_name(v) {
        Ok(())
    } else {
        Err(
            "must be empty or 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric",
        )
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
