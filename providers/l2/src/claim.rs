//! Address conflicts on the wire (issue 24, item 1): frames in which another host says it
//! holds an address, and the probes that make a holder say so.
//!
//! A *claim* is any frame from another MAC that uses an address as its own: an ARP reply
//! or request whose sender address is it (a gratuitous ARP, a kernel answering), a
//! neighbour advertisement for it, or an IPv6 duplicate-address probe for it (a host
//! about to configure it; the responder does not answer those, so the host would take
//! it). An RFC 5227 ARP probe (sender 0.0.0.0) is a question, not a claim: the responder
//! answers it and the prober backs off.
//!
//! Probes: an ARP request `who-has VIP tell 0.0.0.0` (RFC 5227 §2.1.1) and a neighbour
//! solicitation from `::` to the VIP's solicited-node group (RFC 4862 §5.4.2). A holder
//! answers the first with a reply to our MAC and the second with an advertisement to
//! all nodes, both of which this module reads as claims.

use crate::frame::{self, Mac};
use etherparse::icmpv6::{
    NdpOptionSlice, NeighborAdvertisementPayloadSlice, NeighborSolicitationPayloadSlice,
};
use etherparse::{
    ArpOperation, ArpPacketSlice, EtherType, Ethernet2Slice, Icmpv6Slice, Icmpv6Type, IpNumber,
    Ipv6Slice, PacketBuilder,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Another host using an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The address.
    pub ip: IpAddr,
    /// Who uses it (the ARP sender or the advertised link-layer address).
    pub mac: Mac,
    /// A duplicate address detection probe (RFC 4862): a host about to take the address,
    /// not yet using it. The responder defends an address it answers for against one,
    /// and lets one for an address it probes itself pass (`responder.rs`).
    pub tentative: bool,
}

/// The claim a received frame makes, if any. `own_mac` is the receiving interface's.
pub fn parse_claim(bytes: &[u8], own_mac: Mac) -> Option<Claim> {
    let eth = Ethernet2Slice::from_slice_without_fcs(bytes).ok()?;
    let src = eth.source();
    if src == own_mac || src[0] & 1 == 1 {
        return None;
    }
    match eth.ether_type() {
        EtherType::ARP => {
            let arp = ArpPacketSlice::from_slice(eth.payload_slice())
                .ok()?
                .to_packet()
                .try_eth_ipv4()
                .ok()?;
            let sender = arp.sender_ipv4_addr();
            let usable =
                !sender.is_unspecified() && !sender.is_broadcast() && !sender.is_multicast();
            let op_ok =
                arp.operation == ArpOperation::REPLY || arp.operation == ArpOperation::REQUEST;
            (usable && op_ok && arp.sender_mac != own_mac).then_some(Claim {
                ip: sender.into(),
                mac: arp.sender_mac,
                tentative: false,
            })
        }
        EtherType::IPV6 => ndp_claim(eth.payload_slice(), src),
        _ => None,
    }
}

fn ndp_claim(payload: &[u8], eth_src: Mac) -> Option<Claim> {
    let ip = Ipv6Slice::from_slice(payload).ok()?;
    let header = ip.header();
    if header.hop_limit() != 255
        || header.next_header() != IpNumber::IPV6_ICMP
        || ip.is_payload_fragmented()
    {
        return None;
    }
    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).ok()?;
    if icmp.code_u8() != 0 || !icmp.is_checksum_valid(header.source(), header.destination()) {
        return None;
    }
    match icmp.icmp_type() {
        Icmpv6Type::NeighborAdvertisement(_) => {
            let na = NeighborAdvertisementPayloadSlice::from_slice(icmp.payload()).ok()?;
            let mut mac = eth_src;
            for option in na.options_iterator() {
                if let NdpOptionSlice::TargetLinkLayerAddress(t) = option.ok()? {
                    mac = t.link_layer_address().try_into().ok()?;
                }
            }
            Some(Claim {
                ip: na.target_address().into(),
                mac,
                tentative: false,
            })
        }
        // Duplicate address detection: a host about to take the address.
        Icmpv6Type::NeighborSolicitation if header.source_addr().is_unspecified() => {
            let ns = NeighborSolicitationPayloadSlice::from_slice(icmp.payload()).ok()?;
            Some(Claim {
                ip: ns.target_address().into(),
                mac: eth_src,
                tentative: true,
            })
        }
        _ => None,
    }
}

/// The probe for `ip`: an RFC 5227 ARP probe or an RFC 4862 DAD solicitation.
pub fn probe(our_mac: Mac, ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => frame::arp_request(our_mac, Ipv4Addr::UNSPECIFIED, v4),
        IpAddr::V6(v6) => dad_probe(our_mac, v6),
    }
}

fn dad_probe(our_mac: Mac, target: Ipv6Addr) -> Vec<u8> {
    let group = frame::solicited_node_group(target);
    let builder = PacketBuilder::ethernet2(our_mac, frame::solicited_node_mac(target))
        .ipv6(Ipv6Addr::UNSPECIFIED.octets(), group.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation);
    let payload = target.octets();
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot run out of room and the payload is 16 bytes: an error
    // would be a builder bug; an empty frame is not sent.
    if builder.write_to_vec(&mut out, &payload).is_err() {
        return Vec::new();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    const MAC_A: Mac = [2, 0, 0, 0, 0, 0x0a];
    const MAC_B: Mac = [2, 0, 0, 0, 0, 0x0b];

    fn v4(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn replies_announcements_and_dad_probes_claim_questions_do_not() {
        // The kernel of .2 (…0b) answering: it holds .2.
        assert_eq!(
            parse_claim(&KERNEL_ARP_REPLY_TO_ARPING, MAC_A),
            Some(Claim {
                ip: v4("198.51.100.2"),
                mac: MAC_B,
                tentative: false,
            })
        );
        // arping -U from .1 (…0a): a gratuitous request and reply.
        for garp in [&ARPING_GARP_REQUEST, &ARPING_GARP_REPLY] {
            assert_eq!(
                parse_claim(garp, MAC_B),
                Some(Claim {
                    ip: v4("198.51.100.1"),
                    mac: MAC_A,
                    tentative: false,
                })
            );
        }
        // An RFC 5227 probe asks; it claims nothing.
        assert_eq!(parse_claim(&ARPING_DAD_PROBE, MAC_B), None);
        // Our own frames are no claim.
        assert_eq!(parse_claim(&ARPING_GARP_REQUEST, MAC_A), None);
        // An NA from the kernel of b claims b's address.
        let na = parse_claim(&KERNEL_NA_TO_NDISC6, MAC_A).expect("NA");
        assert_eq!(na.mac, MAC_B);
        assert!(na.ip.is_ipv6());
        // An ordinary NS (source set) asks.
        assert_eq!(parse_claim(&NDISC6_NS, MAC_B), None);
    }

    #[test]
    fn our_probes_are_well_formed_and_a_dad_probe_reads_as_a_claim_elsewhere() {
        let v6: Ipv6Addr = "2001:db8:1::100".parse().expect("ip");
        let p6 = probe(MAC_A, v6.into());
        assert_eq!(
            parse_claim(&p6, MAC_B),
            Some(Claim {
                ip: v6.into(),
                mac: MAC_A,
                tentative: true,
            })
        );
        // The responder ignores DAD probes: it never answers ours.
        assert_eq!(frame::parse(&p6, MAC_B), None);
        let p4 = probe(MAC_A, v4("198.51.100.100"));
        // An ARP probe is answered by a holder (the responder answers it for owned IPs).
        assert!(matches!(
            frame::parse(&p4, MAC_B),
            Some(frame::Solicitation::Arp { sender_ip, .. }) if sender_ip.is_unspecified()
        ));
        assert_eq!(parse_claim(&p4, MAC_B), None);
    }
}
