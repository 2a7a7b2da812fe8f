//! UPDATE messages we send: packed announcements, packed withdrawals and
//! End-of-RIB markers, encoded with `netgauze-bgp-pkt`.
//!
//! Packing: all prefixes of one family that share [`RouteAttrs`] go into as
//! few UPDATEs as fit in 4096 bytes (about 800 IPv4 /32s or 235 IPv6 /128s
//! per message), so 10,000 routes take a dozen messages, not 10,000.
//!
//! Attributes follow from the session (RFC 4271 §5): ORIGIN IGP; AS_PATH
//! empty to iBGP peers and our AS to eBGP peers (4-byte when both sides
//! have the capability, else AS_TRANS plus AS4_PATH per RFC 6793);
//! NEXT_HOP or the MP_REACH next hop = next-hop self; LOCAL_PREF only to
//! iBGP peers; communities as configured.

use crate::config::AS_TRANS;
use crate::route::{Family, RouteAttrs};
use crate::wire::{EncodeError, HEADER_LEN, MAX_LEN, write};
use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, Communities,
    LargeCommunities, LocalPreference, MpReach, MpUnreach, NextHop, Origin, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_parse_utils::WritablePdu;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Fixed part of an UPDATE: header plus the two 2-byte length fields.
const UPDATE_FIXED: usize = HEADER_LEN + 4;

/// Encodes UPDATEs for one established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateBuilder {
    /// Our ASN, prepended for eBGP.
    pub local_asn: u32,
    /// iBGP session (same ASN): empty AS_PATH, LOCAL_PREF included.
    pub ibgp: bool,
    /// Both sides sent the 4-octet AS capability.
    pub asn4: bool,
    /// Next hop for IPv4 routes (our end of the session, or the node's IPv4).
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Global next hop for IPv6 routes.
    pub next_hop_v6: Option<Ipv6Addr>,
}

/// Builds a path attribute, switching to a 2-byte length when the value
/// needs it (netgauze does not decide that itself).
fn attr(
    optional: bool,
    transitive: bool,
    value: PathAttributeValue,
) -> Result<PathAttribute, EncodeError> {
    let bad = |e: (PathAttributeValue, _)| EncodeError::Codec(format!("{:?}", e.1));
    let short = PathAttribute::from(optional, transitive, false, false, value).map_err(bad)?;
    if short.len() <= 2 + 1 + 255 {
        return Ok(short);
    }
    PathAttribute::from(optional, transitive, false, true, short.value().clone()).map_err(bad)
}

/// Wire size of a prefix in NLRI: length octet plus the significant bytes.
fn prefix_size(net: &IpNet) -> usize {
    1 + usize::from(net.prefix_len()).div_ceil(8)
}

fn v4_nlri(nets: &[IpNet]) -> Vec<Ipv4UnicastAddress> {
    nets.iter()
        .filter_map(|n| match n {
            IpNet::V4(n) => Ipv4Unicast::from_net(*n)
                .ok()
                .map(Ipv4UnicastAddress::new_no_path_id),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn v6_nlri(nets: &[IpNet]) -> Vec<Ipv6UnicastAddress> {
    nets.iter()
        .filter_map(|n| match n {
            IpNet::V6(n) => Ipv6Unicast::from_net(*n)
                .ok()
                .map(|u| Ipv6UnicastAddress::new(None, u)),
            IpNet::V4(_) => None,
        })
        .collect()
}

/// Whether the codec can carry this prefix as unicast NLRI (not multicast
/// or broadcast); others are dropped before they reach the session.
pub fn is_advertisable(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => Ipv4Unicast::from_net(*n).is_ok(),
        IpNet::V6(n) => Ipv6Unicast::from_net(*n).is_ok(),
    }
}

/// Splits `prefixes` into runs whose NLRI bytes fit in `room`.
fn chunks(prefixes: &[IpNet], room: usize) -> Vec<&[IpNet]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        let size = prefix_size(p);
        if used + size > room && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += size;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

fn encode_update(
    withdrawn: Vec<Ipv4UnicastAddress>,
    attrs: Vec<PathAttribute>,
    nlri: Vec<Ipv4UnicastAddress>,
) -> Result<Vec<u8>, EncodeError> {
    let bytes = write(&BgpMessage::Update(BgpUpdateMessage::new(
        withdrawn, attrs, nlri,
    )))?;
    if bytes.len() > MAX_LEN {
        return Err(EncodeError::Codec(format!(
            "UPDATE of {} bytes exceeds {MAX_LEN}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

impl UpdateBuilder {
    /// ORIGIN, AS_PATH (+AS4_PATH), LOCAL_PREF and communities, in type order
    /// except for the next-hop attribute the caller adds.
    fn common_attrs(&self, attrs: &RouteAttrs) -> Result<Vec<(u8, PathAttribute)>, EncodeError> {
        let mut out = vec![(
            1,
            attr(false, true, PathAttributeValue::Origin(Origin::IGP))?,
        )];
        let path_asns: Vec<u32> = if self.ibgp {
            vec![]
        } else {
            vec![self.local_asn]
        };
        let seg = |asns: &[u32]| {
            if asns.is_empty() {
                vec![]
            } else {
                vec![As4PathSegment::new(
                    AsPathSegmentType::AsSequence,
                    asns.to_vec(),
                )]
            }
        };
        let as_path = if self.asn4 {
            AsPath::As4PathSegments(seg(&path_asns).into())
        } else {
            let two: Vec<u16> = path_asns
                .iter()
                .map(|a| u16::try_from(*a).unwrap_or(AS_TRANS as u16))
                .collect();
            let segs = if two.is_empty() {
                vec![]
            } else {
                vec![As2PathSegment::new(AsPathSegmentType::AsSequence, two)]
            };
            AsPath::As2PathSegments(segs.into())
        };
        out.push((2, attr(false, true, PathAttributeValue::AsPath(as_path))?));
        if self.ibgp {
            let lp = LocalPreference::new(attrs.local_pref.unwrap_or(100));
            out.push((
                5,
                attr(false, true, PathAttributeValue::LocalPreference(lp))?,
            ));
        }
        if !attrs.communities.is_empty() {
            let c: Vec<Community> = attrs
                .communities
                .iter()
                .map(|c| Community::new(c.0))
                .collect();
            out.push((
                8,
                attr(
                    true,
                    true,
                    PathAttributeValue::Communities(Communities::new(c)),
                )?,
            ));
        }
        if !self.asn4 && path_asns.iter().any(|a| *a > u32::from(u16::MAX)) {
            let p = As4Path::new(seg(&path_asns));
            out.push((17, attr(true, true, PathAttributeValue::As4Path(p))?));
        }
        if !attrs.large_communities.is_empty() {
            let c: Vec<LargeCommunity> = attrs
                .large_communities
                .iter()
                .map(|l| LargeCommunity::new(l.global, l.data1, l.data2))
                .collect();
            out.push((
                32,
                attr(
                    true,
                    true,
                    PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
                )?,
            ));
        }
        Ok(out)
    }

    /// Whether routes of `family` can be sent (a next hop is known).
    pub fn can_send(&self, family: Family) -> bool {
        match family {
            Family::Ipv4 => self.next_hop_v4.is_some(),
            Family::Ipv6 => self.next_hop_v6.is_some(),
        }
    }

    /// Packed announcements of `prefixes` (all of `family`) sharing `attrs`.
    pub fn announce(
        &self,
        family: Family,
        attrs: &RouteAttrs,
        prefixes: &[IpNet],
    ) -> Result<Vec<Vec<u8>>, EncodeError> {
        let mut common = self.common_attrs(attrs)?;
        let mut out = Vec::new();
        match family {
            Family::Ipv4 => {
                let nh = self
                    .next_hop_v4
                    .ok_or(EncodeError::Codec("no IPv4 next hop".into()))?;
                common.push((
                    3,
                    attr(false, true, PathAttributeValue::NextHop(NextHop::new(nh)))?,
                ));
                common.sort_by_key(|(t, _)| *t);
                let attrs: Vec<PathAttribute> = common.into_iter().map(|(_, a)| a).collect();
                let fixed = UPDATE_FIXED + attrs.iter().map(|a| a.len()).sum::<usize>();
                for chunk in chunks(prefixes, MAX_LEN.saturating_sub(fixed)) {
                    out.push(encode_update(vec![], attrs.clone(), v4_nlri(chunk))?);
                }
            }
            Family::Ipv6 => {
                let nh = self
                    .next_hop_v6
                    .ok_or(EncodeError::Codec("no IPv6 next hop".into()))?;
                let reach = |nlri: Vec<Ipv6UnicastAddress>| {
                    let mp = MpReach::Ipv6Unicast {
                        next_hop_global: nh,
                        next_hop_local: None,
                        nlri: nlri.into(),
                    };
                    PathAttribute::from(true, false, false, true, PathAttributeValue::MpReach(mp))
                        .map_err(|e| EncodeError::Codec(format!("{:?}", e.1)))
                };
                let fixed = UPDATE_FIXED
                    + common.iter().map(|(_, a)| a.len()).sum::<usize>()
                    + reach(vec![])?.len();
                for chunk in chunks(prefixes, MAX_LEN.saturating_sub(fixed)) {
                    let mut attrs = common.clone();
                    attrs.push((14, reach(v6_nlri(chunk))?));
                    attrs.sort_by_key(|(t, _)| *t);
                    out.push(encode_update(
                        vec![],
                        attrs.into_iter().map(|(_, a)| a).collect(),
                        vec![],
                    )?);
                }
            }
        }
        Ok(out)
    }

    /// Packed withdrawals of `prefixes` (all of `family`).
    pub fn withdraw(
        &self,
        family: Family,
        prefixes: &[IpNet],
    ) -> Result<Vec<Vec<u8>>, EncodeError> {
        let mut out = Vec::new();
        match family {
            Family::Ipv4 => {
                for chunk in chunks(prefixes, MAX_LEN - UPDATE_FIXED) {
                    out.push(encode_update(v4_nlri(chunk), vec![], vec![])?);
                }
            }
            Family::Ipv6 => {
                let fixed = UPDATE_FIXED + unreach(vec![])?.len();
                for chunk in chunks(prefixes, MAX_LEN - fixed) {
                    out.push(encode_update(
                        vec![],
                        vec![unreach(v6_nlri(chunk))?],
                        vec![],
                    )?);
                }
            }
        }
        Ok(out)
    }
}

fn unreach(nlri: Vec<Ipv6UnicastAddress>) -> Result<PathAttribute, EncodeError> {
    let mp = MpUnreach::Ipv6Unicast { nlri: nlri.into() };
    PathAttribute::from(true, false, false, true, PathAttributeValue::MpUnreach(mp))
        .map_err(|e| EncodeError::Codec(format!("{:?}", e.1)))
}

/// The End-of-RIB marker (RFC 4724 §2): an empty UPDATE for IPv4, an empty
/// MP_UNREACH_NLRI for IPv6.
pub fn end_of_rib(family: Family) -> Result<Vec<u8>, EncodeError> {
    match family {
        Family::Ipv4 => encode_update(vec![], vec![], vec![]),
        Family::Ipv6 => encode_update(vec![], vec![unreach(vec![])?], vec![]),
    }
}

#[cfg(test)]
#[path = "update_tests.rs"]
mod tests;
