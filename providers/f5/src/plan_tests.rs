//! The plan, row by row: create, in sync, members only, removal, recreation, drift.

use super::*;
use crate::config::{MonitorChoice, MonitorKind, Monitors};
use crate::desired::desired;
use portway_provider::testkit::SvcExt as _;
use portway_provider::{LbService, Protocol};

fn svc() -> LbService {
    portway_provider::testkit::svc("default", "web")
        .uid("u-1")
        .named_ports(&[
            ("http", Protocol::Tcp, 80, 30080),
            ("dns", Protocol::Udp, 53, 30053),
        ])
}

fn members(nodes: &[&str]) -> Vec<Vec<(IpAddr, u16)>> {
    let ips: Vec<IpAddr> = nodes.iter().map(|n| n.parse().expect("ip")).collect();
    vec![
        ips.iter().map(|ip| (*ip, 30080)).collect(),
        ips.iter().map(|ip| (*ip, 30053)).collect(),
    ]
}

fn want(nodes: &[&str]) -> Desired {
    let vip: IpAddr = "203.0.113.10".parse().expect("ip");
    desired(
        &svc(),
        &[vip],
        &members(nodes),
        "portway",
        &Monitors::default(),
    )
}

fn index() -> NodeIndex {
    NodeIndex::empty("portway")
}

/// What a BIG-IP would return (normalised) after applying `d`, members on own nodes.
fn applied(d: &Desired) -> Current {
    crate::snapshot::applied(d, &index())
}

fn kinds(p: &Plan) -> Vec<String> {
    p.transaction
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[test]
fn create_is_one_ordered_transaction_nodes_first() {
    let d = want(&["10.0.0.1", "10.0.0.2"]);
    let p = plan(&d, &Current::default(), "portway", &index());
    assert!(p.member_patches.is_empty() && p.nodes.is_empty());
    assert_eq!(
        kinds(&p),
        vec![
            "POST /mgmt/tm/ltm/node",
            "POST /mgmt/tm/ltm/node",
            "POST /mgmt/tm/ltm/monitor/tcp",
            "POST /mgmt/tm/ltm/pool",
            "POST /mgmt/tm/ltm/pool",
            "POST /mgmt/tm/ltm/virtual",
            "POST /mgmt/tm/ltm/virtual",
        ]
    );
    // UDP gets no TCP monitor (none by default), TCP its own.
    assert_eq!(
        d.pools[0].body["monitor"],
        "/portway/pw_default_web_tcp_80_tcp"
    );
    assert!(d.pools[1].body.get("monitor").is_none(), "{:?}", d.pools[1]);
    assert_eq!(d.virtuals[1]["ipProtocol"], "udp");
    assert_eq!(d.virtuals[0]["destination"], "/portway/203.0.113.10:80");
    // Members name their node and partition; the pool POST carries no address.
    let pool = &p.transaction[3].body;
    assert_eq!(
        pool["members"],
        json!([{"name": "10.0.0.1:30080", "partition": "portway"},
            {"name": "10.0.0.2:30080", "partition": "portway"}])
    );
    // Nothing is tagged with metadata; the monitor's tag is its description.
    assert!(
        p.transaction
            .iter()
            .all(|c| c.body.get("metadata").is_none()),
        "{:#?}",
        p.transaction
    );
    assert_eq!(
        p.transaction[2].body["description"],
        "portway-service=default/web portway-uid=u-1"
    );
}

#[test]
fn monitors_follow_the_protocol_choice() {
    let vip: IpAddr = "203.0.113.10".parse().expect("ip");
    let monitors = Monitors {
        tcp: MonitorChoice::Existing("/Common/http".into()),
        udp: MonitorChoice::Make(MonitorKind::GatewayIcmp),
        sctp: MonitorChoice::None,
    };
    let d = desired(
        &svc(),
        &[vip],
        &members(&["10.0.0.1"]),
        "portway",
        &monitors,
    );
    assert_eq!(d.pools[0].body["monitor"], "/Common/http");
    assert_eq!(
        d.pools[1].body["monitor"],
        "/portway/pw_default_web_udp_53_gwicmp"
    );
    assert_eq!(d.monitors.len(), 1);
    assert_eq!(d.monitors[0].0, MonitorKind::GatewayIcmp);
    assert_eq!(d.monitors[0].1["defaultsFrom"], "/Common/gateway_icmp");
    let p = plan(&d, &Current::default(), "portway", &index());
    assert!(kinds(&p).contains(&"POST /mgmt/tm/ltm/monitor/gateway-icmp".to_string()));
    // Switching UDP back to none clears the pool's monitor and deletes ours.
    let cur = applied(&d);
    let none = desired(
        &svc(),
        &[vip],
        &members(&["10.0.0.1"]),
        "portway",
        &Monitors {
            udp: MonitorChoice::None,
            ..monitors
        },
    );
    let p = plan(&none, &cur, "portway", &index());
    assert_eq!(
        kinds(&p),
        vec![
            "PATCH /mgmt/tm/ltm/pool/~portway~pw_default_web_udp_53",
            "DELETE /mgmt/tm/ltm/monitor/gateway-icmp/~portway~pw_default_web_udp_53_gwicmp",
        ]
    );
    assert_eq!(p.transaction[0].body["monitor"], "none");
}

#[test]
fn in_sync_is_empty_and_members_change_is_patches_only() {
    let d = want(&["10.0.0.1"]);
    let cur = applied(&d);
    assert!(plan(&d, &cur, "portway", &index()).is_empty());
    assert!(!needs_nodes(&d, &cur));
    // A member leaving needs no read of the nodes: the members name theirs.
    let two = applied(&want(&["10.0.0.1", "10.0.0.2"]));
    let fewer = want(&["10.0.0.2"]);
    assert!(!needs_nodes(&fewer, &two));
    let p = plan(
        &fewer,
        &two,
        "portway",
        &NodeIndex::from_members("portway", &two),
    );
    assert!(p.nodes.is_empty(), "{p:#?}");
    assert_eq!(
        p.member_patches[0].1,
        json!([{"name": "10.0.0.2:30080", "partition": "portway"}])
    );
    let d2 = want(&["10.0.0.1", "10.0.0.2"]);
    assert!(needs_nodes(&d2, &cur));
    let defaults = std::collections::BTreeMap::from([("portway".to_string(), 0)]);
    let known = NodeIndex::new(
        "portway",
        0,
        &defaults,
        &[json!({"partition": "portway", "name": "10.0.0.1", "address": "10.0.0.1"})],
    );
    let p = plan(&d2, &cur, "portway", &known);
    assert!(p.transaction.is_empty());
    // One new node, created once for both pools, then one PATCH per pool.
    assert_eq!(p.nodes.len(), 1, "{:#?}", p.nodes);
    assert_eq!(p.member_patches.len(), 2);
    assert_eq!(
        p.member_patches[0].1,
        json!([{"name": "10.0.0.1:30080", "partition": "portway"},
            {"name": "10.0.0.2:30080", "partition": "portway"}])
    );
    // Empty member lists are valid.
    let d3 = want(&[]);
    assert_eq!(
        plan(&d3, &cur, "portway", &index()).member_patches[0].1,
        json!([])
    );
}

#[test]
fn removed_port_deletes_in_reverse_order_and_delete_plan() {
    let d = want(&["10.0.0.1"]);
    let cur = applied(&d);
    let mut one = svc();
    one.ports.truncate(1);
    let vip: IpAddr = "203.0.113.10".parse().expect("ip");
    let d1 = desired(
        &one,
        &[vip],
        &members(&["10.0.0.1"]),
        "portway",
        &Monitors::default(),
    );
    let p = plan(&d1, &cur, "portway", &index());
    let paths: Vec<&str> = p.transaction.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/mgmt/tm/ltm/virtual/~portway~pw_default_web_udp_53",
            "/mgmt/tm/ltm/pool/~portway~pw_default_web_udp_53",
        ]
    );
    // Deleting everything: virtuals, then pools, then monitors.
    let all = plan(&Desired::default(), &cur, "portway", &index()).transaction;
    assert_eq!(all.len(), 5);
    assert_eq!(
        all[4].path,
        "/mgmt/tm/ltm/monitor/tcp/~portway~pw_default_web_tcp_80_tcp"
    );
}

#[test]
fn vip_change_recreates_the_virtual() {
    let cur = applied(&want(&["10.0.0.1"]));
    let vip: IpAddr = "203.0.113.11".parse().expect("ip");
    let d2 = desired(
        &svc(),
        &[vip],
        &members(&["10.0.0.1"]),
        "portway",
        &Monitors::default(),
    );
    let p = plan(&d2, &cur, "portway", &index());
    assert_eq!(
        p.transaction
            .iter()
            .filter(|c| c.method == "DELETE")
            .count(),
        2
    );
    assert_eq!(
        p.transaction.iter().filter(|c| c.method == "POST").count(),
        2
    );
}

/// `current` after the PATCHes of `p` were applied, as a BIG-IP would report it.
fn patched(current: &Current, p: &Plan) -> Current {
    let mut c = current.clone();
    let patches = p
        .transaction
        .iter()
        .filter(|x| x.method == "PATCH")
        .map(|x| (x.path.clone(), x.body.clone()))
        .chain(
            p.member_patches
                .iter()
                .map(|(name, m)| (path("pool", "portway", name), json!({"members": m}))),
        );
    for (at, body) in patches {
        let o = if at.starts_with("/mgmt/tm/ltm/virtual/") {
            c.virtuals
                .iter_mut()
                .find(|o| path("virtual", "portway", o["name"].as_str().unwrap_or("")) == at)
        } else if at.starts_with("/mgmt/tm/ltm/pool/") {
            c.pools
                .iter_mut()
                .find(|o| path("pool", "portway", o["name"].as_str().unwrap_or("")) == at)
        } else {
            c.monitors
                .iter_mut()
                .map(|(_, o)| o)
                .find(|o| at.ends_with(o["name"].as_str().unwrap_or("")))
        }
        .expect("PATCH of an object that exists");
        for (k, v) in body.as_object().expect("PATCH body is an object") {
            if k == "monitor" && v == "none" {
                o.as_object_mut().map(|m| m.remove("monitor"));
            } else {
                o[k] = v.clone();
            }
        }
    }
    c
}

#[test]
fn drifted_mask_and_source_are_patched_once() {
    let d = want(&["10.0.0.1"]);
    let mut cur = applied(&d);
    cur.virtuals[0]["mask"] = json!("255.255.255.0");
    cur.virtuals[0]["source"] = json!("10.0.0.0/8");
    let p = plan(&d, &cur, "portway", &index());
    assert_eq!(p.transaction.len(), 1, "{:#?}", p.transaction);
    let c = &p.transaction[0];
    assert_eq!(
        (c.method, c.path.as_str()),
        (
            "PATCH",
            "/mgmt/tm/ltm/virtual/~portway~pw_default_web_tcp_80"
        )
    );
    assert_eq!(c.body["mask"], "255.255.255.255");
    assert!(plan(&d, &patched(&cur, &p), "portway", &index()).is_empty());
}

/// Whatever property the plan compares, one round of its PATCHes brings the object in sync,
/// and no PATCH of a monitor carries `defaultsFrom`.
#[test]
fn one_round_of_patches_converges_every_compared_field() {
    let vip: IpAddr = "2001:db8::10".parse().expect("ip");
    let d = desired(
        &svc(),
        &[vip],
        &members(&["fd00::1"]),
        "portway",
        &Monitors::default(),
    );
    let cases = MONITOR_FIELDS
        .iter()
        .map(|f| ("monitor", *f))
        .chain(POOL_FIELDS.iter().map(|f| ("pool", *f)))
        .chain(VIRTUAL_FIELDS.iter().map(|f| ("virtual", *f)));
    for (kind, field) in cases {
        let mut cur = applied(&d);
        let o = match kind {
            "monitor" => &mut cur.monitors[0].1,
            "pool" => &mut cur.pools[0],
            _ => &mut cur.virtuals[1],
        };
        o[field] = match field {
            "sourceAddressTranslation" => json!({"type": "none"}),
            "profiles" => json!([{"name": "/Common/fastL4", "context": "all"}]),
            _ => json!("drifted"),
        };
        let p = plan(&d, &cur, "portway", &index());
        assert_eq!(
            p.transaction.len(),
            1,
            "{kind}.{field}: {:#?}",
            p.transaction
        );
        assert!(
            p.transaction[0].body.get("defaultsFrom").is_none(),
            "{kind}.{field}"
        );
        let again = plan(&d, &patched(&cur, &p), "portway", &index());
        assert!(again.is_empty(), "{kind}.{field}: {again:#?}");
    }
}
