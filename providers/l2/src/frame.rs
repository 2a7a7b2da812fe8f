//! Ethernet frames the responder reads (ARP requests, neighbour
//! solicitations) and writes (replies, gratuitous ARP, neighbour
//! advertisements).
//!
//! Parsing and building go through `etherparse` (length checks, ICMPv6
//! checksums, NDP option iteration), and this module adds the policy on top:
//! which requests deserve an answer at all. Anything malformed, truncated,
//! VLAN-tagged, from ourselves, a gratuitous announcement from someone else
//! or an IPv6 duplicate-address probe yields `None` and is ignored.
//!
//! Announcement shapes (see docs/l2.md for why):
//! - IPv4 takeover: an ARP *request* `who-has VIP tell VIP` (RFC 5227 style,
//!   target MAC zero) and an ARP *reply* `VIP is-at MAC` with target MAC =
//!   sender MAC, both broadcast; Linux treats only that reply form as
//!   gratuitous, other stacks only honour one of the two.
//! - IPv6 takeover: unsolicited NA to ff02::1 with Override set.
//! - Answers to NS carry Solicited *and* Override: the VIP is unique, not
//!   anycast, and without O a receiver keeps the dead owner's MAC
//!   (RFC 4861 §7.2.5).

use etherparse::icmpv6::{
    NdpOptionSlice, NeighborAdvertisementHeader, NeighborSolicitationPayloadSlice,
};
use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, EtherType, Ethernet2Header, Ethernet2Slice,
    Icmpv6Slice, Icmpv6Type, IpNumber, Ipv6Slice, PacketBuilder,
};
use std::net::{Ipv4Addr, Ipv6Addr};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// The Ethernet broadcast address.
pub const BROADCAST: Mac = [0xff; 6];

/// Shortest Ethernet frame without FCS; shorter frames are padded so that
/// drivers that do not pad (some do not) never send runts.
const MIN_FRAME: usize = 60;

/// A request for one of our addresses that may deserve an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solicitation {
    /// ARP request `who-has target tell sender_ip`.
    Arp {
        /// Sender hardware address: where the reply goes.
        sender_mac: Mac,
        /// Sender protocol address (0.0.0.0 for an RFC 5227 probe).
        sender_ip: Ipv4Addr,
        /// The address asked for.
        target: Ipv4Addr,
    },
    /// IPv6 neighbour solicitation for `target`.
    Ns {
        /// Source address of the solicitation: where the answer goes.
        source: Ipv6Addr,
        /// Link-layer address to answer to: the source link-layer address
        /// option, else the Ethernet source.
        reply_mac: Mac,
        /// The address asked for.
        target: Ipv6Addr,
    },
}

impl Solicitation {
    /// The address being asked for.
    pub fn target(&self) -> std::net::IpAddr {
        match self {
            Solicitation::Arp { target, .. } => (*target).into(),
            Solicitation::Ns { target, .. } => (*target).into(),
        }
    }
}

/// Reads one received frame. `own_mac` is the receiving interface's MAC:
/// frames from it are our own echoes, and unicast frames to another MAC were
/// not for us.
pub fn parse(frame: &[u8], own_mac: Mac) -> Option<Solicitation> {
    let eth = Ethernet2Slice::from_slice_without_fcs(frame).ok()?;
    let (dst, src) = (eth.destination(), eth.source());
    if src == own_mac || src[0] & 1 == 1 {
        return None; // our own frame, or a multicast source (invalid)
    }
    match eth.ether_type() {
        EtherType::ARP => {
            if dst != BROADCAST && dst != own_mac {
                return None;
            }
            parse_arp(eth.payload_slice())
        }
        EtherType::IPV6 => {
            // Our MAC, or an IPv6 multicast MAC (33:33:…) such as the
            // solicited-node group of the target.
            if dst != own_mac && !(dst[0] == 0x33 && dst[1] == 0x33) {
                return None;
            }
            parse_ns(eth.payload_slice(), src)
        }
        _ => None,
    }
}

fn parse_arp(payload: &[u8]) -> Option<Solicitation> {
    let arp = ArpPacketSlice::from_slice(payload)
        .ok()?
        .to_packet()
        .try_eth_ipv4()
        .ok()?;
    if arp.operation != ArpOperation::REQUEST {
        return None;
    }
    let (sender_ip, target) = (arp.sender_ipv4_addr(), arp.target_ipv4_addr());
    // Someone else's gratuitous ARP announces, it does not ask.
    if sender_ip == target || arp.sender_mac[0] & 1 == 1 {
        return None;
    }
    // Nobody owns a group, broadcast or unspecified address.
    if target.is_multicast() || target.is_broadcast() || target.is_unspecified() {
        return None;
    }
    Some(Solicitation::Arp {
        sender_mac: arp.sender_mac,
        sender_ip,
        target,
    })
}

fn parse_ns(payload: &[u8], eth_src: Mac) -> Option<Solicitation> {
    let ip = Ipv6Slice::from_slice(payload).ok()?;
    let header = ip.header();
    // RFC 4861 §7.1.1: hop limit 255 proves the sender is on-link; NDP
    // carries no extension headers, and a fragment cannot be validated.
    if header.hop_limit() != 255
        || header.next_header() != IpNumber::IPV6_ICMP
        || ip.is_payload_fragmented()
    {
        return None;
    }
    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).ok()?;
    if icmp.icmp_type() != Icmpv6Type::NeighborSolicitation
        || icmp.code_u8() != 0
        || !icmp.is_checksum_valid(header.source(), header.destination())
    {
        return None;
    }
    let ns = NeighborSolicitationPayloadSlice::from_slice(icmp.payload()).ok()?;
    let (source, target) = (header.source_addr(), ns.target_address());
    // Duplicate address detection (source ::) is another host probing the
    // address; answering it would only make that host give up silently.
    if source.is_unspecified() || source.is_multicast() || target.is_multicast() {
        return None;
    }
    let mut reply_mac = eth_src;
    for option in ns.options_iterator() {
        match option.ok()? {
            NdpOptionSlice::SourceLinkLayerAddress(slla) => {
                reply_mac = slla.link_layer_address().try_into().ok()?;
            }
            _ => continue,
        }
    }
    Some(Solicitation::Ns {
        source,
        reply_mac,
        target,
    })
}

fn ethernet(src: Mac, dst: Mac, ether_type: EtherType, payload: &[u8]) -> Vec<u8> {
    let header = Ethernet2Header {
        source: src,
        destination: dst,
        ether_type,
    };
    let mut frame = Vec::with_capacity(MIN_FRAME.max(14 + payload.len()));
    frame.extend_from_slice(&header.to_bytes());
    frame.extend_from_slice(payload);
    if frame.len() < MIN_FRAME {
        frame.resize(MIN_FRAME, 0);
    }
    frame
}

fn arp(src: Mac, dst: Mac, packet: ArpEthIpv4Packet) -> Vec<u8> {
    ethernet(src, dst, EtherType::ARP, &packet.to_bytes())
}

/// The unicast answer `vip is-at our_mac` to a request from
/// `(to_mac, to_ip)`.
pub fn arp_reply(our_mac: Mac, vip: Ipv4Addr, to_mac: Mac, to_ip: Ipv4Addr) -> Vec<u8> {
    arp(
        our_mac,
        to_mac,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: our_mac,
            sender_ipv4: vip.octets(),
            target_mac: to_mac,
            target_ipv4: to_ip.octets(),
        },
    )
}

/// A broadcast ARP request `who-has target tell sender_ip` (sender 0.0.0.0 makes it an
/// RFC 5227 probe; the lab's prober tags each request with its sender address).
pub fn arp_request(our_mac: Mac, sender_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(
        our_mac,
        BROADCAST,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: our_mac,
            sender_ipv4: sender_ip.octets(),
            target_mac: [0; 6],
            target_ipv4: target.octets(),
        },
    )
}

/// An ARP reply as seen on the wire: `sender_ip is-at sender_mac`, sent to `target_ip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpReply {
    /// Who answers.
    pub sender_mac: Mac,
    /// The address it claims.
    pub sender_ip: Ipv4Addr,
    /// The address of whoever asked.
    pub target_ip: Ipv4Addr,
}

/// Reads an ARP reply (any destination); `None` for anything else.
pub fn parse_arp_reply(frame: &[u8]) -> Option<ArpReply> {
    let eth = Ethernet2Slice::from_slice_without_fcs(frame).ok()?;
    if eth.ether_type() != EtherType::ARP {
        return None;
    }
    let arp = ArpPacketSlice::from_slice(eth.payload_slice())
        .ok()?
        .to_packet()
        .try_eth_ipv4()
        .ok()?;
    (arp.operation == ArpOperation::REPLY).then(|| ArpReply {
        sender_mac: arp.sender_mac,
        sender_ip: arp.sender_ipv4_addr(),
        target_ip: arp.target_ipv4_addr(),
    })
}

/// Gratuitous ARP request: broadcast `who-has vip tell vip`, target MAC zero.
pub fn garp_request(our_mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    arp(
        our_mac,
        BROADCAST,
        ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: our_mac,
            sender_ipv4: vip.octets(),
            target_mac: [0; 6],
            target_ipv4: vip.octets(),
        },
    )
}

/// Gratuitous ARP reply: broadcast `vip is-at our_mac` with target MAC equal
/// to the sender MAC, the form Linux's `arp_is_garp` accepts.
pub fn garp_reply(our_mac: Mac, vip: Ipv4Addr) -> Vec<u8> {
    arp(
        our_mac,
        BROADCAST,
        ArpEthIpv4Packet {
            operation: ArpOperation::REPLY,
            sender_mac: our_mac,
            sender_ipv4: vip.octets(),
            target_mac: our_mac,
            target_ipv4: vip.octets(),
        },
    )
}

/// A neighbour advertisement for `target` with a target link-layer address
/// option. `solicited` answers an NS (sent to its source); otherwise it is
/// an unsolicited announcement to all nodes (ff02::1). Override is always
/// set: the VIP moves as a whole.
pub fn neighbor_advertisement(
    our_mac: Mac,
    source: Ipv6Addr,
    target: Ipv6Addr,
    solicited: Option<(Ipv6Addr, Mac)>,
) -> Vec<u8> {
    let (dst_ip, dst_mac) = solicited.unwrap_or((
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        [0x33, 0x33, 0, 0, 0, 1],
    ));
    let flags = NeighborAdvertisementHeader {
        router: false,
        solicited: solicited.is_some(),
        r#override: true,
    };
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&target.octets());
    payload.extend_from_slice(&[2, 1]); // option 2 (target link-layer address), 8 bytes
    payload.extend_from_slice(&our_mac);
    let builder = PacketBuilder::ethernet2(our_mac, dst_mac)
        .ipv6(source.octets(), dst_ip.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(flags));
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail for lack of space, and the payload is
    // far below the IPv6 payload limit, so an error here is a bug in the
    // builder; fall back to an empty frame the driver will not send.
    if builder.write_to_vec(&mut frame, &payload).is_err() {
        return Vec::new();
    }
    frame
}

/// The Ethernet multicast address of the solicited-node group of `ip`
/// (33:33:ff + the low 24 bits), where neighbour solicitations for it go.
pub fn solicited_node_mac(ip: Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

/// The solicited-node multicast group of `ip` (ff02::1:ffXX:XXXX).
pub fn solicited_node_group(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
