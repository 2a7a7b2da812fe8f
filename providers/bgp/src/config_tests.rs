//! Validation: every bad value is reported with its key path.
use super::*;
use serde_json::json;

fn paths(v: serde_json::Value) -> Vec<String> {
    match BgpConfig::from_value(v) {
        Ok(_) => vec![],
        Err(e) => e.into_iter().map(|i| i.path).collect(),
    }
}

#[test]
fn design_example_is_valid() {
    let v = json!({
        "localASN": 64512, "routerID": "",
        "peers": [{ "address": "10.0.0.1", "asn": 64500, "port": 179, "holdTime": "90s",
            "keepaliveTime": "30s", "sourceAddress": "", "ebgpMultihop": 1, "nodeSelector": {},
            "passwordSecret": { "namespace": "portway-system", "name": "bgp-auth", "key": "password" } }],
        "advertisements": [{ "pools": ["dc"], "aggregationLength": 32, "aggregationLengthV6": 128,
            "communities": ["64512:100"], "largeCommunities": [], "localPref": 0, "peers": [] }]
    });
    let c = BgpConfig::from_value(v).expect("valid");
    assert_eq!(c.peers[0].hold_time, Duration::from_secs(90));
    assert_eq!(
        c.advertisements[0].route_attrs().communities,
        vec![Community(0xFC00_0064)]
    );
    assert_eq!(
        BgpConfig::from_value(json!({})).expect("defaults"),
        BgpConfig::default()
    );
}

#[test]
fn bad_values_name_their_keys() {
    let v = json!({
        "localASN": 23456, "routerID": "1.2.3",
        "peers": [
            { "address": "10.0.0.1", "asn": 0, "holdTime": "2s", "keepaliveTime": "30s", "sourceAddress": "fd00::1" },
            { "address": "10.0.0.x", "asn": 64500, "holdTime": "9s", "keepaliveTime": "9s",
              "sourceAddress": "nope", "nodeSelector": { "-bad": "ok", "zone": "a b" },
              "passwordSecret": { "namespace": "Bad_NS", "name": "s", "key": "k/1" } },
            { "address": "10.0.0.1", "asn": 64500 }
        ],
        "advertisements": [{ "aggregationLength": 33, "aggregationLengthV6": 129,
            "communities": ["1:70000"], "largeCommunities": ["1:2"], "peers": ["10.9.9.9"] }]
    });
    assert_eq!(
        paths(v),
        [
            "bgp.localASN",
            "bgp.routerID",
            "bgp.peers[0].asn",
            "bgp.peers[0].holdTime",
            "bgp.peers[0].keepaliveTime",
            "bgp.peers[0].sourceAddress",
            "bgp.peers[1].address",
            "bgp.peers[1].keepaliveTime",
            "bgp.peers[1].sourceAddress",
            "bgp.peers[1].nodeSelector.-bad",
            "bgp.peers[1].nodeSelector.zone",
            "bgp.peers[1].passwordSecret.namespace",
            "bgp.peers[1].passwordSecret.key",
            "bgp.peers[2].address",
            "bgp.advertisements[0].aggregationLength",
            "bgp.advertisements[0].aggregationLengthV6",
            "bgp.advertisements[0].communities[0]",
            "bgp.advertisements[0].largeCommunities[0]",
            "bgp.advertisements[0].peers[0]",
        ]
    );
}

#[test]
fn serde_errors_have_paths_too() {
    assert_eq!(
        paths(json!({ "peers": [{ "address": "1.1.1.1", "asn": 1, "holdTime": "soon" }] })),
        ["bgp.peers[0].holdTime"]
    );
    assert_eq!(
        paths(json!({ "peers": [{ "address": "1.1.1.1", "asn": 1, "colour": 1 }] })),
        ["bgp.peers[0].colour"]
    );
    assert_eq!(paths(json!({ "localASN": -1 })), ["bgp.localASN"]);
}

#[test]
fn hold_zero_is_allowed_and_selectors_match() {
    let p: PeerConfig = serde_json::from_value(json!({
        "address": "fd00::1", "asn": 65000, "holdTime": "0s", "keepaliveTime": "30s",
        "nodeSelector": { "example.com/bgp": "yes" } }))
    .expect("parses");
    let mut out = vec![];
    validate_peer("p", &p, &mut out);
    assert!(out.is_empty(), "{out:?}");
    let mut labels = BTreeMap::new();
    assert!(!p.selects(&labels));
    labels.insert("example.com/bgp".to_string(), "yes".to_string());
    assert!(p.selects(&labels));
}

#[test]
fn aggregation_truncates() {
    let a: AdvertisementConfig =
        serde_json::from_value(json!({ "aggregationLength": 24, "aggregationLengthV6": 64 }))
            .expect("parses");
    assert_eq!(
        a.prefix_for("10.1.2.3".parse().expect("ip")),
        "10.1.2.0/24".parse::<IpNet>().expect("net")
    );
    assert_eq!(
        a.prefix_for("fd00::5".parse().expect("ip")),
        "fd00::/64".parse::<IpNet>().expect("net")
    );
    let d: AdvertisementConfig = serde_json::from_value(json!({})).expect("parses");
    assert_eq!(
        d.prefix_for("10.1.2.3".parse().expect("ip")),
        "10.1.2.3/32".parse::<IpNet>().expect("net")
    );
}

#[test]
fn graceful_restart_is_off_unless_asked_and_its_time_fits_12_bits() {
    let c = BgpConfig::from_value(json!({ "peers": [{ "address": "10.0.0.1", "asn": 64500 }] }))
        .expect("valid");
    assert!(!c.peers[0].graceful_restart, "off by default, as MetalLB");
    assert!(c.peers[0].bfd.is_none(), "no BFD unless asked");
    let on = json!({ "peers": [{ "address": "10.0.0.1", "asn": 64500,
        "gracefulRestart": true, "gracefulRestartTime": "60s" }] });
    let c = BgpConfig::from_value(on).expect("valid");
    assert!(c.peers[0].graceful_restart);
    assert_eq!(c.peers[0].graceful_restart_time, Duration::from_secs(60));
    let bad = json!({ "peers": [
        { "address": "10.0.0.1", "asn": 64500, "gracefulRestartTime": "4096s" },
        { "address": "10.0.0.2", "asn": 64500, "gracefulRestartTime": "1500ms" },
    ] });
    assert_eq!(
        paths(bad),
        [
            "bgp.peers[0].gracefulRestartTime",
            "bgp.peers[1].gracefulRestartTime"
        ]
    );
}

#[test]
fn bfd_takes_metallb_defaults_and_names_bad_keys() {
    let c = BgpConfig::from_value(
        json!({ "peers": [{ "address": "10.0.0.1", "asn": 64500, "bfd": {} }] }),
    )
    .expect("valid");
    assert_eq!(c.peers[0].bfd, Some(BfdConfig::default()));
    let t = BfdConfig::default().timers();
    assert_eq!(
        (t.desired_min_tx, t.required_min_rx, t.detect_mult),
        (Duration::from_millis(300), Duration::from_millis(300), 3)
    );
    let bad = json!({ "peers": [
        { "address": "10.0.0.1", "asn": 64500,
          "bfd": { "receiveInterval": "5ms", "transmitInterval": "61s", "detectMultiplier": 1 } },
        { "address": "10.0.0.2", "asn": 64500, "ebgpMultihop": 4, "bfd": {} },
        { "address": "10.0.0.3", "asn": 64500, "bfd": { "transmitInterval": "100500us" } },
    ] });
    assert_eq!(
        paths(bad),
        [
            "bgp.peers[0].bfd.receiveInterval",
            "bgp.peers[0].bfd.transmitInterval",
            "bgp.peers[0].bfd.detectMultiplier",
            "bgp.peers[1].bfd",
            "bgp.peers[2].bfd.transmitInterval",
        ]
    );
    // A typo is a serde error naming the key.
    let typo =
        json!({ "peers": [{ "address": "10.0.0.1", "asn": 64500, "bfd": { "interval": "1s" } }] });
    let e = BgpConfig::from_value(typo).expect_err("unknown key");
    assert!(e[0].path.starts_with("bgp.peers[0].bfd"), "{e:?}");
}
