use super::*;
use crate::fixtures::*;
use proptest::prelude::*;

const MAC_A: Mac = [2, 0, 0, 0, 0, 0x0a];
const MAC_B: Mac = [2, 0, 0, 0, 0, 0x0b];

fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("ipv4")
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("ipv6")
}

#[test]
fn arping_and_kernel_requests_parse() {
    let expect = Some(Solicitation::Arp {
        sender_mac: MAC_A,
        sender_ip: v4("198.51.100.1"),
        target: v4("198.51.100.2"),
    });
    assert_eq!(parse(&ARPING_REQUEST, MAC_B), expect);
    assert_eq!(parse(&KERNEL_ARP_REQUEST, MAC_B), expect);
    // The kernel pads nothing on veth; a NIC delivers 60 bytes: same answer.
    let mut padded = KERNEL_ARP_REQUEST.to_vec();
    padded.resize(60, 0);
    assert_eq!(parse(&padded, MAC_B), expect);
}

#[test]
fn probes_are_answered_but_announcements_and_replies_are_not() {
    assert_eq!(
        parse(&ARPING_DAD_PROBE, MAC_B),
        Some(Solicitation::Arp {
            sender_mac: MAC_A,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target: v4("198.51.100.9"),
        })
    );
    assert_eq!(parse(&ARPING_GARP_REQUEST, MAC_B), None);
    assert_eq!(parse(&ARPING_GARP_REPLY, MAC_B), None);
    assert_eq!(parse(&KERNEL_ARP_REPLY, MAC_A), None);
    // Our own request echoed back is ignored.
    assert_eq!(parse(&ARPING_REQUEST, MAC_A), None);
    // A request unicast to someone else's MAC is not ours to answer.
    let mut unicast = ARPING_REQUEST;
    unicast[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0x0c]);
    assert_eq!(parse(&unicast, MAC_B), None);
    unicast[..6].copy_from_slice(&MAC_B);
    assert!(
        parse(&unicast, MAC_B).is_some(),
        "unicast to us (NUD) is answered"
    );
}

#[test]
fn ndisc6_and_kernel_solicitations_parse() {
    assert_eq!(
        parse(&NDISC6_NS, MAC_B),
        Some(Solicitation::Ns {
            source: v6("fe80::ff:fe00:a"),
            reply_mac: MAC_A,
            target: v6("2001:db8:1::2"),
        })
    );
    assert_eq!(
        parse(&KERNEL_NS, MAC_B),
        Some(Solicitation::Ns {
            source: v6("2001:db8:1::1"),
            reply_mac: MAC_A,
            target: v6("2001:db8:1::2"),
        })
    );
    for other in [
        &KERNEL_NA[..],
        &KERNEL_NA_TO_NDISC6[..],
        &ICMPV6_PORT_UNREACHABLE[..],
    ] {
        assert_eq!(parse(other, MAC_A), None);
    }
}

#[test]
fn tampered_solicitations_are_ignored() {
    // Hop limit below 255: not on-link.
    let mut f = KERNEL_NS;
    f[14 + 7] = 64;
    assert_eq!(parse(&f, MAC_B), None);
    // One flipped bit in the target: checksum fails.
    let mut f = KERNEL_NS;
    f[14 + 40 + 8 + 15] ^= 1;
    assert_eq!(parse(&f, MAC_B), None);
    // DAD: source :: (checksum recomputed so only the source differs).
    let dad = rebuild_ns(Ipv6Addr::UNSPECIFIED, v6("2001:db8:1::2"), None);
    assert_eq!(parse(&dad, MAC_B), None);
    // A zero-length option is malformed (RFC 4861 §4.6).
    let bad_option = rebuild_ns(
        v6("2001:db8:1::1"),
        v6("2001:db8:1::2"),
        Some(&[1, 0, 0, 0, 0, 0, 0, 0]),
    );
    assert_eq!(parse(&bad_option, MAC_B), None);
    let good = rebuild_ns(
        v6("2001:db8:1::1"),
        v6("2001:db8:1::2"),
        Some(&[1, 1, 2, 0, 0, 0, 0, 0x0a]),
    );
    assert!(parse(&good, MAC_B).is_some());
    // Truncated anywhere: ignored, never a panic.
    for len in 0..KERNEL_NS.len() {
        assert_eq!(parse(&KERNEL_NS[..len], MAC_B), None, "len {len}");
    }
    for len in 0..ARPING_REQUEST.len() {
        assert_eq!(parse(&ARPING_REQUEST[..len], MAC_B), None, "len {len}");
    }
}

/// An NS from `source` for `target` with the given options, built with
/// etherparse so the checksum is right.
fn rebuild_ns(source: Ipv6Addr, target: Ipv6Addr, options: Option<&[u8]>) -> Vec<u8> {
    let mut payload = target.octets().to_vec();
    payload.extend_from_slice(options.unwrap_or(&[]));
    let mut out = Vec::new();
    PacketBuilder::ethernet2(MAC_A, solicited_node_mac(target))
        .ipv6(source.octets(), solicited_node_group(target).octets(), 255)
        .icmpv6(Icmpv6Type::NeighborSolicitation)
        .write_to_vec(&mut out, &payload)
        .expect("build");
    out
}

#[test]
fn built_arp_reply_matches_the_kernels() {
    let ours = arp_reply(MAC_B, v4("198.51.100.2"), MAC_A, v4("198.51.100.1"));
    assert_eq!(ours.len(), 60);
    assert_eq!(&ours[..42], &KERNEL_ARP_REPLY_TO_ARPING[..]);
    assert!(ours[42..].iter().all(|b| *b == 0));
}

#[test]
fn built_garp_matches_arping_and_linux_rules() {
    let req = garp_request(MAC_A, v4("198.51.100.1"));
    // arping -U writes target MAC ff:ff:…; we follow RFC 5227 (zero).
    let mut expected = ARPING_GARP_REQUEST;
    expected[32..38].copy_from_slice(&[0; 6]);
    assert_eq!(&req[..42], &expected[..]);
    let rep = garp_reply(MAC_A, v4("198.51.100.1"));
    // arping -A writes target MAC = sender MAC, as Linux's arp_is_garp wants.
    assert_eq!(&rep[..42], &ARPING_GARP_REPLY[..]);
    // Neither is mistaken for a request by another responder.
    assert_eq!(parse(&req, MAC_B), None);
    assert_eq!(parse(&rep, MAC_B), None);
}

#[test]
fn built_solicited_na_matches_the_kernels() {
    let ours = neighbor_advertisement(
        MAC_B,
        v6("2001:db8:1::2"),
        v6("2001:db8:1::2"),
        Some((v6("2001:db8:1::1"), MAC_A)),
    );
    assert_eq!(ours, KERNEL_NA.to_vec());
    let ours = neighbor_advertisement(
        MAC_B,
        v6("2001:db8:1::2"),
        v6("2001:db8:1::2"),
        Some((v6("fe80::ff:fe00:a"), MAC_A)),
    );
    assert_eq!(ours, KERNEL_NA_TO_NDISC6.to_vec());
}

#[test]
fn built_unsolicited_na_goes_to_all_nodes_with_override() {
    let f = neighbor_advertisement(MAC_B, v6("fe80::ff:fe00:b"), v6("2001:db8:1::100"), None);
    assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    let ip = Ipv6Slice::from_slice(&f[14..]).expect("ipv6");
    assert_eq!(ip.header().destination_addr(), v6("ff02::1"));
    assert_eq!(ip.header().hop_limit(), 255);
    let icmp = Icmpv6Slice::from_slice(ip.payload().payload).expect("icmpv6");
    assert!(icmp.is_checksum_valid(ip.header().source(), ip.header().destination()));
    assert_eq!(
        icmp.icmp_type(),
        Icmpv6Type::NeighborAdvertisement(NeighborAdvertisementHeader {
            router: false,
            solicited: false,
            r#override: true
        })
    );
    assert_eq!(&icmp.payload()[..16], &v6("2001:db8:1::100").octets());
    assert_eq!(&icmp.payload()[16..], &[2, 1, 2, 0, 0, 0, 0, 0x0b]);
}

#[test]
fn solicited_node_addresses() {
    assert_eq!(
        solicited_node_group(v6("2001:db8:1::2")),
        v6("ff02::1:ff00:2")
    );
    assert_eq!(
        solicited_node_mac(v6("2001:db8:1::abcd:1234")),
        [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]
    );
    // The captured NS went to exactly these.
    assert_eq!(&NDISC6_NS[..6], &solicited_node_mac(v6("2001:db8:1::2")));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes, MAC_B);
    }

    #[test]
    fn mutated_fixtures_never_panic(idx in 0usize..86, val in any::<u8>(), cut in 0usize..90) {
        for fixture in [&KERNEL_NS[..], &NDISC6_NS[..], &ARPING_REQUEST[..], &ARPING_DAD_PROBE[..]] {
            let mut f = fixture.to_vec();
            if idx < f.len() {
                f[idx] = val;
            }
            f.truncate(cut.max(1));
            if let Some(s) = parse(&f, MAC_B) {
                // Whatever parses must still be a well-formed question.
                prop_assert!(!s.target().is_multicast());
            }
        }
    }
}

/// The lab's tagged probe: our request parses as the responder sees it, and a kernel's
/// reply yields who answered whom.
#[test]
fn tagged_requests_and_replies_for_the_double_answer_probe() {
    let tag = v4("169.254.1.2");
    let req = arp_request(MAC_A, tag, v4("198.51.100.2"));
    assert_eq!(
        parse(&req, MAC_B),
        Some(Solicitation::Arp {
            sender_mac: MAC_A,
            sender_ip: tag,
            target: v4("198.51.100.2"),
        })
    );
    let reply = parse_arp_reply(&KERNEL_ARP_REPLY_TO_ARPING).expect("a reply");
    assert_eq!(reply.sender_mac, MAC_B);
    assert_eq!(reply.sender_ip, v4("198.51.100.2"));
    assert_eq!(parse_arp_reply(&ARPING_REQUEST), None);
    assert_eq!(parse_arp_reply(&KERNEL_NA), None);
    let ours = arp_reply(MAC_B, v4("198.51.100.100"), MAC_A, tag);
    assert_eq!(
        parse_arp_reply(&ours),
        Some(ArpReply {
            sender_mac: MAC_B,
            sender_ip: v4("198.51.100.100"),
            target_ip: tag
        })
    );
}
