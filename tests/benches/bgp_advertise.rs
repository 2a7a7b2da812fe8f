//! How fast routes reach a real router: a `bgp-test-speaker` in a node
//! namespace advertises to gobgpd, and `gobgp monitor global rib` (a gRPC
//! stream, so no polling delay) timestamps their arrival.
//!
//! 1. 10,000 /32s at once: time until all are in gobgpd's RIB, and how many
//!    UPDATE messages carried them (packing).
//! 2. One new /32 on top, 50 times: time until it is in the RIB (p50/p99).
//!
//! Needs root and gobgpd (skips otherwise). Run:
//! `cargo bench -p portway-tests --bench bgp_advertise`

#[path = "../tests/bgp_lab/mod.rs"]
mod bgp_lab;

use bgp_lab::{Lab, NODE_ASN, Neighbor, node_v4, wait_for};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Prefixes announced (not withdrawn) in one monitor line.
fn announced(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| announced(x, out)),
        Value::Object(o) => {
            let withdrawn = o
                .get("withdrawal")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || o.get("isWithdraw")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
            if let Some(p) = o
                .get("nlri")
                .and_then(|n| n.get("prefix"))
                .and_then(Value::as_str)
            {
                if !withdrawn {
                    out.push(p.to_string());
                }
            } else {
                o.values().for_each(|x| announced(x, out));
            }
        }
        _ => {}
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let Some(mut lab) = Lab::new("bench", 1) else {
        return;
    };
    lab.start_gobgpd(&[Neighbor {
        address: node_v4(0),
        asn: NODE_ASN,
        password: None,
    }]);
    let mut sp = lab.speaker(0, NODE_ASN, None, json!({}));
    wait_for("session", Duration::from_secs(10), || {
        lab.established(&node_v4(0)).then_some(())
    });

    let mut monitor = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("r"),
            "gobgp",
            "monitor",
            "global",
            "rib",
            "-a",
            "ipv4",
            "-j",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gobgp monitor");
    let stdout = monitor.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel::<(Instant, Vec<String>)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut prefixes = Vec::new();
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                announced(&v, &mut prefixes);
            }
            if tx.send((Instant::now(), prefixes)).is_err() {
                break;
            }
        }
    });
    // The monitor stream needs a moment to subscribe.
    std::thread::sleep(Duration::from_millis(500));

    let updates_before = sp.peer()["updatesSent"].as_u64().unwrap_or(0);
    let mut routes = serde_json::Map::new(); // sent once, as the full set
    for i in 0..10_000u32 {
        let ip = Ipv4Addr::from(0x0A64_0000 + i); // 10.100.0.0 ..
        routes.insert(format!("{ip}/32"), json!({ "communities": ["64512:100"] }));
    }
    let start = Instant::now();
    sp.set_routes(Value::Object(routes));
    let mut seen = HashSet::new();
    let mut last = start;
    while seen.len() < 10_000 {
        let (at, prefixes) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("routes arrive");
        seen.extend(prefixes);
        last = at;
    }
    let bulk = last - start;
    let updates = sp.peer()["updatesSent"].as_u64().unwrap_or(0) - updates_before;
    let received = lab
        .neighbor(&node_v4(0))
        .and_then(|n| n["state"]["messages"]["received"]["update"].as_u64())
        .unwrap_or(0);
    println!(
        "10000 prefixes: all in gobgpd's RIB after {bulk:?}; {updates} UPDATE messages sent (gobgpd counted {received} incl. 2 End-of-RIB)"
    );

    let mut singles = Vec::new();
    for k in 0..50u32 {
        let prefix = format!("{}/32", Ipv4Addr::from(0x0A65_0000 + k));
        while rx.try_recv().is_ok() {}
        let start = Instant::now();
        // The speaker process adds it to its set and hands over all 10,000+k.
        let add = json!({ "add": { prefix.clone(): { "communities": ["64512:100"] } } });
        assert_eq!(sp.call(&add), json!({ "ok": true }));
        loop {
            let (at, prefixes) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("route arrives");
            if prefixes.contains(&prefix) {
                singles.push(at - start);
                break;
            }
        }
    }
    singles.sort();
    println!(
        "single new prefix (on top of 10000, 50 runs): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&singles, 0.5),
        percentile(&singles, 0.99),
        singles[singles.len() - 1]
    );
    let _ = monitor.kill();
    let _ = monitor.wait();
    sp.shutdown();
}
