//! `portway-bgp` against a real gobgpd, in network namespaces (see
//! `bgp_lab`). Needs root and gobgpd: skipped with a reason otherwise,
//! failed instead under PORTWAY_REQUIRE_PRIVILEGED=1.

mod bgp_lab;

use bgp_lab::{Lab, NODE_ASN, Neighbor, node_v4, node_v6, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(10);

fn neighbor(i: usize, asn: u32, password: Option<&str>) -> Neighbor {
    Neighbor {
        address: node_v4(i),
        asn,
        password: password.map(str::to_string),
    }
}

/// The type_urls of gobgpd's capability list, with values.
fn caps(n: &Value, side: &str) -> Vec<(String, String)> {
    n["state"][side]
        .as_array()
        .map(|caps| {
            caps.iter()
                .map(|c| {
                    let t = c["type_url"]
                        .as_str()
                        .unwrap_or("")
                        .rsplit('.')
                        .next()
                        .unwrap_or("")
                        .to_string();
                    (t, c["value"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn attr(path: &Value, code: u64) -> &Value {
    path["attrs"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"].as_u64() == Some(code)))
        .unwrap_or(&Value::Null)
}

fn paths<'a>(rib: &'a serde_json::Map<String, Value>, prefix: &str) -> &'a [Value] {
    rib.get(prefix)
        .and_then(|v| v.as_array())
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

#[test]
fn session_established_with_four_octet_as_and_mp_capabilities() {
    let Some(mut lab) = Lab::new("cap", 1) else {
        return;
    };
    let asn = 4_200_000_001;
    lab.start_gobgpd(&[neighbor(0, asn, None)]);
    let mut sp = lab.speaker(0, asn, None, json!({}));
    wait_for("session up", UP, || {
        lab.established(&node_v4(0)).then_some(())
    });
    let n = lab.neighbor(&node_v4(0)).expect("neighbor");
    let remote = caps(&n, "remote_cap");
    // FourOctetASNCapability{as: 4200000001} and MP for (1,1) and (2,1), protobuf in base64.
    assert!(
        remote.contains(&("FourOctetASNCapability".into(), "CIHU29IP".into())),
        "{remote:?}"
    );
    assert!(
        remote.contains(&("MultiProtocolCapability".into(), "CgQIARAB".into())),
        "{remote:?}"
    );
    assert!(
        remote.contains(&("MultiProtocolCapability".into(), "CgQIAhAB".into())),
        "{remote:?}"
    );
    assert!(
        remote.iter().any(|(t, _)| t == "RouteRefreshCapability"),
        "{remote:?}"
    );
    assert!(
        !remote.iter().any(|(t, _)| t == "GracefulRestartCapability"),
        "graceful restart is off unless a peer asks for it: {remote:?}"
    );
    assert_eq!(n["conf"]["peer_asn"].as_u64(), Some(u64::from(asn)));
    assert_eq!(
        n["timers"]["state"]["negotiated_hold_time"].as_u64(),
        Some(9)
    );
    let st = sp.peer();
    assert_eq!(st["state"], "Established");
    assert_eq!(st["fourOctetAs"], true);
    assert_eq!(st["families"], json!(["Ipv4", "Ipv6"]));
    // eBGP with a 4-byte ASN: our AS in the path, not AS_TRANS.
    sp.set_routes(json!({ "203.0.113.10/32": {} }));
    let rib = wait_for("route", UP, || {
        Some(lab.rib("ipv4")).filter(|r| r.contains_key("203.0.113.10/32"))
    });
    let path = &paths(&rib, "203.0.113.10/32")[0];
    assert_eq!(attr(path, 2)["as_paths"][0]["asns"], json!([asn]));
    sp.shutdown();
}

#[test]
fn routes_carry_next_hop_and_communities_and_withdraw_fast() {
    let Some(mut lab) = Lab::new("adv", 1) else {
        return;
    };
    lab.start_gobgpd(&[neighbor(0, NODE_ASN, None)]);
    let mut sp = lab.speaker(0, NODE_ASN, None, json!({}));
    let attrs =
        json!({ "communities": ["64512:100", "no-export"], "largeCommunities": ["64513:1:2"] });
    sp.set_routes(json!({
        "203.0.113.10/32": attrs, "203.0.113.11/32": attrs, "2001:db8:100::1/128": attrs,
    }));
    let v4 = wait_for("IPv4 routes", UP, || {
        Some(lab.rib("ipv4")).filter(|r| r.len() == 2)
    });
    let v6 = wait_for("IPv6 route", UP, || {
        Some(lab.rib("ipv6")).filter(|r| r.len() == 1)
    });
    let p = &paths(&v4, "203.0.113.10/32")[0];
    assert_eq!(attr(p, 1)["value"], 0, "ORIGIN IGP");
    assert_eq!(
        attr(p, 2)["as_paths"][0]["asns"],
        json!([NODE_ASN]),
        "our AS prepended (eBGP)"
    );
    assert_eq!(attr(p, 3)["nexthop"], node_v4(0), "next hop self");
    assert_eq!(attr(p, 5), &Value::Null, "no LOCAL_PREF to eBGP");
    assert_eq!(
        attr(p, 8)["communities"],
        json!([(64512u32 << 16) + 100, 0xFFFF_FF01u32])
    );
    assert_eq!(
        attr(p, 32)["value"],
        json!([{ "ASN": 64513, "LocalData1": 1, "LocalData2": 2 }])
    );
    let p6 = &paths(&v6, "2001:db8:100::1/128")[0];
    assert_eq!(
        attr(p6, 14)["nexthop"],
        node_v6(0),
        "IPv6 next hop via MP_REACH"
    );
    assert_eq!(
        attr(p6, 8)["communities"],
        json!([(64512u32 << 16) + 100, 0xFFFF_FF01u32])
    );
    let age_11 = paths(&v4, "203.0.113.11/32")[0]["age"].clone();
    let age_v6 = p6["age"].clone();

    // Remove one route: withdrawn (the time is printed; BENCHMARKS.md has the
    // figures), the others untouched.
    sp.set_routes(json!({ "203.0.113.11/32": attrs, "2001:db8:100::1/128": attrs }));
    let start = Instant::now();
    let v4 = wait_for("withdrawal", Duration::from_secs(10), || {
        Some(lab.rib("ipv4")).filter(|r| !r.contains_key("203.0.113.10/32"))
    });
    eprintln!("withdrawal visible in gobgpd after {:?}", start.elapsed());
    assert_eq!(
        paths(&v4, "203.0.113.11/32")[0]["age"],
        age_11,
        "kept route not re-sent"
    );
    assert_eq!(
        paths(&lab.rib("ipv6"), "2001:db8:100::1/128")[0]["age"],
        age_v6
    );
    let st = sp.peer();
    assert_eq!(
        (
            st["prefixesAdvertised"].as_u64(),
            st["established"].as_u64()
        ),
        (Some(2), Some(1))
    );

    // (ROUTE-REFRESH handling is covered by the unit tests: gobgp's
    // `softresetin` re-filters its Adj-RIB-In and never sends one.)
    sp.shutdown();
}

#[test]
fn md5_password_right_comes_up_wrong_never() {
    let Some(mut lab) = Lab::new("md5", 2) else {
        return;
    };
    lab.start_gobgpd(&[
        neighbor(0, NODE_ASN, Some("s3cret")),
        neighbor(1, NODE_ASN, Some("s3cret")),
    ]);
    let mut good = lab.speaker(0, NODE_ASN, Some("s3cret"), json!({}));
    let mut bad = lab.speaker(1, NODE_ASN, Some("wrong"), json!({}));
    wait_for("MD5 session up", UP, || {
        lab.established(&node_v4(0)).then_some(())
    });
    assert_eq!(good.peer()["state"], "Established");
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        !lab.established(&node_v4(1)),
        "wrong password must never establish"
    );
    assert_ne!(bad.peer()["state"], "Established");
}

#[test]
fn router_restart_reconnects_and_readvertises_once() {
    let Some(mut lab) = Lab::new("rst", 1) else {
        return;
    };
    let n = [neighbor(0, NODE_ASN, None)];
    lab.start_gobgpd(&n);
    let mut sp = lab.speaker(0, NODE_ASN, None, json!({}));
    let c = json!({ "communities": ["64512:7"] });
    sp.set_routes(json!({ "203.0.113.20/32": c, "203.0.113.21/32": c, "2001:db8:100::20/128": c }));
    wait_for("routes", UP, || {
        Some(()).filter(|_| lab.rib("ipv4").len() == 2 && lab.rib("ipv6").len() == 1)
    });
    lab.kill_gobgpd();
    lab.start_gobgpd(&n);
    wait_for("re-established", Duration::from_secs(20), || {
        lab.established(&node_v4(0)).then_some(())
    });
    wait_for("routes again", UP, || {
        Some(()).filter(|_| lab.rib("ipv4").len() == 2 && lab.rib("ipv6").len() == 1)
    });
    let nb = lab.neighbor(&node_v4(0)).expect("neighbor");
    // One packed UPDATE per family plus one End-of-RIB per family: nothing twice.
    wait_for("all updates counted", UP, || {
        lab.neighbor(&node_v4(0))
            .filter(|n| n["state"]["messages"]["received"]["update"].as_u64() >= Some(4))
    });
    let nb2 = lab.neighbor(&node_v4(0)).expect("neighbor");
    assert_eq!(
        nb2["state"]["messages"]["received"]["update"].as_u64(),
        Some(4),
        "{nb}"
    );
    for afi in nb2["afi_safis"].as_array().expect("afi_safis") {
        assert_eq!(
            afi["mp_graceful_restart"]["state"]["end_of_rib_received"], true,
            "{afi}"
        );
    }
    let st = sp.peer();
    assert_eq!(st["established"], 2);
    assert_eq!(st["endOfRibSent"], 4, "EoR per family, once per session");
    assert_eq!(st["flaps"], 1);
}

#[test]
fn three_nodes_give_three_paths_and_shutdown_or_crash_behave() {
    let Some(mut lab) = Lab::new("ecmp", 3) else {
        return;
    };
    lab.start_gobgpd(
        &(0..3)
            .map(|i| neighbor(i, NODE_ASN, None))
            .collect::<Vec<_>>(),
    );
    // Node 3 asks for graceful restart; the others keep the default (off).
    let gr = json!({ "gracefulRestart": true, "gracefulRestartTime": "60s" });
    let mut speakers: Vec<_> = (0..3)
        .map(|i| {
            lab.speaker(
                i,
                NODE_ASN,
                None,
                if i == 2 { gr.clone() } else { json!({}) },
            )
        })
        .collect();
    for sp in &mut speakers {
        sp.set_routes(json!({ "203.0.113.50/32": {}, "203.0.113.51/32": {} }));
    }
    let rib = wait_for("three paths", UP, || {
        Some(lab.rib("ipv4")).filter(|r| paths(r, "203.0.113.50/32").len() == 3)
    });
    let mut hops: Vec<String> = paths(&rib, "203.0.113.50/32")
        .iter()
        .map(|p| attr(p, 3)["nexthop"].as_str().unwrap_or("").to_string())
        .collect();
    hops.sort();
    assert_eq!(hops, (0..3).map(node_v4).collect::<Vec<_>>());

    // Graceful shutdown of node 2: its paths go at once (withdraw + Cease).
    let n3 = speakers.pop().expect("three");
    speakers.pop().expect("three").shutdown();
    wait_for("node 2 withdrawn", Duration::from_secs(10), || {
        Some(lab.rib("ipv4")).filter(|r| paths(r, "203.0.113.50/32").len() == 2)
    });
    // Crash of node 3, which asked for graceful restart: its path is kept, marked stale.
    n3.kill();
    wait_for("node 3 stale", UP, || {
        lab.rib("ipv4")
            .get("203.0.113.50/32")
            .and_then(|p| p.as_array())
            .and_then(|p| {
                p.iter()
                    .find(|x| attr(x, 3)["nexthop"] == node_v4(2) && x["stale"] == true)
                    .map(|_| ())
            })
    });
    assert_eq!(paths(&lab.rib("ipv4"), "203.0.113.50/32").len(), 2);
    // It restarts and refreshes: stale flag cleared after its End-of-RIB.
    let mut again = lab.speaker(2, NODE_ASN, None, gr);
    again.set_routes(json!({ "203.0.113.50/32": {} }));
    wait_for("node 3 fresh, 203.0.113.51 gone", UP, || {
        let rib = lab.rib("ipv4");
        let fresh = paths(&rib, "203.0.113.50/32")
            .iter()
            .any(|x| attr(x, 3)["nexthop"] == node_v4(2) && x["stale"] == false);
        let only_n1 = paths(&rib, "203.0.113.51/32").len() == 1;
        (fresh && only_n1).then_some(())
    });
}

#[test]
fn ipv6_session_carries_both_families() {
    let Some(mut lab) = Lab::new("v6", 1) else {
        return;
    };
    lab.start_gobgpd(&[Neighbor {
        address: node_v6(0),
        asn: NODE_ASN,
        password: None,
    }]);
    let mut sp = lab.speaker(0, NODE_ASN, None, json!({ "address": "2001:db8:1::1" }));
    wait_for("IPv6 session up", UP, || {
        lab.established(&node_v6(0)).then_some(())
    });
    sp.set_routes(json!({ "2001:db8:100::7/128": {}, "203.0.113.7/32": {} }));
    let v6 = wait_for("IPv6 route", UP, || {
        Some(lab.rib("ipv6")).filter(|r| !r.is_empty())
    });
    let v4 = wait_for("IPv4 route", UP, || {
        Some(lab.rib("ipv4")).filter(|r| !r.is_empty())
    });
    // IPv6: the session's own address; IPv4: the node's configured IPv4.
    assert_eq!(
        attr(&paths(&v6, "2001:db8:100::7/128")[0], 14)["nexthop"],
        node_v6(0)
    );
    assert_eq!(
        attr(&paths(&v4, "203.0.113.7/32")[0], 3)["nexthop"],
        node_v4(0)
    );
    sp.shutdown();
    wait_for("withdrawn on shutdown", Duration::from_secs(10), || {
        (lab.rib("ipv6").is_empty() && lab.rib("ipv4").is_empty()).then_some(())
    });
}

#[test]
fn a_crashed_speaker_without_graceful_restart_is_dropped_at_once() {
    // Issue 19, defect 4: graceful restart was always announced, so a router kept a dead
    // node's routes as stale for its restart time. Off by default now: gobgpd (a graceful
    // restart helper) drops them as soon as the connection is gone.
    let Some(mut lab) = Lab::new("nogr", 1) else {
        return;
    };
    lab.start_gobgpd(&[neighbor(0, NODE_ASN, None)]);
    let mut sp = lab.speaker(0, NODE_ASN, None, json!({}));
    sp.set_routes(json!({ "203.0.113.60/32": {}, "2001:db8:100::60/128": {} }));
    wait_for("routes", UP, || {
        Some(()).filter(|_| lab.rib("ipv4").len() == 1 && lab.rib("ipv6").len() == 1)
    });
    sp.kill();
    let t0 = Instant::now();
    wait_for(
        "routes gone after the crash",
        Duration::from_secs(5),
        || (lab.rib("ipv4").is_empty() && lab.rib("ipv6").is_empty()).then_some(()),
    );
    let took = t0.elapsed();
    eprintln!("gobgpd dropped a crashed speaker's routes after {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
