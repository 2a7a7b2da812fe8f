//! The snapshot: when a reconcile may plan without reading, and what a full read keeps.

use super::*;
use crate::config::Monitors;
use crate::desired::desired;
use crate::plan::plan;
use portway_provider::Protocol;
use portway_provider::testkit::SvcExt as _;
use std::time::Duration;

fn want(uid: &str, nodes: &[&str]) -> Desired {
    let svc = portway_provider::testkit::svc("default", uid)
        .uid(uid)
        .named_ports(&[("http", Protocol::Tcp, 80, 30080)]);
    let ips: Vec<IpAddr> = nodes.iter().map(|n| n.parse().expect("ip")).collect();
    let members = vec![ips.iter().map(|ip| (*ip, 30080)).collect()];
    let vip: IpAddr = "203.0.113.10".parse().expect("ip");
    desired(&svc, &[vip], &members, "portway", &Monitors::default())
}

fn objects(uid: &str, nodes: &[&str]) -> Current {
    applied(&want(uid, nodes), &NodeIndex::empty("portway"))
}

/// The partition holding `objects(uid)` for each uid.
fn partition(uids: &[&str]) -> Current {
    let mut c = Current::default();
    for u in uids {
        let o = objects(u, &["10.0.0.1"]);
        c.monitors.extend(o.monitors);
        c.pools.extend(o.pools);
        c.virtuals.extend(o.virtuals);
    }
    c
}

#[test]
fn what_was_applied_plans_nothing() {
    let index = NodeIndex::empty("portway");
    let w = want("u-1", &["10.0.0.1", "10.0.0.2"]);
    assert!(plan(&w, &applied(&w, &index), "portway", &index).is_empty());
    // Members naming a node of /Common, as the index found it.
    let common = NodeIndex::new(
        "portway",
        0,
        &BTreeMap::from([("Common".to_string(), 0)]),
        &[json!({"partition": "Common", "name": "web1", "address": "10.0.0.1"})],
    );
    let a = applied(&w, &common);
    assert_eq!(
        a.pools[0]["members"][0],
        json!({"name": "web1:30080", "partition": "Common", "address": "10.0.0.1"})
    );
    assert!(plan(&w, &a, "portway", &NodeIndex::from_members("portway", &a)).is_empty());
}

#[test]
fn a_full_read_serves_one_reconcile_within_its_period() {
    let mut s = Snapshot::default();
    assert!(!s.loaded());
    let now = Instant::now();
    s.install(
        &partition(&["u-1", "u-2"]),
        s.clock(),
        now + Duration::from_secs(60),
    );
    assert!(s.loaded());
    assert_eq!(
        s.take("u-1", now),
        Known::Fresh(objects("u-1", &["10.0.0.1"]))
    );
    // Used up: the next reconcile reads the names it holds.
    assert_eq!(
        s.take("u-1", now),
        Known::Held(objects("u-1", &["10.0.0.1"]))
    );
    // Too late: the read is older than a period.
    assert_eq!(
        s.take("u-2", now + Duration::from_secs(61)),
        Known::Held(objects("u-2", &["10.0.0.1"]))
    );
    // No object of u-3 in the read: nothing to read.
    assert_eq!(s.take("u-3", now), Known::Nothing);
    assert_eq!(s.monitor_kinds(), BTreeSet::from([MonitorKind::Tcp]));
}

#[test]
fn a_write_is_kept_over_a_read_that_started_before_it() {
    let mut s = Snapshot::default();
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let started = s.clock();
    // While the read runs: u-1 moves to 10.0.0.2, u-2 is deleted, u-3 created.
    s.store("u-1", objects("u-1", &["10.0.0.2"]));
    s.store("u-2", Current::default());
    s.store("u-3", objects("u-3", &["10.0.0.1"]));
    s.install(&partition(&["u-1", "u-2"]), started, later);
    assert_eq!(
        s.take("u-1", now),
        Known::Held(objects("u-1", &["10.0.0.2"]))
    );
    assert_eq!(s.take("u-2", now), Known::Nothing);
    assert_eq!(
        s.take("u-3", now),
        Known::Held(objects("u-3", &["10.0.0.1"]))
    );
    assert_eq!(
        s.used_addresses(),
        BTreeSet::from([
            "10.0.0.2".parse::<IpAddr>().expect("ip"),
            "10.0.0.1".parse().expect("ip")
        ])
    );
    // A read that starts afterwards replaces all of it, and forgets what it did not see.
    s.install(&partition(&["u-2"]), s.clock(), later);
    assert_eq!(s.take("u-1", now), Known::Nothing);
    assert_eq!(
        s.take("u-2", now),
        Known::Fresh(objects("u-2", &["10.0.0.1"]))
    );
}

#[test]
fn a_failed_write_makes_the_next_reconcile_read() {
    let mut s = Snapshot::default();
    let now = Instant::now();
    s.install(
        &partition(&["u-1"]),
        s.clock(),
        now + Duration::from_secs(60),
    );
    s.doubt("u-1");
    assert_eq!(
        s.take("u-1", now),
        Known::Held(objects("u-1", &["10.0.0.1"]))
    );
    // Even a Service the snapshot held nothing of: its names are read.
    s.doubt("u-9");
    assert_eq!(s.take("u-9", now), Known::Held(Current::default()));
    s.store("u-9", Current::default());
    assert_eq!(s.take("u-9", now), Known::Nothing);
}

#[test]
fn names_are_what_is_wanted_and_what_is_held() {
    let w = want("u-1", &["10.0.0.1"]);
    let mut held = objects("u-1", &["10.0.0.1"]);
    held.pools.push(json!({"name": "pw_default_u_1_tcp_8080"}));
    let n = Names::of(&w, &held);
    assert_eq!(
        n.pools,
        BTreeSet::from([
            "pw_default_u_1_tcp_80".to_string(),
            "pw_default_u_1_tcp_8080".to_string()
        ])
    );
    assert_eq!(n.virtuals.len(), 1);
    assert_eq!(
        n.monitors,
        BTreeSet::from([(MonitorKind::Tcp, "pw_default_u_1_tcp_80_tcp".to_string())])
    );
}
