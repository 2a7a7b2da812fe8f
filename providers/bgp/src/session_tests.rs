//! Two sessions back to back on a virtual clock: no sockets, no sleeps.
//! A "link" joins them once both ask to connect; every UPDATE A sends is
//! parsed with netgauze into B's view of A's routes, so diffs, withdrawals
//! and End-of-RIB markers are checked end to end.

use super::*;
use crate::route::{Community, RouteAttrs};
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::path_attribute::{MpReach, MpUnreach, PathAttributeValue};
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::ParseFromWithOneInput;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

const A_ADDR: &str = "198.51.100.11:40000";
const B_ADDR: &str = "198.51.100.1:179";

/// What the receiving side learned from A's UPDATEs.
#[derive(Debug, Default)]
struct PeerView {
    rib: BTreeMap<IpNet, (IpAddr, Vec<u32>)>,
    eor: Vec<Family>,
    updates: usize,
    notifications: Vec<(u8, u8)>,
    keepalives: usize,
}

impl PeerView {
    fn learn(&mut self, bytes: &[u8]) {
        let Ok(Some((msg, n))) = wire::decode(bytes) else {
            panic!("A sent garbage")
        };
        assert_eq!(n, bytes.len(), "one message per Transmit");
        match msg {
            Message::Keepalive => self.keepalives += 1,
            Message::Notification(n) => self.notifications.push((n.code, n.subcode)),
            Message::Update => self.learn_update(bytes),
            _ => {}
        }
    }

    fn learn_update(&mut self, bytes: &[u8]) {
        self.updates += 1;
        let mut ctx =
            BgpParsingContext::new(true, HashMap::new(), HashMap::new(), true, true, true, true);
        let Ok(BgpMessage::Update(u)) = BgpMessage::parse(&mut SliceReader::new(bytes), &mut ctx)
        else {
            panic!("netgauze rejects our UPDATE")
        };
        if u.nlri().is_empty() && u.withdraw_routes().is_empty() && u.path_attributes().is_empty() {
            self.eor.push(Family::Ipv4);
        }
        for w in u.withdraw_routes() {
            self.rib.remove(&IpNet::V4(w.network().address()));
        }
        let mut next_hop = None;
        let mut communities = vec![];
        let mut v6 = vec![];
        for a in u.path_attributes() {
            match a.value() {
                PathAttributeValue::NextHop(n) => next_hop = Some(IpAddr::V4(n.next_hop())),
                PathAttributeValue::Communities(c) => {
                    communities = c.communities().iter().map(|c| c.value()).collect()
                }
                PathAttributeValue::MpReach(MpReach::Ipv6Unicast {
                    next_hop_global,
                    nlri,
                    ..
                }) => {
                    next_hop = Some(IpAddr::V6(*next_hop_global));
                    v6 = nlri
                        .iter()
                        .map(|n| IpNet::V6(n.network().address()))
                        .collect();
                }
                PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri }) => {
                    if nlri.is_empty() && u.path_attributes().len() == 1 {
                        self.eor.push(Family::Ipv6);
                    }
                    for n in nlri.iter() {
                        self.rib.remove(&IpNet::V6(n.network().address()));
                    }
                }
                _ => {}
            }
        }
        let announced = u
            .nlri()
            .iter()
            .map(|n| IpNet::V4(n.network().address()))
            .chain(v6);
        for p in announced {
            let nh = next_hop.expect("announcement without next hop");
            self.rib.insert(p, (nh, communities.clone()));
        }
    }
}

/// Session A (under test) and session B (the "router"), joined by a link.
struct Pair {
    now: Instant,
    a: Session,
    b: Session,
    a_wants: bool,
    b_wants: bool,
    link: bool,
    /// When false, B neither reads nor sends: a hung peer.
    b_alive: bool,
    view: PeerView,
}

fn cfg(local: u32, peer: u32, id: [u8; 4], hold: u16) -> SessionConfig {
    SessionConfig {
        hold_time: hold,
        keepalive_time: 30,
        node_ipv6: Some("2001:db8:1::11".parse().expect("ip")),
        ..SessionConfig::new(local, peer, Ipv4Addr::from(id))
    }
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig) -> Self {
        Pair {
            now: Instant::now(),
            a: Session::new(a),
            b: Session::new(b),
            a_wants: false,
            b_wants: false,
            link: false,
            b_alive: true,
            view: PeerView::default(),
        }
    }

    fn ebgp() -> Self {
        Pair::new(
            cfg(64513, 64512, [198, 51, 100, 11], 9),
            cfg(64512, 64513, [198, 51, 100, 1], 90),
        )
    }

    fn start(&mut self) {
        self.a.start(self.now);
        self.b.start(self.now);
        self.pump();
    }

    /// Moves outputs across the link until both sides are quiet.
    fn pump(&mut self) {
        loop {
            let mut progress = false;
            while let Some(o) = self.a.poll_output() {
                progress = true;
                match o {
                    Output::Connect => self.a_wants = true,
                    Output::Transmit(bytes) => {
                        assert!(self.link, "A transmits without a connection");
                        self.view.learn(&bytes);
                        if self.b_alive {
                            self.b.handle_data(self.now, &bytes);
                        }
                    }
                    Output::Disconnect => {
                        self.a_wants = false;
                        if std::mem::take(&mut self.link) && self.b_alive {
                            self.b.handle_closed(self.now);
                        }
                    }
                }
            }
            while self.b_alive
                && let Some(o) = self.b.poll_output()
            {
                progress = true;
                match o {
                    Output::Connect => self.b_wants = true,
                    Output::Transmit(bytes) => self.a.handle_data(self.now, &bytes),
                    Output::Disconnect => {
                        self.b_wants = false;
                        if std::mem::take(&mut self.link) {
                            self.a.handle_closed(self.now);
                        }
                    }
                }
            }
            if self.a_wants && self.b_wants && !self.link {
                (self.a_wants, self.b_wants, self.link) = (false, false, true);
                self.a
                    .handle_connected(self.now, A_ADDR.parse().expect("addr"));
                self.b
                    .handle_connected(self.now, B_ADDR.parse().expect("addr"));
                progress = true;
            }
            if !progress {
                return;
            }
        }
    }

    /// Jumps the virtual clock to the next deadline (not beyond `limit`).
    fn step(&mut self, limit: Instant) -> bool {
        let next = [
            self.a.poll_timeout(),
            self.b.poll_timeout().filter(|_| self.b_alive),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(t) if t <= limit => {
                self.now = self.now.max(t);
                self.a.handle_timeout(self.now);
                if self.b_alive {
                    self.b.handle_timeout(self.now);
                }
                self.pump();
                true
            }
            _ => {
                self.now = limit;
                false
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    fn established(&self) -> bool {
        self.a.state() == State::Established && self.b.state() == State::Established
    }
}

fn net(s: &str) -> IpNet {
    s.parse().expect("prefix")
}

fn routes(items: &[(&str, u32)]) -> Routes {
    items
        .iter()
        .map(|(p, c)| {
            (
                net(p),
                RouteAttrs {
                    communities: vec![Community(*c)],
                    ..RouteAttrs::default()
                },
            )
        })
        .collect()
}

#[test]
fn sessions_establish_and_negotiate() {
    let mut p = Pair::ebgp();
    p.start();
    assert!(p.established(), "A {:?} B {:?}", p.a.state(), p.b.state());
    let s = p.a.stats();
    assert_eq!(s.hold_time, Some(9), "the smaller hold time wins");
    assert_eq!(s.families, vec![Family::Ipv4, Family::Ipv6]);
    assert!(s.four_octet_as);
    assert_eq!(
        p.view.eor,
        vec![Family::Ipv4, Family::Ipv6],
        "EoR per family after the (empty) table"
    );
    // Keepalive every 3s (9/3): one minute keeps the session up.
    let before = p.view.keepalives;
    p.run_for(Duration::from_secs(60));
    assert!(p.established());
    assert!(
        (19..=21).contains(&(p.view.keepalives - before)),
        "{} keepalives",
        p.view.keepalives - before
    );
    assert_eq!(p.a.stats().flaps, 0);
}

#[test]
fn hold_timer_expiry_sends_code_4_and_reconnects() {
    let mut p = Pair::ebgp();
    p.start();
    p.b_alive = false; // the router hangs: no keepalives arrive
    p.run_for(Duration::from_secs(8));
    assert_eq!(p.a.state(), State::Established, "not before the hold time");
    p.run_for(Duration::from_secs(2));
    assert_eq!(p.view.notifications, vec![(4, 0)]);
    assert_ne!(p.a.state(), State::Established);
    assert_eq!(
        p.a.stats().last_error.as_deref(),
        Some("hold timer expired")
    );
    assert_eq!(p.a.stats().flaps, 1);
    // The router recovers (a fresh process): A reconnects after its backoff.
    p.b = Session::new(cfg(64512, 64513, [198, 51, 100, 1], 90));
    p.b_alive = true;
    p.b.start(p.now);
    p.pump();
    p.run_for(Duration::from_secs(2));
    assert!(p.established());
    assert_eq!(p.a.stats().established, 2);
}

#[test]
fn bfd_down_resets_with_cease_bfd_down_and_reconnects() {
    let mut p = Pair::ebgp();
    p.start();
    assert!(p.established());
    p.a.handle_bfd_down(p.now);
    p.pump();
    assert_eq!(
        p.view.notifications,
        vec![(6, 10)],
        "Cease / BFD Down (RFC 9384)"
    );
    assert_eq!(p.a.stats().flaps, 1);
    assert_eq!(
        p.a.stats().last_error.as_deref(),
        Some("BFD session went down")
    );
    // Idle: BFD going down again changes nothing; the backoff brings the session back.
    p.a.handle_bfd_down(p.now);
    assert_eq!(p.a.state(), State::Idle);
    p.b.start(p.now);
    p.run_for(Duration::from_secs(2));
    assert!(p.established());
}

#[test]
fn updates_touch_only_the_changed_prefixes() {
    let mut p = Pair::ebgp();
    // Before Established: kept as desired, sent with the table.
    p.a.update_routes(
        p.now,
        [
            (
                net("203.0.113.10/32"),
                Some(routes(&[("0.0.0.0/0", 1)])[&net("0.0.0.0/0")].clone()),
            ),
            (net("203.0.113.11/32"), None),
        ],
    );
    p.start();
    assert_eq!(
        p.view.rib.keys().copied().collect::<Vec<_>>(),
        [net("203.0.113.10/32")]
    );
    let updates = p.view.updates;
    let attrs = |c| routes(&[("0.0.0.0/0", c)])[&net("0.0.0.0/0")].clone();
    // Add one, change one, withdraw one never sent (nothing), host bits cleared.
    p.a.update_routes(
        p.now,
        [
            (net("203.0.113.12/32"), Some(attrs(1))),
            (net("203.0.113.10/32"), Some(attrs(7))),
            (net("203.0.113.99/32"), None),
        ],
    );
    p.pump();
    assert_eq!(p.view.rib[&net("203.0.113.10/32")].1, vec![7]);
    assert_eq!(p.view.rib[&net("203.0.113.12/32")].1, vec![1]);
    assert_eq!(
        p.view.updates - updates,
        2,
        "one UPDATE per attribute set, no withdrawal"
    );
    // Withdraw one.
    p.a.update_routes(p.now, [(net("203.0.113.12/32"), None)]);
    p.pump();
    assert!(!p.view.rib.contains_key(&net("203.0.113.12/32")));
    assert_eq!(p.view.updates - updates, 3);
    assert_eq!(p.a.stats().prefixes_advertised, 1);
    // The same value again sends nothing.
    p.a.update_routes(p.now, [(net("203.0.113.10/32"), Some(attrs(7)))]);
    p.pump();
    assert_eq!(p.view.updates - updates, 3);
    // A reconnect sends the whole desired table.
    assert_eq!(p.a.advertised().len(), 1);
}

#[test]
fn routes_are_diffed_not_reset() {
    let mut p = Pair::ebgp();
    p.a.set_routes(
        p.now,
        routes(&[
            ("203.0.113.10/32", 1),
            ("203.0.113.11/32", 1),
            ("2001:db8:100::1/128", 2),
        ]),
    );
    p.start();
    let a_nh: IpAddr = "198.51.100.11".parse().expect("ip");
    let v6_nh: IpAddr = "2001:db8:1::11".parse().expect("ip");
    assert_eq!(p.view.rib.len(), 3);
    assert_eq!(
        p.view.rib[&net("203.0.113.10/32")],
        (a_nh, vec![1]),
        "next hop self"
    );
    assert_eq!(p.view.rib[&net("2001:db8:100::1/128")], (v6_nh, vec![2]));
    assert_eq!(p.view.eor, vec![Family::Ipv4, Family::Ipv6]);
    let updates = p.view.updates;
    // Remove one, add one, change the community of one, keep the v6 route.
    p.a.set_routes(
        p.now,
        routes(&[
            ("203.0.113.11/32", 5),
            ("203.0.113.12/32", 1),
            ("2001:db8:100::1/128", 2),
        ]),
    );
    p.pump();
    assert_eq!(
        p.view.rib.keys().copied().collect::<BTreeSet<_>>(),
        [
            net("203.0.113.11/32"),
            net("203.0.113.12/32"),
            net("2001:db8:100::1/128")
        ]
        .into()
    );
    assert_eq!(p.view.rib[&net("203.0.113.11/32")].1, vec![5]);
    assert_eq!(
        p.view.updates - updates,
        3,
        "one withdrawal and one UPDATE per attribute set"
    );
    assert_eq!(
        (p.a.stats().established, p.a.stats().prefixes_advertised),
        (1, 3)
    );
    assert_eq!(
        p.view.eor.len(),
        2,
        "End-of-RIB only after the initial table"
    );
    // Setting the same routes again sends nothing.
    p.a.set_routes(p.now, p.a.advertised().clone());
    p.pump();
    assert_eq!(p.view.updates - updates, 3);
}

#[test]
fn route_refresh_resends_the_family() {
    let mut p = Pair::ebgp();
    p.a.set_routes(
        p.now,
        routes(&[("203.0.113.10/32", 1), ("2001:db8:100::1/128", 2)]),
    );
    p.start();
    let updates = p.view.updates;
    let mut rr = vec![0xFF; 16];
    rr.extend_from_slice(&[0, 23, 5, 0, 1, 0, 1]);
    p.a.handle_data(p.now, &rr);
    p.pump();
    assert_eq!(p.view.updates - updates, 1, "the IPv4 table again");
    assert!(p.established());
    // An unknown family is ignored without an error.
    rr[19..].copy_from_slice(&[0, 25, 0, 70]);
    p.a.handle_data(p.now, &rr);
    p.pump();
    assert_eq!(p.view.updates - updates, 1);
    assert!(p.established());
}

#[test]
fn stop_withdraws_then_ceases() {
    let mut p = Pair::ebgp();
    p.a.set_routes(
        p.now,
        routes(&[("203.0.113.10/32", 1), ("2001:db8:100::1/128", 2)]),
    );
    p.start();
    p.a.stop(p.now);
    p.pump();
    assert!(p.view.rib.is_empty(), "explicit withdrawals before closing");
    assert_eq!(p.view.notifications, vec![(6, 2)]);
    assert_eq!(p.a.state(), State::Idle);
    assert_eq!(
        p.a.poll_timeout(),
        None,
        "a stopped session never reconnects"
    );
    assert!(
        p.b.stats()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Cease"))
    );
}

#[test]
fn collision_resolution_by_peer_is_retried() {
    // The router had a connection of its own and resolved the collision
    // against ours (RFC 4271 §6.8): Cease/7 while we are in OpenConfirm.
    let (mut s, now) = open_sent();
    let open = wire::encode_open(&open_of(64512, [198, 51, 100, 1], 90)).expect("encodes");
    assert_eq!(notification_for(&mut s, now, &open), None);
    assert_eq!(s.state(), State::OpenConfirm);
    let cease7 = Notification::cease(cease::CONNECTION_COLLISION).encode();
    assert_eq!(
        notification_for(&mut s, now, &cease7),
        None,
        "no NOTIFICATION answers a NOTIFICATION"
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.stats().flaps, 0, "never established, not a flap");
    assert!(
        s.stats()
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("6/7"))
    );
    // Retried after the backoff, and this time it comes up.
    let retry = s.poll_timeout().expect("reconnect scheduled");
    assert_eq!(retry - now, Duration::from_millis(500));
    s.handle_timeout(retry);
    assert_eq!(s.poll_output(), Some(Output::Connect));
    s.handle_connected(retry, A_ADDR.parse().expect("addr"));
    notification_for(&mut s, retry, &open);
    notification_for(&mut s, retry, &wire::keepalive());
    assert_eq!(s.state(), State::Established);
}

#[test]
fn connect_failures_back_off() {
    let mut s = Session::new(cfg(64513, 64512, [10, 0, 0, 2], 90));
    let t0 = Instant::now();
    s.start(t0);
    let mut now = t0;
    let mut waits = vec![];
    for _ in 0..5 {
        assert_eq!(s.poll_output(), Some(Output::Connect));
        s.handle_connect_failed(now, "refused");
        assert_eq!(s.state(), State::Active);
        let next = s.poll_timeout().expect("retry scheduled");
        waits.push((next - now).as_millis());
        now = next;
        s.handle_timeout(now);
        assert_eq!(s.state(), State::Connect);
    }
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000]);
    // A connect that hangs is abandoned after the connect timeout.
    assert_eq!(s.poll_output(), Some(Output::Connect));
    now += Duration::from_secs(10);
    s.handle_timeout(now);
    assert_eq!(s.poll_output(), Some(Output::Disconnect));
    assert_eq!(s.state(), State::Active);
}

#[test]
fn four_byte_asn_and_ibgp_next_hop() {
    let asn = 4_200_000_001;
    let mut p = Pair::new(
        cfg(asn, asn, [198, 51, 100, 11], 9),
        cfg(asn, asn, [198, 51, 100, 1], 9),
    );
    p.a.set_routes(p.now, routes(&[("203.0.113.10/32", 1)]));
    p.start();
    assert!(p.established());
    assert!(p.a.stats().four_octet_as);
    assert_eq!(p.view.rib.len(), 1);
}

#[test]
fn hold_time_zero_means_no_keepalives() {
    let mut p = Pair::new(
        cfg(64513, 64512, [198, 51, 100, 11], 0),
        cfg(64512, 64513, [198, 51, 100, 1], 90),
    );
    p.start();
    assert!(p.established());
    assert_eq!(p.a.stats().hold_time, Some(0));
    let before = p.view.keepalives;
    p.b_alive = false;
    p.run_for(Duration::from_secs(3600));
    assert_eq!(p.a.state(), State::Established, "no hold timer");
    assert_eq!(p.view.keepalives, before);
}

#[test]
fn v6_routes_without_a_v6_next_hop_are_held_back() {
    let mut a = cfg(64513, 64512, [198, 51, 100, 11], 9);
    a.node_ipv6 = None;
    let mut p = Pair::new(a, cfg(64512, 64513, [198, 51, 100, 1], 9));
    p.a.set_routes(
        p.now,
        routes(&[("203.0.113.10/32", 1), ("2001:db8:100::1/128", 2)]),
    );
    p.start();
    assert_eq!(
        p.view.rib.keys().copied().collect::<Vec<_>>(),
        vec![net("203.0.113.10/32")]
    );
    assert_eq!(p.view.eor, vec![Family::Ipv4, Family::Ipv6]);
}

fn open_of(asn: u32, id: [u8; 4], hold: u16) -> LocalOpen {
    LocalOpen {
        asn,
        hold_time: hold,
        bgp_id: Ipv4Addr::from(id),
        graceful_restart: None,
    }
}

/// A alone, connected, OPEN sent; returns the session and the clock.
fn open_sent() -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(cfg(64513, 64512, [198, 51, 100, 11], 9));
    s.start(now);
    s.handle_connected(now, A_ADDR.parse().expect("addr"));
    while s.poll_output().is_some() {}
    assert_eq!(s.state(), State::OpenSent);
    (s, now)
}

/// Feeds `bytes` and returns the (code, subcode) of the NOTIFICATION A sends.
fn notification_for(s: &mut Session, now: Instant, bytes: &[u8]) -> Option<(u8, u8)> {
    s.handle_data(now, bytes);
    let mut sent = None;
    while let Some(o) = s.poll_output() {
        if let Output::Transmit(b) = o
            && let Ok(Some((Message::Notification(n), _))) = wire::decode(&b)
        {
            sent = Some((n.code, n.subcode));
        }
    }
    sent
}

#[test]
fn bad_opens_get_the_right_subcode() {
    let cases: [(LocalOpen, (u8, u8)); 4] = [
        (open_of(64999, [198, 51, 100, 1], 90), (2, 2)),
        (open_of(64512, [198, 51, 100, 1], 2), (2, 6)),
        (open_of(64512, [0, 0, 0, 0], 90), (2, 3)),
        (open_of(64512, [224, 0, 0, 1], 90), (2, 3)),
    ];
    for (open, want) in cases {
        let (mut s, now) = open_sent();
        let bytes = wire::encode_open(&open).expect("encodes");
        assert_eq!(
            notification_for(&mut s, now, &bytes),
            Some(want),
            "{open:?}"
        );
        assert_eq!(s.state(), State::Idle);
    }
    // iBGP peer using our own identifier: a connection to ourselves.
    let now = Instant::now();
    let mut s = Session::new(cfg(64512, 64512, [198, 51, 100, 11], 9));
    s.start(now);
    s.handle_connected(now, A_ADDR.parse().expect("addr"));
    while s.poll_output().is_some() {}
    let bytes = wire::encode_open(&open_of(64512, [198, 51, 100, 11], 90)).expect("encodes");
    assert_eq!(notification_for(&mut s, now, &bytes), Some((2, 3)));
    // Unsupported version.
    let (mut s, now) = open_sent();
    let mut bytes = wire::encode_open(&open_of(64512, [198, 51, 100, 1], 90)).expect("encodes");
    bytes[19] = 3;
    assert_eq!(notification_for(&mut s, now, &bytes), Some((2, 1)));
}

#[test]
fn fsm_and_header_errors() {
    let (mut s, now) = open_sent();
    assert_eq!(
        notification_for(&mut s, now, &wire::keepalive()),
        Some((5, 1)),
        "KEEPALIVE before OPEN"
    );

    let (mut s, now) = open_sent();
    let open = wire::encode_open(&open_of(64512, [198, 51, 100, 1], 90)).expect("encodes");
    assert_eq!(notification_for(&mut s, now, &open), None);
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(
        notification_for(&mut s, now, &open),
        Some((5, 2)),
        "second OPEN in OpenConfirm"
    );

    let (mut s, now) = open_sent();
    notification_for(&mut s, now, &open);
    notification_for(&mut s, now, &wire::keepalive());
    assert_eq!(s.state(), State::Established);
    // An UPDATE with content we do not parse is fine...
    let mut update = vec![0xFF; 16];
    update.extend_from_slice(&[0, 27, 2, 0, 0, 0, 4, 0xC0, 99, 1, 7]);
    assert_eq!(notification_for(&mut s, now, &update), None);
    assert_eq!(s.state(), State::Established);
    // ...an OPEN is not.
    assert_eq!(notification_for(&mut s, now, &open), Some((5, 3)));

    let (mut s, now) = open_sent();
    let mut bad = wire::keepalive();
    bad[0] = 0;
    assert_eq!(notification_for(&mut s, now, &bad), Some((1, 1)));
    let (mut s, now) = open_sent();
    let mut bad = wire::keepalive();
    bad[18] = 42;
    assert_eq!(notification_for(&mut s, now, &bad), Some((1, 3)));
    let (mut s, now) = open_sent();
    let mut bad = wire::keepalive();
    bad[17] = 200;
    assert_eq!(notification_for(&mut s, now, &bad), Some((1, 2)));
}

#[test]
fn byte_by_byte_delivery_works() {
    let (mut s, now) = open_sent();
    let mut stream = wire::encode_open(&open_of(64512, [198, 51, 100, 1], 90)).expect("encodes");
    stream.extend(wire::keepalive());
    for b in stream {
        s.handle_data(now, &[b]);
    }
    assert_eq!(s.state(), State::Established);
}
