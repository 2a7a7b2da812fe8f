//! Round trips: UPDATEs we encode are parsed back with netgauze's full
//! (strict) decoder and compared field by field.

use super::*;
use crate::route::{Community as Comm, LargeCommunity as Large};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Default, PartialEq)]
struct Seen {
    nlri: Vec<IpNet>,
    withdrawn: Vec<IpNet>,
    next_hop: Option<IpAddr>,
    as_path: Option<Vec<u32>>,
    as4_path: Option<Vec<u32>>,
    local_pref: Option<u32>,
    communities: Vec<u32>,
    large: Vec<(u32, u32, u32)>,
    origin_igp: bool,
    types: Vec<u8>,
}

fn parse(bytes: &[u8], asn4: bool) -> Seen {
    assert!(bytes.len() <= MAX_LEN, "message of {} bytes", bytes.len());
    let mut ctx =
        BgpParsingContext::new(asn4, HashMap::new(), HashMap::new(), true, true, true, true);
    let msg = BgpMessage::parse(&mut SliceReader::new(bytes), &mut ctx)
        .expect("netgauze parses what we wrote");
    let BgpMessage::Update(u) = msg else {
        panic!("not an UPDATE: {msg:?}")
    };
    let mut s = Seen::default();
    s.nlri
        .extend(u.nlri().iter().map(|n| IpNet::V4(n.network().address())));
    s.withdrawn.extend(
        u.withdraw_routes()
            .iter()
            .map(|n| IpNet::V4(n.network().address())),
    );
    for a in u.path_attributes() {
        s.types
            .push(a.path_attribute_type().map(u8::from).unwrap_or(0));
        match a.value() {
            PathAttributeValue::Origin(o) => s.origin_igp = *o == Origin::IGP,
            PathAttributeValue::AsPath(AsPath::As4PathSegments(segs)) => {
                s.as_path = Some(segs.iter().flat_map(|x| x.as_numbers().to_vec()).collect())
            }
            PathAttributeValue::AsPath(AsPath::As2PathSegments(segs)) => {
                s.as_path = Some(
                    segs.iter()
                        .flat_map(|x| x.as_numbers().iter().map(|a| u32::from(*a)))
                        .collect(),
                )
            }
            PathAttributeValue::As4Path(p) => {
                s.as4_path = Some(
                    p.segments()
                        .iter()
                        .flat_map(|x| x.as_numbers().to_vec())
                        .collect(),
                )
            }
            PathAttributeValue::NextHop(n) => s.next_hop = Some(n.next_hop().into()),
            PathAttributeValue::LocalPreference(l) => s.local_pref = Some(l.metric()),
            PathAttributeValue::Communities(c) => {
                s.communities = c.communities().iter().map(|c| c.value()).collect()
            }
            PathAttributeValue::LargeCommunities(c) => {
                s.large = c
                    .communities()
                    .iter()
                    .map(|l| (l.global_admin(), l.local_data1(), l.local_data2()))
                    .collect()
            }
            PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                next_hop_global,
                nlri,
                ..
            }) => {
                s.next_hop = Some((*next_hop_global).into());
                s.nlri
                    .extend(nlri.iter().map(|n| IpNet::V6(n.network().address())));
            }
            PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => s
                .withdrawn
                .extend(nlri.iter().map(|n| IpNet::V6(n.network().address()))),
            other => panic!("unexpected attribute {other:?}"),
        }
    }
    s
}

fn builder(ibgp: bool) -> UpdateBuilder {
    UpdateBuilder {
        local_asn: 64513,
        ibgp,
        asn4: true,
        next_hop_v4: Some(Ipv4Addr::new(198, 51, 100, 11)),
        next_hop_v6: Some("2001:db8:1::11".parse().expect("ip")),
    }
}

fn attrs() -> RouteAttrs {
    RouteAttrs {
        communities: vec![Comm(0xFC00_0064), Comm(0xFFFF_FF01)],
        large_communities: vec![Large {
            global: 64513,
            data1: 1,
            data2: 2,
        }],
        local_pref: None,
        peers: vec![],
    }
}

fn v4_hosts(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i))))
        .collect()
}

#[test]
fn ten_thousand_v4_routes_pack_into_few_messages() {
    let prefixes = v4_hosts(10_000);
    let msgs = builder(false)
        .announce(Family::Ipv4, &attrs(), &prefixes)
        .expect("encodes");
    // 4096 - 23 - attributes (~60 bytes) leaves room for ~800 five-byte /32s.
    assert!(msgs.len() <= 13, "{} messages", msgs.len());
    let mut all = Vec::new();
    for m in &msgs {
        let s = parse(m, true);
        assert!(s.origin_igp);
        assert_eq!(s.as_path, Some(vec![64513]), "eBGP prepends our AS");
        assert_eq!(s.next_hop, Some(IpAddr::from([198, 51, 100, 11])));
        assert_eq!(s.local_pref, None, "no LOCAL_PREF to eBGP peers");
        assert_eq!(s.communities, vec![0xFC00_0064, 0xFFFF_FF01]);
        assert_eq!(s.large, vec![(64513, 1, 2)]);
        assert_eq!(s.types, vec![1, 2, 3, 8, 32], "attributes in type order");
        all.extend(s.nlri);
    }
    assert_eq!(all, prefixes);
    // Full messages really are full: the first one is within a prefix of the limit.
    assert!(
        msgs[0].len() > MAX_LEN - 5,
        "first message only {} bytes",
        msgs[0].len()
    );
}

#[test]
fn v6_routes_use_mp_reach_with_global_next_hop() {
    let prefixes: Vec<IpNet> = (0..1000u128)
        .map(|i| IpNet::from(IpAddr::V6((0x2001_0db8_0100_u128 << 80 | i).into())))
        .collect();
    let msgs = builder(true)
        .announce(Family::Ipv6, &attrs(), &prefixes)
        .expect("encodes");
    assert!(msgs.len() <= 5, "{} messages", msgs.len());
    let mut all = Vec::new();
    for m in &msgs {
        let s = parse(m, true);
        assert_eq!(s.next_hop, Some("2001:db8:1::11".parse().expect("ip")));
        assert_eq!(s.as_path, Some(vec![]), "iBGP: empty AS_PATH");
        assert_eq!(s.local_pref, Some(100), "iBGP: default LOCAL_PREF");
        assert_eq!(s.types, vec![1, 2, 5, 8, 14, 32]);
        all.extend(s.nlri);
    }
    assert_eq!(all, prefixes);
}

#[test]
fn ibgp_local_pref_from_config() {
    let a = RouteAttrs {
        local_pref: Some(250),
        ..RouteAttrs::default()
    };
    let msgs = builder(true)
        .announce(Family::Ipv4, &a, &v4_hosts(1))
        .expect("encodes");
    assert_eq!(parse(&msgs[0], true).local_pref, Some(250));
}

#[test]
fn withdrawals_pack_and_round_trip() {
    let v4 = v4_hosts(2000);
    let msgs = builder(false).withdraw(Family::Ipv4, &v4).expect("encodes");
    assert_eq!(msgs.len(), 3, "814 /32 per message");
    let got: Vec<IpNet> = msgs.iter().flat_map(|m| parse(m, true).withdrawn).collect();
    assert_eq!(got, v4);
    let v6: Vec<IpNet> = vec![
        "2001:db8:100::1/128".parse().expect("net"),
        "2001:db8:200::/64".parse().expect("net"),
    ];
    let msgs = builder(false).withdraw(Family::Ipv6, &v6).expect("encodes");
    assert_eq!(msgs.len(), 1);
    let s = parse(&msgs[0], true);
    assert_eq!((s.withdrawn, s.types), (v6, vec![15]));
}

#[test]
fn end_of_rib_markers() {
    let v4 = end_of_rib(Family::Ipv4).expect("encodes");
    let mut expect = vec![0xFF; 16];
    expect.extend_from_slice(&[0, 23, 2, 0, 0, 0, 0]);
    assert_eq!(v4, expect);
    let s = parse(&end_of_rib(Family::Ipv6).expect("encodes"), true);
    assert_eq!(
        s,
        Seen {
            types: vec![15],
            ..Seen::default()
        }
    );
}

#[test]
fn four_byte_asn_to_a_two_byte_peer_uses_as_trans_and_as4_path() {
    let b = UpdateBuilder {
        local_asn: 4_200_000_001,
        asn4: false,
        ..builder(false)
    };
    let msgs = b
        .announce(Family::Ipv4, &RouteAttrs::default(), &v4_hosts(2))
        .expect("encodes");
    let s = parse(&msgs[0], false);
    assert_eq!(s.as_path, Some(vec![23456]));
    assert_eq!(s.as4_path, Some(vec![4_200_000_001]));
    assert_eq!(s.types, vec![1, 2, 3, 17]);
}

#[test]
fn many_communities_switch_to_extended_length() {
    let a = RouteAttrs {
        communities: (0..100).map(Comm).collect(),
        ..RouteAttrs::default()
    };
    let msgs = builder(false)
        .announce(Family::Ipv4, &a, &v4_hosts(3))
        .expect("encodes");
    assert_eq!(
        parse(&msgs[0], true).communities,
        (0..100).collect::<Vec<u32>>()
    );
}

#[test]
fn chunks_respect_room() {
    let p = v4_hosts(10);
    let c = chunks(&p, 12);
    assert_eq!(
        c.iter().map(|c| c.len()).collect::<Vec<_>>(),
        vec![2, 2, 2, 2, 2]
    );
    assert!(chunks(&[], 100).is_empty());
}
