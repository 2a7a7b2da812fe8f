//! What the speaker advertises: prefixes and the few attributes a user can
//! choose (communities, large communities, LOCAL_PREF, which peers).
//!
//! Everything else on the wire (ORIGIN, AS_PATH, NEXT_HOP) follows from the
//! session, so it is not part of [`RouteAttrs`]; two routes with equal
//! `RouteAttrs` share one UPDATE.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// The full desired set of routes: prefix to attributes. The speaker diffs
/// it against what each peer already has, so callers always pass everything.
pub type Routes = BTreeMap<IpNet, RouteAttrs>;

/// An address family the speaker can carry (unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4 unicast (AFI 1, SAFI 1): plain NLRI and NEXT_HOP.
    Ipv4,
    /// IPv6 unicast (AFI 2, SAFI 1): MP_REACH_NLRI / MP_UNREACH_NLRI.
    Ipv6,
}

impl Family {
    /// The family a prefix belongs to.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::Ipv4,
            IpNet::V6(_) => Family::Ipv6,
        }
    }

    /// The AFI/SAFI pair on the wire, as ROUTE-REFRESH carries it.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4 => (1, 1),
            Family::Ipv6 => (2, 1),
        }
    }

    /// The family for an AFI/SAFI pair, if it is one we carry.
    pub fn from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
        match (afi, safi) {
            (1, 1) => Some(Family::Ipv4),
            (2, 1) => Some(Family::Ipv6),
            _ => None,
        }
    }

    /// Both families, in wire order.
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];
}

/// Attributes of an advertised prefix that come from configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteAttrs {
    /// RFC 1997 communities, e.g. to tag routes for the router's policy.
    #[serde(default)]
    pub communities: Vec<Community>,
    /// RFC 8092 large communities, for 4-byte ASNs.
    #[serde(default)]
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF sent to iBGP peers (never to eBGP peers, RFC 4271 §5.1.5);
    /// `None` sends the conventional default 100.
    #[serde(default)]
    pub local_pref: Option<u32>,
    /// Peers (by address) that get this route; empty means every peer.
    #[serde(default)]
    pub peers: Vec<IpAddr>,
}

impl RouteAttrs {
    /// Whether a peer at `address` should receive a route with these attributes.
    pub fn applies_to(&self, address: IpAddr) -> bool {
        self.peers.is_empty() || self.peers.contains(&address)
    }

    /// One set of attributes for a peer that several advertisements give the
    /// same prefix: communities of both and the higher LOCAL_PREF, as MetalLB
    /// merges them.
    fn merge(&mut self, other: &RouteAttrs) {
        self.communities.extend(&other.communities);
        self.communities.sort();
        self.communities.dedup();
        self.large_communities.extend(&other.large_communities);
        self.large_communities.sort();
        self.large_communities.dedup();
        self.local_pref = self.local_pref.max(other.local_pref);
    }
}

/// What configuration asks to advertise, before it is split per peer: one
/// prefix may carry several attribute sets, as when two advertisements of one
/// pool go to different peers with different communities. A plain [`Routes`]
/// map would keep only the last of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet(BTreeMap<IpNet, Vec<RouteAttrs>>);

impl RouteSet {
    /// Adds `attrs` for `prefix`; an identical set already there is kept once.
    pub fn add(&mut self, prefix: IpNet, attrs: RouteAttrs) {
        let list = self.0.entry(prefix).or_default();
        if !list.contains(&attrs) {
            list.push(attrs);
        }
    }

    /// The routes the peer at `address` gets: every prefix with at least one
    /// attribute set that applies to it, those sets merged.
    pub fn for_peer(&self, address: IpAddr) -> Routes {
        self.0
            .iter()
            .filter_map(|(prefix, list)| Some((*prefix, resolve(list, address)?)))
            .collect()
    }

    /// What the peer at `address` gets for `prefix` alone: [`RouteSet::for_peer`] for one
    /// prefix, so a change costs a lookup rather than the whole table.
    pub fn for_peer_one(&self, prefix: &IpNet, address: IpAddr) -> Option<RouteAttrs> {
        resolve(self.0.get(prefix)?, address)
    }

    /// The prefixes whose attribute sets differ between `self` and `other` (added,
    /// removed or changed), in one merged walk of both tables.
    pub fn changed_prefixes(&self, other: &RouteSet) -> Vec<IpNet> {
        portway_provider::diff::changed_keys(&self.0, &other.0)
    }

    /// Sets the attribute sets of `prefix`; an empty list removes it.
    pub fn set(&mut self, prefix: IpNet, attrs: Vec<RouteAttrs>) {
        if attrs.is_empty() {
            self.0.remove(&prefix);
        } else {
            self.0.insert(prefix, attrs);
        }
    }

    /// The attribute sets of `prefix`, if it is advertised.
    pub fn get(&self, prefix: &IpNet) -> Option<&[RouteAttrs]> {
        self.0.get(prefix).map(Vec::as_slice)
    }

    /// Every prefix some peer gets.
    pub fn prefixes(&self) -> impl Iterator<Item = &IpNet> {
        self.0.keys()
    }

    /// Whether `prefix` goes to some peer.
    pub fn contains(&self, prefix: &IpNet) -> bool {
        self.0.contains_key(prefix)
    }

    /// Whether nothing is advertised.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many prefixes are advertised.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The attribute sets of one prefix that apply to the peer at `address`, merged.
fn resolve(list: &[RouteAttrs], address: IpAddr) -> Option<RouteAttrs> {
    let mut applying = list.iter().filter(|a| a.applies_to(address));
    let mut attrs = applying.next()?.clone();
    for more in applying {
        attrs.merge(more);
    }
    // Resolved for this peer: without the list, routes that differ only in
    // which peers they name share one UPDATE.
    attrs.peers.clear();
    Some(attrs)
}

impl From<Routes> for RouteSet {
    fn from(routes: Routes) -> Self {
        Self(routes.into_iter().map(|(p, a)| (p, vec![a])).collect())
    }
}

/// A classic community `asn:value` (RFC 1997), or a well-known name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

/// Well-known community names accepted in configuration (RFC 1997, 3765, 7999, 8326).
const WELL_KNOWN: [(&str, u32); 6] = [
    ("no-export", 0xFFFF_FF01),
    ("no-advertise", 0xFFFF_FF02),
    ("no-export-subconfed", 0xFFFF_FF03),
    ("no-peer", 0xFFFF_FF04),
    ("blackhole", 0xFFFF_029A),
    ("graceful-shutdown", 0xFFFF_0000),
];

/// Why a community string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommunityParseError {
    /// Not `a:b` with two numbers 0..=65535, nor a well-known name.
    #[error("expected \"ASN:VALUE\" with both parts 0..=65535, or one of {names}")]
    Community {
        /// The accepted well-known names.
        names: String,
    },
    /// Not `a:b:c` with three numbers 0..=4294967295.
    #[error("expected \"GLOBAL:DATA1:DATA2\" with three numbers 0..=4294967295")]
    LargeCommunity,
}

impl FromStr for Community {
    type Err = CommunityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some((_, v)) = WELL_KNOWN.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(Community(*v));
        }
        let err = || CommunityParseError::Community {
            names: WELL_KNOWN.map(|(n, _)| n).join(", "),
        };
        let (a, b) = s.split_once(':').ok_or_else(err)?;
        let a: u16 = a.parse().map_err(|_| err())?;
        let b: u16 = b.parse().map_err(|_| err())?;
        Ok(Community((u32::from(a) << 16) | u32::from(b)))
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF)
    }
}

impl Serialize for Community {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Community {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A large community `global:data1:data2` (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    /// Global administrator, usually the ASN.
    pub global: u32,
    /// First local data part.
    pub data1: u32,
    /// Second local data part.
    pub data2: u32,
}

impl FromStr for LargeCommunity {
    type Err = CommunityParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split(':').map(u32::from_str);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(global)), Some(Ok(data1)), Some(Ok(data2)), None) => Ok(LargeCommunity {
                global,
                data1,
                data2,
            }),
            _ => Err(CommunityParseError::LargeCommunity),
        }
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.global, self.data1, self.data2)
    }
}

impl Serialize for LargeCommunity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LargeCommunity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_prefixes_finds_added_removed_and_changed() {
        let net = |s: &str| -> IpNet { s.parse().expect("net") };
        let attrs = |c| RouteAttrs {
            communities: vec![Community(c)],
            ..RouteAttrs::default()
        };
        let mut a = RouteSet::default();
        a.add(net("10.0.0.1/32"), attrs(1));
        a.add(net("10.0.0.2/32"), attrs(1));
        a.add(net("10.0.0.3/32"), attrs(1));
        let mut b = a.clone();
        b.set(net("10.0.0.1/32"), vec![]);
        b.add(net("10.0.0.2/32"), attrs(2));
        b.add(net("10.0.0.4/32"), attrs(1));
        assert_eq!(
            a.changed_prefixes(&b),
            [net("10.0.0.1/32"), net("10.0.0.2/32"), net("10.0.0.4/32")]
        );
        assert_eq!(b.changed_prefixes(&a).len(), 3);
        assert!(a.changed_prefixes(&a.clone()).is_empty());
        let peer = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            b.for_peer_one(&net("10.0.0.2/32"), peer),
            b.for_peer(peer).get(&net("10.0.0.2/32")).cloned()
        );
        assert_eq!(b.for_peer_one(&net("10.0.0.1/32"), peer), None);
    }

    #[test]
    fn two_advertisements_of_one_prefix_reach_their_own_peers_merged_where_both_apply() {
        let prefix: IpNet = "203.0.113.10/32".parse().expect("net");
        let (p1, p2, p3): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
            "10.0.0.3".parse().expect("ip"),
        );
        let mut set = RouteSet::default();
        set.add(
            prefix,
            RouteAttrs {
                communities: vec![Community(1)],
                local_pref: Some(50),
                peers: vec![p1, p3],
                ..Default::default()
            },
        );
        set.add(
            prefix,
            RouteAttrs {
                communities: vec![Community(2)],
                local_pref: Some(200),
                peers: vec![p2, p3],
                ..Default::default()
            },
        );
        assert_eq!(set.for_peer(p1)[&prefix].communities, vec![Community(1)]);
        assert!(
            set.for_peer(p1)[&prefix].peers.is_empty(),
            "resolved per peer"
        );
        assert_eq!(set.for_peer(p2)[&prefix].communities, vec![Community(2)]);
        let both = &set.for_peer(p3)[&prefix];
        assert_eq!(both.communities, vec![Community(1), Community(2)]);
        assert_eq!(both.local_pref, Some(200));
        assert!(set.for_peer("10.0.0.9".parse().expect("ip")).is_empty());
    }

    #[test]
    fn communities_parse_and_print() {
        assert_eq!("64512:100".parse::<Community>(), Ok(Community(0xFC00_0064)));
        assert_eq!(Community(0xFC00_0064).to_string(), "64512:100");
        assert_eq!("no-export".parse::<Community>(), Ok(Community(0xFFFF_FF01)));
        assert!("65536:1".parse::<Community>().is_err());
        assert!("1".parse::<Community>().is_err());
        let l: LargeCommunity = "4200000001:1:2".parse().expect("valid");
        assert_eq!(l.to_string(), "4200000001:1:2");
        assert!("1:2".parse::<LargeCommunity>().is_err());
        assert!("1:2:3:4".parse::<LargeCommunity>().is_err());
    }

    #[test]
    fn attrs_round_trip_json() {
        let a = RouteAttrs {
            communities: vec!["64512:7".parse().expect("valid")],
            large_communities: vec!["1:2:3".parse().expect("valid")],
            local_pref: Some(200),
            peers: vec!["10.0.0.1".parse().expect("valid")],
        };
        let json = serde_json::to_string(&a).expect("serializes");
        assert_eq!(
            serde_json::from_str::<RouteAttrs>(&json).expect("parses"),
            a
        );
    }
}
