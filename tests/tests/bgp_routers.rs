//! `portway-bgp` against the routers users run: FRR (bgpd with bfdd) and BIRD 2, in network
//! namespaces (see `bgp_lab`). Needs root, `frr` and `bird2`: skipped with a reason
//! otherwise, failed instead under PORTWAY_REQUIRE_PRIVILEGED=1.
//!
//! Issue 19, defect 4: graceful restart is off unless asked for (a crashed speaker's
//! routes go at once), and BFD makes FRR drop a dead node's routes in under a second.
//! The basics that held in the chaos runs (sessions, communities, large communities,
//! LOCAL_PREF, MD5, route refresh, Cease) are checked at both routers so they stay so.

mod bgp_lab;

use bgp_lab::bird::{self, BirdNeighbor};
use bgp_lab::frr::{self, FrrNeighbor, next_hop};
use bgp_lab::{Lab, NODE_ASN, ROUTER_ASN, node_v4, node_v6, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(15);

fn frr_neighbor(i: usize, asn: u32, password: Option<&str>, bfd: bool) -> FrrNeighbor {
    FrrNeighbor {
        address: node_v4(i),
        asn,
        password: password.map(str::to_string),
        bfd,
    }
}

/// Speaker-side BFD as FRR's `fast` profile: 100 ms × 3.
fn fast_bfd() -> Value {
    json!({ "bfd": { "receiveInterval": "100ms", "transmitInterval": "100ms", "detectMultiplier": 3 } })
}

/// Waits until `gone` holds and returns how long that took from `t0`.
fn time_until(
    what: &str,
    t0: Instant,
    limit: Duration,
    mut gone: impl FnMut() -> bool,
) -> Duration {
    wait_for(what, limit, || gone().then_some(()));
    t0.elapsed()
}

#[test]
fn frr_drops_a_crashed_speakers_routes_at_once_unless_it_asked_for_graceful_restart() {
    let Some(mut lab) = Lab::with_router("frgr", 2, frr::TOOLS) else {
        return;
    };
    lab.start_frr(&[
        frr_neighbor(0, NODE_ASN, None, false),
        frr_neighbor(1, NODE_ASN, None, false),
    ]);
    // Node 1: the default. Node 2: gracefulRestart on.
    let mut plain = lab.speaker(0, NODE_ASN, None, json!({}));
    let mut gr = lab.speaker(1, NODE_ASN, None, json!({ "gracefulRestart": true }));
    for sp in [&mut plain, &mut gr] {
        sp.set_routes(json!({ "203.0.113.70/32": {} }));
    }
    wait_for("two paths at FRR", UP, || {
        (lab.frr_paths("ipv4", "203.0.113.70/32").len() == 2).then_some(())
    });
    let caps = lab.frr_neighbor(&node_v4(0))["gracefulRestartInfo"].clone();
    assert_ne!(
        caps["remoteGrMode"], "Restart",
        "node 1 did not ask: {caps}"
    );

    plain.kill();
    let t0 = Instant::now();
    let took = time_until("node 1's path gone", t0, Duration::from_secs(5), || {
        let paths = lab.frr_paths("ipv4", "203.0.113.70/32");
        paths.len() == 1 && next_hop(&paths[0]) == node_v4(1)
    });
    eprintln!("FRR dropped a crashed speaker's path after {took:?} (graceful restart off)");
    assert!(took < Duration::from_secs(1), "{took:?}");

    // With graceful restart, FRR keeps the crashed node's path, marked stale, as asked.
    gr.kill();
    wait_for("node 2's path stale", UP, || {
        lab.frr_paths("ipv4", "203.0.113.70/32")
            .iter()
            .any(|p| next_hop(p) == node_v4(1) && p["stale"] == true)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        lab.frr_paths("ipv4", "203.0.113.70/32").len(),
        1,
        "kept while restarting"
    );
}

#[test]
fn frr_bfd_drops_a_dead_nodes_routes_in_under_a_second() {
    let Some(mut lab) = Lab::with_router("frbfd", 3, frr::TOOLS) else {
        return;
    };
    // Nodes 1 and 3 run BFD; node 2 does not (the hold timer, 9 s here, is all it has).
    lab.start_frr(&[
        frr_neighbor(0, NODE_ASN, None, true),
        frr_neighbor(1, NODE_ASN, None, false),
        frr_neighbor(2, NODE_ASN, None, true),
    ]);
    let mut speakers: Vec<_> = (0..3)
        .map(|i| {
            lab.speaker(
                i,
                NODE_ASN,
                None,
                if i == 1 { json!({}) } else { fast_bfd() },
            )
        })
        .collect();
    for sp in &mut speakers {
        sp.set_routes(json!({ "203.0.113.80/32": {} }));
    }
    wait_for("three paths", UP, || {
        (lab.frr_paths("ipv4", "203.0.113.80/32").len() == 3).then_some(())
    });
    for i in [0, 2] {
        wait_for("BFD up at both ends", UP, || {
            let frr_up = lab
                .vtysh_json(&format!("show bfd peer {} json", node_v4(i)))
                .is_some_and(|v| v["status"] == "up");
            (frr_up && speakers[i].peer()["bfd"]["state"] == "Up").then_some(())
        });
    }
    let paths = || -> Vec<String> {
        let mut hops: Vec<String> = lab
            .frr_paths("ipv4", "203.0.113.80/32")
            .iter()
            .map(next_hop)
            .collect();
        hops.sort();
        hops
    };

    // A dead node: both cables of nodes 1 and 2 cut at the switch at once. FRR's own link
    // stays up and no TCP segment arrives: only BFD can tell, for node 1.
    lab.cut_cable(0);
    lab.cut_cable(1);
    let t0 = Instant::now();
    let took = time_until("node 1's path gone", t0, Duration::from_secs(5), || {
        !paths().contains(&node_v4(0))
    });
    eprintln!("FRR dropped a dead node's path after {took:?} (BFD 100 ms x 3)");
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert!(
        paths().contains(&node_v4(1)),
        "without BFD the other dead node is still there: the hold timer has not run out"
    );

    // A hung node agent: SIGSTOP keeps its TCP connection alive in the kernel.
    speakers[2].freeze();
    let t0 = Instant::now();
    let took = time_until("node 3's path gone", t0, Duration::from_secs(5), || {
        !paths().contains(&node_v4(2))
    });
    eprintln!("FRR dropped a hung speaker's path after {took:?} (BFD 100 ms x 3)");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let bfd = lab
        .vtysh_json(&format!("show bfd peer {} json", node_v4(2)))
        .unwrap_or(Value::Null);
    // Down, or already removed with the BGP session that asked for it.
    assert_ne!(bfd["status"], "up", "{bfd}");
}

#[test]
fn frr_basics_communities_local_pref_md5_refresh_and_cease() {
    let Some(mut lab) = Lab::with_router("frbas", 2, frr::TOOLS) else {
        return;
    };
    // Node 1: eBGP with MD5. Node 2: iBGP (LOCAL_PREF is sent), with a wrong password
    // first, so it must never come up.
    lab.start_frr(&[
        frr_neighbor(0, NODE_ASN, Some("s3cret"), false),
        frr_neighbor(1, ROUTER_ASN, Some("s3cret"), false),
    ]);
    let attrs = json!({ "communities": ["64512:100", "no-export"],
        "largeCommunities": ["64513:1:2"], "localPref": 250 });
    let mut ebgp = lab.speaker(0, NODE_ASN, Some("s3cret"), json!({}));
    let mut wrong = lab.speaker(1, ROUTER_ASN, Some("wrong"), json!({}));
    ebgp.set_routes(json!({ "203.0.113.90/32": attrs, "2001:db8:100::90/128": attrs }));
    wait_for("MD5 session and routes", UP, || {
        (lab.frr_paths("ipv4", "203.0.113.90/32").len() == 1
            && lab.frr_paths("ipv6", "2001:db8:100::90/128").len() == 1)
            .then_some(())
    });
    let p = &lab.frr_paths("ipv4", "203.0.113.90/32")[0];
    assert_eq!(p["community"]["string"], "64512:100 no-export", "{p}");
    assert_eq!(p["largeCommunity"]["string"], "64513:1:2", "{p}");
    assert_eq!(p["aspath"]["string"], "64513", "{p}");
    assert_eq!(next_hop(p), node_v4(0));
    assert!(p.get("locPrf").is_none(), "no LOCAL_PREF over eBGP: {p}");
    let p6 = &lab.frr_paths("ipv6", "2001:db8:100::90/128")[0];
    assert_eq!(next_hop(p6), node_v6(0), "{p6}");
    assert!(
        !lab.frr_established(&node_v4(1)),
        "a wrong MD5 password never comes up"
    );
    assert_ne!(wrong.peer()["state"], "Established");
    drop(wrong);

    // The right password on the iBGP node: LOCAL_PREF arrives.
    let mut ibgp = lab.speaker(1, ROUTER_ASN, Some("s3cret"), json!({}));
    ibgp.set_routes(json!({ "203.0.113.91/32": attrs }));
    wait_for("iBGP route", UP, || {
        (lab.frr_paths("ipv4", "203.0.113.91/32").len() == 1).then_some(())
    });
    let p = &lab.frr_paths("ipv4", "203.0.113.91/32")[0];
    assert_eq!(p["locPrf"], 250, "{p}");
    assert_eq!(p["aspath"]["length"], 0, "nothing prepended over iBGP: {p}");

    // Route refresh: FRR asks (soft in), the speaker sends the table again.
    let before = ebgp.peer()["updatesSent"].as_u64().unwrap_or(0);
    assert!(lab.vtysh(&format!("clear bgp ipv4 unicast {} soft in", node_v4(0))));
    wait_for("routes sent again on ROUTE-REFRESH", UP, || {
        (ebgp.peer()["updatesSent"].as_u64().unwrap_or(0) > before).then_some(())
    });

    // Shutdown: withdrawn with a Cease (Administrative Shutdown), seen by FRR.
    ebgp.shutdown();
    wait_for("withdrawn on shutdown", UP, || {
        lab.frr_paths("ipv4", "203.0.113.90/32")
            .is_empty()
            .then_some(())
    });
    let n = lab.frr_neighbor(&node_v4(0));
    let reason = format!("{} {}", n["lastNotificationReason"], n["lastResetDueTo"]);
    assert!(reason.contains("Administrative Shutdown"), "{n}");
}

#[test]
fn bird_basics_communities_local_pref_md5_refresh_and_cease() {
    let Some(mut lab) = Lab::with_router("bird", 2, bird::TOOLS) else {
        return;
    };
    lab.start_bird(&[
        BirdNeighbor {
            name: "n1".into(),
            address: node_v4(0),
            asn: NODE_ASN,
            password: Some("s3cret".into()),
        },
        BirdNeighbor {
            name: "n2".into(),
            address: node_v4(1),
            asn: ROUTER_ASN,
            password: None,
        },
    ]);
    let attrs = json!({ "communities": ["64512:100", "no-export"],
        "largeCommunities": ["64513:1:2"], "localPref": 250 });
    let mut ebgp = lab.speaker(0, NODE_ASN, Some("s3cret"), json!({}));
    let mut ibgp = lab.speaker(1, ROUTER_ASN, None, json!({}));
    ebgp.set_routes(json!({ "203.0.113.100/32": attrs, "2001:db8:100::100/128": attrs }));
    ibgp.set_routes(json!({ "203.0.113.101/32": attrs }));
    wait_for("routes at BIRD", UP, || {
        (!lab.bird_route("203.0.113.100/32").is_empty()
            && !lab.bird_route("2001:db8:100::100/128").is_empty()
            && !lab.bird_route("203.0.113.101/32").is_empty())
        .then_some(())
    });
    assert!(lab.bird_established("n1"), "MD5 session");
    let r = lab.bird_route("203.0.113.100/32");
    for want in [
        "BGP.as_path: 64513",
        &format!("BGP.next_hop: {}", node_v4(0)),
        "BGP.community: (64512,100) (65535,65281)",
        "BGP.large_community: (64513, 1, 2)",
    ] {
        assert!(r.contains(want), "{want:?} missing in\n{r}");
    }
    // BIRD sets LOCAL_PREF 100 itself on eBGP routes; ours must not arrive there.
    assert!(!r.contains("BGP.local_pref: 250"), "{r}");
    let r6 = lab.bird_route("2001:db8:100::100/128");
    assert!(
        r6.contains(&format!("BGP.next_hop: {}", node_v6(0))),
        "{r6}"
    );
    let r = lab.bird_route("203.0.113.101/32");
    assert!(r.contains("BGP.local_pref: 250"), "iBGP LOCAL_PREF:\n{r}");

    // Route refresh: `reload in` makes BIRD send ROUTE-REFRESH; the speaker answers.
    let before = ebgp.peer()["updatesSent"].as_u64().unwrap_or(0);
    assert!(lab.birdc(&["reload", "in", "n1"]).is_some());
    wait_for("routes sent again on ROUTE-REFRESH", UP, || {
        (ebgp.peer()["updatesSent"].as_u64().unwrap_or(0) > before).then_some(())
    });

    // Shutdown: withdrawn with a Cease (Administrative Shutdown).
    ebgp.shutdown();
    wait_for("withdrawn on shutdown", UP, || {
        lab.bird_route("203.0.113.100/32").is_empty().then_some(())
    });
    let proto = lab.bird_protocol("n1");
    assert!(proto.contains("Administrative shutdown"), "{proto}");

    // A crash without graceful restart: BIRD drops the routes at once.
    ibgp.kill();
    let t0 = Instant::now();
    let took = time_until("iBGP node's route gone", t0, Duration::from_secs(5), || {
        lab.bird_route("203.0.113.101/32").is_empty()
    });
    eprintln!("BIRD dropped a crashed speaker's route after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
