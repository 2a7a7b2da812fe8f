use super::*;
use crate::fixtures::*;
use etherparse::{ArpOperation, ArpPacketSlice, Ethernet2Slice};

const MAC_B: Mac = [2, 0, 0, 0, 0, 0x0b];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn responder(now: Instant) -> ArpNdpResponder {
    let mut r = ArpNdpResponder::new(AnnounceTiming {
        burst: 3,
        burst_interval: Duration::from_millis(500),
        refresh: Duration::from_secs(10),
    });
    r.set_interfaces(
        now,
        vec![
            InterfaceInfo {
                name: "eth0".into(),
                mac: MAC_B,
                link_local: Some("fe80::ff:fe00:b".parse().expect("ll")),
            },
            InterfaceInfo {
                name: "eth1".into(),
                mac: [2, 0, 0, 0, 1, 0x0b],
                link_local: None,
            },
        ],
    );
    r
}

fn owned(pairs: &[(&str, &[&str])]) -> BTreeMap<IpAddr, BTreeSet<String>> {
    pairs
        .iter()
        .map(|(i, ifs)| (ip(i), ifs.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// A responder answering for .2 and .3 on eth0, its first announcements queued.
fn owning_two(t0: Instant) -> ArpNdpResponder {
    let mut r = responder(t0);
    r.set_owned(
        t0,
        owned(&[("198.51.100.2", &["eth0"]), ("198.51.100.3", &["eth0"])]),
    );
    r.handle_timeout(t0);
    r
}

fn drain(r: &mut ArpNdpResponder) -> Vec<Transmit> {
    std::iter::from_fn(|| r.poll_transmit()).collect()
}

#[test]
fn answers_only_owned_ips_on_their_interfaces() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    assert!(drain(&mut r).is_empty(), "nothing owned yet");
    r.set_owned(
        t0,
        owned(&[("198.51.100.2", &["eth0"]), ("2001:db8:1::2", &["eth0"])]),
    );
    drain(&mut r); // takeover announcements, tested below
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    r.handle_frame(t0, "eth0", &KERNEL_NS);
    r.handle_frame(t0, "eth0", &NDISC6_NS);
    r.handle_frame(t0, "eth1", &ARPING_REQUEST); // not announced on eth1
    r.handle_frame(t0, "wlan9", &ARPING_REQUEST); // unknown interface
    r.handle_frame(t0, "eth0", &ARPING_DAD_PROBE); // for .9: not ours
    let sent = drain(&mut r);
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|t| t.iface == "eth0"));
    assert_eq!(&sent[0].frame[..42], &KERNEL_ARP_REPLY_TO_ARPING[..]);
    assert_eq!(sent[1].frame, KERNEL_NA.to_vec());
    assert_eq!(sent[2].frame, KERNEL_NA_TO_NDISC6.to_vec());
    let stats = r.stats()["eth0"];
    assert_eq!(
        (stats.arp_answered, stats.ns_answered, stats.not_ours),
        (1, 2, 2)
    );
    assert_eq!(r.stats()["eth1"].not_ours, 1);
}

#[test]
fn takeover_burst_then_refresh_on_a_virtual_clock() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    assert_eq!(r.poll_timeout(), None);
    r.set_owned(
        t0,
        owned(&[
            ("198.51.100.100", &["eth0"]),
            ("2001:db8:1::100", &["eth0", "eth1"]),
        ]),
    );
    assert_eq!(r.poll_timeout(), Some(t0), "announce at once");
    let mut times = Vec::new();
    let mut now = t0;
    // Run 25 virtual seconds; record when each round goes out.
    while now < t0 + Duration::from_secs(25) {
        r.handle_timeout(now);
        let sent = drain(&mut r);
        if !sent.is_empty() {
            times.push((now - t0, sent));
        }
        now = r.poll_timeout().expect("always scheduled while owned");
    }
    let offsets: Vec<u128> = times.iter().map(|(d, _)| d.as_millis()).collect();
    assert_eq!(offsets, [0, 500, 1000, 11000, 21000]);
    for (at, sent) in &times {
        // Each refresh also probes every address on every interface (conflicts).
        let is_probe = |t: &Transmit| {
            let v4 = t.frame[12..14] == [0x08, 0x06] && t.frame[28..32] == [0, 0, 0, 0];
            let v6 = t.frame[12..14] == [0x86, 0xdd] && t.frame[22..38] == [0; 16];
            v4 || v6
        };
        let probes = sent.iter().filter(|t| is_probe(t)).count();
        let refresh = at.as_millis() >= 11000;
        assert_eq!(probes, if refresh { 3 } else { 0 }, "{at:?}");
        let sent: Vec<Transmit> = sent.iter().filter(|t| !is_probe(t)).cloned().collect();
        // IPv4: GARP request + reply on eth0; IPv6: one NA on eth0 and eth1.
        assert_eq!(sent.len(), 4);
        let arp: Vec<ArpOperation> = sent
            .iter()
            .filter_map(|t| {
                let eth = Ethernet2Slice::from_slice_without_fcs(&t.frame).ok()?;
                let arp = ArpPacketSlice::from_slice(eth.payload_slice())
                    .ok()?
                    .to_packet();
                let arp = arp.try_eth_ipv4().ok()?;
                assert_eq!(arp.sender_ipv4, arp.target_ipv4, "gratuitous");
                assert_eq!(eth.destination(), frame::BROADCAST);
                Some(arp.operation)
            })
            .collect();
        assert_eq!(arp, [ArpOperation::REQUEST, ArpOperation::REPLY]);
        let na_ifaces: Vec<&str> = sent
            .iter()
            .filter(|t| t.frame[12..14] == [0x86, 0xdd])
            .map(|t| t.iface.as_str())
            .collect();
        assert_eq!(na_ifaces, ["eth0", "eth1"]);
    }
    let s = r.stats()["eth0"];
    assert_eq!((s.garp_sent, s.unsolicited_na_sent), (10, 5));
}

#[test]
fn losing_an_ip_stops_answers_at_once_even_queued_ones() {
    let t0 = Instant::now();
    let mut r = owning_two(t0);
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    // Ownership of .2 moves away before the driver sent anything.
    r.set_owned(t0, owned(&[("198.51.100.3", &["eth0"])]));
    let sent = drain(&mut r);
    assert_eq!(sent.len(), 2, "only .3's GARP pair is left");
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    assert!(drain(&mut r).is_empty());
    // Nothing is scheduled for .2 any more.
    r.set_owned(t0, BTreeMap::new());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn keeping_an_ip_does_not_restart_its_burst() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    r.set_owned(t0, owned(&[("198.51.100.2", &["eth0"])]));
    r.handle_timeout(t0);
    let t1 = t0 + Duration::from_millis(100);
    r.set_owned(
        t1,
        owned(&[("198.51.100.2", &["eth0"]), ("198.51.100.3", &["eth0"])]),
    );
    assert_eq!(r.poll_timeout(), Some(t1), "the new IP is due now");
    r.handle_timeout(t1);
    assert_eq!(drain(&mut r).len(), 4);
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_millis(500)));
}

#[test]
fn mac_change_restarts_announcements() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    r.set_owned(t0, owned(&[("198.51.100.2", &["eth0"])]));
    for i in 0..3 {
        r.handle_timeout(t0 + Duration::from_millis(500 * i));
    }
    drain(&mut r);
    let t1 = t0 + Duration::from_secs(3);
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    r.set_interfaces(
        t1,
        vec![InterfaceInfo {
            name: "eth0".into(),
            mac: [2, 0, 0, 0, 0, 0xee],
            link_local: None,
        }],
    );
    assert_eq!(r.poll_timeout(), Some(t1));
    r.handle_timeout(t1);
    let sent = drain(&mut r);
    assert_eq!(&sent[0].frame[6..12], &[2, 0, 0, 0, 0, 0xee]);
}

/// Issue 24, item 1: another MAC using an owned address quarantines it: no answer, no
/// announcement, one conflict reported; a re-probe nobody answers lifts it.
#[test]
fn a_foreign_claim_quarantines_the_address_until_a_probe_finds_it_gone() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    // .2 is owned here; the kernel of host …0a announces it (arping -U from .1 claims .1,
    // so rewrite: a reply from …0a saying .2 is-at …0a).
    r.set_owned(t0, owned(&[("198.51.100.2", &["eth0"])]));
    drain(&mut r);
    let foreign = frame::arp_reply(
        [2, 0, 0, 0, 0, 0x0a],
        "198.51.100.2".parse().expect("ip"),
        [0xff; 6],
        "198.51.100.1".parse().expect("ip"),
    );
    r.handle_frame(t0, "eth0", &foreign);
    let (ip_c, c) = r.poll_conflict().expect("a conflict");
    assert_eq!(ip_c, ip("198.51.100.2"));
    assert_eq!((c.mac, c.iface.as_str()), ([2, 0, 0, 0, 0, 0x0a], "eth0"));
    assert_eq!(r.poll_conflict(), None, "reported once");
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    assert!(
        drain(&mut r).is_empty(),
        "a quarantined address is not answered"
    );
    // Still there at the first re-check: the holder answers the probe.
    let mut now = t0;
    while now < t0 + Duration::from_secs(10) {
        now = r.poll_timeout().expect("scheduled");
        r.handle_timeout(now);
        let sent = drain(&mut r);
        assert!(
            sent.iter().all(|t| t.frame[28..32] == [0, 0, 0, 0]),
            "only probes while quarantined"
        );
    }
    r.handle_frame(now, "eth0", &foreign);
    // Then gone: the next re-probe goes unanswered and the address is announced again.
    while r.conflicts().contains_key(&ip("198.51.100.2")) {
        now = r.poll_timeout().expect("scheduled");
        r.handle_timeout(now);
        drain(&mut r);
        assert!(now < t0 + Duration::from_secs(25), "lifted in time");
    }
    assert!(now >= t0 + Duration::from_secs(20));
    r.handle_frame(now, "eth0", &ARPING_REQUEST);
    assert_eq!(drain(&mut r).len(), 1, "answered again");
}

/// A new address is probed before it is first answered or announced, and a holder
/// answering the probe keeps it silent.
#[test]
fn a_new_address_is_probed_before_it_is_announced() {
    let t0 = Instant::now();
    let mut r = responder(t0);
    r.probe_before_announcing([ip("198.51.100.2")].into());
    r.set_owned(t0, owned(&[("198.51.100.2", &["eth0"])]));
    r.handle_timeout(t0);
    let first = drain(&mut r);
    assert_eq!(first.len(), 1, "one probe, no announcement");
    assert_eq!(first[0].frame[28..32], [0, 0, 0, 0]);
    r.handle_frame(t0, "eth0", &ARPING_REQUEST);
    assert!(drain(&mut r).is_empty(), "not answered while probing");
    let mut now = t0;
    let mut probes = 1;
    while now < t0 + PROBE_WAIT {
        now = r.poll_timeout().expect("scheduled");
        r.handle_timeout(now);
        for t in drain(&mut r) {
            if t.frame[28..32] == [0, 0, 0, 0] {
                probes += 1;
            } else {
                assert!(now >= t0 + PROBE_WAIT, "announced only after the wait");
            }
        }
    }
    assert_eq!(probes, PROBE_COUNT);
    r.handle_frame(now, "eth0", &ARPING_REQUEST);
    assert_eq!(drain(&mut r).len(), 1, "answered after an unanswered probe");
    // The same, with a holder answering the probe: silent, one conflict.
    let mut r = responder(t0);
    r.probe_before_announcing([ip("198.51.100.2")].into());
    r.set_owned(t0, owned(&[("198.51.100.2", &["eth0"])]));
    r.handle_timeout(t0);
    drain(&mut r);
    // Host …0a holds .2 and answers our probe (a reply to our MAC, target 0.0.0.0).
    let answer = frame::arp_reply(
        [2, 0, 0, 0, 0, 0x0a],
        "198.51.100.2".parse().expect("ip"),
        MAC_B,
        std::net::Ipv4Addr::UNSPECIFIED,
    );
    r.handle_frame(t0, "eth0", &answer);
    let (_, c) = r
        .poll_conflict()
        .expect("the holder's answer is a conflict");
    assert_eq!(c.mac, [2, 0, 0, 0, 0, 0x0a]);
    r.handle_timeout(t0 + PROBE_WAIT);
    assert!(drain(&mut r).is_empty(), "never announced");
}

#[test]
fn a_delta_changes_only_the_addresses_it_names() {
    let t0 = Instant::now();
    let mut r = owning_two(t0);
    drain(&mut r);
    let t1 = t0 + Duration::from_millis(100);
    // .2 moves to eth1, .3 goes, .4 comes (probed first); .2's eth0 frames queued
    // before the change must not go out.
    r.handle_frame(t1, "eth0", &ARPING_REQUEST);
    r.probe_before_announcing([ip("198.51.100.4")].into());
    r.update_owned(
        t1,
        owned(&[("198.51.100.2", &["eth1"]), ("198.51.100.4", &["eth0"])]),
        &[ip("198.51.100.3")].into(),
    );
    assert_eq!(
        r.owned(),
        &owned(&[("198.51.100.2", &["eth1"]), ("198.51.100.4", &["eth0"])])
    );
    assert!(
        drain(&mut r).is_empty(),
        "the reply on eth0 for .2 is dropped"
    );
    r.handle_timeout(t1);
    let sent = drain(&mut r);
    assert!(!sent.is_empty());
    let probe = claim::probe(MAC_B, ip("198.51.100.4"));
    assert!(
        sent.iter()
            .all(|t| t.iface == "eth1" || (t.iface == "eth0" && t.frame == probe)),
        "only .2's takeover on eth1 and .4's probe: {sent:?}"
    );
    assert!(sent.iter().any(|t| t.frame == probe));
    // What a whole set of the same state would have given.
    let mut whole = responder(t0);
    whole.set_owned(t1, r.owned().clone());
    assert_eq!(whole.owned(), r.owned());
    r.handle_frame(t1, "eth0", &ARPING_REQUEST);
    assert!(drain(&mut r).is_empty(), ".2 is no longer answered on eth0");
}

#[test]
fn a_peers_dad_probe_is_no_conflict_an_answered_address_is_defended_a_probed_one_waits() {
    let t0 = Instant::now();
    let v6 = ip("2001:db8:1::100");
    // Another speaker (…0a), alone for a moment at its start, probes the address too.
    let their_probe = claim::probe([2, 0, 0, 0, 0, 0x0a], v6);
    // While this node probes it: no conflict, and it is announced after its own wait.
    let mut r = responder(t0);
    r.probe_before_announcing([v6].into());
    r.set_owned(t0, owned(&[("2001:db8:1::100", &["eth0"])]));
    r.handle_timeout(t0);
    drain(&mut r);
    r.handle_frame(t0, "eth0", &their_probe);
    assert!(
        r.poll_conflict().is_none(),
        "a simultaneous probe is a race, not a holder"
    );
    r.handle_timeout(t0 + PROBE_WAIT);
    assert!(
        !drain(&mut r).is_empty() && r.conflicts().is_empty(),
        "announced after the wait"
    );
    // While this node answers for it: defended with one advertisement, no conflict.
    let now = t0 + PROBE_WAIT + Duration::from_millis(1);
    r.handle_frame(now, "eth0", &their_probe);
    let sent = drain(&mut r);
    assert_eq!(sent.len(), 1, "one NA");
    assert!(r.poll_conflict().is_none() && r.conflicts().is_empty());
    let eth = Ethernet2Slice::from_slice_without_fcs(&sent[0].frame).expect("ethernet");
    assert_eq!(eth.source(), MAC_B);
    // An advertisement by the other host is a claim: that one quarantines.
    let v6a: std::net::Ipv6Addr = "2001:db8:1::100".parse().expect("ip");
    let their_na = frame::neighbor_advertisement([2, 0, 0, 0, 0, 0x0a], v6a, v6a, None);
    r.handle_frame(now, "eth0", &their_na);
    assert!(r.poll_conflict().is_some(), "an advertisement is a holder");
}
